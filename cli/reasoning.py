"""Reasoning mode for `hearth run --samples K` / `--answer MODE` (and `/think K` in chat)."""

from __future__ import annotations

from . import _output as out


def run_reasoning(text, options, *, model, system, ctx, threads, gpu_layers, samples, vote, answer, adaptive,
                  show_reasoning, json_out, verbose):
    from ..runtime.answers import parse_answer_mode
    from .run import load_model

    parse_answer_mode(answer)  # a bad --answer fails before the model loads
    with load_model(model, ctx, threads, gpu_layers, verbose) as loaded:
        style = loaded.reasoning_style
        out.detail(f"reasoning prompt: {style.name} ({style.why})")
        with out.live_text(enabled=not json_out and samples > 1) as live:
            view = LiveView(samples, live)
            result = loaded.reason(text, samples, answer=answer, vote=vote, adaptive=adaptive, system=system,
                                   options=options, on_update=view.update)
        out.detail(f"{result.live_samples} of {samples} samples decoded at once"
                   + (" (adaptive: chosen on this machine's cost curve)" if adaptive and samples > 1 else ""))
        if result.sampling:
            out.detail("sampling: " + " · ".join(f"{name.replace('_', '-')} {value}" for name, value in result.sampling.items()))
        _report(result, loaded.name, show_reasoning, json_out)


class LiveView:
    """Per-sample token counts and answers, plus the running tally, redrawn on stderr."""

    def __init__(self, k: int, live):
        self.k, self.live = k, live
        self.rows: dict[int, str] = {}
        self.answers: dict[int, str | None] = {}

    def update(self, sample, answer) -> None:
        state = sample.finish_reason or "…"
        if sample.finish_reason:
            self.answers[sample.index] = answer
        shown = self.answers.get(sample.index)
        self.rows[sample.index] = f"  sample {sample.index + 1:>2}: {len(sample.tokens):>4} tok  {state:<14} {shown or ''}"
        tally: dict[str, int] = {}
        for value in self.answers.values():
            if value is not None:
                tally[value] = tally.get(value, 0) + 1
        votes = "  ".join(f"{a}×{n}" for a, n in sorted(tally.items(), key=lambda kv: -kv[1]))
        self.live.update("\n".join([*(self.rows[i] for i in sorted(self.rows)), f"  votes: {votes}"]))


def _report(result, model_name: str, show_reasoning: bool, json_out: bool) -> None:
    if json_out:
        out.emit_json(result.to_dict(model_name))
        return
    if show_reasoning and result.vote.winner_index is not None:
        out.write(result.samples[result.vote.winner_index].text.rstrip() + "\n\n")
    if result.answer is None:
        out.warn("no sample produced an extractable answer")
    else:
        out.write(result.answer + "\n")
    counts = ", ".join(f"{a}: {n}" for a, n in result.vote.counts.items())
    out.info(f"votes {counts or 'none'} · {len(result.samples)} samples · {result.tokens_total} tokens"
             f" (~{result.tokens_saved_est} saved) · {result.wall_s:.1f}s"
             + (f" · stopped early ({result.stop_reason})" if result.stopped_early else ""))
