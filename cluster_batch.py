"""`hearth batch --ray`: the driver of a batch job spread over a Ray cluster's replicas.

The driver reads the input lazily, writes error records for bad lines itself, and hands the
good lines out in chunks (two per replica at a time: one running, one queued, so a replica
never waits for work). Each chunk runs as a streaming actor task (`BatchReplica.run`); every
record that comes back is written by the driver alone, through the same `ResultWriter` as a
local job — appended and flushed line by line, so a rerun skips what was written.

Failures, in the order they are handled:
- a replica's process dies: Ray restarts it (the model loads again) and re-runs its chunk
  (`max_restarts`, `max_task_retries`; Ray replays the chunk's stream past the records the
  driver already has);
- a chunk still fails, or ends without some of its lines (a replay that finished them in
  another order): the driver resubmits the missing lines to whichever replica is free, alone
  after a second failure, and gives a line an error record after its third;
- a replica that is gone for good leaves the pool; the job fails only when none is left.
The driver keeps one entry per line it has handed out, so every id is written exactly once.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator

from .cluster import (REPLICA_MAX_RESTARTS, REPLICA_TASK_RETRIES, BatchReplica, ClusterError, ReplicaConfig,
                      ray_cluster, replica_failure, replica_shape)
from .runtime.jsonl_batch import BatchDefaults, BatchItem, BatchLineError, BatchSummary, id_key, read_items

CHUNKS_PER_REPLICA = 2  # in flight per replica: one decoding, one queued behind it
LINE_ATTEMPTS = 3  # a line whose chunk failed this often gets an error record


@dataclass
class ClusterJob:
    """What `hearth batch --ray` runs: where, with how many replicas, and the model's settings."""

    address: str
    model: str | None = None
    replicas: int | None = None
    threads: int | None = None
    gpu_layers: int | None = None
    parallel: int | None = None
    ctx: int | None = None
    system: str | None = None


@dataclass
class _Line:
    item: BatchItem
    attempts: int = 0
    error: str = ""


@dataclass
class _Chunk:
    replica: Any
    lines: dict[str, _Line]  # id key -> line, until its record is written


@dataclass
class _Progress:
    emit: Callable[[dict], None]
    on_error: Callable | None
    on_line: Callable | None
    summary: BatchSummary = field(default_factory=BatchSummary)
    started: float = field(default_factory=time.perf_counter)

    def write(self, record: dict, line_no: int | None) -> None:
        self.emit(record)
        error = "error" in record
        if error and self.on_error:
            self.on_error(record, line_no)
        self.summary.lines += 1
        self.summary.errors += int(error)
        self.summary.tokens += int(record.get("usage", {}).get("completion_tokens", 0)) if not error else 0
        self.summary.wall_s = time.perf_counter() - self.started
        if self.on_line:
            self.on_line(self.summary)


def run_cluster_batch(job: ClusterJob, lines: Iterable, emit: Callable[[dict], None], options, *,
                      skip_ids: set | None = None, shard=None, on_error=None, on_line=None,
                      on_note: Callable[[str], None] | None = None) -> BatchSummary:
    """Run a batch job on the Ray cluster at `job.address`: records to `emit` (the driver's
    writer) as they finish; ids in `skip_ids` are skipped. Returns the BatchSummary, with the
    replicas and the time to start them in `.extra`."""
    note = on_note or (lambda _text: None)
    # options.sampling() validates the settings (and compiles a schema) before any cluster starts
    defaults = BatchDefaults(options.sampling("batch"), options.max_tokens_for("batch"), job.system, options.stop)
    items = read_items(lines, defaults, skip_ids or set(), True, shard)
    started = time.perf_counter()
    with ray_cluster(job.address) as ray:
        replicas, describe = _start_replicas(ray, job, options, note)
        progress = _Progress(emit, on_error, on_line)
        chunk_lines = max(1, CHUNKS_PER_REPLICA * min(d["parallel"] for d in describe))
        _Dispatch(ray, replicas, _Feed(items, chunk_lines, progress), progress, note).run()
    summary = progress.summary
    summary.wall_s = time.perf_counter() - progress.started
    summary.extra = {"replicas": len(replicas), "startup_s": round(progress.started - started, 2)}
    return summary


def _start_replicas(ray, job: ClusterJob, options, note) -> tuple[list, list[dict]]:
    """Create the replicas (spread over the nodes) and wait until each has loaded the model."""
    from .runtime.hardware import detect_hardware
    from .runtime.plan import decide_threads

    cpus = job.threads or decide_threads(detect_hardware(), None)[0]
    shape = replica_shape(ray.nodes(), cpus, job.replicas)
    note(shape.reason)
    actor = ray.remote(num_cpus=shape.cpus, num_gpus=shape.gpus, max_restarts=REPLICA_MAX_RESTARTS,
                       max_task_retries=REPLICA_TASK_RETRIES, scheduling_strategy="SPREAD")(BatchReplica)
    config = ReplicaConfig(job.model, job.threads or (shape.cpus if not shape.gpus else None), job.gpu_layers,
                           options, job.system, job.parallel, job.ctx)
    replicas = [actor.remote(config) for _ in range(shape.count)]
    try:
        described = ray.get([replica.describe.remote() for replica in replicas])
    except ray.exceptions.RayError as exc:
        raise ClusterError(f"a replica failed to start: {_ray_reason(exc)}") from None
    for info in described:
        if info["failure"]:
            raise replica_failure(info["failure"])
    for number, info in enumerate(described):
        note(f"replica {number}: {info['model']} on {info['host']} (pid {info['pid']}), {info['threads']} threads, "
             f"{info['layout']}")
    return replicas, described


