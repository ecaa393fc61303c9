"""All terminal output goes through here (the only module that imports rich).

stdout carries data only (answers, tables, JSON); messages, warnings, errors and progress go to
stderr. Progress bars are shown only when stderr is a terminal and `--json` is off.
"""

from __future__ import annotations

import json
import os
import sys
from contextlib import contextmanager
from typing import Any, Iterable, Iterator, Sequence

_stderr_console = None
_stdout_console = None
_verbosity = 0


def set_verbosity(level: int) -> None:
    global _verbosity
    _verbosity = level


def verbosity() -> int:
    return _verbosity


def err_console():
    global _stderr_console
    if _stderr_console is None:
        from rich.console import Console

        _stderr_console = Console(stderr=True, highlight=False, soft_wrap=True)
    return _stderr_console


def out_console():
    global _stdout_console
    if _stdout_console is None:
        from rich.console import Console

        _stdout_console = Console(highlight=False, soft_wrap=True)
    return _stdout_console


def stderr_is_tty() -> bool:
    return sys.stderr.isatty() and os.environ.get("TERM") != "dumb"


def stdout_is_tty() -> bool:
    return sys.stdout.isatty()


def info(message: str) -> None:
    """A status line on stderr (shown by default)."""
    err_console().print(message, markup=False)


def detail(message: str) -> None:
    """A line shown only with -v."""
    if _verbosity > 0:
        err_console().print(message, markup=False, style="dim")


def warn(message: str) -> None:
    err_console().print(f"warning: {message}", markup=False, style="yellow")


def error(message: str, hint: str | None = None) -> None:
    console = err_console()
    console.print(f"error: {message}", markup=False, style="bold red")
    if hint:
        console.print(f"hint: {hint}", markup=False, style="dim")


def write(text: str) -> None:
    """Raw text to stdout (streamed answers)."""
    sys.stdout.write(text)
    sys.stdout.flush()


def emit_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, ensure_ascii=False, indent=2) + "\n")
    sys.stdout.flush()


def emit_jsonl(obj: Any, stream=None) -> None:
    stream = stream or sys.stdout
    stream.write(json.dumps(obj, ensure_ascii=False) + "\n")
    stream.flush()


def table(columns: Sequence[str], rows: Iterable[Sequence[Any]], title: str | None = None) -> None:
    """A table on stdout (it is the command's data)."""
    from rich.table import Table

    tbl = Table(title=title, show_edge=False, header_style="bold")
    for column in columns:
        tbl.add_column(column)
    for row in rows:
        tbl.add_row(*["" if v is None else str(v) for v in row])
    out_console().print(tbl)


def key_values(pairs: Iterable[tuple[str, Any]]) -> None:
    """Aligned `key  value` lines on stdout."""
    pairs = list(pairs)
    width = max((len(k) for k, _ in pairs), default=0)
    for key, value in pairs:
        sys.stdout.write(f"{key.ljust(width)}  {value}\n")
    sys.stdout.flush()


class _NullProgress:
    def add_task(self, *args, **kwargs):
        return 0

    def update(self, *args, **kwargs):
        pass

    def advance(self, *args, **kwargs):
        pass


@contextmanager
def progress(kind: str = "bytes", enabled: bool = True) -> Iterator[Any]:
    """A rich progress bar on stderr, or a silent stand-in when stderr is not a terminal.

    kind="bytes" shows size, speed and ETA; kind="items" shows done/total and ETA.
    """
    if not (enabled and stderr_is_tty()):
        yield _NullProgress()
        return
    from rich.progress import (BarColumn, DownloadColumn, MofNCompleteColumn, Progress,
                               TextColumn, TimeRemainingColumn, TransferSpeedColumn)

    columns = [TextColumn("{task.description}"), BarColumn()]
    if kind == "bytes":
        columns += [DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn()]
    else:
        columns += [MofNCompleteColumn(), TextColumn("{task.fields[rate]}"), TimeRemainingColumn()]
    with Progress(*columns, console=err_console(), transient=False) as bar:
        yield bar


def human_bytes(n: float) -> str:
    from ..units import format_bytes

    return format_bytes(n)


class _NullLive:
    def update(self, text: str) -> None:
        pass


@contextmanager
def live_text(enabled: bool = True) -> Iterator[Any]:
    """A block of text on stderr redrawn in place (rich Live); silent without a terminal."""
    if not (enabled and stderr_is_tty()):
        yield _NullLive()
        return
    from rich.live import Live
    from rich.text import Text

    class _Live:
        def __init__(self, live):
            self._live = live

        def update(self, text: str) -> None:
            self._live.update(Text(text))

    with Live(Text(""), console=err_console(), refresh_per_second=8, transient=True) as live:
        yield _Live(live)


def markdown_stable_end(text: str) -> int:
    """Where the finished Markdown blocks of a growing answer end (0: none finished yet).

    A block is finished once a blank line outside a code fence is followed by a line that starts
    at column 0 (an indented line may still belong to the block above: a list item's paragraph).
    Finished blocks are printed once; only the block in progress is redrawn, so a long answer
    never redraws the screen (no flicker, no scrolling artefacts).
    """
    end, pos, in_fence, after_blank = 0, 0, False, False
    for line in text.splitlines(keepends=True):
        stripped = line.strip()
        if not in_fence and after_blank and stripped and not line[0].isspace():
            end = pos
        if stripped.startswith(("```", "~~~")) and (line.endswith("\n") or in_fence):
            in_fence = not in_fence
        after_blank = not in_fence and line.endswith("\n") and not stripped
        pos += len(line)
    return end


class _PlainAnswer:
    """An answer written as it comes (stdout is not a terminal, or Markdown is off)."""

    def __init__(self):
        self.text = ""

    def write(self, delta: str) -> None:
        self.text += delta
        write(delta)

    def finish(self) -> None:
        if self.text and not self.text.endswith("\n"):
            write("\n")


class _MarkdownAnswer:
    """An answer rendered as Markdown while it streams: finished blocks printed, the last one live."""

    def __init__(self, live):
        from rich.markdown import Markdown

        self._markdown = Markdown
        self.live = live
        self.text = ""
        self.printed = 0  # characters of `text` already printed as finished blocks

    def write(self, delta: str) -> None:
        self.text += delta
        end = markdown_stable_end(self.text)
        if end > self.printed:
            console = self.live.console
            console.print(self._markdown(self.text[self.printed:end].strip("\n")), soft_wrap=False)
            console.print()  # the blank line Markdown puts between blocks
            self.printed = end
        self.live.update(self._markdown(self.text[self.printed:]))

    def finish(self) -> None:
        self.live.update(self._markdown(self.text[self.printed:].rstrip()), refresh=True)


@contextmanager
def answer_stream(markdown: bool = True) -> Iterator[Any]:
    """Where a chat answer streams to: `.write(delta)` per piece of text.

    On a terminal the answer is rendered as Markdown (code highlighted); otherwise (a pipe, a
    file) it is written as plain text, as it comes.
    """
    if not (markdown and stdout_is_tty() and os.environ.get("TERM") != "dumb"):
        plain = _PlainAnswer()
        try:
            yield plain
        finally:
            plain.finish()
        return
    from rich.live import Live
    from rich.markdown import Markdown

    with Live(Markdown(""), console=out_console(), refresh_per_second=10, transient=False,
              vertical_overflow="ellipsis") as live:
        answer = _MarkdownAnswer(live)
        try:
            yield answer
        finally:
            answer.finish()


def notice(message: str, style: str = "dim") -> None:
    """A chat notice on stderr (dropped turns, cut answers, command results)."""
    err_console().print(message, markup=False, style=style)
