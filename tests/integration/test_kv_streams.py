"""One KV stream per sequence (what `hearth batch` uses), on the real model through llama.cpp.

llama.cpp cuts a batch over several streams into one micro-batch per run of consecutive
sequence ids, copies between streams only whole sequences, and gives each sequence
n_ctx / n_seq_max cells; the scheduler must respect all three.
"""

from __future__ import annotations

import pytest

from hearth.runtime.engine import ContextConfig, Engine
from hearth.runtime.scheduler import GenRequest, Scheduler, Hooks
from hearth.runtime.sampling import SamplingParams

GREEDY = SamplingParams(temperature=0.0)
SYSTEM = "<|im_start|>system\nYou are a careful assistant who answers briefly and politely.<|im_end|>\n"
TEXTS = ["Name three fruits.", "What is 2+2?", "Say hello in French.", "Describe the sea.", "Count to five.",
         "Name a bird.", "Write a haiku about rain.", "Name a river.", "Give me a color.", "What is a star?"]


@pytest.fixture(scope="module")
def streams(default_model_path):
    config = ContextConfig(n_ctx=5 * 256, n_seq_max=5, n_threads=2, n_threads_batch=2, kv_unified=False)
    with Engine(default_model_path, config) as eng:
        yield eng


def tokens(engine, text):
    return engine.tokenize(SYSTEM + f"<|im_start|>user\n{text}<|im_end|>\n<|im_start|>assistant\n")


def test_each_sequence_has_its_own_stream(streams):
    assert streams.n_ctx == 5 * 256 and streams.n_ctx_seq == 256


@pytest.mark.slow
def test_continuous_batch_equals_one_sequence_runs_exactly(streams, default_model_path):
    """10 prompts through 4 streams (the 5th holds the shared system prompt): prompts join as
    others finish, samples move down to keep the ids consecutive, the prefix is copied whole and
    cut — and every greedy answer is token for token what a one-sequence context gives."""
    generator = Scheduler(streams, share_prefix=True)
    together = generator.run([GenRequest(tokens(streams, t), GREEDY, 24) for t in TEXTS])
    with Engine(default_model_path, ContextConfig(n_ctx=512, n_seq_max=1, n_threads=2, n_threads_batch=2)) as alone:
        expected = [Scheduler(alone).run([GenRequest(tokens(alone, t), GREEDY, 24)])[0][0].tokens for t in TEXTS]
    assert [r[0].tokens for r in together] == expected
    stats = generator.stats
    assert stats.max_rows_per_call == 4
    assert stats.prompt_reused >= 10 * (len(TEXTS) - 4)  # the system prompt, copied from the holder's stream
    assert stats.moves > 0  # the end of the batch left gaps, closed by moving samples down


def test_request_over_one_stream_is_refused_per_sequence(streams):
    errors = []

    class Catch(Hooks):
        def on_request_error(self, request, error):
            errors.append(error)

    prompt = tokens(streams, "Tell me a story.")
    results = Scheduler(streams).run([GenRequest(prompt, GREEDY, 300), GenRequest(prompt, GREEDY, 4)], Catch())
    # 300 new tokens fit the 1,280 cells in all, but not one sequence's 256
    assert len(errors) == 1 and "per sequence" in errors[0].message
    assert len(results[1][0].tokens) == 4


def test_partial_copy_between_streams_is_an_error_not_an_abort(streams):
    with pytest.raises(ValueError, match="whole sequences"):
        streams.ctx.seq_copy(0, 1, 0, 5)
