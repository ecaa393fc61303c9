"""The scheduler against a fake engine: fast, no model, every KV operation checked.

`fake_engine.FakeEngine` keeps llama.cpp's contract (positions in order, no cell written twice,
whole-stream copies only with KV streams) and a toy model whose next token depends on the
whole KV history, so a scheduler bookkeeping mistake shows up as a wrong token.
"""

from __future__ import annotations

import random

import pytest
from fake_engine import EOS, FakeEngine, reference_tokens

from hearth.runtime.sampling import SamplingParams, sample_seeds
from hearth.runtime.scheduler import GenRequest, Hooks, Scheduler
from hearth.runtime.sequences import SequencePool
from hearth.runtime.textstream import TextStream

GREEDY = SamplingParams(temperature=0.0)
LAYOUTS = [pytest.param(True, id="unified"), pytest.param(False, id="streams")]


def prompts(n: int, seed: int = 1, shared: int = 0) -> list[list[int]]:
    rng = random.Random(seed)
    head = [rng.randrange(2, 40) for _ in range(shared)]
    return [head + [rng.randrange(2, 40) for _ in range(rng.randrange(3, 30))] for _ in range(n)]


@pytest.mark.parametrize("unified", LAYOUTS)
@pytest.mark.parametrize("share_prefix", [False, True])
def test_continuous_batching_gives_every_request_its_solo_tokens(unified, share_prefix):
    engine = FakeEngine(n_seq_max=5, kv_unified=unified, n_ctx=5 * 256)
    requests = [GenRequest(p, GREEDY, 40, key=i) for i, p in enumerate(prompts(23, shared=12))]
    scheduler = Scheduler(engine, share_prefix=share_prefix)
    results = scheduler.run(requests)
    assert [r[0].tokens for r in results] == [reference_tokens(r.prompt, 40) for r in requests]
    assert [r[0].request.key for r in results] == list(range(23))  # in request order
    assert scheduler.stats.max_rows_per_call > 1  # they really shared decode calls
    if share_prefix:
        assert scheduler.stats.prompt_reused > 0
    assert engine.ctx.used_cells() == 0  # every sequence freed, the prefix holder too
    assert all(s.closed for s in engine.samplers)


@pytest.mark.parametrize("unified", LAYOUTS)
def test_streams_keep_decoding_ids_consecutive(unified):
    engine = FakeEngine(n_seq_max=6, kv_unified=unified, n_ctx=6 * 256)
    seen_gaps = []

    class Watch(Hooks):
        def on_finish(self, sample):
            live = sorted(s.seq_id for s in scheduler._r.decoding if not s.done)
            seen_gaps.append(bool(live) and live != list(range(live[0], live[0] + len(live))))

    scheduler = Scheduler(engine)
    requests = [GenRequest(p, GREEDY, 30) for p in prompts(12, seed=3)]
    results = scheduler.run(requests, Watch())
    assert [r[0].tokens for r in results] == [reference_tokens(r.prompt, 30) for r in requests]
    if not unified:
        assert scheduler.stats.moves > 0  # finished low ids were refilled by moving samples down


@pytest.mark.parametrize("unified", [pytest.param(True, id="unified")])
def test_k_samples_share_one_prompt_and_late_samples_equal_live_ones(unified):
    prompt = prompts(1, seed=5)[0]
    params = SamplingParams(temperature=0.8, seed=11)
    live = Scheduler(FakeEngine(n_seq_max=9, kv_unified=unified))
    all_at_once = live.run([GenRequest(prompt, params, 25, n=8)])[0]
    assert live.stats.prompt_evals == 1 and live.stats.prompt_tokens == len(prompt)
    waves = Scheduler(FakeEngine(n_seq_max=9, kv_unified=unified))
    two_at_a_time = waves.run([GenRequest(prompt, params, 25, n=8, parallel=2)])[0]
    seeds = sample_seeds(11, 8)
    expected = [reference_tokens(prompt, 25, seed, 0.8) for seed in seeds]
    assert [s.tokens for s in all_at_once] == expected
    assert [s.tokens for s in two_at_a_time] == expected
    assert waves.stats.max_rows_per_call <= 2
    assert waves.stats.prompt_tokens == len(prompt) + 6  # one re-evaluated token per late sample


