"""How a model will fit this machine, decided before anything is loaded.

`fit_plan` is pure: a GGUF header (`GGUFInfo`) and a `HardwareInfo` in, a `FitPlan` out, with
every decision in words. It refuses (DoesNotFitError) when the model cannot fit, instead of
letting llama.cpp swap or crash, and raises ContextOverflowError when the prompt plus the
tokens to generate cannot fit the context.

The memory arithmetic follows what llama.cpp (as built into llama-cpp-python 0.3.36) allocates,
checked against its own log ("llama_kv_cache: size = ...", "compute buffer size = ..."):
- weights: the bytes of the GGUF tensors (memory-mapped; they must stay resident to run fast);
- KV cache: f16 K and V for every layer and context cell, per layer
  n_head_kv x (head_dim_k + head_dim_v) x cells x 2 bytes. llama.cpp rounds the context up to a
  multiple of 256. Sliding-window (SWA) layers: llama.cpp's default context parameters keep a
  full-size cache for them too (`swa_full = true`); with `swa_full = false` they keep
  pad256(min(ctx, window + n_ubatch)) cells per sequence;
- compute buffer: an upper-bound estimate, see `compute_buffer_bytes`.
"""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass, field

from ..errors import ContextOverflowError, DoesNotFitError
from ..units import format_gib, round_up
from .gguf_file import GGUFInfo, LazyArray
from .hardware import GpuInfo, HardwareInfo, cpu_weight_buffers

MIB = 1024**2
KV_BYTES_PER_ELEMENT = 2  # llama.cpp's default KV cache type is f16
CONTEXT_PADDING = 256  # llama.cpp rounds n_ctx up to this
DEFAULT_CONTEXT = 4096
MIN_AUTO_CONTEXT = 512  # the smallest context the planner shrinks to on its own
DEFAULT_BATCH = 512
# GPU memory kept free for the driver's own context, cuBLAS workspace and fragmentation.
GPU_RESERVE_BYTES = 512 * MIB

# Sliding-window layer patterns llama.cpp hard-codes per architecture: with period P, layer i is
# a window layer unless i % P == P - 1 (gemma3: five window layers, then one global layer).
SWA_PERIOD = {"gemma2": 2, "gemma3": 6, "cohere2": 4, "gpt-oss": 2}

_BLOCK_TENSOR = re.compile(r"^blk\.(\d+)\.")


@dataclass(frozen=True)
class ModelShape:
    """The numbers of a GGUF header that decide memory use."""

    architecture: str
    n_layer: int
    n_head: int
    n_head_kv: tuple[int, ...]  # per layer (some models vary it)
    head_dim_k: int
    head_dim_v: int
    n_embd: int
    n_ff: int
    n_vocab: int
    n_ctx_train: int | None
    sliding_window: int | None
    swa_layers: tuple[bool, ...]  # per layer: keeps only the sliding window
    layer_weight_bytes: tuple[int, ...]  # per block, from the blk.N.* tensors
    output_weight_bytes: int  # output.weight + output_norm.*: offloaded only with every layer
    other_weight_bytes: int  # token_embd and the rest: always on the CPU
    # With tied embeddings (no output.weight) llama.cpp loads token_embd a second time as the
    # output matrix; that copy costs GPU memory when the output layer is offloaded.
    tied_output_bytes: int = 0

    @property
    def weights_bytes(self) -> int:
        return sum(self.layer_weight_bytes) + self.output_weight_bytes + self.other_weight_bytes


@dataclass
class GpuOffload:
    device: str | None  # the GPU's name, None when nothing is offloaded to a GPU
    backend: str | None  # "cuda" | "metal"
    layers: int  # what to pass as n_gpu_layers
    total_layers: int  # n_layer + 1 (the output layer)
    gpu_bytes: int  # memory used on the GPU
    free_bytes: int | None  # the GPU's free memory
    unified_memory: bool = False


