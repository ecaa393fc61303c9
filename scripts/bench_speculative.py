#!/usr/bin/env python3
"""Benchmark: speculative decoding (`--lookup`) against plain decode and llama-cpp-python's
prompt-lookup decoding, on Qwen2.5-Coder-1.5B Q4_K_M (scripts/assemble_qwen.py), greedy
(or hearth alone at --temperature T).

Measured in the same run, each variant on the same prompt tokens (the model's chat template):
- the cost curve of n-row steps (`hearth.runtime.costs.measure_curve`, measured afresh): the best
  speedup fully accepted drafts allow, max over n of n / cost(n), over all widths and over the
  widths llama.cpp computes exactly like single rows (`exact_rows`, which hearth keeps to);
- hearth plain decode and hearth `--lookup` (decode tok/s from the first token to the last);
- `Llama(draft_model=LlamaPromptLookupDecoding(num_pred_tokens=L))` at its default L=10 and at
  each L of --llama-lengths (its best fixed length), with whether its text equals plain decode's;
- with --default-load: plain decode on the model loaded as `hearth run` loads it without --lookup
  (on a CPU: flash attention off, F16 KV cache), the speed --lookup must not fall below;
- with --ceiling: llama.cpp's raw decode loop (scripts/llama_ceiling.py, K=1) against hearth's
  plain decode, and its K-sequence aggregate curve.
Prompts: code editing (a rename, a JSON reformat, a summary quoting its document) and free prose.
Variants alternate within each round; the best run of each variant is kept (--rounds, and runs
merged with --save).

On a slow machine one run of everything takes long: `--save FILE` merges each run's results into
FILE (by prompt and variant), so the work can be split (a prompt, or Llama's lengths, at a time),
and `--report FILE` prints the table of everything saved.

usage: python scripts/bench_speculative.py [MODEL.gguf] [--prompt rename --prompt json ...]
       [--tokens 160] [--rounds 1] [--llama-lengths 10,2,3,4,6,8] [--no-hearth] [--ceiling] [--default-load]
       [--save FILE] [--json]
       python scripts/bench_speculative.py --report FILE
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

CODE = '''class InventoryReport:
    def __init__(self, items):
        self.items = items

    def total_value(self):
        total = 0
        for item in self.items:
            total += item["price"] * item["quantity"]
        return total

    def low_stock(self, threshold=5):
        return [item["name"] for item in self.items if item["quantity"] < threshold]


def build_report(rows):
    items = [{"name": r[0], "price": float(r[1]), "quantity": int(r[2])} for r in rows]
    return InventoryReport(items)


def print_report(rows):
    report = build_report(rows)
    print("total", report.total_value())
    print("low stock", ", ".join(report.low_stock()))
'''
JSON = ('{"service":"hearth","version":"0.4.1","limits":{"max_tokens":4096,"parallel":16,"timeout_s":30},'
        '"models":[{"name":"qwen2.5-coder-1.5b","quant":"Q4_K_M","default":true},{"name":"smollm2-135m",'
        '"quant":"Q4_1","default":false}],"features":["lookup","draft","batch","chat"],"owner":{"team":"runtime",'
        '"contact":"runtime@example.org"}}')
DOCUMENT = ("The city council met on Tuesday to discuss the new library. The architect said the building "
            "will use timber from local forests and solar panels on the roof. Construction is expected to take "
            "eighteen months and cost 12 million euros. Several residents asked for longer opening hours, and the "
            "mayor promised the library will open every evening until nine. A children's reading room and a "
            "small cafe are planned on the ground floor. The council will vote on the final budget next month.")
PROMPTS = {
    "rename": ("code", "Rename the class InventoryReport to StockReport and the function build_report to "
                       "make_stock_report everywhere in this code. Output the complete updated code only.\n\n" + CODE),
    "json": ("code", "Reformat this JSON with two-space indentation. Keep every key and value. Output only "
                     "the JSON.\n\n" + JSON),
    "summary": ("code", "Summarise this document in three bullet points. Each bullet must quote one full "
                        "sentence of the document exactly, in double quotes.\n\n" + DOCUMENT),
    "prose": ("prose", "Write a short story about a lighthouse keeper who finds a message in a bottle."),
}


def model_path(name: str | None) -> str:
    if name:
        return name
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from assemble_qwen import assemble

    return str(assemble())


def run_hearth(model, tokens: list[int], n: int, lookup: bool, temperature: float = 0.0, exact: bool = True) -> dict:
    from hearth.runtime.generation import generate_once
    from hearth.runtime.options import GenerationOptions

    options = GenerationOptions(temperature=temperature, seed=1, max_tokens=n, lookup=lookup, exact_drafts=exact)
    sample, _ = generate_once(model._loaded, tokens, options)
    ended = time.perf_counter()
    row = {"tokens": list(sample.tokens), "tok_s": (len(sample.tokens) - 1) / (ended - sample.first_token_at)}
    if sample.spec is not None:
        row["spec"] = sample.spec.stats.to_dict()
    return row


def run_llama(llm, tokens: list[int], n: int, length: int) -> dict:
    from llama_cpp.llama_speculative import LlamaPromptLookupDecoding

    llm.draft_model = LlamaPromptLookupDecoding(num_pred_tokens=length)
    llm.reset()
    out, first = [], None
    for token in llm.generate(tokens, temp=0.0, reset=True):
        if first is None:
            first = time.perf_counter()
        if llm.token_eos() == token or len(out) >= n:
            break
        out.append(int(token))
    ended = time.perf_counter()
    return {"tokens": out, "tok_s": (len(out) - 1) / (ended - first) if first and len(out) > 1 else 0.0}


def load_llama(path: str, threads: int, n_ctx: int, kv_type: int | None = None):
    """llama-cpp-python's Llama with a prompt-lookup draft model, as hearth runs llama.cpp: the CPU
    weight buffers hearth chooses (`llama_reference`: on AMX CPUs repacked rows without AMX, whose
    kernels crash on this project's Xeon VMs), flash attention on (what hearth loads to speculate on
    a CPU) and hearth's KV cache type (BF16 when speculating on a CPU), so that both compute the same
    logits with the same kernels and greedy texts can be compared."""
    from llama_cpp.llama_speculative import LlamaPromptLookupDecoding

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from llama_reference import reference_llama

    kv = {} if kv_type is None else {"type_k": kv_type, "type_v": kv_type}
    return reference_llama(path, n_ctx=n_ctx, n_threads=threads, n_threads_batch=threads, verbose=False,
                           flash_attn=True, draft_model=LlamaPromptLookupDecoding(), **kv)


def bench_prompt(model, llm, name: str, args, lengths: list[int], saved: dict) -> dict:
    """Run the variants on one prompt; `saved` holds earlier runs' rows (merged, best kept)."""
    kind, text = PROMPTS[name]
    tokens = model.prompt_tokens(text)
    best = saved.setdefault(name, {})
    runs = {}
    if not args.no_hearth:
        runs["plain"] = lambda: run_hearth(model, tokens, args.tokens, False, args.temperature)
        runs["lookup"] = lambda: run_hearth(model, tokens, args.tokens, True, args.temperature)
        if args.loose:
            runs["lookup_loose"] = lambda: run_hearth(model, tokens, args.tokens, True, args.temperature, exact=False)
    for length in lengths if llm is not None else ():
        runs[f"llama_L{length}"] = lambda length=length: run_llama(llm, tokens, args.tokens, length)
    for _ in range(args.rounds):
        for key, fn in runs.items():
            started = time.perf_counter()
            row = fn()
            print(f"{name} {key}: {row['tok_s']:.2f} tok/s ({time.perf_counter() - started:.0f}s)", file=sys.stderr)
            row["runs"] = best.get(key, {}).get("runs", 0) + 1
            if key not in best or row["tok_s"] > best[key]["tok_s"]:
                best[key] = row
            best[key]["runs"] = row["runs"]
    return summarize(name, best)


