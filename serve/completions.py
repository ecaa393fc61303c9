"""Serving one completion request: prepare its jobs, queue them, answer whole or as a stream.

The engine thread (runtime/service.py) hands each job's events over with
`loop.call_soon_threadsafe`; here they land in one asyncio queue per HTTP request and become
one JSON body or server-sent events. A client that goes away (a closed stream, or a dropped
connection while it waits for a whole answer) cancels its jobs: their sequences are freed at
the next decode call.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any, AsyncIterator

from ..errors import BusyError, ContextOverflowError, HearthError, InputFormatError, UsageError
from . import wire

TERMINAL = ("done", "error", "cancelled")


@dataclass
class Exchange:
    """One HTTP request's jobs and the queue their events arrive on."""

    parsed: wire.Parsed
    model_id: str
    jobs: list = field(default_factory=list)
    queue: asyncio.Queue = field(default_factory=asyncio.Queue)
    response_id: str = ""
    created: int = 0
    started: float = field(default_factory=time.perf_counter)

    def __post_init__(self) -> None:
        self.response_id = wire.new_id(self.parsed.kind)
        self.created = wire.now()

    def index(self, tag: int, choice_index: int) -> int:
        """The response's choice index: prompts in order, each with its n choices."""
        return tag * self.parsed.n + choice_index


def error_for(exc: HearthError, param: str | None = None) -> wire.WireError:
    """A library error as the HTTP error a client should see."""
    if isinstance(exc, BusyError):
        return wire.WireError(503, exc.message, code="server_busy", headers={"Retry-After": str(exc.retry_after)})
    if isinstance(exc, ContextOverflowError):
        return wire.WireError(400, _with_hint(exc), param=param or "messages", code="context_length_exceeded")
    if isinstance(exc, (UsageError, InputFormatError)):
        return wire.WireError(400, _with_hint(exc), param=param, code="invalid_value")
    return wire.WireError(500, exc.message, code="generation_failed")


def _with_hint(exc: HearthError) -> str:
    return f"{exc.message} ({exc.hint})" if exc.hint else exc.message


def prepare(service, parsed: wire.Parsed) -> list:
    """The service's jobs for a request (run in a worker thread: templates and tokenizing)."""
    from ..runtime.service import VoteSpec

    param = "messages" if parsed.kind == "chat" else "prompt"
    try:
        options = service.options.merged(**parsed.overrides)
    except (HearthError, TypeError) as exc:
        raise error_for(exc if isinstance(exc, HearthError) else UsageError(str(exc))) from None
    vote = VoteSpec(parsed.vote.answer, parsed.vote.vote, parsed.vote.adaptive) if parsed.vote else None
    jobs = []
    for prompt in parsed.prompts:
        try:
            jobs.append(service.prepare(prompt, template=parsed.kind == "chat", options=options, n=parsed.n, vote=vote,
                                        speculative=parsed.speculative, prediction=parsed.prediction))
        except HearthError as exc:
            where = "response_format" if "schema" in exc.message or "grammar" in exc.message else param
            raise error_for(exc, where if isinstance(exc, UsageError) else param) from None
    return jobs


def submit(service, exchange: Exchange) -> None:
    """Queue every job (all or none); a full queue is a 503 with Retry-After."""
    loop = asyncio.get_running_loop()
    done = []
    try:
        for tag, job in enumerate(exchange.jobs):
            service.submit(job, _callback(loop, exchange.queue, tag), stream=exchange.parsed.stream)
            done.append(job)
    except BusyError as exc:
        for job in done:
            service.cancel(job)
        raise error_for(exc) from None


def _callback(loop, queue: asyncio.Queue, tag: int):
    def deliver(events: list[tuple]) -> None:  # on the engine thread
        loop.call_soon_threadsafe(queue.put_nowait, (tag, events))

    return deliver


# -- a whole answer -------------------------------------------------------------------------------
async def whole(service, exchange: Exchange, disconnected) -> dict | None:
    """Wait for every job's end; None if the client went away first (its jobs are cancelled)."""
    outcomes: dict[int, tuple] = {}
    gone = asyncio.ensure_future(disconnected())
    try:
        while len(outcomes) < len(exchange.jobs):
            item = asyncio.ensure_future(exchange.queue.get())
            await asyncio.wait({item, gone}, return_when=asyncio.FIRST_COMPLETED)
            if not item.done():
                item.cancel()
                return None
            tag, events = item.result()
            outcomes.update((tag, e) for e in events if e[0] in TERMINAL)
    finally:
        gone.cancel()
        for job in exchange.jobs:
            service.cancel(job)  # a no-op for a job that is done
    failed = [e for _, e in sorted(outcomes.items()) if e[0] != "done"]
    if failed:
        raise _failure(failed[0])
    return _response(exchange, [outcomes[tag][1] for tag in range(len(exchange.jobs))])


def _failure(event: tuple) -> wire.WireError:
    if event[0] == "cancelled":
        return wire.WireError(499, "the request was cancelled", code="cancelled")
    return error_for(event[1])