def test_cancel_frees_every_sequence_and_cell():
    engine = FakeEngine(n_seq_max=4)
    steps = {"n": 0}

    class CancelSoon(Hooks):
        def should_cancel(self):
            steps["n"] += 1
            return steps["n"] > 5

    results = Scheduler(engine).run([GenRequest(p, GREEDY, 200) for p in prompts(6)], CancelSoon())
    assert engine.ctx.used_cells() == 0
    finished = [s for r in results for s in r]
    assert finished and all(s.finish_reason in ("cancelled", "stop", "length") for s in finished)
    assert all(s.closed for s in engine.samplers)


def test_closing_the_step_iterator_early_cancels_and_frees():
    engine = FakeEngine(n_seq_max=3)
    scheduler = Scheduler(engine)
    steps = scheduler.steps([GenRequest(p, GREEDY, 200) for p in prompts(4)])
    for _ in range(4):
        next(steps)
    steps.close()
    assert engine.ctx.used_cells() == 0 and scheduler.idle


def test_a_source_with_nothing_now_is_asked_again():
    """A server's queue: None means "nothing yet"; the loop keeps decoding what it has."""
    engine = FakeEngine(n_seq_max=4)
    pending = [GenRequest(p, GREEDY, 20) for p in prompts(3, seed=9)]

    def source():
        yield pending[0]
        for request in pending[1:]:
            yield None  # the next client has not arrived yet
            yield None
            yield request

    results = Scheduler(engine).run(source())
    assert [r[0].tokens for r in results] == [reference_tokens(r.prompt, 20) for r in pending]


def test_prefix_reuse_keeps_the_kv_of_a_conversation():
    engine = FakeEngine(n_seq_max=1)
    first = prompts(1, seed=2)[0]
    answer = Scheduler(engine).run([GenRequest(first, GREEDY, 8, reuse_prefix=True)])[0][0]
    follow = first + answer.tokens + [5, 6, 7]
    second = Scheduler(engine)
    got = second.run([GenRequest(follow, GREEDY, 8, reuse_prefix=True)])[0][0]
    assert second.stats.prompt_reused >= len(first) + len(answer.tokens) - 1
    assert got.tokens == reference_tokens(follow, 8)


def test_too_long_and_empty_requests_are_reported_not_run():
    engine = FakeEngine(n_seq_max=2, n_ctx=64)
    errors = []

    class Catch(Hooks):
        def on_request_error(self, request, error):
            errors.append(error.message)

    ok = GenRequest(prompts(1)[0], GREEDY, 8)
    Scheduler(engine).run([GenRequest([3] * 60, GREEDY, 50), GenRequest([], GREEDY, 5), ok], Catch())
    assert "exceed the context" in errors[0] and "empty" in errors[1] and len(errors) == 2


def test_stop_strings_cut_the_text_and_end_the_sample():
    engine = FakeEngine(n_seq_max=1)
    prompt = prompts(1, seed=4)[0]
    full = reference_tokens(prompt, 30)
    assert len(full) > 4
    stop = f"t{full[3]} "
    sample = Scheduler(engine).run([GenRequest(prompt, GREEDY, 30, stop=(stop,))])[0][0]
    expected_text = "".join(f"t{t} " for t in full)
    assert sample.finish_reason == "stop"
    assert sample.text == expected_text[: expected_text.index(stop)]


# -- the pieces ---------------------------------------------------------------------------------
def test_sequence_pool_hands_out_lowest_first_and_holders_from_the_top():
    pool = SequencePool(4)
    assert [pool.take(), pool.take(), pool.take(highest=True)] == [0, 1, 3]
    pool.release(0)
    assert pool.lowest_free == 0 and len(pool) == 2
    with pytest.raises(ValueError):
        pool.release(0)


