"""Hugging Face checkpoint (safetensors) -> GGUF, one tensor at a time.

The driver reads `config.json`, picks the architecture module registered for its
`architectures[0]`, builds the vocabulary (`tokenizer.py`), plans every output tensor (name,
shape, type) from the safetensors headers alone, then streams: each tensor is read from a
memory-mapped shard in row blocks of a few MB, converted, written, and the blocks' pages are
dropped from the process before the next. Peak memory is the vocabulary plus a few blocks;
only tensors that need a whole-tensor transform (Q/K permutation, norms) are held entire.

Architecture modules (`arch/*.py`, base class in `arch/__init__.py`) register themselves with `@register_arch(...)`; they are
imported lazily through `_ARCH_MODULES`, so converting a Qwen model never imports the others.
Only safetensors are read: pickle checkpoints (`.bin`, `.pt`) can run code when loaded.
"""

from __future__ import annotations

import importlib
import json
import math
import os

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..errors import ConversionError, DiskSpaceError, UsageError, full_disk_reported, no_room_reason
from ..paths import check_free_space, free_bytes
from ..runtime.gguf_file import FILE_TYPES
from .shards import ShardReader, SourceTensor, as_float32, find_weight_files, read_safetensors_header

# HF architecture name -> module under hearth.quantize.arch that registers it.
_ARCH_MODULES: dict[str, str] = {
    "LlamaForCausalLM": "llama",
    "MistralForCausalLM": "mistral",
    "Qwen2ForCausalLM": "qwen2",
    "Qwen3ForCausalLM": "qwen3",
    "Gemma3ForCausalLM": "gemma3",
    "Phi3ForCausalLM": "phi3",
}
_REGISTRY: dict[str, type] = {}

OUTTYPES = ("f32", "f16", "bf16", "q8_0")
_METADATA_RESERVE = 16 << 20  # vocabulary, merges and header: generous upper bound
_FREE_SPACE_HINT = "free some space or write elsewhere with -o"


def register_arch(*hf_names: str) -> Callable[[type], type]:
    """Class decorator: this converter handles these HF `architectures` names."""

    def decorate(cls: type) -> type:
        for name in hf_names:
            _REGISTRY[name] = cls
        return cls

    return decorate


def supported_architectures() -> list[str]:
    return sorted(_ARCH_MODULES)


def converter_class(hf_arch: str) -> type:
    module = _ARCH_MODULES.get(hf_arch)
    if module is None:
        raise ConversionError(
            f"unsupported architecture {hf_arch!r}",
            hint="supported: " + ", ".join(supported_architectures()),
        )
    importlib.import_module(f"{__package__}.arch.{module}")
    return _REGISTRY[hf_arch]


# --------------------------------------------------------------------------------------------
# config.json


