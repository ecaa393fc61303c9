#!/usr/bin/env python3
"""Benchmark reasoning mode on GSM8K (train split, read from ../shared; never copied here).

For each model, on the first N problems, side by side:
  greedy (K=1, temp 0) · K=8 majority · K=8 weighted (same K=8 samples, other vote) · adaptive
with accuracy, total generated tokens and wall time for each; and hearth's K-sequence decode
throughput next to llama.cpp's own batched decode ceiling (../shared/tools/llama_batched_ceiling.py,
same model, same threads, same K, same short prompt, run as a subprocess right after).

usage: python scripts/bench_reasoning.py [qwen default gemma PATH ...] [-n 50] [--offset 0] [-k 8] [--max-tokens 512] [--threads 2] [--json]
Run it alone: another llama.cpp process on the same 2 cores ruins both.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_decode import model_path as base_model_path  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
GSM8K = ROOT.parent / "shared" / "data" / "gsm8k" / "train.jsonl"
CEILING = ROOT.parent / "shared" / "tools" / "llama_batched_ceiling.py"
CEILING_PROMPT = "Once upon a time, in a small village by the sea, there lived"


def model_path(name: str) -> str:
    if name == "qwen":
        from assemble_qwen import assemble

        return str(assemble())
    return base_model_path(name)


def load_problems(n: int, offset: int = 0) -> list[tuple[str, str]]:
    problems = []
    with open(GSM8K, encoding="utf-8") as handle:
        for index, line in enumerate(handle):
            if index < offset:
                continue
            row = json.loads(line)
            gold = row["answer"].split("####")[-1].strip().replace(",", "")
            problems.append((row["question"], gold))
            if len(problems) == n:
                break
    return problems


def same_number(answer: str | None, gold: str) -> bool:
    if answer is None:
        return False
    try:
        return abs(float(answer) - float(gold)) < 1e-6
    except ValueError:
        return answer == gold


def sample_record(engine, sample, result, answer_mode: str) -> dict:
    """One fixed-mode sample for offline study of stopping rules (--dump): its answer, its tokens,
    where its answer line was complete (what adaptive mode's per-sample stop would have kept), and
    its per-token DeepConf confidences. `result` is the sample's SampleResult from `reason`."""
    from hearth.runtime.answers import answer_line_complete

    answer_at = None
    pieces = b""
    for i, token in enumerate(sample.tokens, 1):
        pieces += engine.model.piece(token)
        if answer_line_complete(pieces.decode("utf-8", errors="replace"), answer_mode):
            answer_at = i
            break
    return {"answer": result.answer, "tokens": result.tokens, "answer_at": answer_at,
            "finish": sample.finish_reason, "confidences": [round(c, 3) for c in sample.token_confidences]}


def run_modes(path: str, problems, k: int, max_tokens: int, threads: int, only: set[str], dump=None,
              live: int | None = None) -> dict:
    from hearth.runtime.engine import ContextConfig, Engine
    from hearth.runtime.scheduler import Scheduler
    from hearth.runtime.gguf_file import read_gguf
    from hearth.runtime.prompts import style_for_gguf
    from hearth.runtime.costs import cost_curve
    from hearth.runtime.hardware import flash_attention
    from hearth.runtime.reasoning import ReasoningConfig, parallel_for, reason
    from hearth.runtime.sampling import SamplingParams
    from hearth.runtime.templates import build_prompt
    from hearth.runtime.voting import SampleResult, vote

    info = read_gguf(path)
    style = style_for_gguf(info.metadata)  # the model family's reasoning prompt, as `hearth run --samples` words it
    print(f"reasoning prompt: {style.name} ({style.why})", file=sys.stderr)
    from hearth.runtime.options import GenerationOptions

    sampled = GenerationOptions().sampling("reason", k)  # hearth's reasoning defaults (T 0.7, top-k 40, top-p 0.95, min-p 0)
    greedy = SamplingParams(temperature=0.0)
    flash, _why = flash_attention(0, os.environ.get("HEARTH_FLASH_ATTN"))  # as `hearth run` loads a CPU model
    config = ContextConfig(n_ctx=512 + (k + 1) * (max_tokens + 1), n_seq_max=k + 1, n_threads=threads, n_threads_batch=threads,
                           flash_attn=flash)
    modes = {name: {"correct": 0, "tokens": 0, "wall_s": 0.0} for name in ("greedy", "k_majority", "k_weighted", "adaptive")}
    decode = {"rows": 0, "seconds": 0.0}
    with Engine(path, config) as engine:
        model = engine.model
        if live is None:  # what `hearth run --samples K` runs on this machine: the cost curve's choice
            curve = cost_curve(engine, Path(path), threads, 0, flash_attn=engine.config.flash_attn,
                               kv_type=engine.config.kv_type)
            live = parallel_for(k, False, curve)
        print(f"adaptive mode: {live} live samples", file=sys.stderr)
        modes["adaptive_live"] = live
        for seed, (question, gold) in enumerate(problems):
            text = build_prompt(info.chat_template, style.messages([{"role": "user", "content": question}], "number"),
                                model.bos_text, model.eos_text, model.add_bos).text
            tokens = engine.tokenize(text)
            runs = {
                "greedy": (greedy, ReasoningConfig(k=1, answer="number", adaptive=False)),
                "fixed": (sampled, ReasoningConfig(k=k, answer="number", adaptive=False, vote="majority")),
                "adaptive": (sampled, ReasoningConfig(k=k, answer="number", adaptive=True, parallel=live)),
            }
            for name, (params, cfg) in runs.items():
                if name not in only:
                    continue
                generator = Scheduler(engine)
                params = SamplingParams(**{**params.__dict__, "seed": 1000 * seed + 1})
                seen = {}  # sample index -> Sample (token ids and confidences, for --dump)
                result = reason(generator, tokens, params, max_tokens, cfg,
                                on_update=(lambda sample, answer: seen.setdefault(sample.index, sample)) if dump else None)
                if name == "fixed" and dump is not None:
                    rows = [sample_record(engine, seen[i], r, "number") for i, r in enumerate(result.samples)]
                    dump.write(json.dumps({"problem": seed, "gold": gold, "samples": rows}) + "\n")
                    dump.flush()
                if name == "fixed":
                    decode["rows"] += generator.stats.decode_rows
                    decode["seconds"] += generator.stats.decode_s
                    weighted = vote([SampleResult(s.text, s.answer, s.weight, s.tokens) for s in result.samples], "weighted")
                    targets = {"k_majority": result.answer, "k_weighted": weighted.answer}
                else:
                    targets = {name: result.answer}
                for mode, answer in targets.items():
                    modes[mode]["correct"] += same_number(answer, gold)
                    modes[mode]["tokens"] += result.tokens_total
                    modes[mode]["wall_s"] += result.wall_s
    n = len(problems)
    for row in (row for row in modes.values() if isinstance(row, dict)):
        row["accuracy"] = round(100 * row["correct"] / n, 1)
        row["wall_s"] = round(row["wall_s"], 1)
    modes["k_decode_tok_s"] = round(decode["rows"] / decode["seconds"], 1) if decode["seconds"] else 0.0
    return modes


def hearth_throughput(path: str, k: int, n_new: int, threads: int) -> float:
    """hearth's aggregate decode tok/s with K sequences on the ceiling script's own prompt."""
    from hearth.runtime.engine import ContextConfig, Engine
    from hearth.runtime.scheduler import GenRequest, Scheduler
    from hearth.runtime.sampling import SamplingParams

    config = ContextConfig(n_ctx=64 + k * (n_new + 16), n_seq_max=k, n_threads=threads, n_threads_batch=threads)
    with Engine(path, config) as engine:
        tokens = engine.tokenize(CEILING_PROMPT)
        generator = Scheduler(engine)
        params = SamplingParams(temperature=0.8, top_k=40, top_p=1.0, min_p=0.0, seed=1234)
        generator.run([GenRequest(tokens, params, n_new, n=k, ignore_eog=True)])
        return generator.stats.decode_rows / generator.stats.decode_s


def ceiling(path: str, k: int, n_new: int, threads: int) -> dict:
    done = subprocess.run([sys.executable, str(CEILING), path, "--ks", f"1,{k}", "--tokens", str(n_new),
                           "--threads", str(threads), "--json"], capture_output=True, text=True, check=True)
    rows = json.loads(done.stdout.strip().splitlines()[-1])
    return {r["k"]: r["aggregate_tok_s"] for r in rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    ap.add_argument("models", nargs="*", default=["qwen", "default"])
    ap.add_argument("-n", "--problems", type=int, default=50)
    ap.add_argument("--offset", type=int, default=0, help="skip this many problems first (a held-out slice for tuning)")
    ap.add_argument("-k", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=512, help="per sample (hearth run --samples' default: 512)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=64, help="tokens per sequence in the throughput comparison")
    ap.add_argument("--modes", default="greedy,fixed,adaptive", help="which runs: greedy, fixed (K majority + weighted), adaptive")
    ap.add_argument("--live", type=int, help="adaptive mode's live samples (default: what hearth chooses from the cost curve)")
    ap.add_argument("--no-throughput", action="store_true", help="skip the decode-throughput comparison")
    ap.add_argument("--dump", type=Path, help="write every fixed-mode sample (answer, tokens, confidences) as JSONL here")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    from hearth.runtime.engine import set_llama_logging

    set_llama_logging(False)
    problems = load_problems(args.problems, args.offset)
    report = []
    for name in args.models:
        path = model_path(name)
        started = time.perf_counter()
        dump = open(args.dump.with_suffix(f".{name}.jsonl"), "w") if args.dump else None
        modes = run_modes(path, problems, args.k, args.max_tokens, args.threads, set(args.modes.split(",")), dump, args.live)
        if dump:
            dump.close()
        if args.no_throughput:
            ours, theirs = 0.0, {args.k: float("nan"), 1: None}
        else:
            ours = hearth_throughput(path, args.k, args.tokens, args.threads)
            theirs = ceiling(path, args.k, args.tokens, args.threads)
        report.append({"model": Path(path).name, "problems": len(problems), "offset": args.offset, "k": args.k, **modes,
                       "hearth_k_tok_s": round(ours, 1), "llama_cpp_k_tok_s": theirs.get(args.k),
                       "llama_cpp_1_tok_s": theirs.get(1),
                       "throughput_vs_ceiling": round(ours / theirs[args.k], 3),
                       "bench_s": round(time.perf_counter() - started, 1)})
        print(json.dumps(report[-1]), file=sys.stderr, flush=True)
    if args.json:
        print(json.dumps(report, indent=2))
        return
    for r in report:
        print(f"\n{r['model']} — GSM8K train first {r['problems']}, K={r['k']}")
        print(f"  {'mode':12}{'accuracy %':>12}{'tokens':>10}{'wall s':>10}")
        for mode in ("greedy", "k_majority", "k_weighted", "adaptive"):
            row = r[mode]
            print(f"  {mode:12}{row['accuracy']:>12}{row['tokens']:>10}{row['wall_s']:>10}")
        adaptive_share = r["adaptive"]["tokens"] / max(1, r["k_majority"]["tokens"])
        print(f"  adaptive ({r['adaptive_live']} live) tokens / K={r['k']} tokens: {adaptive_share:.2f}")
        print(f"  K={r['k']} decode: hearth {r['hearth_k_tok_s']} tok/s, llama.cpp {r['llama_cpp_k_tok_s']} tok/s "
              f"(K=1: {r['llama_cpp_1_tok_s']}), ratio {r['throughput_vs_ceiling']}")


if __name__ == "__main__":
    main()
