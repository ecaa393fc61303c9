"""`hearth batch` on bad input: an error record per bad line, the rest generated, reruns add nothing."""

from __future__ import annotations

import json


def read_records(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_unreadable_line_does_not_cost_a_real_id_and_rerun_adds_nothing(hearth, tmp_path):
    """The bug: `not json` on line 2 took id 2; the real id 2 was refused and never generated."""
    src, dst = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    src.write_text('{"id":1,"prompt":"hi"}\nnot json\n{"id":2,"prompt":"hello"}\n')
    first = hearth("batch", str(src), "-o", str(dst), "--temp", "0", "-n", "4", "-p", "2")
    assert first.returncode == 0, first.stderr
    records = read_records(dst)
    assert sorted(json.dumps(r["id"]) for r in records) == ["1", "2", "null"]
    assert all("text" in r for r in records if r["id"] is not None)
    unreadable = [r for r in records if r["id"] is None]
    assert len(unreadable) == 1 and unreadable[0]["line"] == 2 and set(unreadable[0]) == {"id", "line", "error"}
    assert "warning: line 2: malformed JSON" in first.stderr
    written = dst.read_text()
    for _ in range(2):
        again = hearth("batch", str(src), "-o", str(dst), "--temp", "0", "-n", "4", "-p", "2")
        assert again.returncode == 0, again.stderr
        assert dst.read_text() == written  # nothing generated or written twice


def test_nasty_lines_get_error_records_and_the_rest_goes_on(hearth, tmp_path):
    src, dst = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    nasty = [
        b'{"id": "bad-utf8", "prompt": "caf\xe9"}',  # Latin-1, not UTF-8
        bytes(range(1, 256)).replace(b"\n", b""),  # random bytes
        b'{"id": "deep", "prompt": ' + b"[" * 50_000 + b"]" * 50_000 + b"}",
        b'{"id": "huge", "prompt": "' + b"x" * (17 << 20) + b'"}',  # over the 16 MiB line limit
        b'{"id": "nan-seed", "prompt": "x", "seed": NaN}',
        b'{"id": "many", "prompt": "x", "samples": 1000000000}',
        b'{"id": "types", "prompt": 5, "max_tokens": "9"}',
        b'{"id": ["list"], "prompt": "x"}',
    ]
    good = [json.dumps({"id": f"ok-{i}", "prompt": p}).encode() for i, p in enumerate(["Say hi.", "Name a color."])]
    src.write_bytes(b"\n".join([good[0], *nasty, good[1]]) + b"\n")
    done = hearth("batch", str(src), "-o", str(dst), "--temp", "0", "-n", "4", "-p", "2", timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    records = read_records(dst)
    assert len(records) == len(nasty) + len(good)
    assert {r["id"] for r in records if "text" in r} == {"ok-0", "ok-1"}
    errors = [r for r in records if "error" in r]
    assert len(errors) == len(nasty) and all(isinstance(r["line"], int) for r in errors)
    assert sorted(r["line"] for r in errors) == list(range(2, 2 + len(nasty)))
    warnings = [line for line in done.stderr.splitlines() if line.startswith("warning: line ")]
    assert len(warnings) == len(nasty) and all(len(w) < 300 for w in warnings)
