"""The OpenAI wire format: request models with their validation, and the response bodies.

Requests are pydantic models in strict mode (a string is not a number) that forbid unknown
fields. A field hearth does not support (`tools`, `logprobs`, ...) is refused with a 400 naming
it unless it holds its neutral value (null, false, 0, an empty list...), which changes nothing;
it is never silently ignored. `vote` (reasoning mode) and `speculative` (prompt-lookup drafts)
are hearth's extensions; `prediction` (OpenAI's Predicted Outputs) feeds the drafts. Every error is a
`WireError`, rendered as OpenAI's `{"error": {"message", "type", "param", "code"}}`.

Pure: no model and no HTTP here; `serve/app.py` does the routes.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

MAX_STOP = 16  # stop strings per request
MAX_PROMPTS = 64  # prompts in one /v1/completions request

# Fields of OpenAI's API that hearth does not implement, with the values that change nothing.
NEUTRAL: dict[str, tuple] = {
    "logprobs": (None, False, 0), "top_logprobs": (None, 0), "tools": (None, []), "tool_choice": (None, "none"),
    "functions": (None, []), "function_call": (None, "none"), "parallel_tool_calls": (None, True, False),
    "logit_bias": (None, {}), "presence_penalty": (None, 0), "frequency_penalty": (None, 0), "best_of": (None, 1),
    "echo": (None, False), "suffix": (None, ""), "modalities": (None, ["text"]), "audio": (None,),
    "store": (None, False), "metadata": (None, {}), "service_tier": (None, "auto", "default"),
    "reasoning_effort": (None,), "web_search_options": (None,), "verbosity": (None,),
}


class WireError(Exception):
    """An OpenAI-style error: HTTP status, message, type, the offending param, a code."""

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None,
                 kind: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.kind = kind or ("invalid_request_error" if status < 500 else "server_error")
        self.headers = headers or {}

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}


# -- requests -------------------------------------------------------------------------------------
class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class StreamOptions(_Strict):
    include_usage: bool = False
    continuous_usage_stats: Literal[False] = False


class JsonSchemaFormat(_Strict):
    name: str = "output"
    schema_: dict | None = Field(None, alias="schema")
    strict: bool | None = None
    description: str | None = None


class ResponseFormat(_Strict):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None


class Prediction(_Strict):
    """OpenAI's Predicted Outputs: text the answer is expected to repeat (a file being edited).
    hearth drafts from it (prompt lookup) and checks the drafts as speculative decoding does."""

    type: Literal["content"]
    content: Any

    @field_validator("content")
    @classmethod
    def _content(cls, value: Any) -> str:
        return message_text(value)


class VoteOptions(_Strict):
    """hearth's extension: reasoning mode over the request's n samples."""

    answer: str = "auto"  # auto | number | choice | boxed | line | regex:PATTERN
    vote: Literal["weighted", "majority"] = "weighted"
    adaptive: bool = True


class _Generation(_Strict):
    model: str
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    seed: int | None = None
    stop: Any = None
    n: int = Field(1, ge=1, le=128)
    stream: bool = False
    stream_options: StreamOptions | None = None
    response_format: ResponseFormat | None = None
    vote: VoteOptions | None = None
    prediction: Prediction | None = None
    speculative: Literal["lookup", "off"] | None = None  # hearth's extension: prompt-lookup drafts
    user: str | None = None  # an end-user id for the operator's logs: nothing to generate with
    top_k: int | None = Field(None, ge=0)  # hearth (and llama.cpp server) extensions
    min_p: float | None = Field(None, ge=0, lt=1)
    repeat_penalty: float | None = Field(None, gt=0, le=5)
    grammar: str | None = None  # GBNF, as llama.cpp's server takes it

    @field_validator("stop")
    @classmethod
    def _stop(cls, value: Any) -> tuple[str, ...]:
        if value is None:
            return ()
        stops = [value] if isinstance(value, str) else value
        if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops):
            raise ValueError("must be a non-empty string or a list of non-empty strings")
        if len(stops) > MAX_STOP:
            raise ValueError(f"at most {MAX_STOP} stop strings")
        return tuple(stops)


class ChatMessage(_Strict):
    role: Literal["system", "developer", "user", "assistant"]
    content: Any = None
    name: str | None = None

    @field_validator("content")
    @classmethod
    def _content(cls, value: Any) -> str:
        return message_text(value)


class ChatRequest(_Generation):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)


class CompletionRequest(_Generation):
    prompt: Any

    @field_validator("prompt")
    @classmethod
    def _prompt(cls, value: Any) -> list[str]:
        prompts = [value] if isinstance(value, str) else value
        if not isinstance(prompts, list) or not prompts or not all(isinstance(p, str) for p in prompts):
            raise ValueError("must be a string or a list of strings (token-id prompts are not supported)")
        if len(prompts) > MAX_PROMPTS:
            raise ValueError(f"at most {MAX_PROMPTS} prompts in one request")
        return prompts


def message_text(content: Any) -> str:
    """A message's content as text: a string, or a list of text parts (other parts refused)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for part in content:
            if not isinstance(part, dict) or not isinstance(part.get("type"), str):
                raise ValueError("a content part must be an object with a type")
            if part["type"] != "text":
                raise ValueError(f"{part['type']} content is not supported (text only)")
            if not isinstance(part.get("text"), str) or set(part) - {"type", "text"}:
                raise ValueError("a text part is {\"type\": \"text\", \"text\": \"...\"}")
            texts.append(part["text"])
        return "".join(texts)
    raise ValueError("must be a string or a list of text parts")


