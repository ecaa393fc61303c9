"""A generation service: one thread owns a loaded model and serves many concurrent requests.

Every request goes through one Scheduler (`steps`), so requests that arrive together decode
together in the same llama.cpp calls (continuous batching, as in `hearth batch`), `n` samples
share one prompt evaluation, and a vote (reasoning mode) runs in the same loop with hooks of its
own. Each sequence keeps its KV cache after a one-sample request (`reuse_prefix`), and a request
takes the free sequence whose cache shares the longest prefix with its prompt: a conversation's
next turn, which resends the whole conversation, evaluates only what is new.

A face (`hearth serve`, a Ray replica) calls `prepare` in its own thread (tokenize, check sizes
and grammar: errors before any queueing), then `submit` (a bounded queue; BusyError past it),
and gets the job's events through the callback it passed: lists of ("text", index, delta),
("finish", index, reason), then one ("done", JobResult), ("error", HearthError) or
("cancelled",). The callback runs on the engine thread, once per decode call with all that call
produced, so it must only hand the list over (e.g. `loop.call_soon_threadsafe`).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

from ..errors import BusyError, ContextOverflowError, HearthError, RuntimeFailure, UsageError
from .options import GenerationOptions
from .scheduler import GenRequest, Hooks, Sample, Scheduler

DEFAULT_QUEUE = 64  # requests accepted beyond the running ones
MAX_SAMPLES = 128  # OpenAI's own limit on n


@dataclass(frozen=True)
class VoteSpec:
    """Reasoning mode for a request: extract each sample's answer, vote (runtime/reasoning.py)."""

    answer: str = "auto"
    vote: str = "weighted"
    adaptive: bool = True


@dataclass
class Choice:
    index: int
    text: str
    finish_reason: str
    tokens: int
    answer: str | None = None  # a vote's sample: the answer extracted from it (None: none, or cut)


@dataclass
class JobResult:
    choices: list[Choice]  # by index; for a vote, the winning sample first
    prompt_tokens: int
    cached_tokens: int  # prompt tokens served from the KV cache
    completion_tokens: int  # over all choices (all samples of a vote)
    reasoning: Any = None  # the ReasoningResult of a vote
    first_token_s: float | None = None  # from submit to the first token
    wall_s: float = 0.0  # from submit to the end
    drafts: tuple[int, int] | None = None  # speculating: (accepted, rejected) drafted tokens


@dataclass(eq=False)
class Job:
    """One prepared request and its delivery state (identity matters: eq=False)."""

    request: GenRequest
    prompt_tokens: int
    reasoning_config: Any = None  # a ReasoningConfig: this job is a vote
    on_events: Callable[[list[tuple]], None] | None = None
    wants_text: bool = True  # False: only the terminal event (a client waiting for the whole answer)
    cancelled: bool = False
    submitted_at: float = 0.0
    hooks: Any = None  # the vote's ReasoningHooks, made when it starts
    events: list = field(default_factory=list)  # produced since the last delivery
    outcome: tuple | None = None  # ("done", JobResult) | ("error", exc) | ("cancelled",) | ("aborted",)