def test_text_stream_assembles_split_utf8_and_holds_back_a_stop_prefix():
    stream = TextStream(stop=("END",))
    e_acute = "é".encode()
    assert stream.feed(e_acute[:1]) == ""  # half a character waits
    assert stream.feed(e_acute[1:] + b"E") == "é"  # 'E' may begin END: held back
    assert stream.feed(b"N") == ""
    assert stream.feed(b"D and more") == "" and stream.stopped
    assert stream.text == "é" and stream.close() == ""


def test_text_stream_releases_a_held_prefix_that_was_not_a_stop():
    stream = TextStream(stop=("END",))
    assert stream.feed(b"the E") == "the "
    assert stream.feed(b"xit") == "Exit"
    assert stream.feed(b" E") == " "
    assert stream.close() == "E" and stream.text == "the Exit E"


def test_eos_token_is_never_text():
    engine = FakeEngine(n_seq_max=1)
    prompt = prompts(1, seed=6)[0]
    sample = Scheduler(engine).run([GenRequest(prompt, GREEDY, 500)])[0][0]
    assert EOS not in sample.tokens and sample.finish_reason in ("stop", "length")


# -- a server's loop: kept caches, cancelled waiting requests, a failing request ----------------
@pytest.mark.parametrize("unified", LAYOUTS)
def test_each_conversation_finds_its_own_kept_cache(unified):
    """Three conversations take turns through one scheduler with four sequences: every turn
    reuses the sequence holding its earlier turns, and gives the tokens it would alone."""
    engine = FakeEngine(n_seq_max=4, kv_unified=unified, n_ctx=4 * 512)
    scheduler = Scheduler(engine)
    histories = prompts(3, seed=12)
    slots: dict[int, set[int]] = {0: set(), 1: set(), 2: set()}
    for turn in range(4):
        requests = [GenRequest(h, GREEDY, 6, reuse_prefix=True, key=i) for i, h in enumerate(histories)]
        order = requests if turn % 2 == 0 else requests[::-1]  # arrival order changes
        for samples in scheduler.run(order):
            sample, key = samples[0], samples[0].request.key
            assert sample.tokens == reference_tokens(sample.request.prompt, 6)
            if turn:
                assert sample.prompt_reused >= len(histories[key]) - 6  # the earlier turns came from cache
            slots[key].add(sample.seq_id)
            histories[key] = sample.request.prompt + sample.tokens + [5 + turn, 9]
    assert all(len(s) == 1 for s in slots.values())  # a conversation keeps its sequence


def test_a_fresh_prompt_takes_an_empty_sequence_before_evicting_a_cache():
    engine = FakeEngine(n_seq_max=3, kv_unified=False, n_ctx=3 * 256)
    scheduler = Scheduler(engine)
    first = scheduler.run([GenRequest(prompts(1, seed=20)[0], GREEDY, 5, reuse_prefix=True)])[0][0]
    second = scheduler.run([GenRequest(prompts(1, seed=21)[0], GREEDY, 5, reuse_prefix=True)])[0][0]
    assert first.seq_id != second.seq_id and set(engine.cached) == {first.seq_id, second.seq_id}
    scheduler.run([GenRequest(prompts(1, seed=22)[0], GREEDY, 5)])  # not kept: uses the empty one
    assert set(engine.cached) == {first.seq_id, second.seq_id}
    third = scheduler.run([GenRequest(prompts(1, seed=23)[0], GREEDY, 5, reuse_prefix=True)])[0][0]
    fourth = scheduler.run([GenRequest(prompts(1, seed=24)[0], GREEDY, 5, reuse_prefix=True)])[0][0]
    assert fourth.seq_id == first.seq_id  # all three hold caches: the least recently used goes
    assert set(engine.cached) == {second.seq_id, third.seq_id, fourth.seq_id}


