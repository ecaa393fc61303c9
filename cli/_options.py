"""Options shared by several commands (Annotated aliases, so each command stays short)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

Model = Annotated[
    Optional[str],
    typer.Option("--model", "-m", help="A .gguf path, `default` (the embedded model) or REPO[:QUANT] from the store."),
]
Json = Annotated[bool, typer.Option("--json", help="Print one JSON object instead of text.")]
Verbose = Annotated[int, typer.Option("--verbose", "-v", count=True, help="More detail on stderr (-vv: llama.cpp's own log).")]
System = Annotated[Optional[str], typer.Option("--system", "-s", help="System prompt.")]
MaxTokens = Annotated[int, typer.Option("--max-tokens", "-n", min=1, help="Most tokens to generate.")]
Temperature = Annotated[Optional[float], typer.Option("--temp", "-t", min=0.0, max=5.0, help="Sampling temperature (0 = greedy).")]
TopK = Annotated[int, typer.Option("--top-k", min=0, help="Keep the K most likely tokens (0 = off).")]
TopP = Annotated[float, typer.Option("--top-p", min=0.0, max=1.0, help="Nucleus sampling mass (1 = off).")]
MinP = Annotated[float, typer.Option("--min-p", min=0.0, max=1.0, help="Drop tokens below this fraction of the top probability.")]
RepeatPenalty = Annotated[float, typer.Option("--repeat-penalty", min=0.0, max=5.0, help="Penalty for repeating recent tokens (1 = off).")]
Seed = Annotated[Optional[int], typer.Option("--seed", help="Random seed (fixed seed + temp 0 = reproducible).")]
Stop = Annotated[Optional[list[str]], typer.Option("--stop", help="Stop when this text appears (repeatable).")]
Ctx = Annotated[Optional[int], typer.Option("--ctx", "-c", min=16, help="Context window in tokens (default: planned).")]
Threads = Annotated[Optional[int], typer.Option("--threads", min=1, help="CPU threads (default: planned).")]
GpuLayers = Annotated[Optional[int], typer.Option("--gpu-layers", min=-1, help="Layers to offload to the GPU (-1 = all; default: planned).")]
SchemaFile = Annotated[Optional[Path], typer.Option("--schema", help="JSON schema file: constrain the output to JSON matching it.")]
GrammarFile = Annotated[Optional[Path], typer.Option("--grammar", help="GBNF grammar file: constrain the output to it.")]
