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
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


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
