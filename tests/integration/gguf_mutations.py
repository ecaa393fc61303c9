"""Damaged copies of a real GGUF's leading region (header, metadata, tensor infos), for fuzzing.

`layout` walks an intact GGUF header and lists its structural fields (counts, lengths, type ids,
scalar values, tensor dims/types/offsets) with their byte ranges. `mutations` draws damaged
copies of that region from a seed: bit flips, random bytes, "odd" values (zero, all bits set,
sign bits, NaN) and huge counts and lengths in fields, zeroed ranges, truncation at random places.
Most of a GGUF's header is token text, where a damaged byte changes nothing structural, so most
mutations aim at fields, drawn group by group (file header, key names and types, values,
arrays, tensor infos) so that the few metadata values get their share.

`rebuild` writes a header with keys set, retyped or removed: what a bit flip cannot reach (a
key the file does not have, a token list with a duplicate).

The walker is written for the tests, apart from hearth's parser, so that it cannot share its bugs.
"""

from __future__ import annotations

import random
import struct
from dataclasses import dataclass
from pathlib import Path

_PACK = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
U32, I32, F32, BOOL, STRING, ARRAY, U64 = 4, 5, 6, 7, 8, 9, 10


@dataclass(frozen=True)
class Field:
    offset: int
    size: int
    group: str  # "header" | "key" | "value" | "array" | "tensor"
    kind: str  # "count" | "length" | "type" | "value" | "dim" | "offset" | "magic" | "version"
    where: str  # the key or tensor it belongs to


@dataclass(frozen=True)
class Layout:
    """Where things are in a GGUF header: its fields, each key/value entry, the tensor infos."""

    fields: list[Field]
    entries: list[tuple[str, int, int]]  # (key, start of its value-type field, end of its value)
    tensor_infos: tuple[int, int]  # (start, end) of the tensor-info region


def layout(data: bytes) -> Layout:
    """Walk an intact GGUF header."""
    fields = [Field(0, 4, "header", "magic", "file"), Field(4, 4, "header", "version", "file"),
              Field(8, 8, "header", "count", "tensor count"), Field(16, 8, "header", "count", "key count")]
    n_tensors, n_kv = struct.unpack_from("<QQ", data, 8)
    pos, entries = 24, []
    for _ in range(n_kv):
        key_len = struct.unpack_from("<Q", data, pos)[0]
        key = data[pos + 8: pos + 8 + key_len].decode()
        fields.append(Field(pos, 8, "key", "length", key))
        pos += 8 + key_len
        fields.append(Field(pos, 4, "key", "type", key))
        end = _walk_value(data, pos + 4, struct.unpack_from("<I", data, pos)[0], key, fields)
        entries.append((key, pos, end))
        pos = end
    infos_start = pos
    for _ in range(n_tensors):
        name_len = struct.unpack_from("<Q", data, pos)[0]
        name = data[pos + 8: pos + 8 + name_len].decode()
        fields.append(Field(pos, 8, "tensor", "length", name))
        pos += 8 + name_len
        n_dims = struct.unpack_from("<I", data, pos)[0]
        fields.append(Field(pos, 4, "tensor", "count", name))
        fields += [Field(pos + 4 + 8 * i, 8, "tensor", "dim", name) for i in range(n_dims)]
        pos += 4 + 8 * n_dims
        fields += [Field(pos, 4, "tensor", "type", name), Field(pos + 4, 8, "tensor", "offset", name)]
        pos += 12
    return Layout(fields, entries, (infos_start, pos))


def _walk_value(data: bytes, pos: int, value_type: int, key: str, fields: list[Field]) -> int:
    if value_type in _PACK:
        size = struct.calcsize(_PACK[value_type])
        fields.append(Field(pos, size, "value", "value", key))
        return pos + size
    if value_type == STRING:
        fields.append(Field(pos, 8, "value", "length", key))
        return pos + 8 + struct.unpack_from("<Q", data, pos)[0]
    item_type, count = struct.unpack_from("<IQ", data, pos)
    fields += [Field(pos, 4, "array", "type", key), Field(pos + 4, 8, "array", "count", key)]
    pos += 12
    for i in range(count):
        if item_type == STRING:
            if i < 8 or i >= count - 2:  # the first and last few item lengths are enough
                fields.append(Field(pos, 8, "array", "length", f"{key}[{i}]"))
            pos += 8 + struct.unpack_from("<Q", data, pos)[0]
        else:
            size = struct.calcsize(_PACK[item_type])
            if i < 4:
                fields.append(Field(pos, size, "array", "value", f"{key}[{i}]"))
            pos += size
    return pos


@dataclass(frozen=True)
class Mutation:
    case: int
    description: str
    region: bytes  # the damaged leading region
    truncated: bool  # True: the file ends inside this region (no tensor data after it)


# Values that break assumptions: zero, one, all bits set, sign bits, "just over" sizes, and as
# float32 bit patterns NaN, -inf and -1.0.
_ODD_VALUES = [0, 1, 2, 3, 7, 8, 9, 0x7F, 0x80, 0xFF, 0xFFFF, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF,
               0x7FC00000, 0xFF800000, 0xBF800000, 2**40, 2**62, 2**63 - 1, 2**63, 2**64 - 1]
