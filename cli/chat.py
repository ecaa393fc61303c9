"""`hearth chat`: an interactive chat in the terminal, or line by line over a pipe.

The chat session (KV reuse between turns, trimming, reasoning turns) is the library's
(`runtime/chat.py`, `hearth.Model.chat()`); this module and `_chat_repl.py` drive it from the
terminal: Ctrl-C handling, a quiet terminal while an answer streams, the REPL.
"""

from __future__ import annotations

import signal
import sys
from contextlib import contextmanager
from typing import Annotated, Callable, Iterator, Optional

import typer

from . import _options as opt
from . import _output as out
from .app import command

PROMPT = ">>> "


@contextmanager
def interrupt_flag() -> Iterator[Callable[[], bool]]:
    """While inside: the first Ctrl-C sets a flag (the answer stops cleanly), a second one raises."""
    state = {"set": False}

    def handler(signum, frame):
        if state["set"]:
            raise KeyboardInterrupt
        state["set"] = True

    try:
        previous = signal.signal(signal.SIGINT, handler)
    except ValueError:  # not the main thread: leave Ctrl-C as it is
        previous = None
    try:
        with _quiet_terminal():
            yield lambda: state["set"]
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)


@contextmanager
def _quiet_terminal() -> Iterator[None]:
    """While an answer streams: keys typed ahead are not echoed (they wait for the next prompt),
    and Ctrl-C neither prints ^C nor flushes the output, either of which would shift the
    redrawn answer by a line."""
    try:
        import termios

        fd = sys.stdin.fileno()
        saved = termios.tcgetattr(fd) if sys.stdin.isatty() else None
    except (ImportError, OSError, ValueError):
        saved = None
    if saved is None:
        yield
        return
    quiet = list(saved)
    quiet[3] = (quiet[3] & ~(termios.ECHO | termios.ECHOCTL)) | termios.NOFLSH
    termios.tcsetattr(fd, termios.TCSANOW, quiet)
    try:
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSANOW, saved)


@command("chat")
@opt.generation_flags("chat", stop=False, constraints=False, speculation=True)
def chat(
    options=None,
    model: opt.Model = None,
    system: opt.System = None,
    ctx: opt.Ctx = None,
    threads: opt.Threads = None,
    gpu_layers: opt.GpuLayers = None,
    session: Annotated[Optional[str], typer.Option("--session", help="Open this saved session (if it exists) and save to it after every answer.")] = None,
    samples: Annotated[Optional[int], typer.Option("--samples", "-k", min=1, max=64, help="Reasoning mode: vote over K samples for every answer (as /think K).")] = None,
    markdown: Annotated[bool, typer.Option("--markdown/--plain", help="Render answers as Markdown on a terminal.")] = True,
    verbose: opt.Verbose = 0,
) -> None:
    """Chat with a model in the terminal. /help lists the commands.

    Answers stream as Markdown; the KV cache is kept between turns, so only your new message is
    processed. Ctrl-C stops an answer; Ctrl-C on an empty line or Ctrl-D leaves. When stdin is
    not a terminal, each line (or \"\"\"-fenced block) is a message and answers go to stdout.

    Examples:

      hearth chat

      hearth chat -m bartowski/Qwen2.5-0.5B-Instruct-GGUF:Q4_K_M --system "Answer briefly."

      hearth chat --session work --temp 0.3

      printf 'Hi!\\n/set temp 0\\nName a color.\\n' | hearth chat --plain

      hearth chat --lookup   (or /lookup on in the chat: faster answers that quote the conversation)
    """
    from ..runtime.conversation import Command
    from ._chat_repl import ChatRepl
    from .run import load_model

    out.set_verbosity(verbose)
    loaded = load_model(model, ctx, threads, gpu_layers, verbose, options)
    try:
        state = loaded.chat(system, options)
    except BaseException:
        loaded.close()
        raise
    try:
        repl = ChatRepl(state, session_name=session, markdown=markdown)
        if samples:
            repl.dispatch(Command("think", str(samples)))
        repl.run(interactive=sys.stdin.isatty() and sys.stdout.isatty())
    finally:
        state.close()
