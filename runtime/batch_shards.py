"""Batch jobs split without Ray: `--shard I/N` picks a share of the lines, `batch-merge` joins
the shard outputs and checks that every input id is there exactly once.

A line belongs to shard `sha256(json(id)) % N` — a stable hash, the same on every machine and
in every Python process (Python's own `hash()` of a string is salted per process), so N jobs
started anywhere (a Slurm array, plain ssh) each take a disjoint share and together take all.
A line without an id has its line number as id, exactly as in `hearth batch`.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from ..errors import InputFormatError, UsageError


@dataclass(frozen=True)
class Shard:
    index: int
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def holds(self, item_id: Any) -> bool:
        return shard_of(item_id, self.count) == self.index


def parse_shard(text: str) -> Shard:
    """'I/N' -> Shard(I, N), with 0 <= I < N."""
    index, sep, count = text.partition("/")
    try:
        shard = Shard(int(index), int(count)) if sep else None
    except ValueError:
        shard = None
    if shard is None or shard.count < 1 or not 0 <= shard.index < shard.count:
        raise UsageError(f"--shard takes I/N with 0 <= I < N (e.g. 0/4), got {text!r}")
    return shard


def shard_of(item_id: Any, count: int) -> int:
    """The shard of an id: the first 8 bytes of sha256 of its JSON form, modulo `count`."""
    digest = hashlib.sha256(json.dumps(item_id).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % count


def line_id(text: str, line_no: int) -> Any:
    """The id `hearth batch` shards a line by: its "id", else its line number (also for a line
    that is not valid JSON, or has an id of the wrong type: its error record carries the number)."""
    item_id = readable_id(text, line_no)
    return line_no if item_id is None else item_id


def input_ids(lines: Iterable[str], shard: Shard | None = None) -> list[Any]:
    """The ids of an input's lines (blank lines skipped, line numbers counted as `hearth batch`
    counts them), only those of `shard` when given."""
    ids = []
    for line_no, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        item_id = line_id(text, line_no)
        if shard is None or shard.holds(item_id):
            ids.append(item_id)
    return ids


def readable_id(text: str, line_no: int):
    """The line's own id, or None when `hearth batch` cannot read one (its error record then has
    `"id": null` and `"line": N`)."""
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, RecursionError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    item_id = data.get("id", line_no)
    return item_id if isinstance(item_id, (str, int)) and not isinstance(item_id, bool) else None


def input_keys(lines: Iterable[str], shard: Shard | None = None) -> list[str]:
    """The key of each input line's record (`id_key` of its id, or `line_key` of its number when
    its id cannot be read), only those of `shard` when given."""
    from .jsonl_batch import id_key, line_key

    keys = []
    for line_no, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        if shard is None or shard.holds(line_id(text, line_no)):
            item_id = readable_id(text, line_no)
            keys.append(line_key(line_no) if item_id is None else id_key(item_id))
    return keys


def record_key(record: dict) -> str:
    """The key an output record answers: its id, or its line when its id could not be read."""
    from .jsonl_batch import id_key, line_key

    if record.get("id") is None and isinstance(record.get("line"), int):
        return line_key(record["line"])
    return id_key(record["id"])


def _shown(key: str):
    return key if key.startswith("line ") else json.loads(key)


@dataclass
class MergeReport:
    output: Path | None
    records: int = 0
    ids: int = 0
    files: int = 0
    checked_input: bool = False
    missing: list = field(default_factory=list)
    duplicated: list = field(default_factory=list)
    unexpected: list = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.duplicated or self.unexpected)

    def to_dict(self) -> dict:
        return {"output": str(self.output) if self.output else None, "records": self.records, "ids": self.ids,
                "files": self.files, "checked_input": self.checked_input, "missing": self.missing,
                "duplicated": self.duplicated, "unexpected": self.unexpected}


def merge_outputs(parts: list[Path], output: Path | None, input_path: Path | None = None) -> MergeReport:
    """Join shard outputs into `output` (written to a temp file, renamed only when every check
    passes: nothing half-written) and check each id appears exactly as often as in the input
    (once, or once per line for an id the input repeats: `hearth batch` writes a text record
    for the first and an error record for the repeat). Without the input, only repeats are
    checked. `output=None` checks without writing."""
    records: list[str] = []
    seen: Counter = Counter()
    for part in parts:
        for raw in _read_lines(part):
            if not raw.strip():
                continue
            try:
                record = json.loads(raw)
            except json.JSONDecodeError:
                raise InputFormatError(f"{part} has a line that is not JSON (a torn write?)",
                                       hint="rerun that shard's `hearth batch` with the same -o to repair it") from None
            if not isinstance(record, dict) or "id" not in record:
                raise InputFormatError(f"{part} has a line without an id: is it a `hearth batch` output?")
            seen[record_key(record)] += 1
            records.append(raw if raw.endswith("\n") else raw + "\n")
    report = MergeReport(output, len(records), len(seen), len(parts))
    expected = Counter(input_keys(_read_lines(input_path))) if input_path else None
    if expected is None:
        report.duplicated = sorted((_shown(k) for k, n in seen.items() if n > 1), key=str)
    else:
        report.checked_input = True
        report.missing = sorted((_shown(k) for k, n in expected.items() if seen[k] < n), key=str)
        report.duplicated = sorted((_shown(k) for k, n in seen.items() if k in expected and n > expected[k]), key=str)
        report.unexpected = sorted((_shown(k) for k in seen if k not in expected), key=str)
    if report.ok and output is not None:
        _write_all(output, records)
    return report


def _read_lines(path: Path) -> list[str]:
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.readlines()
    except FileNotFoundError:
        raise UsageError(f"file not found: {path}") from None
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise InputFormatError(f"{path} is not UTF-8 text") from None


def _write_all(output: Path, records: list[str]) -> None:
    temp = output.with_name(f".{output.name}.{os.getpid()}.part")
    try:
        with open(temp, "w", encoding="utf-8") as handle:
            handle.writelines(records)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, output)
    except OSError as exc:
        temp.unlink(missing_ok=True)
        raise UsageError(f"cannot write {output}: {exc.strerror}") from None
