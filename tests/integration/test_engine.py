"""The engine and scheduler on the real embedded model through real llama.cpp."""

from __future__ import annotations

import json

import pytest

from hearth.errors import UsageError
from hearth.runtime.engine import ContextConfig, Engine, json_schema_grammar
from hearth.runtime.scheduler import GenRequest, Scheduler, Hooks
from hearth.runtime.sampling import SamplingParams

GREEDY = SamplingParams(temperature=0.0)


@pytest.fixture(scope="module", params=["unified", "streams"])
def engine(default_model_path, request):
    """Every scheduler test runs on one shared KV buffer and on one KV stream per sequence."""
    unified = request.param == "unified"
    config = ContextConfig(n_ctx=2048 if unified else 9 * 256, n_seq_max=9, n_threads=2, n_threads_batch=2,
                           kv_unified=unified)
    with Engine(default_model_path, config) as eng:
        yield eng


def _exact(engine) -> bool:
    """Whether greedy tokens are guaranteed not to depend on what else the batch holds.

    With one KV stream per sequence, each sequence is its own micro-batch with its own cells:
    exact on any CPU (tested). With one shared buffer, rows of other sequences change the shapes
    llama.cpp's kernels see, and their float summation order differs by CPU (AVX2 vs AVX-512),
    so greedy ties can break differently: only the structure is guaranteed there.
    """
    return not engine.config.kv_unified


def prompt(engine, text="Write a short story about a cat."):
    return engine.tokenize(f"<|im_start|>user\n{text}<|im_end|>\n<|im_start|>assistant\n")


def test_greedy_is_deterministic_and_streams(engine):
    chunks = []

    class Collect(Hooks):
        def on_text(self, sample, delta):
            chunks.append(delta)

    first = Scheduler(engine).run([GenRequest(prompt(engine), GREEDY, 24)], Collect())[0][0]
    second = Scheduler(engine).run([GenRequest(prompt(engine), GREEDY, 24)])[0][0]
    assert first.tokens == second.tokens and first.text == second.text
    assert "".join(chunks) == first.text and len(chunks) > 3
    assert first.finish_reason in ("length", "stop")


def test_max_tokens_is_respected(engine):
    sample = Scheduler(engine).run([GenRequest(prompt(engine), SamplingParams(temperature=0.8, seed=3), 5)])[0][0]
    assert len(sample.tokens) == 5 and sample.finish_reason == "length"


def test_stop_string_cuts_output(engine):
    full = Scheduler(engine).run([GenRequest(prompt(engine), GREEDY, 40)])[0][0].text
    words = full.split()
    assert len(words) > 4
    stop = words[3]
    cut = Scheduler(engine).run([GenRequest(prompt(engine), GREEDY, 40, stop=(stop,))])[0][0]
    assert cut.finish_reason == "stop"
    assert stop not in cut.text
    assert full.startswith(cut.text)


def test_k_samples_share_one_prompt_eval_and_decode_together(engine):
    tokens = prompt(engine)
    generator = Scheduler(engine)
    samples = generator.run([GenRequest(tokens, SamplingParams(temperature=0.9, seed=11), 16, n=8)])[0]
    assert len(samples) == 8
    assert generator.stats.prompt_evals == 1
    assert generator.stats.prompt_tokens == len(tokens)  # evaluated once, not 8 times
    assert generator.stats.max_rows_per_call == 8  # all 8 decoded in one llama_decode call
    assert len({tuple(s.tokens) for s in samples}) > 1  # different seeds, different samples
    again = Scheduler(engine).run([GenRequest(tokens, SamplingParams(temperature=0.9, seed=11), 16, n=8)])[0]
    assert [s.tokens for s in samples] == [s.tokens for s in again]  # reproducible


def test_late_samples_fork_from_held_prompt(engine):
    tokens = prompt(engine)
    generator = Scheduler(engine)
    samples = generator.run([GenRequest(tokens, SamplingParams(temperature=0.9, seed=5), 8, n=6, parallel=2)])[0]
    assert len(samples) == 6
    assert generator.stats.max_rows_per_call <= 2
    # prompt once + one re-evaluated last token per late sample
    assert generator.stats.prompt_tokens == len(tokens) + 4
    # a late sample equals the same seed sampled with everything live (same KV, same logits)
    all_live = Scheduler(engine).run([GenRequest(tokens, SamplingParams(temperature=0.9, seed=5), 8, n=6)])[0]
    assert [s.tokens for s in samples] == [s.tokens for s in all_live]


