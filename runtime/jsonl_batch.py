"""`hearth batch`: JSONL prompts in, JSONL results out, resumable.

Input lines: {"id": …, "prompt": "…"} or {"id": …, "messages": [...]}, with optional per-line
system, max_tokens, temperature, top_p, seed, stop, samples. A line's id defaults to its line
number. Output lines: id, text, finish_reason, usage — or id, line and error for a line that
failed. A line whose id cannot be read (not JSON, not UTF-8, too long) gets `"id": null`: it must
never take a name a real id can have, or a later line with that id would be refused.

Resuming: results are appended and flushed one line at a time; a rerun with the same output file
first drops a torn last line (a kill mid-write), then skips every id already answered and every
line that already has an error record, so no record is ever written twice.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Iterable, Iterator

from ..errors import InputFormatError, UsageError, full_disk_reported
from .sampling import SamplingParams

LINE_OPTIONS = {"system", "max_tokens", "temperature", "top_p", "seed", "stop", "samples"}
MAX_LINE_BYTES = 16 << 20  # a longer line cannot fit any context; it is skipped unread
MAX_SAMPLES = 64  # as `hearth run --samples`
LINE_TOO_LONG = object()  # what iter_lines yields for a line over MAX_LINE_BYTES


@dataclass
class BatchItem:
    id: Any
    line_no: int
    messages: list[dict]
    max_tokens: int
    params: SamplingParams
    stop: tuple[str, ...] = ()
    samples: int = 1
    record: dict | None = field(default=None, repr=False)  # the decoded line (a cluster driver forwards it)


@dataclass
class BatchLineError:
    id: Any  # None when the line's id cannot be read
    line_no: int
    error: str

    def record(self) -> dict:
        return {"id": self.id, "line": self.line_no, "error": self.error}


@dataclass
class BatchDefaults:
    params: SamplingParams
    max_tokens: int = 256
    system: str | None = None
    stop: tuple[str, ...] = ()


def parse_line(text: str | bytes, line_no: int, defaults: BatchDefaults) -> BatchItem | BatchLineError:
    """One JSONL line to a BatchItem, or a BatchLineError saying what is wrong with it."""
    data = _json_object(text, line_no)
    if isinstance(data, BatchLineError):
        return data
    return parse_record(data, line_no, defaults)


def parse_record(data: Any, line_no: int, defaults: BatchDefaults) -> BatchItem | BatchLineError:
    """One input record (a decoded JSONL line, or a row given to `Model.batch`)."""
    if not isinstance(data, dict):
        return BatchLineError(None, line_no, "a line must be a JSON object")
    item_id = data.get("id", line_no)
    if not isinstance(item_id, (str, int)) or isinstance(item_id, bool):
        return BatchLineError(None, line_no, "id must be a string or an integer")
    try:
        return BatchItem(item_id, line_no, _messages(data, defaults), *_line_settings(data, defaults), record=data)
    except (UsageError, InputFormatError) as exc:
        return BatchLineError(item_id, line_no, exc.message)


def _json_object(text: str | bytes, line_no: int) -> dict | BatchLineError:
    if text is LINE_TOO_LONG:
        return BatchLineError(None, line_no, f"the line is longer than {MAX_LINE_BYTES:,} bytes")
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            return BatchLineError(None, line_no, f"not UTF-8 text (byte {exc.start + 1})")
    try:
        data = json.loads(text.rstrip("\r\n"))
    except json.JSONDecodeError as exc:
        return BatchLineError(None, line_no, f"malformed JSON: {exc.msg} at column {exc.colno}")
    except RecursionError:
        return BatchLineError(None, line_no, "malformed JSON: nested too deep")
    except ValueError as exc:  # e.g. an integer of more digits than Python converts
        return BatchLineError(None, line_no, f"malformed JSON: {exc}")
    if not isinstance(data, dict):
        return BatchLineError(None, line_no, "a line must be a JSON object")
    return data


def _messages(data: dict, defaults: BatchDefaults) -> list[dict]:
    prompt, messages = data.get("prompt"), data.get("messages")
    system = data.get("system", defaults.system)
    if prompt is not None and messages is not None:
        raise InputFormatError("give either prompt or messages, not both")
    if isinstance(prompt, str) and prompt.strip():
        turns = [{"role": "user", "content": prompt}]
    elif isinstance(messages, list) and messages:
        if not all(isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
                   for m in messages):
            raise InputFormatError("messages must be objects with string role and content")
        turns = list(messages)
    else:
        raise InputFormatError("the line has neither a prompt nor messages")
    if system is not None and not isinstance(system, str):
        raise InputFormatError("system must be a string")
    if system and not any(m["role"] == "system" for m in turns):
        turns.insert(0, {"role": "system", "content": system})
    return turns


def _line_settings(data: dict, defaults: BatchDefaults) -> tuple[int, SamplingParams, tuple[str, ...], int]:
    max_tokens = data.get("max_tokens", defaults.max_tokens)
    samples = data.get("samples", 1)
    stop = data.get("stop", defaults.stop)
    if isinstance(stop, str):
        stop = (stop,)
    for name, value, high in (("max_tokens", max_tokens, None), ("samples", samples, MAX_SAMPLES)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1 or (high and value > high):
            raise InputFormatError(f"{name} must be an integer from 1" + (f" to {high}" if high else " up"))
    if not isinstance(stop, (list, tuple)) or not all(isinstance(s, str) for s in stop):
        raise InputFormatError("stop must be a string or a list of strings")
    overrides = {}
    for name, field_name in (("temperature", "temperature"), ("top_p", "top_p"), ("seed", "seed")):
        value = data.get(name)
        if value is not None and (not isinstance(value, (int, float)) or isinstance(value, bool)):
            raise InputFormatError(f"{name} must be a number")
        overrides[field_name] = value
    if overrides.get("seed") is not None and not isinstance(overrides["seed"], int):
        raise InputFormatError("seed must be an integer")
    return max_tokens, defaults.params.with_overrides(**overrides), tuple(stop), samples


def read_items(lines: Iterable, defaults: BatchDefaults, done_ids: set, from_json: bool = True,
               shard=None) -> Iterator[BatchItem | BatchLineError]:
    """Parse lines (JSONL text or bytes, or already-decoded rows) lazily, skipping what is already
    done and flagging duplicated ids. With a `shard` (runtime.batch_shards.Shard), only its lines.

    `done_ids` holds the keys of the records already written: `id_key` of each answered id,
    `line_key` of each line with an error record.
    """
    seen: set = set()
    for line_no, text in enumerate(lines, start=1):
        if from_json and text is not LINE_TOO_LONG and not text.strip():
            continue
        item = parse_line(text, line_no, defaults) if from_json else parse_record(text, line_no, defaults)
        if shard is not None and not shard.holds(item.id if item.id is not None else line_no):
            continue
        if isinstance(item, BatchItem):
            key = id_key(item.id)
            if key in seen:
                item = BatchLineError(item.id, line_no, f"duplicated id {item.id!r} (first seen earlier in the input)")
            seen.add(key)
        done = line_key(line_no) in done_ids or (isinstance(item, BatchItem) and id_key(item.id) in done_ids)
        if not done:
            yield item


def id_key(item_id: Any) -> str:
    """An id as a set key: its JSON form, so 1 and "1" stay different ids."""
    return json.dumps(item_id)


def line_key(line_no: int) -> str:
    return f"line {line_no}"  # never equal to an id_key: those are JSON (quoted strings, digits)


def iter_lines(handle: IO[bytes], limit: int = MAX_LINE_BYTES) -> Iterator[bytes | object]:
    """The lines of a binary file; LINE_TOO_LONG (not the line) for one over `limit` bytes."""
    while True:
        line = handle.readline(limit + 1)
        if not line:
            return
        if len(line) > limit and not line.endswith(b"\n"):
            while line and not line.endswith(b"\n"):  # skip the rest of it, a piece at a time
                line = handle.readline(limit)
            yield LINE_TOO_LONG
            continue
        yield line


# A line cut short by a full disk is repaired by the rerun, which skips the lines already written.
_FULL_DISK_HINT = "free some space, then run the same command again: it goes on where it stopped"


class ResultWriter:
    """Appends result lines, one flushed write each, after repairing a torn last line.

    Without a path, lines go to `stream` (the CLI passes stdout: the library prints nothing)."""

    def __init__(self, path: Path | None, stream: IO | None = None):
        self.path = path
        self.done_ids: set = set()
        self._handle: IO | None = None
        self._stream = stream
        if path is None:
            return
        if path.exists():
            self.done_ids = _repair_and_read_ids(path)
        try:
            self._handle = open(path, "a", encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"cannot write {path}: {exc.strerror}") from None

    def write(self, record: dict) -> None:
        line = json.dumps(record, ensure_ascii=False) + "\n"
        if self._handle is None:
            if self._stream is not None:
                self._stream.write(line)
                self._stream.flush()
            return
        with full_disk_reported(self.path, hint=_FULL_DISK_HINT):
            self._handle.write(line)
            self._handle.flush()
            os.fsync(self._handle.fileno())

    def close(self) -> None:
        if self._handle is not None:
            handle, self._handle = self._handle, None
            with full_disk_reported(self.path, hint=_FULL_DISK_HINT):
                handle.close()  # after a failed write it flushes the rest of that line: it can fail again

    def __enter__(self) -> "ResultWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _repair_and_read_ids(path: Path) -> set:
    """Ids already in an output file; a final line without its newline (torn write) is cut off."""
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    if end < len(data):
        with open(path, "r+b") as handle:
            handle.truncate(end)
    ids = set()
    for raw in data[:end].splitlines():
        try:
            record = json.loads(raw)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and isinstance(record.get("line"), int):
            ids.add(line_key(record["line"]))  # an error record: its line is done
        elif isinstance(record, dict) and "id" in record:
            ids.add(id_key(record["id"]))
    return ids


def check_output_writable(path: Path) -> None:
    """Fail before the model loads when the output cannot be written."""
    parent = path.parent if str(path.parent) else Path(".")
    if path.exists() and not os.access(path, os.W_OK):
        raise UsageError(f"cannot write {path}: permission denied")
    if not parent.exists():
        raise UsageError(f"cannot write {path}: folder {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise UsageError(f"cannot write {path}: folder {parent} is not writable")


@dataclass
class BatchSummary:
    lines: int = 0
    errors: int = 0
    tokens: int = 0
    wall_s: float = 0.0
    skipped: int = 0
    extra: dict = field(default_factory=dict)

    @property
    def tok_s(self) -> float:
        return round(self.tokens / self.wall_s, 2) if self.wall_s > 0 else 0.0


CPU_PARALLEL = 16  # on a 2-core CPU llama.cpp's batched decode gains little past 16 (SmolLM2: 238 → 263 tok/s at 32)
GPU_PARALLEL = 64  # every layer on a GPU: weights are read once per step for all sequences


def decide_parallel(info, hw, *, per_seq: int, threads: int | None = None, gpu_layers: int | None = None,
                    max_tokens: int | None = None, curve=None) -> tuple[int, str]:
    """How many sequences `hearth batch` decodes together when --parallel is not given.

    16 on a CPU, 64 when every layer fits on a GPU — or, given this machine's measured cost curve
    (`costs.CostCurve`), the width where it decodes the most tokens per second, when that comes
    before the widest width measured (a compute-bound CPU: 8 sequences may decode slower in
    aggregate than 4); halved until the plan (one KV stream of `per_seq` cells per sequence, plus
    the shared-prefix holder) fits in memory — and, on a GPU, until every layer still fits there.
    Returns the number and the reason.
    """
    from ..errors import DoesNotFitError
    from .plan import fit_plan

    def plan(n: int):
        return fit_plan(info, hw, ctx=per_seq, threads=threads, gpu_layers=gpu_layers, n_seq=n + 1,
                        max_tokens=max_tokens, kv_unified=False)

    single = plan(1)  # raises DoesNotFitError when even one sequence does not fit
    on_gpu = single.gpu.layers > 0 and single.gpu.layers >= single.gpu.total_layers

    def fits(n: int) -> bool:
        try:
            got = plan(n)
        except DoesNotFitError:
            return False
        return not on_gpu or got.gpu.layers >= got.gpu.total_layers

    default = n = GPU_PARALLEL if on_gpu else CPU_PARALLEL
    where = "every layer on the GPU" if on_gpu else "CPU"
    best = curve.best_width() if curve is not None else default
    if best < curve_widest(curve):
        default = n = best
        where = f"this machine's cost curve peaks at {best} rows, {curve.throughput(best):.2f}x one row's tok/s"
    while n > 1 and not fits(n):
        n //= 2
    if n == default:
        return n, f"{n} sequences in flight ({where} default)"
    return n, f"{n} sequences in flight: {default} ({where} default) do not fit in memory"


def curve_widest(curve) -> int:
    return curve.widths[-1] if curve is not None else 0


def run_batch_job(loaded, lines: Iterable, emit, options, *, system: str | None = None, parallel: int | None = None,
                  ctx: int | None = None, skip_ids: set | None = None, from_json: bool = True, on_error=None,
                  on_layout=None, on_line=None, shard=None) -> BatchSummary:
    """A whole batch job on a loaded model: read the lines, choose how many sequences decode
    together (`on_layout(reason)` says why), give each its KV stream, generate, `emit` records."""
    max_tokens = options.max_tokens_for("batch")
    defaults = BatchDefaults(options.sampling("batch"), max_tokens, system, options.stop)
    items = read_items(lines, defaults, skip_ids or set(), from_json, shard)
    layout = batch_layout(loaded, options, parallel, ctx)
    if parallel is None and on_layout:
        on_layout(layout.reason)
    loaded.use_layout(layout.parallel + 1, False, layout.per_seq)  # one more: it holds the prompts' shared prefix
    return run_batch(loaded, items, emit, on_line=on_line, on_error=on_error)


@dataclass(frozen=True)
class BatchLayout:
    parallel: int  # sequences decoded together
    per_seq: int  # KV cells of each sequence's stream
    reason: str


def batch_layout(loaded, options, parallel: int | None = None, ctx: int | None = None) -> BatchLayout:
    """How a batch job lays out the context: sequences in flight and each one's KV stream."""
    from ..units import round_up
    from .hardware import detect_hardware

    max_tokens = options.max_tokens_for("batch")
    # Per sequence: room for the answer plus a typical prompt; longer prompts get an error
    # record naming --ctx. Each sequence has a KV stream of its own: attention then spans one
    # sequence's cells, not every sequence's (2.4x faster decode at 64 in flight on SmolLM2).
    per_seq = ctx or round_up(max_tokens + PROMPT_ALLOWANCE, 256)
    if parallel is not None:
        return BatchLayout(parallel, per_seq, f"{parallel} sequences in flight (--parallel)")
    request = loaded.request
    parallel, reason = decide_parallel(loaded.info, detect_hardware(), per_seq=per_seq, threads=request.threads,
                                       gpu_layers=request.gpu_layers, max_tokens=max_tokens,
                                       curve=loaded.cost_curve())
    return BatchLayout(parallel, per_seq, reason)


