"""DeepConf confidence and the adaptive stopping rules, on hand-worked numbers."""

from __future__ import annotations

import math

import pytest

from hearth.errors import UsageError
from hearth.runtime.stopping import (
    StopRule,
    WindowedConfidence,
    beta_majority_probability,
    can_still_settle,
    cannot_lose,
    confidence_bar,
    decide_stop,
    esc_window_agrees,
    group_confidences,
    lowest_group_confidence,
    regularized_incomplete_beta,
    should_cut,
    token_confidence,
)

# ---------------------------------------------------------------- DeepConf


def test_token_confidence_is_minus_the_mean_top_logprob():
    assert token_confidence([-0.1, -2.3, -4.0]) == pytest.approx(6.4 / 3)
    assert token_confidence([0.0]) == 0.0
    # A peaked step (the alternatives are very unlikely) is more confident than a flat one.
    assert token_confidence([-0.01, -6.0, -7.0]) > token_confidence([-1.0, -1.2, -1.3])
    with pytest.raises(ValueError):
        token_confidence([])


@pytest.mark.parametrize(
    ("confs", "window", "groups"),
    [
        ([1, 2, 3, 4, 5], 2, [1.5, 2.5, 3.5, 4.5]),
        ([1, 2, 3, 4, 5], 5, [3.0]),
        ([1, 2, 3, 4, 5], 10, [3.0]),  # shorter than the window: one group of everything
        ([1, 2, 3], 1, [1.0, 2.0, 3.0]),
        ([], 4, []),
    ],
)
def test_group_confidences(confs, window, groups):
    assert group_confidences(confs, window) == pytest.approx(groups)


@pytest.mark.parametrize(
    ("confs", "window", "lowest"),
    [
        ([5, 5, 1, 1, 5, 5], 2, 1.0),
        ([5, 1, 5, 1], 3, 7 / 3),  # windows 11/3 and 7/3
        ([2, 4], 8, 3.0),  # short sample: the mean of its tokens
        ([], 8, 0.0),  # no tokens: no evidence, no weight
    ],
)
def test_lowest_group_confidence(confs, window, lowest):
    assert lowest_group_confidence(confs, window) == pytest.approx(lowest)


def test_window_must_be_positive():
    with pytest.raises(ValueError):
        group_confidences([1.0], 0)
    with pytest.raises(ValueError):
        WindowedConfidence(0)


@pytest.mark.parametrize("window", [1, 3, 7, 50])
def test_windowed_confidence_tracks_the_batch_definition(window):
    confs = [(index * 37 % 11) / 3 + 0.1 for index in range(40)]
    tracker = WindowedConfidence(window)
    for end in range(1, len(confs) + 1):
        current = tracker.push(confs[end - 1])
        recent = confs[max(0, end - window):end]
        assert current == pytest.approx(sum(recent) / len(recent))
        assert tracker.lowest == pytest.approx(lowest_group_confidence(confs[:end], window))
        assert tracker.full is (end >= window)


@pytest.mark.parametrize(
    ("values", "keep", "bar"),
    [
        (list(range(1, 12)), 90, 2.0),  # 10th percentile of 1..11
        (list(range(1, 12)), 50, 6.0),
        (list(range(1, 12)), 100, 1.0),  # keep everything: the minimum
        ([2.0, 1.0], 90, 1.1),  # interpolated between the two, input order does not matter
        ([3.5], 10, 3.5),
    ],
)
def test_confidence_bar(values, keep, bar):
    assert confidence_bar(values, keep) == pytest.approx(bar)


def test_confidence_bar_matches_numpy_percentile():
    numpy = pytest.importorskip("numpy")
    values = [4.2, 1.7, 9.3, 3.3, 5.0, 2.2, 8.8, 6.1]
    for keep in (10, 37.5, 90, 99):
        assert confidence_bar(values, keep) == pytest.approx(float(numpy.percentile(values, 100 - keep)))


