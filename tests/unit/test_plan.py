"""Fit planning: memory arithmetic against hand-computed numbers for the real GGUFs, and the
decisions (context, threads, GPU layers, refusals) on hand-made machines.

The expected KV cache sizes were checked once against llama.cpp's own log (llama-cpp-python
0.3.36, `Llama(model_path, n_ctx=N, verbose=True)`: the "llama_kv_cache: size = ..." lines);
those figures are quoted next to each case.
"""

from __future__ import annotations

import dataclasses

import pytest

from hearth.errors import ContextOverflowError, DoesNotFitError
from hearth.runtime.gguf_file import read_gguf
from hearth.runtime.hardware import GpuInfo, HardwareInfo
from hearth.runtime.plan import (GPU_RESERVE_BYTES, compute_buffer_bytes, fit_plan, format_gib,
                                 kv_cache_bytes, model_shape)

MIB = 1024**2
GIB = 1024**3

# --- SmolLM2-135M-Instruct Q4_1, by hand ---------------------------------------------------------
# llama: 30 blocks, n_embd 576, 9 heads (head dim 576 / 9 = 64), 3 KV heads, n_ff 1536,
# vocab 49152, trained context 8192, tied embeddings (no output.weight).
# One block: Q4_1 stores 32 weights in 20 bytes, F32 norms 4 bytes per weight.
SMOL_BLOCK = (
    2 * 576 * 4  # attn_norm, ffn_norm (F32)
    + 3 * (576 * 1536 // 32 * 20)  # ffn_gate, ffn_up, ffn_down (Q4_1): 552,960 each
    + 2 * (576 * 576 // 32 * 20)  # attn_q, attn_output (Q4_1): 207,360 each
    + 2 * (576 * 192 // 32 * 20)  # attn_k, attn_v: 3 KV heads x 64 = 192 wide (Q4_1): 69,120 each
)  # = 2,216,448
SMOL_TOKEN_EMBD = 576 * 49152 // 32 * 34  # Q8_0: 32 weights in 34 bytes = 30,081,024
SMOL_OUTPUT_NORM = 576 * 4
SMOL_WEIGHTS = 30 * SMOL_BLOCK + SMOL_TOKEN_EMBD + SMOL_OUTPUT_NORM  # 96,576,768 (llama.cpp: 92.10 MiB)
# KV per cell: 30 layers x 3 KV heads x (64 + 64) x 2 bytes (f16) = 23,040 bytes
SMOL_KV_PER_CELL = 30 * 3 * (64 + 64) * 2
# compute at micro-batch 512: the logits (49152 x 512 f32) outweigh the attention scores
# ((9 heads + mask) x 4096 x 512 f32) at ctx 4096; + 3 x 512 x 1536 f32 activations + output row.
SMOL_COMPUTE_4096 = 49152 * 512 * 4 + 3 * 512 * 1536 * 4 + 49152 * 4  # 110,297,088

# --- Gemma 3 270M (base) Q4_K_M, by hand ----------------------------------------------------------
# gemma3: 18 blocks, n_embd 640, 4 heads, 1 KV head, key/value length 256 (not 640 / 4),
# n_ff 2048, vocab 262144, sliding window 512 on 5 of every 6 layers (layers 5, 11, 17 global).
GEMMA_KV_PER_CELL = 18 * 1 * (256 + 256) * 2  # 18,432 bytes, every layer full-size (swa_full)
GEMMA_GLOBAL_KV_PER_CELL = 3 * 1 * (256 + 256) * 2
GEMMA_SWA_KV_PER_CELL = 15 * 1 * (256 + 256) * 2


@pytest.fixture(scope="module")
def smol(default_model_path):
    return read_gguf(default_model_path)


@pytest.fixture(scope="module")
def gemma(gemma_model_path):
    return read_gguf(gemma_model_path)


def machine(ram_gib: float = 16, physical: int = 4, logical: int = 8, gpus=(), offload: bool = False,
            ram_bytes: int | None = None) -> HardwareInfo:
    ram = ram_bytes if ram_bytes is not None else int(ram_gib * GIB)
    return HardwareInfo("Test CPU", physical, logical, ["AVX2"], ram, ram, list(gpus),
                        {"gpu_offload": offload, "system_info": ""})


# --- the model's shape ---------------------------------------------------------------------------


def test_model_shape_smollm2(smol):
    shape = model_shape(smol)
    assert (shape.architecture, shape.n_layer, shape.n_head, shape.n_embd, shape.n_ff) == ("llama", 30, 9, 576, 1536)
    assert shape.n_head_kv == (3,) * 30
    assert (shape.head_dim_k, shape.head_dim_v) == (64, 64)  # embedding_length / head_count
    assert (shape.n_vocab, shape.n_ctx_train, shape.sliding_window) == (49152, 8192, None)
    assert shape.swa_layers == (False,) * 30
    assert shape.layer_weight_bytes == (SMOL_BLOCK,) * 30
    assert shape.output_weight_bytes == SMOL_OUTPUT_NORM
    assert shape.other_weight_bytes == SMOL_TOKEN_EMBD
    assert shape.tied_output_bytes == SMOL_TOKEN_EMBD  # no output.weight: token_embd doubles as it
    assert shape.weights_bytes == SMOL_WEIGHTS == smol.weights_bytes == 96_576_768


def test_model_shape_gemma3(gemma):
    shape = model_shape(gemma)
    assert (shape.architecture, shape.n_layer, shape.n_head, shape.n_embd) == ("gemma3", 18, 4, 640)
    assert shape.n_head_kv == (1,) * 18
    assert (shape.head_dim_k, shape.head_dim_v) == (256, 256)  # key_length/value_length win
    assert (shape.n_vocab, shape.n_ctx_train, shape.sliding_window) == (262144, 32768, 512)
    assert [i for i, swa in enumerate(shape.swa_layers) if not swa] == [5, 11, 17]
    # block 0 of the Q4_K_M mix: Q5_0 = 22 bytes / 32, Q8_0 = 34 / 32, Q4_K = 144 / 256, Q6_K = 210 / 256
    block0 = (
        640 * 256 // 32 * 22  # attn_k Q5_0
        + 640 * 1024 // 32 * 22  # attn_q Q5_0
        + 640 * 256 // 32 * 34  # attn_v Q8_0
        + 1024 * 640 // 256 * 144  # attn_output Q4_K
        + 2 * (640 * 2048 // 32 * 22)  # ffn_gate, ffn_up Q5_0
        + 2048 * 640 // 256 * 210  # ffn_down Q6_K
        + 2 * 256 * 4  # attn_q_norm, attn_k_norm F32
        + 4 * 640 * 4  # attn_norm, ffn_norm, post_attention_norm, post_ffw_norm F32
    )
    assert shape.layer_weight_bytes[0] == block0 == 3_995_648
    assert shape.other_weight_bytes == 640 * 262144 // 32 * 34  # token_embd Q8_0
    assert shape.weights_bytes == gemma.weights_bytes


# --- KV cache ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "which, n_ctx, n_seq, options, expected",
    [
        # llama.cpp: "size = 90.00 MiB (4096 cells, 30 layers, 1/1 seqs)"
        ("smol", 4096, 1, {}, 4096 * SMOL_KV_PER_CELL),
        # llama.cpp: "size = 11.25 MiB (512 cells, ...)"
        ("smol", 512, 1, {}, 512 * SMOL_KV_PER_CELL),
        # llama.cpp: "size = 180.00 MiB (8192 cells, ...)"
        ("smol", 8192, 1, {}, 8192 * SMOL_KV_PER_CELL),
        # two sequences share the 4096 cells (90.00 MiB, "2/1 seqs" unified, "2/2" per stream)
        ("smol", 4096, 2, {}, 4096 * SMOL_KV_PER_CELL),
        # window layers are full-size by default (llama.cpp: 12.00 MiB global + 60.00 MiB SWA)
        ("gemma", 4096, 1, {}, 4096 * GEMMA_KV_PER_CELL),
        # llama.cpp at 32768: 96.00 + 480.00 MiB
        ("gemma", 32768, 1, {}, 32768 * GEMMA_KV_PER_CELL),
        # swa_full=False: window layers keep pad256(512 + 512) = 1024 cells (12.00 + 15.00 MiB)
        ("gemma", 4096, 1, {"swa_full": False}, 4096 * GEMMA_GLOBAL_KV_PER_CELL + 1024 * GEMMA_SWA_KV_PER_CELL),
        # unified, 2 sequences: pad256(512 x 2 + 512) = 1536 cells (12.00 + 22.50 MiB)
        ("gemma", 4096, 2, {"swa_full": False}, 4096 * GEMMA_GLOBAL_KV_PER_CELL + 1536 * GEMMA_SWA_KV_PER_CELL),
        # one stream per sequence: 2 x pad256(min(2048, 1024)) = 2048 cells (12.00 + 30.00 MiB)
        ("gemma", 4096, 2, {"swa_full": False, "kv_unified": False},
         4096 * GEMMA_GLOBAL_KV_PER_CELL + 2048 * GEMMA_SWA_KV_PER_CELL),
        # a context smaller than the window: the window layers keep the whole context (768 cells)
        ("gemma", 768, 1, {"swa_full": False}, 768 * GEMMA_KV_PER_CELL),
    ],
)
def test_kv_cache_bytes(request, which, n_ctx, n_seq, options, expected):
    shape = model_shape(request.getfixturevalue(which))
    assert kv_cache_bytes(shape, n_ctx, n_seq, **options) == expected


def test_kv_cache_mib_as_llama_cpp_logs_them(smol, gemma):
    assert kv_cache_bytes(model_shape(smol), 4096) / MIB == 90.0
    assert kv_cache_bytes(model_shape(gemma), 4096) / MIB == 72.0


# --- compute buffer ------------------------------------------------------------------------------


def test_compute_buffer_smollm2_by_hand(smol):
    shape = model_shape(smol)
    assert compute_buffer_bytes(shape, 4096, 512) == SMOL_COMPUTE_4096
    # at 8192 the attention scores win: (9 heads + mask) x 8192 x 512 x 4 bytes
    assert compute_buffer_bytes(shape, 8192, 512) == 10 * 8192 * 512 * 4 + 3 * 512 * 1536 * 4 + 49152 * 4


@pytest.mark.parametrize(
    "which, n_ctx, llama_cpp_mib",
    [
        # llama.cpp's "compute buffer size" + "output buffer size" (flash attention off)
        ("smol", 512, 98.25 + 0.19),
        ("smol", 4096, 99.38 + 0.19),
        ("smol", 8192, 166.38 + 0.19),
        ("gemma", 512, 515.75 + 1.00),
        ("gemma", 4096, 514.50 + 1.00),
        ("gemma", 32768, 514.50 + 1.00),
    ],
)
def test_compute_estimate_is_a_close_upper_bound(request, which, n_ctx, llama_cpp_mib):
    shape = model_shape(request.getfixturevalue(which))
    estimate_mib = compute_buffer_bytes(shape, n_ctx, 512) / MIB
    assert llama_cpp_mib <= estimate_mib <= llama_cpp_mib * 1.08


# --- the plan on a CPU-only machine --------------------------------------------------------------


def test_default_plan_smollm2(smol):
    plan = fit_plan(smol, machine(physical=4, logical=8))
    assert (plan.n_ctx, plan.n_ctx_per_seq, plan.n_seq) == (4096, 4096, 1)
    assert (plan.n_threads, plan.n_threads_batch, plan.n_gpu_layers) == (4, 4, 0)
    assert (plan.n_batch, plan.n_ubatch) == (512, 512)
    assert plan.weights_bytes == SMOL_WEIGHTS
    assert plan.kv_cache_bytes == 4096 * SMOL_KV_PER_CELL == 94_371_840
    assert plan.compute_bytes == SMOL_COMPUTE_4096
    assert plan.total_bytes == plan.host_bytes == SMOL_WEIGHTS + 94_371_840 + SMOL_COMPUTE_4096
    assert plan.available_bytes == 16 * GIB
    assert plan.reasons[:3] == [
        "threads 4: one per physical core (4 physical, 8 logical)",
        "context 4096: default, trained 8192",
        "GPU layers 0: this llama.cpp build has no GPU offload",
    ]
    assert plan.warnings == []
    assert plan.to_dict()["gpu"]["layers"] == 0


def test_default_context_is_capped_at_4096(gemma):
    plan = fit_plan(gemma, machine())
    assert plan.n_ctx == 4096
    assert plan.reasons[1] == "context 4096: default, trained 32768"


def test_default_context_is_the_trained_one_when_smaller(smol):
    # the same model, claiming a trained context of 2048
    short = dataclasses.replace(smol, metadata={**smol.metadata, "llama.context_length": 2048})
    plan = fit_plan(short, machine())
    assert plan.n_ctx == 2048
    assert plan.reasons[1] == "context 2048: default, trained 2048"


def test_tight_memory_shrinks_the_default_context(smol):
    # 250 MiB: 4096 needs 287.3 MiB; 2048 needs weights + 2048 cells + compute = 242.3 MiB
    plan = fit_plan(smol, machine(ram_bytes=250 * MIB))
    assert plan.n_ctx == 2048
    assert plan.host_bytes == SMOL_WEIGHTS + 2048 * SMOL_KV_PER_CELL + SMOL_COMPUTE_4096
    assert "context 2048: the default 4096 does not fit in memory" in plan.reasons


def test_tiny_memory_refuses_with_the_shortfall(smol):
    # Even the smallest context (512) needs weights + 512 KV cells + compute
    needs = SMOL_WEIGHTS + 512 * SMOL_KV_PER_CELL + SMOL_COMPUTE_4096  # 218,670,336 bytes
    with pytest.raises(DoesNotFitError) as err:
        fit_plan(smol, machine(ram_bytes=150 * MIB))
    assert err.value.message == (
        "the model does not fit in RAM at context 512: "
        "needs 0.20 GiB, 0.15 GiB available: 0.06 GiB short"
    )
    assert format_gib(needs) == "0.20 GiB" and format_gib(needs - 150 * MIB) == "0.06 GiB"
    assert err.value.exit_code == 1 and err.value.hint


def test_long_context_that_does_not_fit_names_the_gib(gemma):
    # --ctx 131072 on 2 GiB: KV 18 x 512 x 131072 x 2 = 2.25 GiB; the attention scores of the
    # global layers ((4 heads + mask) x 131072 x 512 f32 = 1.25 GiB) outweigh the logits.
    kv = 131072 * GEMMA_KV_PER_CELL
    compute = 5 * 131072 * 512 * 4 + 3 * 512 * 2048 * 4 + 262144 * 4
    needs = gemma.weights_bytes + kv + compute  # 4,018,315,776 bytes = 3.74 GiB
    with pytest.raises(DoesNotFitError) as err:
        fit_plan(gemma, machine(ram_gib=2), ctx=131072)
    assert needs == 4_018_315_776
    assert err.value.message == (
        "the model does not fit in RAM at context 131072: needs 3.7 GiB, 2.0 GiB available: 1.7 GiB short"
    )
    assert "--ctx" in err.value.hint


# --- context ----------------------------------------------------------------------------------------


def test_ctx_too_small_for_prompt_and_max_tokens_says_how_many_over(smol):
    with pytest.raises(ContextOverflowError) as err:
        fit_plan(smol, machine(), ctx=1024, prompt_tokens=1000, max_tokens=124)
    assert err.value.message == (
        "prompt (1000 tokens) + max tokens (124) = 1124 tokens is 100 tokens over the context of 1024"
    )
    assert err.value.hint == "use --ctx 1280 or fewer --max-tokens"


def test_default_context_is_raised_to_fit_prompt_and_max_tokens(smol):
    plan = fit_plan(smol, machine(), prompt_tokens=5000, max_tokens=1000)
    assert plan.n_ctx == 6144  # 6000 rounded up to a multiple of 256
    assert plan.reasons[1] == ("context 6144: raised from the default 4096 to fit the "
                               "prompt (5000 tokens) + max tokens (1000) = 6000 tokens")
    assert plan.warnings == []


def test_raised_past_the_trained_context_warns(smol):
    plan = fit_plan(smol, machine(), prompt_tokens=9000, max_tokens=100)
    assert plan.n_ctx == 9216
    assert plan.warnings == ["context 9216 is above the model's trained context of 8192: "
                             "answers past that length may degrade"]


def test_explicit_ctx_above_trained_is_allowed_with_a_warning(smol):
    plan = fit_plan(smol, machine(), ctx=10000)
    assert plan.n_ctx == 10240
    assert plan.kv_cache_bytes == 10240 * SMOL_KV_PER_CELL
    assert plan.reasons[1] == "context 10240: set by --ctx, rounded up from 10000 as llama.cpp does (trained 8192)"
    assert len(plan.warnings) == 1 and "trained context of 8192" in plan.warnings[0]


def test_several_sequences_get_a_context_each(smol):
    plan = fit_plan(smol, machine(), n_seq=4, max_tokens=100)
    assert (plan.n_ctx, plan.n_ctx_per_seq, plan.n_seq) == (16384, 4096, 4)
    assert plan.kv_cache_bytes == 16384 * SMOL_KV_PER_CELL
    assert "context 16384 in all: 4096 for each of 4 sequences" in plan.reasons


def test_swa_full_false_shrinks_the_window_layers(gemma):
    full = fit_plan(gemma, machine())
    windowed = fit_plan(gemma, machine(), swa_full=False)
    assert full.kv_cache_bytes == 4096 * GEMMA_KV_PER_CELL  # 72 MiB
    assert windowed.kv_cache_bytes == 4096 * GEMMA_GLOBAL_KV_PER_CELL + 1024 * GEMMA_SWA_KV_PER_CELL  # 27 MiB


# --- threads -----------------------------------------------------------------------------------------


def test_user_threads_win_and_the_reason_says_so(smol):
    plan = fit_plan(smol, machine(physical=4, logical=8), threads=6)
    assert (plan.n_threads, plan.n_threads_batch) == (6, 6)
    assert plan.reasons[0] == "threads 6: set by --threads (4 physical, 8 logical cores)"
    assert plan.warnings == []


def test_more_threads_than_logical_cores_warns(smol):
    plan = fit_plan(smol, machine(physical=2, logical=2), threads=8)
    assert plan.n_threads == 8
    assert plan.warnings == ["--threads 8 is more than the 2 logical cores: threads will wait on each other"]


def test_threads_never_exceed_logical_cores(smol):
    assert fit_plan(smol, machine(physical=4, logical=2)).n_threads == 2


# --- GPU -------------------------------------------------------------------------------------------

RTX = "NVIDIA GeForce RTX 4090"


def nvidia(free_bytes: int, total_bytes: int = 24 * GIB) -> GpuInfo:
    return GpuInfo(RTX, "nvidia", total_bytes, free_bytes, "cuda")


def test_gpu_with_room_takes_every_layer(smol):
    plan = fit_plan(smol, machine(gpus=[nvidia(20 * GIB)], offload=True))
    assert plan.n_gpu_layers == 31  # 30 blocks + the output layer
    # on the GPU: all blocks, the output norm, the tied output matrix (a copy of token_embd),
    # the KV cache and a compute buffer
    assert plan.gpu.gpu_bytes == (30 * SMOL_BLOCK + SMOL_OUTPUT_NORM + SMOL_TOKEN_EMBD
                                  + 4096 * SMOL_KV_PER_CELL + SMOL_COMPUTE_4096)
    # in RAM: token_embd, and a small compute buffer (512 embedding rows + one row of logits)
    assert plan.host_bytes == SMOL_TOKEN_EMBD + 512 * 576 * 4 + 49152 * 4
    assert (plan.gpu.device, plan.gpu.backend) == (RTX, "cuda")
    assert plan.reasons[2] == f"GPU layers 31 of 31: all fit in 20.0 GiB free on {RTX}"


def test_small_gpu_takes_what_fits_from_the_last_layer(smol):
    per_layer = SMOL_BLOCK + 4096 * 3 * (64 + 64) * 2  # weights + KV of one block
    free = GPU_RESERVE_BYTES + SMOL_COMPUTE_4096 + 10 * per_layer + 1000
    plan = fit_plan(smol, machine(gpus=[nvidia(free)], offload=True))
    assert plan.n_gpu_layers == 10
    assert plan.gpu.gpu_bytes == 10 * per_layer + SMOL_COMPUTE_4096
    # the CPU keeps 20 blocks with their KV cache, token_embd, the output norm and a full compute buffer
    assert plan.host_bytes == 20 * per_layer + SMOL_TOKEN_EMBD + SMOL_OUTPUT_NORM + SMOL_COMPUTE_4096
    assert "GPU layers 10 of 31: as many as fit" in plan.reasons[2]


def test_gpu_without_room_for_one_layer(smol):
    plan = fit_plan(smol, machine(gpus=[nvidia(GPU_RESERVE_BYTES)], offload=True))
    assert plan.n_gpu_layers == 0
    assert plan.reasons[2].startswith("GPU layers 0: not one layer fits")


def test_gpu_but_cpu_only_build(smol):
    plan = fit_plan(smol, machine(gpus=[nvidia(20 * GIB)], offload=False), gpu_layers=-1)
    assert plan.n_gpu_layers == 0
    assert plan.reasons[2] == (f"GPU layers 0: --gpu-layers -1 ignored, this llama.cpp build has "
                               f"no GPU offload (found {RTX})")


def test_offload_build_without_a_gpu(smol):
    plan = fit_plan(smol, machine(offload=True))
    assert plan.n_gpu_layers == 0
    assert plan.reasons[2] == "GPU layers 0: no GPU found"


@pytest.mark.parametrize("requested, expected", [(-1, 31), (5, 5), (99, 31), (0, 0)])
def test_user_gpu_layers_win(smol, requested, expected):
    plan = fit_plan(smol, machine(gpus=[nvidia(20 * GIB)], offload=True), gpu_layers=requested)
    assert plan.n_gpu_layers == expected
    assert plan.reasons[2] == f"GPU layers {expected} of 31: set by --gpu-layers"


def test_user_gpu_layers_that_do_not_fit_the_gpu_are_refused(smol):
    with pytest.raises(DoesNotFitError) as err:
        fit_plan(smol, machine(gpus=[nvidia(600 * MIB)], offload=True), gpu_layers=-1)
    # needs every byte (301,245,696 = 0.28 GiB); 600 MiB free - 512 MiB reserve = 88 MiB room
    assert err.value.message == (f"31 GPU layers do not fit on {RTX}: needs 0.28 GiB, "
                                 "0.09 GiB available: 0.19 GiB short")


def test_apple_gpu_shares_memory_so_all_layers_go_and_ram_holds_everything(smol):
    apple = GpuInfo("Apple M2 GPU", "apple", 16 * GIB, 10 * GIB, "metal", unified_memory=True)
    plan = fit_plan(smol, machine(gpus=[apple], offload=True))
    assert plan.n_gpu_layers == 31
    assert plan.host_bytes == plan.total_bytes
    assert plan.gpu.unified_memory
    assert plan.reasons[2] == "GPU layers 31 of 31: all, the Apple M2 GPU shares system memory"


# --- how many sequences `hearth batch` runs at once -----------------------------------------------


def test_batch_parallel_is_16_on_a_cpu_and_64_with_every_layer_on_a_gpu(smol):
    from hearth.runtime.jsonl_batch import decide_parallel

    assert decide_parallel(smol, machine(), per_seq=768)[0] == 16
    n, reason = decide_parallel(smol, machine(gpus=[nvidia(20 * GIB)], offload=True), per_seq=768)
    assert n == 64 and "GPU" in reason
    # one KV stream per sequence, plus the prefix holder: 65 x 768 cells in the plan
    plan = fit_plan(smol, machine(gpus=[nvidia(20 * GIB)], offload=True), ctx=768, n_seq=65, kv_unified=False)
    assert plan.kv_unified is False and plan.n_ctx == 65 * 768
    assert plan.kv_cache_bytes == 65 * 768 * SMOL_KV_PER_CELL


def test_batch_parallel_follows_the_measured_cost_curve(smol):
    from hearth.runtime.costs import CostCurve
    from hearth.runtime.jsonl_batch import decide_parallel

    # the AVX2 box, Qwen 1.5B: aggregate 8.5, 9.4, 11.6, 12.3, 8.7 tok/s at 1, 2, 3, 4, 8 sequences
    avx2 = CostCurve((1, 2, 3, 4, 8), tuple(k * 8.5 / agg for k, agg in ((1, 8.5), (2, 9.4), (3, 11.6), (4, 12.3),
                                                                            (8, 8.7))))
    n, reason = decide_parallel(smol, machine(), per_seq=768, curve=avx2)
    assert n == 4 and "cost curve peaks at 4 rows" in reason
    # still rising at the widest width measured: the device's default
    rising = CostCurve((1, 2, 4, 8, 16), (1.0, 1.1, 1.3, 1.8, 2.9))
    assert decide_parallel(smol, machine(), per_seq=768, curve=rising)[0] == 16
    assert decide_parallel(smol, machine(gpus=[nvidia(20 * GIB)], offload=True), per_seq=768, curve=rising)[0] == 64
    # memory still limits it
    assert decide_parallel(smol, machine(ram_gib=1.5), per_seq=8192, curve=avx2)[0] <= 4


def test_batch_parallel_shrinks_to_what_fits(smol):
    from hearth.runtime.jsonl_batch import decide_parallel

    # 17 streams x 8,192 cells x 23,040 bytes = 3.0 GiB of KV cache: not in 1.5 GiB of RAM
    n, reason = decide_parallel(smol, machine(ram_gib=1.5), per_seq=8192)
    assert 1 <= n < 16 and "do not fit" in reason
    assert fit_plan(smol, machine(ram_gib=1.5), ctx=8192, n_seq=n + 1, kv_unified=False).n_seq == n + 1
    with pytest.raises(DoesNotFitError):
        fit_plan(smol, machine(ram_gib=1.5), ctx=8192, n_seq=2 * n + 1, kv_unified=False)
    # the GPU holds every layer for one sequence but not for 64 long ones: fewer sequences, all layers there
    gpu = machine(gpus=[nvidia(2 * GIB)], offload=True)
    n, _ = decide_parallel(smol, gpu, per_seq=8192)
    assert 1 <= n < 64
    plan = fit_plan(smol, gpu, ctx=8192, n_seq=n + 1, kv_unified=False)
    assert plan.n_gpu_layers == plan.gpu.total_layers
