"""The public Python API (`import hearth`) on the embedded model, and the README's example."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import hearth

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def model():
    with hearth.load("default", ctx=2048) as m:
        yield m


def test_readme_python_example_runs(capsys):
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Python API"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    exec(compile(code, "README.md:Python API", "exec"), {})
    printed = capsys.readouterr().out
    assert printed.count("\n") >= 5  # every print of the example ran


def test_generate_and_stream_agree_and_count_usage(model):
    out = model.generate("Say hi", max_tokens=12, temperature=0)
    assert isinstance(out, hearth.Completion) and out.text
    assert out.finish_reason in ("stop", "length") and 0 < out.usage.completion_tokens <= 12
    assert out.usage.prompt_tokens == len(model.prompt_tokens("Say hi"))
    assert out.usage.total_tokens == out.usage.prompt_tokens + out.usage.completion_tokens
    pieces = list(model.stream("Say hi", max_tokens=12, temperature=0))
    assert len(pieces) > 1 and "".join(pieces) == out.text


def test_stopping_a_stream_early_stops_generation(model):
    stream = model.stream("Write a long story about a dragon.", max_tokens=400, temperature=0)
    first = [next(stream) for _ in range(3)]
    stream.close()
    assert all(first)
    again = model.generate("Say hi", max_tokens=8, temperature=0)  # the model is free again
    assert again.text


def test_options_are_defaults_and_keywords_override_them():
    options = hearth.GenerationOptions(temperature=0, max_tokens=5)
    assert options.merged(max_tokens=7).max_tokens == 7 and options.merged(max_tokens=None).max_tokens == 5
    with pytest.raises(TypeError, match="unknown generation option"):
        options.merged(temprature=0.3)
    with hearth.load("default", options=options) as m:
        assert m.generate("Count to ten.").usage.completion_tokens <= 5
        assert m.generate("Count to ten.", max_tokens=2).usage.completion_tokens <= 2


def test_messages_go_through_the_chat_template(model):
    text = model.generate([{"role": "user", "content": "Say hi"}], max_tokens=12, temperature=0).text
    assert text == model.generate("Say hi", max_tokens=12, temperature=0).text


def test_batch_returns_results_by_id_with_errors_as_records(model):
    rows = model.batch([{"id": "a", "prompt": "Name a fruit."}, {"id": 7, "messages": "bad"},
                        {"id": "c", "prompt": "Name a color."}], max_tokens=8, temperature=0)
    assert list(rows) == ["a", 7, "c"]
    assert rows["a"]["text"] == model.generate("Name a fruit.", max_tokens=8, temperature=0).text
    assert "error" in rows[7] and "text" not in rows[7]


def test_reason_with_one_sample_is_the_greedy_answer(model):
    result = model.reason("What is 2+3? Answer with a number.", samples=1, answer="number", max_tokens=48)
    assert len(result.samples) == 1 and result.tokens == result.samples[0].tokens
    assert result.answer == result.samples[0].answer
    again = model.reason("What is 2+3? Answer with a number.", samples=1, answer="number", max_tokens=48)
    assert again.samples[0].text == result.samples[0].text  # greedy: the same sample


def test_chat_keeps_the_conversation_and_undo_drops_an_exchange(model):
    chat = model.chat(system="Be brief.", max_tokens=12, temperature=0)
    first = chat.send("Name a fruit.")
    chat.send("And a color?")
    assert [m["role"] for m in chat.messages] == ["system", "user", "assistant", "user", "assistant"]
    assert chat.last.reused > 0  # the second turn reused the first turn's KV cache
    assert chat.undo() == 2 and chat.messages[-1]["content"] == first.text


def test_errors_are_the_hearth_error_family(tmp_path):
    with pytest.raises(hearth.ModelNotFoundError):
        hearth.load("nobody/nothing-GGUF:Q4_K_M")
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF" + b"\0" * 20)
    with pytest.raises(hearth.BadModelFileError):
        hearth.load(str(broken))
    assert issubclass(hearth.UsageError, hearth.HearthError)


def test_a_one_shot_answer_gets_a_context_of_its_size_and_a_chat_the_planned_one(default_model_path):
    """generate() sizes the planner's context to prompt + max tokens (decode steps cost more in a
    larger context); a longer request grows it; a chat gets the planned context back."""
    with hearth.load(str(default_model_path)) as model:
        planned = model._loaded.engine.n_ctx
        assert planned >= 2048  # the planner's default, far more than one short answer needs
        model.generate("Say hi", max_tokens=8, temperature=0)
        assert model._loaded.engine.n_ctx == 256 < planned
        model.generate("Say hi", max_tokens=700, temperature=0, stop=("\n",))
        assert model._loaded.engine.n_ctx >= 700
        chat = model.chat(max_tokens=4)
        chat.send("Hi")
        assert model._loaded.engine.n_ctx == planned
    with hearth.load(str(default_model_path), ctx=1024) as fixed:  # the user's --ctx is kept
        fixed.generate("Say hi", max_tokens=8, temperature=0)
        assert fixed._loaded.engine.n_ctx == 1024
