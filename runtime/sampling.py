"""Sampling parameters: one validated dataclass shared by run, chat, batch and reasoning mode."""

from __future__ import annotations

import random
from dataclasses import dataclass, replace

from ..errors import UsageError


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 0.8
    top_k: int = 40
    top_p: float = 0.95
    min_p: float = 0.05
    repeat_penalty: float = 1.0
    repeat_last_n: int = 64
    seed: int | None = None
    grammar: str | None = None  # GBNF text

    def validated(self) -> "SamplingParams":
        checks = [
            (0.0 <= self.temperature <= 5.0, f"temperature must be in [0, 5], got {self.temperature}"),
            (self.top_k >= 0, f"top-k must be >= 0, got {self.top_k}"),
            (0.0 < self.top_p <= 1.0, f"top-p must be in (0, 1], got {self.top_p}"),
            (0.0 <= self.min_p < 1.0, f"min-p must be in [0, 1), got {self.min_p}"),
            (0.0 < self.repeat_penalty <= 5.0, f"repeat penalty must be in (0, 5], got {self.repeat_penalty}"),
        ]
        for ok, message in checks:
            if not ok:
                raise UsageError(message)
        if self.grammar:
            from .grammars import check_grammar

            check_grammar(self.grammar)  # what would crash llama.cpp is refused before a model loads
        return self

    def with_overrides(self, **overrides) -> "SamplingParams":
        """A copy with the given fields replaced; None values mean 'keep'."""
        changes = {k: v for k, v in overrides.items() if v is not None}
        return replace(self, **changes).validated()


def sample_seeds(base_seed: int | None, n: int) -> list[int]:
    """One seed per sample: consecutive from the base seed, or random when none is given."""
    base = random.SystemRandom().randrange(2**31) if base_seed is None else base_seed
    return [(base + i) & 0x7FFFFFFF for i in range(n)]
