"""Damaged saved chat sessions: `open_session` gives a session or a one-line error, nothing else.

A seeded fuzz of a real saved session (byte flips, random bytes, truncation, and fields swapped for
values of other types), then the cases that used to end in a traceback or could hang.
"""

from __future__ import annotations

import json
import os
import random

import pytest

from hearth.errors import InputFormatError, UsageError
from hearth.runtime import conversation as conv

SEED = 1203
ODD_VALUES = [None, True, 0, -1, 2**70, 1.5, float("nan"), "", "x", [], [1], {}, {"role": "user"}, "a" * 5000]


def _saved(name: str = "s") -> bytes:
    c = conv.Conversation("Be brief.", [conv.Turn("user", "hi"), conv.Turn("assistant", "hello", cut=True),
                                        conv.Turn("user", "again")], window_start=0)
    return conv.save_session(name, c, "default").read_bytes()


def _mutated(rng: random.Random, original: bytes) -> bytes:
    kind = rng.randrange(5)
    data = bytearray(original)
    if kind == 0:
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    elif kind == 1:
        at = rng.randrange(len(data))
        data[at:at + 16] = rng.randbytes(16)
    elif kind == 2:
        del data[rng.randrange(len(data)):]
    else:  # a field (top-level, or inside a turn) set to a value of another type
        record = json.loads(original)
        target = rng.choice(record["turns"]) if kind == 4 else record
        target[rng.choice(sorted(target) + ["extra"])] = rng.choice(ODD_VALUES)
        return json.dumps(record).encode()
    return bytes(data)


def test_fuzzed_session_files_open_or_fail_in_one_line():
    original = _saved()
    rng = random.Random(SEED)
    outcomes = {"opened": 0, "refused": 0}
    for case in range(400):
        path = conv.sessions_dir() / "fuzzed.json"
        path.write_bytes(_mutated(rng, original))
        try:
            opened = conv.open_session("fuzzed")
        except (InputFormatError, UsageError) as exc:
            assert exc.message and "\n" not in exc.message, (case, exc.message)
            outcomes["refused"] += 1
            continue
        # what opens is a conversation the chat can use
        assert all(t.role in ("user", "assistant") and isinstance(t.content, str) for t in opened.conversation.turns)
        assert 0 <= opened.conversation.window_start <= len(opened.conversation.turns)
        assert opened.model is None or isinstance(opened.model, str)
        assert isinstance(opened.saved_at, float)
        outcomes["opened"] += 1
    assert outcomes["opened"] > 20 and outcomes["refused"] > 100, outcomes  # both outcomes reached


@pytest.mark.parametrize("content,needle", [
    (b'{"format": "hearth-chat-session", "turns": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "damaged"),
    (b'{"format": "hearth-chat-session", "version": 1, "turns": [], "saved_at": ' + b"9" * 5000 + b"}", "damaged"),
    (b'{"format": "hearth-chat-session", "version": 1, "turns": [], "saved_at": "yesterday"}', "saved_at"),
    (b'{"format": "hearth-chat-session", "version": 1, "turns": [], "saved_at": [1]}', "saved_at"),
    (b'{"format": "hearth-chat-session", "version": 1, "turns": [], "model": {"name": "x"}}', "model"),
    (b'{"format": "hearth-chat-session", "version": 1, "turns": [], "window_start": true}', "window_start"),
    (b'{"format": "hearth-chat-session", "version": 1, "turns": [{"role": "user", "content": 5}]}', "turn 1"),
    (b"\xff\xfe not text", "not a JSON text file"),
    (b"[1, 2, 3]", "not a hearth chat session"),
], ids=["nested 100,000 deep", "5000-digit number", "saved_at as text", "saved_at as a list", "model as an object",
        "window_start as a bool", "content as a number", "not UTF-8", "not an object"])
def test_damaged_session_cases(content, needle):
    (conv.sessions_dir() / "bad.json").write_bytes(content)
    with pytest.raises(InputFormatError, match=needle) as refused:
        conv.open_session("bad")
    assert "\n" not in refused.value.message


def test_oversized_directory_and_fifo_sessions_are_refused_without_reading(tmp_path):
    big = conv.sessions_dir() / "big.json"
    with open(big, "wb") as handle:
        handle.truncate(conv.MAX_SESSION_BYTES + 1)  # a hole: nothing to write, nothing read
    with pytest.raises(InputFormatError, match="MiB"):
        conv.open_session("big")
    (tmp_path / "dir.json").mkdir()
    with pytest.raises(InputFormatError, match="not a regular file"):
        conv.open_session(str(tmp_path / "dir.json"))
    fifo = tmp_path / "pipe.json"
    os.mkfifo(fifo)  # reading it would block forever
    with pytest.raises(InputFormatError, match="not a regular file"):
        conv.open_session(str(fifo))
