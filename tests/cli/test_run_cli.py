"""`hearth run` end to end: the real program, the embedded model, real llama.cpp."""

from __future__ import annotations

import json

import pytest


def test_greedy_answer_is_reproducible_and_stdout_is_clean(hearth):
    first = hearth("run", "What is the capital of France?", "--temp", "0", "-n", "12")
    second = hearth("run", "What is the capital of France?", "--temp", "0", "-n", "12")
    assert first.returncode == 0, first.stderr
    assert first.stdout == second.stdout and first.stdout.strip()
    assert "llama" not in first.stdout.lower() and "load" not in first.stdout.lower()


def test_argument_and_stdin_make_one_prompt(hearth):
    piped = hearth("run", "Repeat this word:", "--temp", "0", "-n", "8", "--json", input="banana\n")
    both = json.loads(piped.stdout)
    alone = json.loads(hearth("run", "Repeat this word:", "--temp", "0", "-n", "8", "--json").stdout)
    assert both["usage"]["prompt_tokens"] > alone["usage"]["prompt_tokens"]
    stdin_only = hearth("run", "--temp", "0", "-n", "4", "--json", input="Say hi")
    assert stdin_only.returncode == 0 and json.loads(stdin_only.stdout)["text"]


def test_json_shape(hearth):
    done = hearth("run", "Hi", "--temp", "0", "-n", "5", "--json")
    record = json.loads(done.stdout)
    assert set(record) == {"text", "model", "finish_reason", "usage", "timings"}
    assert record["usage"]["completion_tokens"] <= 5
    assert record["finish_reason"] in ("stop", "length")
    assert set(record["timings"]) == {"load_s", "prompt_tok_s", "decode_tok_s"}
    assert record["timings"]["prompt_tok_s"] > 0


def test_seeded_sampling_is_reproducible(hearth):
    a = hearth("run", "Tell me a word", "--seed", "42", "--temp", "1.0", "-n", "10")
    b = hearth("run", "Tell me a word", "--seed", "42", "--temp", "1.0", "-n", "10")
    assert a.stdout == b.stdout


def test_base_model_runs_as_plain_completion(hearth, gemma_model_path):
    done = hearth("run", "-m", str(gemma_model_path), "The capital of France is", "--temp", "0", "-n", "6")
    assert done.returncode == 0, done.stderr
    assert "no chat template" in done.stderr
    assert done.stdout.strip()


def _one_line_error(done, needle: str, code: int = 1) -> None:
    assert done.returncode == code, (done.returncode, done.stderr)
    assert "Traceback" not in done.stderr
    assert needle in done.stderr
    assert done.stdout == ""


def test_missing_model_file(hearth, tmp_path):
    _one_line_error(hearth("run", "-m", str(tmp_path / "none.gguf"), "hi"), "not found")


def test_not_a_gguf(hearth, tmp_path):
    bad = tmp_path / "fake.gguf"
    bad.write_text("hello " * 100)
    _one_line_error(hearth("run", "-m", str(bad), "hi"), "not a GGUF file")


def test_truncated_gguf(hearth, tmp_path, default_model_path):
    cut = tmp_path / "cut.gguf"
    with open(default_model_path, "rb") as src:
        cut.write_bytes(src.read(20_000_000))
    _one_line_error(hearth("run", "-m", str(cut), "hi"), "truncated")


def test_unknown_model_name(hearth):
    _one_line_error(hearth("run", "-m", "nobody/nothing-GGUF", "hi"), "unknown model")


def test_context_overflow_names_the_excess(hearth):
    done = hearth("run", "-c", "256", "-n", "400", "Tell me about the sea")
    _one_line_error(done, "over")
    assert "context" in done.stderr


@pytest.mark.parametrize("args,needle", [
    (["--temp", "-1", "hi"], "--temp"),
    (["--top-p", "2", "hi"], "--top-p"),
    (["-n", "0", "hi"], "--max-tokens"),
    (["--answer", "nonsense", "--samples", "2", "hi"], "answer"),
])
def test_invalid_flag_values_are_usage_errors(hearth, args, needle):
    done = hearth("run", *args)
    assert done.returncode == 2, done.stderr
    assert needle in done.stderr and "Traceback" not in done.stderr


def test_no_prompt_is_a_usage_error(hearth):
    _one_line_error(hearth("run"), "no prompt", code=2)


def test_schema_constrained_output(hearth, tmp_path):
    schema = tmp_path / "s.json"
    schema.write_text(json.dumps({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}))
    done = hearth("run", "Give a city as JSON", "--schema", str(schema), "--temp", "0", "-n", "40")
    assert done.returncode == 0, done.stderr
    assert isinstance(json.loads(done.stdout)["city"], str)


def test_bad_schema_is_usage_error(hearth, tmp_path):
    schema = tmp_path / "s.json"
    schema.write_text("{not json")
    _one_line_error(hearth("run", "hi", "--schema", str(schema)), "invalid JSON schema", code=2)
