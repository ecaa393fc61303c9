"""`GenerationOptions`: the one definition of every generation setting and its default.

Every face builds one: the CLI from its flags (a flag left out is None, so the default here
applies), `hearth serve` from a request, a Python program with keywords
(`model.generate("Hi", temperature=0)`). Nothing else in hearth states a sampling default.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

from ..errors import UsageError
from .sampling import SamplingParams

# max_tokens when none is given, by what is being generated: a one-shot answer, a chat turn
# (answers run longer, and the context meter shows the room), one line of a batch job.
DEFAULT_MAX_TOKENS = {"generate": 512, "chat": 1024, "batch": 256, "reason": 512}
DEFAULT_TEMPERATURE = SamplingParams.temperature
REASONING_TEMPERATURE = 0.7  # self-consistency's usual setting: diverse samples, few derailed ones
SINGLE_ANSWER_TEMPERATURE = 0.0  # reasoning mode with one sample: its most likely answer
DEFAULT_MIN_P = SamplingParams.min_p
# Reasoning mode's samples keep the whole nucleus: min-p 0.05 makes one sample a little better but
# the vote worse (GSM8K dev 0-99, Qwen2.5-Coder-1.5B, K=8: SC 82% vs 78%, 5 won 1 lost; one
# sample 54% vs 60%; README "Sampling levers"), so voting gets the more diverse samples.
REASONING_MIN_P = 0.0


@dataclass(frozen=True)
class GenerationOptions:
    """How to generate. None means "the default for this kind of generation" (see above)."""

    # The sampler defaults are written once, on the engine's SamplingParams, and read from there.
    max_tokens: int | None = None
    temperature: float | None = None
    top_k: int = SamplingParams.top_k
    top_p: float = SamplingParams.top_p
    min_p: float | None = None
    repeat_penalty: float = SamplingParams.repeat_penalty
    repeat_last_n: int = SamplingParams.repeat_last_n
    seed: int | None = None  # None: a random seed per run
    stop: tuple[str, ...] = ()
    grammar: str | None = None  # GBNF text
    json_schema: str | dict | None = None  # constrain the output to JSON matching this schema
    # Speculative decoding (one answer at a time: generate, stream, chat). The draft length is
    # chosen every step from this machine's measured cost curve and the running acceptance rate.
    lookup: bool = False  # drafts from the prompt and the answer so far (prompt lookup)
    draft: str | None = None  # drafts from this small model (a model reference; same vocabulary)
    # Greedy: check drafts only in calls llama.cpp computes exactly like single rows, so the text is
    # plain decode's to the bit. False: in any call the cost curve favours, as llama.cpp's own
    # speculative decoding does — faster where exactness ends (on some CPUs past 256 positions),
    # the text equal to plain decode's up to rounding-level near-ties.
    exact_drafts: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.stop, str):
            object.__setattr__(self, "stop", (self.stop,))
        elif not isinstance(self.stop, tuple):
            object.__setattr__(self, "stop", tuple(self.stop or ()))
        if self.grammar and self.json_schema is not None:
            raise UsageError("give a grammar or a JSON schema, not both")
        if self.max_tokens is not None and (not isinstance(self.max_tokens, int) or self.max_tokens < 1):
            raise UsageError(f"max_tokens must be an integer >= 1, got {self.max_tokens!r}")
        if self.lookup and self.draft:
            raise UsageError("give --lookup or --draft, not both", hint="--lookup needs no second model")

    def merged(self, **overrides) -> "GenerationOptions":
        """A copy with the given settings replaced; None values keep the current one."""
        known = {f.name for f in fields(self)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise TypeError(f"unknown generation option(s): {', '.join(unknown)} (known: {', '.join(sorted(known))})")
        changes = {k: v for k, v in overrides.items() if v is not None}
        return replace(self, **changes) if changes else self

    @property
    def speculative(self) -> str | None:
        """"lookup", "draft", or None (plain decode)."""
        return "draft" if self.draft else "lookup" if self.lookup else None

    def require_plain(self, what: str) -> None:
        """Speculative decoding serves one answer at a time: refuse it for `what`."""
        if self.speculative:
            raise UsageError(f"--{self.speculative} (speculative decoding) applies to one answer at a time, not to {what}",
                             hint="use it with hearth run or hearth chat without --samples")

    def max_tokens_for(self, mode: str) -> int:
        return self.max_tokens if self.max_tokens is not None else DEFAULT_MAX_TOKENS[mode]

    def temperature_for(self, mode: str, samples: int = 1) -> float:
        if self.temperature is not None:
            return self.temperature
        if mode == "reason":
            return REASONING_TEMPERATURE if samples > 1 else SINGLE_ANSWER_TEMPERATURE
        return DEFAULT_TEMPERATURE

    def min_p_for(self, mode: str, samples: int = 1) -> float:
        if self.min_p is not None:
            return self.min_p
        return REASONING_MIN_P if mode == "reason" and samples > 1 else DEFAULT_MIN_P

    def sampling(self, mode: str = "generate", samples: int = 1) -> SamplingParams:
        """The engine's sampler settings for this kind of generation (a JSON schema compiled to
        its GBNF grammar)."""
        return SamplingParams(
            temperature=self.temperature_for(mode, samples), top_k=self.top_k, top_p=self.top_p,
            min_p=self.min_p_for(mode, samples), repeat_penalty=self.repeat_penalty, repeat_last_n=self.repeat_last_n,
            seed=self.seed, grammar=self.grammar_text(),
        ).validated()

    def grammar_text(self) -> str | None:
        """The GBNF grammar to constrain output with: the grammar, or the JSON schema's."""
        if self.json_schema is None:
            return self.grammar
        import json

        from .engine import json_schema_grammar

        schema = self.json_schema if isinstance(self.json_schema, str) else json.dumps(self.json_schema)
        return json_schema_grammar(schema)
