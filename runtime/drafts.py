"""Where draft tokens come from: the text so far (prompt lookup, by tokens or, for an answer that
lays the text out anew, by its bytes with whitespace set aside) or a small second model.

A drafter proposes the tokens it guesses will follow a sequence's history; `speculative.py`
decides how many of them to check and checks them in one llama_decode of the target model.
Every drafter here proposes deterministically (one guess per position), which keeps the
acceptance rule at temperature > 0 simple and exact (see `speculative.accept_draft_token`).
"""

from __future__ import annotations

from typing import Sequence

from ..errors import UsageError

MAX_NGRAM = 4  # longest n-gram looked up; longer matches predict the continuation better


ON_TRACK = MAX_NGRAM + 1  # the match "length" (acceptance-rate key) of a proposal copied along a track


class PromptLookup:
    """Prompt-lookup (n-gram) drafts: find the history's last n tokens earlier in the history
    (the prompt or the answer so far) and propose what followed them there.

    An index maps every n-gram (n = 1..MAX_NGRAM) to where its latest earlier occurrence was
    followed, updated as tokens arrive, so a proposal costs a few dict look-ups.

    Copying keeps a track: once a proposal's first token arrives, the next proposal continues
    from where that one was taken, token for token, for as long as the answer keeps copying —
    rather than searching again and maybe jumping to a later occurrence of a common n-gram
    (another `self.items` in the code being edited, or the answer's own text). Proposals along a
    track have their own key (`ON_TRACK`), so their acceptance rate is learnt apart from fresh
    matches: long drafts where the answer copies, short ones where it only might.
    """

    def __init__(self, history: Sequence[int] = ()):
        self.history: list[int] = []
        self._index: list[dict[tuple[int, ...], int]] = [{} for _ in range(MAX_NGRAM + 1)]
        self.track: int | None = None  # where the next token is expected: history[track]
        self.extend(history)

    def extend(self, tokens: Sequence[int]) -> None:
        for token in tokens:
            end = len(self.history)  # the new token's position: what followed each n-gram ending before it
            if self.track is not None:
                self.track = self.track + 1 if self.track < end and self.history[self.track] == token else None
            for n in range(1, MAX_NGRAM + 1):
                if end >= n:
                    self._index[n][tuple(self.history[end - n:end])] = end
            self.history.append(token)

    def sync(self, history: Sequence[int]) -> None:
        """Catch up with a history that grew (tokens are only ever appended)."""
        if len(history) > len(self.history):
            self.extend(history[len(self.history):])

    def propose(self, limit: int) -> tuple[list[int], int]:
        """Up to `limit` tokens: along the track when the answer is copying, else what followed
        the longest earlier match of the history's end; and the key of the proposal (ON_TRACK,
        or the match's length; 0 and no tokens when nothing matches)."""
        history = self.history
        if self.track is not None and self.track < len(history):
            return history[self.track:self.track + limit], ON_TRACK
        for n in range(min(MAX_NGRAM, len(history) - 1), 0, -1):
            start = self._index[n].get(tuple(history[-n:]))
            if start is not None and start < len(history):
                if n >= 2:  # one shared token is too often chance to follow
                    self.track = start  # followed if the next token is history[start]
                return history[start:start + limit], n
        return [], 0


LAYOUT = ON_TRACK + 1  # the key of a proposal copied across other whitespace (`LayoutLookup`)
LAYOUT_MATCH = 8  # non-whitespace bytes the answer must share with the reference to start a track
WHITESPACE = b" \t\r\n"
_WORD = 0x61  # the class of letters, digits, "_" and non-ASCII bytes (see `_char_class`)
_MIXED = ("mixed",)  # a partial layout key seen with different whitespace


def _char_class(byte: int) -> int:
    """Bytes that behave alike around whitespace: word characters share one class; punctuation
    keeps its own (`{` then `"` is laid out unlike `,` then `"`)."""
    return _WORD if byte >= 0x80 or chr(byte).isalnum() or byte == 0x5F else byte


def _gap_kind(gap: bytes) -> int:
    return 2 if b"\n" in gap else 1 if gap else 0