@dataclass
class Parsed:
    """A validated request, in hearth's terms."""

    kind: Literal["chat", "completion"]
    model: str
    prompts: list  # chat: one list of messages; completion: the prompt strings
    overrides: dict  # GenerationOptions fields
    n: int
    vote: VoteOptions | None
    stream: bool
    include_usage: bool
    speculative: str | None = None  # "lookup" | "off" | None (the server's default)
    prediction: str | None = None


def parse_body(raw: bytes) -> dict:
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise WireError(400, f"the request body is not valid JSON: {exc}", code="invalid_json") from None
    if not isinstance(data, dict):
        raise WireError(400, "the request body must be a JSON object", code="invalid_json")
    return data


def parse_request(data: dict, kind: Literal["chat", "completion"]) -> Parsed:
    """Validate a decoded body; WireError(400) naming the first bad field."""
    _refuse_unsupported(data, kind)
    model_class = ChatRequest if kind == "chat" else CompletionRequest
    try:
        req = model_class.model_validate(data)
    except ValidationError as exc:
        raise _wire_error(exc) from None
    if req.stream_options is not None and not req.stream:
        raise WireError(400, "stream_options is only allowed with stream: true", param="stream_options")
    if req.vote is not None and kind == "completion" and len(req.prompt) > 1:
        raise WireError(400, "vote takes one prompt", param="vote")
    prediction = req.prediction.content if req.prediction is not None else None
    for name, asked in (("prediction", prediction is not None), ("speculative", req.speculative == "lookup")):
        if asked and (req.n > 1 or req.vote is not None):
            raise WireError(400, f"{name} drafts for one answer at a time: it needs n = 1 and no vote", param=name)
    if prediction is not None and req.speculative == "off":
        raise WireError(400, "a prediction is used through lookup drafts: it cannot go with speculative off",
                        param="prediction")
    max_tokens = req.max_tokens
    if kind == "chat" and req.max_completion_tokens is not None:
        if max_tokens is not None and max_tokens != req.max_completion_tokens:
            raise WireError(400, "max_tokens and max_completion_tokens differ: give one", param="max_completion_tokens")
        max_tokens = req.max_completion_tokens
    overrides = {"max_tokens": max_tokens, "temperature": req.temperature, "top_p": req.top_p, "seed": req.seed,
                 "stop": req.stop or None, "top_k": req.top_k, "min_p": req.min_p,
                 "repeat_penalty": req.repeat_penalty, "json_schema": _json_schema(req.response_format),
                 "grammar": req.grammar}
    if overrides["grammar"] and overrides["json_schema"] is not None:
        raise WireError(400, "give a grammar or a JSON response_format, not both", param="grammar")
    if kind == "chat":
        prompts = [[{"role": "system" if m.role == "developer" else m.role, "content": m.content} for m in req.messages]]
    else:
        prompts = req.prompt
    include_usage = bool(req.stream_options and req.stream_options.include_usage)
    return Parsed(kind, req.model, prompts, overrides, req.n, req.vote, req.stream, include_usage,
                  req.speculative, prediction)


def _refuse_unsupported(data: dict, kind: str) -> None:
    for name, neutral in NEUTRAL.items():
        if name in data and not any(_same(data[name], value) for value in neutral):
            raise WireError(400, f"{name} is not supported by hearth serve (only its neutral value, or leaving it out)",
                            param=name, code="unsupported_parameter")
    if kind == "completion" and "messages" in data:
        raise WireError(400, "messages belong to /v1/chat/completions; /v1/completions takes prompt", param="messages")
    if kind == "chat" and "prompt" in data:
        raise WireError(400, "prompt belongs to /v1/completions; /v1/chat/completions takes messages", param="prompt")
    for name in NEUTRAL:
        data.pop(name, None)  # neutral: nothing to do with it


