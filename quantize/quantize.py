"""GGUF -> smaller GGUF through llama.cpp's quantizer, with the checks llama-quantize lacks.

Refused up front: an unknown type (the valid ones are listed), an output that exists (unless
forced), an input already quantized at or below the target's precision (quantizing "up" only
wastes space: the lost precision does not come back), too little disk space. The output is
written beside its final path and renamed only when llama.cpp reports success; when it fails
because the disk filled up, the error says so (llama.cpp itself only reports a failure).
"""

from __future__ import annotations

import os

import struct
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..errors import ConversionError, DiskSpaceError, HearthError, UsageError, full_disk_reported, no_room_reason
from ..paths import check_free_space, free_bytes
from ..runtime.gguf_file import FILE_TYPE_NAMES

# The types hearth offers, most to least precise, with their approximate bits per weight.
QUANT_BITS: dict[str, float] = {
    "F32": 32.0, "F16": 16.0, "BF16": 16.0, "Q8_0": 8.5, "Q6_K": 6.56, "Q5_K_M": 5.69, "Q5_K_S": 5.54,
    "Q5_0": 5.5, "Q4_1": 5.0, "Q4_K_M": 4.89, "Q4_K_S": 4.58, "Q4_0": 4.5, "IQ4_NL": 4.5, "IQ4_XS": 4.25,
    "Q3_K_L": 4.27, "Q3_K_M": 3.91, "Q3_K_S": 3.5, "Q2_K": 3.0,
}
_FLOAT_TYPES = ("F32", "F16", "BF16")
_FREE_SPACE_HINT = "free some space or write elsewhere with -o"


@dataclass(frozen=True)
class QuantizeResult:
    path: Path
    quant: str
    input_type: str
    input_bytes: int
    output_bytes: int
    seconds: float
    requantized: bool  # the input was already quantized (some precision lost twice)


def normalize_type(type_name: str) -> str:
    name = type_name.strip().upper()
    if name not in QUANT_BITS:
        raise UsageError(f"unknown quant type {type_name!r}", hint="valid: " + ", ".join(QUANT_BITS))
    return name


def input_type_name(info) -> str:
    """What a GGUF already is: its declared file type, else its most common matrix type."""
    declared = info.metadata.get("general.file_type")
    if isinstance(declared, int) and declared in FILE_TYPE_NAMES:
        return FILE_TYPE_NAMES[declared]
    counts: dict[str, int] = {}
    for t in info.tensors:
        if len(t.shape) >= 2:
            counts[t.type_name] = counts.get(t.type_name, 0) + t.n_bytes
    return max(counts, key=counts.get) if counts else "F32"


def check_target(input_type: str, target: str) -> bool:
    """True when llama.cpp must requantize; raises when the input is already below the target."""
    if input_type in _FLOAT_TYPES:
        return False
    if QUANT_BITS.get(input_type, 0.0) <= QUANT_BITS[target]:
        raise ConversionError(
            f"the input is already {input_type}, at or below {target}: quantizing it again cannot restore precision",
            hint="quantize from the F16/BF16/F32 GGUF (hearth convert writes one)")
    return True


def default_output(src: Path, quant: str) -> Path:
    stem = src.stem
    for name in sorted(QUANT_BITS, key=len, reverse=True):
        for sep in ("-", ".", "_"):
            if stem.upper().endswith(sep + name):
                stem = stem[: -len(name) - 1]
    return src.with_name(f"{stem}-{quant}.gguf")


