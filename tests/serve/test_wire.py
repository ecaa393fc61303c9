"""The OpenAI wire format: what a request may say, and how each mistake is reported (no model)."""

from __future__ import annotations

import json

import pytest

from hearth.serve import wire

CHAT = {"model": "m", "messages": [{"role": "user", "content": "Hi"}]}


def chat(**fields) -> dict:
    return {**json.loads(json.dumps(CHAT)), **fields}


def refused(data: dict, kind: str = "chat") -> wire.WireError:
    with pytest.raises(wire.WireError) as caught:
        wire.parse_request(data, kind)
    return caught.value


def test_a_chat_request_in_hearths_terms():
    parsed = wire.parse_request(chat(max_tokens=5, temperature=0, seed=3, stop="END", n=2, stream=True,
                                     stream_options={"include_usage": True},
                                     messages=[{"role": "developer", "content": "Be brief."},
                                               {"role": "user", "content": [{"type": "text", "text": "Hi "},
                                                                            {"type": "text", "text": "there"}]}]),
                                "chat")
    assert parsed.prompts == [[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi there"}]]
    assert parsed.overrides["max_tokens"] == 5 and parsed.overrides["stop"] == ("END",)
    assert parsed.overrides["temperature"] == 0 and parsed.overrides["seed"] == 3
    assert (parsed.n, parsed.stream, parsed.include_usage, parsed.vote) == (2, True, True, None)


def test_max_completion_tokens_and_formats():
    assert wire.parse_request(chat(max_completion_tokens=7), "chat").overrides["max_tokens"] == 7
    assert refused(chat(max_tokens=5, max_completion_tokens=7)).param == "max_completion_tokens"
    json_object = wire.parse_request(chat(response_format={"type": "json_object"}), "chat")
    assert json_object.overrides["json_schema"] == {"type": "object"}
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    with_schema = wire.parse_request(chat(response_format={"type": "json_schema",
                                                           "json_schema": {"name": "x", "schema": schema}}), "chat")
    assert with_schema.overrides["json_schema"] == schema
    assert wire.parse_request(chat(response_format={"type": "text"}), "chat").overrides["json_schema"] is None


def test_completions_take_one_prompt_or_several():
    assert wire.parse_request({"model": "m", "prompt": "Once"}, "completion").prompts == ["Once"]
    assert wire.parse_request({"model": "m", "prompt": ["a", "b"]}, "completion").prompts == ["a", "b"]
    assert "token-id" in refused({"model": "m", "prompt": [1, 2]}, "completion").message
    assert refused({"model": "m", "prompt": ["a", "b"], "n": 2, "vote": {}}, "completion").param == "vote"


def test_the_vote_extension():
    parsed = wire.parse_request(chat(n=5, vote={"answer": "number", "vote": "majority", "adaptive": False}), "chat")
    assert (parsed.vote.answer, parsed.vote.vote, parsed.vote.adaptive) == ("number", "majority", False)
    assert refused(chat(vote={"vote": "loudest"})).param == "vote.vote"
    assert refused(chat(vote={"answers": "number"})).message == "unknown field vote.answers"


@pytest.mark.parametrize("fields, param, words", [
    ({"messages": None}, "messages", "messages: input should be a valid list"),
    ({"messages": []}, "messages", "at least 1 item"),
    ({"model": None}, "model", "model: input should be a valid string"),
    ({"max_tokens": "5"}, "max_tokens", "valid integer"),
    ({"max_tokens": 0}, "max_tokens", "greater than or equal to 1"),
    ({"max_tokens": True}, "max_tokens", "valid integer"),
    ({"temperature": 3}, "temperature", "less than or equal to 2"),
    ({"temperature": "hot"}, "temperature", "valid number"),
    ({"top_p": 0}, "top_p", "greater than 0"),
    ({"n": 0}, "n", "greater than or equal to 1"),
    ({"n": 129}, "n", "less than or equal to 128"),
    ({"stop": 5}, "stop", "non-empty string"),
    ({"stop": [""]}, "stop", "non-empty string"),
    ({"stop": ["x"] * 17}, "stop", "at most 16"),
    ({"stream": "yes"}, "stream", "valid boolean"),
    ({"stream_options": {"include_usage": True}}, "stream_options", "only allowed with stream"),
    ({"temprature": 0.5}, "temprature", "unknown field temprature"),
    ({"messages": [{"role": "tool", "content": "x"}]}, "messages.0.role", "input should be"),
    ({"messages": [{"role": "user"}, {"content": "x"}]}, "messages.1.role", "messages.1.role is required"),
    ({"messages": [{"role": "user", "content": 5}]}, "messages.0.content", "string or a list of text parts"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
     "messages.0.content", "image_url content is not supported"),
    ({"messages": [{"role": "assistant", "content": None, "tool_calls": []}]}, "messages.0.tool_calls", "unknown field"),
    ({"response_format": {"type": "xml"}}, "response_format.type", "input should be"),
    ({"response_format": {"type": "json_schema"}}, "response_format", "needs json_schema.schema"),
    ({"prompt": "x"}, "prompt", "belongs to /v1/completions"),
])
def test_every_bad_field_is_a_400_that_names_it(fields, param, words):
    error = refused(chat(**fields))
    assert error.status == 400 and error.param == param
    assert words in error.message
    assert set(error.body()["error"]) == {"message", "type", "param", "code"}


def test_a_missing_field_is_named():
    error = refused({"messages": CHAT["messages"]})
    assert (error.param, error.message, error.code) == ("model", "model is required", "missing")
    assert refused({"model": "m"}, "completion").message == "prompt is required"


@pytest.mark.parametrize("name, value", [
    ("tools", [{"type": "function", "function": {"name": "f"}}]), ("tool_choice", "auto"), ("logprobs", True),
    ("top_logprobs", 2), ("logit_bias", {"50256": -100}), ("presence_penalty", 0.5), ("frequency_penalty", 1),
    ("functions", [{"name": "f"}]), ("best_of", 3), ("echo", True), ("suffix", "end"), ("modalities", ["audio"]),
    ("reasoning_effort", "low"),
])
def test_an_unsupported_field_is_refused_by_name(name, value):
    error = refused(chat(**{name: value}))
    assert error.param == name and error.code == "unsupported_parameter"
    assert error.message.startswith(f"{name} is not supported")


@pytest.mark.parametrize("name, value", [
    ("tools", []), ("tool_choice", "none"), ("logprobs", False), ("logprobs", None), ("presence_penalty", 0.0),
    ("frequency_penalty", 0), ("logit_bias", {}), ("parallel_tool_calls", True), ("user", "alice"),
])
def test_a_neutral_value_changes_nothing_and_passes(name, value):
    assert wire.parse_request(chat(**{name: value}), "chat").model == "m"


@pytest.mark.parametrize("raw, words", [
    (b"{", "not valid JSON"), (b"[1, 2]", "must be a JSON object"), (b"\xff\xfe", "not valid JSON"), (b"", "not valid JSON"),
])
def test_a_body_that_is_not_a_json_object(raw, words):
    with pytest.raises(wire.WireError) as caught:
        wire.parse_body(raw)
    assert caught.value.status == 400 and words in caught.value.message


def test_finish_reasons_map_to_openais():
    assert [wire.finish_reason(r) for r in ("stop", "length", "answer", "vote_settled")] == ["stop", "length", "stop", "stop"]


def test_usage_is_counted_as_openai_counts_it():
    assert wire.usage(10, 7, 4) == {"prompt_tokens": 10, "completion_tokens": 7, "total_tokens": 17,
                                    "prompt_tokens_details": {"cached_tokens": 4}}


def test_server_sent_events():
    assert wire.sse("[DONE]") == b"data: [DONE]\n\n"
    assert wire.sse({"a": "é"}) == 'data: {"a":"é"}\n\n'.encode()


def test_speculation_and_predicted_outputs():
    plain = wire.parse_request(chat(), "chat")
    assert (plain.speculative, plain.prediction) == (None, None)
    parsed = wire.parse_request(chat(speculative="lookup", prediction={"type": "content", "content": "def f(): pass"}),
                                "chat")
    assert (parsed.speculative, parsed.prediction) == ("lookup", "def f(): pass")
    parts = wire.parse_request(chat(prediction={"type": "content", "content": [{"type": "text", "text": "a"},
                                                                                 {"type": "text", "text": "b"}]}), "chat")
    assert parts.prediction == "ab" and parts.speculative is None
    assert wire.parse_request(chat(speculative="off"), "chat").speculative == "off"
    assert refused(chat(speculative="draft")).param == "speculative"
    assert refused(chat(prediction={"type": "image", "content": "x"})).param == "prediction.type"
    assert refused(chat(n=2, prediction={"type": "content", "content": "x"})).param == "prediction"
    assert refused(chat(n=2, speculative="lookup")).param == "speculative"
    assert refused(chat(n=3, vote={}, speculative="lookup")).param == "speculative"
    assert refused(chat(speculative="off", prediction={"type": "content", "content": "x"})).param == "prediction"
    assert wire.parse_request(chat(n=2, speculative="off"), "chat").n == 2  # off asks for nothing


def test_usage_reports_drafted_tokens_as_openai_reports_predictions():
    body = wire.usage(10, 20, 4, drafts=(12, 3))
    assert body["completion_tokens_details"] == {"accepted_prediction_tokens": 12, "rejected_prediction_tokens": 3}
    assert "completion_tokens_details" not in wire.usage(10, 20, 4)
