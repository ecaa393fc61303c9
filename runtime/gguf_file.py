"""Read and validate a GGUF file's header without loading the model.

llama.cpp trusts its input: a truncated or corrupted file can crash it. Everything hearth hands
to llama.cpp is checked here first (magic, version, every key/value, every tensor's bounds, and
through `gguf_checks` the values llama.cpp only asserts on); an error says where the damage is.
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

    def read_raw_strings(self, key: str) -> list[bytes] | None:
        """A string array's items as the bytes in the file (None if `key` is not a string array).

        Bytes, not text: two tokens that differ only in invalid UTF-8 are different tokens.
        """
        value = self.metadata.get(key)
        if isinstance(value, list):
            return [v.encode("utf-8") for v in value] if all(isinstance(v, str) for v in value) else None
        if not isinstance(value, LazyArray) or value.item_type != _STRING:
            return None
        unpack, pos, items = struct.Struct("<Q").unpack_from, value.offset, []
        with open(self.path, "rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            for _ in range(value.count):  # bounds were checked when the header was read
                length = unpack(buf, pos)[0]
                items.append(buf[pos + 8: pos + 8 + length])
                pos += 8 + length
        return items


REDOWNLOAD_HINT = "download or convert it again"
GGML_MAX_DIMS = 4  # llama.cpp refuses tensors with more dimensions
_MIN_KV_BYTES = 8 + 4 + 1  # a key's length, a value type, the smallest value
_MIN_TENSOR_INFO_BYTES = 8 + 4 + 4 + 8  # name length, n_dims, type, offset


class _Reader:
    """Reads a GGUF header from a buffer and knows what it is reading, for the error message.

    Every defect becomes a one-line BadModelFileError naming the file, the byte offset and the
    part of the header (which key, which tensor) where the parse went wrong.
    """

    def __init__(self, path: Path, buf, size: int):
        self.path, self.buf, self.size = path, buf, size
        self.pos = 0
        self.where = "the file header"

    def corrupt(self, what: str, at: int | None = None) -> BadModelFileError:
        at = self.pos if at is None else at
        return BadModelFileError(f"{self.path} is corrupted at byte {at:,} ({self.where}): {what}",
                                 hint=REDOWNLOAD_HINT)

    def truncated(self, at: int | None = None) -> BadModelFileError:
        at = self.pos if at is None else at
        return BadModelFileError(
            f"{self.path} is truncated or corrupted: {self.where} at byte {at:,} runs past the end "
            f"of the file ({self.size:,} bytes)",
            hint=REDOWNLOAD_HINT,
        )

    def need(self, n: int, at: int | None = None) -> None:
        at = self.pos if at is None else at
        if at + n > self.size:
            raise self.truncated(at)

    def unpack(self, fmt: str) -> tuple:
        width = struct.calcsize(fmt)
        self.need(width)
        values = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += width
        return values

    def string(self) -> str:
        (length,) = self.unpack("<Q")
        self.need(length)
        text = bytes(self.buf[self.pos: self.pos + length]).decode("utf-8", errors="replace")
        self.pos += length
        return text

    def value(self, value_type: int) -> Any:
        """One metadata value; arrays longer than _EAGER_ARRAY_LIMIT stay in the file (LazyArray)."""
        if value_type in _SCALAR:
            return self.unpack(_SCALAR[value_type])[0]
        if value_type == _STRING:
            return self.string()
        if value_type != _ARRAY:
            raise self.corrupt(f"unknown metadata value type {value_type}", at=self.pos - 4)
        item_type, count = self.unpack("<IQ")
        if item_type not in _SCALAR and item_type != _STRING:
            raise self.corrupt(f"unsupported array item type {item_type}", at=self.pos - 12)
        # Each item takes at least its width (a string at least its 8-byte length): a count the
        # rest of the file cannot hold is refused before walking it.
        width = 8 if item_type == _STRING else struct.calcsize(_SCALAR[item_type])
        if count > (self.size - self.pos) // width:
            raise self.truncated(at=self.pos - 8)
        if count <= _EAGER_ARRAY_LIMIT:
            items, self.pos = _read_array_items(self.buf, self.pos, item_type, count, self.size)
            return items
        lazy = LazyArray(item_type, count, self.pos)
        if item_type == _STRING:
            self.pos = _skip_strings(self.buf, self.pos, count, self.size)
        else:
            self.pos += width * count
        return lazy


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
    fmt = _SCALAR[item_type]
    width = struct.calcsize(fmt)
    _need(pos, width * count, size)
    return list(struct.unpack_from(f"<{count}{fmt[1]}", buf, pos)), pos + width * count


def read_gguf(path: str | Path) -> GGUFInfo:
    """Parse and validate a GGUF header; raise a one-line HearthError for any defect.

    Checked here: the structure (every length, count and offset within the file, no duplicate
    keys or tensor names, known value and tensor types) and the hyper-parameters llama.cpp is
    known to abort on (`gguf_checks.check_metadata`).
    """
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
            reader = _Reader(path, buf, size)
            try:
                info = _parse(reader)
            except _Truncated:
                raise reader.truncated() from None
            except (struct.error, OverflowError, MemoryError) as exc:
                raise reader.corrupt(str(exc) or type(exc).__name__) from None
    from .gguf_checks import check_metadata

    check_metadata(info)
    return info


def _parse(reader: _Reader) -> GGUFInfo:
    reader.pos = 4
    version, n_tensors, n_kv = reader.unpack("<IQQ")
    if version not in (2, 3):
        raise reader.corrupt(f"unsupported GGUF version {version}", at=4)
    room = reader.size - reader.pos
    if n_kv > min(1_000_000, room // _MIN_KV_BYTES) or n_tensors > min(1_000_000, room // _MIN_TENSOR_INFO_BYTES):
        raise reader.corrupt(f"implausible counts ({n_tensors:,} tensors, {n_kv:,} keys)", at=8)
    metadata = _read_metadata(reader, n_kv)
    raw = [_read_tensor_info(reader, i) for i in range(n_tensors)]
    alignment = metadata.get("general.alignment", DEFAULT_ALIGNMENT)
    if not isinstance(alignment, int) or isinstance(alignment, bool) or alignment <= 0 or alignment & (alignment - 1):
        raise BadModelFileError(f"{reader.path} is corrupted: general.alignment is {_shown(alignment)}: "
                                "not a power of two", hint=REDOWNLOAD_HINT)
    data_offset = (reader.pos + alignment - 1) // alignment * alignment
    names: set[str] = set()
    tensors = []
    for index, row in enumerate(raw):
        reader.where = f"tensor info #{index} {_shown(row[0])}"
        if row[0] in names:
            raise reader.corrupt("a second tensor with this name", at=row[4])
        names.add(row[0])
        tensors.append(_tensor(reader, data_offset, alignment, *row))
    return GGUFInfo(reader.path, version, reader.size, metadata, tensors, data_offset)


def _read_metadata(reader: _Reader, n_kv: int) -> dict[str, Any]:
    metadata: dict[str, Any] = {}
    for index in range(n_kv):
        reader.where = f"metadata key #{index}"
        key = reader.string()
        reader.where = f"metadata key #{index} {_shown(key)}"
        if key in metadata:
            raise reader.corrupt("a second value for this key")
        (value_type,) = reader.unpack("<I")
        metadata[key] = reader.value(value_type)
    return metadata


def _read_tensor_info(reader: _Reader, index: int) -> tuple[str, tuple[int, ...], int, int, int]:
    start = reader.pos
    reader.where = f"tensor info #{index}"
    name = reader.string()
    reader.where = f"tensor info #{index} {_shown(name)}"
    (n_dims,) = reader.unpack("<I")
    if n_dims > GGML_MAX_DIMS:
        raise reader.corrupt(f"{n_dims:,} dimensions (at most {GGML_MAX_DIMS})", at=reader.pos - 4)
    shape = reader.unpack(f"<{n_dims}Q")
    if any(d >= 2**63 for d in shape):  # llama.cpp reads dimensions as signed 64-bit numbers
        raise reader.corrupt(f"negative dimension in shape {shape}", at=reader.pos - 8 * n_dims)
    ggml_type, rel_offset = reader.unpack("<IQ")
    return name, tuple(shape), ggml_type, rel_offset, start


def _tensor(reader: _Reader, data_offset: int, alignment: int, name: str, shape, ggml_type: int,
            rel: int, info_at: int) -> TensorInfo:
    if ggml_type not in GGML_TYPES:
        raise reader.corrupt(f"unknown type {ggml_type} (not a ggml tensor type)", at=info_at)
    type_name, block, type_size = GGML_TYPES[ggml_type]
    if (shape[0] if shape else 1) % block:  # llama.cpp checks the first dimension
        raise reader.corrupt(f"shape {shape} does not fit its type {type_name} (blocks of {block})", at=info_at)
    n_elements = 1
    for d in shape:
        n_elements *= d
    if rel % alignment:
        raise reader.corrupt(f"data offset {rel:,} is not a multiple of the alignment {alignment}", at=info_at)
    n_bytes = n_elements // block * type_size
    start = data_offset + rel
    if start + n_bytes > reader.size:
        raise BadModelFileError(
            f"{reader.path} is truncated or corrupted: tensor {_shown(name)} ends at byte {start + n_bytes:,} "
            f"but the file has {reader.size:,} bytes",
            hint=REDOWNLOAD_HINT,
        )
    return TensorInfo(name, shape, ggml_type, start, n_bytes)


def _shown(value: Any, limit: int = 60) -> str:
    """A value for an error message: repr'd (control characters escaped), cut to `limit`."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