@dataclass
class FitPlan:
    n_ctx: int  # total context cells (n_ctx_per_seq x n_seq), what llama.cpp is given
    n_ctx_per_seq: int
    n_threads: int
    n_threads_batch: int
    n_gpu_layers: int
    n_batch: int
    n_ubatch: int
    n_seq: int
    weights_bytes: int
    kv_cache_bytes: int
    compute_bytes: int
    total_bytes: int  # weights + KV cache + compute, wherever they live
    host_bytes: int  # the part that must fit in RAM
    available_bytes: int  # RAM available
    gpu: GpuOffload
    n_ctx_train: int | None
    swa_full: bool
    kv_unified: bool = True  # False: one KV stream per sequence (batch)
    reasons: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


# --- the model's shape --------------------------------------------------------------------------


def _per_layer(value, n_layer: int, default: int) -> tuple[int, ...]:
    """A hyper-parameter that is either one number or one per layer."""
    if isinstance(value, (list, tuple)) and value:
        return tuple(int(v) for v in value[:n_layer]) + (int(value[-1]),) * max(0, n_layer - len(value))
    return (int(value) if value is not None else default,) * n_layer


def _swa_layers(model: GGUFInfo, n_layer: int, window: int | None) -> tuple[bool, ...]:
    if not window:
        return (False,) * n_layer
    pattern = model.arch_value("attention.sliding_window_pattern")
    if isinstance(pattern, (list, tuple)) and len(pattern) >= n_layer:
        return tuple(bool(p) for p in pattern[:n_layer])
    period = SWA_PERIOD.get(model.architecture)
    if period is None:
        # An unknown pattern: count every layer as global (an over-estimate, never an under-).
        return (False,) * n_layer
    return tuple(i % period != period - 1 for i in range(n_layer))


def _weights_by_layer(model: GGUFInfo, n_layer: int) -> tuple[tuple[int, ...], int, int, int]:
    """Weight bytes per block, of the output layer, of the rest, and of a tied output copy."""
    per_layer = [0] * n_layer
    output = other = embedding = 0
    has_output_matrix = False
    for tensor in model.tensors:
        match = _BLOCK_TENSOR.match(tensor.name)
        if match and int(match.group(1)) < n_layer:
            per_layer[int(match.group(1))] += tensor.n_bytes
        elif tensor.name.startswith("output"):
            output += tensor.n_bytes
            has_output_matrix |= tensor.name == "output.weight"
        else:
            other += tensor.n_bytes
            if tensor.name == "token_embd.weight":
                embedding = tensor.n_bytes
    return tuple(per_layer), output, other, (0 if has_output_matrix else embedding)


def _vocab_size(model: GGUFInfo) -> int:
    size = model.arch_value("vocab_size")
    if size:
        return int(size)
    for tensor in model.tensors:
        if tensor.name == "token_embd.weight" and len(tensor.shape) >= 2:
            return int(tensor.shape[1])
    tokens = model.metadata.get("tokenizer.ggml.tokens")
    if isinstance(tokens, LazyArray):
        return tokens.count
    return len(tokens or [])


def model_shape(model: GGUFInfo) -> ModelShape:
    """Read the memory-relevant hyper-parameters from a GGUF header (`{arch}.*` keys)."""
    n_layer = int(model.arch_value("block_count", 0) or 0)
    heads = _per_layer(model.arch_value("attention.head_count"), n_layer, 0)
    n_head = max(heads, default=0)
    heads_kv = _per_layer(model.arch_value("attention.head_count_kv"), n_layer, n_head)
    n_embd = int(model.arch_value("embedding_length", 0) or 0)
    default_head_dim = n_embd // n_head if n_head else 0
    window = model.arch_value("attention.sliding_window")
    layer_bytes, output_bytes, other_bytes, tied_bytes = _weights_by_layer(model, n_layer)
    trained = model.arch_value("context_length")
    return ModelShape(
        architecture=model.architecture,
        n_layer=n_layer,
        n_head=n_head,
        n_head_kv=heads_kv,
        head_dim_k=int(model.arch_value("attention.key_length", default_head_dim)),
        head_dim_v=int(model.arch_value("attention.value_length", default_head_dim)),
        n_embd=n_embd,
        n_ff=max(_per_layer(model.arch_value("feed_forward_length"), n_layer, 0), default=0),
        n_vocab=_vocab_size(model),
        n_ctx_train=int(trained) if trained else None,
        sliding_window=int(window) if window else None,
        swa_layers=_swa_layers(model, n_layer, int(window) if window else None),
        layer_weight_bytes=layer_bytes,
        output_weight_bytes=output_bytes,
        other_weight_bytes=other_bytes,
        tied_output_bytes=tied_bytes,
    )


