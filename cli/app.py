"""The `hearth` command: a lazy dispatcher over one module per command group.

`hearth --help` lists the commands from the table below without importing any command module
(like mlx-lm's cli.py), and `hearth NAME` imports only NAME's module, so start-up stays near
Typer's own. Command modules import nothing heavy at module level either (llama_cpp,
huggingface_hub, numpy load inside the commands). Errors map to exit codes in `reports_errors`.
"""

from __future__ import annotations

import functools
import importlib
import os
import sys
from typing import Callable

import typer
from typer.core import TyperGroup

from ..errors import FREE_SPACE_HINT, DiskSpaceError, HearthError, no_room_reason

# name -> (module in cli/, one-line summary shown by `hearth --help`), in --help order. Each
# summary is the first line of its command's docstring (tests/cli/test_help.py checks).
COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("run", "Answer one prompt and exit. stdout carries only the answer."),
    "chat": ("chat", "Chat with a model in the terminal. /help lists the commands."),
    "batch": ("batch", "Generate an answer for every line of a JSONL file."),
    "batch-merge": ("batch", "Join the outputs of `hearth batch --shard I/N` jobs, checking every id appears once."),
    "serve": ("serve", "Serve the OpenAI API (/v1/chat/completions, /v1/completions, /v1/models) on this model."),
    "pull": ("models", "Download a GGUF model from the Hugging Face hub (resumable, sha256-verified)."),
    "list": ("models", "List the GGUF models in the local store (the Hugging Face cache)."),
    "show": ("models", "Show a model's GGUF metadata: architecture, layers, heads, vocab, template, quant types."),
    "rm": ("models", "Remove a model's files from the store (blobs other models share stay)."),
    "du": ("models", "Disk used by each model in the store, and in total."),
    "verify": ("models", "Re-hash the store's files against their sha256 and report damaged ones (exit 1)."),
    "convert": ("convert", "Convert a Hugging Face checkpoint (safetensors) to GGUF."),
    "quantize": ("convert", "Quantize a GGUF with llama.cpp's quantizer."),
    "quality": ("convert", "Measure what a quantization costs: perplexity, KL divergence, top-1 agreement."),
    "hw": ("hw", "Show this machine: CPU, SIMD features, memory, GPUs, and what llama.cpp can use."),
    "plan": ("hw", "Show how MODEL fits this machine before loading it: memory, context, threads, GPU layers."),
}

_SETTINGS = dict(add_completion=False, pretty_exceptions_enable=False, rich_markup_mode=None,
                 context_settings={"help_option_names": ["-h", "--help"]})
_registered: dict[str, typer.Typer] = {}  # command name -> a one-command Typer app


class LazyCommands(TyperGroup):
    """A group whose commands are built on first use from their module."""

    def list_commands(self, ctx) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx, name: str):
        if name not in COMMANDS:
            return None
        if name not in _registered:
            importlib.import_module(f"{__package__}.{COMMANDS[name][0]}")
        return typer.main.get_command(_registered[name])

    def format_commands(self, ctx, formatter) -> None:
        with formatter.section("Commands"):
            formatter.write_dl([(name, summary) for name, (_module, summary) in COMMANDS.items()])


app = typer.Typer(
    name="hearth",
    help=(
        "Run language models on your own machine.\n\n"
        "Examples:\n\n"
        "  hearth run \"Why is the sky blue?\"        # embedded default model, offline\n\n"
        "  cat notes.txt | hearth run \"Summarize:\"   # argument + piped stdin\n\n"
        "  hearth hw && hearth plan default          # what this machine is, how a model fits"
    ),
    no_args_is_help=True,
    cls=LazyCommands,
    **_SETTINGS,
)


@app.callback()
def _hearth() -> None:
    """A group callback, so the app stays a group while its commands load lazily."""


def reports_errors(func: Callable) -> Callable:
    """Turn a HearthError into a one-line message on stderr and its exit code.

    Ctrl-C exits 130; a full disk is one line too, wherever it struck. HEARTH_DEBUG=1 lets the
    traceback through.
    """

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        from . import _output

        try:
            result = func(*args, **kwargs)
            engine = sys.modules.get("hearth.runtime.engine")
            if engine is not None:  # a Ctrl-C that struck inside llama.cpp's last log call
                engine.raise_deferred_interrupt()
            return result
        except HearthError as exc:
            if os.environ.get("HEARTH_DEBUG"):
                raise
            _output.error(exc.message, exc.hint)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            sys.stdout.flush()
            _output.err_console().print("interrupted", style="dim")
            raise typer.Exit(130) from None
        except BrokenPipeError:
            # `hearth run ... | head -1`: the reader left; that is not an error.
            try:
                sys.stdout = open(os.devnull, "w")
            except OSError:
                pass
            raise typer.Exit(0) from None
        except OSError as exc:
            # The library names the file it was writing; this catches a full disk anywhere else.
            reason = no_room_reason(exc)
            if reason is None or os.environ.get("HEARTH_DEBUG"):
                raise
            _output.error(f"{reason}: could not write {exc.filename}" if exc.filename else reason, FREE_SPACE_HINT)
            raise typer.Exit(DiskSpaceError.exit_code) from None

    return wrapper


def command(name: str, **kwargs) -> Callable:
    """Register a function as the `hearth NAME` command, with error reporting."""

    def decorate(func: Callable) -> Callable:
        if name not in COMMANDS:
            raise RuntimeError(f"add {name!r} to cli/app.py COMMANDS")  # a developer's slip, caught by the tests
        sub = typer.Typer(**_SETTINGS)
        sub.command(name, **kwargs)(reports_errors(func))
        _registered[name] = sub
        return func

    return decorate


def load_all() -> dict[str, typer.Typer]:
    """Every command, imported (tests and the README generator walk them all)."""
    for module in dict.fromkeys(m for m, _summary in COMMANDS.values()):
        importlib.import_module(f"{__package__}.{module}")
    return dict(_registered)


def main() -> None:
    try:
        app()
    except HearthError as exc:  # raised outside a command (should not happen); still one line
        from . import _output

        _output.error(exc.message, exc.hint)
        sys.exit(exc.exit_code)
