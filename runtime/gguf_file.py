"""Read and validate a GGUF file's header without loading the model.

llama.cpp trusts its input: a truncated or corrupted file can crash it. Everything hearth hands
to llama.cpp is checked here first (magic, version, every key/value, every tensor's bounds).
The parser is hearth's own because `gguf.GGUFReader` parses every token array eagerly (~2 s on
a 100 MB model); here string arrays are skipped and only their offset is kept.
"""

from __future__ import annotations

import mmap
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import BadModelFileError, ModelNotFoundError

# general.file_type values (llama.cpp's llama_ftype) by name: the one table of file types, used
# to say what a file is, to write a converted file's type, and to ask llama.cpp to quantize.
FILE_TYPES: dict[str, int] = {
    "F32": 0, "F16": 1, "Q4_0": 2, "Q4_1": 3, "Q8_0": 7, "Q5_0": 8, "Q2_K": 10, "Q3_K_S": 11, "Q3_K_M": 12,
    "Q3_K_L": 13, "Q4_K_S": 14, "Q4_K_M": 15, "Q5_K_S": 16, "Q5_K_M": 17, "Q6_K": 18, "IQ4_NL": 25, "IQ4_XS": 30,
    "BF16": 32,
}
FILE_TYPE_NAMES: dict[int, str] = {value: name for name, value in FILE_TYPES.items()}

GGUF_MAGIC = b"GGUF"
DEFAULT_ALIGNMENT = 32

# value type id -> struct format (scalars)
_SCALAR = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9
# Arrays longer than this are kept as a lazy reference, not materialised.
_EAGER_ARRAY_LIMIT = 1024

# ggml type id -> (name, elements per block, bytes per block). Mirrors ggml's type table; the
# `gguf` package has the same (GGML_QUANT_SIZES) but importing it pulls numpy into start-up.
GGML_TYPES: dict[int, tuple[str, int, int]] = {
    0: ("F32", 1, 4), 1: ("F16", 1, 2), 2: ("Q4_0", 32, 18), 3: ("Q4_1", 32, 20),
    6: ("Q5_0", 32, 22), 7: ("Q5_1", 32, 24), 8: ("Q8_0", 32, 34), 9: ("Q8_1", 32, 36),
    10: ("Q2_K", 256, 84), 11: ("Q3_K", 256, 110), 12: ("Q4_K", 256, 144), 13: ("Q5_K", 256, 176),
    14: ("Q6_K", 256, 210), 15: ("Q8_K", 256, 292), 16: ("IQ2_XXS", 256, 66), 17: ("IQ2_XS", 256, 74),
    18: ("IQ3_XXS", 256, 98), 19: ("IQ1_S", 256, 50), 20: ("IQ4_NL", 32, 18), 21: ("IQ3_S", 256, 110),
    22: ("IQ2_S", 256, 82), 23: ("IQ4_XS", 256, 136), 24: ("I8", 1, 1), 25: ("I16", 1, 2),
    26: ("I32", 1, 4), 27: ("I64", 1, 8), 28: ("F64", 1, 8), 29: ("IQ1_M", 256, 56),
    30: ("BF16", 1, 2), 34: ("TQ1_0", 256, 54), 35: ("TQ2_0", 256, 66), 39: ("MXFP4", 32, 17),
}


