"""A fake engine for scheduler unit tests: llama.cpp's contract, a toy model, strict KV checks.

The toy model's next token depends on the sequence's whole history as the KV cache holds it
(positions 0..pos), so any bookkeeping mistake of the scheduler — a wrong copy, a stale cell, a
position skipped or written twice — changes the tokens and fails a comparison with
`reference_tokens`, which generates the same request alone in plain Python.
"""

from __future__ import annotations

from dataclasses import dataclass

VOCAB = 40
EOS = 0


def next_token(history: list[int], seed: int, temperature: float) -> int:
    value = 7
    for token in history:
        value = (value * 31 + token + 3) % 1_000_003
    if temperature > 0:
        value = (value + seed * 7919) % 1_000_003
    token = value % VOCAB
    return EOS if token < 2 else token  # an end roughly one step in 20


def reference_tokens(prompt: list[int], max_tokens: int, seed: int = 0, temperature: float = 0.0) -> list[int]:
    """What one request generates alone: the scheduler must give exactly this in any company."""
    history, out = list(prompt), []
    while len(out) < max_tokens:
        token = next_token(history, seed, temperature)
        if token == EOS:
            break
        out.append(token)
        history.append(token)
    return out


@dataclass(frozen=True)
class Config:
    n_seq_max: int
    kv_unified: bool


class FakeBatch:
    def __init__(self, capacity: int):
        self.capacity = capacity
        self.rows: list[tuple[int, int, tuple[int, ...], bool]] = []

    @property
    def n(self) -> int:
        return len(self.rows)

    def clear(self) -> None:
        self.rows = []

    def add(self, token: int, pos: int, seq_ids, logits: bool) -> int:
        assert len(self.rows) < self.capacity, "batch over capacity"
        self.rows.append((token, pos, tuple(seq_ids), logits))
        return len(self.rows) - 1


class FakeContext:
    def __init__(self, engine: "FakeEngine"):
        self.engine = engine
        self.kv: dict[int, dict[int, int]] = {}  # seq -> position -> token
        self.row_history: dict[int, list[int]] = {}
        self.decodes = 0

    def decode(self, batch: FakeBatch) -> None:
        self.decodes += 1
        self.row_history = {}
        for row, (token, pos, seqs, logits) in enumerate(batch.rows):
            for seq in seqs:
                assert 0 <= seq < self.engine.config.n_seq_max, f"sequence {seq} out of range"
                cells = self.kv.setdefault(seq, {})
                assert pos not in cells, f"sequence {seq} already holds position {pos}"
                assert all(p in cells for p in range(pos)), f"sequence {seq} has a gap before {pos}"
                cells[pos] = token
                if not self.engine.config.kv_unified:
                    assert len(cells) <= self.engine.n_ctx_seq, f"sequence {seq} overflows its stream"
            if logits:
                cells = self.kv[seqs[0]]
                self.row_history[row] = [cells[p] for p in range(pos + 1)]

    def logits_row(self, index: int):
        import numpy as np

        row = np.zeros(VOCAB, dtype=np.float32)
        row[index % VOCAB] = 1.0
        return row

    def seq_remove(self, seq: int, start: int = -1, end: int = -1) -> None:
        cells = self.kv.get(seq, {})
        lo = 0 if start < 0 else start
        hi = float("inf") if end < 0 else end
        for pos in [p for p in cells if lo <= p < hi]:
            del cells[pos]

    def seq_copy(self, src: int, dst: int, start: int = -1, end: int = -1) -> None:
        if not self.engine.config.kv_unified and (start, end) != (-1, -1):
            raise ValueError("per-sequence KV streams copy whole sequences only")
        lo = 0 if start < 0 else start
        hi = float("inf") if end < 0 else end
        cells = self.kv.setdefault(dst, {})
        if not self.engine.config.kv_unified:
            cells.clear()
        for pos, token in self.kv.get(src, {}).items():
            if lo <= pos < hi:
                cells[pos] = token

    def copy_prefix(self, src: int, dst: int, n: int) -> None:
        if self.engine.config.kv_unified:
            self.seq_copy(src, dst, 0, n)
        else:
            self.seq_copy(src, dst)
            self.seq_remove(dst, n, -1)

    def clear(self) -> None:
        self.kv.clear()

    def used_cells(self) -> int:
        return sum(len(c) for c in self.kv.values())


class FakeSampler:
    def __init__(self, params, seed: int, draw: bool = True):
        self.params, self.seed, self.draw = params, seed, draw
        self.closed = False

    def sample(self, ctx: FakeContext, row: int) -> int:
        assert not self.closed
        return next_token(ctx.row_history[row], self.seed, self.params.temperature)

    def close(self) -> None:
        self.closed = True


class FakeModel:
    def is_eog(self, token: int) -> bool:
        return token == EOS

    def piece(self, token: int) -> bytes:
        return f"t{token} ".encode()

    def tokenize(self, text: str, add_special: bool = True, parse_special: bool = True) -> list[int]:
        """`piece`'s inverse: whole "t<n>" words only."""
        return [int(word[1:]) for word in text.split() if word[:1] == "t" and word[1:].isdigit()]


class FakeEngine:
    def __init__(self, n_seq_max: int = 4, n_ctx: int = 4096, kv_unified: bool = True, n_batch: int = 64):
        self.config = Config(n_seq_max, kv_unified)
        self.n_ctx = n_ctx
        self.n_ctx_seq = n_ctx if kv_unified else n_ctx // n_seq_max
        self.batch = FakeBatch(n_batch)
        self.ctx = FakeContext(self)
        self.model = FakeModel()
        self.cached: dict[int, list[int]] = {}
        self.samplers: list[FakeSampler] = []

    def sampler(self, params, seed: int, draw: bool = True) -> FakeSampler:
        if params.grammar == "unparsable":  # llama.cpp rejecting a grammar
            from hearth.errors import UsageError

            raise UsageError("the grammar does not parse (llama.cpp rejected it)")
        sampler = FakeSampler(params, seed, draw)
        self.samplers.append(sampler)
        return sampler