def test_confidence_bar_rejects_bad_input():
    with pytest.raises(ValueError):
        confidence_bar([], 90)
    for keep in (0, -5, 101):
        with pytest.raises(UsageError):
            confidence_bar([1.0], keep)


@pytest.mark.parametrize(
    ("current", "bar", "cut"), [(1.0, 2.0, True), (2.0, 2.0, False), (3.0, 2.0, False), (0.1, None, False)]
)
def test_should_cut(current, bar, cut):
    assert should_cut(current, bar) is cut


# ---------------------------------------------------------------- the Beta criterion

# P(X > 1/2) for X ~ Beta(top + 1, second + 1) = P(Binomial(top + second + 1, 1/2) <= top), by hand.
BETA_CASES = [
    (0, 0, 1 / 2),
    (1, 0, 3 / 4),  # density 2x: 1 - 1/4
    (2, 0, 7 / 8),
    (3, 0, 15 / 16),
    (4, 0, 31 / 32),
    (1, 1, 1 / 2),
    (2, 1, 11 / 16),  # (1 + 4 + 6) / 16
    (3, 1, 26 / 32),  # 1 - (5 + 1) / 32
    (5, 1, 120 / 128),
    (6, 1, 247 / 256),
    (4, 2, 99 / 128),  # 1 - (21 + 7 + 1) / 128
    (1, 2, 5 / 16),
]


@pytest.mark.parametrize(("top", "second", "probability"), BETA_CASES)
def test_beta_majority_probability_by_hand(top, second, probability):
    assert beta_majority_probability(top, second) == pytest.approx(probability, abs=1e-15)


def _beta_density_integral(low: float, high: float, a: float, b: float, steps: int = 20000) -> float:
    """Simpson's rule on the Beta(a, b) density: an independent check of the closed forms."""
    log_norm = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)

    assert a > 1 and b > 1, "the density must vanish at 0 and 1 for this rule"

    def density(x: float) -> float:
        if x <= 0 or x >= 1:
            return 0.0
        return math.exp(log_norm + (a - 1) * math.log(x) + (b - 1) * math.log1p(-x))

    width = (high - low) / steps
    total = density(low) + density(high)
    total += sum((4 if i % 2 else 2) * density(low + i * width) for i in range(1, steps))
    return total * width / 3


@pytest.mark.parametrize(
    ("top", "second", "prior"),
    [(3, 1, (1.0, 1.0)), (7, 2, (1.0, 1.0)), (2, 2, (2.0, 2.0)),
     (3, 1, (0.5, 0.5)), (6, 3, (0.5, 0.5)), (10, 4, (1.5, 1.5))],
)
def test_beta_probability_matches_numeric_integration(top, second, prior):
    a, b = top + prior[0], second + prior[1]
    assert beta_majority_probability(top, second, prior) == pytest.approx(
        _beta_density_integral(0.5, 1.0, a, b), abs=1e-5)


@pytest.mark.parametrize(
    ("x", "a", "b"),
    [(0.3, 2.0, 5.0), (0.7, 2.0, 5.0), (0.3, 2.5, 3.5), (0.8, 10.5, 2.5), (0.5, 1.5, 1.5), (0.2, 4.0, 1.5)],
)
def test_incomplete_beta_matches_numeric_integration(x, a, b):
    assert regularized_incomplete_beta(x, a, b) == pytest.approx(_beta_density_integral(0.0, x, a, b), abs=1e-6)


def test_beta_probability_properties():
    for top in range(0, 12):
        for second in range(0, 12):
            forward = beta_majority_probability(top, second)
            assert forward + beta_majority_probability(second, top) == pytest.approx(1.0)  # symmetry
            assert beta_majority_probability(top + 1, second) > forward  # one more vote helps
    # Large counts: a normal approximation gives 0.694 (z = 0.0128 / 0.0252); scipy says 0.693446.
    assert beta_majority_probability(200, 190) == pytest.approx(0.6934456942836147, abs=1e-12)


