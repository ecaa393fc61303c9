"""`hearth hw` (what this machine is) and `hearth plan` (how a model will fit it)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from . import _output
from ._options import Ctx, GpuLayers, Json, Threads
from .app import command


def _size(n_bytes: int | None) -> str:
    if n_bytes is None:
        return "?"
    # human_bytes counts in 1024s; say so with binary unit names
    text = _output.human_bytes(n_bytes)
    for unit in ("KB", "MB", "GB", "TB"):
        text = text.replace(unit, unit[0] + "iB")
    return text


def _gpu_line(gpu) -> str:
    if gpu.unified_memory:
        return f"{gpu.name} ({gpu.backend}, shares the {_size(gpu.memory_total_bytes)} of RAM)"
    free, total = _size(gpu.memory_free_bytes), _size(gpu.memory_total_bytes)
    return f"{gpu.name} ({gpu.backend}): {free} free of {total}"


@command("hw")
def hw(json_output: Json = False) -> None:
    """Show this machine: CPU, SIMD features, memory, GPUs, and what llama.cpp can use.

    Examples:

      hearth hw

      hearth hw --json | jq .ram_available_bytes
    """
    import os

    from ..runtime.hardware import cpu_weight_buffers, detect_hardware

    info = detect_hardware()
    if json_output:
        _output.emit_json(info.to_dict())
        return
    backend = info.backend
    offload = "yes" if info.gpu_offload else "no (this llama.cpp build runs on the CPU only)"
    pairs = [
        ("cpu", f"{info.cpu_model or 'unknown'} "
                f"({info.physical_cores} physical cores, {info.logical_cores} logical)"),
        ("simd", " ".join(info.simd_features) or "none detected"),
        ("ram", f"{_size(info.ram_available_bytes)} available of {_size(info.ram_total_bytes)}"),
    ]
    pairs += [("gpu", _gpu_line(gpu)) for gpu in info.gpus] or [("gpu", "none found")]
    mode, why = cpu_weight_buffers(info.simd_features, os.environ.get("HEARTH_CPU_REPACK"))
    weights = {"all": "llama.cpp's choice (repacked rows where its build has them)",
               "repack": why.removeprefix("CPU weights: "), "off": why}[mode]
    pairs += [("gpu offload", offload),
              ("cpu weights", weights),
              ("llama.cpp", f"llama-cpp-python {backend.get('llama_cpp_python', '?')}"),
              ("system", info.system)]
    if backend.get("error"):
        pairs.append(("llama.cpp error", backend["error"]))
    _output.key_values(pairs)


ModelArg = Annotated[
    Optional[str],
    typer.Argument(metavar="MODEL", help="A .gguf path, `default` (the embedded model) or REPO[:QUANT]."),
]


@command("plan")
def plan(model: ModelArg = None, ctx: Ctx = None, threads: Threads = None,
         gpu_layers: GpuLayers = None, json_output: Json = False) -> None:
    """Show how MODEL fits this machine before loading it: memory, context, threads, GPU layers.

    Reads only the GGUF header. Refuses with the shortfall when the model cannot fit.

    Examples:

      hearth plan default

      hearth plan ./qwen2.5-0.5b-instruct-q4_k_m.gguf --ctx 16384

      hearth plan default --json | jq .total_bytes
    """
    from ..model_files import plan_model

    resolved, header, result = plan_model(model, ctx=ctx, threads=threads, gpu_layers=gpu_layers)
    model_info = {
        "reference": resolved.reference, "name": resolved.name, "path": str(resolved.path),
        "architecture": header.architecture, "n_params": header.n_params, "file_bytes": header.file_size,
    }
    for warning in result.warnings:
        _output.warn(warning)
    if json_output:
        _output.emit_json({"model": model_info, **result.to_dict()})
        return
    _output.key_values([
        ("model", f"{resolved.name} ({header.architecture}, {header.n_params / 1e6:.0f}M parameters)"),
        ("path", str(resolved.path)),
    ])
    gpu = result.gpu
    per_seq = f" ({result.n_ctx_per_seq} x {result.n_seq})" if result.n_seq > 1 else ""
    on_device = f" on {gpu.device}" if gpu.device else ""
    rows = [
        ("context", f"{result.n_ctx} tokens{per_seq}"),
        ("threads", f"{result.n_threads} (batch {result.n_threads_batch})"),
        ("gpu layers", f"{result.n_gpu_layers} of {gpu.total_layers}{on_device}"),
        ("batch", f"{result.n_batch} (micro-batch {result.n_ubatch})"),
        ("weights", _size(result.weights_bytes)),
        ("kv cache", _size(result.kv_cache_bytes)),
        ("compute", _size(result.compute_bytes)),
        ("total", _size(result.total_bytes)),
        ("ram needed", f"{_size(result.host_bytes)} of {_size(result.available_bytes)} available"),
    ]
    if gpu.layers and not gpu.unified_memory:
        rows.append(("gpu memory", f"{_size(gpu.gpu_bytes)} of {_size(gpu.free_bytes)} free"))
    _output.table(["", "plan"], rows)
    _output.write("\nwhy:\n" + "".join(f"  {reason}\n" for reason in result.reasons))
