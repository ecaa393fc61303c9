"""`hearth convert`, `hearth quantize`, `hearth quality`: checkpoints to GGUF, smaller, measured."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from . import _output
from ._options import Json, Threads
from .app import command

Force = Annotated[bool, typer.Option("--force", "-f", help="Replace an existing output file.")]


@command("convert")
def convert(
    src: Annotated[str, typer.Argument(help="A local model folder, or a hub repo id (OWNER/REPO).")],
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Output .gguf (default: under HEARTH_HOME, registered).")] = None,
    outtype: Annotated[str, typer.Option("--outtype", help="Tensor type: f32, f16, bf16 or q8_0.")] = "f16",
    quant: Annotated[Optional[str], typer.Option("--quant", "-q", help="Also quantize to this type (e.g. Q4_K_M) in one step.")] = None,
    name: Annotated[Optional[str], typer.Option("--name", help="Name to register (default: the folder/repo name).")] = None,
    register: Annotated[bool, typer.Option("--register/--no-register", help="Register the result for `hearth run -m NAME`.")] = True,
    revision: Annotated[Optional[str], typer.Option("--revision", help="Hub revision (branch, tag or commit).")] = None,
    threads: Threads = None,
    force: Force = False,
    json_out: Json = False,
) -> None:
    """Convert a Hugging Face checkpoint (safetensors) to GGUF.

    Reads one tensor at a time from memory-mapped safetensors, so memory stays near the largest
    tensor whatever the model size. The result is written to a temp file and renamed.

    Examples:

      hearth convert ./SmolLM2-135M                      # -> F16 GGUF, registered as SmolLM2-135M

      hearth convert Qwen/Qwen2.5-0.5B -q Q4_K_M         # download, convert, quantize

      hearth convert ./my-llama -o my-llama-f32.gguf --outtype f32 --no-register
    """
    from ..model_files import convert as convert_model
    from .models import PullProgress

    with _output.progress("bytes", enabled=not json_out) as bar:
        task = bar.add_task(f"convert {name or src}", total=None)
        report = convert_model(src, output, outtype=outtype, quant=quant, name=name, register=register,
                               revision=revision, threads=threads, force=force, observer=PullProgress(bar),
                               on_tensor=lambda tensor, done, total: bar.update(task, completed=done, total=total),
                               on_quantize=lambda p: bar.update(task, completed=p.done, total=p.total))
    if json_out:
        _output.emit_json(report.to_dict())
        return
    _output.key_values([("path", report.path), ("architecture", f"{report.architecture} -> {report.gguf_arch}"),
                        ("type", report.type), ("params", f"{report.params:,}"),
                        ("size", _output.human_bytes(report.bytes))])
    if report.gguf_name != report.name:
        _output.info(f"written as general.name {report.gguf_name!r}: llama.cpp picks tokenizer rules by name, and "
                     f"{report.name!r} picks rules this vocabulary cannot take")
    if report.registered:
        _output.info(f"registered: hearth run -m {report.name}")


@command("quantize")
def quantize(
    model: Annotated[str, typer.Argument(help="Input GGUF (F32/F16/BF16 best), or a registered name.")],
    quant: Annotated[str, typer.Argument(help="Target: F16, Q8_0, Q6_K, Q5_K_M, Q4_K_M, Q4_0, IQ4_XS, ...")],
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Output .gguf (default: beside the input).")] = None,
    imatrix: Annotated[Optional[Path], typer.Option("--imatrix", help="Importance matrix from llama-imatrix (GGUF or .dat).")] = None,
    threads: Threads = None,
    force: Force = False,
    json_out: Json = False,
) -> None:
    """Quantize a GGUF with llama.cpp's quantizer.

    Refuses unknown types (and lists the valid ones), an existing output without --force, and an
    input already quantized at or below the target.

    Examples:

      hearth quantize model-F16.gguf Q4_K_M              # -> model-Q4_K_M.gguf

      hearth quantize SmolLM2-135M Q8_0                  # a registered name works too

      hearth quantize model-F16.gguf IQ4_XS --imatrix imatrix.gguf -o small.gguf
    """
    from ..model_files import quantize as quantize_model

    with _output.progress("items", enabled=not json_out) as bar:
        task = bar.add_task(f"quantize {quant}", total=None, rate="")
        result = quantize_model(model, quant, output, imatrix=imatrix, threads=threads, force=force,
                                on_progress=lambda p: bar.update(task, completed=p.done, total=p.total, rate=p.tensor))
    report = {"path": str(result.path), "type": result.quant, "input_type": result.input_type,
              "input_bytes": result.input_bytes, "output_bytes": result.output_bytes,
              "seconds": round(result.seconds, 2), "requantized": result.requantized}
    if json_out:
        _output.emit_json(report)
        return
    if result.requantized:
        _output.warn(f"the input was already {result.input_type}: its quantization error adds to {result.quant}'s")
    _output.key_values([("path", result.path), ("type", f"{result.input_type} -> {result.quant}"),
                        ("size", f"{_output.human_bytes(result.input_bytes)} -> {_output.human_bytes(result.output_bytes)}"),
                        ("time", f"{result.seconds:.1f} s")])


@command("quality")
def quality(
    reference: Annotated[str, typer.Argument(help="Reference GGUF (e.g. the F16 conversion).")],
    candidate: Annotated[str, typer.Argument(help="Candidate GGUF (e.g. its Q4_K_M).")],
    text: Annotated[Optional[Path], typer.Option("--text", help="Evaluation text (default: the prose shipped with hearth).")] = None,
    ctx: Annotated[int, typer.Option("--ctx", "-c", min=16, help="Tokens per evaluation chunk; the second half of each is scored.")] = 512,
    chunks: Annotated[Optional[int], typer.Option("--chunks", min=1, help="Score at most this many chunks.")] = None,
    threads: Threads = None,
    json_out: Json = False,
) -> None:
    """Measure what a quantization costs: perplexity, KL divergence, top-1 agreement.

    Both models read the same text; the report gives each perplexity, the mean and 99th
    percentile KL divergence of the candidate's next-token distribution from the reference's,
    and how often their most likely tokens agree (the figures of llama-perplexity --kl-divergence).

    Examples:

      hearth quality model-F16.gguf model-Q4_K_M.gguf

      hearth quality model-F16.gguf model-Q8_0.gguf --text book.txt --ctx 1024 --json
    """
    from ..model_files import evaluate_quality
    from ..quantize.quality import read_text

    body = read_text(text)
    with _output.progress("items", enabled=not json_out) as bar:
        task = bar.add_task("evaluate", total=None, rate="")
        report = evaluate_quality(reference, candidate, body, ctx, threads, chunks,
                                  lambda done, total: bar.update(task, completed=done, total=total))
    if json_out:
        _output.emit_json(report.as_dict())
        return
    _output.key_values([
        ("tokens scored", f"{report.tokens_scored} ({report.chunks} chunks of {report.ctx})"),
        ("perplexity", f"{report.ppl_reference:.4f} (reference)  {report.ppl_candidate:.4f} (candidate)  "
                       f"ratio {report.ppl_ratio:.4f}"),
        ("KL divergence", f"mean {report.kld_mean:.6f}  p99 {report.kld_p99:.6f}  max {report.kld_max:.6f}"),
        ("top-1 agreement", f"{100 * report.top1_agreement:.2f} %"),
    ])
