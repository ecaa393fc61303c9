"""`hearth serve` driven as clients drive it: the official `openai` client, and raw HTTP.

One server (SmolLM2, 16 slots) for the module; small max_tokens keep it fast.
"""

from __future__ import annotations

import json
import threading

import httpx
import openai
import pytest
from serve_process import ENDLESS, wait_for

MODEL = "SmolLM2-135M-Instruct.Q4_1"


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url, api_key="unused", max_retries=0, timeout=120)


def health(server) -> dict:
    return httpx.get(server.base + "/health", timeout=30).json()


def ask(client, content: str, **fields):
    return client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": content}], **fields)


def streamed(client, content: str, **fields) -> tuple[dict[int, str], dict[int, str], list]:
    """Text and finish reason per choice index, and every chunk, of a streamed answer."""
    texts: dict[int, str] = {}
    reasons: dict[int, str] = {}
    chunks = list(ask(client, content, stream=True, **fields))
    for chunk in chunks:
        for choice in chunk.choices:
            texts[choice.index] = texts.get(choice.index, "") + (choice.delta.content or "")
            if choice.finish_reason:
                reasons[choice.index] = choice.finish_reason
    return texts, reasons, chunks


def test_models_lists_the_one_model(client):
    assert [m.id for m in client.models.list()] == [MODEL]
    assert client.models.retrieve(MODEL).id == MODEL


def test_a_chat_completion_with_usage(client):
    out = ask(client, "Say hello.", max_tokens=12, temperature=0)
    choice = out.choices[0]
    assert out.object == "chat.completion" and out.model == MODEL and len(out.choices) == 1
    assert choice.message.role == "assistant" and choice.message.content
    assert choice.finish_reason in ("stop", "length")
    assert 0 < out.usage.completion_tokens <= 12 and out.usage.prompt_tokens > 5
    assert out.usage.total_tokens == out.usage.prompt_tokens + out.usage.completion_tokens
    if choice.finish_reason == "length":
        assert out.usage.completion_tokens == 12


def test_streamed_text_equals_the_whole_answer_at_temperature_zero(client):
    whole = ask(client, "Name three rivers.", max_tokens=24, temperature=0)
    again = ask(client, "Name three rivers.", max_tokens=24, temperature=0)
    texts, reasons, chunks = streamed(client, "Name three rivers.", max_tokens=24, temperature=0,
                                      stream_options={"include_usage": True})
    assert again.choices[0].message.content == whole.choices[0].message.content  # deterministic
    assert texts == {0: whole.choices[0].message.content}
    assert reasons == {0: whole.choices[0].finish_reason}
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    assert all(c.usage is None for c in chunks[:-1])


def test_text_completions_whole_and_streamed(client):
    whole = client.completions.create(model=MODEL, prompt="The capital of France is", max_tokens=10, temperature=0)
    pieces = client.completions.create(model=MODEL, prompt="The capital of France is", max_tokens=10, temperature=0,
                                       stream=True)
    assert whole.object == "text_completion" and whole.choices[0].text
    assert "".join(c.choices[0].text for c in pieces) == whole.choices[0].text
    several = client.completions.create(model=MODEL, prompt=["Once upon a time", "The capital of France is"],
                                        max_tokens=10, temperature=0)
    assert [c.index for c in several.choices] == [0, 1] and several.choices[1].text == whole.choices[0].text


def test_n_choices_share_one_prompt_evaluation(server, client):
    before = health(server)["prompt_tokens_evaluated"]
    out = ask(client, "Write one word about the sea.", n=3, max_tokens=8, temperature=1.0, seed=7)
    assert sorted(c.index for c in out.choices) == [0, 1, 2]
    assert health(server)["prompt_tokens_evaluated"] - before <= out.usage.prompt_tokens  # once, not 3 times
    assert out.usage.completion_tokens >= 3
    again = ask(client, "Write one word about the sea.", n=3, max_tokens=8, temperature=1.0, seed=7)
    assert [c.message.content for c in again.choices] == [c.message.content for c in out.choices]  # seeded
    texts, reasons, _ = streamed(client, "Write one word about the sea.", n=3, max_tokens=8, temperature=1.0, seed=7)
    assert texts == {c.index: c.message.content for c in out.choices}
    assert set(reasons) == {0, 1, 2}


