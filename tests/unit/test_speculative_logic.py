"""Speculative decoding without a model: lookup drafts, the draft-length policy, the acceptance
rule's distribution, the cost curve and its cache, and the scheduler's KV bookkeeping."""

from __future__ import annotations

import json

import numpy as np
import pytest
from fake_engine import FakeEngine, FakeModel, reference_tokens

from hearth.runtime import costs
from hearth.runtime.costs import CostCurve
from hearth.runtime.drafts import ON_TRACK, LayoutLookup, PromptLookup
from hearth.runtime.sampling import SamplingParams
from hearth.runtime.scheduler import GenRequest, Scheduler
from hearth.runtime.speculative import (AcceptanceRate, SpeculativeSample, Speculation, accept_draft_token,
                                        choose_draft_length, expected_tokens)

FLAT = CostCurve((1, 2, 4, 8, 16), (1.0, 1.0, 1.0, 1.0, 1.0), "given")  # extra rows are free
LINEAR = CostCurve((1, 2, 4, 8, 16), (1.0, 2.0, 4.0, 8.0, 16.0), "given")  # rows cost what steps do
# The AVX2 box, Qwen 1.5B: aggregate tok/s 8.5, 9.4, 11.6, 12.3, 8.7 at K = 1, 2, 3, 4, 8
AVX2 = CostCurve((1, 2, 3, 4, 8), tuple(k * 8.5 / agg for k, agg in ((1, 8.5), (2, 9.4), (3, 11.6), (4, 12.3), (8, 8.7))), "given")
# This project's AMX Xeon, SmolLM2-135M (measured): 4 rows cost about two
XEON = CostCurve((1, 2, 3, 4, 6, 8, 12, 16), (1.0, 1.33, 1.65, 1.95, 2.75, 3.28, 4.7, 6.0), "given")


# -- prompt lookup --------------------------------------------------------------------------------
def test_lookup_proposes_what_followed_the_longest_latest_match():
    lookup = PromptLookup([5, 6, 7, 8, 9, 1, 2, 6, 7, 3, 4, 6, 7])
    # "6 7" occurred twice before the end; the latest was followed by 3 4 ...
    assert lookup.propose(3) == ([3, 4, 6], 2)
    lookup.extend([3])
    # the proposal's first token came: the next proposal follows the same place (on track)
    assert lookup.propose(10) == ([4, 6, 7, 3], ON_TRACK)


def test_lookup_keeps_copying_along_its_track_until_the_answer_leaves_it():
    """An answer copying the prompt keeps being drafted from where it copies, even where the last
    n-gram also occurs later on (followed by something else); a token off the track ends it."""
    lookup = PromptLookup([1, 2, 3, 4, 5, 6, 7, 8, 9, 50, 6, 7, 8, 9, 60, 1, 2])
    assert lookup.propose(3) == ([3, 4, 5], 2)  # "1 2" matched the beginning: the track starts there
    lookup.extend([3, 4, 5, 6, 7, 8, 9])
    assert lookup.propose(3) == ([50, 6, 7], ON_TRACK)  # not "6 7 8 9" -> 60, its latest occurrence
    lookup.extend([99])  # the answer leaves the copy
    assert lookup.track is None
    assert lookup.propose(3) == ([], 0)


def test_lookup_prefers_longer_ngrams_and_stops_at_the_limit():
    lookup = PromptLookup([1, 2, 3, 4, 50, 9, 3, 4, 60, 1, 2, 3, 4])
    assert lookup.propose(2) == ([50, 9], 4)  # "1 2 3 4" beats the later "3 4"


def test_lookup_without_a_match_proposes_nothing():
    assert PromptLookup([1, 2, 3]).propose(5) == ([], 0)
    assert PromptLookup([]).propose(5) == ([], 0)
    assert PromptLookup([7]).propose(5) == ([], 0)


def test_lookup_sync_appends_only_new_tokens():
    lookup = PromptLookup([1, 2])
    lookup.sync([1, 2, 1, 2])
    assert lookup.history == [1, 2, 1, 2]
    assert lookup.propose(4) == ([1, 2], 2)


# -- layout lookup: the reference copied with other whitespace --------------------------------------
DOC = {"service": "hearth", "limits": {"max_tokens": 4096, "parallel": 16}, "tags": ["a b", "c"],
       "models": [{"name": "qwen", "quant": "Q4_K_M", "default": True},
                  {"name": "smol", "quant": "Q4_1", "default": False}], "owner": {"team": "runtime"}}