PROMPT_ALLOWANCE = 512  # prompt tokens a sequence's KV stream has room for by default


def run_batch(loaded, items: Iterable[BatchItem | BatchLineError], emit_record, on_line=None,
              on_error=None) -> BatchSummary:
    """Generate every item with continuous batching; emit each result the moment it is done.

    `on_line(summary)` is called after each emitted line (progress), `on_error(record, line_no)`
    after each error record (a warning on stderr).
    """
    import time

    from ..errors import HearthError
    from .scheduler import GenRequest, Scheduler, Hooks

    summary = BatchSummary()
    started = time.perf_counter()
    n_seq = loaded.engine.config.n_seq_max - 1  # the last sequence holds the shared prompt prefix

    def emit(record: dict, error: bool, tokens: int = 0, line_no: int | None = None) -> None:
        emit_record(record)
        if error and on_error:
            on_error(record, line_no)
        summary.lines += 1
        summary.errors += int(error)
        summary.tokens += tokens
        summary.wall_s = time.perf_counter() - started
        if on_line:
            on_line(summary)

    def requests():
        for item in items:
            if isinstance(item, BatchLineError):
                emit(item.record(), True, line_no=item.line_no)
                continue
            try:
                tokens = loaded.prompt_tokens(item.messages)
            except HearthError as exc:
                emit(BatchLineError(item.id, item.line_no, _with_hint(exc)).record(), True, line_no=item.line_no)
                continue
            parallel = min(item.samples, max(1, n_seq - 1)) if item.samples > n_seq else None
            yield GenRequest(tokens, item.params, item.max_tokens, item.stop, n=item.samples, parallel=parallel,
                             key=item, confidence_top_k=5 if item.samples > 1 else 0)

    class Writer(Hooks):
        def on_request_done(self, request, samples):
            # A run cut short (Ctrl-C) ends its live samples as "cancelled": write nothing for
            # them, so a rerun generates those lines again instead of keeping half an answer.
            if not samples or any(s.finish_reason == "cancelled" for s in samples):
                return
            emit(result_record(request.key, samples), False, sum(len(s.tokens) for s in samples))

        def on_request_error(self, request, error):
            emit(BatchLineError(request.key.id, request.key.line_no, _with_hint(error)).record(), True,
                 line_no=request.key.line_no)

    Scheduler(loaded.engine, share_prefix=True).run(requests(), Writer())
    summary.wall_s = time.perf_counter() - started
    return summary


def _with_hint(error: Exception) -> str:
    """An error record's text: the message, and what to do about it when the error says."""
    message = getattr(error, "message", str(error))
    hint = getattr(error, "hint", None)
    return f"{message} ({hint})" if hint else message


def result_record(item: BatchItem, samples: list) -> dict:
    usage = {"prompt_tokens": len(samples[0].request.prompt) if samples else 0,
             "completion_tokens": sum(len(s.tokens) for s in samples)}
    if item.samples == 1 or len(samples) == 1:
        sample = samples[0]
        return {"id": item.id, "text": sample.text, "finish_reason": sample.finish_reason, "usage": usage}
    from .answers import final_answer
    from .stopping import lowest_group_confidence
    from .voting import SampleResult, vote

    results = [SampleResult(s.text, final_answer(s.text, "auto"), max(0.0, lowest_group_confidence(s.token_confidences)),
                            len(s.tokens)) for s in samples]
    tally = vote(results, "weighted")
    best = samples[tally.winner_index] if tally.winner_index is not None else samples[0]
    return {"id": item.id, "text": best.text, "answer": tally.answer, "votes": tally.counts,
            "finish_reason": best.finish_reason, "usage": usage}
