"""What goes into the scheduler and what comes out: requests, samples, statistics, hooks."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .sampling import SamplingParams
from .textstream import TextStream


@dataclass
class GenRequest:
    prompt: list[int]
    params: SamplingParams
    max_tokens: int
    stop: tuple[str, ...] = ()
    n: int = 1  # samples sharing this prompt
    parallel: int | None = None  # samples alive at once (None: all n); later ones fork from the prompt
    seeds: list[int] | None = None
    key: Any = None
    reuse_prefix: bool = False  # keep this sequence's KV for the next call (n == 1)
    confidence_top_k: int = 0  # >0: record each token's top-k logprob confidence
    ignore_eog: bool = False  # benchmarks: generate max_tokens even past end-of-generation
    speculation: Any = None  # speculative.Speculation: draft tokens and check them (n == 1)

    def kv_cells(self) -> int:
        """KV cells this request can occupy at most: the shared prompt + the live samples' tokens
        (a late sample shares the prompt's cells and re-evaluates one token of its own)."""
        live = min(self.parallel or self.n, self.n)
        return len(self.prompt) + live * self.max_tokens + (live if live < self.n else 0)


@dataclass
class Sample:
    """One sequence being generated: its tokens, text, and why it finished."""

    request: GenRequest
    index: int
    seq_id: int
    n_past: int
    sampler: Any = None
    tokens: list[int] = field(default_factory=list)
    finish_reason: str | None = None
    logprob_sum: float = 0.0
    token_confidences: list[float] = field(default_factory=list)
    first_token_at: float | None = None
    stream: TextStream = field(default_factory=TextStream)
    spec: Any = None  # speculative.SpeculativeSample when the request speculates
    prompt_reused: int = 0  # prompt tokens served from the KV cache (prefix reuse or sharing)

    def __post_init__(self) -> None:
        self.stream = TextStream(self.request.stop)

    @property
    def done(self) -> bool:
        return self.finish_reason is not None

    def stop(self, reason: str) -> None:
        """Called by a hook to end this sample after the current token (e.g. answer complete)."""
        if self.finish_reason is None:
            self.finish_reason = reason

    @property
    def text(self) -> str:
        return self.stream.text

    @property
    def mean_logprob(self) -> float:
        return self.logprob_sum / len(self.tokens) if self.tokens else 0.0


@dataclass
class GenStats:
    prompt_tokens: int = 0  # prompt tokens actually evaluated (after prefix reuse)
    prompt_reused: int = 0  # prompt tokens served from the KV cache
    prompt_evals: int = 0  # prompts evaluated (one per request, however many samples)
    prompt_s: float = 0.0
    decode_rows: int = 0  # sampled (and drafted) tokens fed back through the model
    decoded: int = 0  # tokens the decode calls yielded (more than their samples' rows when drafts are kept)
    decode_s: float = 0.0
    decode_calls: int = 0
    max_rows_per_call: int = 0
    generated: int = 0
    pure_decode_rows: int = 0  # rows of decode calls that carried no prompt tokens
    pure_decode_s: float = 0.0
    by_width: dict = field(default_factory=dict)  # rows per decode-only call -> [calls, seconds]
    moves: int = 0  # KV streams: samples moved to a lower sequence id
    seq_runs: int = 0  # KV streams: runs of consecutive sequence ids over the decode calls (one micro-batch each)

    def as_dict(self) -> dict:
        return {
            "prompt_tokens": self.prompt_tokens,
            "prompt_reused": self.prompt_reused,
            "prompt_evals": self.prompt_evals,
            "prompt_s": round(self.prompt_s, 4),
            "prompt_tok_s": _rate(self.prompt_tokens, self.prompt_s),
            "decode_calls": self.decode_calls,
            "decode_rows": self.decode_rows,
            "max_rows_per_call": self.max_rows_per_call,
            "decode_s": round(self.decode_s, 4),
            "decode_tok_s": _rate(self.decoded, self.decode_s),
            "pure_decode_tok_s": _rate(self.pure_decode_rows, self.pure_decode_s),
            "generated": self.generated,
            "moves": self.moves,
            "runs_per_call": round(self.seq_runs / self.decode_calls, 2) if self.decode_calls else 0.0,
        }


def _rate(n: int, seconds: float) -> float:
    return round(n / seconds, 2) if seconds > 0 else 0.0


class Hooks:
    """Override what you need; the scheduler calls these between decode calls."""

    def on_text(self, sample: Sample, delta: str) -> None:
        """New visible text of a sample (stop strings already held back/cut)."""

    def on_finish(self, sample: Sample) -> None:
        """A sample ended (finish_reason set, its sequence freed)."""

    def on_request_done(self, request: GenRequest, samples: list[Sample]) -> None:
        """All samples of a request ended."""

    def on_request_error(self, request: GenRequest, error: Exception) -> None:
        """A request could not run at all (e.g. longer than the context)."""
        raise error

    def should_cancel(self) -> bool:
        return False

    def may_launch(self, request: GenRequest, live: int) -> bool:
        """Whether to start another sample of `request` now, `live` of its samples running."""
        return True