def summarize(name: str, best: dict) -> dict:
    """One prompt's line of the table from its best rows."""
    kind = PROMPTS[name][0]
    plain = best.get("plain")
    result = {"prompt": name, "kind": kind}
    if plain is None:
        return result
    result.update({"tokens": len(plain["tokens"]), "plain_tok_s": round(plain["tok_s"], 2)})
    if "lookup" in best:
        lookup = best["lookup"]
        result.update({"lookup_tok_s": round(lookup["tok_s"], 2), "lookup_speedup": round(lookup["tok_s"] / plain["tok_s"], 3),
                       "lookup_same_text": lookup["tokens"] == plain["tokens"], "lookup_stats": lookup["spec"]})
    if "lookup_loose" in best:
        loose = best["lookup_loose"]
        result.update({"loose_tok_s": round(loose["tok_s"], 2), "loose_speedup": round(loose["tok_s"] / plain["tok_s"], 3),
                       "loose_same_text": loose["tokens"] == plain["tokens"], "loose_stats": loose["spec"]})
    if "plain_default_load" in best:
        other = best["plain_default_load"]
        result.update({"default_load_tok_s": round(other["tok_s"], 2),
                       "default_load_same_text": other["tokens"] == plain["tokens"]})
        if "lookup" in best:
            result["lookup_vs_default_load"] = round(best["lookup"]["tok_s"] / other["tok_s"], 3)
    llama_rows = {k: v for k, v in best.items() if k.startswith("llama_")}
    if llama_rows:
        result["llama"] = {k: {"tok_s": round(v["tok_s"], 2), "same_text": v["tokens"] == plain["tokens"]}
                           for k, v in llama_rows.items()}
        fixed = max(llama_rows, key=lambda k: llama_rows[k]["tok_s"])
        result["llama_best_fixed"] = fixed[6:]
        if "lookup" in best and "llama_L10" in llama_rows:
            result["vs_llama_default"] = round(best["lookup"]["tok_s"] / llama_rows["llama_L10"]["tok_s"], 3)
        if "lookup" in best:
            result["vs_llama_best_fixed"] = round(best["lookup"]["tok_s"] / llama_rows[fixed]["tok_s"], 3)
        if "lookup_loose" in best and "llama_L10" in llama_rows:
            result["loose_vs_llama_default"] = round(best["lookup_loose"]["tok_s"] / llama_rows["llama_L10"]["tok_s"], 3)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", nargs="?")
    ap.add_argument("--prompt", action="append", choices=list(PROMPTS))
    ap.add_argument("--tokens", type=int, default=160)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--temperature", type=float, default=0.0,
                    help="hearth's sampling temperature (> 0: no Llama runs; texts differ by design)")
    ap.add_argument("--llama-lengths", default="10,2,3,4,6,8", help="Llama's fixed draft lengths (10: its default)")
    ap.add_argument("--no-hearth", action="store_true", help="only Llama's runs (to split the work)")
    ap.add_argument("--loose", action="store_true", help="also hearth --lookup --loose-drafts (greedy drafts "
                    "checked in any call, not only exact ones)")
    ap.add_argument("--ceiling", action="store_true", help="also llama.cpp's raw decode loop (K=1,2,4,8)")
    ap.add_argument("--default-load", action="store_true", help="also plain decode on the model loaded as "
                    "`hearth run` loads it without --lookup (on a CPU: no flash attention, F16 KV cache)")
    ap.add_argument("--save", help="merge the results into this JSON file")
    ap.add_argument("--report", help="print the table of a --save file and exit")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if args.report:
        report = json.loads(Path(args.report).read_text())
        report["prompts"] = [summarize(name, rows) for name, rows in report["runs"].items()]
        if args.json:
            print(json.dumps(report, indent=1))
        else:
            print_report(report)
        return
    import hearth
    from hearth.runtime.costs import measure_curve

    path = model_path(args.model)
    lengths = [int(x) for x in args.llama_lengths.split(",") if x] if args.temperature == 0 else []
    saved_path = Path(args.save) if args.save else None
    report = json.loads(saved_path.read_text()) if saved_path and saved_path.exists() else {}
    report.update({"model": Path(path).name, "threads": args.threads, "tokens": args.tokens,
                   "temperature": args.temperature})
    runs = report.setdefault("runs", {})
    # loaded to speculate, as `hearth run --lookup` loads it (on a CPU: with flash attention)
    with hearth.load(path, ctx=2048, threads=args.threads, options=hearth.GenerationOptions(lookup=True)) as model:
        if "cost_curve" not in report:
            curve = measure_curve(model._loaded.engine)
            exact = [w for w in curve.widths if w <= curve.exact_rows]  # at the first position checked
            report["cost_curve"] = {**curve.to_dict(),
                                    "best_speedup_exact": round(max(curve.throughput(w) for w in exact), 3)}
        report["cost_curve_used"] = model._loaded.cost_curve().to_dict()  # the cached one lookup chooses from
        report["kv_type"] = model._loaded.engine.config.kv_type  # None: F16
        llm = None if not lengths else load_llama(path, args.threads, 2048, model._loaded.engine.config.kv_type)
        report["prompts"] = [bench_prompt(model, llm, name, args, lengths, runs) for name in args.prompt or []]
        if args.ceiling:
            plain = run_hearth(model, model.prompt_tokens(PROMPTS["prose"][1]), 64, False)["tok_s"]
            report["plain_decode_tok_s"] = round(plain, 2)
    if args.default_load and args.prompt:
        # plain decode as `hearth run` without --lookup loads the model (on a CPU: flash attention
        # off, F16 KV cache): what --lookup must not be slower than
        with hearth.load(path, ctx=2048, threads=args.threads) as plain_model:
            for _ in range(args.rounds):
                for name in args.prompt:
                    row = run_hearth(plain_model, plain_model.prompt_tokens(PROMPTS[name][1]), args.tokens, False,
                                     args.temperature)
                    print(f"{name} plain_default_load: {row['tok_s']:.2f} tok/s", file=sys.stderr)
                    kept = runs[name].get("plain_default_load")
                    if kept is None or row["tok_s"] > kept["tok_s"]:
                        runs[name]["plain_default_load"] = row
    if args.ceiling:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from llama_ceiling import ceiling

        rows = ceiling(path, [1, 2, 4, 8], 64, args.threads)
        report["llama_ceiling"] = rows
        report["plain_vs_raw_loop"] = round(report["plain_decode_tok_s"] / rows[0]["aggregate_tok_s"], 3)
    if saved_path:
        saved_path.write_text(json.dumps(report, indent=1))
    report["prompts"] = [summarize(name, rows) for name, rows in runs.items()]
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        print_report(report)


