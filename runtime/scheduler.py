"""The scheduler: many sequences through one llama.cpp context.

One loop serves every mode:
- `hearth run`: one request, one sample;
- reasoning mode: one request with n=K samples — the prompt is evaluated once, its tokens tagged
  with all K sequence ids, then the K samples decode together, one row each per llama_decode;
- `hearth batch`: many requests, continuous batching — when a sample finishes its sequence id
  and KV cells are freed and the next prompt is admitted at once, its prompt chunks riding in the
  same decode calls as the other sequences' next tokens;
- `hearth chat` and `hearth serve`: `reuse_prefix` keeps a sequence's KV cache between calls, so
  only the part of the new prompt that differs from what the cache holds is evaluated; with
  several sequences, a request takes the free one whose cache shares the longest prefix with its
  prompt (a conversation's next turn finds its earlier turns), and fresh requests take sequences
  that hold no cache before evicting the least recently used one;
- speculative decoding (`GenRequest.speculation`): a sample's next token rides with the tokens
  drafted after it (`speculative.py`), and the KV cells of the drafts the model rejects are removed.

The requests, samples, statistics and hooks it works with are defined in `requests.py`.
"""

from __future__ import annotations

import itertools
import math
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

from ..errors import ContextOverflowError, HearthError
from .engine import Engine
from .requests import GenRequest, GenStats, Hooks, Sample
from .sampling import sample_seeds
from .sequences import SequencePool

__all__ = ["GenRequest", "GenStats", "Hooks", "Sample", "Scheduler"]

@dataclass
class _PromptJob:
    """Prompt tokens still to evaluate for a request, and the sequences they feed."""

    state: "_RequestState"
    seq_ids: list[int]  # sequences tagged on these prompt tokens (unified KV: holder included)
    fork_ids: list[int]  # sequences that become samples when the prompt is done
    position: int  # next prompt position to evaluate
    copy_to: list[int] = field(default_factory=list)  # KV streams: sequences given a copy of seq_ids[0] when done
    last_row: int = -1
    reused: int = 0  # prompt tokens the sequences already held when the job started


@dataclass
class _RequestState:
    request: GenRequest
    samples: list[Sample] = field(default_factory=list)
    holder: int | None = None  # sequence keeping the prompt's KV for samples launched later
    launched: int = 0
    closed: bool = False  # no more samples: the caller settled it (e.g. the vote is decided)
    error: Exception | None = None  # the request failed after it started (e.g. its grammar)
    continued: bool = False  # it reused its own kept cache: a conversation's next turn


@dataclass
class _Run:
    """Everything one `Scheduler.run` tracks, in one place."""

    hooks: Hooks
    source: Iterator
    pool: SequencePool
    prefix_seq: int | None = None  # the sequence holding the shared prompt prefix
    prefix: list[int] = field(default_factory=list)  # the tokens it holds
    waiting: deque = field(default_factory=deque)  # requests read from the source, not yet started
    exhausted: bool = False
    reserved: int = 0  # KV cells promised to started requests (unified layout)
    jobs: list[_PromptJob] = field(default_factory=list)  # prompts being evaluated
    decoding: list[Sample] = field(default_factory=list)
    states: dict[int, _RequestState] = field(default_factory=dict)  # id(request) -> state
    results: list[list[Sample]] = field(default_factory=list)
    order: dict[int, int] = field(default_factory=dict)  # id(request) -> index in results


MIN_SHARED_PREFIX = 8  # shorter common prefixes are not worth a KV copy
PREFIX_CAP = 512  # the shared-prefix sequence keeps at most this many prompt tokens


