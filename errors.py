"""Errors that hearth reports to the user: a one-line message, a hint, an exit code.

Library code raises these; only `hearth.cli` prints them (see `cli/app.py:main`).
"""

from __future__ import annotations


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