def print_report(report: dict) -> None:
    curve = report["cost_curve"]
    from hearth.runtime.hardware import KV_TYPES

    kv = {None: "F16", **{ggml: name.upper() for name, ggml in KV_TYPES.items()}}.get(report.get("kv_type"), report.get("kv_type"))
    print(f"{report['model']} · {report['threads']} threads · {report['tokens']} tokens · KV cache {kv} · each variant's best run")
    print("cost curve (rows: cost in single-row calls): "
          + " ".join(f"{w}:{r:.2f}" for w, r in zip(curve["widths"], curve["relative"])))
    print(f"best speedup allowed: {curve['best_speedup']:.2f}x (all widths), {curve['best_speedup_exact']:.2f}x "
          f"(within the {curve['exact_rows']} rows computed exactly at 48 positions); exact rows by position: "
          + " ".join(f"{b}:{r}" for b, r in curve.get("exact_at", [])))
    if report.get("temperature"):
        print(f"temperature {report['temperature']} (seed 1): texts differ by design")
    for row in report["prompts"]:
        line = f"{row['prompt']:8} {row['kind']:5}"
        if "plain_tok_s" in row:
            line += f" plain {row['plain_tok_s']:6.2f} tok/s"
        if "lookup_tok_s" in row:
            line += (f" · lookup {row['lookup_tok_s']:6.2f} ({row['lookup_speedup']:.2f}x, same text "
                     f"{row['lookup_same_text']}, accepted {row['lookup_stats']['accepted']}/{row['lookup_stats']['drafted']},"
                     f" lengths {row['lookup_stats']['draft_length']['chosen']})")
        if "loose_tok_s" in row:
            line += (f" · loose {row['loose_tok_s']:6.2f} ({row['loose_speedup']:.2f}x, same text "
                     f"{row['loose_same_text']}, accepted {row['loose_stats']['accepted']}/{row['loose_stats']['drafted']})")
        if "default_load_tok_s" in row:
            line += (f" · plain as loaded without --lookup {row['default_load_tok_s']:6.2f} (same text "
                     f"{row['default_load_same_text']}; lookup {row.get('lookup_vs_default_load', 0):.2f}x it)")
        if "llama" in row:
            line += " · Llama " + " ".join(f"{k[6:]}:{v['tok_s']:.2f}{'' if v['same_text'] else '*'}"
                                           for k, v in row["llama"].items())
        if "vs_llama_default" in row:
            line += f" · vs its default {row['vs_llama_default']:.2f}x, vs its best fixed {row['vs_llama_best_fixed']:.2f}x"
        if "loose_vs_llama_default" in row:
            line += f" · loose vs its default {row['loose_vs_llama_default']:.2f}x"
        print(line)
    if "llama_ceiling" in report:
        print(f"plain decode {report['plain_decode_tok_s']} tok/s vs llama.cpp raw loop "
              f"{report['llama_ceiling'][0]['aggregate_tok_s']} tok/s: {report['plain_vs_raw_loop']:.2f}x; "
              "K-sequence aggregate: " + " ".join(f"K={r['k']}:{r['aggregate_tok_s']}" for r in report["llama_ceiling"]))
    print("(* = text differs from plain decode)")


if __name__ == "__main__":
    main()