# --- memory arithmetic --------------------------------------------------------------------------


def kv_cells_per_layer(shape: ModelShape, n_ctx: int, n_seq: int = 1, *, swa_full: bool = True,
                       kv_unified: bool = True, n_ubatch: int = DEFAULT_BATCH) -> list[int]:
    """KV cache cells each layer keeps for a context of `n_ctx` cells shared by `n_seq` sequences.

    Global layers keep all n_ctx cells. Sliding-window layers, unless `swa_full`, keep only the
    window plus one micro-batch, rounded up to 256: per sequence stream, or for all sequences
    together in one unified stream.
    """
    per_seq = n_ctx // max(1, n_seq)
    if kv_unified:
        swa_cells = round_up(min(n_ctx, (shape.sliding_window or 0) * n_seq + n_ubatch), CONTEXT_PADDING)
    else:
        swa_cells = n_seq * round_up(min(per_seq, (shape.sliding_window or 0) + n_ubatch), CONTEXT_PADDING)
    return [swa_cells if (is_swa and not swa_full) else n_ctx for is_swa in shape.swa_layers]


def kv_cache_layer_bytes(shape: ModelShape, n_ctx: int, n_seq: int = 1, **kwargs) -> list[int]:
    """f16 K and V bytes per layer: n_head_kv x (head_dim_k + head_dim_v) x cells x 2."""
    cells = kv_cells_per_layer(shape, n_ctx, n_seq, **kwargs)
    width = shape.head_dim_k + shape.head_dim_v
    return [heads * width * n * KV_BYTES_PER_ELEMENT for heads, n in zip(shape.n_head_kv, cells)]


def kv_cache_bytes(shape: ModelShape, n_ctx: int, n_seq: int = 1, **kwargs) -> int:
    return sum(kv_cache_layer_bytes(shape, n_ctx, n_seq, **kwargs))


def compute_buffer_bytes(shape: ModelShape, n_ctx_per_seq: int, n_ubatch: int, n_seq: int = 1) -> int:
    """Upper-bound estimate of llama.cpp's compute buffer plus its output buffer.

    llama.cpp reuses one arena for the whole graph, so the peak is the largest live tensor:
    the logits of a micro-batch (n_vocab x n_ubatch f32) or, without flash attention, the
    attention scores (n_head score rows + the mask, n_kv x n_ubatch f32 each). On top of that:
    3 activation tensors of the widest layer (n_ubatch x max(n_embd, n_ff, q width) f32) and the
    output logits buffer (n_vocab f32 per sequence). Against llama.cpp's log this over-estimates
    by 2-6% (SmolLM2 ctx 4096: 105.2 MiB vs 99.6; Gemma 3 270M: 525 MiB vs 515.5); with flash
    attention the real buffer is smaller still.
    """
    f32 = 4
    logits = shape.n_vocab * n_ubatch * f32
    attention = (shape.n_head + 1) * n_ctx_per_seq * n_ubatch * f32
    widest = max(shape.n_embd, shape.n_ff, shape.n_head * shape.head_dim_k)
    activations = 3 * n_ubatch * widest * f32
    output = shape.n_vocab * f32 * n_seq
    return max(logits, attention) + activations + output


# --- decisions ----------------------------------------------------------------------------------


def decide_threads(hw: HardwareInfo, threads: int | None) -> tuple[int, list[str], list[str]]:
    cores = f"{hw.physical_cores} physical, {hw.logical_cores} logical"
    if threads is not None:
        warnings = []
        if threads > hw.logical_cores:
            warnings.append(f"--threads {threads} is more than the {hw.logical_cores} logical cores: "
                            "threads will wait on each other")
        return threads, [f"threads {threads}: set by --threads ({cores} cores)"], warnings
    n = max(1, min(hw.physical_cores, hw.logical_cores))
    # Decoding is memory-bound: a second hardware thread on a core adds contention, not speed.
    return n, [f"threads {n}: one per physical core ({cores})"], []


