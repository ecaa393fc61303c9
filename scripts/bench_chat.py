#!/usr/bin/env python3
"""Benchmark: does `hearth chat` slow down as the conversation grows?

Runs a conversation of --turns turns through the chat's own `ChatSession` (KV cache kept between
turns) and reports, per turn, the prompt size, the tokens evaluated vs reused, and the time to
first token (TTFT). Then it answers the last turn again with the cache dropped, to show what each
turn would cost without reuse. Pass: TTFT of the last turn within 1.5x of the first turn's.

usage: python scripts/bench_chat.py [MODEL.gguf|default] [--turns 10] [--tokens 48] [--ctx 4096] [--json]
"""

from __future__ import annotations

import argparse
import json
import time

MESSAGE = ("Turn {i}. Here is a note about my garden: the tomatoes need staking, the roses want more sun, "
           "and the basil keeps bolting. What would you do first, and why?")


def run(model: str, turns: int, tokens: int, ctx: int) -> dict:
    import hearth

    session = hearth.load(model, ctx=ctx).chat(system="You are a helpful gardener.", temperature=0.0, seed=1,
                                               max_tokens=tokens)
    loaded = session.loaded
    rows = []
    try:
        for i in range(1, turns + 1):
            session.conversation.add_user(MESSAGE.format(i=i))
            result = session.respond(lambda delta: None)
            rows.append({"turn": i, "prompt_tokens": result.prompt_tokens, "evaluated": result.evaluated,
                         "reused": result.reused, "ttft_s": round(result.first_token_s or 0.0, 4),
                         "decode_tok_s": result.decode_tok_s})
        # The last turn again, from an empty cache: what every turn would cost without reuse.
        session.conversation.pop_answer()
        loaded.engine.ctx.clear()
        loaded.engine.cached.clear()
        started = time.perf_counter()
        cold = session.respond(lambda delta: None)
        cold_ttft = cold.first_token_s if cold.first_token_s is not None else time.perf_counter() - started
    finally:
        session.close()
    ratio = rows[-1]["ttft_s"] / rows[0]["ttft_s"] if rows[0]["ttft_s"] else float("inf")
    # Turn 1 also pays the first decode's warm-up; the ratio to turn 2 isolates the context's growth.
    ratio_warm = rows[-1]["ttft_s"] / rows[1]["ttft_s"] if len(rows) > 1 and rows[1]["ttft_s"] else None
    return {"model": loaded.name, "turns": rows, "ttft_ratio_last_vs_first": round(ratio, 3),
            "ttft_ratio_last_vs_second": None if ratio_warm is None else round(ratio_warm, 3),
            "cold_last_turn": {"prompt_tokens": cold.prompt_tokens, "evaluated": cold.evaluated, "ttft_s": round(cold_ttft, 4)},
            "pass": ratio <= 1.5}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", nargs="?", default="default")
    parser.add_argument("--turns", type=int, default=10)
    parser.add_argument("--tokens", type=int, default=48)
    parser.add_argument("--ctx", type=int, default=4096)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    report = run(args.model, args.turns, args.tokens, args.ctx)
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"{report['model']}: {args.turns} turns, {args.tokens} tokens per answer")
    print(f"{'turn':>4} {'prompt':>7} {'evaluated':>9} {'reused':>7} {'ttft s':>7} {'tok/s':>7}")
    for row in report["turns"]:
        print(f"{row['turn']:>4} {row['prompt_tokens']:>7} {row['evaluated']:>9} {row['reused']:>7} "
              f"{row['ttft_s']:>7.3f} {row['decode_tok_s']:>7}")
    cold = report["cold_last_turn"]
    print(f"last turn without the cache: {cold['evaluated']} tokens evaluated, ttft {cold['ttft_s']:.3f}s")
    print(f"ttft last/first = {report['ttft_ratio_last_vs_first']} ({'pass' if report['pass'] else 'FAIL'}: <= 1.5); "
          f"last/second = {report['ttft_ratio_last_vs_second']}")


if __name__ == "__main__":
    main()
