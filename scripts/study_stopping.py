#!/usr/bin/env python3
"""Replay reasoning-mode policies offline on recorded samples, with 95% intervals, paired.

`record_reasoning.py` records, per GSM8K problem, K samples (answer, tokens, finish reason, per-token
DeepConf confidences) and a greedy answer. This script replays on those samples what reasoning
mode would do — plain self-consistency (the first k samples, majority), the weighted vote with
other confidence windows and weight functions, and adaptive mode's scheduling: `parallel` live
samples advancing one token per step, samples launched lazily, DeepConf's online cut, the vote
checked with hearth's own `decide_stop` after each finished sample. It calls hearth's real rule
functions, so a policy that wins here is the code path the engine runs.

Splits: problems 0-6999 of GSM8K train are the dev split (choices are made there); 7000-7472 are
held out: no choice may look at them. `--split heldout` therefore prints only the table of the
chosen defaults (greedy, SC, adaptive), never a grid or a policy comparison.

Every accuracy is printed with its 95% Wilson interval; every comparison with SC is paired on the
same problems: wins/losses, the difference with its 95% interval, McNemar's exact p.

usage: python scripts/study_stopping.py REC.jsonl [REC2.jsonl ...] [--k 8] [--split dev|heldout]
       [--grid] [--votes] [--prompts] [--sampling] [--fit] [--forks] [--greedy GREEDY.jsonl]
  --grid     every combination of live samples, ESC window, Beta threshold, give-up and DeepConf cut
  --votes    vote variants: majority, weights from other windows and functions, DeepConf filtering
  --prompts  two or more recordings of the same problems (other prompts), greedy answers: paired table
  --sampling two or more recordings at other sampling settings: SC, adaptive, pass@k, distinct answers
  --fit      how far a stopping rule that reads only the vote counts can go: fitted on all draws of K
             samples but one (every recording given, cut into draws), replayed on the one left out
             (--fit-confidence: the rule also reads whether the leader's samples are confident)
  --forks    independent samples (first recording) against a `record_reasoning.py --fork N` recording
             (second) at the same sampling: later samples continuing an earlier one's prefix
"""

from __future__ import annotations

import argparse
import gzip
import itertools
import json
import math
import statistics
import sys
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

from hearth.runtime.reasoning import ADAPTIVE_STOP_RULE, ReasoningConfig
from hearth.runtime.stopping import (DEFAULT_CONFIDENCE_WINDOW, StopRule, WindowedConfidence, cannot_lose, confidence_bar,
                                     decide_stop,
                                     lowest_group_confidence)
from hearth.runtime.voting import SampleResult, vote

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_reasoning import GSM8K, same_number  # noqa: E402

HELD_OUT_FROM = 7000  # GSM8K train indices from here on: the held-out split


@dataclass(frozen=True)
class Policy:
    parallel: int = 2
    warmup: int = 2
    keep_top_percent: float = 90.0
    window: int = DEFAULT_CONFIDENCE_WINDOW
    rule: StopRule = ADAPTIVE_STOP_RULE
    lazy: bool = True
    cut: bool = True
    method: str = "weighted"
    first_round: int = 0  # prefix-sharing recordings: samples from this index on wait until the ones before have ended


_D = ReasoningConfig()
HEARTH = Policy(parallel=2, warmup=_D.warmup, keep_top_percent=_D.keep_top_percent, window=_D.window,
                rule=_D.stop_rule, method=_D.vote, cut=_D.confidence_cut)  # adaptive mode's defaults (2 live samples on a CPU)
_OLD = StopRule(window=3, give_up=False)  # the defaults from 2026-12-05 (morning) to this study's second round
_TWO = StopRule(window=None, min_samples=2, threshold=0.8)
POLICIES = {
    "hearth": HEARTH,
    "majority": replace(HEARTH, method="majority"),
    "p4": replace(HEARTH, parallel=4),
    "p3": replace(HEARTH, parallel=3),
    "cut": replace(HEARTH, cut=True),
    "keep50": replace(HEARTH, cut=True, keep_top_percent=50.0),
    "giveup": replace(HEARTH, rule=replace(ADAPTIVE_STOP_RULE, give_up=True)),
    # rules compared (2 live samples, weighted vote, no cut unless named)
    "esc3": replace(HEARTH, rule=_OLD),  # ESC window 3 or Beta 0.95, from 3 answers
    "esc3-cut-giveup": replace(HEARTH, cut=True, rule=replace(_OLD, give_up=True)),  # before 2026-12-05
    "esc4": replace(HEARTH, rule=replace(_OLD, window=4)),
    "beta95": replace(HEARTH, rule=replace(_OLD, window=None)),
    "beta99": replace(HEARTH, rule=replace(_OLD, threshold=0.99)),
    "esc2": replace(HEARTH, rule=replace(_OLD, window=2)),  # the last 2 agree, from 3 answers
    "esc2-from2": replace(HEARTH, rule=StopRule(window=2, min_samples=2)),  # 2 in a row agree, from 2 answers
    "beta80": replace(HEARTH, rule=replace(_OLD, threshold=0.8)),  # ESC 3 or Beta 0.8, from 3 answers
    "beta80-from2": replace(HEARTH, rule=_TWO),  # Beta 0.8 from 2 answers: 2-0, 3-1, 4-1, 5-2 settle
    "beta85-from2": replace(HEARTH, rule=replace(_TWO, threshold=0.85)),
    "beta80-from2-esc3": replace(HEARTH, rule=replace(_TWO, window=3)),
    "beta80-from2-giveup": replace(HEARTH, rule=replace(_TWO, give_up=True)),
}