def _tokens_needed(prompt_tokens: int | None, max_tokens: int | None) -> tuple[int, str]:
    if prompt_tokens is None and max_tokens is None:
        return 0, ""
    p, m = prompt_tokens or 0, max_tokens or 0
    return p + m, f"prompt ({p} tokens) + max tokens ({m}) = {p + m} tokens"


def decide_context(shape: ModelShape, ctx: int | None, prompt_tokens: int | None,
                   max_tokens: int | None) -> tuple[int, list[str], list[str]]:
    """Context cells per sequence, with reasons and warnings. Raises ContextOverflowError."""
    needed, needed_words = _tokens_needed(prompt_tokens, max_tokens)
    trained = shape.n_ctx_train
    trained_words = f"trained {trained}" if trained else "trained context unknown"
    reasons, warnings = [], []
    if ctx is not None:
        per_seq = round_up(ctx, CONTEXT_PADDING)
        if needed > per_seq:
            raise ContextOverflowError(
                f"{needed_words} is {needed - per_seq} tokens over the context of {per_seq}",
                hint=f"use --ctx {round_up(needed, CONTEXT_PADDING)} or fewer --max-tokens",
            )
        rounded = f", rounded up from {ctx} as llama.cpp does" if per_seq != ctx else ""
        reasons.append(f"context {per_seq}: set by --ctx{rounded} ({trained_words})")
    else:
        base = min(trained or DEFAULT_CONTEXT, DEFAULT_CONTEXT)
        per_seq = round_up(max(base, needed), CONTEXT_PADDING)
        if needed > base:
            reasons.append(f"context {per_seq}: raised from the default {base} to fit the {needed_words}")
        else:
            reasons.append(f"context {per_seq}: default, {trained_words}")
    if trained and per_seq > trained:
        warnings.append(f"context {per_seq} is above the model's trained context of {trained}: "
                        "answers past that length may degrade")
    return per_seq, reasons, warnings


def _best_gpu(hw: HardwareInfo) -> GpuInfo | None:
    return max(hw.gpus, key=lambda g: g.memory_free_bytes, default=None)


@dataclass(frozen=True)
class _Memory:
    """The memory of one candidate configuration (context + GPU split)."""

    weights: int
    kv: int
    compute: int
    host: int
    offload: GpuOffload
    reason: str

    @property
    def total(self) -> int:
        return self.weights + self.kv + self.compute


def _gpu_bytes(shape: ModelShape, layers: int, kv_layers: list[int], compute: int) -> int:
    """GPU memory for offloading `layers`: llama.cpp offloads the last blocks, then the output."""
    blocks = min(layers, shape.n_layer)
    first = shape.n_layer - blocks
    used = sum(shape.layer_weight_bytes[first:]) + sum(kv_layers[first:])
    if layers > shape.n_layer:
        used += shape.output_weight_bytes + shape.tied_output_bytes
    return used + (compute if layers else 0)


def _auto_gpu_layers(shape: ModelShape, gpu: GpuInfo, kv_layers: list[int], compute: int) -> int:
    """The most layers (counted from the last block, as llama.cpp offloads) that fit in VRAM."""
    budget = gpu.memory_free_bytes - GPU_RESERVE_BYTES
    for layers in range(shape.n_layer + 1, 0, -1):
        if _gpu_bytes(shape, layers, kv_layers, compute) <= budget:
            return layers
    return 0


