"""The jobs that make and inspect model files: pull, convert (-> quantize -> register), quantize,
show, plan. Part of the public API (`hearth.pull`, `hearth.convert`, `hearth.quantize`).

Progress goes to the callbacks a caller passes (the CLI draws bars with them); nothing here prints.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .errors import HearthError, UsageError


# -- pull ------------------------------------------------------------------------------------------
def pull(reference: str, revision: str | None = None, observer=None):
    """Download a GGUF model (`REPO[:QUANT]`) into the Hugging Face cache: resumable, sha256-checked.

    Without QUANT the best quant that fits this machine's memory is chosen (and why is in
    `.reason`). Returns a PullResult (files, sizes, commit). `observer` gets progress
    (`note`, `file_started`, `file_advanced`)."""
    from .hub.pull import pull_model
    from .runtime.hardware import memory_budget_bytes

    return pull_model(reference, revision=revision, observer=observer, memory_budget=memory_budget_bytes)


def fit_summary(path: Path) -> str:
    """One line: how the fit planner would run this GGUF here (read from its real header)."""
    from .runtime.gguf_file import read_gguf
    from .runtime.hardware import detect_hardware
    from .runtime.plan import fit_plan
    from .units import format_gib

    try:
        plan = fit_plan(read_gguf(path), detect_hardware())
    except HearthError as exc:
        return f"does not fit as is: {exc.message}"
    return (f"fits: context {plan.n_ctx}, {plan.n_threads} threads, {plan.n_gpu_layers} GPU layers, "
            f"{format_gib(plan.total_bytes)} of {format_gib(plan.available_bytes)} available")


# -- plan and show ---------------------------------------------------------------------------------
def plan_model(reference: str | None, *, ctx: int | None = None, threads: int | None = None,
               gpu_layers: int | None = None):
    """How a model would fit this machine, from its header alone: (ResolvedModel, GGUFInfo, FitPlan)."""
    from .references import resolve_model
    from .runtime.gguf_file import read_gguf
    from .runtime.hardware import detect_hardware
    from .runtime.plan import fit_plan

    resolved = resolve_model(reference)
    header = read_gguf(resolved.path)
    return resolved, header, fit_plan(header, detect_hardware(), ctx=ctx, threads=threads, gpu_layers=gpu_layers)


def model_details(reference: str) -> dict:
    """What `hearth show` reports: GGUF metadata of a store model, a .gguf path or `default`."""
    from collections import Counter

    from .hub import store
    from .references import resolve_model
    from .runtime.gguf_file import LazyArray, read_gguf

    stored = store.pick_stored(reference)
    if stored is not None:
        name, paths = stored.reference, list(stored.paths)
    else:
        resolved = resolve_model(reference)
        name, paths = resolved.name, store.split_parts(resolved.path)
    infos = [read_gguf(p) for p in paths]
    first = infos[0]
    tokens = first.metadata.get("tokenizer.ggml.tokens")
    vocab = tokens.count if isinstance(tokens, LazyArray) else len(tokens or []) or None
    types = Counter(t.type_name for info in infos for t in info.tensors)
    return {
        "model": name, "files": [str(p) for p in paths], "size_bytes": sum(i.file_size for i in infos),
        "architecture": first.architecture, "name": first.metadata.get("general.name"),
        "parameters": sum(i.n_params for i in infos), "layers": first.arch_value("block_count"),
        "heads": first.arch_value("attention.head_count"), "kv_heads": first.arch_value("attention.head_count_kv"),
        "embedding_length": first.arch_value("embedding_length"), "context_length": first.arch_value("context_length"),
        "vocab_size": first.arch_value("vocab_size") or vocab, "license": first.metadata.get("general.license"),
        "tensor_types": dict(types.most_common()), "chat_template": first.chat_template,
    }


# -- convert and quantize --------------------------------------------------------------------------
@dataclass
class ConvertReport:
    path: Path
    name: str
    gguf_name: str  # general.name as written (llama.cpp picks some tokenizer rules by it)
    architecture: str
    gguf_arch: str
    type: str
    tensors: int
    params: int
    bytes: int
    registered: bool

    def to_dict(self) -> dict:
        return {"path": str(self.path), "name": self.name, "gguf_name": self.gguf_name, "architecture": self.architecture,
                "gguf_arch": self.gguf_arch, "type": self.type, "tensors": self.tensors, "params": self.params,
                "bytes": self.bytes, "registered": self.registered}


def convert(src: str, output: str | Path | None = None, *, outtype: str = "f16", quant: str | None = None,
            name: str | None = None, register: bool = True, revision: str | None = None,
            threads: int | None = None, force: bool = False, observer=None,
            on_tensor: Callable | None = None, on_quantize: Callable | None = None) -> ConvertReport:
    """A Hugging Face checkpoint (a folder, or OWNER/REPO fetched verified) -> GGUF, optionally
    quantized in the same step, registered so that `load(name)` finds it.

    `observer` sees the download; `on_tensor(name, done_bytes, total_bytes)` the conversion;
    `on_quantize(progress)` the quantization."""
    from .quantize import registry
    from .quantize.convert import convert_checkpoint, resolve_source
    from .quantize.quantize import normalize_type

    target = normalize_type(quant) if quant else outtype.upper()
    folder = resolve_source(src, revision, observer)
    model_name = name or (src.rstrip("/").split("/")[-1] if not Path(src).exists() else folder.resolve().name)
    out = Path(output) if output else registry.models_dir(model_name) / f"{registry.safe_name(model_name)}-{target}.gguf"
    if out.exists() and not force:
        raise UsageError(f"{out} already exists", hint="pass --force to replace it")
    stage_dir = Path(tempfile.mkdtemp(prefix=".hearth-convert-", dir=out.parent if out.parent.exists() else None)) \
        if quant else None
    stage = stage_dir / "stage.gguf" if stage_dir else out
    try:
        result = convert_checkpoint(folder, stage, outtype, model_name, on_tensor)
        size = quantize(stage, quant, out, threads=threads, force=True, on_progress=on_quantize,
                        register_as=False).output_bytes if quant else result.n_bytes
    finally:
        if stage_dir:
            stage.unlink(missing_ok=True)
            stage_dir.rmdir()
    entry = registry.register(model_name, target, out, src) if register else None
    return ConvertReport(out, model_name, result.gguf_name, result.architecture, result.gguf_arch, target, result.n_tensors,
                         result.n_params, size, entry is not None)


def quantize(model: str | Path, quant: str, output: str | Path | None = None, *, imatrix: str | Path | None = None,
             threads: int | None = None, force: bool = False, on_progress: Callable | None = None,
             register_as: bool = True):
    """Quantize a GGUF (a path, or a registered name: its most precise file) with llama.cpp.
    A registered input registers the output under the same name. Returns a QuantizeResult."""
    from .quantize import registry
    from .quantize.quantize import quantize_file

    src = model_path(str(model))
    result = quantize_file(src, quant, output, threads, imatrix, force, on_progress)
    entry = registry.entry_for_file(src) if register_as else None
    if entry is not None:
        registry.register(entry.name, result.quant, result.path, entry.source)
    return result


def model_path(ref: str) -> Path:
    """A path, or a registered name: bare NAME means its most precise file (the quantization source)."""
    from .quantize import registry
    from .references import resolve_model

    path = Path(ref).expanduser()
    if path.exists() or ref.endswith(".gguf"):
        return path
    entry = registry.most_precise(ref) if ":" not in ref else None
    if entry is not None and Path(entry.path).is_file():
        return Path(entry.path)
    return resolve_model(ref).path


def evaluate_quality(reference: str, candidate: str, text: str, ctx: int = 512, threads: int | None = None,
                     chunks: int | None = None, on_progress: Callable | None = None):
    """Perplexity, KL divergence and top-1 agreement of `candidate` against `reference`."""
    import os

    from .quantize.quality import evaluate_quality as evaluate

    return evaluate(model_path(reference), model_path(candidate), text, ctx, threads or max(1, os.cpu_count() or 1),
                    chunks, on_progress)
