"""Where draft tokens come from: the text so far (prompt lookup) or a small second model.

A drafter proposes the tokens it guesses will follow a sequence's history; `speculative.py`
decides how many of them to check and checks them in one llama_decode of the target model.
Both drafters here propose deterministically (one guess per position), which keeps the
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
