"""When to stop sampling: per question (the vote is settled) and per sample (low confidence).

Per question, after each finished sample the engine calls `decide_stop(answers, remaining, rule)`:
- the leader cannot lose even if every remaining sample votes for the runner-up;
- Adaptive-Consistency (Aggarwal et al. 2023): with counts v1 >= v2 of the top two answers,
  P(p1 > p2) = P(X > 1/2) for X ~ Beta(v1 + 1, v2 + 1) passes a threshold (0.95);
- Early-Stopping Self-Consistency (Li et al. 2024): the last `window` answers all agree;
- optionally (`give_up`), no answer could still pass the Beta threshold even if every remaining
  sample voted for it: the vote will end as a weak plurality, so stop spending on it.

Per sample, DeepConf (Fu et al. 2025): a token's confidence is minus the mean log-probability of
the top-k candidates at that step (a peaked distribution leaves the other candidates very
unlikely, so it scores high). A sample's weight is its lowest mean over a sliding window of
tokens; in online mode a bar is set from the first finished samples (`confidence_bar`) and a
sequence whose current window falls below it is cut (`should_cut`).
"""

from __future__ import annotations

import math
from collections import Counter, deque
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

from ..errors import UsageError

# DeepConf's sliding window of token confidences, in tokens: DeepConf uses 2048 for long traces;
# GSM8K answers run 150-300 tokens, and 32 was chosen offline (scripts/study_stopping.py, README).
DEFAULT_CONFIDENCE_WINDOW = 32
DEFAULT_KEEP_TOP_PERCENT = 90.0  # DeepConf-high: keep the 90% most confident traces

# ---------------------------------------------------------------- DeepConf confidence


def token_confidence(top_logprobs: Sequence[float]) -> float:
    """Minus the mean log-probability of the top-k candidates at one step (>= 0)."""
    if len(top_logprobs) == 0:
        raise ValueError("token_confidence needs at least one log-probability")
    return -math.fsum(top_logprobs) / len(top_logprobs)


def group_confidences(token_confs: Sequence[float], window: int = DEFAULT_CONFIDENCE_WINDOW) -> list[float]:
    """Means of every `window` consecutive token confidences (n - window + 1 of them).

    A sequence shorter than the window is one group: the mean of all its tokens. No tokens, no groups.
    """
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    if not token_confs:
        return []
    if len(token_confs) <= window:
        return [math.fsum(token_confs) / len(token_confs)]
    # Prefix sums keep this O(n) for any window.
    prefix = [0.0]
    for conf in token_confs:
        prefix.append(prefix[-1] + conf)
    return [(prefix[i + window] - prefix[i]) / window for i in range(len(token_confs) - window + 1)]


def lowest_group_confidence(token_confs: Sequence[float], window: int = DEFAULT_CONFIDENCE_WINDOW) -> float:
    """A sample's weight: its least confident stretch. 0.0 for a sample with no tokens."""
    groups = group_confidences(token_confs, window)
    return min(groups) if groups else 0.0


class WindowedConfidence:
    """The same numbers as `group_confidences`, kept as tokens arrive (O(1) per token).

    `current` is the mean of the last `window` tokens (of all tokens while fewer have come);
    `lowest` equals `lowest_group_confidence` of everything pushed so far; `full` says whether a
    whole window has been seen (cut a sequence only then: a few tokens say little).
    """

    def __init__(self, window: int = DEFAULT_CONFIDENCE_WINDOW):
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        self.window = window
        self.count = 0
        self._recent: deque[float] = deque()
        self._sum = 0.0
        self._lowest_full: float | None = None

    def push(self, confidence: float) -> float:
        """Add one token's confidence; returns the current window mean."""
        self._recent.append(confidence)
        self._sum += confidence
        self.count += 1
        if len(self._recent) > self.window:
            self._sum -= self._recent.popleft()
        if len(self._recent) == self.window:
            current = self.current
            if self._lowest_full is None or current < self._lowest_full:
                self._lowest_full = current
        return self.current

    @property
    def full(self) -> bool:
        return self.count >= self.window

    @property
    def current(self) -> float:
        return self._sum / len(self._recent) if self._recent else 0.0

    @property
    def lowest(self) -> float:
        return self._lowest_full if self._lowest_full is not None else self.current