_FIELD_KINDS = ("bitflip_field", "odd_value", "random_field")
_KINDS = _FIELD_KINDS + ("bitflip_any", "random_bytes", "zero_range", "truncate", "several")


def mutations(region: bytes, seed: int, count: int) -> list[Mutation]:
    """`count` damaged copies of `region` (a GGUF's leading bytes), reproducible from `seed`."""
    rng = random.Random(seed)
    by_group: dict[str, list[Field]] = {}
    for f in layout(region).fields:
        by_group.setdefault(f.group, []).append(f)
    out = []
    for case in range(count):
        data = bytearray(region)
        kind = _KINDS[case % len(_KINDS)]
        if kind == "truncate":
            cut = rng.randrange(0, len(region))
            out.append(Mutation(case, f"truncated at byte {cut}", bytes(data[:cut]), True))
            continue
        description = _mutate(rng, data, by_group, kind)
        out.append(Mutation(case, description, bytes(data), False))
    return out


def _pick_field(rng: random.Random, by_group: dict[str, list[Field]]) -> Field:
    return rng.choice(by_group[rng.choice(sorted(by_group))])


def _mutate(rng: random.Random, data: bytearray, by_group: dict[str, list[Field]], kind: str) -> str:
    if kind == "several":
        return "; ".join(_mutate(rng, data, by_group, rng.choice(_FIELD_KINDS)) for _ in range(rng.randint(2, 4)))
    if kind in _FIELD_KINDS:
        f = _pick_field(rng, by_group)
        if kind == "bitflip_field":
            bit = rng.randrange(8 * f.size)
            data[f.offset + bit // 8] ^= 1 << (bit % 8)
            return f"bit {bit} of the {f.kind} field of {f.where!r} at byte {f.offset}"
        if kind == "odd_value":
            new = (rng.choice(_ODD_VALUES) % (1 << (8 * f.size))).to_bytes(f.size, "little")
        else:
            new = rng.randbytes(f.size)
        data[f.offset:f.offset + f.size] = new
        return f"{f.kind} field of {f.where!r} at byte {f.offset} set to {int.from_bytes(new, 'little')}"
    if kind == "bitflip_any":
        at = rng.randrange(len(data))
        data[at] ^= 1 << rng.randrange(8)
        return f"a bit flipped at byte {at}"
    if kind == "random_bytes":
        at, n = rng.randrange(len(data)), rng.randint(1, 64)
        data[at:at + n] = rng.randbytes(len(data[at:at + n]))
        return f"random bytes at {at}..{at + n}"
    f = _pick_field(rng, by_group)  # zero_range: from a field on
    n = rng.choice([f.size, 16, 256, 4096])
    data[f.offset:f.offset + n] = bytes(len(data[f.offset:f.offset + n]))
    return f"{n} bytes zeroed from byte {f.offset} ({f.where!r})"


def write_case(mutation: Mutation, path: Path, full_size: int) -> Path:
    """The damaged file: the region, then (unless truncated) a hole up to the original size.

    The hole reads as zeros: tensor data llama.cpp can load (all-zero weights) without copying
    the real 100 MB model for every case.
    """
    with open(path, "wb") as handle:
        handle.write(mutation.region)
        if not mutation.truncated:
            handle.truncate(full_size)
    return path


# --- rebuilt headers ------------------------------------------------------------------------
def encode_value(value_type: int, value, item_type: int | None = None) -> bytes:
    """GGUF bytes of one value: a scalar, a string (str or bytes), or an array of `item_type`."""
    if value_type == STRING:
        raw = value.encode() if isinstance(value, str) else bytes(value)
        return struct.pack("<Q", len(raw)) + raw
    if value_type == ARRAY:
        return struct.pack("<IQ", item_type, len(value)) + b"".join(encode_value(item_type, v) for v in value)
    return struct.pack(_PACK[value_type], value)


def rebuild(region: bytes, set_values: dict | None = None, remove: tuple[str, ...] = ()) -> tuple[bytes, int]:
    """A new leading region with keys set (key -> (type, value[, item type])) or removed.

    Returns the region, padded to the default 32-byte alignment, and how far the tensor data
    moved (the tensor offsets are relative to the data, so they stay right).
    """
    found = layout(region)
    version, n_tensors = struct.unpack_from("<IQ", region, 4)
    body = {key: region[start:end] for key, start, end in found.entries}
    for key in remove:
        body.pop(key, None)
    for key, (value_type, value, *item_type) in (set_values or {}).items():
        body[key] = struct.pack("<I", value_type) + encode_value(value_type, value, *item_type)
    out = bytearray(b"GGUF" + struct.pack("<IQQ", version, n_tensors, len(body)))
    for key, raw in body.items():
        out += encode_value(STRING, key) + raw
    out += region[found.tensor_infos[0]:found.tensor_infos[1]]
    out += bytes(-len(out) % 32)
    return bytes(out), len(out) - len(region)


def write_rebuilt(region: bytes, path: Path, full_size: int, **changes) -> Path:
    """A whole file with a rebuilt header; its tensor data is a hole (zeros), as in write_case."""
    new_region, shift = rebuild(region, **changes)
    with open(path, "wb") as handle:
        handle.write(new_region)
        handle.truncate(full_size + shift)
    return path
