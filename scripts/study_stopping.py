#!/usr/bin/env python3
"""Replay reasoning-mode stopping policies offline on recorded samples.

`bench_reasoning.py --dump FILE --modes fixed` records every K-sample of every problem (answer,
tokens, where its answer line was complete, per-token DeepConf confidences). This script replays
adaptive mode's scheduling on those samples — `parallel` live sequences advancing one token per
step, samples launched lazily, the per-sample answer-line stop, DeepConf's online cut, the vote
checked with hearth's own `decide_stop` after each finished sample — and prints accuracy and
tokens for each policy next to the full K-sample vote. It calls hearth's real rule functions, so
a policy that wins here is the code path the engine runs; the real benchmark confirms it.

usage: python scripts/study_stopping.py DUMP.jsonl [--policies NAME,...] [--grid]
(--grid: every combination of live samples, ESC window, DeepConf keep/window/warm-up and the
give-up rule; prints the policies that set a new best accuracy as the token share grows)
"""

from __future__ import annotations

import argparse
import itertools
import json
from dataclasses import dataclass, replace

from hearth.runtime.reasoning import ADAPTIVE_STOP_RULE
from hearth.runtime.stopping import (DEFAULT_CONFIDENCE_WINDOW, StopRule, WindowedConfidence, confidence_bar, decide_stop,
                                     lowest_group_confidence)
from hearth.runtime.voting import SampleResult, vote

from bench_reasoning import same_number  # scripts/ is on sys.path when this script runs


@dataclass(frozen=True)
class Policy:
    parallel: int = 4
    warmup: int = 3
    keep_top_percent: float = 90.0
    window: int = DEFAULT_CONFIDENCE_WINDOW
    rule: StopRule = StopRule()
    lazy: bool = True
    cut: bool = True
    method: str = "weighted"


POLICIES = {
    "hearth": Policy(parallel=2, warmup=2, window=32, rule=ADAPTIVE_STOP_RULE),  # ReasoningConfig's defaults
    "current": Policy(),
    "esc3": Policy(rule=StopRule(window=3)),
    "esc3-p3": Policy(parallel=3, rule=StopRule(window=3)),
    "esc3-p2": Policy(parallel=2, rule=StopRule(window=3)),
    "p3": Policy(parallel=3),
    "p2": Policy(parallel=2),
    "esc3-nocut": Policy(rule=StopRule(window=3), cut=False),
    "esc3-keep50": Policy(rule=StopRule(window=3), keep_top_percent=50.0),
    "esc3-p3-keep50": Policy(parallel=3, rule=StopRule(window=3), keep_top_percent=50.0),
    "beta90": Policy(rule=StopRule(threshold=0.9)),
    "giveup": Policy(rule=StopRule(give_up=True)),
    "giveup-p3": Policy(parallel=3, rule=StopRule(give_up=True)),
    "esc3-giveup": Policy(rule=StopRule(window=3, give_up=True)),
    "esc3-giveup-p3": Policy(parallel=3, rule=StopRule(window=3, give_up=True)),
    "keep10": Policy(keep_top_percent=10.0),
    "esc3-keep10-p3": Policy(parallel=3, rule=StopRule(window=3), keep_top_percent=10.0),
    "noesc-giveup": Policy(rule=StopRule(window=None, give_up=True)),
}


def weight(sample: dict, window: int = DEFAULT_CONFIDENCE_WINDOW) -> float:
    return max(0.0, lowest_group_confidence(sample["confidences"][:sample["tokens"]], window))


def natural_length(sample: dict) -> int:
    """Tokens the sample runs for under adaptive mode's per-sample stop (answer line complete)."""
    return min(sample["answer_at"], sample["tokens"]) if sample["answer_at"] else sample["tokens"]


def replay(samples: list[dict], k: int, policy: Policy) -> tuple[str | None, int]:
    """(voted answer, tokens generated) for one problem under a policy."""
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
            live[launched] = {"pos": 0, "window": WindowedConfidence(policy.window)}
            launched += 1

    launch()
    while live:
        done = []
        for index, state in live.items():
            sample = samples[index]
            confs = sample["confidences"]
            state["pos"] += 1
            tokens += 1
            pos = state["pos"]
            if pos <= len(confs):
                state["window"].push(confs[pos - 1])
            if pos >= natural_length(sample):
                done.append((index, "answer"))
            elif policy.cut and state["window"].full and bar is not None and state["window"].current < bar:
                done.append((index, "cut"))
        settled = False
        for index, why in done:
            del live[index]
            sample = samples[index]
            answer = sample["answer"] if why == "answer" else None
            answers.append(answer)
            conf = sample["confidences"][:natural_length(sample)]
            results.append(SampleResult("", answer, max(0.0, lowest_group_confidence(conf, policy.window)),
                                        cut=why == "cut"))
            if why == "answer":
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


def score(problems: list[dict], policy: Policy) -> tuple[int, float]:
    """(problems answered right, tokens as a share of drawing all K samples) under a policy."""
    k = len(problems[0]["samples"])
    full = sum(s["tokens"] for p in problems for s in p["samples"])
    got = spent = 0
    for p in problems:
        answer, tokens = replay(p["samples"], k, policy)
        got += same_number(answer, p["gold"])
        spent += tokens
    return got, spent / full


def grid(problems: list[dict]) -> None:
    rows = []
    for par, esc, keep, give, win, warm in itertools.product([2, 3, 4], [3, 4, None], [10, 50, 90], [False, True],
                                                             [32, 64], [2, 3]):
        policy = Policy(parallel=par, warmup=warm, keep_top_percent=keep, window=win,
                        rule=StopRule(window=esc, give_up=give))
        got, share = score(problems, policy)
        rows.append((share, got, f"parallel {par}, ESC {esc}, keep {keep}%, give-up {give}, window {win}, warm-up {warm}"))
    best = -1
    for share, got, name in sorted(rows):
        if got > best:
            print(f"{share:5.2f} of the tokens  {got}/{len(problems)} right  {name}")
            best = got


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dump")
    ap.add_argument("--policies", default=",".join(POLICIES))
    ap.add_argument("--grid", action="store_true")
    args = ap.parse_args()
    problems = [json.loads(line) for line in open(args.dump, encoding="utf-8")]
    if args.grid:
        return grid(problems)
    k = len(problems[0]["samples"])
    full_tokens = sum(s["tokens"] for p in problems for s in p["samples"])
    correct = {m: 0 for m in ("majority", "weighted")}
    for p in problems:
        results = [SampleResult("", s["answer"], weight(s)) for s in p["samples"]]
        for method in correct:
            correct[method] += same_number(vote(results, method).answer, p["gold"])
    n = len(problems)
    print(f"{n} problems, K={k}: full K tokens {full_tokens}")
    for m in range(1, k + 1):  # the first m samples only, no adaptivity: the accuracy curve
        got = sum(same_number(vote([SampleResult("", s["answer"], weight(s)) for s in p["samples"][:m]], "majority").answer,
                              p["gold"]) for p in problems)
        print(f"  first {m} majority: {100 * got / n:5.1f}%  ({m / k:.2f} of the tokens)")
    for method, c in correct.items():
        print(f"  K={k} {method:9} accuracy {100 * c / n:5.1f}%")
    print(f"  {'policy':16}{'acc %':>7}{'share':>7}")
    for name in args.policies.split(","):
        got, share = score(problems, POLICIES[name])
        print(f"  {name:16}{100 * got / n:7.1f}{share:7.2f}")


if __name__ == "__main__":
    main()
