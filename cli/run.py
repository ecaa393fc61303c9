"""`hearth run`: one prompt in, one answer out — built for shell pipelines."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..errors import UsageError
from . import _options as opt
from . import _output as out
from .app import command


def read_prompt(argument: str | None) -> str:
    """The argument, then piped stdin (when stdin is not a terminal), joined as one prompt."""
    parts = [argument] if argument else []
    stdin = sys.stdin
    if stdin is not None and not stdin.isatty():
        try:
            piped = stdin.read()
        except UnicodeDecodeError:
            raise UsageError("stdin is not valid UTF-8 text") from None
        if piped.strip():
            parts.append(piped.rstrip("\n"))
    prompt = "\n\n".join(parts)
    if not prompt.strip():
        raise UsageError("no prompt: pass one as an argument or pipe it on stdin",
                         hint='hearth run "Why is the sky blue?"')
    return prompt


def read_grammar(schema: Path | None, grammar: Path | None) -> str | None:
    if schema and grammar:
        raise UsageError("--schema and --grammar cannot be combined")
    path = schema or grammar
    if path is None:
        return None
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise UsageError(f"{path} is not UTF-8 text") from None
    if not text.strip():
        raise UsageError(f"{path} is empty")
    if schema:
        from ..runtime.engine import json_schema_grammar

        return json_schema_grammar(text)
    return text


def sampling_from_flags(temp, top_k, top_p, min_p, repeat_penalty, seed, grammar=None, default_temp=0.8):
    from ..runtime.sampling import SamplingParams

    return SamplingParams(
        temperature=default_temp if temp is None else temp, top_k=top_k, top_p=top_p, min_p=min_p,
        repeat_penalty=repeat_penalty, seed=seed, grammar=grammar,
    ).validated()


@command("run")
def run(
    prompt: Annotated[Optional[str], typer.Argument(help="The prompt. Piped stdin is appended to it.", show_default=False)] = None,
    model: opt.Model = None,
    system: opt.System = None,
    max_tokens: opt.MaxTokens = 512,
    temp: opt.Temperature = None,
    top_k: opt.TopK = 40,
    top_p: opt.TopP = 0.95,
    min_p: opt.MinP = 0.05,
    repeat_penalty: opt.RepeatPenalty = 1.0,
    seed: opt.Seed = None,
    stop: opt.Stop = None,
    schema: opt.SchemaFile = None,
    grammar: opt.GrammarFile = None,
    ctx: opt.Ctx = None,
    threads: opt.Threads = None,
    gpu_layers: opt.GpuLayers = None,
    samples: Annotated[Optional[int], typer.Option("--samples", "-k", min=1, max=64, help="Reasoning mode: sample K answers in parallel and vote.")] = None,
    vote: Annotated[str, typer.Option("--vote", help="Reasoning mode vote: majority | weighted.")] = "weighted",
    answer: Annotated[str, typer.Option("--answer", help="Reasoning mode answer extraction: auto | number | choice | boxed | line | regex:PATTERN.")] = "auto",
    adaptive: Annotated[bool, typer.Option("--adaptive/--no-adaptive", help="Reasoning mode: stop sampling once the vote is settled.")] = True,
    show_reasoning: Annotated[bool, typer.Option("--show-reasoning", help="Reasoning mode: also print the winning sample's reasoning.")] = False,
    json_out: opt.Json = False,
    verbose: opt.Verbose = 0,
) -> None:
    """Answer one prompt and exit. stdout carries only the answer.

    Examples:

      hearth run "Write a haiku about autumn"

      cat report.txt | hearth run "Summarize in 3 bullets:" -n 200

      hearth run "Capital of France?" --temp 0 --seed 1 --json

      hearth run -m gemma.gguf "Once upon a time" --stop "."

      hearth run "Name a color" --schema color.schema.json

      hearth run "A farmer has 17 sheep and buys 5 more. How many sheep now?" --samples 8 --answer number
    """
    out.set_verbosity(verbose)
    text = read_prompt(prompt)
    grammar_text = read_grammar(schema, grammar)
    if samples is not None and samples > 1:
        from .reasoning import run_reasoning

        run_reasoning(text, model=model, system=system, max_tokens=max_tokens, temp=temp, top_k=top_k,
                      top_p=top_p, min_p=min_p, repeat_penalty=repeat_penalty, seed=seed, stop=stop,
                      ctx=ctx, threads=threads, gpu_layers=gpu_layers, samples=samples, vote=vote,
                      answer=answer, adaptive=adaptive, show_reasoning=show_reasoning,
                      json_out=json_out, verbose=verbose)
        return
    params = sampling_from_flags(temp, top_k, top_p, min_p, repeat_penalty, seed, grammar_text)
    generate_one(text, model=model, system=system, params=params, max_tokens=max_tokens, stop=stop,
                 ctx=ctx, threads=threads, gpu_layers=gpu_layers, json_out=json_out, verbose=verbose)


def generate_one(text, *, model, system, params, max_tokens, stop, ctx, threads, gpu_layers, json_out, verbose):
    from ..runtime.generate import GenRequest, Generator, Hooks
    from ..runtime.session import PlanRequest, load_model

    loaded = load_model(model, PlanRequest(ctx=ctx, threads=threads, gpu_layers=gpu_layers, max_tokens=max_tokens),
                        verbose=verbose >= 2)
    try:
        for reason in loaded.plan.reasons:
            out.detail(f"plan: {reason}")
        if not loaded.has_template:
            out.info(f"note: {loaded.name} has no chat template; running as plain completion")
        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": text}]
        tokens = loaded.prompt_tokens(messages)
        loaded.ensure_context(len(tokens) + max_tokens)

        class Stream(Hooks):
            def on_text(self, sample, delta):
                if not json_out:
                    out.write(delta)

        generator = Generator(loaded.engine)
        request = GenRequest(tokens, params, max_tokens, tuple(stop or ()))
        sample = generator.run([request], Stream())[0][0]
        if json_out:
            out.emit_json(run_record(loaded, sample, generator.stats))
        elif sample.text and not sample.text.endswith("\n") and out.stdout_is_tty():
            out.write("\n")
        out.detail(_stats_line(generator.stats, loaded.engine.load_s))
    finally:
        loaded.close()


def run_record(loaded, sample, stats) -> dict:
    return {
        "text": sample.text,
        "model": loaded.name,
        "finish_reason": sample.finish_reason,
        "usage": {"prompt_tokens": len(sample.request.prompt), "completion_tokens": len(sample.tokens)},
        "timings": {
            "load_s": round(loaded.engine.load_s, 4),
            "prompt_tok_s": stats.as_dict()["prompt_tok_s"],
            "decode_tok_s": stats.as_dict()["decode_tok_s"],
        },
    }


def _stats_line(stats, load_s: float) -> str:
    d = stats.as_dict()
    return (f"load {load_s:.2f}s · prompt {d['prompt_tokens']} tok at {d['prompt_tok_s']} tok/s · "
            f"{d['generated']} tok at {d['decode_tok_s']} tok/s")
