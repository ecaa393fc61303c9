"""Where hearth keeps its state: one overridable directory, `HEARTH_HOME`.

Models themselves live in the standard Hugging Face cache (`HF_HUB_CACHE` / `HF_HOME`) so that
other tools share them; hearth's own state (history, sessions, registry of converted models)
lives under `HEARTH_HOME` (default `~/.local/share/hearth`, or `$XDG_DATA_HOME/hearth`).
"""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterator

from .errors import full_disk_reported


def hearth_home() -> Path:
    env = os.environ.get("HEARTH_HOME")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".local" / "share"
    return base / "hearth"


def data_dir(*parts: str) -> Path:
    """A directory under HEARTH_HOME, created on first use."""
    path = hearth_home().joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def cache_dir(*parts: str) -> Path:
    """Re-creatable files (assembled benchmark models, ...): `HEARTH_CACHE` or ~/.cache/hearth."""
    env = os.environ.get("HEARTH_CACHE")
    base = Path(env).expanduser() if env else Path.home() / ".cache" / "hearth"
    path = base.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextmanager
def atomic_write(path: str | Path, mode: str = "w", **kwargs) -> Iterator[IO]:
    """Write to a temp file beside `path` and rename it into place only on success.

    A crash, Ctrl-C or full disk leaves the old file (or none), never a half-written one; a full
    disk (or quota) is reported as a DiskSpaceError naming the file.
    """
    target = Path(path)
    with full_disk_reported(target, hint="free some space and run the command again; the file was left as it was"):
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        try:
            with os.fdopen(fd, mode, **kwargs) as handle:
                yield handle
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, target)
        except BaseException:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise


def free_bytes(path: str | Path) -> int:
    """Free bytes on the disk that holds `path` (or would: its nearest existing folder)."""
    import shutil

    for candidate in (Path(path), *Path(path).parents):
        if candidate.exists():
            return shutil.disk_usage(candidate).free
    return 0


def check_free_space(needed: int, free: int, where: str | Path, what: str = "the write",
                     hint: str | None = None) -> None:
    """Refuse, with the numbers, a write of `needed` bytes where only `free` are free."""
    from .errors import FREE_SPACE_HINT, DiskSpaceError
    from .units import format_bytes

    if needed > free:
        raise DiskSpaceError(
            f"not enough disk space for {what}: it needs {format_bytes(needed)} ({needed:,} bytes) "
            f"but {where} has {format_bytes(free)} ({free:,} bytes) free",
            hint=hint or FREE_SPACE_HINT,
        )
