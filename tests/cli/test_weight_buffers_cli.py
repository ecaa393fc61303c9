"""CPU weight buffers: repacked rows without AMX (HEARTH_CPU_REPACK=repack, the default on AMX CPUs)."""

from __future__ import annotations

import json

import pytest

from hearth.runtime.engine import backend_info
from hearth.runtime.repack import build_features, repackable_types

PROMPT = "The capital of France is"


def needs_repack_build():
    if not repackable_types(build_features(backend_info()["system_info"])):
        pytest.skip("this llama.cpp build has no x86 repacked kernels (needs AVX2 and CPU_REPACK)")


def test_repack_mode_sends_q4_k_weights_to_cpu_repack_and_answers(hearth, gemma_model_path):
    needs_repack_build()
    done = hearth("run", PROMPT, "-m", str(gemma_model_path), "-n", "8", "--temp", "0", "--json", "-vv",
                  env={"HEARTH_CPU_REPACK": "repack"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert "CPU_REPACK model buffer size" in done.stderr  # llama.cpp put weights there
    assert "overridden to CPU_REPACK" in done.stderr and "token_embd.weight" not in \
        [line.split()[1] for line in done.stderr.splitlines() if "overridden to CPU_REPACK" in line]
    assert "plan: CPU weights: repacked rows without AMX (HEARTH_CPU_REPACK=repack)" in done.stderr
    answer = json.loads(done.stdout)
    assert answer["usage"]["completion_tokens"] == 8 and answer["text"].strip()


def test_plain_kernels_and_a_model_with_nothing_to_repack(hearth, gemma_model_path, default_model_path):
    needs_repack_build()
    plain = hearth("run", PROMPT, "-m", str(gemma_model_path), "-n", "4", "--temp", "0", "-vv",
                   env={"HEARTH_CPU_REPACK": "0"})
    assert plain.returncode == 0, plain.stderr[-2000:]
    assert "CPU_REPACK model buffer" not in plain.stderr and "overridden to CPU_REPACK" not in plain.stderr
    # SmolLM2 Q4_1: no weight of a type CPU_REPACK takes on x86, so no overrides at all
    smol = hearth("run", PROMPT, "-n", "4", "--temp", "0", "-vv", env={"HEARTH_CPU_REPACK": "repack"})
    assert smol.returncode == 0, smol.stderr[-2000:]
    assert "CPU_REPACK model buffer" not in smol.stderr and "overridden to CPU_REPACK" not in smol.stderr


def test_scoring_keeps_plain_kernels_unless_repack_is_asked_for(gemma_model_path, monkeypatch):
    """Prompt evaluation is slower on repacked rows: a prompt-only load (scoring) skips the
    default repack, but not one asked for with HEARTH_CPU_REPACK=repack."""
    needs_repack_build()
    import llama_cpp

    from hearth.runtime import hardware
    from hearth.runtime.engine import apply_weight_buffers

    monkeypatch.delenv("HEARTH_CPU_REPACK", raising=False)
    monkeypatch.setattr(hardware, "_local_simd", lambda: ("AVX2", "AVX512", "AMX_INT8"))  # as on an AMX CPU
    params = llama_cpp.llama_model_default_params()
    generating = apply_weight_buffers(params, gemma_model_path)
    assert generating is not None and params.use_extra_bufts is False
    assert any("attn_output" in p for p in generating.patterns)
    params = llama_cpp.llama_model_default_params()
    assert apply_weight_buffers(params, gemma_model_path, prompt_only=True) is None
    assert not params.tensor_buft_overrides and params.use_extra_bufts is False
    monkeypatch.setenv("HEARTH_CPU_REPACK", "repack")
    assert apply_weight_buffers(llama_cpp.llama_model_default_params(), gemma_model_path, prompt_only=True) is not None
    monkeypatch.delenv("HEARTH_CPU_REPACK")
    monkeypatch.setattr(hardware, "_local_simd", lambda: ("AVX2", "FMA"))  # no AMX: llama.cpp's own choice
    params = llama_cpp.llama_model_default_params()
    assert apply_weight_buffers(params, gemma_model_path) is None and params.use_extra_bufts is True
