"""How much a quantization costs, measured: the figures of `llama-perplexity --kl-divergence`.

Both models read the same text in the same chunks of n_ctx tokens (each chunk evaluated from
an empty cache, starting with BOS when the model wants one). As in llama-perplexity, only the
second half of each chunk is scored, so every scored token has at least n_ctx/2 of context.
For each scored position: the next-token log-probabilities of reference and candidate give
both perplexities, the KL divergence KL(ref || cand), and whether the top-1 tokens agree.
The two models run chunk by chunk in lockstep: nothing of size tokens x vocab is kept.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from ..errors import ConversionError, UsageError

DEFAULT_TEXT = Path(__file__).resolve().parent.parent / "data" / "quality.txt"
MIN_CTX = 16


@dataclass(frozen=True)
class QualityReport:
    reference: str
    candidate: str
    ctx: int
    chunks: int
    tokens_scored: int
    ppl_reference: float
    ppl_candidate: float
    kld_mean: float
    kld_p99: float
    kld_max: float
    top1_agreement: float

    @property
    def ppl_ratio(self) -> float:
        return self.ppl_candidate / self.ppl_reference

    def as_dict(self) -> dict:
        return {**asdict(self), "ppl_ratio": self.ppl_ratio}


@dataclass(frozen=True)
class ChunkScores:
    """Per scored position: negative log-likelihoods, KL divergence, top-1 agreement."""

    nll_reference: "object"
    nll_candidate: "object"
    kld: "object"
    same_top1: "object"


def log_softmax(logits):
    import numpy as np

    logits = logits.astype(np.float64)
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def score_chunk(ref_logits, cand_logits, targets) -> ChunkScores:
    """Rows i of the logits predict targets[i]."""
    import numpy as np

    lr, lc = log_softmax(ref_logits), log_softmax(cand_logits)
    rows = np.arange(len(targets))
    kld = (np.exp(lr) * (lr - lc)).sum(axis=-1)
    return ChunkScores(-lr[rows, targets], -lc[rows, targets], np.maximum(kld, 0.0),
                       lr.argmax(axis=-1) == lc.argmax(axis=-1))


def chunk_tokens(tokens: list[int], n_ctx: int, bos: int | None) -> list[list[int]]:
    """Split text tokens into evaluation chunks of n_ctx tokens (BOS first when given)."""
    body = n_ctx - (1 if bos is not None else 0)
    chunks = [tokens[i:i + body] for i in range(0, len(tokens) - body + 1, body)]
    if not chunks and len(tokens) >= MIN_CTX:
        chunks = [tokens]  # text shorter than one context: score what there is
    return [([bos] if bos is not None else []) + c for c in chunks]


def summarize(ref: str, cand: str, n_ctx: int, scores: list[ChunkScores]) -> QualityReport:
    import numpy as np

    nll_r = np.concatenate([s.nll_reference for s in scores])
    nll_c = np.concatenate([s.nll_candidate for s in scores])
    kld = np.concatenate([s.kld for s in scores])
    same = np.concatenate([s.same_top1 for s in scores])
    return QualityReport(ref, cand, n_ctx, len(scores), int(len(kld)), float(math.exp(nll_r.mean())),
                         float(math.exp(nll_c.mean())), float(kld.mean()), float(np.percentile(kld, 99)),
                         float(kld.max()), float(same.mean()))


def evaluate_quality(reference: str | Path, candidate: str | Path, text: str, n_ctx: int = 512,
                     threads: int = 2, max_chunks: int | None = None,
                     on_chunk: Callable[[int, int], None] | None = None) -> QualityReport:
    from ..runtime.scoring import ScoringModel

    if n_ctx < MIN_CTX:
        raise UsageError(f"--ctx must be at least {MIN_CTX}")
    with ScoringModel(reference, n_ctx, threads) as ref, ScoringModel(candidate, n_ctx, threads) as cand:
        if ref.n_vocab != cand.n_vocab:
            raise ConversionError(f"the models have different vocabularies ({ref.n_vocab} vs {cand.n_vocab} tokens)",
                                  hint="compare quantizations of the same model")
        tokens = ref.tokenize(text, add_special=False)
        if cand.tokenize(text[:2000], add_special=False) != ref.tokenize(text[:2000], add_special=False):
            raise ConversionError("the models tokenize the text differently", hint="compare quantizations of the same model")
        chunks = chunk_tokens(tokens, n_ctx, ref.bos_id if ref.add_bos else None)[:max_chunks]
        if not chunks:
            raise UsageError(f"the text is too short: {len(tokens)} tokens, need at least {MIN_CTX}")
        scores = []
        for i, chunk in enumerate(chunks):
            first = len(chunk) // 2
            targets = chunk[first + 1:]
            ref_logits = ref.logits(chunk)[first:-1]
            cand_logits = cand.logits(chunk)[first:-1]
            scores.append(score_chunk(ref_logits, cand_logits, targets))
            if on_chunk:
                on_chunk(i + 1, len(chunks))
    return summarize(str(reference), str(candidate), n_ctx, scores)


def read_text(path: str | Path | None) -> str:
    path = Path(path) if path else DEFAULT_TEXT
    if not path.is_file():
        raise UsageError(f"text file not found: {path}")
    return path.read_text(encoding="utf-8")