def _replay(reference: str, answer: str, size: int = 24) -> list[tuple[int, bytes]]:
    """Feed `answer` byte by byte; (position, proposal) wherever a proposal is made."""
    lookup, data, made = LayoutLookup(reference.encode()), answer.encode(), []
    for position in range(len(data)):
        proposal = lookup.propose(size)
        if proposal:
            made.append((position, proposal))
        lookup.extend(data[position:position + 1])
    return made


def test_layout_lookup_drafts_a_reformatted_json_once_it_has_seen_the_layout():
    minified, indented = json.dumps(DOC, separators=(",", ":")), json.dumps(DOC, indent=2)
    made = _replay("Reformat this JSON:\n" + minified, indented)
    data = indented.encode()
    right = [position for position, proposal in made if data.startswith(proposal, position)]
    half = len(data) // 2
    assert len(made) > len(data) * 3 // 4  # a track nearly all the way
    second_half = [p for p, _ in made if p >= half]
    assert second_half and all(p in right for p in second_half)  # every pair laid out by then
    assert b'"a b"' in b"".join(proposal for _, proposal in made)  # whitespace inside strings kept


def test_layout_lookup_drafts_minified_text_from_an_indented_reference():
    made = _replay(json.dumps(DOC, indent=4), json.dumps(DOC, separators=(",", ":")))
    data = json.dumps(DOC, separators=(",", ":")).encode()
    late = [(p, proposal) for p, proposal in made if p >= len(data) // 2]
    assert late and all(data.startswith(proposal, p) for p, proposal in late)


def test_layout_lookup_copies_the_reference_whitespace_where_nothing_was_learnt():
    reference = "def total(items):\n    return sum(item.price for item in items)\n"
    lookup = LayoutLookup(reference.encode())
    lookup.extend(b"def total(it")
    assert lookup.propose(200) == b"ems):\n    return sum(item.price for item in items)"


def test_layout_lookup_continues_whitespace_already_written():
    lookup = LayoutLookup(b'{"alpha":1,"beta":2,"gamma":3}')
    lookup.extend(b'{\n  "alpha": 1,\n  "beta": 2,\n')  # the newline after "2," is out, not the indent
    assert lookup.propose(30).startswith(b'  "gamma": 3')  # the indent, then the pair as laid out
    nested = LayoutLookup(b'{"alpha":{"beta":1,"gamma":2,"delta":{"eps":3,"zeta":4},"eta":5}}')
    nested.extend(b'{\n  "alpha": {\n    "beta": 1,\n    "gamma": 2,\n    "delta": {\n')
    # the line break after "{" is out, one level deeper: the lines after it keep the new indent
    assert nested.propose(60).startswith(b'      "eps": 3,\n      "zeta": 4')
    lookup.extend(b"\t")  # whitespace the layout would not have written: no proposal
    assert lookup.propose(9) == b""


def test_layout_lookup_follows_the_reference_in_order_and_proposes_nothing_off_it():
    reference = b'[{"name":"first","x":1},{"name":"second","x":2}]'
    lookup = LayoutLookup(reference)
    lookup.extend(b'[{"name":"first","x":1},{"name":"')  # "name":" occurs twice: the later one is next
    assert lookup.propose(6) == b"second"
    lookup.extend(b"third")
    assert lookup.track is None and lookup.propose(6) == b""
    assert LayoutLookup(b"").propose(5) == b"" and LayoutLookup(reference).propose(5) == b""


# -- the policy ---------------------------------------------------------------------------------------
def test_expected_tokens_is_the_geometric_sum():
    assert expected_tokens(0.0, 5) == 1.0
    assert expected_tokens(1.0, 3) == 4.0
    assert expected_tokens(0.5, 2) == pytest.approx(1.75)


@pytest.mark.parametrize("curve, rate, available, expected", [
    (FLAT, 0.9, 15, 15),  # free rows: draft everything offered
    (FLAT, 0.9, 4, 4),
    (FLAT, 0.0, 15, 0),  # nothing is ever accepted: plain decode
    (LINEAR, 0.99, 15, 0),  # rows cost full steps: drafting can never pay
    (AVX2, 0.95, 15, 3),  # the CPU: drafts of about 3 tokens at best
    (AVX2, 0.5, 15, 0),  # ... and none when half of them fail
    (XEON, 0.9, 15, 3),
    (XEON, 0.99, 15, 15),  # nearly always right: the widest call pays most
    (XEON, 0.3, 15, 0),
    (XEON, 0.9, 0, 0),  # nothing proposed
])
def test_draft_length_maximises_tokens_per_cost(curve, rate, available, expected):
    assert choose_draft_length(curve, rate, available) == expected


def test_draft_model_cost_shortens_drafts():
    assert choose_draft_length(FLAT, 0.8, 15, draft_cost=0.0) == 15
    assert 0 < choose_draft_length(FLAT, 0.8, 15, draft_cost=0.1) < 15
    assert choose_draft_length(FLAT, 0.8, 15, draft_cost=1.0) == 0


def test_acceptance_rate_follows_recent_drafts():
    rates = AcceptanceRate()
    assert rates.rate(2) == 0.5  # the prior
    for _ in range(20):
        rates.observe(2, 4, rejected=False)
    assert rates.rate(2) > 0.9
    assert rates.rate(1) == 0.5  # another key is another rate
    for _ in range(60):
        rates.observe(2, 0, rejected=True)
    assert rates.rate(2) < 0.2  # old successes are forgotten


# -- the acceptance rule keeps the target distribution -------------------------------------------
CHI2_99_9 = {4: 18.47, 7: 24.32, 8: 26.12}  # chi-square critical values by degrees of freedom, p = 0.001


def chi_square_passes(counts: np.ndarray, expected: np.ndarray) -> bool:
    """Whether the counts fit the expected ones (chi-square test at p = 0.001; the generators are
    seeded, so this is deterministic, and a wrong rule misses it by far)."""
    mask = expected > 0
    assert counts[~mask].sum() == 0, "a token of probability 0 was produced"
    statistic = float(((counts[mask] - expected[mask]) ** 2 / expected[mask]).sum())
    return statistic < CHI2_99_9[int(mask.sum()) - 1]


@pytest.mark.parametrize("draft", [0, 3, 5, 9])  # likely, unlikely, zero-probability, not a candidate
def test_acceptance_rule_output_follows_p(draft):
    ids = np.array([0, 1, 2, 3, 4, 5], dtype=np.int32)
    probs = np.array([0.5, 0.2, 0.15, 0.1, 0.05, 0.0])
    rng = np.random.default_rng(1234 + draft)
    n = 40_000
    counts = np.zeros(6)
    kept = 0
    for _ in range(n):
        accepted, token = accept_draft_token(ids, probs, draft, rng)
        counts[token] += 1
        kept += accepted
        assert accepted == (token == draft) or draft >= 5
    assert chi_square_passes(counts, probs * n)
    assert kept / n == pytest.approx(probs[draft] if draft < 6 else 0.0, abs=0.01)


class _ToyCtx:
    """Rows of one verification call: row i holds the distribution after the prefix of row i."""

    def __init__(self, table, prefixes):
        self.table, self.prefixes = table, prefixes


class _ToySampler:
    """A sampler whose `candidates` come from a table of conditional distributions."""

    def __init__(self):
        self.accepted: list[int] = []

    def candidates(self, ctx, row):
        probs = ctx.table[tuple(ctx.prefixes[row])]
        return np.arange(len(probs), dtype=np.int32), np.asarray(probs, dtype=np.float64)

    def accept(self, token):
        self.accepted.append(token)


class _ToyEngine:
    model = FakeModel()

    def sampler(self, params, seed, draw=True):
        assert not draw  # temperature > 0: the draw is speculative decoding's
        return _ToySampler()


def test_verify_keeps_the_joint_distribution_of_two_tokens():
    """Two tokens with a draft of two: the (first, second) pairs follow p(a) p(b | a), whichever
    of the drafts are kept, rejected or replaced."""
    p1 = [0.6, 0.3, 0.1]
    p2 = {0: [0.2, 0.7, 0.1], 1: [0.5, 0.0, 0.5], 2: [0.1, 0.1, 0.8]}
    table = {(): p1, **{(a,): p for a, p in p2.items()}, **{(a, b): [1 / 3] * 3 for a in range(3) for b in range(3)}}
    spec = Speculation("lookup", FLAT)
    sample = SpeculativeSample(spec, _ToyEngine(), SamplingParams(temperature=1.0), 7, prompt=[])
    draft = [1, 0]  # a middling first guess, then a guess that is good only after 0
    n, counts = 30_000, np.zeros((3, 3))
    for _ in range(n):
        sample.pending = list(draft)
        emitted = sample.verify(_ToyCtx(table, {0: [], 1: [draft[0]], 2: draft}), [0, 1, 2])
        first = emitted[0][0]
        if len(emitted) == 1:  # the first draft was rejected: the next step draws the second token
            sample.pending = []
            emitted.append(sample.verify(_ToyCtx(table, {0: [first]}), [0])[0])
        counts[first, emitted[1][0]] += 1
    expected = np.array([[p1[a] * p2[a][b] for b in range(3)] for a in range(3)]) * n
    assert chi_square_passes(counts.ravel(), expected.ravel())
    assert sample.stats.accepted > 0 and sample.stats.drafted == 2 * n


# -- the cost curve -------------------------------------------------------------------------------------
def test_cost_curve_interpolates_and_extends():
    curve = CostCurve((1, 2, 4), (0.010, 0.012, 0.020))
    assert curve.relative(1) == 1.0
    assert curve.relative(3) == pytest.approx(1.6)
    assert curve.relative(6) == pytest.approx(2.8)  # past the end along the last slope
    assert curve.best_width() == 4 and curve.best_speedup == pytest.approx(2.0)
    assert curve.best_width(limit=2) == 2
    assert AVX2.best_width() == 4 and AVX2.best_speedup == pytest.approx(12.3 / 8.5)


def test_cost_curve_cache_round_trip_and_bad_files(tmp_path, monkeypatch):
    monkeypatch.setenv("HEARTH_CACHE", str(tmp_path))
    curve = CostCurve((1, 2, 4), (0.01, 0.012, 0.02), exact_rows=2, exact_at=((48, 2), (300, 1)))
    costs.write_cached("abc", curve, {"model": "m.gguf"})
    again = costs.read_cached("abc")
    assert (again.widths, again.seconds, again.exact_rows, again.exact_at) == \
        (curve.widths, curve.seconds, 2, ((48, 2), (300, 1)))
    assert again.source == "cached"
    path = costs.curve_path("abc")
    good = {"format": costs.CURVE_FORMAT, "widths": [1, 2], "seconds": [0.01, 0.02], "exact_rows": 2,
            "exact_at": [[48, 2]]}
    for broken in ("{", json.dumps({**good, "widths": [2, 4]}), json.dumps({**good, "seconds": [0.01, 0]}),
                   json.dumps({**good, "format": 99}), json.dumps({**good, "exact_rows": 0}),
                   json.dumps({**good, "exact_at": [[48, 0]]}), json.dumps({**good, "exact_at": [[300, 1], [48, 2]]}),
                   json.dumps({k: v for k, v in good.items() if k != "exact_at"}),
                   json.dumps({k: v for k, v in good.items() if k != "exact_rows"})):
        path.write_text(broken)
        assert costs.read_cached("abc") is None
    assert costs.read_cached("missing") is None


def test_cost_curve_key_depends_on_model_machine_and_threads(tmp_path):
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF" + bytes(100))
    machine = {"cpu": "x", "system_info": "AVX2"}
    key = costs.curve_key(model, machine, 2, 0)
    assert key == costs.curve_key(model, machine, 2, 0)
    assert len({key, costs.curve_key(model, machine, 4, 0), costs.curve_key(model, machine, 2, 99),
                costs.curve_key(model, {**machine, "cpu": "y"}, 2, 0)}) == 4
    model.write_bytes(b"GGUF" + bytes(101))
    assert costs.curve_key(model, machine, 2, 0) != key


# -- the scheduler's bookkeeping with drafts --------------------------------------------------------
class _OracleSpeculation(Speculation):
    """Lookup speculation whose proposals are the reference continuation with every `wrong`-th
    token corrupted: drafts are kept, rejected and cut at every position."""

    def start(self, engine, params, seed, prompt, seq_id=0):
        sample = super().start(engine, params, seed, prompt, seq_id)
        truth = reference_tokens(prompt, 200)
        state = {"calls": 0}

        def propose(limit):
            done = len(sample.history) - len(prompt)
            guess = truth[done:done + limit]
            state["calls"] += 1
            return ([t if (i + state["calls"]) % 4 else (t + 1) % 40 or 5 for i, t in enumerate(guess)], 2)

        sample.lookup.propose = propose
        return sample


@pytest.mark.parametrize("unified", [True, False])
def test_scheduler_with_drafts_gives_the_plain_tokens_and_frees_every_cell(unified):
    engine = FakeEngine(n_seq_max=2, kv_unified=unified, n_ctx=1024, n_batch=16)
    prompts = [[3, 4, 5, 6, 7, 8], [9, 10, 11], [12] * 20]
    scheduler = Scheduler(engine)
    speculation = _OracleSpeculation("lookup", FLAT, max_draft=6)
    requests = [GenRequest(p, SamplingParams(temperature=0.0), 60, speculation=speculation) for p in prompts]
    results = scheduler.run(requests)
    for request, (sample,) in zip(requests, results):
        assert sample.tokens == reference_tokens(request.prompt, 60)
        assert sample.spec.stats.accepted > 0 and sample.spec.stats.accepted < sample.spec.stats.drafted
    assert scheduler.stats.decoded > scheduler.stats.decode_calls  # calls yielded several tokens
    assert engine.ctx.used_cells() == 0


def test_drafts_stay_within_the_rows_computed_exactly():
    engine = FakeEngine(n_seq_max=1, n_ctx=512, n_batch=64)
    curve = CostCurve(FLAT.widths, FLAT.seconds, "given", exact_rows=3)
    request = GenRequest([3, 4, 5, 6], SamplingParams(temperature=0.0), 50,
                         speculation=_OracleSpeculation("lookup", curve))
    scheduler = Scheduler(engine)
    sample = scheduler.run([request])[0][0]
    assert sample.tokens == reference_tokens([3, 4, 5, 6], 50)
    assert scheduler.stats.max_rows_per_call == 3


def test_drafts_never_pass_max_tokens_or_the_batch():
    engine = FakeEngine(n_seq_max=1, n_ctx=512, n_batch=4)
    speculation = _OracleSpeculation("lookup", FLAT)
    request = GenRequest([3, 4, 5, 6], SamplingParams(temperature=0.0), 9, speculation=speculation)
    scheduler = Scheduler(engine)
    sample = scheduler.run([request])[0][0]
    assert sample.tokens == reference_tokens([3, 4, 5, 6], 9)
    assert scheduler.stats.max_rows_per_call <= 4
    assert max(int(n) for n in sample.spec.stats.lengths) <= 3


def test_exactness_depends_on_where_the_call_starts():
    """As measured with CPU flash attention: 16 rows exact below 256 positions, 1 from 256 on."""
    curve = CostCurve((1, 2, 4, 8, 16), (1.0,) * 5, "given", exact_rows=16,
                      exact_at=((48, 16), (200, 16), (240, 16), (300, 1), (500, 1)))
    assert curve.exact_rows_from(0) == 16 and curve.exact_rows_from(180) == 16
    assert curve.exact_rows_from(230) == 1  # its widest call would end past 240, before 300: unknown
    assert curve.exact_rows_from(400) == 1
    assert curve.exact_rows_from(490) == 1  # past the last position checked: nothing is known
    assert CostCurve((1, 2), (1.0, 1.0), "given", exact_rows=5).exact_rows_from(10_000) == 5  # no positions: everywhere


@pytest.mark.parametrize("temperature", [0.0, 0.8])
def test_greedy_drafts_stop_where_calls_stop_being_exact(temperature):
    """Greedy: drafts only while the call is exact at its position; sampling: the whole curve."""
    engine = FakeEngine(n_seq_max=1, n_ctx=1024, n_batch=64)
    curve = CostCurve(FLAT.widths, FLAT.seconds, "given", exact_rows=4, exact_at=((0, 4), (200, 4), (300, 1), (900, 1)))
    block = list(range(100, 140))
    spec = SpeculativeSample(Speculation("lookup", curve), engine, SamplingParams(temperature=temperature), 1,
                             prompt=block + block[:4])  # position 43: block[4:] follows its end earlier on
    early = len(spec.drafts(15))
    spec.lookup.extend(list(range(200, 460)) + block[:4])  # position 307: past 300
    late = len(spec.drafts(15))
    if temperature == 0:
        assert (early, late) == (3, 0)
    else:
        assert early > 3 and late > 3


def test_loose_drafts_check_greedy_drafts_where_calls_are_not_exact():
    """exact_drafts=False (--loose-drafts): greedy drafts go on past the exact positions."""
    engine = FakeEngine(n_seq_max=1, n_ctx=1024, n_batch=64)
    curve = CostCurve(FLAT.widths, FLAT.seconds, "given", exact_rows=1, exact_at=((0, 1), (900, 1)))
    block = list(range(100, 140))
    strict = SpeculativeSample(Speculation("lookup", curve), engine, SamplingParams(temperature=0), 1,
                               prompt=block + block[:4])
    loose = SpeculativeSample(Speculation("lookup", curve, exact=False), engine, SamplingParams(temperature=0), 1,
                              prompt=block + block[:4])
    assert strict.drafts(15) == [] and len(loose.drafts(15)) > 3


def test_loose_drafts_need_a_drafter_and_reach_the_options():
    from hearth.cli._options import generation_options
    from hearth.errors import UsageError

    assert generation_options(lookup=True, loose_drafts=True).exact_drafts is False
    assert generation_options(lookup=True).exact_drafts is True
    with pytest.raises(UsageError, match="--lookup or --draft"):
        generation_options(loose_drafts=True)