def test_closing_a_request_that_waits_ends_it_without_running_it():
    engine = FakeEngine(n_seq_max=1)
    first, waiting = (GenRequest(p, GREEDY, 30) for p in prompts(2, seed=30))
    done = []

    class Record(Hooks):
        def on_request_done(self, request, samples):
            done.append((request is waiting, len(samples)))

    scheduler = Scheduler(engine)
    steps = scheduler.steps([first, waiting], Record())
    next(steps)
    assert any(r is waiting for r in scheduler._r.waiting)  # read, but no sequence is free
    scheduler.close_request(waiting, "cancelled")
    for _ in steps:
        pass
    assert done == [(True, 0), (False, 1)]
    assert engine.ctx.used_cells() == 0


@pytest.mark.parametrize("unified", LAYOUTS)
def test_a_request_whose_sampler_fails_is_reported_and_the_others_go_on(unified):
    engine = FakeEngine(n_seq_max=4, kv_unified=unified, n_ctx=4 * 256)
    bad = GenRequest(prompts(1, seed=31)[0], SamplingParams(temperature=0.5, grammar="unparsable"), 10, n=2)
    good = [GenRequest(p, GREEDY, 10) for p in prompts(2, seed=32)]
    errors = []

    class Catch(Hooks):
        def on_request_error(self, request, error):
            errors.append((request is bad, error.message))

    results = Scheduler(engine).run([good[0], bad, good[1]], Catch())
    assert errors == [(True, "the grammar does not parse (llama.cpp rejected it)")]
    assert [results[0][0].tokens, results[2][0].tokens] == [reference_tokens(r.prompt, 10) for r in good]
    assert engine.ctx.used_cells() == 0


def long_prompts(n: int, tokens: int, seed: int = 40) -> list[list[int]]:
    """Prompts whose greedy answer runs to `tokens` without an end token."""
    found = [p for s in range(seed, seed + 400) for p in prompts(1, seed=s) if len(reference_tokens(p, tokens)) == tokens]
    return found[:n]


@pytest.mark.parametrize("keep, moved_to", [(1, 2), (0, 0)])
def test_a_gap_is_closed_over_a_single_turn_cache_but_not_over_a_continued_conversation(keep, moved_to):
    engine = FakeEngine(n_seq_max=4, kv_unified=False, n_ctx=4 * 256)
    scheduler = Scheduler(engine, keep_caches=keep)
    talk = long_prompts(1, 6, seed=60)[0]
    first = scheduler.run([GenRequest(talk, GREEDY, 6, reuse_prefix=True)])[0][0]
    scheduler.run([GenRequest(talk + first.tokens + [7, 8], GREEDY, 6, reuse_prefix=True)])  # turn 2: continued
    assert set(engine.cached) == {0}
    long_a, short, long_b = long_prompts(3, 30)
    requests = [GenRequest(long_a, GREEDY, 30, reuse_prefix=True), GenRequest(short, GREEDY, 3, reuse_prefix=True),
                GenRequest(long_b, GREEDY, 30)]
    results = scheduler.run(requests)  # in 1, 2, 3; the short one ends first and keeps its cache in 2
    assert [r[0].tokens for r in results] == [reference_tokens(r.prompt, r.max_tokens) for r in requests]
    assert results[2][0].seq_id == moved_to and scheduler.stats.moves == 1  # the gap at 2 closed
    assert (0 in engine.cached) == (moved_to != 0)  # the continued conversation kept its cache (keep=1)


@pytest.mark.parametrize("unified", LAYOUTS)
def test_closing_a_running_request_between_steps_hands_its_sequence_on_cleanly(unified):
    """A server's client leaves mid-answer: its sequence goes to the request that waited for it."""
    engine = FakeEngine(n_seq_max=1, kv_unified=unified)
    leaving, waiting = (GenRequest(p, GREEDY, 30) for p in long_prompts(2, 30))
    scheduler = Scheduler(engine)
    steps = scheduler.steps([leaving, waiting])
    for _ in range(5):
        next(steps)
    scheduler.close_request(leaving, "cancelled")
    for _ in steps:
        pass
    first, second = scheduler._last_results
    assert first[0].finish_reason == "cancelled" and second[0].tokens == reference_tokens(waiting.prompt, 30)
    assert engine.ctx.used_cells() == 0
