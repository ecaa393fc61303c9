"""hearth's public Python API: `hearth.load()` -> `Model`, and the model-file jobs.

```python
import hearth

with hearth.load("default") as model:              # any -m reference; ctx=, threads=, gpu_layers=
    out = model.generate("Say hi", max_tokens=16, temperature=0)
    print(out.text, out.finish_reason, out.usage.completion_tokens)
    for piece in model.stream("Count to three", temperature=0):
        print(piece, end="")
    vote = model.reason("What is 2+3?", samples=8, answer="number")
    rows = model.batch([{"id": "a", "prompt": "Name a fruit."}])
    chat = model.chat(system="Be brief."); chat.send("Hi"); chat.undo()
```

Every face (the CLI, `hearth serve`, Ray replicas) generates through this module, so they share
one validation, one fit plan, one set of defaults (`GenerationOptions`) and one engine.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator

from .runtime.options import GenerationOptions

Prompt = str | list[dict]


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass
class Completion:
    """One generated answer."""

    text: str
    finish_reason: str  # "stop" (end of text or a stop string), "length" (max_tokens), "cancelled"
    usage: Usage
    model: str
    timings: dict = field(default_factory=dict)  # load_s, prompt_tok_s, decode_tok_s (+ speculative)

    def to_dict(self) -> dict:
        return {"text": self.text, "model": self.model, "finish_reason": self.finish_reason,
                "usage": {"prompt_tokens": self.usage.prompt_tokens,
                          "completion_tokens": self.usage.completion_tokens},
                "timings": self.timings}


def load(model: str | None = None, *, ctx: int | None = None, threads: int | None = None,
         gpu_layers: int | None = None, options: GenerationOptions | None = None,
         verbose: bool = False) -> "Model":
    """Resolve a model reference (a .gguf path, `default`, REPO[:QUANT] from the HF cache, or a
    converted name), check the file, plan how it fits this machine, and load it.

    `ctx`, `threads` and `gpu_layers` override the plan; `options` are the generation defaults
    of every call on this model (each call's keywords override them). Options that speculate
    (`lookup`, `draft`) also load the model so that greedy drafts can be checked exactly (on a
    CPU: with flash attention, which is otherwise off there)."""
    from .runtime.session import PlanRequest

    options = options or GenerationOptions()
    request = PlanRequest(ctx=ctx, threads=threads, gpu_layers=gpu_layers,
                          speculative=options.speculative is not None)
    return Model(_load_resolved(model, request, verbose), options, verbose)


def _load_resolved(reference: str | None, request, verbose: bool = False):
    from .references import resolve_model
    from .runtime.session import load_model

    return load_model(resolve_model(reference), request, verbose=verbose)


class Model:
    """A loaded model: generate, stream, reason, batch, chat. Close it (or use `with`)."""

    def __init__(self, loaded, options: GenerationOptions, verbose: bool = False):
        self._loaded = loaded
        self.options = options
        self.verbose = verbose
        self._draft = None  # the draft model of `options.draft`, loaded on first use

    # -- what it is ----------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self._loaded.name

    @property
    def reference(self) -> str:
        return self._loaded.resolved.reference

    @property
    def path(self):
        """The GGUF file (the first one of a split model)."""
        return self._loaded.resolved.path

    @property
    def source(self) -> str:
        """Where the reference resolved: default | file | store | registry."""
        return self._loaded.resolved.source

    @property
    def plan(self):
        return self._loaded.plan

    @property
    def info(self):
        return self._loaded.info

    @property
    def has_template(self) -> bool:
        return self._loaded.has_template

    @property
    def reasoning_style(self):
        """How `reason` words a question for this model (`runtime.prompts.ReasoningStyle`: its
        `.name` and `.why`): the family's trained reasoning prompt, or hearth's instruction."""
        return self._loaded.reasoning_style

    @property
    def load_s(self) -> float:
        return self._loaded.engine.load_s

    def tokenize(self, text: str) -> list[int]:
        return self._loaded.engine.tokenize(text, add_special=False)

    def prompt_tokens(self, prompt: Prompt, system: str | None = None, template: bool = True) -> list[int]:
        """The tokens a prompt becomes: through the chat template (when the model has one),
        or as raw text with `template=False`."""
        if not template:
            if not isinstance(prompt, str):
                raise TypeError("a raw (template=False) prompt must be text")
            return self._loaded.engine.tokenize(prompt, add_special=True)
        return self._loaded.prompt_tokens(_messages(prompt, system))

    # -- one answer ----------------------------------------------------------------------------
    def generate(self, prompt: Prompt, options: GenerationOptions | None = None, *, system: str | None = None,
                 template: bool = True, on_text: Callable[[str], None] | None = None, **overrides) -> Completion:
        """Answer one prompt (text, or chat messages) and return the whole answer."""
        from .runtime.generation import generate_once

        from .runtime.generation import speculative_timings

        opts = (options or self.options).merged(**overrides)
        self._loaded.use_layout(1, True)
        tokens = self.prompt_tokens(prompt, system, template)
        sample, stats = generate_once(self._loaded, tokens, opts, on_text, draft=self.draft_model(opts.draft))
        d = stats.as_dict()
        timings = {"load_s": round(self.load_s, 4), "prompt_tok_s": d["prompt_tok_s"], "decode_tok_s": d["decode_tok_s"]}
        speculative = speculative_timings(sample)
        if speculative:
            timings["speculative"] = speculative
        return Completion(sample.text, sample.finish_reason, Usage(len(tokens), len(sample.tokens)), self.name,
                          timings)

    def stream(self, prompt: Prompt, options: GenerationOptions | None = None, *, system: str | None = None,
               template: bool = True, **overrides) -> Iterator[str]:
        """Answer one prompt piece by piece: `"".join(model.stream(p))` is `generate(p).text`.
        Stopping the iteration early stops the generation."""
        from .runtime.generation import stream_once

        opts = (options or self.options).merged(**overrides)
        self._loaded.use_layout(1, True)
        yield from stream_once(self._loaded, self.prompt_tokens(prompt, system, template), opts,
                               draft=self.draft_model(opts.draft))

    def draft_model(self, reference: str | None):
        """The draft model for speculative decoding (`draft=`), loaded once and kept with this
        model; None without one. Refused in one line when its vocabulary is not this model's."""
        if not reference:
            return None
        if self._draft is not None and self._draft.resolved.reference == reference:
            return self._draft
        from .runtime.drafts import check_same_vocabulary
        from .runtime.session import PlanRequest

        draft = _load_resolved(reference, PlanRequest(threads=self.plan.n_threads), self.verbose)
        try:
            check_same_vocabulary(self._loaded.engine.model, draft.engine.model, self.name, draft.name)
        except BaseException:
            draft.close()
            raise
        if self._draft is not None:
            self._draft.close()
        self._draft = draft
        return draft

    # -- reasoning mode ------------------------------------------------------------------------
    def reason(self, prompt: Prompt, samples: int = 8, *, answer: str = "auto", vote: str = "weighted",
               adaptive: bool = True, system: str | None = None, options: GenerationOptions | None = None,
               on_update: Callable | None = None, **overrides):
        """Sample `samples` answers from one prompt evaluation, extract each final answer, vote.

        Returns a ReasoningResult: .answer .votes .samples .tokens (and .vote, .stop_reason ...).
        With one sample it is the model's greedy answer (unless a temperature is given), extracted."""
        from .runtime.reasoning import reason_prompt

        opts = (options or self.options).merged(**overrides)
        opts.require_plain("reasoning mode")
        return reason_prompt(self._loaded, _messages(prompt, system), opts, samples=samples, answer=answer,
                             vote=vote, adaptive=adaptive, on_update=on_update)

    # -- many prompts --------------------------------------------------------------------------
    def batch(self, rows: Iterable[dict], options: GenerationOptions | None = None, *, system: str | None = None,
              parallel: int | None = None, ctx: int | None = None, **overrides) -> dict[Any, dict]:
        """Generate every row ({"id", "prompt"} or {"id", "messages"}, with optional per-row
        settings as in `hearth batch`) with continuous batching; results by id, in input order
        (a bad row gets {"id", "error"})."""
        from .errors import UsageError

        rows = list(rows)
        order = [row.get("id", n) if isinstance(row, dict) else n for n, row in enumerate(rows, start=1)]
        if len(set(map(repr, order))) != len(order):
            raise UsageError("two rows have the same id: results are returned by id")
        got: dict[Any, dict] = {}
        self.run_batch(rows, lambda record: got.__setitem__(record["id"], record), options, system=system,
                       parallel=parallel, ctx=ctx, from_json=False, **overrides)
        return {key: got[key] for key in order if key in got}

    def run_batch(self, lines: Iterable, emit: Callable[[dict], None], options: GenerationOptions | None = None, *,
                  system: str | None = None, parallel: int | None = None, ctx: int | None = None,
                  skip_ids: set | None = None, from_json: bool = True, on_error: Callable | None = None,
                  on_layout: Callable[[str], None] | None = None, on_line: Callable | None = None, shard=None,
                  **overrides):
        """The batch job under `hearth batch` and `Model.batch`: JSONL lines (or dict rows) in,
        one record per line to `emit` the moment it is done. Returns a BatchSummary. With a
        `shard` (`runtime.batch_shards.parse_shard("I/N")`), only the lines of that shard."""
        from .runtime.jsonl_batch import run_batch_job

        opts = (options or self.options).merged(**overrides)
        opts.require_plain("batch jobs")
        return run_batch_job(self._loaded, lines, emit, opts, system=system, parallel=parallel, ctx=ctx,
                             skip_ids=skip_ids or set(), from_json=from_json, on_error=on_error, on_layout=on_layout,
                             on_line=on_line, shard=shard)

    def batch_layout(self, options: GenerationOptions | None = None, *, parallel: int | None = None,
                     ctx: int | None = None, **overrides):
        """How `run_batch` would lay out this model's context: `.parallel` sequences in flight,
        `.per_seq` KV cells each, and the `.reason`."""
        from .runtime.jsonl_batch import batch_layout

        return batch_layout(self._loaded, (options or self.options).merged(**overrides), parallel, ctx)

    # -- conversation --------------------------------------------------------------------------
    def chat(self, system: str | None = None, options: GenerationOptions | None = None, **overrides):
        """A conversation that keeps its KV cache between turns: .send(text) .undo() .messages.

        The chat shares this model; closing the chat closes the model."""
        from .runtime.chat import ChatSession

        opts = (options or self.options).merged(**overrides)
        self._loaded.use_layout(1, True)
        session = ChatSession(self._loaded, opts.sampling("chat"), opts.max_tokens_for("chat"), system,
                              loader=lambda ref, request: _load_resolved(ref, request, self.verbose))
        session.lookup = opts.lookup
        session.exact_drafts = opts.exact_drafts
        if opts.draft:
            session.set_draft(opts.draft)
        return session

    # -- many clients --------------------------------------------------------------------------
    def service(self, parallel: int | None = None, *, ctx: int | None = None, queue: int | None = None,
                options: GenerationOptions | None = None, on_layout: Callable[[str], None] | None = None,
                **overrides):
        """Start a GenerationService: one engine thread that owns this model and batches the
        requests of many concurrent clients (`hearth serve` runs on it). `parallel` requests
        decode together (default as `hearth batch`), each with `ctx` KV cells (default: planned);
        `queue` more may wait. With `lookup` in the options, every request of one answer
        speculates with prompt-lookup drafts unless it says otherwise (a request may also ask for
        them: `prepare(..., speculative="lookup")`). Call its `.stop()` before closing the model."""
        from .errors import UsageError
        from .runtime.service import DEFAULT_QUEUE, GenerationService

        opts = (options or self.options).merged(**overrides)
        if opts.draft:
            raise UsageError("a draft model is not served: give the server lookup drafts (--lookup)",
                             hint="draft models work in hearth run and hearth chat")
        return GenerationService(self._loaded, opts, parallel=parallel, ctx=ctx,
                                 queue=DEFAULT_QUEUE if queue is None else queue, on_layout=on_layout,
                                 lookup=opts.lookup)

    # -- lifetime ------------------------------------------------------------------------------
    def close(self) -> None:
        if self._draft is not None:
            self._draft.close()
        self._loaded.close()

    def __enter__(self) -> "Model":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _messages(prompt: Prompt, system: str | None) -> list[dict]:
    if isinstance(prompt, str):
        messages = [{"role": "user", "content": prompt}]
    elif isinstance(prompt, list) and all(isinstance(m, dict) for m in prompt):
        messages = list(prompt)
    else:
        raise TypeError("a prompt is text or a list of {'role', 'content'} messages")
    if system and not any(m.get("role") == "system" for m in messages):
        messages.insert(0, {"role": "system", "content": system})
    return messages
