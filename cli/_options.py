"""Options shared by several commands (Annotated aliases, so each command stays short).

Generation flags default to None: a flag left out means GenerationOptions' default (the one
definition of every default, runtime/options.py), which the help text quotes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ..runtime.options import DEFAULT_MAX_TOKENS, DEFAULT_TEMPERATURE, GenerationOptions

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
MinP = Annotated[Optional[float], typer.Option("--min-p", min=0.0, max=1.0, help=f"Drop tokens below this fraction of the top probability (default {_D.min_p}).")]
RepeatPenalty = Annotated[Optional[float], typer.Option("--repeat-penalty", min=0.0, max=5.0, help=f"Penalty for repeating recent tokens (1 = off; default {_D.repeat_penalty}).")]
Seed = Annotated[Optional[int], typer.Option("--seed", help="Random seed (fixed seed + temp 0 = reproducible).")]
Stop = Annotated[Optional[list[str]], typer.Option("--stop", help="Stop when this text appears (repeatable).")]
Ctx = Annotated[Optional[int], typer.Option("--ctx", "-c", min=16, help="Context window in tokens (default: planned).")]
Threads = Annotated[Optional[int], typer.Option("--threads", min=1, help="CPU threads (default: planned).")]
GpuLayers = Annotated[Optional[int], typer.Option("--gpu-layers", min=-1, help="Layers to offload to the GPU (-1 = all; default: planned).")]
SchemaFile = Annotated[Optional[Path], typer.Option("--schema", "--json-schema", help="JSON schema file: constrain the output to JSON matching it.")]
Lookup = Annotated[bool, typer.Option("--lookup", help="Speculative decoding: draft tokens from the prompt and the answer so far (n-gram lookup); the draft length follows this machine's measured cost curve and the acceptance rate, down to none. Greedy output is unchanged.")]
Draft = Annotated[Optional[str], typer.Option("--draft", help="Speculative decoding: draft tokens with this small model (same vocabulary as -m), drafts checked as with --lookup.", show_default=False)]
GrammarFile = Annotated[Optional[Path], typer.Option("--grammar", help="GBNF grammar file: constrain the output to it.")]


def max_tokens_option(mode: str):
    """-n, whose default depends on what is generated (a chat turn runs longer than a batch line)."""
    return Annotated[Optional[int], typer.Option("--max-tokens", "-n", min=1, help=f"Most tokens to generate (default {DEFAULT_MAX_TOKENS[mode]}).")]


def generation_options(*, max_tokens=None, temp=None, top_k=None, top_p=None, min_p=None, repeat_penalty=None,
                       seed=None, stop=None, schema: Path | None = None, grammar: Path | None = None,
                       lookup: bool = False, draft: str | None = None) -> GenerationOptions:
    """The flags as the library's options (flags left out keep GenerationOptions' defaults)."""
    from ..errors import UsageError

    if schema and grammar:
        raise UsageError("--schema and --grammar cannot be combined")
    return GenerationOptions().merged(
        max_tokens=max_tokens, temperature=temp, top_k=top_k, top_p=top_p, min_p=min_p, repeat_penalty=repeat_penalty,
        seed=seed, stop=tuple(stop) if stop else None, json_schema=_read(schema), grammar=_read(grammar),
        lookup=lookup or None, draft=draft)


def _read(path: Path | None) -> str | None:
    from ..errors import UsageError

    if path is None:
        return None
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise UsageError(f"{path} is not UTF-8 text") from None
