#!/usr/bin/env python3
"""llama.cpp's own decode loop, K sequences x 1 token per llama_decode: the reference hearth's
decode is measured against. A small equivalent of ../shared/tools/llama_batched_ceiling.py that
loads the model's weights as hearth does (`engine.apply_weight_buffers`: that tool loads it with
llama.cpp's defaults, whose AMX kernels segfault on this project's Xeon VMs; hearth uses repacked
rows without AMX there), greedy instead of sampled, and no hearth in the decode loop.

usage: python scripts/llama_ceiling.py MODEL.gguf [--ks 1,2,4,8] [--tokens 64] [--threads 2] [--json]
"""

from __future__ import annotations

import argparse
import json
import time

import llama_cpp as L

PROMPT = b"Once upon a time, in a small village by the sea, there lived"


def ceiling(model_path: str, ks: list[int], n_new: int, threads: int) -> list[dict]:
    """Aggregate decode tok/s for each K: the prompt decoded once, tagged with every sequence."""
    L.llama_backend_init()
    from hearth.runtime.engine import apply_weight_buffers

    params = L.llama_model_default_params()
    kept = apply_weight_buffers(params, model_path)  # the same weight buffers as hearth's loads
    model = L.llama_model_load_from_file(model_path.encode(), params)
    del kept  # llama.cpp has read the overrides
    if not model:
        raise SystemExit(f"cannot load {model_path}")
    vocab = L.llama_model_get_vocab(model)
    toks = (L.llama_token * 256)()
    n_prompt = L.llama_tokenize(vocab, PROMPT, len(PROMPT), toks, 256, True, False)
    rows = []
    for k in ks:
        cp = L.llama_context_default_params()
        cp.n_ctx, cp.n_batch, cp.n_seq_max = n_prompt + n_new * k + 64, 512, k
        cp.n_threads = cp.n_threads_batch = threads
        cp.kv_unified = True
        ctx = L.llama_init_from_model(model, cp)
        batch = L.llama_batch_init(max(n_prompt, k), 0, k)
        batch.n_tokens = n_prompt
        for i in range(n_prompt):
            batch.token[i], batch.pos[i], batch.n_seq_id[i] = toks[i], i, k
            for s in range(k):
                batch.seq_id[i][s] = s
            batch.logits[i] = int(i == n_prompt - 1)
        L.llama_decode(ctx, batch)
        greedy = L.llama_sampler_chain_init(L.llama_sampler_chain_default_params())
        L.llama_sampler_chain_add(greedy, L.llama_sampler_init_greedy())
        rows_idx = [n_prompt - 1] * k
        start = time.perf_counter()
        for step in range(n_new):
            nxt = [L.llama_sampler_sample(greedy, ctx, rows_idx[s]) for s in range(k)]
            batch.n_tokens = k
            for s in range(k):
                batch.token[s], batch.pos[s], batch.n_seq_id[s] = nxt[s], n_prompt + step, 1
                batch.seq_id[s][0], batch.logits[s] = s, 1
                rows_idx[s] = s
            L.llama_decode(ctx, batch)
        elapsed = time.perf_counter() - start
        rows.append({"k": k, "decode_s": round(elapsed, 3), "aggregate_tok_s": round(k * n_new / elapsed, 2)})
        L.llama_sampler_free(greedy)
        L.llama_batch_free(batch)
        L.llama_free(ctx)
    L.llama_model_free(model)
    return rows


_quiet = None


def quiet_llama_log() -> None:
    global _quiet
    _quiet = L.llama_log_callback(lambda level, text, data: None)  # C keeps the pointer: keep the object
    L.llama_log_set(_quiet, None)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--ks", default="1,2,4,8")
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    quiet_llama_log()
    result = ceiling(a.model, [int(x) for x in a.ks.split(",")], a.tokens, a.threads)
    if a.json:
        print(json.dumps(result))
    else:
        for r in result:
            print(f"K={r['k']:3d}  {r['aggregate_tok_s']:7.1f} tok/s aggregate  ({r['aggregate_tok_s'] / result[0]['aggregate_tok_s']:.2f}x K=1)")