class GenerationService:
    """Owns `loaded` (a runtime LoadedModel) from construction until `stop()`."""

    def __init__(self, loaded, options: GenerationOptions | None = None, *, parallel: int | None = None,
                 ctx: int | None = None, queue: int = DEFAULT_QUEUE, on_layout: Callable[[str], None] | None = None,
                 lookup: bool = False):
        # This machine's cost curve (measured once per model and machine, then cached) sizes the
        # slots, a vote's live samples and lookup drafts: measured now, before any request.
        self.curve = loaded.cost_curve()
        if parallel is None:
            parallel = _default_parallel(loaded, ctx, on_layout, self.curve)
        if not isinstance(parallel, int) or parallel < 1:
            raise UsageError(f"parallel must be an integer >= 1, got {parallel!r}")
        loaded.use_layout(parallel + 1, False, ctx)  # one KV stream per slot, one more for the shared prefix
        self.loaded = loaded
        self.options = options or GenerationOptions()
        self.lookup = lookup  # requests of one answer speculate unless they say otherwise
        self.slots = parallel
        self.queue_limit = max(0, queue)
        # Half the slots' conversations keep their KV whatever happens; older ones give way when
        # decoding sequences must close a gap (KV streams: each gap is one more micro-batch).
        self.scheduler = Scheduler(loaded.engine, share_prefix=True, keep_caches=max(1, parallel // 2))
        self.counts = {"completed": 0, "cancelled": 0, "failed": 0, "rejected": 0}
        self._lock = threading.Condition()
        self._inbox: deque[Job] = deque()  # submitted, not yet read by the scheduler
        self._active: dict[int, Job] = {}  # id(request) -> job, read by the scheduler and not done
        self._to_cancel: list[Job] = []
        self._dirty: list[Job] = []  # jobs with events to deliver after this decode call
        self._stopping = False
        self._abort_error: HearthError | None = None
        self._dispatch = _Dispatch(self)
        self._thread = threading.Thread(target=self._run, name="hearth-engine", daemon=True)
        self._thread.start()

    # -- what a face calls (any thread) --------------------------------------------------------
    @property
    def context_per_request(self) -> int:
        """KV cells each request has: its prompt plus max_tokens must fit."""
        return self.loaded.engine.n_ctx_seq

    def prepare(self, prompt: str | list[dict], *, template: bool = True, options: GenerationOptions | None = None,
                n: int = 1, vote: VoteSpec | None = None, speculative: str | None = None,
                prediction: str | None = None) -> Job:
        """Tokenize and check a request (chat messages, or raw text with `template=False`).

        `speculative`: "lookup" (prompt-lookup drafts) or "off"; None: the service's default,
        for a request of one answer. `prediction`: text the answer is expected to repeat (an
        edited file), looked up for drafts too. Raises UsageError / ContextOverflowError (with
        the sizes) before anything is queued."""
        from .reasoning import reasoning_config, reasoning_messages, reasoning_request

        opts = options or self.options
        if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= MAX_SAMPLES:
            raise UsageError(f"n must be an integer from 1 to {MAX_SAMPLES}, got {n!r}")
        config = None
        if vote is not None:
            config = reasoning_config(n, vote.answer, vote.vote, vote.adaptive,
                                      on_gpu=self.loaded.plan.n_gpu_layers > 0, max_sequences=self.slots,
                                      curve=self.curve)
            if template:
                prompt = reasoning_messages(prompt, vote.answer, self.loaded.reasoning_style)
        tokens = self._tokens(prompt, template)
        mode = "reason" if vote is not None else ("chat" if template else "generate")
        max_tokens = self._max_tokens(opts, mode, len(tokens))
        params = opts.sampling(mode, n)
        if params.grammar:  # llama.cpp's own parse, here rather than in the engine loop
            self.loaded.engine.sampler(params, 0).close()
        if config is not None:
            request = reasoning_request(tokens, params, max_tokens, config, opts.stop)
        else:
            request = GenRequest(tokens, params, max_tokens, opts.stop, n=n, parallel=self._live_samples(n),
                                 reuse_prefix=n == 1, speculation=self._speculation(speculative, prediction, n, vote))
        return Job(request, len(tokens), config)

    def _speculation(self, asked: str | None, prediction: str | None, n: int, vote: VoteSpec | None):
        """The lookup speculation of a request, or None (plain decode)."""
        from .speculative import Speculation

        if asked not in (None, "lookup", "off"):
            raise UsageError(f"unknown speculative mode {asked!r}", hint="use lookup or off")
        if prediction is not None and asked == "off":
            raise UsageError("a prediction is used through lookup drafts: it cannot go with speculative off")
        wanted = asked == "lookup" or prediction is not None
        if wanted and (n != 1 or vote is not None):
            raise UsageError("speculative decoding drafts for one answer at a time: it needs n = 1 and no vote")
        if not (wanted or (asked is None and self.lookup and n == 1 and vote is None)):
            return None
        reference = tuple(self.loaded.engine.tokenize(prediction, add_special=False)) if prediction else ()
        return Speculation("lookup", self.curve, reference=reference)

    def submit(self, job: Job, on_events: Callable[[list[tuple]], None], *, stream: bool = True) -> None:
        """Queue a prepared job; BusyError when the queue is full or the service is stopping.
        Without `stream`, `on_events` gets only the job's terminal event."""
        with self._lock:
            if self._stopping:
                raise BusyError("the server is shutting down", retry_after=5)
            accepted = len(self._inbox) + len(self._active)  # the scheduler's one waiting request included
            if accepted >= self.slots + self.queue_limit:
                self.counts["rejected"] += 1  # under the lock, as every count
                raise BusyError(f"the server is busy: {accepted} requests accepted, for {self.slots} slots and "
                                f"a queue of {self.queue_limit}", hint="retry after a moment")
            job.on_events = on_events
            job.wants_text = stream
            job.submitted_at = time.perf_counter()
            self._inbox.append(job)
            self._lock.notify()

    def cancel(self, job: Job) -> None:
        """The client went away: the job's sequences are freed at the next decode call."""
        with self._lock:
            if job.cancelled or job.outcome is not None:
                return
            job.cancelled = True
            if any(j is job for j in self._inbox):
                self._inbox = deque(j for j in self._inbox if j is not job)
                self.counts["cancelled"] += 1
                return
            self._to_cancel.append(job)

    def status(self) -> dict:
        stats = self.scheduler.stats
        accepted, running = len(self._inbox) + len(self._active), self.scheduler.running
        return {"slots": self.slots, "context_per_request": self.context_per_request,
                "running": running, "queued": max(0, accepted - running), "queue_limit": self.queue_limit,
                **self.counts, "max_batch_rows": stats.max_rows_per_call, "prompt_tokens_evaluated": stats.prompt_tokens,
                "prompt_tokens_reused": stats.prompt_reused, "generated_tokens": stats.generated,
                "micro_batches_per_call": stats.as_dict()["runs_per_call"]}

    def stop(self, timeout: float = 30.0) -> None:
        """Stop intake, cancel queued and running work (their clients get an error), join the
        engine thread. The model stays loaded (close it after)."""
        with self._lock:
            self._stopping = True
            queued, self._inbox = list(self._inbox), deque()
            self._lock.notify_all()
        for job in queued:
            _deliver(job, [("error", BusyError("the server is shutting down"))])
        self._thread.join(timeout)

    # -- the engine thread ---------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            steps = self.scheduler.steps(self._source(), self._dispatch)
            failure: HearthError | None = None
            try:
                for _ in steps:
                    self._apply_cancels()
                    self._flush()
                    if self._stopping:
                        break
            except Exception as exc:  # an engine failure: fail what was in flight, keep serving
                failure = exc if isinstance(exc, HearthError) else RuntimeFailure(f"generation failed: {exc!r}")
            finally:
                steps.close()  # cancels whatever still runs (their jobs end "aborted")
            with self._lock:
                stopping = self._stopping
            self._abort_error = BusyError("the server is shutting down") if stopping else failure
            for job in list(self._active.values()):
                self._conclude(job, None)
            self._active.clear()
            self._flush()
            self._abort_error = None
            if stopping:
                return

    def _source(self):
        """The scheduler's request source: blocks only while nothing runs (`Scheduler.idle`)."""
        while True:
            with self._lock:
                while not self._inbox and not self._stopping and self.scheduler.idle:
                    self._lock.wait()
                if self._stopping:
                    return
                job = self._inbox.popleft() if self._inbox else None
                if job is not None:
                    self._active[id(job.request)] = job
            if job is None:
                yield None
                continue
            if job.reasoning_config is not None:
                from .reasoning import ReasoningHooks

                job.hooks = ReasoningHooks(self.scheduler, job.reasoning_config, None)
            yield job.request

    def _apply_cancels(self) -> None:
        with self._lock:
            cancels, self._to_cancel = self._to_cancel, []
        for job in cancels:
            self.scheduler.close_request(job.request, "cancelled")

    def _conclude(self, job: Job, samples: list[Sample] | None) -> None:
        """A job's samples all ended (None: cut short by a failure or the shutdown)."""
        if job.cancelled:
            job.outcome = ("cancelled",)
        elif samples is None or any(s.finish_reason == "cancelled" for s in samples):
            job.outcome = ("aborted",)
        else:
            job.outcome = ("done", self._result(job, samples))
        self._count({"cancelled": "cancelled", "aborted": "failed", "done": "completed"}[job.outcome[0]])
        self._dirty.append(job)

    def _count(self, name: str) -> None:
        with self._lock:
            self.counts[name] += 1

    def _result(self, job: Job, samples: list[Sample]) -> JobResult:
        now = time.perf_counter()
        firsts = [s.first_token_at for s in samples if s.first_token_at is not None]
        first_token_s = min(firsts) - job.submitted_at if firsts else None
        cached = samples[0].prompt_reused if samples else 0
        completion = sum(len(s.tokens) for s in samples)
        wall = now - job.submitted_at
        if job.hooks is None:
            choices = [Choice(s.index, s.text, s.finish_reason, len(s.tokens)) for s in sorted(samples, key=lambda s: s.index)]
            specs = [s.spec.stats for s in samples if s.spec is not None]
            drafts = (sum(x.accepted for x in specs), sum(x.drafted - x.accepted for x in specs)) if specs else None
            return JobResult(choices, job.prompt_tokens, cached, completion, None, first_token_s, wall, drafts)
        from .reasoning import reasoning_result

        reasoning = reasoning_result(samples, job.hooks, job.prompt_tokens, wall)
        order = list(range(len(samples)))
        if reasoning.vote.winner_index is not None:  # the winner first, then the others as drawn
            order.remove(reasoning.vote.winner_index)
            order.insert(0, reasoning.vote.winner_index)
        choices = [Choice(i, samples[k].text, samples[k].finish_reason, len(samples[k].tokens),
                          reasoning.samples[k].answer) for i, k in enumerate(order)]
        return JobResult(choices, job.prompt_tokens, cached, completion, reasoning, first_token_s, wall)

    def _flush(self) -> None:
        dirty, self._dirty = self._dirty, []
        for job in dict.fromkeys(dirty):  # once each, in order
            events, job.events = job.events, []
            if job.outcome is not None:
                events.append(self._terminal(job.outcome))
            _deliver(job, events)

    def _terminal(self, outcome: tuple) -> tuple:
        if outcome[0] == "aborted":
            return ("error", self._abort_error or RuntimeFailure("the request was cut short"))
        return outcome

    # -- preparing -----------------------------------------------------------------------------
    def _tokens(self, prompt: str | list[dict], template: bool) -> list[int]:
        if template:
            tokens = self.loaded.prompt_tokens(prompt)
        else:
            tokens = self.loaded.engine.tokenize(prompt, add_special=True)
        if not tokens:
            raise UsageError("the prompt is empty")
        return tokens

    def _max_tokens(self, options: GenerationOptions, mode: str, prompt_tokens: int) -> int:
        """max_tokens as asked, or the default for `mode` cut to the room left; a prompt that
        does not fit is refused with the sizes, never truncated."""
        limit = self.context_per_request
        if prompt_tokens >= limit:
            raise ContextOverflowError(
                f"the prompt is {prompt_tokens} tokens, the context holds {limit} tokens per request",
                hint="shorten the prompt, or restart hearth serve with a larger --ctx")
        if options.max_tokens is None:
            return min(options.max_tokens_for(mode), limit - prompt_tokens)
        if prompt_tokens + options.max_tokens > limit:
            raise ContextOverflowError(
                f"the prompt ({prompt_tokens} tokens) + max_tokens ({options.max_tokens}) = "
                f"{prompt_tokens + options.max_tokens} tokens, over the context of {limit} tokens per request "
                f"by {prompt_tokens + options.max_tokens - limit}",
                hint="lower max_tokens or shorten the prompt")
        return options.max_tokens

    def _live_samples(self, n: int) -> int | None:
        """Samples alive at once: all n when they fit the slots, else waves with a prompt holder."""
        if n <= self.slots:
            return None
        if self.slots < 2:
            raise UsageError(f"n={n} needs at least 2 slots, this server has {self.slots} (--parallel)")
        return self.slots - 1


class _Dispatch(Hooks):
    """The scheduler's hooks for the whole loop: each event goes to its request's job (a vote's
    own ReasoningHooks see only their request's samples)."""

    def __init__(self, service: GenerationService):
        self.service = service

    def _job(self, request: GenRequest) -> Job | None:
        return self.service._active.get(id(request))

    def on_text(self, sample: Sample, delta: str) -> None:
        job = self._job(sample.request)
        if job is None:
            return
        if job.hooks is not None:
            job.hooks.on_text(sample, delta)
            return
        if not job.wants_text:
            return
        job.events.append(("text", sample.index, delta))
        self.service._dirty.append(job)

    def on_finish(self, sample: Sample) -> None:
        job = self._job(sample.request)
        if job is None:
            return
        if job.hooks is not None:
            job.hooks.on_finish(sample)
            return
        if not job.wants_text:
            return
        job.events.append(("finish", sample.index, sample.finish_reason))
        self.service._dirty.append(job)

    def may_launch(self, request: GenRequest, live: int) -> bool:
        job = self._job(request)
        return job.hooks.may_launch(request, live) if job is not None and job.hooks is not None else True

    def on_request_done(self, request: GenRequest, samples: list[Sample]) -> None:
        job = self.service._active.pop(id(request), None)
        if job is not None:
            self.service._conclude(job, samples)

    def on_request_error(self, request: GenRequest, error: Exception) -> None:
        job = self.service._active.pop(id(request), None)
        if job is None:
            return
        job.outcome = ("error", error)
        self.service._count("failed")
        self.service._dirty.append(job)


def _deliver(job: Job, events: list[tuple]) -> None:
    if job.on_events is None or not events:
        return
    try:
        job.on_events(events)
    except Exception:  # the face's event loop is gone (shutting down): nobody to tell
        pass


def _default_parallel(loaded, ctx: int | None, on_layout: Callable[[str], None] | None, curve=None) -> int:
    """As `hearth batch` decides: 16 on a CPU, 64 with every layer on a GPU, or where this
    machine's cost curve peaks earlier; fewer if short of memory."""
    from .hardware import detect_hardware
    from .jsonl_batch import decide_parallel
    from .plan import DEFAULT_CONTEXT

    request = loaded.request
    parallel, reason = decide_parallel(loaded.info, detect_hardware(), per_seq=ctx or DEFAULT_CONTEXT,
                                       threads=request.threads, gpu_layers=request.gpu_layers, curve=curve)
    if on_layout:
        on_layout(reason)
    return parallel
