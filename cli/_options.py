"""Options shared by several commands (Annotated aliases, so each command stays short).

Generation flags default to None: a flag left out means GenerationOptions' default (the one
definition of every default, runtime/options.py), which the help text quotes.
"""

from __future__ import annotations

import functools
import inspect
from pathlib import Path
from typing import Annotated, Callable, Optional

import typer

from ..runtime.options import DEFAULT_MAX_TOKENS, DEFAULT_MIN_P, DEFAULT_TEMPERATURE, REASONING_MIN_P, GenerationOptions

_D = GenerationOptions()

Model = Annotated[
    Optional[str],
    typer.Option("--model", "-m", help="A .gguf path, `default` (the embedded model) or REPO[:QUANT] from the store."),
]
Json = Annotated[bool, typer.Option("--json", help="Print one JSON object instead of text.")]
Verbose = Annotated[int, typer.Option("--verbose", "-v", count=True, help="More detail on stderr (-vv: llama.cpp's own log).")]
System = Annotated[Optional[str], typer.Option("--system", "-s", help="System prompt.")]
Temperature = Annotated[Optional[float], typer.Option("--temp", "-t", min=0.0, max=5.0, help=f"Sampling temperature (0 = greedy; default {DEFAULT_TEMPERATURE}).")]
TopK = Annotated[Optional[int], typer.Option("--top-k", min=0, help=f"Keep the K most likely tokens (0 = off; default {_D.top_k}).")]
TopP = Annotated[Optional[float], typer.Option("--top-p", min=0.0, max=1.0, help=f"Nucleus sampling mass (1 = off; default {_D.top_p}).")]
MinP = Annotated[Optional[float], typer.Option("--min-p", min=0.0, max=1.0, help=f"Drop tokens below this fraction of the top probability (default {DEFAULT_MIN_P}; {REASONING_MIN_P} for reasoning mode's samples).")]
RepeatPenalty = Annotated[Optional[float], typer.Option("--repeat-penalty", min=0.0, max=5.0, help=f"Penalty for repeating recent tokens (1 = off; default {_D.repeat_penalty}).")]
Seed = Annotated[Optional[int], typer.Option("--seed", help="Random seed (fixed seed + temp 0 = reproducible).")]
Stop = Annotated[Optional[list[str]], typer.Option("--stop", help="Stop when this text appears (repeatable).")]
Ctx = Annotated[Optional[int], typer.Option("--ctx", "-c", min=16, help="Context window in tokens (default: planned).")]
Threads = Annotated[Optional[int], typer.Option("--threads", min=1, help="CPU threads (default: planned).")]
GpuLayers = Annotated[Optional[int], typer.Option("--gpu-layers", min=-1, help="Layers to offload to the GPU (-1 = all; default: planned).")]
SchemaFile = Annotated[Optional[Path], typer.Option("--schema", "--json-schema", help="JSON schema file: constrain the output to JSON matching it.")]
Lookup = Annotated[Optional[bool], typer.Option("--lookup", help="Speculative decoding: draft tokens from the prompt and the answer so far (n-gram lookup); the draft length follows this machine's measured cost curve and the acceptance rate, down to none. Greedy output is unchanged.")]
LooseDrafts = Annotated[Optional[bool], typer.Option("--loose-drafts", help="With --lookup/--draft at temperature 0: check drafts in any call the cost curve favours, as llama.cpp does, not only in calls computed exactly like one row. Faster where exactness ends (some CPUs: past 256 tokens); the text may differ from plain decode's at rounding-level near-ties.")]
Draft = Annotated[Optional[str], typer.Option("--draft", help="Speculative decoding: draft tokens with this small model (same vocabulary as -m), drafts checked as with --lookup.", show_default=False)]
GrammarFile = Annotated[Optional[Path], typer.Option("--grammar", help="GBNF grammar file: constrain the output to it.")]


def max_tokens_option(mode: str):
    """-n, whose default depends on what is generated (a chat turn runs longer than a batch line)."""
    return Annotated[Optional[int], typer.Option("--max-tokens", "-n", min=1, help=f"Most tokens to generate (default {DEFAULT_MAX_TOKENS[mode]}).")]


def generation_flags(mode: str, *, stop: bool = True, constraints: bool = True, speculation: bool = False) -> Callable:
    """Give a command the generation flags, parsed into one `options: GenerationOptions` argument.

    The flags are declared once here, so run, chat and batch spell and mean them the same way;
    the command's own parameters come first in --help, these after them.
    """
    flags: dict[str, object] = {"max_tokens": max_tokens_option(mode), "temp": Temperature, "top_k": TopK,
                                "top_p": TopP, "min_p": MinP, "repeat_penalty": RepeatPenalty, "seed": Seed}
    if stop:
        flags["stop"] = Stop
    if constraints:
        flags.update(schema=SchemaFile, grammar=GrammarFile)
    if speculation:
        flags.update(lookup=Lookup, draft=Draft, loose_drafts=LooseDrafts)

    def decorate(func: Callable) -> Callable:
        import typing

        hints = typing.get_type_hints(func, include_extras=True)  # in the command module's namespace
        signature = inspect.signature(func)
        own = [p.replace(annotation=hints.get(p.name, p.annotation))
               for p in signature.parameters.values() if p.name != "options"]
        added = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=annotation)
                 for name, annotation in flags.items()]

        @functools.wraps(func)
        def wrapper(*args, **kwargs):
            kwargs["options"] = generation_options(**{name: kwargs.pop(name) for name in flags})
            return func(*args, **kwargs)

        del wrapper.__wrapped__  # Typer must read the signature below, not the wrapped function's
        wrapper.__signature__ = signature.replace(parameters=[*own, *added])
        wrapper.__annotations__ = {**{k: v for k, v in hints.items() if k != "options"}, **flags}
        return wrapper

    return decorate


def generation_options(*, max_tokens=None, temp=None, top_k=None, top_p=None, min_p=None, repeat_penalty=None,
                       seed=None, stop=None, schema: Path | None = None, grammar: Path | None = None,
                       lookup: bool = False, draft: str | None = None, loose_drafts: bool = False) -> GenerationOptions:
    """The flags as the library's options (flags left out keep GenerationOptions' defaults)."""
    from ..errors import UsageError

    if schema and grammar:
        raise UsageError("--schema and --grammar cannot be combined")
    if loose_drafts and not (lookup or draft):
        raise UsageError("--loose-drafts changes how --lookup or --draft check their drafts: give one of them")
    return GenerationOptions().merged(
        max_tokens=max_tokens, temperature=temp, top_k=top_k, top_p=top_p, min_p=min_p, repeat_penalty=repeat_penalty,
        seed=seed, stop=tuple(stop) if stop else None, json_schema=_read(schema), grammar=_read(grammar),
        lookup=lookup or None, draft=draft, exact_drafts=False if loose_drafts else None)


def _read(path: Path | None) -> str | None:
    from ..errors import UsageError

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
    return text
