"""Speculative decoding: guess several tokens, check them all in one llama_decode.

Each step of a speculating sample, a drafter (`drafts.py`: prompt lookup or a draft model)
proposes tokens; the scheduler decodes the sample's next token plus n drafted ones as n + 1 rows
of one call, and `verify` walks the rows: a draft token is kept while the target model agrees,
the first disagreement is replaced by the target's own token, and a fully accepted draft earns
one more token from the last row. The KV cells of rejected rows are removed by the scheduler.

How many tokens to draft (n, from 0 = plain decode) is chosen every step from two numbers:
- the cost curve (`costs.py`): a call of n + 1 rows costs `relative(n + 1)` single-row calls,
  measured on this machine;
- the running acceptance rate a of drafted tokens (per match length for lookup): with drafts
  accepted independently with probability a, a step yields 1 + a + ... + a^n tokens.
n maximises tokens per unit of cost; n = 0 whenever drafting does not pay. While not drafting,
lookup proposals are still compared with the tokens that follow ("shadow" drafts, free), so the
rate keeps up with the text; a draft model is probed with one token every PROBE_EVERY steps.

Greedy (temperature 0) output is exactly plain decode's: every kept token is the target's own
greedy choice from its own logits, and a call never has more rows than llama.cpp computes
bit-for-bit as it computes single rows (measured with the cost curve). At temperature > 0 a draft token x is kept with probability
p(x), the target's probability after the whole sampler chain, and on rejection a token is drawn
from p with x removed (speculative sampling with a deterministic draft), so every token still
follows p.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from .costs import CostCurve
from .drafts import LAYOUT, ON_TRACK, LayoutLookup, ModelDrafter, PromptLookup

MAX_DRAFT = 15  # drafted tokens per step at most (16 rows: the widest the curve measures)
GAIN_MARGIN = 1.03  # draft only when the expected rate beats plain decode by 3%: curves are noisy
PRIOR_RATE, PRIOR_WEIGHT = 0.5, 2.0  # the acceptance rate before anything is observed
# ... and along a copy track (drafts.ON_TRACK): the answer has just copied a multi-token match
# and its next token, so it is likely copying on (the observed rate takes over within a few drafts)
TRACK_PRIOR_RATE = 0.8
DECAY = 0.95  # per observed draft token: the rate follows the last few dozen tokens
LAYOUT_BYTES = 64  # text a layout proposal is tokenized from, at most (8 bytes a token asked, plus 2)
PROBE_EVERY = 16  # draft model, not drafting: draft one token every this many steps to re-measure


@dataclass(frozen=True)
class Speculation:
    """What a request asks for: lookup drafts or a draft model's, and this machine's cost curve."""

    kind: str  # "lookup" | "draft"
    curve: CostCurve
    draft_engine: Any = None  # the draft model's Engine ("draft")
    draft_cost: float = 0.0  # one draft-model step, in target single-row calls
    max_draft: int = MAX_DRAFT
    # lookup: tokens the answer is expected to repeat (a server request's `prediction`), looked
    # up as if they came before the prompt
    reference: tuple[int, ...] = ()
    exact: bool = True  # greedy: only calls computed exactly like single rows (see `drafts`)

    def start(self, engine, params, seed: int, prompt: list[int], seq_id: int = 0) -> "SpeculativeSample":
        """A sample's speculation; `seq_id`: its sequence, which a draft model mirrors in its own
        context (several samples may draft at once)."""
        return SpeculativeSample(self, engine, params, seed, prompt, seq_id)


def expected_tokens(rate: float, n: int) -> float:
    """Tokens one step yields with n drafted tokens each accepted with probability `rate`."""
    return float(n + 1) if rate >= 1.0 else (1.0 - rate ** (n + 1)) / (1.0 - rate)


def choose_draft_length(curve: CostCurve, rate: float, available: int, draft_cost: float = 0.0,
                        limit: int = MAX_DRAFT, others: int = 0) -> int:
    """The draft length (0 = plain decode) with the most expected tokens per unit of cost.

    `others`: rows of other sequences in the same call (a server decoding several requests).
    The call then yields `others` tokens besides this sample's, and drafting pays only if the
    extra rows cost less than they bring: on a compute-bound CPU a call that is wide already
    leaves nothing to gain; on a GPU it stays nearly free."""
    best, best_value = 0, GAIN_MARGIN * (others + 1) / curve.relative(others + 1)
    for n in range(1, min(available, limit) + 1):
        value = (others + expected_tokens(rate, n)) / (curve.relative(others + n + 1) + n * draft_cost)
        if value > best_value:
            best, best_value = n, value
    return best


def accept_draft_token(ids, probs, draft: int, rng) -> tuple[bool, int]:
    """Speculative sampling's rule for a deterministic draft: keep `draft` with probability
    p(draft); otherwise draw from p without it. The token returned follows p exactly."""
    import numpy as np

    where = np.flatnonzero(ids == draft)
    p = float(probs[where[0]]) if where.size else 0.0
    if rng.random() < p:
        return True, draft
    residual = probs.copy()
    if where.size:
        residual[where[0]] = 0.0
    return False, draw_token(ids, residual, rng)


def draw_token(ids, weights, rng) -> int:
    import numpy as np

    cumulative = np.cumsum(weights)
    index = int(np.searchsorted(cumulative, rng.random() * cumulative[-1], side="right"))
    return int(ids[min(index, len(ids) - 1)])


class AcceptanceRate:
    """The running per-token acceptance rate of drafts, one per key (lookup: match length)."""

    def __init__(self):
        self._counts: dict[int, list[float]] = {}  # key -> [accepted, observed], decayed

    def observe(self, key: int, accepted: int, rejected: bool) -> None:
        """A draft of which `accepted` tokens were kept, then one rejected (or none left)."""
        counts = self._counts.setdefault(key, [0.0, 0.0])
        seen = accepted + int(rejected)
        keep = DECAY ** seen
        counts[0] = counts[0] * keep + accepted
        counts[1] = counts[1] * keep + seen

    def rate(self, key: int) -> float:
        accepted, seen = self._counts.get(key, (0.0, 0.0))
        prior = TRACK_PRIOR_RATE if key in (ON_TRACK, LAYOUT) else PRIOR_RATE
        return (accepted + prior * PRIOR_WEIGHT) / (seen + PRIOR_WEIGHT)


@dataclass
class SpecStats:
    kind: str
    steps: int = 0  # decode calls of the sample
    drafted: int = 0
    accepted: int = 0
    emitted: int = 0  # tokens the steps produced (accepted drafts + one per step)
    draft_s: float = 0.0  # time spent drafting (a draft model's decode calls)
    layout_drafted: int = 0  # lookup: of `drafted`/`accepted`, those copied across other whitespace
    layout_accepted: int = 0
    lengths: dict[int, int] = field(default_factory=dict)  # chosen draft length -> steps

    def to_dict(self) -> dict:
        return {
            "mode": self.kind, "steps": self.steps, "drafted": self.drafted, "accepted": self.accepted,
            "acceptance": round(self.accepted / self.drafted, 3) if self.drafted else None,
            "tokens_per_step": round(self.emitted / self.steps, 3) if self.steps else None,
            "draft_length": {"mean": round(self.drafted / self.steps, 3) if self.steps else 0.0,
                             "chosen": {str(n): c for n, c in sorted(self.lengths.items())}},
            "draft_s": round(self.draft_s, 4),
            **({"layout": {"drafted": self.layout_drafted, "accepted": self.layout_accepted}}
               if self.kind == "lookup" else {}),
        }


class SpeculativeSample:
    """One sample's speculation: its drafter, its acceptance rates, its sampler and statistics."""

    def __init__(self, speculation: Speculation, engine, params, seed: int, prompt: list[int], seq_id: int = 0):
        import numpy as np

        self.speculation = speculation
        self.greedy = params.temperature <= 0
        # temperature > 0: the chain stops before its draw, which happens here (acceptance rule)
        self.sampler = engine.sampler(params, seed, draw=self.greedy)
        self.rng = np.random.default_rng(seed)
        self.drafter = ModelDrafter(speculation.draft_engine, seq_id) if speculation.kind == "draft" else None
        # The history (prompt + tokens so far), for both kinds; lookup also searches the reference.
        self.reference = len(speculation.reference) if self.drafter is None else 0
        self.lookup = PromptLookup([*speculation.reference[:self.reference], *prompt])
        # ... and the same text with its whitespace set aside (an answer that reformats it)
        self.model = engine.model
        self.layout = (LayoutLookup(b"".join(map(self.model.piece, self.lookup.history)))
                       if self.drafter is None else None)
        self.rates = AcceptanceRate()
        self.stats = SpecStats(speculation.kind)
        self.pending: list[int] = []  # drafted tokens of the step being decoded
        self.key = 0
        self.shadow: tuple[int, list[int], int] | None = None  # (key, proposal, tokens matched)
        self.idle_steps = 0

    @property
    def history(self) -> list[int]:
        return self.lookup.history[self.reference:] if self.reference else self.lookup.history

    # -- before the decode call ----------------------------------------------------------------
    def drafts(self, room: int, others: int = 0) -> list[int]:
        """The tokens to check this step (maybe none), at most `room`; `others`: rows of other
        sequences in the same call. Greedy, the call stays within the rows llama.cpp computes
        exactly as single rows at this position (`CostCurve.exact_rows_from`), so the output is
        plain decode's; sampling, rounding a unit apart changes no distribution and the whole
        curve is open."""
        spec = self.speculation
        limit = min(room, spec.max_draft)
        if self.greedy and spec.exact:
            limit = min(limit, spec.curve.exact_rows_from(len(self.history) - 1) - 1 - others)
        limit = max(0, limit)
        drafts: list[int] = []
        if limit and self.drafter is None:
            proposal, self.key = self.lookup.propose(limit)
            if self.key != ON_TRACK:  # not copying tokens: maybe copying text laid out anew
                laid_out = self._layout_proposal(limit)
                if laid_out:
                    proposal, self.key = laid_out, LAYOUT
            n = choose_draft_length(self.speculation.curve, self.rates.rate(self.key), len(proposal), 0.0, limit,
                                    others)
            drafts = proposal[:n]
            if not n and proposal and self.shadow is None:
                self.shadow = (self.key, proposal, 0)
        elif limit:
            drafts = self._model_drafts(limit, others)
        if drafts:
            self.shadow = None
        self.pending = drafts
        self.stats.steps += 1
        self.stats.lengths[len(drafts)] = self.stats.lengths.get(len(drafts), 0) + 1
        return drafts

    def _layout_proposal(self, limit: int) -> list[int]:
        """`LayoutLookup`'s text as tokens: its last token is dropped (the text may be cut inside
        it), and text that does not start on a character boundary is not proposed."""
        text = self.layout.propose(min(LAYOUT_BYTES, 8 * (limit + 2)))
        if not text or 0x80 <= text[0] < 0xC0:
            return []
        tokens = self.model.tokenize(text.decode("utf-8", errors="ignore"), add_special=False, parse_special=False)
        return tokens[:-1][:limit]

    def _model_drafts(self, limit: int, others: int = 0) -> list[int]:
        spec = self.speculation
        n = choose_draft_length(spec.curve, self.rates.rate(0), limit, spec.draft_cost, limit, others)
        self.idle_steps = 0 if n else self.idle_steps + 1
        if not n and self.idle_steps >= PROBE_EVERY:
            n, self.idle_steps = 1, 0
        if not n:
            return []
        started = time.perf_counter()
        drafts = self.drafter.propose(self.history, n)
        self.stats.draft_s += time.perf_counter() - started
        return drafts

    # -- after it ------------------------------------------------------------------------------
    def verify(self, ctx, rows: list[int]) -> list[tuple[int, int]]:
        """The tokens this step yields, with the row each came from: `rows` are the batch rows of
        the sample's token and its pending drafts, in order."""
        drafts, self.pending = self.pending, []
        emitted: list[tuple[int, int]] = []
        accepted = 0
        for i, row in enumerate(rows[: len(drafts) + 1]):
            draft = drafts[i] if i < len(drafts) else None
            token, kept = self._next_token(ctx, row, draft)
            emitted.append((token, row))
            if not kept:  # a rejected draft, or the row after the last draft
                break
            accepted += 1
        if drafts:
            self.rates.observe(self.key, accepted, rejected=accepted < len(drafts))
            self.stats.drafted += len(drafts)
            self.stats.accepted += accepted
            if self.key == LAYOUT:
                self.stats.layout_drafted += len(drafts)
                self.stats.layout_accepted += accepted
        self.stats.emitted += len(emitted)
        for token, _row in emitted:
            self._observe(token)
        return emitted

    def _next_token(self, ctx, row: int, draft: int | None) -> tuple[int, bool]:
        """The target's token for `row`, and whether it is the draft (False: no draft)."""
        if self.greedy:
            token = self.sampler.sample(ctx, row)
            return token, draft is not None and token == draft
        ids, probs = self.sampler.candidates(ctx, row)
        if draft is None:
            token, kept = draw_token(ids, probs, self.rng), False
        else:
            kept, token = accept_draft_token(ids, probs, draft, self.rng)
        self.sampler.accept(token)
        return token, kept

    def _observe(self, token: int) -> None:
        """A token joins the history; a pending shadow draft is scored against it."""
        self.lookup.extend([token])
        if self.layout is not None:
            self.layout.extend(self.model.piece(token))
        if self.shadow is None:
            return
        key, proposal, matched = self.shadow
        if proposal[matched] != token:
            self.rates.observe(key, matched, rejected=True)
            self.shadow = None
        elif matched + 1 == len(proposal):
            self.rates.observe(key, matched + 1, rejected=False)
            self.shadow = None
        else:
            self.shadow = (key, proposal, matched + 1)
