"""The vote over reasoning samples: majority, or weighted by DeepConf's confidence.

Each sample's answer comes from `runtime/answers.py` (`final_answer`); samples with no answer,
or cut by the confidence bar, do not vote.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from ..errors import UsageError

VOTE_METHODS = ("majority", "weighted")


@dataclass
class SampleResult:
    """One finished (or stopped) sample of a question."""

    text: str
    answer: str | None  # normalized (`final_answer`); None: no answer, does not vote
    weight: float = 1.0  # weighted vote: DeepConf's lowest group confidence (>= 0)
    tokens: int = 0
    mean_logprob: float | None = None
    stopped_early: bool = False  # stopped once its answer line was complete
    cut: bool = False  # cut by the confidence bar (DeepConf online): does not vote


@dataclass(frozen=True)
class VoteResult:
    answer: str | None  # None when no sample voted
    counts: dict[str, int]  # answer -> votes, best first
    weights: dict[str, float]  # answer -> total weight, same order
    n_voted: int
    margin: float  # winner minus runner-up, in the method's score (votes or weight)
    method: str
    winner_index: int | None  # the highest-weight sample with the winning answer


def vote(samples: Sequence[SampleResult], method: str = "weighted") -> VoteResult:
    """Tally the samples that have an answer and were not cut.

    majority ranks answers by count, then total weight, then first occurrence (the sample order
    given, i.e. finish order); weighted ranks by total weight, then count, then first occurrence.
    """
    if method not in VOTE_METHODS:
        raise UsageError(f"unknown vote method {method!r}", hint="use majority or weighted")
    voter_weights: dict[str, list[float]] = {}
    first_seen: dict[str, int] = {}
    for index, sample in enumerate(samples):
        if sample.answer is None or sample.cut:
            continue
        if not sample.weight >= 0 or math.isinf(sample.weight):
            raise ValueError(f"sample {index} has weight {sample.weight}; weights must be finite and >= 0")
        voter_weights.setdefault(sample.answer, []).append(sample.weight)
        first_seen.setdefault(sample.answer, index)
    totals = {answer: math.fsum(weights) for answer, weights in voter_weights.items()}
    counts = {answer: len(weights) for answer, weights in voter_weights.items()}

    def rank(answer: str) -> tuple:
        score = (counts[answer], totals[answer]) if method == "majority" else (totals[answer], counts[answer])
        return (*score, -first_seen[answer])

    ordered = sorted(voter_weights, key=rank, reverse=True)
    if not ordered:
        return VoteResult(None, {}, {}, 0, 0.0, method, None)
    score = counts if method == "majority" else totals
    winner = ordered[0]
    margin = score[winner] - (score[ordered[1]] if len(ordered) > 1 else 0)
    winner_index = max(
        (index for index, sample in enumerate(samples) if sample.answer == winner and not sample.cut),
        key=lambda index: (samples[index].weight, -index),
    )
    return VoteResult(
        answer=winner,
        counts={answer: counts[answer] for answer in ordered},
        weights={answer: totals[answer] for answer in ordered},
        n_voted=sum(counts.values()),
        margin=float(margin),
        method=method,
        winner_index=winner_index,
    )