def test_beta_rejects_bad_input():
    for args in ((-1, 0), (0, -1)):
        with pytest.raises(ValueError):
            beta_majority_probability(*args)
    with pytest.raises(ValueError):
        beta_majority_probability(1, 0, prior=(0.0, 1.0))
    assert regularized_incomplete_beta(0.0, 2, 3) == 0.0
    assert regularized_incomplete_beta(1.0, 2, 3) == 1.0


# ---------------------------------------------------------------- stopping rules


@pytest.mark.parametrize(
    ("counts", "remaining", "expected"),
    [
        ({"a": 5, "b": 1}, 3, True),  # 5 > 1 + 3
        ({"a": 5, "b": 2}, 3, False),  # 5 = 2 + 3: a tie is still possible
        ({"a": 4}, 3, True),
        ({"a": 3}, 3, False),
        ({}, 0, False),
        ({"a": 2, "b": 2}, 0, False),
        ({"a": 3, "b": 2, "c": 2}, 0, True),
    ],
)
def test_cannot_lose(counts, remaining, expected):
    assert cannot_lose(counts, remaining) is expected


@pytest.mark.parametrize(
    ("answers", "window", "expected"),
    [
        (["a", "a", "a"], 3, True),
        (["b", "a", "a"], 3, False),
        (["b", "a", "a", "a"], 3, True),  # the window slides over finish order
        (["a", None, "a"], 3, False),
        ([None, None, None], 3, False),
        (["a", "a"], 3, False),
        (["b", "a"], 1, True),
    ],
)
def test_esc_window_agrees(answers, window, expected):
    assert esc_window_agrees(answers, window) is expected


def test_rules_reject_bad_arguments():
    with pytest.raises(ValueError):
        cannot_lose({"a": 1}, -1)
    with pytest.raises(ValueError):
        esc_window_agrees(["a"], 0)
    for bad in ({"threshold": 0.4}, {"threshold": 1.5}, {"window": 0}, {"min_samples": 0}):
        with pytest.raises(UsageError):
            StopRule(**bad)


DECIDE_CASES = [
    # answers so far, remaining, rule, stop, reason, leader
    ([], 8, StopRule(), False, "min_samples", None),
    (["a", "a"], 6, StopRule(), False, "min_samples", "a"),
    ([None, None, None], 5, StopRule(), False, "min_samples", None),
    (["a", "a", "a"], 5, StopRule(), False, "undecided", "a"),  # Beta(4, 1): 15/16 < 0.95
    (["a", "a", "a"], 5, StopRule(threshold=0.9), True, "beta", "a"),
    (["a", "a", "a", "a"], 4, StopRule(), True, "beta", "a"),  # 31/32
    (["a", "a", "a", "a"], 4, StopRule(min_samples=5), False, "min_samples", "a"),
    (["b", "a", "a", "a", "a"], 3, StopRule(), True, "esc_window", "a"),  # Beta: 57/64 < 0.95
    (["b", "a", "a", "a", "a"], 3, StopRule(window=None), False, "undecided", "a"),
    (["a", "a", "b", "a", "a", "b"], 2, StopRule(), False, "undecided", "a"),  # 99/128
    (["a", "b", "a", "a", "a", "a"], 2, StopRule(), True, "cannot_lose", "a"),  # 5 > 1 + 2
    (["a", "a"], 1, StopRule(), True, "cannot_lose", "a"),  # certain even below min_samples
    (["a", "b", "a", "b", "c"], 0, StopRule(), True, "all_done", "a"),
    # give_up: 4 different answers, 4 to go: at best 5 to 1, Beta(6, 2) = 15/16 < 0.95
    (["a", "b", "c", "d"], 4, StopRule(give_up=True), True, "cannot_settle", "a"),
    (["a", "b", "c", "d"], 4, StopRule(), False, "undecided", "a"),
    (["a", "b", "c"], 5, StopRule(give_up=True), False, "undecided", "a"),  # 6 to 1 still possible: 0.965
    (["a", "a", "b", "b"], 4, StopRule(give_up=True), True, "cannot_settle", "a"),  # at best 6 to 2: 0.91
    (["a", "a", "a", "b"], 4, StopRule(give_up=True), False, "undecided", "a"),
]


