"""--shard selection, batch-merge's checks, and how many Ray replicas a cluster holds (no model, no Ray)."""

from __future__ import annotations

import json

import pytest

from hearth.cluster import replica_shape
from hearth.errors import InputFormatError, UsageError
from hearth.runtime.batch_shards import Shard, input_ids, merge_outputs, parse_shard, shard_of


@pytest.mark.parametrize("text, expected", [("0/1", Shard(0, 1)), ("3/8", Shard(3, 8)), (" 1/2", Shard(1, 2))])
def test_parse_shard(text, expected):
    assert parse_shard(text) == expected


@pytest.mark.parametrize("text", ["1/1", "-1/4", "4/4", "a/b", "2", "0/0", "1/2/3", ""])
def test_parse_shard_rejects(text):
    with pytest.raises(UsageError):
        parse_shard(text)


def test_shard_of_is_stable_and_splits_every_id_once():
    # sha256, not Python's per-process salted hash(): a fixed answer on every machine and run
    assert [shard_of(i, 4) for i in ("a", "b", 1, "1")] == [shard_of(i, 4) for i in ("a", "b", 1, "1")]
    assert shard_of("q0", 1000) == int.from_bytes(__import__("hashlib").sha256(b'"q0"').digest()[:8], "big") % 1000
    assert shard_of(1, 2 ** 61) != shard_of("1", 2 ** 61)  # 1 and "1" are different ids
    ids = [f"id-{i}" for i in range(200)] + list(range(50))
    parts = [[i for i in ids if Shard(k, 3).holds(i)] for k in range(3)]
    assert sorted(map(json.dumps, sum(parts, []))) == sorted(map(json.dumps, ids))
    assert all(len(p) > 30 for p in parts)  # every shard gets a share


def test_input_ids_follow_hearth_batch_numbering():
    lines = ['{"id": "a", "prompt": "x"}\n', "\n", '{"prompt": "no id"}\n', '{"id": ', '[1]\n', '{"id": true}\n']
    # blank lines count for line numbers; missing, malformed or invalid ids become the line number
    assert input_ids(lines) == ["a", 3, 4, 5, 6]
    assert input_ids(lines, Shard(0, 1)) == ["a", 3, 4, 5, 6]
    both = input_ids(lines, Shard(0, 2)) + input_ids(lines, Shard(1, 2))
    assert sorted(map(str, both)) == sorted(map(str, ["a", 3, 4, 5, 6]))


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_merge_joins_parts_and_checks_each_input_id_once(tmp_path):
    src = _write(tmp_path / "in.jsonl", [{"id": "a", "prompt": "x"}, {"id": "b", "prompt": "y"}, {"prompt": "z"}])
    p0 = _write(tmp_path / "p0.jsonl", [{"id": "a", "text": "1"}, {"id": 3, "text": "3"}])
    p1 = _write(tmp_path / "p1.jsonl", [{"id": "b", "error": "bad"}])
    report = merge_outputs([p0, p1], tmp_path / "all.jsonl", src)
    assert report.ok and report.checked_input and report.records == 3 and report.ids == 3
    merged = [json.loads(line) for line in (tmp_path / "all.jsonl").read_text().splitlines()]
    assert [r["id"] for r in merged] == ["a", 3, "b"]


@pytest.mark.parametrize("parts, field, ids", [
    ([[{"id": "a"}], [{"id": "b"}]], "missing", [3]),
    ([[{"id": "a"}, {"id": 3}], [{"id": "b"}, {"id": "a"}]], "duplicated", ["a"]),
    ([[{"id": "a"}, {"id": 3}, {"id": "b"}], [{"id": "zz"}]], "unexpected", ["zz"]),
])
def test_merge_refuses_and_writes_nothing_when_ids_are_wrong(tmp_path, parts, field, ids):
    src = _write(tmp_path / "in.jsonl", [{"id": "a", "prompt": "x"}, {"id": "b", "prompt": "y"}, {"prompt": "z"}])
    paths = [_write(tmp_path / f"p{i}.jsonl", rows) for i, rows in enumerate(parts)]
    report = merge_outputs(paths, tmp_path / "all.jsonl", src)
    assert not report.ok and getattr(report, field) == ids
    assert not (tmp_path / "all.jsonl").exists()
    assert list(tmp_path.glob(".all.jsonl*")) == []  # no temp file left behind


def test_merge_expects_a_repeated_input_id_as_often_as_batch_writes_it(tmp_path):
    # `hearth batch` writes the first line's answer and an error record for the repeat
    src = _write(tmp_path / "in.jsonl", [{"id": "a", "prompt": "x"}, {"id": "a", "prompt": "y"}])
    part = _write(tmp_path / "p.jsonl", [{"id": "a", "text": "1"}, {"id": "a", "error": "duplicated id 'a'"}])
    assert merge_outputs([part], None, src).ok
    assert merge_outputs([part], None, None).duplicated == ["a"]  # without the input: a repeat is an error


def test_merge_rejects_a_torn_or_foreign_file(tmp_path):
    torn = tmp_path / "torn.jsonl"
    torn.write_text('{"id": "a", "text": "1"}\n{"id": "b", "te')
    with pytest.raises(InputFormatError, match="not JSON"):
        merge_outputs([torn], tmp_path / "all.jsonl")
    foreign = _write(tmp_path / "foreign.jsonl", [{"name": "x"}])
    with pytest.raises(InputFormatError, match="without an id"):
        merge_outputs([foreign], tmp_path / "all.jsonl")
    with pytest.raises(UsageError, match="not found"):
        merge_outputs([tmp_path / "nope.jsonl"], tmp_path / "all.jsonl")


def _node(cpu, gpu=0, alive=True):
    resources = {"CPU": float(cpu), "memory": 1e10}
    if gpu:
        resources["GPU"] = float(gpu)
    return {"Alive": alive, "Resources": resources}


@pytest.mark.parametrize("nodes, cpus, wanted, count, shape", [
    ([_node(2)], 1, None, 2, (1, 0)),                              # this machine with --threads 1
    ([_node(2)], 2, None, 1, (2, 0)),                              # planned threads = 2 cores
    ([_node(16), _node(16), _node(6)], 8, None, 4, (8, 0)),        # counted per node: 6 CPUs hold none of 8
    ([_node(16), _node(16, alive=False)], 4, None, 4, (4, 0)),     # dead nodes do not count
    ([_node(32, gpu=4), _node(8, gpu=2), _node(64)], 8, None, 6, (1, 1)),  # one replica per GPU
    ([_node(2, gpu=4)], 8, None, 2, (1, 1)),                       # ... each needing a CPU for its host thread
    ([_node(8)], 2, 3, 3, (2, 0)),                                 # --replicas that fits
])
def test_replica_shape(nodes, cpus, wanted, count, shape):
    got = replica_shape(nodes, cpus, wanted)
    assert (got.count, (got.cpus, got.gpus)) == (count, shape), got.reason


def test_replica_shape_refuses_what_does_not_fit():
    with pytest.raises(UsageError, match="room for 2 replicas of 1 CPU"):
        replica_shape([_node(2)], 1, 3)
    with pytest.raises(UsageError, match="no room for one replica of 4 CPUs"):
        replica_shape([_node(2)], 4, None)