def test_the_vote_extension_through_extra_body(client):
    out = ask(client, "What is 2+3?", n=4, max_tokens=48,
              extra_body={"vote": {"answer": "number", "vote": "majority", "adaptive": False}})
    vote = out.model_extra["vote"]
    assert vote["samples"] == 4 and len(out.choices) == 4 and len(vote["answers"]) == 4
    assert vote["tokens"] == out.usage.completion_tokens
    assert sum(vote["votes"].values()) == sum(a is not None for a in vote["answers"]) <= 4
    if vote["answer"] is not None:
        assert vote["answers"][0] == vote["answer"]  # choices[0] is a winning sample
        assert vote["votes"][vote["answer"]] == max(vote["votes"].values())
    chunks = list(ask(client, "What is 2+3?", n=4, max_tokens=48, stream=True,
                      extra_body={"vote": {"answer": "number", "adaptive": True}}))
    last = [c for c in chunks if c.choices and c.choices[0].finish_reason][-1]
    assert "vote" in last.model_extra and {c.index for chunk in chunks for c in chunk.choices} == {0}


def test_json_schema_response_format(client):
    schema = {"type": "object", "properties": {"color": {"enum": ["red", "green", "blue"]}}, "required": ["color"]}
    out = ask(client, "Pick a color.", max_tokens=40, temperature=0,
              response_format={"type": "json_schema", "json_schema": {"name": "pick", "schema": schema}})
    assert json.loads(out.choices[0].message.content)["color"] in ("red", "green", "blue")


def test_a_conversation_reuses_its_earlier_turns(client):
    """Each turn resends the whole conversation; the KV cache of the earlier turns is reused."""
    messages = [{"role": "system", "content": "You are terse."}]
    previous_prompt = 0
    for turn in range(10):
        messages.append({"role": "user", "content": f"Give me fact number {turn + 1} about owls."})
        out = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=16, temperature=0)
        if turn:
            assert out.usage.prompt_tokens_details.cached_tokens >= previous_prompt
        previous_prompt = out.usage.prompt_tokens
        messages.append({"role": "assistant", "content": out.choices[0].message.content})


@pytest.mark.slow
def test_32_concurrent_streaming_clients_decode_together(server, client):
    prompts = ["Name a fruit.", "Name a planet.", "Name a tool.", "Name an animal."]
    solo = {p: ask(client, p, max_tokens=12, temperature=0).choices[0].message.content for p in prompts}
    results: dict[int, tuple] = {}

    def one(i: int) -> None:
        prompt = prompts[i % 4]
        try:
            texts, reasons, chunks = streamed(client, prompt, max_tokens=12, temperature=0)
            results[i] = (prompt, texts.get(0), reasons.get(0))
        except Exception as exc:  # reported below, with the others
            results[i] = (prompt, exc, None)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(32)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(180)
    assert len(results) == 32
    assert all(text == solo[prompt] and reason for prompt, text, reason in results.values()), results
    status = health(server)
    assert status["max_batch_rows"] > 1 and status["running"] == 0 and status["queued"] == 0


def test_a_client_that_disconnects_mid_stream_frees_its_slot(server, client):
    before = health(server)["cancelled"]
    with httpx.stream("POST", server.url + "/chat/completions", timeout=60, json={
            "model": MODEL, "messages": [{"role": "user", "content": "Write."}], "max_tokens": 900,
            "stream": True, "grammar": ENDLESS}) as response:
        data = []
        for line in response.iter_lines():
            if line.startswith("data:"):
                data.append(line)
            if len(data) >= 4:
                break
    status = wait_for(lambda: (s := health(server))["running"] == 0 and s)
    assert status["cancelled"] == before + 1
    assert ask(client, "Say hi.", max_tokens=4).choices[0].message.content is not None  # still serving


# -- bad input over raw HTTP ----------------------------------------------------------------------
GOOD = {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}
LONG = " ".join(["word"] * 1500)