def quantize_file(src: str | Path, quant: str, out: str | Path | None = None, threads: int | None = None,
                  imatrix_path: str | Path | None = None, force: bool = False,
                  on_progress: Callable | None = None) -> QuantizeResult:
    from ..runtime.gguf_file import read_gguf
    from ..runtime.engine import quantize_gguf

    src = Path(src)
    quant = normalize_type(quant)
    info = read_gguf(src)
    input_type = input_type_name(info)
    requantize = check_target(input_type, quant)
    out = Path(out) if out else default_output(src, quant)
    if out.resolve() == src.resolve():
        raise UsageError("the output would overwrite the input", hint="choose another -o")
    if out.exists() and not force:
        raise UsageError(f"{out} already exists", hint="pass --force to replace it")
    imatrix = load_imatrix(Path(imatrix_path)) if imatrix_path else None
    needed = int(info.n_params * QUANT_BITS[quant] / 8) + (16 << 20)
    check_free_space(needed, free_bytes(out.parent), out.parent, out.name, hint=_FREE_SPACE_HINT)
    with full_disk_reported(out, hint=_FREE_SPACE_HINT):
        out.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
        os.close(fd)
    started = time.perf_counter()
    try:
        quantize_gguf(src, tmp_name, quant, threads or max(1, os.cpu_count() or 1), imatrix,
                      allow_requantize=requantize, on_progress=on_progress)
        read_gguf(tmp_name)  # llama.cpp wrote it; check it is whole before it takes the name
        os.replace(tmp_name, out)
    except HearthError:
        # llama.cpp reports a failed write only as a failed quantization: ask the file system why.
        reason = why_it_cannot_grow(Path(tmp_name))
        if reason is None:
            raise
        raise DiskSpaceError(f"{reason}: llama.cpp could not write {out}; nothing was left behind",
                             hint=_FREE_SPACE_HINT) from None
    finally:
        Path(tmp_name).unlink(missing_ok=True)
    return QuantizeResult(out, quant, input_type, info.file_size, out.stat().st_size,
                          time.perf_counter() - started, requantize)


def why_it_cannot_grow(path: Path, n_bytes: int = 1 << 20) -> str | None:
    """After a writer outside Python (llama.cpp) failed on `path`: the reason another `n_bytes`
    cannot be appended to it (disk full, quota, file-size limit), or None when they can.

    A write that ran out of room filled the disk to its last block, so a megabyte more fails
    the same way; the caller deletes the file either way.
    """
    try:
        with open(path, "ab") as handle:
            handle.write(bytes(n_bytes))
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as exc:
        return no_room_reason(exc)
    return None


def load_imatrix(path: Path) -> dict[str, "object"]:
    """Importance matrix from llama-imatrix: GGUF (`NAME.in_sum2` / `NAME.counts`) or legacy .dat."""
    import numpy as np

    if not path.is_file():
        raise UsageError(f"imatrix file not found: {path}")
    with open(path, "rb") as handle:
        magic = handle.read(4)
    try:
        return _imatrix_gguf(path, np) if magic == b"GGUF" else _imatrix_legacy(path.read_bytes(), np)
    except (struct.error, ValueError, IndexError) as exc:
        raise ConversionError(f"{path} is not a valid imatrix file: {exc}") from None


def _imatrix_gguf(path: Path, np) -> dict:
    from ..runtime.gguf_file import read_gguf

    info = read_gguf(path)
    by_name = {t.name: t for t in info.tensors}
    out = {}
    with open(path, "rb") as handle:
        def floats(t):
            handle.seek(t.offset)
            return np.frombuffer(handle.read(t.n_bytes), dtype=np.float32)

        for name, t in by_name.items():
            if not name.endswith(".in_sum2") or name[:-8] + ".counts" not in by_name:
                continue
            sums, counts = floats(t), floats(by_name[name[:-8] + ".counts"])
            per = sums.reshape(len(counts), -1)
            out[name[:-8]] = np.where(counts[:, None] > 0, per / np.maximum(counts[:, None], 1), 1.0).ravel()
    if not out:
        raise ConversionError(f"{path} holds no importance data")
    return out


def _imatrix_legacy(data: bytes, np) -> dict:
    (n_entries,), pos, out = struct.unpack_from("<i", data, 0), 4, {}
    for _ in range(n_entries):
        (length,) = struct.unpack_from("<i", data, pos)
        name = data[pos + 4: pos + 4 + length].decode()
        pos += 4 + length
        ncall, nval = struct.unpack_from("<ii", data, pos)
        values = np.frombuffer(data, dtype=np.float32, count=nval, offset=pos + 8)
        pos += 8 + 4 * nval
        out[name] = values / ncall if ncall > 0 else values.copy()
    return out
