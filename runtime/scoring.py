"""Logits of whole token sequences: what `hearth quality` and the conversion parity tests need.

Built on the engine's primitives (the engine is the one llama.cpp binding): a context of `n_ctx`
tokens whose batch asks for the logits of every row, an F32 KV cache and no flash attention
(scores are compared to 1e-3 against other runtimes).
"""

from __future__ import annotations

from pathlib import Path

from ..errors import RuntimeFailure
from .engine import ContextConfig, Engine
from .hardware import GGML_TYPE_F32


class ScoringModel:
    """A model with one context of `n_ctx` tokens, for logits of whole sequences.

    `logits(tokens)` evaluates in independent chunks of n_ctx tokens (the memory is cleared
    between chunks), like llama-perplexity. `vocab_only` loads the vocabulary alone (tokenize,
    detokenize). Use as a context manager.
    """

    def __init__(self, path: str | Path, n_ctx: int = 512, threads: int = 2, vocab_only: bool = False):
        from .gguf_checks import check_vocabulary
        from .gguf_file import read_gguf

        self.path = Path(path)
        self.n_ctx = n_ctx
        # llama.cpp trusts its input: a missing, truncated or damaged file is refused here first
        check_vocabulary(read_gguf(self.path))
        config = ContextConfig(n_ctx=n_ctx, n_batch=n_ctx, n_ubatch=min(n_ctx, 512), n_seq_max=1, n_threads=threads,
                               n_threads_batch=threads, flash_attn=False, kv_type=GGML_TYPE_F32)
        # scoring evaluates prompts only: plain kernels there (`engine.apply_weight_buffers`)
        self.engine = Engine(self.path, config, vocab_only=vocab_only, prompt_only=True)

    @property
    def n_vocab(self) -> int:
        return self.engine.model.n_vocab

    @property
    def add_bos(self) -> bool:
        return self.engine.model.add_bos

    @property
    def bos_id(self) -> int:
        return self.engine.model.bos_id

    def __enter__(self) -> "ScoringModel":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.engine.close()

    def tokenize(self, text: str, add_special: bool = True, parse_special: bool = False) -> list[int]:
        return self.engine.model.tokenize(text, add_special=add_special, parse_special=parse_special)

    def detokenize(self, tokens: list[int]) -> str:
        return self.engine.model.detokenize(tokens)

    def _decode(self, tokens: list[int], first_pos: int):
        import numpy as np

        batch, ctx = self.engine.batch, self.engine.ctx
        batch.clear()
        for i, token in enumerate(tokens):
            batch.add(token, first_pos + i, (0,), True)
        ctx.decode(batch)
        rows = np.empty((len(tokens), self.n_vocab), dtype=np.float32)
        for i in range(len(tokens)):
            rows[i] = ctx.logits_row(i)
        return rows

    def logits(self, tokens: list[int]):
        """float32 [len(tokens), n_vocab]: row i is the prediction after tokens[:i+1] (within its chunk)."""
        import numpy as np

        chunks = []
        for start in range(0, len(tokens), self.n_ctx):
            self.engine.ctx.clear()
            chunks.append(self._decode(tokens[start:start + self.n_ctx], 0))
        return np.concatenate(chunks) if chunks else np.zeros((0, self.n_vocab), np.float32)

    def greedy(self, prompt: list[int], n_new: int) -> list[int]:
        """Greedy continuation (argmax), enough to show a model loads and generates."""
        if len(prompt) + n_new > self.n_ctx:
            raise RuntimeFailure("prompt plus new tokens exceed the context")
        self.engine.ctx.clear()
        last = self._decode(prompt, 0)[-1]
        out = []
        for step in range(n_new):
            token = int(last.argmax())
            out.append(token)
            last = self._decode([token], len(prompt) + step)[-1]
        return out