def _offload(shape: ModelShape, hw: HardwareInfo, gpu_layers: int | None, kv_layers: list[int],
             compute: int) -> tuple[GpuOffload, str]:
    """Decide n_gpu_layers and say why."""
    all_layers = shape.n_layer + 1
    gpu = _best_gpu(hw)
    none = GpuOffload(None, None, 0, all_layers, 0, gpu.memory_free_bytes if gpu else None)
    if not hw.gpu_offload:
        found = f" (found {gpu.name})" if gpu else ""
        if gpu_layers:
            return none, (f"GPU layers 0: --gpu-layers {gpu_layers} ignored, "
                          f"this llama.cpp build has no GPU offload{found}")
        return none, f"GPU layers 0: this llama.cpp build has no GPU offload{found}"
    if gpu is None:
        return none, "GPU layers 0: no GPU found"
    if gpu_layers is not None:
        layers = all_layers if gpu_layers < 0 or gpu_layers > all_layers else gpu_layers
        why = f"GPU layers {layers} of {all_layers}: set by --gpu-layers"
    elif gpu.unified_memory:
        layers = all_layers
        why = f"GPU layers {layers} of {all_layers}: all, the {gpu.name} shares system memory"
    else:
        layers = _auto_gpu_layers(shape, gpu, kv_layers, compute)
        free = format_gib(gpu.memory_free_bytes)
        if layers == all_layers:
            why = f"GPU layers {layers} of {all_layers}: all fit in {free} free on {gpu.name}"
        elif layers:
            why = (f"GPU layers {layers} of {all_layers}: as many as fit in {free} free on {gpu.name}, "
                   "the rest on the CPU")
        else:
            why = f"GPU layers 0: not one layer fits in {free} free on {gpu.name}"
    used = _gpu_bytes(shape, layers, kv_layers, compute)
    return GpuOffload(gpu.name, gpu.backend, layers, all_layers, used, gpu.memory_free_bytes,
                      gpu.unified_memory), why


def _memory_at(shape: ModelShape, hw: HardwareInfo, n_ctx_per_seq: int, n_seq: int, n_ubatch: int,
               gpu_layers: int | None, swa_full: bool, kv_unified: bool) -> _Memory:
    n_ctx = n_ctx_per_seq * n_seq
    kv_layers = kv_cache_layer_bytes(shape, n_ctx, n_seq, swa_full=swa_full, kv_unified=kv_unified,
                                     n_ubatch=n_ubatch)
    attention_span = n_ctx if kv_unified else n_ctx_per_seq
    compute = compute_buffer_bytes(shape, attention_span, n_ubatch, n_seq)
    offload, why = _offload(shape, hw, gpu_layers, kv_layers, compute)
    weights, kv = shape.weights_bytes, sum(kv_layers)
    if offload.unified_memory or not offload.layers:
        host = weights + kv + compute
    else:
        host = _host_bytes_offloaded(shape, offload.layers, kv_layers, compute, n_ubatch, n_seq)
    return _Memory(weights, kv, compute, host, offload, why)


def _host_bytes_offloaded(shape: ModelShape, layers: int, kv_layers: list[int], compute: int,
                          n_ubatch: int, n_seq: int) -> int:
    """RAM left in use when the last `layers` layers run on a discrete GPU.

    The CPU keeps the other blocks with their KV cache, the token embeddings, the output layer
    unless it is offloaded too, and its own compute buffer: a full one while it still runs
    layers, only the embedding rows and the output logits once everything is offloaded.
    """
    first_on_gpu = shape.n_layer - min(layers, shape.n_layer)
    all_on_gpu = layers > shape.n_layer
    host = sum(shape.layer_weight_bytes[:first_on_gpu]) + sum(kv_layers[:first_on_gpu])
    host += shape.other_weight_bytes + (0 if all_on_gpu else shape.output_weight_bytes)
    f32 = 4
    host += (n_ubatch * shape.n_embd * f32 + shape.n_vocab * f32 * n_seq) if all_on_gpu else compute
    return host


def _check_gpu(memory: _Memory) -> None:
    off = memory.offload
    if off.layers and not off.unified_memory and off.free_bytes is not None:
        room = off.free_bytes - GPU_RESERVE_BYTES
        if off.gpu_bytes > room:
            raise DoesNotFitError(
                f"{off.layers} GPU layers do not fit on {off.device}: needs {format_gib(off.gpu_bytes)}, "
                f"{format_gib(room)} available: {format_gib(off.gpu_bytes - room)} short",
                hint="use fewer --gpu-layers, or leave it out to let hearth choose",
            )


def _does_not_fit(memory: _Memory, available: int, n_ctx: int, user_ctx: bool) -> DoesNotFitError:
    short = memory.host - available
    where = "RAM" if not memory.offload.unified_memory else "memory"
    hint = ("use a smaller --ctx, a smaller quantization, or free some memory" if user_ctx
            else "use a smaller quantization (fewer bits per weight), or free some memory")
    return DoesNotFitError(
        f"the model does not fit in {where} at context {n_ctx}: needs {format_gib(memory.host)}, "
        f"{format_gib(available)} available: {format_gib(short)} short",
        hint=hint,
    )