@pytest.mark.parametrize("path, body, status, words", [
    ("/chat/completions", b'{"model": ', 400, "not valid JSON"),
    ("/chat/completions", b'["a"]', 400, "JSON object"),
    ("/chat/completions", {"model": MODEL}, 400, "messages is required"),
    ("/chat/completions", {**GOOD, "max_tokens": "4"}, 400, "max_tokens: input should be a valid integer"),
    ("/chat/completions", {**GOOD, "messages": [{"role": "user", "content": {"text": "x"}}]}, 400, "messages.0.content"),
    ("/chat/completions", {**GOOD, "model": "gpt-4o"}, 404, "'gpt-4o' does not exist"),
    ("/chat/completions", {**GOOD, "tools": [{"type": "function", "function": {"name": "f"}}]}, 400,
     "tools is not supported"),
    ("/chat/completions", {**GOOD, "logprobs": True}, 400, "logprobs is not supported"),
    ("/chat/completions", {**GOOD, "messages": [{"role": "user", "content": LONG}]}, 400,
     "the context holds 1024 tokens per request"),
    ("/chat/completions", {**GOOD, "max_tokens": 1000}, 400, "over the context of 1024 tokens per request"),
    ("/chat/completions", {**GOOD, "grammar": "root ::= ("}, 400, "grammar"),
    ("/chat/completions", {**GOOD, "response_format": {"type": "json_schema", "json_schema": {"schema": {"type": 5}}}},
     400, "schema"),
    ("/chat/completions", {**GOOD, "vote": {"answer": "regex:("}, "n": 2}, 400, "regex"),
    ("/completions", {"model": MODEL, "prompt": [1, 2, 3]}, 400, "token-id prompts are not supported"),
    ("/completions", {"model": MODEL, "prompt": ""}, 400, "empty"),
    ("/nowhere", {}, 404, "Not Found"),
])
def test_every_bad_request_gets_an_openai_error(server, path, body, status, words):
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    response = httpx.post(server.url + path, content=content, headers={"content-type": "application/json"}, timeout=60)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and words in error["message"], error


def test_wrong_method_and_oversized_body(server):
    assert httpx.get(server.url + "/chat/completions", timeout=30).status_code == 405
    huge = json.dumps({**GOOD, "messages": [{"role": "user", "content": "x" * (5 * 1024 * 1024)}]})
    response = httpx.post(server.url + "/chat/completions", content=huge, timeout=60)
    assert response.status_code == 413 and "over" in response.json()["error"]["message"]


def test_bad_requests_never_hurt_the_server_and_log_no_prompt(server, client):
    secret = "zebra-marmalade-4711"
    ask(client, f"Repeat {secret}.", max_tokens=4)
    httpx.post(server.url + "/chat/completions", json={**GOOD, "messages": [{"role": "user", "content": secret}],
                                                       "max_tokens": -1}, timeout=30)
    assert health(server)["status"] == "ok"
    assert secret not in server.stderr and "Traceback" not in server.stderr


def test_predicted_outputs_and_lookup_per_request_keep_the_greedy_text(client):
    """OpenAI's `prediction` and hearth's `speculative` through the real client: the same greedy
    text as plain decode, and the drafted tokens reported as OpenAI reports a prediction's."""
    code = "def parse(path):\n    with open(path) as handle:\n        return handle.read().splitlines()\n"
    content = "Repeat this code exactly:\n\n" + code
    plain = ask(client, content, max_tokens=40, temperature=0)
    assert plain.usage.completion_tokens_details is None  # nothing drafted, nothing reported
    predicted = ask(client, content, max_tokens=40, temperature=0, prediction={"type": "content", "content": code})
    looked_up = ask(client, content, max_tokens=40, temperature=0, extra_body={"speculative": "lookup"})
    assert predicted.choices[0].message.content == plain.choices[0].message.content
    assert looked_up.choices[0].message.content == plain.choices[0].message.content
    details = predicted.usage.completion_tokens_details
    assert details.accepted_prediction_tokens >= 0 and details.rejected_prediction_tokens >= 0
    with pytest.raises(openai.BadRequestError) as refused:
        ask(client, content, max_tokens=8, n=2, prediction={"type": "content", "content": code})
    assert refused.value.body["param"] == "prediction"
