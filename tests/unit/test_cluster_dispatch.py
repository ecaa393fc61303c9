"""The cluster driver's bookkeeping, with replicas whose streams are scripted (no Ray, no model).

The real cluster (tests/integration/test_ray_batch.py) shows Ray's own recovery; these cases
reach the driver's: a chunk whose stream fails, a replay that repeats or skips records, a line
that fails every time, a replica gone for good, the order chunks are handed out in.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from hearth.cluster import ClusterError
from hearth.cluster_batch import LINE_ATTEMPTS, _Dispatch, _Feed, _Progress
from hearth.runtime.jsonl_batch import BatchDefaults, read_items
from hearth.runtime.sampling import SamplingParams


class RayError(Exception):
    pass


class ActorDiedError(RayError):
    pass


class FakeRay:
    """What the driver uses of `ray`: wait, get, the exception types. Streams are lists of
    events, each a record or an exception; `wait` takes the streams in turn."""

    exceptions = SimpleNamespace(RayError=RayError, ActorDiedError=ActorDiedError)

    def wait(self, streams, num_returns=1):
        return [streams[0]], streams[1:]

    def get(self, event):
        if isinstance(event, Exception):
            raise event
        return event


class Stream:
    def __init__(self, events):
        self.events = list(events)

    def __next__(self):
        if not self.events:
            raise StopIteration
        return self.events.pop(0)

    def __hash__(self):
        return id(self)


class Replica:
    """A replica whose `run.remote(rows)` answers with `script(rows, call_number)` as events."""

    def __init__(self, script):
        self.script = script
        self.calls: list[list] = []
        self.run = SimpleNamespace(remote=self._run)

    def _run(self, rows):
        self.calls.append([row["id"] for row in rows])
        return Stream(self.script(rows, len(self.calls)))


def answers(rows, _call=0):
    return [{"id": row["id"], "text": f"answer {row['id']}"} for row in rows]


def run_job(replicas, n_lines=8, chunk_lines=2, extra_lines=()):
    lines = [json.dumps({"id": f"q{i}", "prompt": f"p{i}"}) for i in range(n_lines)] + list(extra_lines)
    written, notes = [], []
    progress = _Progress(written.append, None, None)
    items = read_items(lines, BatchDefaults(SamplingParams()), set())
    _Dispatch(FakeRay(), replicas, _Feed(items, chunk_lines, progress), progress, notes.append).run()
    return written, notes


def ids(records):
    return sorted((r["id"] for r in records), key=str)


def test_every_line_once_and_chunks_go_breadth_first():
    a, b = Replica(answers), Replica(answers)
    written, _ = run_job([a, b], n_lines=8, chunk_lines=2, extra_lines=['{"id": "bad"'])
    # the unreadable line 9: an error record with "id": null and its line number
    assert ids(written) == sorted([f"q{i}" for i in range(8)] + [None], key=str)
    assert [r["line"] for r in written if r["id"] is None] == [9]
    assert a.calls[:2] == [["q0", "q1"], ["q4", "q5"]] and b.calls[:2] == [["q2", "q3"], ["q6", "q7"]]


def test_a_failed_stream_resubmits_only_the_unwritten_lines():
    def dies_once(rows, call):
        done = answers(rows)
        return done[:1] + [RayError("worker died")] if call == 1 else done

    a = Replica(dies_once)
    written, notes = run_job([a], n_lines=4, chunk_lines=2)
    assert ids(written) == ["q0", "q1", "q2", "q3"] and all("text" in r for r in written)
    assert ["q1"] in a.calls[1:]  # only the line the failed chunk had not finished
    assert any("resubmitting 1 lines" in n for n in notes)


def test_a_replay_that_repeats_or_skips_records_still_writes_each_id_once():
    def replay(rows, call):
        done = answers(rows)
        return (done[:1] + done[:1]) if call == 1 else done  # q0 twice, q1 never

    written, _ = run_job([Replica(replay)], n_lines=2, chunk_lines=2)
    assert ids(written) == ["q0", "q1"]


def test_a_line_that_always_kills_its_replica_becomes_an_error_record():
    def poison(rows, _call):
        return [RayError("segfault")] if any(r["id"] == "q1" for r in rows) else answers(rows)

    a = Replica(poison)
    written, _ = run_job([a], n_lines=3, chunk_lines=3)
    by_id = {r["id"]: r for r in written}
    assert ids(written) == ["q0", "q1", "q2"]
    assert "text" in by_id["q0"] and "text" in by_id["q2"]  # retried alone, the others got through
    assert f"failed {LINE_ATTEMPTS} times" in by_id["q1"]["error"] and "segfault" in by_id["q1"]["error"]


def test_a_replica_gone_for_good_leaves_the_pool_and_the_others_finish():
    dead = Replica(lambda rows, _call: [ActorDiedError("actor died")])
    alive = Replica(answers)
    written, notes = run_job([dead, alive], n_lines=6, chunk_lines=1)
    assert ids(written) == [f"q{i}" for i in range(6)] and all("text" in r for r in written)
    assert len(dead.calls) == 2  # its two chunks in flight, then no more
    assert any("gone for good" in n for n in notes)


def test_when_every_replica_is_gone_the_job_stops_with_a_rerun_hint():
    with pytest.raises(ClusterError, match="every replica died"):
        run_job([Replica(lambda rows, _call: [ActorDiedError("actor died")])], n_lines=4, chunk_lines=1)