def _context_candidates(per_seq: int, floor: int) -> list[int]:
    """The planned context, then halvings down to `floor` (tried when the default does not fit)."""
    candidates = [per_seq]
    while candidates[-1] > floor:
        candidates.append(max(floor, round_up(candidates[-1] // 2, CONTEXT_PADDING)))
    return candidates


def fit_plan(model: GGUFInfo, hw: HardwareInfo, *, ctx: int | None = None, threads: int | None = None,
             gpu_layers: int | None = None, n_seq: int = 1, max_tokens: int | None = None,
             prompt_tokens: int | None = None, swa_full: bool = True, kv_unified: bool = True) -> FitPlan:
    """Decide context, threads, batch and GPU layers for `model` on `hw`, or refuse.

    `ctx` is the context per sequence; llama.cpp is given n_ctx = ctx x n_seq. `swa_full` and
    `kv_unified` must match the context parameters the engine gives llama.cpp: the engine takes
    kv_unified from the plan (one KV buffer shared by all sequences, or one stream per sequence)
    and keeps llama.cpp's swa_full.
    Raises ContextOverflowError when `prompt_tokens + max_tokens` is over an explicit `ctx`,
    DoesNotFitError when the model cannot fit in memory.
    """
    shape = model_shape(model)
    n_seq = max(1, n_seq)
    n_threads, reasons, warnings = decide_threads(hw, threads)
    per_seq, ctx_reasons, ctx_warnings = decide_context(shape, ctx, prompt_tokens, max_tokens)
    needed, _ = _tokens_needed(prompt_tokens, max_tokens)
    floor = max(round_up(max(needed, 1), CONTEXT_PADDING), min(MIN_AUTO_CONTEXT, per_seq))
    candidates = [per_seq] if ctx is not None else _context_candidates(per_seq, floor)
    for candidate in candidates:
        n_batch = min(DEFAULT_BATCH, candidate * n_seq)
        memory = _memory_at(shape, hw, candidate, n_seq, n_batch, gpu_layers, swa_full, kv_unified)
        if memory.host <= hw.ram_available_bytes:
            break
    else:
        raise _does_not_fit(memory, hw.ram_available_bytes, candidate * n_seq, ctx is not None)
    _check_gpu(memory)
    if candidate != per_seq:
        ctx_reasons = [f"context {candidate}: the default {per_seq} does not fit in memory"]
        ctx_warnings = [w for w in ctx_warnings if f"context {per_seq} " not in w]
    n_ctx = candidate * n_seq
    if n_seq > 1:
        ctx_reasons.append(f"context {n_ctx} in all: {candidate} for each of {n_seq} sequences"
                           + ("" if kv_unified else ", each in a KV stream of its own"))
    _buffers, repack_reason = cpu_weight_buffers(hw.simd_features, os.environ.get("HEARTH_CPU_REPACK"))
    reasons += ctx_reasons + ([repack_reason] if repack_reason else []) + [
        memory.reason,
        f"batch {n_batch}: the prompt is evaluated {n_batch} tokens at a time",
        f"memory: needs {format_gib(memory.host)} of RAM, {format_gib(hw.ram_available_bytes)} available",
    ]
    return FitPlan(
        n_ctx=n_ctx, n_ctx_per_seq=candidate, n_threads=n_threads, n_threads_batch=n_threads,
        n_gpu_layers=memory.offload.layers, n_batch=n_batch, n_ubatch=n_batch, n_seq=n_seq,
        weights_bytes=memory.weights, kv_cache_bytes=memory.kv, compute_bytes=memory.compute,
        total_bytes=memory.total, host_bytes=memory.host, available_bytes=hw.ram_available_bytes,
        gpu=memory.offload, n_ctx_train=shape.n_ctx_train, swa_full=swa_full, kv_unified=kv_unified,
        reasons=reasons, warnings=warnings + ctx_warnings,
    )
