"""The cost curve: what one llama_decode call of r rows costs, relative to a call of one row.

Whether decoding several rows at once pays depends on the machine: on a GPU (memory-bound) eight
rows cost about what one does; on a small CPU (compute-bound) four rows may cost 2.4 single
steps and eight more than eight. Speculative decoding (`speculative.py`) picks its draft length
from this curve, so it is measured on the machine itself, once per model file, machine, thread
count and GPU offload, in a few seconds, and cached as JSON under HEARTH_CACHE/cost-curves.

The rows measured are one sequence's next r positions, every row with logits: exactly what a
draft verification decodes.

The same calls also tell up to how many rows llama.cpp computes a call exactly as it computes
one row at a time: wider calls may switch to other kernels (here: 8 rows and up on an AVX-512
CPU), whose rounding differs, and with a model like Gemma 3 (large activations) that moves logits
by up to a unit and changes greedy choices. That also depends on how many positions the KV cache
holds: on a Xeon with AMX, CPU flash attention over an F16 KV cache was exact up to 16 rows below
256 positions and at no width from 256 on (one row then splits the cells among the threads); over
a BF16 cache, which a model loaded to speculate on the CPU gets (`hardware.speculation_kv_type`),
exact up to 16 rows at every position checked; without flash attention, at 1 to 8 rows from one
position to the next.
So exactness is measured at several positions (`EXACT_BASES`); a threshold (exactness that only
falls further on) is kept by position, anything else counts as exact at one row only. Greedy
speculative decoding verifies drafts only in calls that are exact where they are
(`exact_rows_from`), so greedy output stays exactly plain decode's.
"""

from __future__ import annotations

import hashlib
import json
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

from ..paths import atomic_write, cache_dir

WIDTHS = (1, 2, 3, 4, 5, 6, 7, 8, 12, 16)
CURVE_FORMAT = 5
BASE_TOKENS = 48  # KV positions already held when the rows are measured (a short prompt)
# KV positions where exactness is checked (those that fit the context): either side of 256,
# where CPU flash attention changes kernels, and further out.
EXACT_BASES = (BASE_TOKENS, 64, 100, 200, 240, 300, 500, 1000, 2000)
ROUNDS = 3  # after one warm-up round; each width's median over the rounds


@dataclass(frozen=True)
class CostCurve:
    """Seconds of one decode call per row count; `relative(r)` is the cost in single-row calls."""

    widths: tuple[int, ...]
    seconds: tuple[float, ...]
    source: str = "measured"  # measured | cached | given
    exact_rows: int = 1 << 30  # calls up to this many rows give bit-identical logits and KV to single rows
    # (KV position, exact rows there), ascending: where exactness was measured; empty: `exact_rows`
    # holds at every position (a given curve)
    exact_at: tuple[tuple[int, int], ...] = ()

    def exact_rows_from(self, position: int) -> int:
        """The widest call starting at KV position `position` that is exact: the least of what
        was measured at the last position checked at or before it and at every position checked
        up to the first one past the call's widest end. Beyond the positions checked: 1."""
        if not self.exact_at:
            return self.exact_rows
        far = position + self.widths[-1]
        allowed = None
        for base, exact in self.exact_at:
            if base <= position:
                allowed = exact  # the nearest checked position at or before the call
                continue
            allowed = exact if allowed is None else min(allowed, exact)
            if base >= far:
                return allowed
        return 1

    def relative(self, rows: float) -> float:
        """The cost of a call of `rows` rows in single-row calls: interpolated between measured
        widths, extended past the last one along its last slope (never below one row's cost)."""
        widths, rel = self.widths, [s / self.seconds[0] for s in self.seconds]
        if rows <= widths[0]:
            return rel[0]
        for (w0, c0), (w1, c1) in zip(zip(widths, rel), zip(widths[1:], rel[1:])):
            if rows <= w1:
                return c0 + (c1 - c0) * (rows - w0) / (w1 - w0)
        if len(widths) == 1:
            return rel[0] * rows
        slope = (rel[-1] - rel[-2]) / (widths[-1] - widths[-2])
        return max(rel[-1] + max(slope, 0.0) * (rows - widths[-1]), 1.0)

    def throughput(self, rows: int) -> float:
        """Rows per single-row call time when every row is useful: rows / relative(rows)."""
        return rows / self.relative(rows)

    def best_width(self, limit: int | None = None) -> int:
        """The row count (among the measured ones, up to `limit`) with the highest throughput."""
        candidates = [w for w in self.widths if limit is None or w <= limit] or [1]
        return max(candidates, key=self.throughput)

    @property
    def best_speedup(self) -> float:
        """The most that fully used extra rows can give over single-row calls."""
        return max(self.throughput(w) for w in self.widths)

    def to_dict(self) -> dict:
        return {"widths": list(self.widths), "seconds": [round(s, 6) for s in self.seconds],
                "relative": [round(s / self.seconds[0], 3) for s in self.seconds],
                "best_speedup": round(self.best_speedup, 3), "exact_rows": min(self.exact_rows, self.widths[-1]),
                "exact_at": [list(pair) for pair in self.exact_at], "source": self.source}


