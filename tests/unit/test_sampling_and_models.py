"""Sampling parameter validation and model reference resolution (no model loaded)."""

from __future__ import annotations

import pytest

from hearth.errors import ModelNotFoundError, UsageError
from hearth.references import resolve_model
from hearth.runtime.sampling import SamplingParams, sample_seeds


@pytest.mark.parametrize("field,value", [("temperature", -1.0), ("temperature", 9.0), ("top_p", 0.0),
                                         ("top_p", 1.5), ("min_p", 1.0), ("top_k", -3), ("repeat_penalty", 0.0)])
def test_bad_sampling_values_are_usage_errors(field, value):
    with pytest.raises(UsageError):
        SamplingParams(**{field: value}).validated()


def test_overrides_keep_unset_fields():
    base = SamplingParams(temperature=0.3, top_p=0.9)
    assert base.with_overrides(temperature=None, seed=5) == SamplingParams(temperature=0.3, top_p=0.9, seed=5)


def test_seeds_are_consecutive_from_base():
    assert sample_seeds(10, 3) == [10, 11, 12]
    assert len(set(sample_seeds(None, 8))) == 8


def test_default_resolves_to_embedded_file(default_model_path):
    for ref in (None, "default", " default "):
        resolved = resolve_model(ref)
        assert resolved.path == default_model_path and resolved.source == "default"


def test_path_reference(default_model_path):
    assert resolve_model(str(default_model_path)).source == "file"


def test_missing_path(tmp_path):
    with pytest.raises(ModelNotFoundError, match="not found"):
        resolve_model(str(tmp_path / "x.gguf"))


def test_unknown_name_says_how_to_get_it():
    with pytest.raises(ModelNotFoundError) as err:
        resolve_model("nobody/no-such-model-GGUF:Q4_K_M")
    assert "hearth pull" in err.value.hint


# -- GenerationOptions: the one set of generation defaults ------------------------------------------
def test_generation_options_defaults_by_mode():
    from hearth.runtime.options import DEFAULT_MAX_TOKENS, GenerationOptions

    options = GenerationOptions()
    assert [options.max_tokens_for(m) for m in ("generate", "chat", "batch")] == [512, 1024, 256]
    assert DEFAULT_MAX_TOKENS["chat"] == 1024
    assert options.sampling("generate").temperature == 0.8
    assert options.sampling("reason", samples=8).temperature == 0.7
    assert options.sampling("reason", samples=1).temperature == 0.0  # one sample: its best answer
    assert GenerationOptions(temperature=0.3).sampling("reason", samples=8).temperature == 0.3
    # reasoning samples keep the whole nucleus (min-p 0); every other mode, and one reasoning
    # answer, gets min-p 0.05; a min-p that is given always wins
    assert options.sampling("reason", samples=8).min_p == 0.0
    assert options.sampling("reason", samples=1).min_p == 0.05
    assert [options.sampling(m).min_p for m in ("generate", "chat", "batch")] == [0.05] * 3
    assert GenerationOptions(min_p=0.1).sampling("reason", samples=8).min_p == 0.1
    assert GenerationOptions().merged(min_p=0.0).sampling("generate").min_p == 0.0
    # the sampler defaults are SamplingParams', read from there
    assert options.sampling() == SamplingParams(temperature=0.8)


def test_generation_options_merge_validate_and_refuse_unknown_names():
    from hearth.runtime.options import GenerationOptions

    options = GenerationOptions(stop="END", seed=4)
    assert options.stop == ("END",)
    assert options.merged(seed=None, top_k=5) == GenerationOptions(stop=("END",), seed=4, top_k=5)
    with pytest.raises(TypeError, match="unknown generation option"):
        options.merged(temprature=1)
    with pytest.raises(UsageError, match="max_tokens"):
        GenerationOptions(max_tokens=0)
    with pytest.raises(UsageError, match="not both"):
        GenerationOptions(grammar="root ::= \"a\"", json_schema={"type": "string"})
    with pytest.raises(UsageError, match="top-p"):
        GenerationOptions(top_p=0.0).sampling()


def test_a_json_schema_becomes_its_grammar():
    from hearth.runtime.options import GenerationOptions

    grammar = GenerationOptions(json_schema={"type": "object", "properties": {"a": {"type": "integer"}}}).grammar_text()
    assert grammar and "root" in grammar
    with pytest.raises(UsageError, match="invalid JSON schema"):
        GenerationOptions(json_schema="{not json").grammar_text()
