"""Errors that hearth reports to the user: a one-line message, a hint, an exit code.

Library code raises these; only `hearth.cli` prints them (see `cli/app.py:main`).
"""

from __future__ import annotations

import errno
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


class HearthError(Exception):
    """Base class: `message` names the problem, `hint` says what to do next."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None, exit_code: int | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint
        if exit_code is not None:
            self.exit_code = exit_code

    def __str__(self) -> str:
        return self.message


class UsageError(HearthError):
    """The command line or an input value is wrong."""

    exit_code = 2


class ModelNotFoundError(HearthError):
    """A model reference resolves to nothing on this machine."""


class BadModelFileError(HearthError):
    """A file is not a usable GGUF: not GGUF at all, truncated, corrupted."""


class ContextOverflowError(HearthError):
    """Prompt plus requested tokens do not fit the context window."""


class DoesNotFitError(HearthError):
    """The model (and its KV cache) cannot fit in this machine's memory."""


class RuntimeFailure(HearthError):
    """llama.cpp refused or failed an operation."""


class HubError(HearthError):
    """A Hugging Face hub operation failed (unknown repo, network, auth)."""


class IntegrityError(HearthError):
    """Downloaded or stored bytes do not match their expected hash."""


class DiskSpaceError(HearthError):
    """Not enough free disk space for a write."""


# The OSErrors that mean "no room to write" (as opposed to "cannot write here at all").
_NO_ROOM = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is used up",
            errno.EFBIG: "the file would exceed the file-size limit"}
FREE_SPACE_HINT = "free some space, or write to another disk"


def no_room_reason(exc: BaseException) -> str | None:
    """What ran out when a write failed for lack of room (disk, quota, file-size limit); None otherwise."""
    return _NO_ROOM.get(exc.errno) if isinstance(exc, OSError) else None


@contextmanager
def full_disk_reported(target: str | Path, hint: str = FREE_SPACE_HINT) -> Iterator[None]:
    """An OSError for lack of room inside the block becomes a one-line DiskSpaceError naming `target`.

    The block is responsible for leaving nothing half-written under `target`'s name.
    """
    try:
        yield
    except OSError as exc:
        reason = no_room_reason(exc)
        if reason is None:
            raise
        raise DiskSpaceError(f"{reason}: could not write {target}", hint=hint) from None


class ConversionError(HearthError):
    """A checkpoint cannot be converted or quantized."""


class InputFormatError(HearthError):
    """An input file (JSONL, session, schema) is malformed."""

    exit_code = 2


class BusyError(HearthError):
    """A generation service cannot take the request now: its queue is full, or it is stopping."""

    def __init__(self, message: str, hint: str | None = None, retry_after: int = 1):
        super().__init__(message, hint)
        self.retry_after = retry_after  # seconds a client should wait before trying again