def _response(exchange: Exchange, results: list) -> dict:
    kind, parsed = exchange.parsed.kind, exchange.parsed
    choices, vote = [], None
    for tag, result in enumerate(results):
        for c in result.choices:
            choices.append(wire.choice(kind, exchange.index(tag, c.index), c.text, wire.finish_reason(c.finish_reason)))
        if result.reasoning is not None:
            vote = wire.vote_body(result.reasoning, [c.answer for c in result.choices])
    body = wire.response(kind, exchange.response_id, exchange.created, exchange.model_id, choices,
                         _usage(results), vote)
    if parsed.vote is not None and vote is None:  # cannot happen: a vote request has one prompt
        raise wire.WireError(500, "the vote is missing")
    return body


def _usage(results: list) -> dict:
    drafted = [r.drafts for r in results if r.drafts is not None]
    drafts = (sum(a for a, _ in drafted), sum(b for _, b in drafted)) if drafted else None
    return wire.usage(sum(r.prompt_tokens for r in results), sum(r.completion_tokens for r in results),
                      sum(r.cached_tokens for r in results), drafts)


# -- a stream -------------------------------------------------------------------------------------
async def stream(service, exchange: Exchange) -> AsyncIterator[bytes]:
    """Server-sent events: a first chunk per choice (chat: the assistant role), text as it comes,
    a finish chunk per choice, the usage chunk if asked, `data: [DONE]`. An error after the
    stream began is one `data: {"error": ...}` event, and the stream ends without [DONE]."""
    parsed = exchange.parsed
    results: dict[int, Any] = {}
    try:
        if parsed.kind == "chat":
            for tag in range(len(exchange.jobs)):
                for c in range(1 if parsed.vote else parsed.n):
                    yield _chunk(exchange, [wire.delta_choice("chat", exchange.index(tag, c), role=True, text="")])
        while len(results) < len(exchange.jobs):
            batch = [await exchange.queue.get()]
            while not exchange.queue.empty():  # everything that is here: one write
                batch.append(exchange.queue.get_nowait())
            out, failure = _stream_events(exchange, batch, results)
            if out:
                yield b"".join(out)
            if failure is not None:
                yield wire.sse(failure.body())
                return
        if parsed.include_usage:
            yield wire.sse(wire.chunk(parsed.kind, exchange.response_id, exchange.created, exchange.model_id, [],
                                      _usage([results[t] for t in sorted(results)]), with_usage=True))
        yield wire.sse("[DONE]")
    finally:
        for job in exchange.jobs:
            service.cancel(job)  # the client left (or the stream ended): free the sequences


def _stream_events(exchange: Exchange, batch: list, results: dict) -> tuple[list[bytes], wire.WireError | None]:
    """Chunks for a batch of (tag, events): consecutive text of one choice joined into one chunk."""
    kind = exchange.parsed.kind
    out: list[bytes] = []
    pending: dict[int, list[str]] = {}

    def flush(index: int) -> None:
        if pending.get(index):
            out.append(_chunk(exchange, [wire.delta_choice(kind, index, text="".join(pending.pop(index)))]))

    for tag, events in batch:
        for event in events:
            if event[0] == "text":
                pending.setdefault(exchange.index(tag, event[1]), []).append(event[2])
            elif event[0] == "finish":
                index = exchange.index(tag, event[1])
                flush(index)
                out.append(_chunk(exchange, [wire.delta_choice(kind, index, reason=wire.finish_reason(event[2]))]))
            elif event[0] == "done":
                results[tag] = event[1]
                if event[1].reasoning is not None:
                    out += _vote_chunks(exchange, tag, event[1])
            else:
                for index in list(pending):
                    flush(index)
                return out, _failure(event)
    for index in list(pending):
        flush(index)
    return out, None


def _vote_chunks(exchange: Exchange, tag: int, result) -> list[bytes]:
    """A vote streams only its winner, at the end: the text, then the finish chunk with `vote`."""
    kind, winner = exchange.parsed.kind, result.choices[0]
    index = exchange.index(tag, 0)
    vote = wire.vote_body(result.reasoning, [c.answer for c in result.choices])
    return [_chunk(exchange, [wire.delta_choice(kind, index, text=winner.text)]),
            _chunk(exchange, [wire.delta_choice(kind, index, reason=wire.finish_reason(winner.finish_reason))], vote)]


def _chunk(exchange: Exchange, choices: list[dict], vote: dict | None = None) -> bytes:
    parsed = exchange.parsed
    return wire.sse(wire.chunk(parsed.kind, exchange.response_id, exchange.created, exchange.model_id, choices,
                               None, with_usage=parsed.include_usage, vote=vote))


def summary(exchange: Exchange, body_or_results) -> str:
    """A -v log line for a finished request (its prompt's beginning included: -v only)."""
    parsed = exchange.parsed
    prompt = parsed.prompts[0][-1]["content"] if parsed.kind == "chat" else parsed.prompts[0]
    preview = prompt[:60].replace("\n", " ")
    seconds = time.perf_counter() - exchange.started
    return (f"{exchange.response_id} {parsed.kind} n={parsed.n}{' vote' if parsed.vote else ''}"
            f"{' stream' if parsed.stream else ''} {seconds:.2f}s prompt={preview!r}")