class _Feed:
    """The lines still to hand out: resubmitted ones first, then fresh chunks from the input.
    Bad input lines are written as error records on the way, as a local job writes them."""

    def __init__(self, items: Iterator, chunk_lines: int, progress: _Progress):
        self.items = iter(items)
        self.chunk_lines = chunk_lines
        self.progress = progress
        self.retry: deque[list[_Line]] = deque()
        self.exhausted = False

    def next_chunk(self) -> list[_Line]:
        if self.retry:
            return self.retry.popleft()
        chunk: list[_Line] = []
        while not self.exhausted and len(chunk) < self.chunk_lines:
            item = next(self.items, None)
            if item is None:
                self.exhausted = True
            elif isinstance(item, BatchLineError):
                self.progress.write(item.record(), item.line_no)
            else:
                chunk.append(_Line(item))
        return chunk

    def resubmit(self, lines: list[_Line], reason: str) -> None:
        """Lines of a failed chunk go back in the queue; after a second failure each goes alone
        (so one line that kills its replica cannot take the others down with it)."""
        again = []
        for line in lines:
            line.attempts += 1
            line.error = reason
            if line.attempts >= LINE_ATTEMPTS:
                self.progress.write({"id": line.item.id, "error": f"failed {line.attempts} times on the cluster: "
                                     f"{reason}"}, line.item.line_no)
            else:
                again.append(line)
        if any(line.attempts >= 2 for line in again):
            self.retry.extendleft([line] for line in reversed(again))
        elif again:
            self.retry.appendleft(again)


class _Dispatch:
    """Keep every live replica busy with chunks; write each record as it arrives."""

    def __init__(self, ray, replicas: list, feed: _Feed, progress: _Progress, note):
        self.ray = ray
        self.live = list(replicas)
        self.feed = feed
        self.progress = progress
        self.note = note
        self.running: dict[Any, _Chunk] = {}  # streaming generator -> its chunk

    def run(self) -> None:
        while True:
            self._fill()
            if not self.running:
                return
            ready, _ = self.ray.wait(list(self.running), num_returns=1)
            self._take(ready[0])

    def _fill(self) -> None:
        if not self.live and (self.feed.retry or not self.feed.exhausted):
            raise ClusterError("every replica died; the lines not written yet are left for a rerun",
                               hint="rerun the same command: it resumes where this one stopped")
        # Breadth first: every replica gets a chunk before any gets a second one.
        for depth in range(1, CHUNKS_PER_REPLICA + 1):
            for replica in self.live:
                if sum(c.replica is replica for c in self.running.values()) >= depth:
                    continue
                lines = self.feed.next_chunk()
                if not lines:
                    return
                rows = [{**line.item.record, "id": line.item.id} for line in lines]
                self.running[replica.run.remote(rows)] = _Chunk(replica, {id_key(line.item.id): line for line in lines})

    def _take(self, stream) -> None:
        """One event from a chunk's stream: a record, its end, or its failure."""
        chunk = self.running[stream]
        try:
            record = self.ray.get(next(stream))
        except StopIteration:
            self._end(stream, chunk, "a replica's replay skipped these lines")
            return
        except self.ray.exceptions.ActorDiedError as exc:
            self._lose_replica(chunk.replica, exc)
            self._end(stream, chunk, f"its replica died ({_ray_reason(exc)})")
            return
        except self.ray.exceptions.RayError as exc:
            self._end(stream, chunk, _ray_reason(exc))
            return
        if "replica_failure" in record:
            raise replica_failure(record["replica_failure"])
        line = chunk.lines.pop(id_key(record.get("id")), None)
        if line is not None:  # else a replayed record the driver already wrote
            if "line" in record:  # an error record: the replica numbered the lines of its chunk
                record = {**record, "line": line.item.line_no}
            self.progress.write(record, line.item.line_no)

    def _end(self, stream, chunk: _Chunk, reason: str) -> None:
        del self.running[stream]
        if chunk.lines:
            self.note(f"resubmitting {len(chunk.lines)} lines: {reason}")
            self.feed.resubmit(list(chunk.lines.values()), reason)

    def _lose_replica(self, replica, exc: Exception) -> None:
        if replica in self.live:
            self.live.remove(replica)
            self.note(f"a replica is gone for good ({_ray_reason(exc)}); {len(self.live)} left")


def _ray_reason(exc: BaseException) -> str:
    """A Ray error's gist: the first line of its message, without Ray's long explanation."""
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200]

