"""`hearth batch --shard I/N` + `hearth batch-merge`, and the --ray flags' one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


def write_jsonl(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_shards_cover_the_input_once_and_merge_checks_it(hearth, tmp_path):
    rows = [{"id": f"q{i}", "prompt": f"Say the number {i}."} for i in range(6)] + ['{"id": "broken', {"prompt": "no id"}]
    src = write_jsonl(tmp_path / "in.jsonl", rows)
    parts = []
    for index in range(2):
        part = tmp_path / f"part-{index}.jsonl"
        done = hearth("batch", str(src), "-o", str(part), "--shard", f"{index}/2", "-n", "4", "--temp", "0", "-p", "4")
        assert done.returncode == 0, done.stderr
        parts.append(part)
    first, second = ([json.loads(line)["id"] for line in p.read_text().splitlines()] for p in parts)
    assert first and second and not set(map(str, first)) & set(map(str, second))  # disjoint, both non-empty
    merged = tmp_path / "all.jsonl"
    done = hearth("batch-merge", *map(str, parts), "-o", str(merged), "--input", str(src))
    assert done.returncode == 0, done.stderr
    assert "every input id once" in done.stderr
    records = [json.loads(line) for line in merged.read_text().splitlines()]
    ids = sorted(json.dumps(r["id"]) for r in records)
    # the unreadable line 7 answers as {"id": null, "line": 7}; line 8 has no id: its number is its id
    assert ids == sorted(json.dumps(i) for i in [f"q{i}" for i in range(6)] + [None, 8])
    assert [r["line"] for r in records if r["id"] is None] == [7]

    # a shard's output left out: refused, one line, nothing written
    merged.unlink()
    missing = hearth("batch-merge", str(parts[0]), "-o", str(merged), "--input", str(src))
    assert missing.returncode == 1 and "ids missing" in missing.stderr and not merged.exists()
    assert len(missing.stderr.strip().splitlines()) <= 2 and "Traceback" not in missing.stderr


def test_rerun_of_a_shard_resumes_and_writes_only_its_lines(hearth, tmp_path):
    src = write_jsonl(tmp_path / "in.jsonl", [{"id": i, "prompt": f"Count to {i}."} for i in range(8)])
    part = tmp_path / "part.jsonl"
    first = hearth("batch", str(src), "-o", str(part), "--shard", "1/3", "-n", "3", "--temp", "0")
    assert first.returncode == 0, first.stderr
    again = hearth("batch", str(src), "-o", str(part), "--shard", "1/3", "-n", "3", "--temp", "0")
    assert again.returncode == 0 and "resuming" in again.stderr and "0 lines" in again.stderr
    from hearth.runtime.batch_shards import shard_of

    assert sorted(json.loads(line)["id"] for line in part.read_text().splitlines()) == \
        [i for i in range(8) if shard_of(i, 3) == 1]


@pytest.mark.parametrize("args, message", [
    (["--replicas", "2"], "--replicas needs --ray"),
    (["--shard", "2/2"], "--shard takes I/N"),
    (["--ray", "somewhere"], "--ray takes auto (the running cluster), ray://HOST:PORT"),
])
def test_bad_cluster_flags_are_one_line_errors(hearth, tmp_path, args, message):
    src = write_jsonl(tmp_path / "in.jsonl", [{"id": 1, "prompt": "hi"}])
    done = hearth("batch", str(src), *args)
    assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr


def test_without_ray_installed_the_flag_says_how_to_install_it(tmp_path):
    src = write_jsonl(tmp_path / "in.jsonl", [{"id": 1, "prompt": "hi"}])
    code = ("import sys; sys.modules['ray'] = None  # as if Ray were not installed\n"
            "from hearth.cli.app import main\n"
            f"sys.argv = ['hearth', 'batch', {str(src)!r}, '--ray', 'local']\n"
            "main()")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert "--ray needs Ray, which is not installed" in done.stderr and "pip install 'hearth[ray]'" in done.stderr
    assert "Traceback" not in done.stderr
