"""Batch input that is not what it should be: every line becomes an item or an error record.

A seeded fuzz of lines (random bytes, invalid UTF-8, deep nesting, huge numbers, wrong types in
every field) through the parser, then the fixed bug: a line without a readable id must never
take a name that a real id can have, and a rerun never writes a record twice.
"""

from __future__ import annotations

import io
import json
import random

import pytest

from hearth.runtime.jsonl_batch import (LINE_TOO_LONG, MAX_SAMPLES, BatchDefaults, BatchItem, BatchLineError,
                                  ResultWriter, iter_lines, parse_line, read_items)
from hearth.runtime.sampling import SamplingParams

DEFAULTS = BatchDefaults(SamplingParams(temperature=0.5), max_tokens=32, system=None)
SEED = 1202
VALID = {"id": "q", "prompt": "Hi", "system": "Be brief", "max_tokens": 8, "temperature": 0.2, "top_p": 0.9,
         "seed": 3, "stop": ["\n"], "samples": 2}
# Values of every JSON type, odd ones included (NaN and huge numbers pass json.loads).
ODD_VALUES = [None, True, False, 0, -1, 1, 2**63, 10**30, 1.5, -0.0, float("nan"), float("inf"), "", "x", " ",
              "\x00", [], [1], ["a"], [{"role": "user"}], {}, {"role": "user", "content": "hi"}, "a" * 10_000]


def _random_line(rng: random.Random) -> bytes:
    kind = rng.randrange(6)
    if kind == 0:  # random bytes, often not UTF-8
        return rng.randbytes(rng.randint(1, 200))
    if kind == 1:  # a valid line with one field set to a value of another type
        record = dict(VALID)
        record[rng.choice(sorted(VALID) + ["messages"])] = rng.choice(ODD_VALUES)
        return json.dumps(record).encode()
    if kind == 2:  # nested deeper than the JSON parser recurses
        depth = rng.choice([10, 1_000, 100_000])
        return ('{"id": 1, "prompt": ' + "[" * depth + "]" * depth + "}").encode()
    if kind == 3:  # a valid line cut short or with bytes flipped
        raw = bytearray(json.dumps(VALID).encode())
        for _ in range(rng.randint(1, 4)):
            raw[rng.randrange(len(raw))] = rng.randrange(256)
        return bytes(raw[: rng.randrange(1, len(raw) + 1)])
    if kind == 4:  # numbers Python will not convert, and non-objects
        return rng.choice([b'{"id": ' + b"9" * 5000 + b', "prompt": "x"}', b"[1, 2]", b'"text"', b"null", b"1e999"])
    return json.dumps({**VALID, "messages": [{"role": rng.choice(ODD_VALUES), "content": rng.choice(ODD_VALUES)}],
                       "prompt": None}).encode()


def test_fuzzed_lines_each_become_one_item_or_error():
    rng = random.Random(SEED)
    lines = [_random_line(rng) for _ in range(600)]
    for line_no, raw in enumerate(lines, start=1):
        item = parse_line(raw, line_no, DEFAULTS)
        assert isinstance(item, (BatchItem, BatchLineError)), raw[:80]
        assert item.line_no == line_no
        if isinstance(item, BatchLineError):
            assert item.error and "\n" not in item.error
            assert item.id is None or isinstance(item.id, (str, int))
            record = item.record()
            assert json.loads(json.dumps(record)) == record  # writable as one JSONL line
            continue
        # what was accepted is what generation needs
        assert isinstance(item.id, (str, int)) and not isinstance(item.id, bool)
        assert all(isinstance(m.get("role"), str) and isinstance(m.get("content"), str) for m in item.messages)
        assert isinstance(item.max_tokens, int) and item.max_tokens >= 1
        assert 1 <= item.samples <= MAX_SAMPLES
        assert item.params.validated() is item.params
        assert item.params.seed is None or isinstance(item.params.seed, int)
        assert all(isinstance(s, str) for s in item.stop)
    results = list(read_items(lines, DEFAULTS, done_ids=set()))
    assert len(results) == sum(1 for line in lines if line.strip())
    kinds = {type(r).__name__ for r in results}
    assert kinds == {"BatchItem", "BatchLineError"}, kinds  # the fuzz reaches both


