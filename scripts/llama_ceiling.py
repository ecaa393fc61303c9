#!/usr/bin/env python3
"""llama.cpp's own batched decode ceiling: K sequences, one new token each per llama_decode call.

The same measure as ../shared/tools/llama_batched_ceiling.py (one prompt evaluated once for
every sequence, then K rows per call, each sequence with its own top-k/temperature sampler),
written again here because that tool loads the model with llama.cpp's default parameters, and
on CPUs with AMX those put the weights in AMX buffers whose kernel crashes (SIGSEGV) in
llama-cpp-python 0.3.36. This one turns CPU weight repacking off where hearth does
(`runtime/hardware.py: cpu_weight_repacking`), so it measures what hearth's engine can reach.

usage: python scripts/llama_ceiling.py MODEL.gguf [--ks 16] [--tokens 64] [--threads 2] [--json]
"""

from __future__ import annotations

import argparse
import json
import time

import llama_cpp as L

PROMPT = b"Once upon a time, in a small village by the sea, there lived"


def aggregate_tok_s(model, k: int, n_new: int, threads: int) -> float:
    vocab = L.llama_model_get_vocab(model)
    tokens = (L.llama_token * 256)()
    n_prompt = L.llama_tokenize(vocab, PROMPT, len(PROMPT), tokens, 256, True, False)
    params = L.llama_context_default_params()
    params.n_ctx, params.n_batch, params.n_seq_max = n_prompt + k * n_new + 64, 512, k
    params.n_threads = params.n_threads_batch = threads
    params.kv_unified = True  # the prompt's cells belong to every sequence
    ctx = L.llama_init_from_model(model, params)
    batch = L.llama_batch_init(max(n_prompt, k), 0, k)
    samplers = []
    try:
        for i in range(n_prompt):  # the prompt once, tagged with all K sequence ids
            batch.token[i], batch.pos[i], batch.n_seq_id[i], batch.logits[i] = tokens[i], i, k, i == n_prompt - 1
            for s in range(k):
                batch.seq_id[i][s] = s
        batch.n_tokens = n_prompt
        L.llama_decode(ctx, batch)
        for s in range(k):
            chain = L.llama_sampler_chain_init(L.llama_sampler_chain_default_params())
            for part in (L.llama_sampler_init_top_k(40), L.llama_sampler_init_temp(0.8),
                         L.llama_sampler_init_dist(1000 + s)):
                L.llama_sampler_chain_add(chain, part)
            samplers.append(chain)
        rows = [n_prompt - 1] * k
        started = time.perf_counter()
        for step in range(n_new):
            drawn = [L.llama_sampler_sample(samplers[s], ctx, rows[s]) for s in range(k)]
            for s in range(k):
                batch.token[s], batch.pos[s], batch.n_seq_id[s], batch.logits[s] = drawn[s], n_prompt + step, 1, True
                batch.seq_id[s][0] = s
                rows[s] = s
            batch.n_tokens = k
            L.llama_decode(ctx, batch)
        return k * n_new / (time.perf_counter() - started)
    finally:
        for chain in samplers:
            L.llama_sampler_free(chain)
        L.llama_batch_free(batch)
        L.llama_free(ctx)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--ks", default="16")
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    from hearth.runtime.hardware import local_cpu_weight_repacking

    silent = L.llama_log_callback(lambda level, text, data: None)  # C keeps the pointer: keep the object
    L.llama_log_set(silent, None)
    L.llama_backend_init()
    params = L.llama_model_default_params()
    params.use_extra_bufts = local_cpu_weight_repacking()
    model = L.llama_model_load_from_file(args.model.encode(), params)
    if not model:
        raise SystemExit(f"cannot load {args.model}")
    try:
        rows = [{"k": k, "aggregate_tok_s": round(aggregate_tok_s(model, k, args.tokens, args.threads), 1)}
                for k in (int(x) for x in args.ks.split(","))]
    finally:
        L.llama_model_free(model)
    print(json.dumps(rows) if args.json else "\n".join(f"K={r['k']:3d} {r['aggregate_tok_s']:7.1f} tok/s" for r in rows))


if __name__ == "__main__":
    main()