class Scheduler:
    """Runs requests through an Engine with continuous batching.

    With `share_prefix`, the last sequence id holds the KV of the first prompt (up to
    PREFIX_CAP tokens); every later request starting with the same tokens (a template's system
    prompt, a shared instruction) copies those cells instead of evaluating them again. With a
    unified KV cache the copy only tags the cells with one more sequence id.

    With per-sequence KV streams (`ContextConfig.kv_unified=False`) each sequence attends only
    to its own stream, so many unrelated sequences decode as fast as a few. llama.cpp then cuts
    a batch into one micro-batch per run of consecutive sequence ids, so the scheduler hands out
    the lowest free id, puts batch rows in sequence order, and gives a prompt's tokens to one
    sequence only: the others (samples, the prefix holder) get a copy of its stream when it is
    done, and a shared prefix is copied whole and cut back to its length.

    What one `run` needs lives in a `_Run` (`self._r`); the scheduler itself keeps only the
    engine, its settings and the statistics across runs.
    """

    def __init__(self, engine: Engine, share_prefix: bool = False, keep_caches: int | None = None):
        self.engine = engine
        # Kept caches of continued conversations (a request that reused its own earlier turns)
        # that nothing but a fresh prompt with no other place may overwrite: the `keep_caches`
        # most recently used (None: every kept cache). Other kept caches give way when decoding
        # ids have a gap: with KV streams each gap costs one more micro-batch per decode call
        # (~6 ms on SmolLM2, 2 cores) for as long as the sample runs, while a lost cache costs one
        # prompt evaluation if its conversation ever returns.
        self.keep_caches = keep_caches
        self.stats = GenStats()
        self.share_prefix = share_prefix and engine.config.n_seq_max > 1
        self.streams = not engine.config.kv_unified and engine.config.n_seq_max > 1
        self._r: _Run | None = None
        self._use_clock = itertools.count()
        self._last_used: dict[int, int] = {}  # sequence -> when its cache was last written (LRU)
        self._continued: set[int] = set()  # sequences whose kept cache is a continued conversation

    # -- public ---------------------------------------------------------------------------
    def run(self, requests: Sequence[GenRequest] | Any, hooks: Hooks | None = None) -> list[list[Sample]]:
        """Generate every request; returns samples per request, in request order.

        `requests` may be any iterable (a lazy reader): it is consumed only as slots free up.
        """
        for _ in self.steps(requests, hooks):
            pass
        return self._last_results

    def steps(self, requests: Sequence[GenRequest] | Any, hooks: Hooks | None = None) -> Iterator[None]:
        """`run`, one decode call per iteration: a caller can stream between calls.

        The source may also yield None, meaning "nothing to admit right now" (a server's queue):
        the loop goes on with what it has, and asks again after the next call. Closing the
        iterator early cancels what is still running and frees its sequences.
        """
        n_seq = self.engine.config.n_seq_max
        capacity = n_seq - (1 if self.share_prefix else 0)
        self._r = _Run(hooks or Hooks(), iter(requests), SequencePool(capacity),
                       prefix_seq=n_seq - 1 if self.share_prefix else None)
        self._last_results: list[list[Sample]] = self._r.results
        try:
            while self._admit() or self._r.jobs or self._r.decoding:
                if self._r.hooks.should_cancel():
                    break
                if not (self._r.jobs or self._r.decoding):
                    yield None  # nothing admitted this time: a server's queue is empty
                    continue
                self._step()
                yield None
        finally:
            self._finish_all("cancelled")
            if self._r.prefix:
                self.engine.ctx.seq_remove(self._r.prefix_seq, -1, -1)

    @property
    def running(self) -> int:
        """Requests started and not yet done."""
        return len(self._r.states) if self._r is not None else 0

    @property
    def idle(self) -> bool:
        """No prompt in evaluation and no sample decoding (a request source may block now)."""
        return self._r is None or not (self._r.jobs or self._r.decoding)

    def close_request(self, request: GenRequest, reason: str) -> None:
        """End a request now: launch no more samples, end the live ones with `reason`."""
        state = self._r.states.get(id(request)) if self._r else None
        waiting = self._r.waiting if self._r is not None else ()
        if state is None and any(r is request for r in waiting):
            # read from the source but not started: it ends with no sample (identity, not ==)
            self._r.waiting = deque(r for r in waiting if r is not request)
            self._r.hooks.on_request_done(request, [])
            return
        if state is None or state.closed:
            return
        state.closed = True
        for sample in state.samples:
            if not sample.done:
                self._finish(sample, reason)
        for job in [j for j in self._r.jobs if j.state is state]:
            self._drop_job(job)
        self._r.decoding = [s for s in self._r.decoding if not s.done]  # called between steps: no stale row
        self._maybe_done(state)

    # -- admission ------------------------------------------------------------------------
    def _next_request(self) -> GenRequest | None:
        if self._r.waiting:
            return self._r.waiting[0]
        if self._r.exhausted:
            return None
        try:
            request = next(self._r.source)
        except StopIteration:
            self._r.exhausted = True
            return None
        if request is None:  # the source has nothing right now
            return None
        self._r.order[id(request)] = len(self._r.order)
        self._r.results.append([])
        self._r.waiting.append(request)
        return request

    def _admit(self) -> bool:
        """Start waiting requests while sequence ids and KV cells allow; True if work remains."""
        n_ctx, n_seq_max = self.engine.n_ctx, self._r.pool.capacity
        while (request := self._next_request()) is not None:
            need, seqs = self._cells_needed(request), _seqs_needed(request)
            if need > self._cell_limit() or seqs > n_seq_max or not request.prompt:
                self._r.waiting.popleft()
                self._r.hooks.on_request_error(request, _overflow_error(request, need, self._cell_limit(), n_seq_max,
                                                                      self.streams))
                continue
            busy = self._r.jobs or self._r.decoding
            if busy and (len(self._r.pool) < seqs or (not self.streams and self._r.reserved + need > n_ctx)):
                break
            self._r.waiting.popleft()
            self._start(request)
        return bool(self._r.waiting) or not self._r.exhausted

    def _cells_needed(self, request: GenRequest) -> int:
        """KV cells the request needs: in all (unified), or in each sample's stream."""
        return len(request.prompt) + request.max_tokens if self.streams else request.kv_cells()

    def _cell_limit(self) -> int:
        return self.engine.n_ctx_seq if self.streams else self.engine.n_ctx

    def _compact(self) -> None:
        """KV streams: move decoding samples down into free lower ids, so the sequences of a
        decode call stay one run of consecutive ids (one micro-batch, not one per gap).

        A move copies the sample's whole stream (a few MB, at the next decode), far cheaper than
        the extra micro-batch a gap costs once requests run out at the end of a batch.
        """
        movable = sorted((s for s in self._r.decoding if not s.done), key=lambda s: s.seq_id)
        ctx = self.engine.ctx
        while movable and (target := self._move_target(_runs([s.seq_id for s in movable]) > 1)) is not None \
                and target < movable[-1].seq_id:
            sample = movable.pop()
            self._r.pool.take_id(target)
            self.engine.cached.pop(target, None)
            self._continued.discard(target)
            ctx.seq_copy(sample.seq_id, target)
            ctx.seq_remove(sample.seq_id, -1, -1)
            self._r.pool.release(sample.seq_id)
            sample.seq_id = target
            self.stats.moves += 1

    def _start(self, request: GenRequest) -> None:
        engine = self.engine
        state = _RequestState(request)
        self._r.states[id(request)] = state
        live = min(request.parallel or request.n, request.n)
        reuse = request.reuse_prefix and request.n == 1
        fork_ids = [self._reuse_slot(request.prompt) if reuse else self._take_fresh() for _ in range(live)]
        if live < request.n:  # from the top: a holder is never in a decode call, keep it out of the run
            state.holder = self._take_fresh(highest=True)
        seq_ids = fork_ids + ([state.holder] if state.holder is not None else [])
        self._r.reserved += request.kv_cells()
        # KV streams: the prompt goes to one sequence, the others get a copy of its stream when done
        job = (_PromptJob(state, seq_ids[:1], fork_ids, 0, copy_to=seq_ids[1:]) if self.streams
               else _PromptJob(state, seq_ids, fork_ids, 0))
        start = 0
        if reuse:
            start = _common_prefix(engine.cached.get(seq_ids[0], []), request.prompt)
            start = min(start, len(request.prompt) - 1)  # the last prompt token must be evaluated
        shared = self._shared_prefix_len(request.prompt)
        state.continued = reuse and start >= max(shared + 1, MIN_SHARED_PREFIX)
        if shared > start:  # the shared prefix gives more than the sequence's own cache
            start = 0
        for seq in seq_ids:
            engine.ctx.seq_remove(seq, start, -1)
            engine.cached.pop(seq, None)
            self._continued.discard(seq)
        if shared > start:
            start = shared
            for seq in job.seq_ids:
                engine.ctx.copy_prefix(self._r.prefix_seq, seq, start)
        self.stats.prompt_reused += start
        self.stats.prompt_evals += 1
        state.launched = live
        job.position = job.reused = start
        self._r.jobs.append(job)

    def _reuse_slot(self, prompt: list[int]) -> int:
        """The free sequence whose kept cache shares the longest prefix with `prompt` (at least
        MIN_SHARED_PREFIX tokens, or the only one there is), else a fresh one."""
        cached = self.engine.cached
        free = self._r.pool.free_ids
        best = max(free, key=lambda seq: _common_prefix(cached.get(seq, ()), prompt), default=None)
        if best is not None and (len(free) == 1 or _common_prefix(cached.get(best, ()), prompt) >= MIN_SHARED_PREFIX):
            return self._r.pool.take_id(best)
        return self._take_fresh()

    def _take_fresh(self, highest: bool = False) -> int:
        """A sequence for a new prompt: one holding no kept cache (lowest, or highest for a
        holder), else the least recently used unprotected cache is given up, else the least
        recently used protected one."""
        free = [seq for seq in self._r.pool.free_ids if seq not in self.engine.cached]
        if free:
            return self._r.pool.take_id(free[-1] if highest else free[0])
        protected = self._protected()
        oldest = min(self._r.pool.free_ids, key=lambda seq: (seq in protected, self._last_used.get(seq, -1)))
        return self._r.pool.take_id(oldest)

    def _protected(self) -> set[int]:
        """Kept caches nothing may overwrite while another place exists (see `keep_caches`)."""
        cached = self.engine.cached
        if self.keep_caches is None:
            return set(cached)
        continued = [seq for seq in cached if seq in self._continued]
        return set(sorted(continued, key=lambda seq: self._last_used.get(seq, -1), reverse=True)[:self.keep_caches])

    def _move_target(self, gaps: bool) -> int | None:
        """The lowest free id a decoding sample may move to: one with no kept cache, or, when the
        decoding ids have a gap to close, one whose kept cache is not protected."""
        cached, protected = self.engine.cached, self._protected() if gaps else set()
        return next((seq for seq in self._r.pool.free_ids
                     if seq not in cached or (gaps and seq not in protected)), None)

    def _shared_prefix_len(self, prompt: list[int]) -> int:
        shared = min(_common_prefix(self._r.prefix, prompt), len(prompt) - 1)
        return shared if shared >= MIN_SHARED_PREFIX else 0

    def _hold_prefix(self, job: _PromptJob) -> None:
        """Keep the first evaluated prompt's KV in the prefix sequence for later requests."""
        prompt = job.state.request.prompt
        keep = min(len(prompt) - 1, PREFIX_CAP)
        if self._r.prefix or not self.share_prefix or keep < MIN_SHARED_PREFIX:
            return
        self.engine.ctx.copy_prefix(job.seq_ids[0], self._r.prefix_seq, keep)
        self._r.prefix = prompt[:keep]
        self._r.reserved += keep

    def _launch_late_sample(self, state: _RequestState) -> None:
        """Start one more sample from the held prompt: copy its KV, re-evaluate only the last token."""
        seq = self._take_fresh()
        n_prompt = len(state.request.prompt)
        self.engine.ctx.seq_remove(seq, -1, -1)
        self.engine.ctx.copy_prefix(state.holder, seq, n_prompt - 1)
        state.launched += 1
        self._r.jobs.append(_PromptJob(state, [seq], [seq], n_prompt - 1))

    def _drop_job(self, job: _PromptJob) -> None:
        self._r.jobs.remove(job)
        for seq in job.fork_ids:
            self.engine.ctx.seq_remove(seq, -1, -1)
            self._r.pool.release(seq)

    # -- one decode call ----------------------------------------------------------------
    def _step(self) -> None:
        engine, batch = self.engine, self.engine.batch
        batch.clear()
        if self.streams:
            self._compact()
        plan = self._decoding_rows(batch.capacity)
        budget = batch.capacity - len(plan)
        filled: list[_PromptJob] = []
        for job in self._r.jobs:
            if budget <= 0:
                break
            prompt = job.state.request.prompt
            take = min(budget, len(prompt) - job.position)
            end = job.position + take
            plan.extend((job.seq_ids[0], pos, prompt[pos], job.seq_ids, job if pos == len(prompt) - 1 else None)
                        for pos in range(job.position, end))
            job.position = end
            budget -= take
            self.stats.prompt_tokens += take
            if end == len(prompt):
                filled.append(job)
        if self.streams:  # one micro-batch per run of consecutive sequence ids, in batch order
            plan.sort(key=lambda r: (r[0], r[1]))
        rows, draft_rows = [], {}
        for _seq, pos, token, seq_ids, owner in plan:
            row = batch.add(token, pos, seq_ids, owner is not None)
            if isinstance(owner, Sample):
                rows.append((owner, row))
            elif isinstance(owner, tuple):
                draft_rows.setdefault(id(owner[0]), []).append(row)
            elif owner is not None:
                owner.last_row = row
        started = time.perf_counter()
        engine.ctx.decode(batch)
        self._count_call(len(rows) + sum(len(r) for r in draft_rows.values()), batch.n,
                         time.perf_counter() - started, plan)
        for sample, row in rows:
            if not sample.done:
                self.stats.decoded += self._take_tokens(sample, [row] + draft_rows.get(id(sample), []))
        for job in filled:
            if job in self._r.jobs:  # not dropped by a hook meanwhile
                self._hold_prefix(job)
                self._r.jobs.remove(job)
                self._fork_samples(job)
        self._r.decoding = [s for s in self._r.decoding if not s.done]

    def _decoding_rows(self, capacity: int) -> list[tuple]:
        """The decoding samples' rows of the next call: each sample's next token, then the tokens
        drafted after it (speculation), within `capacity` rows.

        A row is (sequence, position, token, sequence ids, owner); the owner is the Sample for its
        next token, (Sample, i) for its i-th draft, or — for prompt rows added later — the
        _PromptJob whose last prompt token it is, or None (no logits)."""
        plan: list[tuple] = []
        decoding = self._r.decoding
        for index, sample in enumerate(decoding):
            plan.append((sample.seq_id, sample.n_past, sample.tokens[-1], (sample.seq_id,), sample))
            room = capacity - len(plan) - (len(decoding) - index - 1)  # the others' own rows first
            for i, token in enumerate(self._drafts(sample, room, len(decoding) - 1)):
                plan.append((sample.seq_id, sample.n_past + 1 + i, token, (sample.seq_id,), (sample, i)))
            sample.n_past += 1
        return plan

    def _count_call(self, sample_rows: int, rows: int, elapsed: float, plan) -> None:
        """Statistics of one decode call with `sample_rows` of its `rows` from decoding samples."""
        stats = self.stats
        if not sample_rows:
            stats.prompt_s += elapsed
            return
        stats.seq_runs += _runs(sorted({r[0] for r in plan})) if self.streams else 1
        if rows == sample_rows:
            stats.pure_decode_rows += rows
            stats.pure_decode_s += elapsed
            width = stats.by_width.setdefault(rows, [0, 0.0])
            width[0] += 1
            width[1] += elapsed
        stats.decode_s += elapsed
        stats.decode_rows += sample_rows
        stats.decode_calls += 1
        stats.max_rows_per_call = max(stats.max_rows_per_call, sample_rows)

    def _fork_samples(self, job: _PromptJob) -> None:
        state, request = job.state, job.state.request
        seeds = request.seeds or sample_seeds(request.params.seed, request.n)
        for seq in job.copy_to if not state.closed else ():
            self.engine.ctx.seq_copy(job.seq_ids[0], seq)
        for seq in job.fork_ids:
            index = len(state.samples)
            sampler = spec = None
            if not state.closed:
                seed = seeds[index % len(seeds)]
                try:
                    if request.speculation is not None:
                        spec = request.speculation.start(self.engine, request.params, seed, request.prompt, seq)
                        sampler = spec.sampler
                    else:
                        sampler = self.engine.sampler(request.params, seed)
                except HearthError as exc:  # e.g. a grammar llama.cpp rejects: this request fails, not the run
                    state.error = exc
                    self.close_request(request, "cancelled")
            if sampler is None:
                self.engine.ctx.seq_remove(seq, -1, -1)
                self._r.pool.release(seq)
                continue
            sample = Sample(request, index, seq, n_past=len(request.prompt), prompt_reused=job.reused)
            sample.sampler = sampler
            sample.spec = spec
            state.samples.append(sample)
            self._r.decoding.append(sample)
            self._take_tokens(sample, [job.last_row])
        self._maybe_done(state)

    # -- per token ------------------------------------------------------------------------
    def _drafts(self, sample: Sample, room: int, others: int) -> list[int]:
        """Draft tokens to check after the sample's next token (none without speculation). They
        stay within its max_tokens (so within its KV cells) and the batch; `others`: the other
        decoding samples' rows in the same call, which the draft length is chosen against."""
        if sample.spec is None:
            return []
        left = sample.request.max_tokens - len(sample.tokens) - 1  # the step's own token is one
        return sample.spec.drafts(min(left, room), others)

    def _take_tokens(self, sample: Sample, rows: list[int]) -> int:
        """Sample the token(s) of a decoded sample: one per call, or with drafts the ones the
        target agrees with plus its own next one; the rejected drafts' KV cells are removed.
        Returns how many tokens the call yielded."""
        if sample.spec is None:
            self._accept(sample, sample.sampler.sample(self.engine.ctx, rows[0]), rows[0])
            return 1
        fed = sample.n_past + len(rows) - 1  # positions held after the call (the drafts included)
        emitted = sample.spec.verify(self.engine.ctx, rows)
        # kept: everything before the last emitted token (that one is fed next call)
        sample.n_past = sample.n_past + len(emitted) - 1
        if sample.n_past < fed:
            self.engine.ctx.seq_remove(sample.seq_id, sample.n_past, -1)
        for token, row in emitted:
            if sample.done:
                break
            self._accept(sample, token, row)
        return len(emitted)

    def _accept(self, sample: Sample, token: int, row: int) -> None:
        model = self.engine.model
        if sample.first_token_at is None:
            sample.first_token_at = time.perf_counter()
        if sample.request.confidence_top_k:
            self._record_confidence(sample, token, row)
        if model.is_eog(token) and not sample.request.ignore_eog:
            self._finish(sample, "stop")
            return
        sample.tokens.append(token)
        self.stats.generated += 1
        delta = sample.stream.feed(model.piece(token))
        if sample.stream.stopped:
            sample.stop("stop")
        if delta:
            self._r.hooks.on_text(sample, delta)
        if sample.done:
            if sample.sampler is not None:  # stopped by a stop string or a hook, not yet finished
                self._finish(sample, sample.finish_reason)
        elif len(sample.tokens) >= sample.request.max_tokens:
            self._finish(sample, "length")

    def _record_confidence(self, sample: Sample, token: int, row: int) -> None:
        import numpy as np

        logits = self.engine.ctx.logits_row(row)
        peak = float(logits.max())
        log_z = peak + math.log(float(np.exp(logits - peak).sum()))
        k = sample.request.confidence_top_k
        top = np.partition(logits, -k)[-k:]
        sample.logprob_sum += float(logits[token]) - log_z
        sample.token_confidences.append(-(float(top.mean()) - log_z))

    def _finish(self, sample: Sample, reason: str) -> None:
        if sample.sampler is None and sample.finish_reason is not None:
            return  # already finished
        sample.finish_reason = reason
        tail = sample.stream.close()
        if tail:
            self._r.hooks.on_text(sample, tail)
        request, engine = sample.request, self.engine
        state = self._r.states.get(id(request))
        if request.reuse_prefix and reason != "cancelled":
            engine.cached[sample.seq_id] = (request.prompt + sample.tokens)[: sample.n_past]
            self._last_used[sample.seq_id] = next(self._use_clock)
            if state is not None and state.continued:
                self._continued.add(sample.seq_id)
        else:
            engine.ctx.seq_remove(sample.seq_id, -1, -1)
        if sample.sampler is not None:
            sample.sampler.close()
            sample.sampler = None
        self._r.pool.release(sample.seq_id)
        self._r.hooks.on_finish(sample)
        if state is not None:
            self._launch_more(state)
            self._maybe_done(state)

    def _launch_more(self, state: _RequestState) -> None:
        """Refill a request's live samples from its held prompt, while the caller wants more.

        When nothing of the request is live any more, one sample is launched regardless, so a
        request that has not reached n samples always makes progress.
        """
        request = state.request
        live_cap = min(request.parallel or request.n, request.n)
        while not state.closed and state.holder is not None and state.launched < request.n and len(self._r.pool):
            live = sum(not s.done for s in state.samples) + sum(j.state is state for j in self._r.jobs)
            if live >= live_cap or (live and not self._r.hooks.may_launch(request, live)):
                return
            self._launch_late_sample(state)

    def _maybe_done(self, state: _RequestState) -> None:
        request = state.request
        if id(request) not in self._r.states:
            return
        if any(j.state is state for j in self._r.jobs) or not all(s.done for s in state.samples):
            return
        if not state.closed and len(state.samples) < request.n:
            return
        if state.holder is not None:
            self.engine.ctx.seq_remove(state.holder, -1, -1)
            self._r.pool.release(state.holder)
        self._r.reserved -= request.kv_cells()
        del self._r.states[id(request)]
        self._r.results[self._r.order[id(request)]] = state.samples
        if state.error is not None:
            self._r.hooks.on_request_error(request, state.error)
        else:
            self._r.hooks.on_request_done(request, state.samples)

    def _finish_all(self, reason: str) -> None:
        """On cancel or Ctrl-C: end every live sample and free its sequence (no stale KV)."""
        for state in list(self._r.states.values()):
            state.closed = True
        for sample in list(self._r.decoding):
            if not sample.done:
                self._finish(sample, reason)
        for job in list(self._r.jobs):
            self._drop_job(job)
        for state in list(self._r.states.values()):
            self._maybe_done(state)
        self._r.decoding = []


def _seqs_needed(request: GenRequest) -> int:
    live = min(request.parallel or request.n, request.n)
    return live + (1 if live < request.n else 0)


def _runs(ids: list[int]) -> int:
    """Runs of consecutive ids in a sorted list: [0, 1, 2, 5, 6] has 2."""
    return sum(1 for i, seq in enumerate(ids) if i == 0 or seq != ids[i - 1] + 1)


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def _overflow_error(request: GenRequest, need: int, limit: int, n_seq_max: int, per_seq: bool) -> Exception:
    if not request.prompt:
        return ContextOverflowError("the prompt is empty")
    if _seqs_needed(request) > n_seq_max:
        return ContextOverflowError(f"{_seqs_needed(request)} sequences needed, the context holds {n_seq_max}")
    new = f"{request.max_tokens}" if per_seq else f"{request.n}×{request.max_tokens}"
    where = f"the context of {limit} per sequence" if per_seq else f"the context of {limit}"
    return ContextOverflowError(
        f"prompt ({len(request.prompt)} tokens) + {new} new tokens exceed {where} by {need - limit} tokens",
        hint="raise --ctx, lower --max-tokens, or shorten the prompt",
    )