@pytest.mark.parametrize("raw,needle", [
    (b'{"id": 1, "prompt": "\xff\xfe"}', "not UTF-8 text (byte 22)"),
    (b'{"id": 1, "prompt": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "nested too deep"),
    (b'{"id": ' + b"9" * 5000 + b', "prompt": "x"}', "malformed JSON"),
    (b'{"id": 1, "prompt": "x", "seed": NaN}', "seed must be an integer"),
    (b'{"id": 1, "prompt": "x", "seed": 1.5}', "seed must be an integer"),
    (b'{"id": 1, "prompt": "x", "temperature": NaN}', "temperature must be"),
    (b'{"id": 1, "prompt": "x", "samples": 1000000000}', "samples must be an integer from 1 to 64"),
    (b'{"id": 1, "prompt": "x", "system": ["be", "brief"]}', "system must be a string"),
    (b'{"id": 1.5, "prompt": "x"}', "id must be"),
], ids=["not utf-8", "deep nesting", "5000-digit id", "NaN seed", "fractional seed", "NaN temperature",
        "a billion samples", "system as a list", "fractional id"])
def test_bad_line_cases(raw, needle):
    item = parse_line(raw, 4, DEFAULTS)
    assert isinstance(item, BatchLineError) and needle in item.error, item


def test_a_huge_line_is_skipped_unread():
    data = b'{"id": 1, "prompt": "a"}\n' + b'{"id": 2, "prompt": "' + b"x" * 5000 + b'"}\n' + b'{"id": 3, "prompt": "c"}'
    lines = list(iter_lines(io.BytesIO(data), limit=1000))
    assert lines[1] is LINE_TOO_LONG and lines[2] == b'{"id": 3, "prompt": "c"}'
    items = list(read_items(lines, DEFAULTS, done_ids=set()))
    assert [type(i).__name__ for i in items] == ["BatchItem", "BatchLineError", "BatchItem"]
    assert items[1].id is None and "longer than" in items[1].error


def test_unreadable_line_never_takes_a_real_id():
    """The bug: `not json` on line 2 took id 2, and the real id 2 on line 3 was refused as a duplicate."""
    lines = ['{"id": 1, "prompt": "hi"}', "not json", '{"id": 2, "prompt": "hello"}']
    items = list(read_items(lines, DEFAULTS, done_ids=set()))
    assert [type(i).__name__ for i in items] == ["BatchItem", "BatchLineError", "BatchItem"]
    assert items[1].record() == {"id": None, "line": 2, "error": items[1].error}
    assert items[2].id == 2


def test_rerun_writes_no_record_twice(tmp_path):
    """Every record of a first run (answers, bad lines, duplicates) is skipped by the rerun."""
    lines = ['{"id": 1, "prompt": "hi"}', "not json", '{"id": 2, "prompt": "hello"}', '{"id": 1, "prompt": "again"}',
             '{"id": 3}']
    out = tmp_path / "out.jsonl"
    writer = ResultWriter(out)
    for item in read_items(lines, DEFAULTS, writer.done_ids):
        writer.write(item.record() if isinstance(item, BatchLineError) else {"id": item.id, "text": "ok"})
    writer.close()
    first = out.read_text().splitlines()
    assert len(first) == 5
    assert list(read_items(lines, DEFAULTS, ResultWriter(out).done_ids)) == []
    # an answer that was not written yet (a kill) is generated by the rerun, and only it
    out.write_text("\n".join(r for r in first if json.loads(r).get("id") != 2) + "\n")
    again = list(read_items(lines, DEFAULTS, ResultWriter(out).done_ids))
    assert [(type(i).__name__, i.id) for i in again] == [("BatchItem", 2)]