# ---------------------------------------------------------------- statistics


def wilson(correct: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a proportion, in percent."""
    if n == 0:
        return (0.0, 0.0)
    p = correct / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (100 * (centre - half), 100 * (centre + half))


def mcnemar_p(wins: int, losses: int) -> float:
    """Two-sided exact McNemar p-value of `wins` against `losses` discordant pairs."""
    n = wins + losses
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(0, min(wins, losses) + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def paired(ours: list[bool], theirs: list[bool]) -> str:
    """Wins/losses against a reference on the same problems, the difference with its 95% interval."""
    n = len(ours)
    wins = sum(a and not b for a, b in zip(ours, theirs))
    losses = sum(b and not a for a, b in zip(ours, theirs))
    diff = (wins - losses) / n
    se = math.sqrt(max(0.0, wins + losses - (wins - losses) ** 2 / n)) / n
    return (f"+{wins}/-{losses}  {100 * diff:+5.1f} [{100 * (diff - 1.96 * se):+5.1f}, {100 * (diff + 1.96 * se):+5.1f}]"
            f"  p={mcnemar_p(wins, losses):.2f}")


def accuracy(right: list[bool]) -> str:
    low, high = wilson(sum(right), len(right))
    return f"{100 * sum(right) / len(right):5.1f}% [{low:4.1f}, {high:4.1f}]"


# ---------------------------------------------------------------- recordings


def load(path: str, split: str) -> tuple[dict, list[dict]]:
    """(settings, problems of the split with their gold answers), in problem order."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as handle:
        lines = [json.loads(line) for line in handle if line.strip()]
    settings, problems = lines[0]["settings"], lines[1:]
    problems = [p for p in problems if (p["problem"] >= HELD_OUT_FROM) == (split == "heldout")]
    wanted = {p["problem"] for p in problems}
    gold = {}
    with open(GSM8K, encoding="utf-8") as handle:
        for index, line in enumerate(handle):
            if index in wanted:
                gold[index] = json.loads(line)["answer"].split("####")[-1].strip().replace(",", "")
    for p in problems:
        p["gold"] = gold[p["problem"]]
    return settings, sorted(problems, key=lambda p: p["problem"])


def weight(sample: dict, window: int = DEFAULT_CONFIDENCE_WINDOW, how: str = "lowest") -> float:
    confs = sample["confidences"][:sample["tokens"]]
    if how == "mean":
        return sum(confs) / len(confs) if confs else 0.0
    if how == "tail":
        tail = confs[-window:]
        return sum(tail) / len(tail) if tail else 0.0
    return max(0.0, lowest_group_confidence(confs, window))


def sc(samples: list[dict], method: str = "majority", window: int = DEFAULT_CONFIDENCE_WINDOW, how: str = "lowest",
       keep_top_percent: float = 100.0) -> str | None:
    """Plain self-consistency over all the given samples (DeepConf-offline filtering with keep < 100)."""
    results = [SampleResult("", s["answer"], weight(s, window, how)) for s in samples]
    if keep_top_percent < 100:
        bar = confidence_bar([r.weight for r in results], keep_top_percent)
        results = [r if r.weight >= bar else replace(r, cut=True) for r in results]
    return vote(results, method).answer


def replay(samples: list[dict], k: int, policy: Policy, cuts: list | None = None,
           steps: dict | None = None) -> tuple[str | None, int]:
    """(voted answer, tokens generated) for one problem under an adaptive policy; `cuts` gets the
    recorded answer of every sample DeepConf's online bar cut; `steps` counts the decode steps
    made with each number of live samples (live count -> steps), for the wall estimate."""
    live: dict[int, dict] = {}  # index -> {"pos", "window"}
    launched, answers, results, finished_conf = 0, [], [], []
    bar = None
    tokens = 0

    def may_launch() -> bool:
        if not policy.lazy:
            return True
        leader = decide_stop(answers, len(live), policy.rule).leader
        if leader is None:
            return True
        optimistic = decide_stop(answers + [leader] * len(live), k - len(answers) - len(live), policy.rule)
        return not optimistic.stop

    def launch() -> None:
        nonlocal launched
        while launched < k and len(live) < policy.parallel and (not live or may_launch()):
            if policy.first_round and launched >= policy.first_round and any(i < policy.first_round for i in live):
                return  # a fork needs its source: every first-round sample ended
            live[launched] = {"pos": 0, "window": WindowedConfidence(policy.window)}
            launched += 1

    launch()
    while live:
        done = []
        if steps is not None:
            steps[len(live)] = steps.get(len(live), 0) + 1
        for index, state in live.items():
            sample = samples[index]
            confs = sample["confidences"]
            state["pos"] += 1
            tokens += 1
            pos = state["pos"]
            if pos <= len(confs):
                state["window"].push(confs[pos - 1])
            if pos >= sample["tokens"]:
                done.append((index, "end"))
            elif policy.cut and state["window"].full and bar is not None and state["window"].current < bar:
                done.append((index, "cut"))
                if cuts is not None:
                    cuts.append(sample["answer"])
        settled = False
        for index, why in done:
            del live[index]
            sample = samples[index]
            answer = sample["answer"] if why == "end" else None
            answers.append(answer)
            conf = sample["confidences"][:sample["tokens"]]
            results.append(SampleResult("", answer, max(0.0, lowest_group_confidence(conf, policy.window)),
                                        cut=why == "cut"))
            if why == "end":
                finished_conf.append(lowest_group_confidence(conf, policy.window))
            if bar is None and len(finished_conf) >= policy.warmup:
                bar = confidence_bar(finished_conf, policy.keep_top_percent)
            decision = decide_stop(answers, k - len(answers), policy.rule)
            if decision.stop and decision.reason != "all_done":
                settled = True
                break
        if settled:
            break
        launch()
    return vote(results, policy.method).answer, tokens


def sc_tokens(problems: list[dict], k: int) -> int:
    return sum(s["tokens"] for p in problems for s in p["samples"][:k])


def score(problems: list[dict], k: int, policy: Policy, cut_stats: list | None = None,
          steps: dict | None = None) -> tuple[list[bool], int]:
    """Right or wrong per problem, and the tokens spent; `cut_stats` gets (cut samples, of which
    their recorded answer was right); `steps` the decode steps per live count, over all problems."""
    right, spent, cut, cut_right = [], 0, 0, 0
    for p in problems:
        cuts = []
        answer, tokens = replay(p["samples"][:k], k, policy, cuts, steps)
        cut += len(cuts)
        cut_right += sum(same_number(a, p["gold"]) for a in cuts)
        right.append(same_number(answer, p["gold"]))
        spent += tokens
    if cut_stats is not None:
        cut_stats.extend([cut, cut_right])
    return right, spent


# ---------------------------------------------------------------- wall time (a cost curve)


def load_curve(path: str):
    """A cost curve from hearth's cache (HEARTH_CACHE/cost-curves/<key>.json)."""
    from hearth.runtime.costs import read_curve

    curve = read_curve(Path(path))
    if curve is None:
        sys.exit(f"error: {path} is not a hearth cost-curve file")
    return curve


def steps_wall(steps: dict, curve) -> float:
    """Decode time in single-row steps: each step with n live samples costs relative(n)."""
    return sum(count * curve.relative(live) for live, count in steps.items())


def sc_steps(problems: list[dict], k: int) -> dict:
    """Plain self-consistency's steps: all k samples launched at once, each running to its end."""
    steps: dict = {}
    for p in problems:
        lengths = sorted(s["tokens"] for s in p["samples"][:k])
        done = 0
        for i, length in enumerate(lengths):
            if length > done:
                steps[k - i] = steps.get(k - i, 0) + length - done
                done = length
    return steps


def walls(problems: list[dict], k: int, curve, policy_name: str = "hearth") -> None:
    """Adaptive mode at every number of live samples: tokens and estimated decode wall, as shares
    of plain SC with all k samples live, on the machine the curve was measured on."""
    full = sc_tokens(problems, k)
    sc_wall = steps_wall(sc_steps(problems, k), curve)
    base = [same_number(sc(p["samples"][:k]), p["gold"]) for p in problems]
    print(f"  adaptive '{policy_name}' by live samples (wall: decode steps priced by the cost curve,"
          f" a share of SC K={k} with all {k} live):")
    profile = {}
    for live in range(1, k + 1):
        steps: dict = {}
        right, spent = score(problems, k, replace(POLICIES[policy_name], parallel=live), steps=steps)
        mean_live = spent / sum(steps.values())
        profile[live] = tuple(round(steps.get(n, 0) / full, 4) for n in range(1, live + 1))
        print(f"    live {live}: tokens {spent / full:.2f}  wall {steps_wall(steps, curve) / sc_wall:.2f}"
              f"  mean live {mean_live:.2f}  {accuracy(right)}  {paired(right, base)}")
    print("  as reasoning.ADAPTIVE_LIVE_PROFILE (live -> decode steps with 1, 2, ... samples live, per token of SC):")
    print("    " + repr(profile))


# ---------------------------------------------------------------- how far a vote-reading rule can go


def vote_state(finished: list[dict], bar: float | None = None) -> tuple:
    """What a stopping rule that reads the vote can see once some samples have finished (in finish
    order): the answers' counts, largest first, and how many samples gave no answer (order and
    names dropped); with a confidence `bar`, also whether every sample behind the leader has a
    weight (DeepConf's lowest window) at or above it."""
    counts = _counts(finished)
    state = (tuple(sorted(counts.values(), reverse=True)), sum(s["answer"] is None for s in finished))
    if bar is None:
        return state
    leader = _leader(counts)
    return state + (leader is not None and all(_weight(s) >= bar for s in finished if s["answer"] == leader),)


def _counts(finished: list[dict]) -> Counter:
    return Counter(s["answer"] for s in finished if s["answer"] is not None)


def _leader(counts: Counter) -> str | None:
    """The most given answer, the first seen among equal counts (as `decide_stop` names it)."""
    return counts.most_common(1)[0][0] if counts else None


def _weight(sample: dict) -> float:
    """`weight` with the default window, kept on the sample (the fits ask for it many times)."""
    if "_weight" not in sample:
        sample["_weight"] = weight(sample)
    return sample["_weight"]


def simulate(samples: list[dict], k: int, live: int, settles) -> tuple[str | None, int]:
    """(voted answer, tokens) for one problem when `settles(finished)` (the finished samples in
    finish order -> bool) stops the vote: `replay`'s schedule without the DeepConf cut (`live`
    samples at once, launched lazily, each advancing one token a step, the unfinished ones cut when
    the vote settles), computed from finish times instead of token by token. A leader that cannot
    lose, or all k answered, always settles; the answer is hearth's weighted vote of the finished."""
    def stops(finished: list[dict]) -> bool:
        left = k - len(finished)
        return left <= 0 or cannot_lose(_counts(finished), left) or settles(finished)

    running: dict[int, int] = {}  # sample -> the step it started at
    finished: list[dict] = []
    now = launched = spent = 0
    while True:
        while launched < k and len(running) < live:
            if running:  # lazy: only while the running samples agreeing with the leader would not settle it
                leader = _leader(_counts(finished))
                hopeful = {"answer": leader, "tokens": 1, "confidences": [math.inf]}
                if leader is not None and stops(finished + [hopeful] * len(running)):
                    break
            running[launched] = now
            launched += 1
        index = min(running, key=lambda i: (running[i] + samples[i]["tokens"], i))
        now = running.pop(index) + samples[index]["tokens"]
        spent += samples[index]["tokens"]
        finished.append(samples[index])
        if stops(finished):
            spent += sum(now - start for start in running.values())
            results = [SampleResult("", s["answer"], max(0.0, _weight(s))) for s in finished]
            return vote(results, "weighted").answer, spent


def fit_states(draws: list[list[dict]], k: int, live: int, bar: float | None = None) -> tuple[set, int, float]:
    """The set of vote states to stop at (`vote_state`, with `bar` if given), chosen greedily on
    `draws` (each a list of problems whose samples are one independent draw): at each round the
    state that lowers the mean token share of SC K=k the most while the draws together stay at
    least as right as their plain SC K=k. Returns (states, net problems against SC, mean share)."""
    candidates = set()
    for problems in draws:
        for p in problems:
            for m in range(1, k):
                candidates.add(vote_state(p["samples"][:m], bar))
    references = [(sum(same_number(sc(p["samples"][:k]), p["gold"]) for p in problems), sc_tokens(problems, k))
                  for problems in draws]

    def measure(states: set) -> tuple[int, float]:
        net, share = 0, 0.0
        for problems, (sc_right, sc_spent) in zip(draws, references):
            right, spent = replay_states(problems, k, live, states, bar)
            net += right - sc_right
            share += spent / sc_spent / len(draws)
        return net, share

    chosen: set = set()
    net, share = measure(chosen)
    while True:
        best = None
        for state in candidates - chosen:
            trial = measure(chosen | {state})
            if trial[0] >= min(net, 0) and trial[1] < share and (best is None or trial[1] < best[1][1]):
                best = (state, trial)
        if best is None:
            return chosen, net, share
        chosen.add(best[0])
        net, share = best[1]


def replay_states(problems: list[dict], k: int, live: int, states: set, bar: float | None = None) -> tuple[int, int]:
    """(problems right, tokens) when the vote stops at the given states."""
    right = spent = 0
    for p in problems:
        answer, tokens = simulate(p["samples"][:k], k, live, lambda finished: vote_state(finished, bar) in states)
        right += same_number(answer, p["gold"])
        spent += tokens
    return right, spent


def fit_report(recordings: list[tuple[str, dict, list[dict]]], k: int, lives: list[int], confidence: bool = False) -> None:
    """How far can a stopping rule that reads only the vote go? Every recording of the dev split is
    cut into draws of k samples per problem; for each draw left out, the rule (a set of vote states
    to stop at) is fitted on the others with no net problem lost against their plain SC, then
    replayed on the left-out draw; last, the rule fitted on every draw (hindsight: a lower bound on
    the tokens such a rule can spend). The recordings may differ in sampling: the rule only reads counts
    (`confidence`: and whether the leader's samples all reach the median weight of the fitting draws)."""
    draws, names = [], []
    for path, settings, problems in recordings:
        for start in range(0, min(len(p["samples"]) for p in problems) - k + 1, k):
            draws.append([dict(p, samples=p["samples"][start:start + k]) for p in problems])
            names.append(f"{Path(path).name} samples {start}-{start + k - 1}")
    print(f"  {len(draws)} draws of K={k} on {len(draws[0])} problems; rules read the vote counts"
          + (" and whether the leader's samples are all at or above the median weight" if confidence else " only"))

    def median_weight(chosen: list[list[dict]]) -> float | None:
        return statistics.median(_weight(s) for d in chosen for p in d for s in p["samples"]) if confidence else None

    sc_right = [sum(same_number(sc(p["samples"]), p["gold"]) for p in problems) for problems in draws]
    for live in lives:
        print(f"  live {live}:")
        defaults = []
        for problems, reference in zip(draws, sc_right):
            right, spent = score(problems, k, replace(POLICIES["hearth"], parallel=live))
            defaults.append(f"{sum(right) - reference:+d} at {spent / sc_tokens(problems, k):.2f}")
        print(f"    the defaults' rule, draw by draw (problems against SC, share of its tokens): {'; '.join(defaults)}")
        for left in range(len(draws)):
            others = draws[:left] + draws[left + 1:]
            bar = median_weight(others)
            states, net, share = fit_states(others, k, live, bar)
            problems = draws[left]
            right, spent = replay_states(problems, k, live, states, bar)
            print(f"    fitted without {names[left]}: {len(states)} states, {share:.2f} of SC's tokens on the others"
                  f" ({net:+d}); on it {right - sc_right[left]:+d} problems against SC, {spent / sc_tokens(problems, k):.2f}")
        bar = median_weight(draws)
        states, net, share = fit_states(draws, k, live, bar)
        print(f"    fitted on all {len(draws)} (hindsight): {share:.2f} of SC's tokens ({net:+d} problems):"
              f" stops at {', '.join(_state_text(s) for s in sorted(states))}")


def _state_text(state: tuple) -> str:
    text = "-".join(map(str, state[0])) + (f" +{state[1]} blank" if state[1] else "")
    return text + ("" if len(state) < 3 else " confident" if state[2] else " unsure")


# ---------------------------------------------------------------- reports


def modes_table(problems: list[dict], k: int, policies: list[str], adaptive_k: int | None = None,
                curve=None, live: int | None = None) -> None:
    """Greedy, SC with the first k samples (majority, weighted), and adaptive policies drawing up
    to `adaptive_k` samples (default k), all paired with SC K=k and as a share of its tokens."""
    adaptive_k = adaptive_k or k
    n = len(problems)
    greedy = ([same_number(p["greedy"]["answer"], p["gold"]) for p in problems]
              if all("greedy" in p for p in problems) else None)
    base = [same_number(sc(p["samples"][:k]), p["gold"]) for p in problems]
    full = sc_tokens(problems, k)
    all_live = sc_steps(problems, k)
    sc_wall = steps_wall(all_live, curve) if curve else None

    def wall(steps: dict) -> str:
        return f"{steps_wall(steps, curve) / sc_wall:6.2f}" if curve else ""

    print(f"  {'mode':28}{'accuracy [95%]':>22}{'tokens':>9}{'share':>7}{' wall' if curve else ''}"
          f"   paired with SC K={k}")
    if greedy:
        tokens = sum(p["greedy"]["tokens"] for p in problems)
        print(f"  {'greedy':28}{accuracy(greedy):>22}{tokens:>9}{tokens / full:7.2f}{wall({1: tokens})}"
              f"   {paired(greedy, base)}")
    print(f"  {f'SC K={k} majority':28}{accuracy(base):>22}{full:>9}{1:7.2f}{wall(all_live)}")
    weighted = [same_number(sc(p["samples"][:k], "weighted"), p["gold"]) for p in problems]
    print(f"  {f'SC K={k} weighted':28}{accuracy(weighted):>22}{full:>9}{1:7.2f}{wall(all_live)}"
          f"   {paired(weighted, base)}")
    for name in policies:
        cuts, steps = [], {}
        policy = POLICIES[name] if live is None else replace(POLICIES[name], parallel=live)
        right, spent = score(problems, adaptive_k, policy, cuts, steps)
        label = f"adaptive{'' if adaptive_k == k else f' K={adaptive_k}'} {name}"
        print(f"  {label:28}{accuracy(right):>22}{spent:>9}{spent / full:7.2f}{wall(steps)}   {paired(right, base)}"
              f"   cut {cuts[0]} samples, {cuts[1]} of them right")
    print(f"  ({n} problems)")


def curve(problems: list[dict]) -> None:
    k = len(problems[0]["samples"])
    full = sc_tokens(problems, k)
    print("  first m samples, majority (the accuracy curve of plain SC):")
    for m in (1, 2, 3, 4, 6, 8, 12, 16):
        if m <= k:
            right = [same_number(sc(p["samples"][:m]), p["gold"]) for p in problems]
            print(f"    m={m:>2}  {accuracy(right)}  {sc_tokens(problems, m) / full:.2f} of K={k}'s tokens")


def votes(problems: list[dict], k: int) -> None:
    base = [same_number(sc(p["samples"][:k]), p["gold"]) for p in problems]
    print(f"  vote variants over all {k} samples, paired with majority:")
    for how, window, keep in itertools.product(["lowest", "mean", "tail"], [16, 32, 64, 128], [100.0, 90.0, 50.0]):
        if how == "mean" and window != 32:
            continue
        right = [same_number(sc(p["samples"][:k], "weighted" if keep == 100 else "majority", window, how, keep),
                             p["gold"]) for p in problems]
        label = f"{how} w{window} " + ("weighted" if keep == 100 else f"keep {keep:.0f}% majority")
        print(f"    {label:34}{accuracy(right):>22}   {paired(right, base)}")


def grid(problems: list[dict], k: int, adaptive_k: int | None = None) -> None:
    base = [same_number(sc(p["samples"][:k]), p["gold"]) for p in problems]
    full = sc_tokens(problems, k)
    adaptive_k = adaptive_k or k
    rows = []
    for par, esc, threshold, give, cut in itertools.product([2, 3, 4], [3, 4, None], [0.9, 0.95, 0.99], [False, True],
                                                            [None, 90.0, 50.0]):
        policy = replace(HEARTH, parallel=par, keep_top_percent=cut or 90.0, cut=cut is not None,
                         rule=replace(ADAPTIVE_STOP_RULE, window=esc, threshold=threshold, give_up=give))
        right, spent = score(problems, adaptive_k, policy)
        rows.append((spent / full, sum(right), right, f"live {par}, ESC {esc}, Beta {threshold}, give-up {give}, "
                                                      f"cut {'off' if cut is None else f'keep {cut:.0f}%'}"))
    best = -1
    print(f"  policies drawing up to {adaptive_k} samples that set a new best accuracy as the token share of"
          f" SC K={k} grows:")
    for share, got, right, name in sorted(rows, key=lambda r: (r[0], -r[1])):
        if got > best:
            print(f"    {share:5.2f}  {accuracy(right)}  {paired(right, base)}  {name}")
            best = got


def prompts(recordings: list[tuple[str, dict, list[dict]]], k: int) -> None:
    common = set.intersection(*({p["problem"] for p in probs} for _, _, probs in recordings))
    print(f"  {len(common)} problems in every recording; paired with the first recording")
    ref = None
    for path, settings, probs in recordings:
        probs = [p for p in probs if p["problem"] in common]
        kk = min(k, len(probs[0].get("samples", [])))
        greedy = [same_number(p["greedy"]["answer"], p["gold"]) for p in probs]
        voted = [same_number(sc(p["samples"][:kk]), p["gold"]) for p in probs] if kk else None
        tokens = sum(p["greedy"]["tokens"] for p in probs) / len(probs)
        label = (f"{settings['style']} T{settings['temperature']} p{settings['top_p']} min-p {settings['min_p']}"
                 f" top-k {settings['top_k']}")
        line = f"    {label:44} greedy {accuracy(greedy)} ({tokens:.0f} tok/answer)"
        if ref is not None:
            line += f" {paired(greedy, ref[0])}"
        if kk:
            first = [same_number(p["samples"][0]["answer"], p["gold"]) for p in probs]
            line += f" · one sample {accuracy(first)} · SC K={kk} {accuracy(voted)}"
            if ref is not None and ref[1] is not None:
                line += f" {paired(voted, ref[1])}"
        print(line)
        ref = ref or (greedy, voted)


def sampling(recordings: list[tuple[str, dict, list[dict]]], k: int, live: int | None = None) -> None:
    """Sampling settings compared (one recording per setting, same prompt): on the problems every
    recording holds, per setting the accuracy of one sample, of SC K=k and of the adaptive
    defaults (tokens as a share of SC's), how often some sample is right (pass@k), and how many
    distinct answers k samples give (diversity: does min-p collapse it?). Paired with the first.
    `live`: adaptive mode's live samples (default: the policy's 2)."""
    policy = replace(POLICIES["hearth"], parallel=live) if live else POLICIES["hearth"]
    common = set.intersection(*({p["problem"] for p in probs} for _, _, probs in recordings))
    print(f"  {len(common)} problems in every recording, K={k}; paired with the first recording")
    ref = None
    for _path, settings, probs in recordings:
        probs = sorted((p for p in probs if p["problem"] in common), key=lambda p: p["problem"])
        kk = min(k, min(len(p["samples"]) for p in probs))
        first = [same_number(p["samples"][0]["answer"], p["gold"]) for p in probs]
        adaptive, spent = score(probs, kk, policy)
        covered = [any(same_number(s["answer"], p["gold"]) for s in p["samples"][:kk]) for p in probs]
        distinct = statistics.mean(len({s["answer"] for s in p["samples"][:kk]}) for p in probs)
        majorities = [sc(p["samples"][:kk]) for p in probs]
        voted = [same_number(leader, p["gold"]) for p, leader in zip(probs, majorities)]
        agree = statistics.mean(sum(1 for s in p["samples"][:kk] if s["answer"] == leader) / kk
                                for p, leader in zip(probs, majorities))
        print(f"    T {settings['temperature']} top-p {settings['top_p']} min-p {settings['min_p']} top-k {settings['top_k']}:"
              f" one sample {accuracy(first)} · SC K={kk} {accuracy(voted)}"
              + (f" {paired(voted, ref[0])}" if ref else "")
              + f" · adaptive {accuracy(adaptive)} at {spent / sc_tokens(probs, kk):.2f} of SC's tokens"
              + (f" {paired(adaptive, ref[1])}" if ref else "")
              + f" · pass@{kk} {accuracy(covered)} · {distinct:.2f} distinct answers, {agree:.0%} with the majority"
              + f" · {sc_tokens(probs, kk) / len(probs) / kk:.0f} tok/sample")
        ref = ref or (voted, adaptive)


def forks(recordings: list[tuple[str, dict, list[dict]]], k: int, curve=None) -> None:
    """The prefix-sharing arm (a `record_reasoning.py --fork N` recording, second) against
    independent samples at the same sampling (first), on the problems both hold: plain SC and the
    adaptive defaults on each, the arm's adaptive mode at 1, 2 and 4 live (its forks wait for the
    first N samples), all paired with plain SC of the independent samples, tokens as its share."""
    (_, _, plain), (_, settings, forked) = recordings[0], recordings[1]
    first = settings.get("fork", {}).get("independent")
    if not first:
        sys.exit("error: --forks compares a recording of independent samples with a `--fork N` one (second)")
    common = {p["problem"] for p in plain} & {p["problem"] for p in forked}
    plain = [p for p in plain if p["problem"] in common]
    forked = [p for p in forked if p["problem"] in common]
    full = sc_tokens(plain, k)
    base = [same_number(sc(p["samples"][:k]), p["gold"]) for p in plain]
    sc_wall = steps_wall(sc_steps(plain, k), curve) if curve else None
    print(f"  {len(common)} problems; paired with plain SC K={k} of the independent samples; forks continue sample"
          f" {'/'.join(map(str, range(first)))}'s most confident from a line break (mean prefix"
          f" {statistics.mean(s['prefix'] for p in forked for s in p['samples'][first:k]):.0f} tokens shared)")

    def row(label: str, right: list[bool], spent: int, steps: dict | None = None) -> None:
        wall = f"  wall {steps_wall(steps, curve) / sc_wall:.2f}" if curve and steps else ""
        print(f"    {label:44}{accuracy(right)}  {spent / full:5.2f} of SC's tokens{wall}  {paired(right, base)}")

    print(f"    {'plain SC K=%d (independent)' % k:44}{accuracy(base)}  {1:5.2f}")
    for live in (4, 2):
        steps: dict = {}
        right, spent = score(plain, k, replace(POLICIES["hearth"], parallel=live), steps=steps)
        row(f"adaptive, {live} live (independent)", right, spent, steps)
    voted = [same_number(sc(p["samples"][:k]), p["gold"]) for p in forked]
    row(f"SC K={k} over the arm's samples", voted, sc_tokens(forked, k), sc_steps(forked, k))
    for live in (1, 2, 4):
        steps = {}
        right, spent = score(forked, k, replace(POLICIES["hearth"], parallel=live, first_round=first), steps=steps)
        row(f"prefix sharing, adaptive, {live} live", right, spent, steps)
    agree = statistics.mean(sum(s["answer"] == p["samples"][s["source"]]["answer"] for s in p["samples"][first:k]) /
                            (k - first) for p in forked)
    distinct = statistics.mean(len({s["answer"] for s in p["samples"][:k]}) for p in forked)
    distinct_plain = statistics.mean(len({s["answer"] for s in p["samples"][:k]}) for p in plain)
    print(f"    distinct answers among {k}: {distinct:.2f} with forks, {distinct_plain:.2f} independent;"
          f" forks agreeing with their source: {agree:.0%}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("recordings", nargs="+")
    ap.add_argument("--k", type=int, default=8, help="samples per problem replayed (the first k recorded)")
    ap.add_argument("--adaptive-k", type=int, help="samples adaptive mode may draw (default: --k)")
    ap.add_argument("--split", choices=["dev", "heldout"], default="dev")
    ap.add_argument("--policies", default=",".join(POLICIES))
    ap.add_argument("--grid", action="store_true")
    ap.add_argument("--votes", action="store_true")
    ap.add_argument("--prompts", action="store_true")
    ap.add_argument("--sampling", action="store_true", help="compare recordings made at other sampling settings")
    ap.add_argument("--fit", action="store_true", help="how far a stopping rule reading only the vote counts can go:"
                    " fitted on all draws of the recordings but one, replayed on that one")
    ap.add_argument("--forks", action="store_true", help="a `record_reasoning.py --fork N` recording (second) against"
                    " independent samples at the same sampling (first)")
    ap.add_argument("--fit-confidence", action="store_true", help="--fit, the rule also reading whether the leader's"
                    " samples are all confident (at or above the median weight)")
    ap.add_argument("--curve", help="a cost-curve file (HEARTH_CACHE/cost-curves/*.json): add the estimated decode wall")
    ap.add_argument("--live", type=int, help="adaptive policies' live samples (default 2; `hearth run` picks them from the"
                    " cost curve: `bench_reasoning.py` prints the choice)")
    ap.add_argument("--walls", action="store_true", help="adaptive mode at 1..k live samples: tokens and wall (needs --curve)")
    ap.add_argument("--greedy", help="take the greedy answers from this recording (one made with -k 0, same prompt)")
    args = ap.parse_args()
    loaded = [(path, *load(path, args.split)) for path in args.recordings]
    if args.greedy:
        greedy_settings, greedy = load(args.greedy, args.split)
        if greedy_settings["style"] != loaded[0][1]["style"]:
            sys.exit(f"error: {args.greedy} used the {greedy_settings['style']} prompt, not {loaded[0][1]['style']}")
        by_problem = {p["problem"]: p["greedy"] for p in greedy}
        for p in loaded[0][2]:
            if p["problem"] in by_problem:
                p["greedy"] = by_problem[p["problem"]]
    if args.split == "heldout" and (args.grid or args.walls or args.votes or args.prompts or args.sampling or args.fit or args.fit_confidence or args.forks or args.policies != ",".join(POLICIES)):
        sys.exit("error: the held-out split reports the chosen defaults only (no grid, votes, prompts or policy list)")
    if args.prompts:
        return prompts(loaded, args.k)
    if args.sampling:
        return sampling(loaded, args.k, args.live)
    if args.forks:
        return forks(loaded, args.k, load_curve(args.curve) if args.curve else None)
    if args.fit or args.fit_confidence:
        return fit_report(loaded, args.k, [args.live] if args.live else [1, 2, 4], args.fit_confidence)
    path, settings, problems = loaded[0]
    print(f"{path}: {len(problems)} {args.split} problems, {settings}")
    if args.grid:
        return grid(problems, args.k, args.adaptive_k)
    if args.votes:
        return votes(problems, args.k)
    cost_curve = load_curve(args.curve) if args.curve else None
    if args.walls:
        if cost_curve is None:
            sys.exit("error: --walls needs --curve (a cost-curve JSON)")
        return walls(problems, args.k, cost_curve, args.policies.split(",")[0])
    curve(problems)
    names = ["hearth"] if args.split == "heldout" else args.policies.split(",")
    modes_table(problems, args.k, names, args.adaptive_k, cost_curve, args.live)


if __name__ == "__main__":
    main()
