"""Reasoning mode for `hearth run --samples K` (and `/think K` in chat)."""

from __future__ import annotations

from dataclasses import replace

from . import _output as out


def run_reasoning(text, *, model, system, max_tokens, temp, top_k, top_p, min_p, repeat_penalty, seed, stop,
                  ctx, threads, gpu_layers, samples, vote, answer, adaptive, show_reasoning, json_out, verbose):
    from ..runtime.answers import parse_answer_mode
    from ..runtime.generate import Generator
    from ..runtime.prompts import reasoning_prompt
    from ..runtime.reasoning import ReasoningConfig, parallel_for, reason
    from ..runtime.session import PlanRequest, load_model
    from .run import sampling_from_flags

    parse_answer_mode(answer)  # a bad --answer fails before the model loads
    config = ReasoningConfig(k=samples, vote=vote, answer=answer, adaptive=adaptive)
    params = sampling_from_flags(temp, top_k, top_p, min_p, repeat_penalty, seed, default_temp=0.7)
    question = reasoning_prompt(text, answer) if answer == "number" else text
    out.detail(f"reasoning prompt:\n{question}")
    loaded = load_model(model, PlanRequest(ctx=ctx, threads=threads, gpu_layers=gpu_layers, n_seq=config.sequences_needed(),
                                           max_tokens=max_tokens * samples), verbose=verbose >= 2)
    try:
        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": question}]
        tokens = loaded.prompt_tokens(messages)
        needed = len(tokens) + samples * max_tokens
        config = replace(config, parallel=parallel_for(samples, loaded.plan.n_gpu_layers > 0))
        if config.sequences_needed() > loaded.engine.config.n_seq_max:  # on a GPU: all K at once
            loaded.resize(config.sequences_needed(), max(needed, loaded.engine.n_ctx))
        loaded.ensure_context(needed)
        with out.live_text(enabled=not json_out) as live:
            view = _LiveView(samples, live)
            result = reason(Generator(loaded.engine), tokens, params, max_tokens, config, tuple(stop or ()),
                            on_update=view.update)
        _report(result, loaded.name, show_reasoning, json_out)
    finally:
        loaded.close()


class _LiveView:
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
        out.emit_json(reasoning_record(result, model_name))
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


def reasoning_record(result, model_name: str) -> dict:
    return {
        "answer": result.answer,
        "model": model_name,
        "votes": {a: {"count": n, "weight": round(result.vote.weights.get(a, 0.0), 4)} for a, n in result.vote.counts.items()},
        "samples": [
            {"text": s.text, "answer": s.answer, "tokens": s.tokens, "mean_logprob": s.mean_logprob,
             "weight": round(s.weight, 4), "stopped_early": s.stopped_early, "cut": s.cut, "finish_reason": reason}
            for s, reason in zip(result.samples, result.finish_reasons)
        ],
        "tokens_total": result.tokens_total,
        "tokens_saved_est": result.tokens_saved_est,
        "stopped_early": result.stopped_early,
        "stop_reason": result.stop_reason,
        "timings": {"wall_s": round(result.wall_s, 3), **{k: result.stats[k] for k in ("prompt_tok_s", "decode_tok_s", "decode_calls", "max_rows_per_call", "prompt_evals")}},
    }
