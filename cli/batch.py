"""`hearth batch`: JSONL in, JSONL out, continuous batching, resumable — on this machine, on a
Ray cluster (`--ray`), or one shard of the input (`--shard`); `hearth batch-merge` joins shards."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..errors import InputFormatError, UsageError
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
    ray: Annotated[Optional[str], typer.Option("--ray", metavar="ADDRESS", help="Run on a Ray cluster: auto (the running one), ray://HOST:PORT (Ray Client), or local (a throwaway cluster on this machine, 127.0.0.1 only). Needs pip install 'hearth[ray]'.")] = None,
    replicas: Annotated[Optional[int], typer.Option("--replicas", min=1, help="With --ray: model replicas (default: as many as the cluster holds: one per GPU, or --threads CPUs each).")] = None,
    shard: Annotated[Optional[str], typer.Option("--shard", metavar="I/N", help="Only the lines whose id hashes to I of N shards (Slurm arrays, ssh); join the outputs with hearth batch-merge.")] = None,
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

      hearth batch prompts.jsonl -o answers.jsonl --ray auto            # every replica the cluster holds

      hearth batch prompts.jsonl -o answers.jsonl --ray local --replicas 2 --threads 1

      hearth batch prompts.jsonl -o part-3.jsonl --shard 3/8            # one of 8 jobs
    """
    from ..runtime.batch_shards import parse_shard
    from ..runtime.jsonl_batch import ResultWriter, check_output_writable, iter_lines

    out.set_verbosity(verbose)
    if replicas is not None and ray is None:
        raise UsageError("--replicas needs --ray ADDRESS")
    if ray is not None:
        from ..cluster import require_ray

        require_ray(ray)
    part = parse_shard(shard) if shard else None
    out_path = None if output == "-" else Path(output)
    if out_path is not None:
        check_output_writable(out_path)
    with _open_input(input_path) as handle, ResultWriter(out_path, sys.stdout) as writer:
        source = iter_lines(handle)
        if writer.done_ids:
            out.info(f"resuming: {len(writer.done_ids)} ids already in {out_path}")
        remaining = _count_remaining(input_path, part, writer.done_ids)
        with out.progress("items", enabled=True) as bar:
            task = bar.add_task("batch", total=remaining, rate="")
            job = dict(skip_ids=writer.done_ids, shard=part, on_error=_warn_line,
                       on_line=lambda s: bar.update(task, completed=s.lines, rate=f"{s.tok_s} tok/s"))
            if ray is not None:
                summary = _run_on_cluster(ray, replicas, source, writer, options, model=model, threads=threads,
                                          gpu_layers=gpu_layers, parallel=parallel, ctx=ctx, system=system, **job)
            else:
                summary = _run_here(source, writer, options, model=model, threads=threads, gpu_layers=gpu_layers,
                                    parallel=parallel, ctx=ctx, system=system, verbose=verbose, **job)
    out.info(f"{summary.lines} lines · {summary.errors} errors · {summary.tokens} tokens · "
             f"{summary.wall_s:.1f}s · {summary.tok_s} tok/s")


def _run_here(source, writer, options, *, model, threads, gpu_layers, parallel, ctx, system, verbose, **job):
    from .run import load_model

    with load_model(model, None, threads, gpu_layers, verbose) as loaded:
        return loaded.run_batch(source, writer.write, options, system=system, parallel=parallel, ctx=ctx,
                                on_layout=out.detail, **job)


def _run_on_cluster(address, replicas, source, writer, options, **settings):
    from ..cluster_batch import ClusterJob, run_cluster_batch

    job_settings = {k: settings.pop(k) for k in ("skip_ids", "shard", "on_error", "on_line")}
    summary = run_cluster_batch(ClusterJob(address, replicas=replicas, **settings), source, writer.write, options,
                                on_note=out.detail, **job_settings)
    count = summary.extra["replicas"]
    out.detail(f"{count} replica{'s' if count != 1 else ''}, started in {summary.extra['startup_s']}s")
    return summary


@command("batch-merge")
def batch_merge(
    parts: Annotated[list[Path], typer.Argument(metavar="OUT.jsonl...", help="The shards' output files.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="The joined output file (written only when every check passes).")],
    input_path: Annotated[Optional[Path], typer.Option("--input", "-i", help="The input JSONL: check that every input id appears exactly once (without it, only repeats are checked).")] = None,
    json_out: opt.Json = False,
) -> None:
    """Join the outputs of `hearth batch --shard I/N` jobs, checking every id appears once.

    A separate command, not `hearth batch merge`: `batch` takes the input file as its first
    argument, so a `merge` subcommand would be read as an input named "merge".

    Examples:

      hearth batch-merge part-*.jsonl -o answers.jsonl --input prompts.jsonl
    """
    from ..runtime.batch_shards import merge_outputs

    if output.resolve() in {p.resolve() for p in parts}:
        raise UsageError(f"-o {output} is also one of the parts: write the joined output elsewhere")
    report = merge_outputs(parts, output, input_path)
    if json_out:
        out.emit_json(report.to_dict())
    if not report.ok:
        problems = [f"{len(ids)} {what} (first: {', '.join(map(repr, ids[:3]))})" for what, ids in
                    (("ids missing", report.missing), ("ids repeated", report.duplicated),
                     ("ids not in the input", report.unexpected)) if ids]
        raise InputFormatError(f"not merged: {'; '.join(problems)}", hint="rerun the shards that lack lines "
                               "(the same command resumes); nothing was written", exit_code=1)
    if not json_out:
        checked = "every input id once" if report.checked_input else "no id repeated (pass --input to check none is missing)"
        out.info(f"{report.records} records from {report.files} files -> {output}: {checked}")


def _warn_line(record: dict, line_no: int | None) -> None:
    where = f"line {line_no}" if line_no is not None else "a line"
    which = f" (id {record['id']!r})" if record.get("id") is not None else ""
    out.warn(f"{where}{which}: {record['error']}")


def _open_input(path: str):
    """The input as bytes: each line is decoded on its own, so bad UTF-8 costs only that line."""
    if path == "-":
        return contextlib.nullcontext(sys.stdin.buffer)
    try:
        return open(path, "rb")
    except FileNotFoundError:
        raise UsageError(f"input file not found: {path}") from None
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None


def _count_remaining(path: str, shard, done_ids: set) -> int | None:
    """Lines the job will write (the progress bar's total): unknown for stdin."""
    from ..runtime.batch_shards import input_keys
    from ..runtime.jsonl_batch import LINE_TOO_LONG, iter_lines

    if path == "-":
        return None
    with open(path, "rb") as handle:
        lines = [line.decode("utf-8", "replace") if line is not LINE_TOO_LONG else "{}" for line in iter_lines(handle)]
    if shard is None and not done_ids:
        return sum(1 for line in lines if line.strip())
    return sum(1 for key in input_keys(lines, shard) if key not in done_ids)