@pytest.mark.parametrize(("counts", "remaining", "settle"), [
    ({}, 4, True),  # Beta(5, 1) = 31/32
    ({}, 3, False),  # Beta(4, 1) = 15/16
    ({"a": 1, "b": 1, "c": 1, "d": 1}, 4, False),
    ({"a": 1, "b": 1, "c": 1, "d": 1}, 5, True),  # 6 to 1
    ({"a": 2, "b": 2}, 5, False),  # 7 to 2: Beta(8, 3) = 0.9453
    ({"a": 2, "b": 2}, 6, True),  # 8 to 2: Beta(9, 3) = 0.967
])
def test_can_still_settle(counts, remaining, settle):
    assert can_still_settle(counts, remaining, StopRule(give_up=True)) == settle


@pytest.mark.parametrize(("answers", "remaining", "rule", "stop", "reason", "leader"), DECIDE_CASES)
def test_decide_stop(answers, remaining, rule, stop, reason, leader):
    decision = decide_stop(answers, remaining, rule)
    assert (decision.stop, decision.reason, decision.leader) == (stop, reason, leader)


def test_adaptive_run_stops_where_worked_out_by_hand():
    """K = 8 answers arriving in this order: after 6 the leader has 5 of 6 with 2 to come."""
    arrivals = ["a", "a", "b", "a", "a", "a", "b", "b"]
    decisions = [decide_stop(arrivals[:done], len(arrivals) - done, StopRule()) for done in range(1, 9)]
    first_stop = next(done for done, decision in enumerate(decisions, start=1) if decision.stop)
    assert first_stop == 6
    assert decisions[first_stop - 1].reason == "cannot_lose"
    assert decisions[3].probability == pytest.approx(13 / 16)  # 3 vs 1 after four samples


def test_adaptive_live_samples_follow_the_cost_curve():
    from hearth.runtime.reasoning import ADAPTIVE_LIVE_PROFILE, NEAR_FASTEST, ReasoningConfig, adaptive_wall, parallel_for

    assert ReasoningConfig(k=8, parallel=parallel_for(8, on_gpu=False)).live_samples() == 2
    assert ReasoningConfig(k=8, parallel=parallel_for(8, on_gpu=True)).live_samples() == 8
    assert parallel_for(16, on_gpu=True) == max(ADAPTIVE_LIVE_PROFILE)
    assert parallel_for(8, on_gpu=True, adaptive=False) == 8
    from hearth.runtime.costs import CostCurve

    # with a measured curve: flat (GPU-like) runs all K; a Xeon where 6 rows cost 2.75 single rows
    # four (more would be under 10% faster, for many more tokens); a CPU where rows cost what single
    # rows do gains nothing from more live samples and runs one (the fewest tokens)
    flat = CostCurve((1, 2, 4, 8, 16), (1.0,) * 5)
    avx2 = CostCurve((1, 2, 3, 4, 8), (1.0, 1.81, 2.2, 2.76, 7.8))
    xeon = CostCurve((1, 2, 3, 4, 6, 8), (1.0, 1.33, 1.65, 1.95, 2.75, 3.28))
    linear = CostCurve((1, 2, 4, 8), (1.0, 2.0, 4.0, 8.0))
    assert parallel_for(8, on_gpu=False, curve=flat) == 8
    assert parallel_for(8, on_gpu=False, curve=xeon) == 4
    assert parallel_for(8, on_gpu=False, curve=linear) == 1
    assert parallel_for(3, on_gpu=False, curve=flat) == 3  # never more than K
    assert parallel_for(1, on_gpu=False, curve=flat) == 1
    # the choice: the fewest live samples whose expected wall is within 10% of the fastest
    for curve in (flat, avx2, xeon, linear):
        chosen = parallel_for(8, on_gpu=False, curve=curve)
        walls = [adaptive_wall(live, curve) for live in ADAPTIVE_LIVE_PROFILE]
        assert adaptive_wall(chosen, curve) <= min(walls) * NEAR_FASTEST
        assert all(wall > min(walls) * NEAR_FASTEST for wall in walls[:chosen - 1])
    assert parallel_for(8, on_gpu=False, curve=avx2, adaptive=False) == 4  # every sample needed: the fastest width
    assert parallel_for(2, on_gpu=False, curve=flat, adaptive=False) == 2
    assert ReasoningConfig(k=8, adaptive=False).live_samples() == 8
    assert ReasoningConfig(k=1).live_samples() == 1