@dataclass(frozen=True)
class LazyArray:
    """A long metadata array (token list, merges) left in the file: type, length, offset."""

    item_type: int
    count: int
    offset: int


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]
    ggml_type: int
    offset: int  # absolute offset in the file
    n_bytes: int

    @property
    def type_name(self) -> str:
        return GGML_TYPES.get(self.ggml_type, (f"type{self.ggml_type}",))[0]

    @property
    def n_elements(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


@dataclass
class GGUFInfo:
    path: Path
    version: int
    file_size: int
    metadata: dict[str, Any]
    tensors: list[TensorInfo] = field(default_factory=list)
    data_offset: int = 0

    @property
    def architecture(self) -> str:
        return str(self.metadata.get("general.architecture", "unknown"))

    def arch_value(self, key: str, default: Any = None) -> Any:
        """A per-architecture key such as `block_count` (stored as `llama.block_count`)."""
        return self.metadata.get(f"{self.architecture}.{key}", default)

    @property
    def chat_template(self) -> str | None:
        template = self.metadata.get("tokenizer.chat_template")
        return template if isinstance(template, str) and template.strip() else None

    @property
    def n_params(self) -> int:
        return sum(t.n_elements for t in self.tensors)

    @property
    def weights_bytes(self) -> int:
        return sum(t.n_bytes for t in self.tensors)

    def read_array(self, key: str) -> list:
        """Materialise a metadata array (eager or lazy)."""
        value = self.metadata.get(key)
        if not isinstance(value, LazyArray):
            return list(value or [])
        with open(self.path, "rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            items, _ = _read_array_items(buf, value.offset, value.item_type, value.count, self.file_size)
        return items


class _Truncated(Exception):
    pass


def _need(pos: int, n: int, size: int) -> None:
    if pos + n > size:
        raise _Truncated()


def _read_string(buf, pos: int, size: int) -> tuple[str, int]:
    _need(pos, 8, size)
    (length,) = struct.unpack_from("<Q", buf, pos)
    pos += 8
    _need(pos, length, size)
    return bytes(buf[pos : pos + length]).decode("utf-8", errors="replace"), pos + length


def _skip_strings(buf, pos: int, count: int, size: int) -> int:
    unpack = struct.Struct("<Q").unpack_from
    for _ in range(count):
        _need(pos, 8, size)
        pos += 8 + unpack(buf, pos)[0]
    _need(pos, 0, size)
    return pos


def _read_array_items(buf, pos: int, item_type: int, count: int, size: int) -> tuple[list, int]:
    if item_type == _STRING:
        items = []
        for _ in range(count):
            item, pos = _read_string(buf, pos, size)
            items.append(item)
        return items, pos
    if item_type in _SCALAR:
        fmt = _SCALAR[item_type]
        width = struct.calcsize(fmt)
        _need(pos, width * count, size)
        items = list(struct.unpack_from(f"<{count}{fmt[1]}", buf, pos))
        return items, pos + width * count
    raise BadModelFileError(f"unsupported nested array type {item_type}")


def _read_value(buf, pos: int, value_type: int, size: int) -> tuple[Any, int]:
    if value_type in _SCALAR:
        fmt = _SCALAR[value_type]
        _need(pos, struct.calcsize(fmt), size)
        return struct.unpack_from(fmt, buf, pos)[0], pos + struct.calcsize(fmt)
    if value_type == _STRING:
        return _read_string(buf, pos, size)
    if value_type == _ARRAY:
        _need(pos, 12, size)
        item_type, count = struct.unpack_from("<IQ", buf, pos)
        pos += 12
        if count <= _EAGER_ARRAY_LIMIT:
            return _read_array_items(buf, pos, item_type, count, size)
        lazy = LazyArray(item_type, count, pos)
        if item_type == _STRING:
            return lazy, _skip_strings(buf, pos, count, size)
        if item_type not in _SCALAR:
            raise BadModelFileError(f"unsupported array type {item_type}")
        end = pos + struct.calcsize(_SCALAR[item_type]) * count
        _need(end, 0, size)
        return lazy, end
    raise BadModelFileError(f"unknown metadata value type {value_type}")


def read_gguf(path: str | Path) -> GGUFInfo:
    """Parse and validate a GGUF header; raise a one-line HearthError for any defect."""
    path = Path(path)
    if not path.exists():
        raise ModelNotFoundError(f"model file not found: {path}")
    if path.is_dir():
        raise BadModelFileError(f"{path} is a directory, not a GGUF file")
    size = os.path.getsize(path)
    if size < 24:
        raise BadModelFileError(f"{path} is not a GGUF file ({size} bytes, too small)")
    with open(path, "rb") as handle:
        if handle.read(4) != GGUF_MAGIC:
            raise BadModelFileError(f"{path} is not a GGUF file (bad magic bytes)")
        with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            try:
                return _parse(path, buf, size)
            except _Truncated:
                raise BadModelFileError(
                    f"{path} is truncated or corrupted: its header runs past the end of the file",
                    hint="download or convert it again",
                ) from None
            except (struct.error, UnicodeDecodeError, OverflowError, MemoryError) as exc:
                raise BadModelFileError(f"{path} is corrupted: {exc}") from None


def _parse(path: Path, buf, size: int) -> GGUFInfo:
    version, n_tensors, n_kv = struct.unpack_from("<IQQ", buf, 4)
    if version not in (2, 3):
        raise BadModelFileError(f"{path}: unsupported GGUF version {version}")
    if n_tensors > 1_000_000 or n_kv > 1_000_000:
        raise BadModelFileError(f"{path} is corrupted: implausible counts ({n_tensors} tensors, {n_kv} keys)")
    pos = 24
    metadata: dict[str, Any] = {}
    for _ in range(n_kv):
        key, pos = _read_string(buf, pos, size)
        _need(pos, 4, size)
        (value_type,) = struct.unpack_from("<I", buf, pos)
        metadata[key], pos = _read_value(buf, pos + 4, value_type, size)
    raw: list[tuple[str, tuple[int, ...], int, int]] = []
    for _ in range(n_tensors):
        name, pos = _read_string(buf, pos, size)
        _need(pos, 4, size)
        (n_dims,) = struct.unpack_from("<I", buf, pos)
        if n_dims > 8:
            raise BadModelFileError(f"{path} is corrupted: tensor {name!r} has {n_dims} dimensions")
        _need(pos + 4, 8 * n_dims + 12, size)
        shape = struct.unpack_from(f"<{n_dims}Q", buf, pos + 4)
        ggml_type, rel_offset = struct.unpack_from("<IQ", buf, pos + 4 + 8 * n_dims)
        pos += 4 + 8 * n_dims + 12
        raw.append((name, tuple(shape), ggml_type, rel_offset))
    alignment = int(metadata.get("general.alignment", DEFAULT_ALIGNMENT)) or DEFAULT_ALIGNMENT
    data_offset = (pos + alignment - 1) // alignment * alignment
    tensors = [_tensor(path, size, data_offset, *row) for row in raw]
    return GGUFInfo(path, version, size, metadata, tensors, data_offset)


def _tensor(path: Path, size: int, data_offset: int, name: str, shape, ggml_type: int, rel: int) -> TensorInfo:
    if ggml_type not in GGML_TYPES:
        raise BadModelFileError(f"{path} is corrupted: tensor {name!r} has unknown type {ggml_type}")
    _, block, type_size = GGML_TYPES[ggml_type]
    n_elements = 1
    for d in shape:
        n_elements *= d
    if n_elements % block:
        raise BadModelFileError(f"{path} is corrupted: tensor {name!r} shape {shape} does not fit its type")
    n_bytes = n_elements // block * type_size
    start = data_offset + rel
    if start + n_bytes > size:
        raise BadModelFileError(
            f"{path} is truncated: tensor {name!r} ends at byte {start + n_bytes:,} "
            f"but the file has {size:,} bytes",
            hint="download or convert it again",
        )
    return TensorInfo(name, shape, ggml_type, start, n_bytes)
