"""`hearth batch`: JSONL in, JSONL out, continuous batching, resumable."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..errors import UsageError
from . import _options as opt
from . import _output as out
from .app import command

@command("batch")
@opt.generation_flags("batch")
def batch(
    input_path: Annotated[str, typer.Argument(metavar="IN.jsonl", help="Input JSONL file, or - for stdin.")],
    options=None,
    output: Annotated[str, typer.Option("--output", "-o", help="Output JSONL file (appended, resumable), or - for stdout.")] = "-",
    model: opt.Model = None,
    parallel: Annotated[Optional[int], typer.Option("--parallel", "-p", min=1, max=255, help="Sequences decoded together (default: 16 on a CPU, 64 with every layer on a GPU, fewer if memory is short).")] = None,
    system: opt.System = None,
    ctx: opt.Ctx = None,
    threads: opt.Threads = None,
    gpu_layers: opt.GpuLayers = None,
    verbose: opt.Verbose = 0,
) -> None:
    """Generate an answer for every line of a JSONL file.

    Each input line is {"id": …, "prompt": "…"} or {"id": …, "messages": [...]}, optionally with
    system, max_tokens, temperature, top_p, seed, stop, samples. Each output line has id, text,
    finish_reason and usage, or id and error. Rerun with the same -o to resume: ids already
    written are skipped.

    Examples:

      hearth batch prompts.jsonl -o answers.jsonl

      cat prompts.jsonl | hearth batch - --temp 0 > answers.jsonl

      hearth batch prompts.jsonl -o labels.jsonl --schema label.schema.json -p 8
    """
    from ..runtime.jsonl_batch import ResultWriter, check_output_writable
    from .run import load_model

    out.set_verbosity(verbose)
    out_path = None if output == "-" else Path(output)
    if out_path is not None:
        check_output_writable(out_path)
    with _open_input(input_path) as source, ResultWriter(out_path, sys.stdout) as writer:
        if writer.done_ids:
            out.info(f"resuming: {len(writer.done_ids)} ids already in {out_path}")
        total = _count_lines(input_path)
        with load_model(model, None, threads, gpu_layers, verbose) as loaded, out.progress("items", enabled=True) as bar:
            task = bar.add_task("batch", total=(total - len(writer.done_ids)) if total else None, rate="")
            summary = loaded.run_batch(source, writer.write, options, system=system, parallel=parallel, ctx=ctx,
                                       skip_ids=writer.done_ids, on_error=_warn_line, on_layout=out.detail,
                                       on_line=lambda s: bar.update(task, completed=s.lines, rate=f"{s.tok_s} tok/s"))
    out.info(f"{summary.lines} lines · {summary.errors} errors · {summary.tokens} tokens · "
             f"{summary.wall_s:.1f}s · {summary.tok_s} tok/s")


def _warn_line(record: dict, line_no: int | None) -> None:
    where = f"line {line_no}" if line_no is not None else "a line"
    out.warn(f"{where} (id {record['id']!r}): {record['error']}")


def _open_input(path: str):
    if path == "-":
        return contextlib.nullcontext(sys.stdin)
    try:
        return open(path, encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"input file not found: {path}") from None
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None


def _count_lines(path: str) -> int | None:
    if path == "-":
        return None
    with open(path, "rb") as handle:
        return sum(1 for line in handle if line.strip())
