"""A sample's visible text, built token by token: UTF-8 assembly and stop-string hold-back.

Pure: bytes in, text out. A token may end in the middle of a UTF-8 character (the incremental
decoder waits for the rest), and the text may end with the beginning of a stop string (held back
until the next token shows whether the stop string follows), so what a caller streams is exactly
what the final text holds.
"""

from __future__ import annotations

import codecs


class TextStream:
    def __init__(self, stop: tuple[str, ...] = ()):
        self.stop = tuple(s for s in stop if s)
        self.text = ""  # visible so far
        self.stopped = False  # a stop string appeared: the text ends before it
        self._held = ""
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def feed(self, piece: bytes) -> str:
        """Add one token's bytes; return the newly visible text (maybe empty)."""
        if self.stopped:
            return ""
        return self._visible(self._decoder.decode(piece))

    def close(self, keep_held: bool = True) -> str:
        """The end: flush a partial character and, unless a stop string ended it, the held text."""
        tail = self._decoder.decode(b"", final=True)
        tail = self._visible(tail) if tail and not self.stopped else ""
        if keep_held and not self.stopped:
            tail += self._held
            self.text += self._held
        self._held = ""
        return tail

    def _visible(self, new_text: str) -> str:
        if not self.stop:
            self.text += new_text
            return new_text
        pending = self._held + new_text
        cut = min((i for i in (pending.find(s) for s in self.stop) if i >= 0), default=-1)
        if cut >= 0:
            self._held = ""
            self.text += pending[:cut]
            self.stopped = True
            return pending[:cut]
        hold = max((k for s in self.stop for k in range(1, len(s)) if pending.endswith(s[:k])), default=0)
        out, self._held = pending[: len(pending) - hold], pending[len(pending) - hold:]
        self.text += out
        return out
