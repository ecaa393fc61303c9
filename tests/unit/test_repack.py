"""Which weights go to llama.cpp's CPU_REPACK buffer when AMX is skipped (runtime/repack.py)."""

from __future__ import annotations

import re

from hearth.runtime.gguf_file import TensorInfo
from hearth.runtime.repack import (GGML_TYPE_Q2_K, GGML_TYPE_Q4_0, GGML_TYPE_Q4_K, build_features, override_patterns,
                                   repackable_types, repacked_tensors)

Q4_1, Q6_K, F32 = 3, 14, 0
AVX2_BUILD = "CPU : SSE3 = 1 | AVX = 1 | AVX2 = 1 | F16C = 1 | FMA = 1 | LLAMAFILE = 1 | OPENMP = 1 | REPACK = 1 | "


def tensor(name: str, ggml_type: int, *shape: int) -> TensorInfo:
    return TensorInfo(name, tuple(shape), ggml_type, 0, 0)


def test_build_features_read_the_system_info_line():
    assert {"AVX2", "REPACK", "FMA"} <= build_features(AVX2_BUILD)
    assert "AVX512" not in build_features(AVX2_BUILD)
    assert "AMX_INT8" not in build_features("CPU : AVX2 = 1 | AMX_INT8 = 0 | ")


def test_repackable_types_follow_the_build():
    assert repackable_types(build_features(AVX2_BUILD)) >= {GGML_TYPE_Q4_0, GGML_TYPE_Q4_K}
    assert GGML_TYPE_Q2_K not in repackable_types({"AVX2", "REPACK"})
    assert GGML_TYPE_Q2_K in repackable_types({"AVX2", "AVX512", "REPACK"})
    assert repackable_types({"AVX2"}) == frozenset()  # built without GGML_USE_CPU_REPACK
    assert repackable_types({"REPACK", "AVX"}) == frozenset()  # no AVX2 kernels


def test_only_matrix_weights_that_llama_cpp_would_repack_are_named():
    tensors = [
        tensor("token_embd.weight", GGML_TYPE_Q4_K, 1536, 151936),  # looked up by row: never
        tensor("blk.0.attn_q.weight", GGML_TYPE_Q4_K, 1536, 1536),
        tensor("blk.0.attn_k.weight", GGML_TYPE_Q4_K, 1536, 256),
        tensor("blk.0.attn_norm.weight", F32, 1536),
        tensor("blk.0.attn_v.weight", Q6_K, 1536, 256),  # no x86 repacked kernel
        tensor("blk.0.ffn_down.weight", GGML_TYPE_Q4_K, 8960, 1536),
        tensor("blk.1.ffn_down.weight", Q6_K, 8960, 1536),
        tensor("blk.1.ffn_up.weight", GGML_TYPE_Q4_K, 1536, 8964),  # rows not a multiple of 8
        tensor("blk.1.ffn_gate.weight", Q4_1, 1536, 8960),  # Q4_1: not repacked
        tensor("blk.2.ffn_up_exps.weight", GGML_TYPE_Q4_K, 1536, 512, 8),  # 3-D experts: left alone
        tensor("blk.2.attn_output.weight", GGML_TYPE_Q4_0, 1536, 1536),
        tensor("output.weight", GGML_TYPE_Q4_K, 1536, 151936),
        tensor("blk.2.ssm_in.weight", GGML_TYPE_Q4_K, 1536, 1536),  # an op we do not know: left alone
    ]
    names = repacked_tensors(tensors, build_features(AVX2_BUILD))
    assert names == ["blk.0.attn_q.weight", "blk.0.attn_k.weight", "blk.0.ffn_down.weight",
                     "blk.2.attn_output.weight", "output.weight"]
    assert repacked_tensors(tensors, {"AVX2"}) == []


def test_override_patterns_match_exactly_the_named_tensors():
    every = [f"blk.{layer}.{role}.weight" for layer in range(28)
             for role in ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")]
    every += ["output.weight", "token_embd.weight", "blk.1.attn_norm.weight", "blk.12.ffn_down.weight.extra"]
    named = [n for n in every if n.startswith("blk.1.") or n.startswith("blk.12.ffn") or n == "output.weight"]
    named = [n for n in named if n.endswith(".weight") and "norm" not in n]
    patterns = override_patterns(named)
    assert len(patterns) <= 8  # one per role, not one per tensor
    matched = [n for n in every if any(re.search(p, n) for p in patterns)]  # llama.cpp uses regex_search
    assert matched == named
    assert override_patterns([]) == []
