"""The `hearth` command: mounts each command module and maps errors to exit codes.

Command modules import nothing heavy at module level (llama_cpp, huggingface_hub, numpy load
inside the commands), so `hearth --help` stays fast.
"""

from __future__ import annotations

import functools
import os
import sys
from typing import Callable

import typer

from ..errors import HearthError

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
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def reports_errors(func: Callable) -> Callable:
    """Turn a HearthError into a one-line message on stderr and its exit code.

    Ctrl-C exits 130. HEARTH_DEBUG=1 lets the traceback through.
    """

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        from . import _output

        try:
            return func(*args, **kwargs)
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

    return wrapper


def command(name: str | None = None, **kwargs) -> Callable:
    """Register a function as a `hearth` subcommand with error reporting."""

    def decorate(func: Callable) -> Callable:
        app.command(name, **kwargs)(reports_errors(func))
        return func

    return decorate


# One module per command group, in --help order.
_COMMAND_MODULES: list[str] = ["run", "chat", "batch", "serve", "models", "convert", "hw"]


def _mount() -> None:
    # Each module registers its commands with @command on import; order = --help order.
    import importlib

    for name in _COMMAND_MODULES:
        importlib.import_module(f"{__package__}.{name}")


_mount()


def main() -> None:
    try:
        app()
    except HearthError as exc:  # raised outside a command (should not happen); still one line
        from . import _output

        _output.error(exc.message, exc.hint)
        sys.exit(exc.exit_code)
