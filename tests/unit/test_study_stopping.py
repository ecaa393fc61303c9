"""The offline study's replays (scripts/study_stopping.py): the README's reasoning figures and the
bound on stopping rules come from them, so they must replay what the engine's rule does."""

import random
import sys
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))

import study_stopping as study  # noqa: E402
from hearth.runtime.reasoning import ADAPTIVE_STOP_RULE  # noqa: E402
from hearth.runtime.stopping import decide_stop  # noqa: E402


def _problem(rng: random.Random, k: int = 8) -> dict:
    """A synthetic problem: k samples with answers from a skewed pool, lengths and confidences."""
    pool = ["1", "2", "3", None]
    samples = []
    for _ in range(k):
        tokens = rng.randint(5, 60)
        samples.append({"answer": rng.choices(pool, weights=[6, 2, 1, 1])[0], "tokens": tokens,
                        "confidences": [rng.uniform(1, 10) for _ in range(tokens)]})
    return {"gold": "1", "samples": samples}


def test_simulate_matches_the_token_by_token_replay_of_the_engines_rule():
    rng = random.Random(7)
    problems = [_problem(rng) for _ in range(60)]
    for live in (1, 2, 3, 4, 8):
        policy = replace(study.POLICIES["hearth"], parallel=live, cut=False)
        for p in problems:
            expected = study.replay(p["samples"], 8, policy)
            got = study.simulate(p["samples"], 8, live,
                                 lambda done: decide_stop([s["answer"] for s in done], 8 - len(done),
                                                          ADAPTIVE_STOP_RULE).stop)
            assert got == expected


def test_simulate_with_no_rule_stops_only_when_certain():
    p = {"gold": "1", "samples": [{"answer": "1", "tokens": 10, "confidences": [5.0] * 10} for _ in range(8)]}
    answer, tokens = study.simulate(p["samples"], 8, 1, lambda done: False)
    # one at a time: after five agreeing answers the leader cannot lose (5 > 0 + 3)
    assert (answer, tokens) == ("1", 50)
    answer, tokens = study.simulate(p["samples"], 8, 4, lambda done: False)
    # four at once, lazily: all four end together at step 10, then the leader (4-0, 4 left) may
    # still lose; one more sample settles it
    assert (answer, tokens) == ("1", 50)


def test_vote_state_reads_counts_blanks_and_the_leaders_confidence():
    def s(answer, conf):
        return {"answer": answer, "tokens": 3, "confidences": [conf] * 3}

    finished = [s("7", 6.0), s(None, 1.0), s("3", 2.0), s("7", 5.0)]
    assert study.vote_state(finished) == ((2, 1), 1)
    assert study.vote_state(finished, bar=5.0) == ((2, 1), 1, True)
    assert study.vote_state(finished, bar=5.5) == ((2, 1), 1, False)


def test_fit_keeps_the_draws_at_sc_accuracy_and_spends_less():
    """A fitted rule never loses problems on the draws it was fitted on, and settles easy ones sooner."""
    rng = random.Random(3)
    draws = [[_problem(rng) for _ in range(15)] for _ in range(2)]
    states, net, share = study.fit_states(draws, 8, 2)
    assert net >= 0 and share < 1.0
    assert states  # easy problems (most samples say "1") settle before K
    for problems in draws:
        right, spent = study.replay_states(problems, 8, 2, states)
        assert spent < study.sc_tokens(problems, 8)
    total_sc = sum(sum(study.same_number(study.sc(p["samples"]), p["gold"]) for p in d) for d in draws)
    assert sum(study.replay_states(d, 8, 2, states)[0] for d in draws) >= total_sc