def test_sequences_needed_counts_the_prompt_holder():
    from hearth.runtime.reasoning import ReasoningConfig

    assert ReasoningConfig(k=8).sequences_needed() == 3  # 2 live + the held prompt for later samples
    assert ReasoningConfig(k=8, adaptive=False).sequences_needed() == 8  # all live: nothing held
    assert ReasoningConfig(k=2).sequences_needed() == 2


@pytest.mark.parametrize("adaptive", [True, False])
def test_every_mode_stops_a_sample_once_its_answer_line_is_complete(adaptive):
    """With or without adaptive stopping, what follows a complete answer line cannot change the
    sample's answer: its sequence ends there (the recorded samples study_stopping replays do too)."""
    from hearth.runtime.reasoning import ReasoningConfig, ReasoningHooks
    from hearth.runtime.requests import GenRequest, Sample
    from hearth.runtime.sampling import SamplingParams

    hooks = ReasoningHooks(None, ReasoningConfig(k=4, answer="number", adaptive=adaptive), None)
    sample = Sample(GenRequest([1], SamplingParams(), 64), index=0, seq_id=0, n_past=1)
    for piece in (b"3 + 4 = 7 apples.\n", b"#### 7"):
        sample.stream.feed(piece)
        sample.token_confidences.append(1.0)
        hooks.on_text(sample, "")
        assert sample.finish_reason is None  # "#### 7" could still grow into "#### 70"
    sample.stream.feed(b"\n")
    hooks.on_text(sample, "\n")
    assert sample.finish_reason == "answer"


def test_adaptive_default_rule_settles_from_the_third_answer():
    """Adaptive mode's rule (chosen on the dev split, runtime/reasoning.py): from the third answer
    on, three in a row agreeing or the Beta rule at 0.8: 3-0, 3-1, 4-1 and 5-2 settle the vote;
    2-0 (too early), 2-1, 3-2 and 4-2 do not."""
    from hearth.runtime.reasoning import ADAPTIVE_STOP_RULE as rule

    assert not decide_stop(["a", "a"], 6, rule).stop
    assert decide_stop(["a", "a", "a"], 5, rule).stop
    assert not decide_stop(["a", "b", "b"], 5, rule).stop  # 2-1: 11/16
    assert not decide_stop(["a", None, "a"], 5, rule).stop  # no answer is no vote: 2-0 of 2
    first = decide_stop(["b", "a", "b", "b"], 4, rule)
    assert (first.stop, first.reason, first.leader) == (True, "beta", "b")  # 3-1: 13/16
    assert not decide_stop(["a", "b", "a", "b", "a"], 3, rule).stop  # 3-2: 0.6875
    assert not decide_stop(["a", "b", "a", "b", "a", "a"], 2, rule).stop  # 4-2: 0.773
    assert decide_stop(["a", "b", "a", "b", "a", "a", "a"], 1, rule).stop  # 5-2
    assert not rule.give_up
