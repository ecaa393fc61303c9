"""Repacked CPU weights without llama.cpp's AMX kernels.

llama.cpp's CPU backend has two "extra" weight buffers: AMX tiles, and CPU_REPACK, which stores
Q4_0 / Q4_K / IQ4_NL / MXFP4 matrices 8 rows interleaved for its AVX2 gemv/gemm kernels (faster
than the plain dot products on such weights). `use_extra_bufts` turns both on or off together,
and AMX comes first; on CPUs with AMX its kernel crashed in this project's VMs
(`hardware.cpu_weight_buffers`). Tensor buffer-type overrides name the tensors that go to
CPU_REPACK, so there the repacked kernels run and AMX is never used. This module picks the
tensors; `engine.py` (the llama.cpp binding) hands them to llama.cpp.

Only tensors llama.cpp itself would repack are named: 2-D matrix weights of the attention and
feed-forward blocks (and the output head), of a type CPU_REPACK takes on this build, with a row
count divisible by 8 (the same test as ggml's `ggml_repack_get_optimal_repack_type` on x86). A
tensor named here that CPU_REPACK could not hold would abort llama.cpp, so the list errs short.
"""

from __future__ import annotations

import re
from typing import Iterable

# ggml type ids CPU_REPACK takes on x86 with AVX2 (Q2_K needs AVX-512)
GGML_TYPE_Q4_0, GGML_TYPE_Q2_K, GGML_TYPE_Q4_K, GGML_TYPE_IQ4_NL, GGML_TYPE_MXFP4 = 2, 10, 12, 20, 39
_AVX2_TYPES = frozenset({GGML_TYPE_Q4_0, GGML_TYPE_Q4_K, GGML_TYPE_IQ4_NL, GGML_TYPE_MXFP4})
_INTERLEAVED_ROWS = 8

# Matrix weights used only by a matrix product (never looked up by row, as token_embd is)
_MATRIX_WEIGHT = re.compile(r"^blk\.(\d+)\.(attn_(?:q|k|v|qkv|output)|ffn_(?:gate|up|down))\.weight$")
_OUTPUT_HEAD = "output.weight"


def build_features(system_info: str) -> frozenset[str]:
    """The CPU features a llama.cpp build was compiled with, from its system-info line
    (`AVX2 = 1 | ... | REPACK = 1`)."""
    return frozenset(name for name, value in re.findall(r"([A-Z0-9_]+) = (\d+)", system_info) if value != "0")


def repackable_types(features: Iterable[str]) -> frozenset[int]:
    features = frozenset(features)
    if "REPACK" not in features or "AVX2" not in features:
        return frozenset()
    return _AVX2_TYPES | ({GGML_TYPE_Q2_K} if "AVX512" in features else frozenset())


def repacked_tensors(tensors, features: Iterable[str]) -> list[str]:
    """Names of the tensors (`gguf_file.TensorInfo`s) CPU_REPACK would take on this build."""
    types = repackable_types(features)
    names = []
    for tensor in tensors:
        if tensor.ggml_type not in types or len(tensor.shape) != 2 or tensor.shape[1] % _INTERLEAVED_ROWS:
            continue
        if tensor.name == _OUTPUT_HEAD or _MATRIX_WEIGHT.match(tensor.name):
            names.append(tensor.name)
    return names


def override_patterns(names: Iterable[str]) -> list[str]:
    """Anchored regular expressions matching exactly `names`, one per weight role
    (`^blk\\.(0|3|7)\\.ffn_down\\.weight$`), so llama.cpp compiles a handful, not hundreds."""
    layers_by_role: dict[str, list[str]] = {}
    patterns = []
    for name in names:
        match = _MATRIX_WEIGHT.match(name)
        if match is None:
            patterns.append("^" + re.escape(name) + "$")
            continue
        layers_by_role.setdefault(match.group(2), []).append(match.group(1))
    for role, layers in layers_by_role.items():
        patterns.append(rf"^blk\.({'|'.join(layers)})\.{role}\.weight$")
    return patterns
