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


def speculation_for(loaded, options: GenerationOptions, tokens_needed: int, draft=None):
    """The `speculative.Speculation` the options ask for (None: plain decode). `draft` is the
    draft model, loaded (`LoadedModel`), when the options name one."""
    from .speculative import Speculation

    if options.draft:
        if draft is None:
            raise ValueError("options.draft is set: pass the loaded draft model")
        draft.ensure_context(tokens_needed)
        curve, draft_curve = loaded.cost_curve(), draft.cost_curve()
        return Speculation("draft", curve, draft.engine, draft_cost=draft_curve.seconds[0] / curve.seconds[0],
                           exact=options.exact_drafts)
    if options.lookup:
        return Speculation("lookup", loaded.cost_curve(), exact=options.exact_drafts)
    return None


def _request(loaded, tokens: list[int], options: GenerationOptions, draft=None) -> GenRequest:
    max_tokens = options.max_tokens_for("generate")
    if options.speculative is None:  # (speculation measures its cost curve in the planned context)
        loaded.fit_context(len(tokens) + max_tokens)
    loaded.ensure_context(len(tokens) + max_tokens)  # grows a planned context, or refuses in one line
    return GenRequest(tokens, options.sampling("generate"), max_tokens, options.stop,
                      speculation=speculation_for(loaded, options, len(tokens) + max_tokens, draft))


def generate_once(loaded, tokens: list[int], options: GenerationOptions,
                  on_text: Callable[[str], None] | None = None, draft=None) -> tuple[Sample, GenStats]:
    """Generate one answer; `on_text` receives each new piece of visible text."""
    scheduler = Scheduler(loaded.engine)
    sample = scheduler.run([_request(loaded, tokens, options, draft)], _TextHooks(on_text))[0][0]
    return sample, scheduler.stats


def stream_once(loaded, tokens: list[int], options: GenerationOptions, draft=None) -> Iterator[str]:
    """The pieces of one answer as they come; closing the iterator stops the generation."""
    pieces: list[str] = []
    request = _request(loaded, tokens, options, draft)
    for _ in Scheduler(loaded.engine).steps([request], _TextHooks(pieces.append)):
        if pieces:
            yield from pieces
            pieces.clear()
    yield from pieces


def speculative_timings(sample: Sample) -> dict | None:
    """What a speculating answer reports: drafted, accepted, draft lengths, the cost curve."""
    if sample.spec is None:
        return None
    return {**sample.spec.stats.to_dict(), "cost_curve": sample.spec.speculation.curve.to_dict()}