def curve_key(model_path: Path, machine: dict, n_threads: int, n_gpu_layers: int,
              flash_attn: bool | None = None, kv_type: int | None = None) -> str:
    """What the curve depends on: the model file (its size and first MiB), the machine (CPU,
    llama.cpp build, GPU), the thread count, the GPU offload, the attention kernel and the KV
    cache type (which rows llama.cpp computes exactly as single rows depends on both)."""
    digest = hashlib.sha256()
    with open(model_path, "rb") as handle:
        digest.update(handle.read(1 << 20))
    digest.update(str(Path(model_path).stat().st_size).encode())
    digest.update(json.dumps(machine, sort_keys=True).encode())
    digest.update(f"threads={n_threads} gpu_layers={n_gpu_layers} format={CURVE_FORMAT}".encode())
    if flash_attn is not None:
        digest.update(f" flash_attn={flash_attn}".encode())
    if kv_type is not None:
        digest.update(f" kv_type={kv_type}".encode())
    return digest.hexdigest()[:24]


def machine_identity() -> dict:
    """The parts of this machine a decode's speed depends on (cheap to read, no GPU probe)."""
    from .engine import backend_info
    from .hardware import detect_cpu, local_cpu_weight_buffers

    model, physical, logical, simd = detect_cpu()
    backend = backend_info()
    # the weight buffers decide the matrix kernels, so the cost and the exact rows (repacked rows:
    # another kernel from 4 rows on than for 1)
    return {"cpu": model, "physical_cores": physical, "logical_cores": logical, "simd": sorted(simd),
            "llama_cpp_python": backend["llama_cpp_python"], "system_info": backend["system_info"],
            "cpu_weights": local_cpu_weight_buffers()}


def curve_path(key: str) -> Path:
    return cache_dir("cost-curves") / f"{key}.json"


def read_cached(key: str) -> CostCurve | None:
    """The cached curve, or None when there is none or the file is not one (it is re-measured)."""
    return read_curve(curve_path(key))