@dataclass(frozen=True)
class ModelConfig:
    """config.json with the lookups every architecture needs (v4 and v5 transformers keys)."""

    raw: dict[str, Any]

    def get(self, *keys: str, default: Any = None) -> Any:
        for key in keys:
            if self.raw.get(key) is not None:
                return self.raw[key]
        return default

    def require(self, *keys: str) -> Any:
        value = self.get(*keys)
        if value is None:
            raise ConversionError(f"config.json has no {keys[0]!r}", hint="the checkpoint's config is incomplete")
        return value

    @property
    def architecture(self) -> str:
        archs = self.raw.get("architectures") or []
        if not archs:
            raise ConversionError("config.json names no architecture (`architectures` is empty)",
                                  hint="supported: " + ", ".join(supported_architectures()))
        return archs[0]

    @property
    def n_layers(self) -> int:
        return int(self.require("num_hidden_layers", "n_layer"))

    @property
    def hidden(self) -> int:
        return int(self.require("hidden_size", "n_embd"))

    @property
    def n_head(self) -> int:
        return int(self.require("num_attention_heads", "n_head"))

    @property
    def n_kv_head(self) -> int:
        return int(self.get("num_key_value_heads", default=self.n_head))

    @property
    def head_dim(self) -> int:
        return int(self.get("head_dim", default=self.hidden // self.n_head))

    @property
    def n_ff(self) -> int:
        return int(self.require("intermediate_size"))

    @property
    def vocab_size(self) -> int:
        return int(self.require("vocab_size"))

    def rope(self, layer_type: str = "full_attention") -> dict[str, Any]:
        """RoPE parameters: v5 `rope_parameters` (maybe per layer type) or v4 `rope_theta` + `rope_scaling`."""
        params = self.raw.get("rope_parameters")
        if isinstance(params, dict):
            return dict(params[layer_type]) if isinstance(params.get(layer_type), dict) else dict(params)
        merged = dict(self.raw.get("rope_scaling") or {})
        if "type" in merged and "rope_type" not in merged:
            merged["rope_type"] = merged["type"]
        if self.raw.get("rope_theta") is not None:
            merged.setdefault("rope_theta", self.raw["rope_theta"])
        return merged


def read_config(folder: Path) -> ModelConfig:
    path = folder / "config.json"
    if not path.is_file():
        raise ConversionError(f"{folder} has no config.json", hint="point at a Hugging Face model folder or repo id")
    try:
        return ModelConfig(json.loads(path.read_text(encoding="utf-8")))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConversionError(f"{path} is not valid JSON: {exc}") from None


# --------------------------------------------------------------------------------------------
# where the checkpoint comes from

def resolve_source(src: str, revision: str | None = None, observer=None) -> Path:
    """A local folder as is; otherwise a hub repo id, fetched (safetensors only) into the HF cache
    through hearth's verified, resumable download (`hub.checkpoint`)."""
    local = Path(src).expanduser()
    if local.exists() or src.startswith((".", "/", "~")) or src.count("/") != 1:
        if not local.is_dir():
            raise ConversionError(f"{src} is not a model folder", hint="give a folder with config.json, or OWNER/REPO")
        return local
    from ..hub.checkpoint import pull_checkpoint

    return pull_checkpoint(src, revision, observer)


# --------------------------------------------------------------------------------------------
# the plan: every output tensor decided before a byte of weights is read


@dataclass(frozen=True)
class PlannedTensor:
    name: str
    shape: tuple[int, ...]
    ggml_type: str  # F32 | F16 | BF16 | Q8_0
    n_bytes: int
    source: SourceTensor | None  # None: computed (extra tensor)
    transform: bool


@dataclass
class ConversionPlan:
    converter: Any  # an arch.ArchConverter
    vocab: Any
    tensors: list[PlannedTensor] = field(default_factory=list)

    @property
    def n_bytes(self) -> int:
        return sum(t.n_bytes for t in self.tensors)

    @property
    def n_params(self) -> int:
        return sum(math.prod(t.shape) for t in self.tensors)


def output_type(outtype: str, shape: tuple[int, ...]) -> str:
    """1-D tensors (norms, biases) stay F32; matrices take the requested type."""
    if len(shape) < 2 or outtype == "f32":
        return "F32"
    if outtype == "q8_0":
        return "Q8_0" if shape[-1] % 32 == 0 else "F16"
    return outtype.upper()


def tensor_bytes(ggml_type: str, shape: tuple[int, ...]) -> int:
    n = math.prod(shape)
    return {"F32": 4 * n, "F16": 2 * n, "BF16": 2 * n, "Q8_0": n // 32 * 34}[ggml_type]


def plan_conversion(folder: Path, outtype: str = "f16") -> ConversionPlan:
    from .tokenizer import load_vocabulary

    if outtype not in OUTTYPES:
        raise UsageError(f"unknown output type {outtype!r}", hint="choose one of: " + ", ".join(OUTTYPES))
    config = read_config(folder)
    converter = converter_class(config.architecture)(config)
    vocab = load_vocabulary(folder, config)
    converter.adjust_vocabulary(vocab)
    plan = ConversionPlan(converter, vocab)
    for source in _all_source_tensors(folder):
        name = converter.gguf_name(source.name)
        if name is None:
            continue
        expected = converter.expected_shape(name)
        if expected is not None and tuple(source.shape) != expected:
            raise ConversionError(f"tensor {source.name!r} has shape {list(source.shape)}, config.json implies "
                                  f"{list(expected)}", hint="config.json and the weights do not belong together")
        kind = output_type(outtype, source.shape)
        plan.tensors.append(PlannedTensor(name, source.shape, kind, tensor_bytes(kind, source.shape), source,
                                          converter.needs_transform(name)))
    for name, data in converter.extra_tensors():
        plan.tensors.append(PlannedTensor(name, data.shape, "F32", data.nbytes, None, False))
    _check_plan(plan, config)
    return plan


def _all_source_tensors(folder: Path) -> list[SourceTensor]:
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        missing = [s for s in shards if not (folder / s).is_file()]
        if missing:
            raise ConversionError(f"{folder} is missing shard(s) {', '.join(missing)}", hint="download them again")
    tensors: list[SourceTensor] = []
    for shard in find_weight_files(folder):
        tensors.extend(read_safetensors_header(shard))
    return tensors


def _check_plan(plan: ConversionPlan, config: ModelConfig) -> None:
    names = {t.name for t in plan.tensors}
    if "token_embd.weight" not in names:
        raise ConversionError("the checkpoint has no token embedding tensor", hint="is it a complete model?")
    if len(names) != len(plan.tensors):
        raise ConversionError("two checkpoint tensors map to the same GGUF tensor")
    for layer in range(config.n_layers):
        if f"blk.{layer}.attn_norm.weight" not in names:
            raise ConversionError(f"the checkpoint has no tensors for layer {layer} of {config.n_layers}",
                                  hint="a shard is missing, or num_hidden_layers is wrong")
    if "output.weight" not in names and config.get("tie_word_embeddings") is False:
        # llama.cpp would quietly reuse token_embd as the output layer: not the model config.json describes
        raise ConversionError("config.json says the output layer is not tied to the embeddings, but the checkpoint "
                              "has no lm_head weights", hint="a shard is missing, or tie_word_embeddings is wrong")
    if len(plan.vocab.tokens) != config.vocab_size:
        raise ConversionError(f"the tokenizer has {len(plan.vocab.tokens)} tokens, the model {config.vocab_size}")


# --------------------------------------------------------------------------------------------
# writing


@dataclass(frozen=True)
class ConversionResult:
    path: Path
    architecture: str
    gguf_arch: str
    outtype: str
    n_tensors: int
    n_params: int
    n_bytes: int
    gguf_name: str  # general.name as written (an architecture may adjust the requested name)


ProgressFn = Callable[[str, int, int], None]  # (tensor name, bytes done, bytes total)


def convert_checkpoint(folder: str | Path, out_path: str | Path, outtype: str = "f16", name: str | None = None,
                       on_progress: ProgressFn | None = None) -> ConversionResult:
    """Convert a local HF folder to one GGUF file, atomically (temp file + rename)."""
    folder, out_path = Path(folder), Path(out_path)
    if not folder.is_dir():
        raise ConversionError(f"{folder} is not a folder", hint="give a model folder or a hub repo id")
    plan = plan_conversion(folder, outtype)
    gguf_name = plan.converter.gguf_model_name(plan.vocab, name or folder.name)
    with full_disk_reported(out_path, hint=_FREE_SPACE_HINT):
        out_path.parent.mkdir(parents=True, exist_ok=True)
        _check_free_space(out_path.parent, plan.n_bytes + _METADATA_RESERVE)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{out_path.name}.", suffix=".tmp", dir=out_path.parent)
        os.close(fd)
    tmp = Path(tmp_name)
    try:
        _write_gguf(plan, tmp, outtype, gguf_name, on_progress)
        os.replace(tmp, out_path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        # numpy reports a short write ("N requested and M written") without an errno
        reason = no_room_reason(exc) or ("the disk is full" if "requested and" in str(exc) else None)
        if reason:
            raise DiskSpaceError(f"{reason}: could not write {out_path}; nothing was left behind",
                                 hint=_FREE_SPACE_HINT) from None
        raise ConversionError(f"cannot write {out_path}: {exc.strerror or exc}") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return ConversionResult(out_path, plan.converter.config.architecture, plan.converter.gguf_arch, outtype,
                            len(plan.tensors), plan.n_params, out_path.stat().st_size, gguf_name)


def _check_free_space(folder: Path, needed: int) -> None:
    check_free_space(needed, free_bytes(folder), folder, "the converted GGUF", hint=_FREE_SPACE_HINT)




def _write_gguf(plan: ConversionPlan, path: Path, outtype: str, model_name: str,
                on_progress: ProgressFn | None) -> None:
    """Header, metadata and tensor index through gguf's writer; tensor data streamed by us.

    gguf.GGUFWriter wants each tensor as one array; writing row blocks instead keeps only a
    few MB of converted data alive, whatever the tensor size. The layout is the GGUF one:
    data section aligned, each tensor padded to the alignment, in tensor-index order.
    """
    import gguf
    import numpy as np

    from .tokenizer import write_vocabulary

    writer = gguf.GGUFWriter(path, plan.converter.gguf_arch)
    writer.add_name(model_name)
    writer.add_file_type(FILE_TYPES[outtype.upper()])
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    plan.converter.add_hparams(writer)
    write_vocabulary(writer, plan.vocab)
    for t in plan.tensors:
        writer.add_tensor_info(t.name, t.shape, np.dtype(np.float32), t.n_bytes,
                               raw_dtype=gguf.GGMLQuantizationType[t.ggml_type])
    extras = dict(plan.converter.extra_tensors())
    reader = ShardReader()
    try:
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        fout, align = writer.fout[0], writer.data_alignment
        _pad_to(fout, align)
        done = 0
        for t in plan.tensors:
            blocks = [extras[t.name]] if t.source is None else _converted_blocks(reader, t, plan.converter)
            written = 0
            for block in blocks:
                fout.write(block)
                written += len(block) if isinstance(block, memoryview) else block.nbytes
                done += len(block) if isinstance(block, memoryview) else block.nbytes
                if on_progress:
                    on_progress(t.name, done, plan.n_bytes)
            if written != t.n_bytes:
                raise ConversionError(f"internal error: {t.name} wrote {written} bytes, planned {t.n_bytes}")
            _pad_to(fout, align)
        fout.flush()
        os.fsync(fout.fileno())
    finally:
        writer.close()
        reader.close()


def _pad_to(fout, align: int) -> None:
    fout.write(b"\0" * (-fout.tell() % align))


_BLOCK_BYTES = 8 << 20  # source bytes converted at a time
_SAME_TYPE = {("F32", "F32"), ("F16", "F16"), ("BF16", "BF16")}


def _converted_blocks(reader: ShardReader, t: PlannedTensor, converter):
    """The tensor's output bytes, in row blocks; source pages are dropped as each block is done."""
    import gguf
    import numpy as np

    source = t.source
    raw = reader.array(source)
    if t.transform:  # Q/K permutation and norm offsets need the whole tensor; both are small
        yield _encode(converter.transform(t.name, as_float32(raw, source.dtype)), t.ggml_type, gguf, np)
        reader.release(source)
        return
    rows = raw.reshape(raw.shape[0], -1) if raw.ndim > 1 else raw.reshape(1, -1)
    row_bytes = rows.shape[1] * rows.itemsize
    step = max(1, _BLOCK_BYTES // row_bytes)
    for first in range(0, rows.shape[0], step):
        block = rows[first:first + step]
        if (source.dtype, t.ggml_type) in _SAME_TYPE:
            yield memoryview(np.ascontiguousarray(block)).cast("B")  # straight from the page cache
        else:
            yield _encode(as_float32(block, source.dtype), t.ggml_type, gguf, np)
        reader.release_range(source.path, source.start + first * row_bytes, len(block) * row_bytes)


def _encode(data, ggml_type: str, gguf, np):
    if ggml_type == "F32":
        return np.ascontiguousarray(data, dtype=np.float32)
    if ggml_type == "F16":
        return data.astype(np.float16)
    return gguf.quants.quantize(np.ascontiguousarray(data), gguf.GGMLQuantizationType[ggml_type])