def confidence_bar(warmup_lowest_confs: Iterable[float], keep_top_percent: float = DEFAULT_KEEP_TOP_PERCENT) -> float:
    """DeepConf online threshold: the (100 - keep_top_percent)th percentile of the warm-up samples'
    lowest group confidences (linear interpolation between ranks, as numpy's default), so that
    about `keep_top_percent`% of samples like them would pass."""
    values = sorted(warmup_lowest_confs)
    if not values:
        raise ValueError("confidence_bar needs at least one warm-up sample")
    if not 0 < keep_top_percent <= 100:
        raise UsageError(f"keep-top percent must be in (0, 100], got {keep_top_percent}")
    rank = (100 - keep_top_percent) / 100 * (len(values) - 1)
    below = math.floor(rank)
    above = min(below + 1, len(values) - 1)
    return values[below] + (values[above] - values[below]) * (rank - below)


def should_cut(current_window_conf: float, bar: float | None) -> bool:
    """Cut a sequence whose current window confidence is below the bar (no bar yet: never)."""
    return bar is not None and current_window_conf < bar


# ---------------------------------------------------------------- the Beta criterion


def _log_beta(a: float, b: float) -> float:
    return math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)


def _incomplete_beta_fraction(x: float, a: float, b: float) -> float:
    """The continued fraction of I_x(a, b) (modified Lentz), valid for x < (a + 1) / (a + b + 2)."""
    tiny, eps = 1e-300, 1e-15
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    result = d
    for m in range(1, 1000):
        # Even term d_2m, then odd term d_2m+1, of I_x = front / (1 + d_1 / (1 + d_2 / ...)).
        for coefficient in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1.0 + coefficient * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + coefficient / c
            c = c if abs(c) > tiny else tiny
            result *= d * c
        if abs(d * c - 1.0) < eps:
            break
    front = math.exp(a * math.log(x) + b * math.log1p(-x) - _log_beta(a, b))
    return front * result / a


def regularized_incomplete_beta(x: float, a: float, b: float) -> float:
    """I_x(a, b) = P(X <= x) for X ~ Beta(a, b), without scipy.

    Integer a, b: exactly, as P(Binomial(a + b - 1, x) >= a) (a Beta(a, b) variable is the a-th
    smallest of a + b - 1 uniforms). Otherwise: the continued fraction, using the symmetry
    I_x(a, b) = 1 - I_{1-x}(b, a) where the fraction converges slowly.
    """
    if a <= 0 or b <= 0:
        raise ValueError(f"Beta parameters must be > 0, got a={a}, b={b}")
    if x <= 0:
        return 0.0
    if x >= 1:
        return 1.0
    if float(a).is_integer() and float(b).is_integer():
        n, k = int(a) + int(b) - 1, int(a)
        if x == 0.5:  # the case Adaptive-Consistency asks: exact in integers
            return sum(math.comb(n, j) for j in range(k, n + 1)) / 2**n  # int / int rounds once
        return math.fsum(math.comb(n, j) * x**j * (1 - x) ** (n - j) for j in range(k, n + 1))
    if x < (a + 1) / (a + b + 2):
        return _incomplete_beta_fraction(x, a, b)
    return 1.0 - _incomplete_beta_fraction(1 - x, b, a)


def beta_majority_probability(top: int, second: int, prior: tuple[float, float] = (1.0, 1.0)) -> float:
    """P(p_top > p_second) given `top` and `second` votes: P(X > 1/2), X ~ Beta(top + a, second + b).

    The uniform prior (1, 1) is Adaptive-Consistency's Beta(v1 + 1, v2 + 1).
    """
    if top < 0 or second < 0:
        raise ValueError(f"vote counts must be >= 0, got {top} and {second}")
    if prior[0] <= 0 or prior[1] <= 0:
        raise ValueError(f"Beta prior must be > 0, got {prior}")
    return 1.0 - regularized_incomplete_beta(0.5, top + prior[0], second + prior[1])


# ---------------------------------------------------------------- stopping rules