class LayoutLookup:
    """Drafts for answers that copy the reference with other whitespace: JSON reformatted with
    indentation, code re-indented or minified, a list rewrapped.

    Token n-grams miss these (indenting puts newlines and spaces between the input's tokens, and
    the tokens themselves merge differently), so this works on bytes with whitespace set aside:
    the answer's last LAYOUT_MATCH non-whitespace bytes are found in the reference's, and the
    reference's next bytes are proposed, laid out as the answer lays them out. The layout is learnt
    from the answer itself: for each pair of neighbouring characters (by class, and whether the
    reference had no whitespace, a space or a line break between them) the whitespace the answer
    put there — a line break is kept as "so many newlines, then the indentation of the line before
    plus d". A pair not seen yet keeps the reference's own whitespace. Text in, text out: the caller
    tokenizes the proposal.
    """

    def __init__(self, reference: bytes = b""):
        self.ref: bytearray = bytearray()  # the reference's non-whitespace bytes
        self.ref_gap: list[bytes] = []  # the whitespace before each of them
        self._starts: dict[bytes, list[int]] = {}  # LAYOUT_MATCH bytes -> where their continuations start
        gap = bytearray()
        for byte in reference:
            if byte in WHITESPACE:
                gap += bytes((byte,))
                continue
            self.ref.append(byte)
            self.ref_gap.append(bytes(gap))
            gap.clear()
            end = len(self.ref)
            if end >= LAYOUT_MATCH:
                self._starts.setdefault(bytes(self.ref[end - LAYOUT_MATCH:end]), []).append(end)
        self.out = bytearray()  # the answer's non-whitespace bytes
        self.gap = bytearray()  # whitespace written since the last of them
        self.indent = b""  # leading whitespace of the line of the last non-whitespace byte
        self.track: int | None = None  # where the answer is expected to go on: ref[track]
        self.last = 0  # where the last track was lost: the answer copies in order
        # (class before, class after, reference's whitespace kind) -> shape; either class None:
        # any byte there (or _MIXED where those differed)
        self.layout: dict[tuple, tuple] = {}

    def extend(self, text: bytes) -> None:
        for byte in text:
            if byte in WHITESPACE:
                self.gap.append(byte)
                continue
            if self.track is not None and self.track < len(self.ref) and self.ref[self.track] == byte:
                if self.out:
                    self._learn(self.out[-1], byte, _gap_kind(self.ref_gap[self.track]), self._shape(bytes(self.gap)))
                self.track += 1
            else:
                if self.track is not None:
                    self.last = self.track
                self.track = self._find(byte)
            if b"\n" in self.gap:
                self.indent = bytes(self.gap[self.gap.rfind(b"\n") + 1:])
            self.out.append(byte)
            self.gap.clear()

    def _learn(self, prev: int, byte: int, kind: int, shape: tuple) -> None:
        before, after = _char_class(prev), _char_class(byte)
        self.layout[(before, after, kind)] = shape
        for partial in ((None, after, kind), (before, None, kind)):
            seen = self.layout.get(partial, shape)
            self.layout[partial] = shape if seen == shape else _MIXED

    def _layout_of(self, prev: int, byte: int, kind: int) -> tuple | None:
        """The whitespace shape between two bytes: as laid out before for the same pair, else as
        before the same next byte (closing brackets), else after the same previous one (commas,
        opening brackets), where those were always laid out alike; None: nothing learnt."""
        before, after = _char_class(prev), _char_class(byte)
        for key in ((before, after, kind), (None, after, kind), (before, None, kind)):
            shape = self.layout.get(key)
            if shape is not None and shape is not _MIXED:
                return shape
        return None

    def _find(self, byte: int) -> int | None:
        """Where the reference goes on after the answer's last LAYOUT_MATCH bytes (`byte`, not
        appended yet, the last of them): the first occurrence after the track just lost, else the
        first one."""
        if len(self.out) + 1 < LAYOUT_MATCH:
            return None
        starts = self._starts.get(bytes(self.out[len(self.out) + 1 - LAYOUT_MATCH:]) + bytes((byte,)))
        if not starts:
            return None
        return next((start for start in starts if start >= self.last), starts[0])

    def _shape(self, gap: bytes) -> tuple:
        if b"\n" not in gap:
            return ("same", gap)
        line = gap[gap.rfind(b"\n") + 1:]
        if line.strip(b" ") and line.strip(b"\t"):  # mixed tabs and spaces: kept as written
            return ("same", gap)
        return ("line", gap.count(b"\n"), len(line) - len(self.indent), line[:1] or b" ")

    def propose(self, max_bytes: int = 64) -> bytes:
        """The text expected next (possibly cut short anywhere: the caller drops its last token)."""
        track = self.track
        if track is None or track >= len(self.ref) or not self.out:
            return b""
        pending = bytes(self.gap)  # whitespace already written after the last byte
        prev, indent, draft = self.out[-1], self.indent, bytearray()
        while track < len(self.ref) and len(draft) < max_bytes:
            byte = self.ref[track]
            shape = self._layout_of(prev, byte, _gap_kind(self.ref_gap[track]))
            if shape is None:
                gap = self.ref_gap[track]
            elif shape[0] == "same":
                gap = shape[1]
            else:
                _, newlines, delta, unit = shape
                width = max(0, len(indent) + delta)
                indent = indent[:width] if delta <= 0 else indent + unit * delta
                gap = b"\n" * newlines + indent
            if b"\n" in gap:
                indent = gap[gap.rfind(b"\n") + 1:]
            if pending:
                if not gap.startswith(pending):
                    return bytes(draft)
                gap, pending = gap[len(pending):], b""
            draft += gap
            draft.append(byte)
            prev = byte
            track += 1
        return bytes(draft)


