"""`hearth run`: one prompt in, one answer out — built for shell pipelines."""

from __future__ import annotations

import sys
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


def load_model(model, ctx, threads, gpu_layers, verbose: int, options=None):
    """The library's `load`, with the plan's reasons on stderr at -v (`options`: the generation
    options, when they may speculate)."""
    from ..api import load

    loaded = load(model, ctx=ctx, threads=threads, gpu_layers=gpu_layers, options=options, verbose=verbose >= 2)
    for reason in loaded.plan.reasons:
        out.detail(f"plan: {reason}")
    return loaded


Samples = Annotated[Optional[int], typer.Option("--samples", "-k", min=1, max=64, help="Reasoning mode: sample K answers in parallel and vote.")]
Vote = Annotated[Optional[str], typer.Option("--vote", help="Reasoning mode vote: majority | weighted (default weighted).")]
Answer = Annotated[Optional[str], typer.Option("--answer", help="Extract the final answer: auto | number | choice | boxed | line | regex:PATTERN. Without --samples: one greedy sample, its answer printed.")]
Adaptive = Annotated[Optional[bool], typer.Option("--adaptive/--no-adaptive", help="Reasoning mode: stop sampling once the vote is settled (default on).")]
ShowReasoning = Annotated[bool, typer.Option("--show-reasoning", help="Reasoning mode: also print the winning sample's reasoning.")]


@command("run")
@opt.generation_flags("generate", speculation=True)
def run(
    prompt: Annotated[Optional[str], typer.Argument(help="The prompt. Piped stdin is appended to it.", show_default=False)] = None,
    options=None,
    model: opt.Model = None,
    system: opt.System = None,
    ctx: opt.Ctx = None,
    threads: opt.Threads = None,
    gpu_layers: opt.GpuLayers = None,
    samples: Samples = None,
    vote: Vote = None,
    answer: Answer = None,
    adaptive: Adaptive = None,
    show_reasoning: ShowReasoning = False,
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

      cat app.py | hearth run "Rename the function parse to parse_config:" --lookup --temp 0 -v
    """
    out.set_verbosity(verbose)
    text = read_prompt(prompt)
    if samples is None and answer is None:
        if vote is not None or adaptive is not None or show_reasoning:
            raise UsageError("--vote, --adaptive and --show-reasoning need reasoning mode",
                             hint="add --samples K (or --answer MODE for one sample)")
    else:
        from .reasoning import run_reasoning

        options.require_plain("reasoning mode (--samples/--answer)")
        run_reasoning(text, options, model=model, system=system, ctx=ctx, threads=threads, gpu_layers=gpu_layers,
                      samples=samples or 1, vote=vote or "weighted", answer=answer or "auto",
                      adaptive=True if adaptive is None else adaptive, show_reasoning=show_reasoning,
                      json_out=json_out, verbose=verbose)
        return
    with load_model(model, ctx, threads, gpu_layers, verbose, options) as loaded:
        if not loaded.has_template:
            out.info(f"note: {loaded.name} has no chat template; running as plain completion")
        done = loaded.generate(text, options, system=system, on_text=None if json_out else out.write)
    if json_out:
        out.emit_json(done.to_dict())
        return
    if done.text and not done.text.endswith("\n") and out.stdout_is_tty():
        out.write("\n")
    t = done.timings
    out.detail(f"load {t['load_s']:.2f}s · prompt {done.usage.prompt_tokens} tok at {t['prompt_tok_s']} tok/s · "
               f"{done.usage.completion_tokens} tok at {t['decode_tok_s']} tok/s")
    if "speculative" in t:
        for line in speculative_lines(t["speculative"]):
            out.detail(line)


def speculative_lines(spec: dict) -> list[str]:
    """-v: the cost curve the draft lengths were chosen from, and what drafting did."""
    curve = spec["cost_curve"]
    points = " ".join(f"{w}:{r:.2f}" for w, r in zip(curve["widths"], curve["relative"]))
    share = f" ({spec['acceptance']:.0%})" if spec["acceptance"] is not None else ""
    chosen = " ".join(f"{n}×{c}" for n, c in spec["draft_length"]["chosen"].items())
    exact = (" · exact rows by KV position " + " ".join(f"{b}:{r}" for b, r in curve["exact_at"])
             if curve.get("exact_at") else f" · exact up to {curve['exact_rows']} rows")
    layout = spec.get("layout")
    laid_out = (f" ({layout['accepted']} of {layout['drafted']} copied across other whitespace)"
                if layout and layout["drafted"] else "")
    return [f"cost curve ({curve['source']}; rows:cost of one row) {points} · best {curve['best_speedup']:.2f}x{exact}",
            f"speculative ({spec['mode']}): drafted {spec['drafted']}, accepted {spec['accepted']}{share}{laid_out} · "
            f"{spec['tokens_per_step'] or 0:.2f} tok/step · draft lengths {chosen}"]