def _top_two(counts: Mapping[str, int]) -> tuple[int, int]:
    ordered = sorted(counts.values(), reverse=True) + [0, 0]
    return ordered[0], ordered[1]


def cannot_lose(counts: Mapping[str, int], remaining: int) -> bool:
    """The leader stays strictly ahead even if all `remaining` samples vote for the runner-up.
    (A tie could still go either way on weights, so it is not enough.)"""
    if remaining < 0:
        raise ValueError(f"remaining must be >= 0, got {remaining}")
    top, second = _top_two(counts)
    return top > 0 and top > second + remaining


def esc_window_agrees(answers_in_order: Sequence[str | None], window: int) -> bool:
    """The last `window` answers (in finish order) are all the same answer; None never agrees.

    ESC checks fixed consecutive blocks; samples here finish one at a time, so the window slides.
    """
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    if len(answers_in_order) < window:
        return False
    last = answers_in_order[-window:]
    return last[0] is not None and all(answer == last[0] for answer in last)


@dataclass(frozen=True)
class StopRule:
    threshold: float = 0.95  # Adaptive-Consistency's Beta probability
    window: int | None = 4  # ESC window; None turns that rule off
    min_samples: int = 3  # answered samples before a probabilistic rule may stop
    prior: tuple[float, float] = (1.0, 1.0)
    give_up: bool = False  # stop when no remaining samples could make the Beta rule pass

    def __post_init__(self):
        if not 0.5 < self.threshold <= 1:
            raise UsageError(f"stop threshold must be in (0.5, 1], got {self.threshold}")
        if self.window is not None and self.window < 1:
            raise UsageError(f"agreement window must be >= 1, got {self.window}")
        if self.min_samples < 1:
            raise UsageError(f"min samples must be >= 1, got {self.min_samples}")


@dataclass(frozen=True)
class StopDecision:
    stop: bool
    # all_done | cannot_lose | beta | esc_window (stop); min_samples | undecided (go on)
    reason: str
    leader: str | None = None
    probability: float = 0.0  # the Beta probability that the leader is the majority


def decide_stop(answers_so_far: Sequence[str | None], remaining: int, rule: StopRule = StopRule()) -> StopDecision:
    """Whether to stop the samples still running, given the answers of the finished ones (in
    finish order, None for no answer) and how many samples are still to finish.

    Certain rules come first (nothing left; the leader cannot lose), then, once `min_samples`
    answers are in, the Beta probability and the ESC window.
    """
    counts = Counter(answer for answer in answers_so_far if answer is not None)
    ranked = counts.most_common()  # ties keep first-seen order
    leader = ranked[0][0] if ranked else None
    top, second = _top_two(counts)
    probability = beta_majority_probability(top, second, rule.prior)
    if remaining <= 0:
        return StopDecision(True, "all_done", leader, probability)
    if cannot_lose(counts, remaining):
        return StopDecision(True, "cannot_lose", leader, probability)
    if sum(counts.values()) < rule.min_samples:
        return StopDecision(False, "min_samples", leader, probability)
    if probability >= rule.threshold:
        return StopDecision(True, "beta", leader, probability)
    if rule.window is not None and esc_window_agrees(answers_so_far, rule.window):
        return StopDecision(True, "esc_window", leader, probability)
    if rule.give_up and not can_still_settle(counts, remaining, rule):
        return StopDecision(True, "cannot_settle", leader, probability)
    return StopDecision(False, "undecided", leader, probability)


def can_still_settle(counts: Mapping[str, int], remaining: int, rule: StopRule = StopRule()) -> bool:
    """Whether some answer could still pass the Beta rule if every remaining sample voted for it.

    When none could (e.g. four samples, four different answers, four to go: at best 5 to 1,
    P = 0.94 < 0.95), the vote will end as a weak plurality however it goes; more samples
    cost their tokens for little. `give_up` stops there.
    """
    ordered = sorted(counts.values(), reverse=True) + [0, 0]
    for i, count in enumerate(ordered[:-1]):
        rival = ordered[1] if i == 0 else ordered[0]
        if beta_majority_probability(count + remaining, rival, rule.prior) >= rule.threshold:
            return True
    return False