def read_curve(path: Path) -> CostCurve | None:
    """A curve file as `write_cached` writes it, or None when it is missing or not one."""
    try:
        record = json.loads(Path(path).read_text(encoding="utf-8"))
        widths, seconds = tuple(int(w) for w in record["widths"]), tuple(float(s) for s in record["seconds"])
        exact = int(record["exact_rows"])
        exact_at = tuple((int(base), int(rows)) for base, rows in record["exact_at"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if record.get("format") != CURVE_FORMAT or not widths or len(widths) != len(seconds) or widths[0] != 1 \
            or min(seconds) <= 0 or list(widths) != sorted(set(widths)) or exact < 1 \
            or any(rows < 1 for _, rows in exact_at) or [b for b, _ in exact_at] != sorted({b for b, _ in exact_at}):
        return None
    return CostCurve(widths, seconds, "cached", exact, exact_at)


def write_cached(key: str, curve: CostCurve, about: dict) -> None:
    record = {"format": CURVE_FORMAT, "widths": list(curve.widths), "seconds": list(curve.seconds),
              "exact_rows": curve.exact_rows, "exact_at": [list(pair) for pair in curve.exact_at], "measured": time.strftime("%Y-%m-%dT%H:%M:%S"), **about}
    with atomic_write(curve_path(key)) as handle:
        json.dump(record, handle, indent=1)


def measure_curve(engine, widths: tuple[int, ...] = WIDTHS, rounds: int = ROUNDS, seq: int = 0) -> CostCurve:
    """Time decode calls of one sequence's next r rows (all with logits) after a short prompt,
    and find up to how many rows a call is exact (see the module's docstring).

    Uses (and clears) sequence `seq` of the engine's context; the caller's KV for it is lost.
    Widths larger than the batch or the context are left out.
    """
    ctx = engine.ctx
    base = min(BASE_TOKENS, engine.n_ctx_seq // 2)
    room = min(engine.batch.capacity, engine.n_ctx_seq - base - 1)
    widths = tuple(w for w in widths if w <= room) or (1,)
    bases = [base] + [b for b in EXACT_BASES if b > base and b + widths[-1] + 1 <= engine.n_ctx_seq]
    tokens = _filler_tokens(engine, bases[-1] + widths[-1] + 1)
    engine.cached.pop(seq, None)
    ctx.seq_remove(seq, -1, -1)
    timings: dict[int, list[float]] = {w: [] for w in widths}
    try:
        _decode(engine, tokens[:base], 0, seq, last_logits=False)
        exact_rows = _exact_rows(engine, tokens, base, widths, seq)  # also warms caches and threads up
        exact_at = [(base, exact_rows)]
        for _ in range(rounds):
            for width in widths:
                started = time.perf_counter()
                _decode(engine, tokens[base:base + width], base, seq, last_logits=True)
                timings[width].append(time.perf_counter() - started)
                ctx.seq_remove(seq, base, -1)
        for previous, further in zip(bases, bases[1:]):  # the prefix grows to each further position
            _decode(engine, tokens[previous:further], previous, seq, last_logits=False)
            exact_at.append((further, _exact_rows(engine, tokens, further, widths, seq)))
    finally:
        ctx.seq_remove(seq, -1, -1)
    if any(later[1] > earlier[1] for earlier, later in zip(exact_at, exact_at[1:])):
        # Exactness that rises again further on follows no threshold (CPU attention without flash
        # attention: 1 to 8 rows from one position to the next): nothing between the positions
        # checked is known, so no call of several rows is taken as exact anywhere.
        exact_rows, exact_at = 1, [(base, 1) for base, _ in exact_at]
    return CostCurve(widths, tuple(statistics.median(timings[w]) for w in widths), exact_rows=exact_rows,
                     exact_at=tuple(exact_at))


def _exact_rows(engine, tokens: list[int], base: int, widths: tuple[int, ...], seq: int) -> int:
    """The widest call whose rows' logits, and the KV cells it writes (read back through the
    next single-row call), are bit-identical to single-row decoding, narrower widths included."""
    import numpy as np

    ctx = engine.ctx
    reference: list = []  # one row at a time: logits at base, base + 1, ...

    def single_rows(upto: int) -> None:  # the reference as far as `upto` (the KV above base is rebuilt)
        if len(reference) > upto:
            return
        reference.clear()
        for i in range(upto + 1):
            _decode(engine, [tokens[base + i]], base + i, seq, last_logits=True)
            reference.append(ctx.logits_row(0).copy())
        ctx.seq_remove(seq, base, -1)

    exact = 1
    for width in widths[1:]:
        single_rows(widths[1] if width == widths[1] else widths[-1])  # a first failure costs little
        _decode(engine, tokens[base:base + width], base, seq, last_logits=True)
        same = all(np.array_equal(ctx.logits_row(i), reference[i]) for i in range(width))
        _decode(engine, [tokens[base + width]], base + width, seq, last_logits=True)
        same = same and np.array_equal(ctx.logits_row(0), reference[width])
        ctx.seq_remove(seq, base, -1)
        if not same:
            break
        exact = width
    return exact


def _filler_tokens(engine, n: int) -> list[int]:
    text = "The quick brown fox jumps over the lazy dog while the cat watches from the warm kitchen window. "
    tokens = engine.tokenize(text * (1 + n // 8), add_special=False)
    return (tokens * (1 + n // max(1, len(tokens))))[:n]


def _decode(engine, tokens: list[int], start: int, seq: int, last_logits: bool) -> None:
    """Decode `tokens` at positions start.. of `seq`: all rows with logits when `last_logits`."""
    batch = engine.batch
    for offset in range(0, len(tokens), batch.capacity):
        batch.clear()
        for i, token in enumerate(tokens[offset:offset + batch.capacity]):
            batch.add(token, start + offset + i, (seq,), last_logits)
        engine.ctx.decode(batch)


def cost_curve(engine, model_path: Path, n_threads: int, n_gpu_layers: int,
               on_measure=None, flash_attn: bool | None = None, kv_type: int | None = None) -> CostCurve:
    """The cached curve for this model, machine, threads and offload, or a fresh measurement
    (cached for next time). `on_measure()` is called before measuring (a few seconds)."""
    machine = machine_identity()
    key = curve_key(model_path, machine, n_threads, n_gpu_layers, flash_attn, kv_type)
    cached = read_cached(key)
    if cached is not None:
        return cached
    if on_measure is not None:
        on_measure()
    curve = measure_curve(engine)
    if curve.widths != WIDTHS:
        return curve  # a context too small for every width: measure again with a normal one
    try:
        write_cached(key, curve, {"model": Path(model_path).name, "threads": n_threads,
                                  "gpu_layers": n_gpu_layers, "machine": machine})
    except OSError:
        pass  # a read-only cache only costs a re-measurement next time
    return curve
