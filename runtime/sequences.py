"""The pool of llama.cpp sequence ids one context has, handed out lowest first.

With one KV stream per sequence, llama.cpp cuts a batch into one micro-batch per run of
consecutive sequence ids, so samples take the lowest free id (the decoding ones stay one run)
and holders of a prompt, which never decode, take the highest.
"""

from __future__ import annotations

import bisect


class SequencePool:
    def __init__(self, capacity: int):
        self.capacity = capacity
        self._free = list(range(capacity))  # kept sorted

    def take(self, highest: bool = False) -> int:
        return self._free.pop(-1 if highest else 0)

    def take_id(self, seq: int) -> int:
        """Take this free id (a slot chosen for the KV cache it still holds)."""
        self._free.remove(seq)
        return seq

    @property
    def free_ids(self) -> list[int]:
        """The free ids, lowest first."""
        return list(self._free)

    def release(self, seq: int) -> None:
        if seq in self._free or not 0 <= seq < self.capacity:
            raise ValueError(f"sequence {seq} is not in use")
        bisect.insort(self._free, seq)

    @property
    def lowest_free(self) -> int | None:
        return self._free[0] if self._free else None

    def __len__(self) -> int:
        """Free ids."""
        return len(self._free)