def _same(given: Any, neutral: Any) -> bool:
    if given is None or neutral is None or isinstance(given, bool) or isinstance(neutral, bool):
        return given is neutral
    if isinstance(given, (int, float)) and isinstance(neutral, (int, float)):
        return given == neutral  # 0 and 0.0 alike
    return type(given) is type(neutral) and given == neutral


def _json_schema(response_format: ResponseFormat | None) -> dict | None:
    if response_format is None or response_format.type == "text":
        return None
    if response_format.type == "json_object":
        return {"type": "object"}
    if response_format.json_schema is None or response_format.json_schema.schema_ is None:
        raise WireError(400, "response_format json_schema needs json_schema.schema", param="response_format")
    return response_format.json_schema.schema_


def _wire_error(exc: ValidationError) -> WireError:
    error = exc.errors()[0]
    param = ".".join(str(part) for part in error["loc"])
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] == "missing":
        text = f"{param} is required"
    elif error["type"] == "extra_forbidden":
        text = f"unknown field {param}"
    else:
        text = f"{param}: {message[:1].lower()}{message[1:]}"
    return WireError(400, text, param=param, code="invalid_value" if error["type"] != "missing" else "missing")


# -- responses ------------------------------------------------------------------------------------
def finish_reason(reason: str) -> str:
    """hearth's reasons to OpenAI's: a sample cut at max_tokens is "length", any other end "stop"
    (an end-of-text token, a stop string, a complete answer line, a vote that was settled)."""
    return "length" if reason == "length" else "stop"


def new_id(kind: str) -> str:
    return ("chatcmpl-" if kind == "chat" else "cmpl-") + uuid.uuid4().hex[:24]


def usage(prompt_tokens: int, completion_tokens: int, cached_tokens: int,
          drafts: tuple[int, int] | None = None) -> dict:
    """OpenAI's usage object; `drafts` = (accepted, rejected) drafted tokens of a speculating
    request, reported as OpenAI reports a prediction's tokens."""
    body = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
            "prompt_tokens_details": {"cached_tokens": cached_tokens}}
    if drafts is not None:
        body["completion_tokens_details"] = {"accepted_prediction_tokens": drafts[0],
                                             "rejected_prediction_tokens": drafts[1]}
    return body


def choice(kind: str, index: int, text: str, reason: str | None) -> dict:
    """One choice of a whole response."""
    if kind == "chat":
        return {"index": index, "message": {"role": "assistant", "content": text}, "logprobs": None,
                "finish_reason": reason}
    return {"index": index, "text": text, "logprobs": None, "finish_reason": reason}


def response(kind: str, response_id: str, created: int, model: str, choices: list[dict], usage_body: dict,
             vote: dict | None = None) -> dict:
    body = {"id": response_id, "object": "chat.completion" if kind == "chat" else "text_completion",
            "created": created, "model": model, "system_fingerprint": None, "choices": choices, "usage": usage_body}
    if vote is not None:
        body["vote"] = vote
    return body


def chunk(kind: str, response_id: str, created: int, model: str, choices: list[dict], usage_body: dict | None = None,
          with_usage: bool = False, vote: dict | None = None) -> dict:
    """One streamed chunk; with `stream_options.include_usage` every chunk has a usage key (null
    but in the last one, whose choices are empty)."""
    body = {"id": response_id, "object": "chat.completion.chunk" if kind == "chat" else "text_completion",
            "created": created, "model": model, "system_fingerprint": None, "choices": choices}
    if with_usage:
        body["usage"] = usage_body
    if vote is not None:
        body["vote"] = vote
    return body


def delta_choice(kind: str, index: int, *, role: bool = False, text: str | None = None,
                 reason: str | None = None) -> dict:
    if kind == "chat":
        delta: dict = {}
        if role:
            delta["role"] = "assistant"
        if text is not None:
            delta["content"] = text
        return {"index": index, "delta": delta, "logprobs": None, "finish_reason": reason}
    return {"index": index, "text": text or "", "logprobs": None, "finish_reason": reason}


def vote_body(reasoning, answers: list[str | None]) -> dict:
    """The `vote` object of a response: the voted answer, the votes per answer, how many samples
    were drawn, the tokens they took, and each choice's extracted answer (choices[0] won)."""
    return {"answer": reasoning.answer, "votes": reasoning.votes, "samples": len(reasoning.samples),
            "tokens": reasoning.tokens, "method": reasoning.vote.method, "stop_reason": reasoning.stop_reason,
            "answers": answers}


def sse(data: dict | str) -> bytes:
    """One server-sent event."""
    text = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return f"data: {text}\n\n".encode()


def now() -> int:
    return int(time.time())