def test_batched_greedy_matches_one_at_a_time(engine):
    texts = ["Name three fruits.", "What is 2+2?", "Say hello in French.", "Describe the sea."]
    requests = [GenRequest(prompt(engine, t), GREEDY, 16, key=t) for t in texts]
    generator = Scheduler(engine)
    together = generator.run(requests)
    alone = [Scheduler(engine).run([GenRequest(prompt(engine, t), GREEDY, 16)])[0][0] for t in texts]
    assert generator.stats.max_rows_per_call == len(texts)  # they did decode together
    assert [r[0].request.key for r in together] == texts  # results in request order
    if _exact(engine):
        assert [r[0].tokens for r in together] == [a.tokens for a in alone]
    else:
        assert all(r[0].tokens and r[0].finish_reason in ("length", "stop") for r in together)


def test_shared_prefix_is_evaluated_once_and_changes_nothing(engine):
    texts = ["Name three fruits.", "What is 2+2?", "Say hello in French.", "Describe the sea.", "Count to five.",
             "Name a bird.", "Name a tree.", "Name a river.", "Name a song.", "Name a star.", "Name a game."]
    system = "<|im_start|>system\nYou are a careful assistant who answers briefly and politely.<|im_end|>\n"

    def requests():
        return [GenRequest(engine.tokenize(system + f"<|im_start|>user\n{t}<|im_end|>\n<|im_start|>assistant\n"),
                           GREEDY, 6) for t in texts]

    plain = Scheduler(engine)
    expected = plain.run(requests())
    shared = Scheduler(engine, share_prefix=True)
    got = shared.run(requests())
    # the first 8 requests start together (8 free sequences; the 9th holds the prefix); each
    # request admitted later copies the system prompt's cells instead of evaluating them
    assert shared.stats.prompt_reused >= 8 * (len(texts) - 8)
    assert shared.stats.prompt_tokens < plain.stats.prompt_tokens
    assert plain.stats.prompt_reused == 0
    assert all(r[0].tokens for r in got) and len(got) == len(texts)
    if _exact(engine):
        assert [r[0].tokens[:6] for r in got] == [r[0].tokens[:6] for r in expected]


def test_prefix_reuse_evaluates_only_new_tokens(engine):
    first = prompt(engine, "Tell me a fact about owls.")
    generator = Scheduler(engine)
    answer = generator.run([GenRequest(first, GREEDY, 12, reuse_prefix=True)])[0][0]
    follow = first + answer.tokens + engine.tokenize("<|im_end|>\n<|im_start|>user\nMore.<|im_end|>\n<|im_start|>assistant\n", add_special=False)
    second = Scheduler(engine)
    second.run([GenRequest(follow, GREEDY, 12, reuse_prefix=True)])
    assert second.stats.prompt_reused >= len(first) + len(answer.tokens) - 1
    assert second.stats.prompt_tokens == len(follow) - second.stats.prompt_reused
    engine.cached.clear()
    engine.ctx.clear()


def test_json_schema_grammar_constrains_output(engine):
    schema = json.dumps({"type": "object", "properties": {"color": {"type": "string"}}, "required": ["color"]})
    params = SamplingParams(temperature=0.0, grammar=json_schema_grammar(schema))
    sample = Scheduler(engine).run([GenRequest(prompt(engine, "Name a color as JSON."), params, 40)])[0][0]
    assert isinstance(json.loads(sample.text)["color"], str)


def test_bad_grammar_is_usage_error(engine):
    with pytest.raises(UsageError, match="grammar"):
        Scheduler(engine).run([GenRequest(prompt(engine), SamplingParams(grammar="root ::= ("), 4)])


def test_too_long_request_is_reported_not_run(engine):
    errors = []

    class Catch(Hooks):
        def on_request_error(self, request, error):
            errors.append(error)

    Scheduler(engine).run([GenRequest(prompt(engine), GREEDY, 5000)], Catch())
    assert errors and "exceed the context" in errors[0].message
