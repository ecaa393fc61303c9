"""One answer to one prompt, whole or streamed: what `hearth run` and `Model.generate` do."""

from __future__ import annotations

from typing import Callable, Iterator

from .options import GenerationOptions
from .scheduler import GenRequest, GenStats, Hooks, Sample, Scheduler


class _TextHooks(Hooks):
    def __init__(self, on_text: Callable[[str], None] | None):
        self.on_text_cb = on_text

    def on_text(self, sample, delta: str) -> None:
        if self.on_text_cb is not None:
            self.on_text_cb(delta)


def _request(loaded, tokens: list[int], options: GenerationOptions) -> GenRequest:
    max_tokens = options.max_tokens_for("generate")
    loaded.ensure_context(len(tokens) + max_tokens)  # grows a planned context, or refuses in one line
    return GenRequest(tokens, options.sampling("generate"), max_tokens, options.stop)


def generate_once(loaded, tokens: list[int], options: GenerationOptions,
                  on_text: Callable[[str], None] | None = None) -> tuple[Sample, GenStats]:
    """Generate one answer; `on_text` receives each new piece of visible text."""
    scheduler = Scheduler(loaded.engine)
    sample = scheduler.run([_request(loaded, tokens, options)], _TextHooks(on_text))[0][0]
    return sample, scheduler.stats


def stream_once(loaded, tokens: list[int], options: GenerationOptions) -> Iterator[str]:
    """The pieces of one answer as they come; closing the iterator stops the generation."""
    pieces: list[str] = []
    request = _request(loaded, tokens, options)
    for _ in Scheduler(loaded.engine).steps([request], _TextHooks(pieces.append)):
        if pieces:
            yield from pieces
            pieces.clear()
    yield from pieces
