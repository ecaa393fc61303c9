"""safetensors shards for `hearth convert`: headers parsed eagerly, data mapped lazily.

Headers are validated against the file (dtype, shape x dtype size = byte range, range inside the
file), so a truncated or corrupted shard is refused before any output is written. Data is read
through one memory map per shard as zero-copy numpy views, and pages are dropped from the process
once a block is converted. Only safetensors are read: pickle checkpoints can run code when loaded.
"""

from __future__ import annotations

import json
import math
import mmap
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConversionError
from ..hub.checkpoint import PICKLE_SUFFIXES

# safetensors dtype -> (numpy dtype name, bytes per element); BF16 is read as raw uint16.
_ST_DTYPES = {"F32": ("float32", 4), "F16": ("float16", 2), "BF16": ("uint16", 2), "F64": ("float64", 8)}


@dataclass(frozen=True)
class SourceTensor:
    name: str
    dtype: str  # safetensors dtype: F32 | F16 | BF16 | F64
    shape: tuple[int, ...]
    path: Path
    start: int  # absolute byte offset in the shard
    n_bytes: int


def find_weight_files(folder: Path) -> list[Path]:
    shards = sorted(folder.glob("*.safetensors"))
    if shards:
        return shards
    pickles = [p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES]
    if pickles:
        raise ConversionError(
            f"{folder} has only pickle weights ({', '.join(sorted(pickles)[:3])}); hearth reads safetensors only",
            hint="pickle files can run code when loaded; use a repo revision with *.safetensors",
        )
    raise ConversionError(f"{folder} has no *.safetensors weights")


def read_safetensors_header(path: Path) -> list[SourceTensor]:
    size = path.stat().st_size
    with open(path, "rb") as handle:
        head = handle.read(8)
        if len(head) < 8:
            raise ConversionError(f"{path.name} is truncated (no header)", hint="download it again")
        (header_len,) = struct.unpack("<Q", head)
        if header_len > min(size - 8, 100 << 20):
            raise ConversionError(f"{path.name} is truncated or not safetensors (header of {header_len:,} bytes)",
                                  hint="download it again")
        try:
            header = json.loads(handle.read(header_len))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise ConversionError(f"{path.name} has a corrupted header", hint="download it again") from None
    data_start = 8 + header_len
    tensors = []
    for name, info in header.items():
        if name == "__metadata__":
            continue
        tensors.append(_source_tensor(path, name, info, data_start, size))
    return tensors


def _source_tensor(path: Path, name: str, info: dict, data_start: int, size: int) -> SourceTensor:
    dtype, shape, (begin, end) = info["dtype"], tuple(info["shape"]), info["data_offsets"]
    if dtype not in _ST_DTYPES:
        raise ConversionError(f"{path.name}: tensor {name!r} has dtype {dtype}; only float tensors convert",
                              hint="already-quantized checkpoints (int8/fp8) are not supported")
    expected = math.prod(shape) * _ST_DTYPES[dtype][1]
    if end - begin != expected:
        raise ConversionError(f"{path.name}: tensor {name!r} holds {end - begin:,} bytes, its shape {list(shape)} "
                              f"needs {expected:,}", hint="the shard is corrupted; download it again")
    if data_start + end > size:
        raise ConversionError(f"{path.name} is truncated: tensor {name!r} ends at byte {data_start + end:,} "
                              f"but the file has {size:,}", hint="download it again")
    return SourceTensor(name, dtype, shape, path, data_start + begin, end - begin)


class ShardReader:
    """Memory-maps each shard once; hands out zero-copy numpy views; drops pages after use."""

    def __init__(self) -> None:
        self._maps: dict[Path, tuple[Any, mmap.mmap]] = {}

    def array(self, tensor: SourceTensor):
        import numpy as np

        if tensor.path not in self._maps:
            handle = open(tensor.path, "rb")
            self._maps[tensor.path] = (handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ))
        buf = self._maps[tensor.path][1]
        count = math.prod(tensor.shape)
        raw = np.frombuffer(buf, dtype=_ST_DTYPES[tensor.dtype][0], count=count, offset=tensor.start)
        return raw.reshape(tensor.shape)

    def release(self, tensor: SourceTensor) -> None:
        self.release_range(tensor.path, tensor.start, tensor.n_bytes)

    def release_range(self, path: Path, start: int, n_bytes: int) -> None:
        """Drop mapped pages from this process's memory (they stay in the page cache)."""
        buf = self._maps.get(path, (None, None))[1]
        if buf is None or not hasattr(mmap, "MADV_DONTNEED"):
            return
        first = start - start % mmap.PAGESIZE
        try:
            buf.madvise(mmap.MADV_DONTNEED, first, start + n_bytes - first)
        except (OSError, ValueError):
            pass

    def close(self) -> None:
        for handle, buf in self._maps.values():
            try:
                buf.close()
            except BufferError:  # a view is still alive; the GC closes it later
                pass
            handle.close()
        self._maps.clear()


def as_float32(array, dtype: str):
    import numpy as np

    if dtype == "BF16":
        return (array.astype(np.uint32) << 16).view(np.float32)
    return array.astype(np.float32, copy=False)