class ModelDrafter:
    """Drafts from a small model sharing the target's vocabulary: its greedy continuation.

    The draft model keeps its own KV cache of the history (sequence `seq_id` of its own context:
    a server's samples each draft in a sequence of their own); each proposal first catches up
    with the tokens accepted since the last one (one decode call), then decodes one token per
    drafted position. A draft context with fewer sequences than the target's shares them: the
    drafts stay right (every sequence is re-fed what it lacks), only slower.
    """

    def __init__(self, engine, seq_id: int = 0):
        self.engine = engine
        self.seq = seq_id % max(1, engine.config.n_seq_max)
        self.held: list[int] = []  # tokens whose KV the draft context holds for this drafter
        engine.ctx.seq_remove(self.seq, -1, -1)
        engine.cached[self.seq] = self.held  # the drafter that used the sequence last owns it

    def propose(self, history: Sequence[int], limit: int) -> list[int]:
        import numpy as np

        if limit <= 0 or not history:
            return []
        engine = self.engine
        if engine.cached.get(self.seq) is not self.held:  # another drafter used the sequence since
            self.held = []
            engine.cached[self.seq] = self.held
        keep = min(_common_prefix(self.held, history), len(history) - 1)  # the last token gives the logits
        engine.ctx.seq_remove(self.seq, keep, -1)
        del self.held[keep:]
        row = self._feed(history[keep:])
        drafts: list[int] = []
        while True:
            token = int(np.argmax(engine.ctx.logits_row(row)))
            drafts.append(token)
            if len(drafts) >= limit or engine.model.is_eog(token):
                return drafts
            row = self._feed([token])

    def _feed(self, tokens: Sequence[int]) -> int:
        """Decode `tokens` after what the context holds; the row of the last one's logits."""
        engine, batch = self.engine, self.engine.batch
        for offset in range(0, len(tokens), batch.capacity):
            chunk = tokens[offset:offset + batch.capacity]
            batch.clear()
            for i, token in enumerate(chunk):
                row = batch.add(token, len(self.held) + i, (self.seq,), offset + i == len(tokens) - 1)
            engine.ctx.decode(batch)
            self.held.extend(chunk)
        return row

    def reset(self) -> None:
        self.engine.ctx.seq_remove(self.seq, -1, -1)
        self.held.clear()


def check_same_vocabulary(target, draft, target_name: str, draft_name: str) -> None:
    """Raise a one-line UsageError when the draft model cannot draft for the target: another
    vocabulary (size, special tokens or any token's text)."""
    problem = vocabulary_difference(target, draft)
    if problem:
        raise UsageError(f"the draft model {draft_name} does not share {target_name}'s vocabulary: {problem}",
                         hint="use a smaller model of the same family (same tokenizer), or --lookup")


def vocabulary_difference(target, draft) -> str | None:
    """What differs between two models' vocabularies (`engine.LlamaModel`s), or None."""
    if target.n_vocab != draft.n_vocab:
        return f"{draft.n_vocab} tokens against {target.n_vocab}"
    for name in ("bos_id", "eos_id"):
        if getattr(target, name) != getattr(draft, name):
            return f"{name.split('_')[0]} token {getattr(draft, name)} against {getattr(target, name)}"
    for token in range(target.n_vocab):
        a, b = target.token_bytes(token), draft.token_bytes(token)
        if a != b:
            return f"token {token} is {b!r} against {a!r}"
    return None


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i
