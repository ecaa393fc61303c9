"""Reasoning mode: K samples of one question decoded together, answers extracted, voted.

The prompt is evaluated once; its KV cache is shared by the samples (one request with n=K in the
scheduler). With adaptive stopping the samples run `parallel` at a time; each finished sample
updates the vote and `decide_stop` may settle it, which ends the request (no more samples, the
live ones are cut). Per sample, a sequence stops as soon as its answer line is complete, and
DeepConf's online bar (set from the first finished samples) cuts sequences whose windowed token
confidence falls below it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

from .answers import answer_line_complete, final_answer
from .scheduler import GenRequest, Hooks, Sample, Scheduler
from .sampling import SamplingParams
from .stopping import (DEFAULT_CONFIDENCE_WINDOW, StopRule, WindowedConfidence, confidence_bar, decide_stop,
                       lowest_group_confidence, should_cut)
from .voting import SampleResult, VoteResult, vote

CONFIDENCE_TOP_K = 5  # candidates per token in DeepConf's token confidence


# Adaptive mode's defaults, chosen offline (scripts/study_stopping.py) on recorded K=16 samples of
# GSM8K train problems 0-99 (dev split) with Qwen2.5-Coder-1.5B, every policy replayed and paired
# with plain self-consistency (README: Reasoning mode): from the third answer on, three answers in
# a row that agree (ESC) or Adaptive-Consistency's Beta rule at 0.8 (3-0, 3-1, 4-1, 5-2 settle the
# vote), or a leader that cannot lose. Measured there (K=8, 2 live; samples 0-7 and again on
# samples 8-15 of each problem): 79.0% and 79.0% right, plain SC K=8 78.0% and 79.0%, with 63% and
# 66% of its tokens; the previous rule (Beta 0.95) the same accuracy with 69% and 71%. Rules that
# settle from the second answer spent 55% and were 1 to 3 problems lower; the give-up rule (stop once no
# answer could still pass the Beta rule) and DeepConf's online cut (its cut samples were right a
# third of the time) lost problems too, so both are off.
ADAPTIVE_STOP_RULE = StopRule(window=3, min_samples=3, threshold=0.8, give_up=False)

# How adaptive mode spends samples with L live at once (`study_stopping.py --walls`, dev split 0-99,
# K=8, the rule above, min-p 0): L -> its decode steps with 1, 2, ..., L samples live, each as a
# share of plain SC's tokens (so sum(n * steps[n - 1]) is the tokens' share: 0.64 at 1 to 4 live,
# 0.78 at 6, 0.92 at 8). Accuracy stayed within a problem of plain SC's from 1 to 7 live (2 lower
# at 8: noise). The steps are kept by live count, not as a mean, because a CPU's curve need not
# rise with the rows: with repacked weights on this project's Xeon 4 rows cost less than 3 (a gemm
# from 4 on), and a mean of 2.5 or 4.2 live priced by interpolation predicted 6 live 23% faster
# than 4, where real runs took the same wall (443.5 s and 445.8 s for 8 held-out problems, 2026-12-05)
# and the steps priced one by one say 3% (README: Reasoning mode).
ADAPTIVE_LIVE_PROFILE = {
    1: (0.6405,),
    2: (0.1363, 0.252),
    3: (0.1219, 0.1051, 0.1027),
    4: (0.0783, 0.0655, 0.0257, 0.0962),
    5: (0.0496, 0.0428, 0.0158, 0.0232, 0.0906),
    6: (0.0352, 0.0236, 0.0084, 0.0136, 0.0254, 0.0823),
    7: (0.0265, 0.0051, 0.0061, 0.008, 0.0144, 0.0215, 0.0795),
    8: (0.0028, 0.0033, 0.0036, 0.0052, 0.0079, 0.0119, 0.0231, 0.076),
}
# Live counts whose expected wall is within 10% of the fastest count as fast, and the fewest of them
# is taken: the tokens it saves are decode time other requests get on a shared engine.
NEAR_FASTEST = 1.10


@dataclass(frozen=True)
class ReasoningConfig:
    k: int = 8
    vote: str = "weighted"
    answer: str = "auto"
    adaptive: bool = True
    parallel: int | None = None  # live samples at once; None: K (fixed) or 2 (adaptive)
    window: int = DEFAULT_CONFIDENCE_WINDOW  # DeepConf sliding window (tokens)
    warmup: int = 2  # finished samples that set the online confidence bar
    keep_top_percent: float = 90.0
    confidence_cut: bool = False  # DeepConf's online cut of low-confidence samples (off: see above)
    stop_rule: StopRule = ADAPTIVE_STOP_RULE

    def live_samples(self) -> int:
        if self.parallel:
            return min(self.parallel, self.k)
        return min(2, self.k) if self.adaptive else self.k

    def sequences_needed(self) -> int:
        """Sequence ids the scheduler takes: the live samples, plus one holding the prompt for
        samples launched later (as `GenRequest`'s n / parallel ask for)."""
        live = self.live_samples()
        return live + (1 if live < self.k else 0)


def parallel_for(k: int, on_gpu: bool, curve=None, adaptive: bool = True) -> int | None:
    """Live samples (None: the config's default, K fixed or 2 adaptive).

    Without adaptive stopping every sample is needed: the width (up to K) with the highest
    throughput on this machine's measured cost curve (`costs.CostCurve`), or all K.

    Adaptive stopping: more live samples decode faster per token on most machines, but the vote
    settles while some are still running, wasted. ADAPTIVE_LIVE_PROFILE says how many decode steps
    each live count L makes with 1..L samples live; the expected decode wall prices each on the
    curve (`adaptive_wall`). Of the live counts within 10% of the
    fastest, the fewest (fewest tokens). A GPU's flat curve gives all K (up to 8); a
    compute-bound CPU's fewer; no curve: 2 on a CPU, K (up to 8) on a GPU.
    """
    if not adaptive:
        return curve.best_width(limit=k) if curve is not None else (k if on_gpu else None)
    widest = min(k, max(ADAPTIVE_LIVE_PROFILE))
    if curve is None:
        return widest if on_gpu else None
    walls = {live: adaptive_wall(live, curve) for live in range(1, widest + 1)}
    fastest = min(walls.values())
    return min(live for live, wall in walls.items() if wall <= fastest * NEAR_FASTEST)


def adaptive_wall(live: int, curve) -> float:
    """Adaptive mode's expected decode wall with `live` samples at once, in single-row steps per
    token of plain SC (ADAPTIVE_LIVE_PROFILE's steps, each priced on the cost curve)."""
    return sum(steps * curve.relative(n) for n, steps in enumerate(ADAPTIVE_LIVE_PROFILE[live], start=1))


@dataclass
class ReasoningResult:
    answer: str | None
    vote: VoteResult
    samples: list[SampleResult]
    finish_reasons: list[str]
    tokens_total: int
    tokens_saved_est: int
    stopped_early: bool
    stop_reason: str
    prompt_tokens: int
    wall_s: float
    stats: dict
    live_samples: int = 0  # samples decoded at once (adaptive: `parallel_for`'s choice)
    sampling: dict | None = None  # the samples' sampler settings (temperature, top-k, top-p, min-p)

    @property
    def votes(self) -> dict[str, int]:
        """Answer -> number of samples that gave it."""
        return dict(self.vote.counts)

    @property
    def tokens(self) -> int:
        """Tokens generated over all samples."""
        return self.tokens_total

    def to_dict(self, model_name: str | None = None) -> dict:
        """The JSON form `hearth run --samples K --json` prints."""
        return {
            "answer": self.answer,
            "model": model_name,
            "votes": {a: {"count": n, "weight": round(self.vote.weights.get(a, 0.0), 4)} for a, n in self.vote.counts.items()},
            "samples": [
                {"text": s.text, "answer": s.answer, "tokens": s.tokens, "mean_logprob": s.mean_logprob,
                 "weight": round(s.weight, 4), "stopped_early": s.stopped_early, "cut": s.cut, "finish_reason": reason}
                for s, reason in zip(self.samples, self.finish_reasons)
            ],
            "tokens_total": self.tokens_total,
            "tokens_saved_est": self.tokens_saved_est,
            "stopped_early": self.stopped_early,
            "stop_reason": self.stop_reason,
            "live_samples": self.live_samples,
            "sampling": self.sampling,
            "timings": {"wall_s": round(self.wall_s, 3), **{k: self.stats[k] for k in (
                "prompt_tok_s", "decode_tok_s", "decode_calls", "max_rows_per_call", "prompt_evals")}},
        }


class ReasoningHooks(Hooks):
    """Per-sample early stop and DeepConf cuts as tokens arrive; the vote as samples finish.

    They see one request's samples only, so a loop serving many requests (`hearth serve`) gives
    each reasoning request its own hooks and routes that request's events to them."""

    def __init__(self, generator: Scheduler, config: ReasoningConfig, on_update: Callable | None):
        self.generator = generator
        self.config = config
        self.on_update = on_update
        self.windows: dict[int, WindowedConfidence] = {}
        self.finished: list[Sample] = []
        self.answers: list[str | None] = []
        self.bar: float | None = None
        self.stop_reason = "all_done"
        self.settled = False

    def on_text(self, sample: Sample, delta: str) -> None:
        # Every mode stops a sample once its answer line is complete: what follows cannot change
        # its answer. Only adaptive mode cuts on confidence.
        if answer_line_complete(sample.text, self.config.answer):
            sample.stop("answer")
        elif self.config.adaptive and self.config.confidence_cut:
            window = self.windows.setdefault(sample.index, WindowedConfidence(self.config.window))
            for confidence in sample.token_confidences[window.count:]:
                window.push(confidence)
            if window.full and should_cut(window.current, self.bar):
                sample.stop("low_confidence")
        if self.on_update:
            self.on_update(sample, None)

    def may_launch(self, request, live: int) -> bool:
        """Lazy launching: wait while the running samples alone could settle the vote (if they
        all agree with the leader); start more only once disagreement makes them insufficient."""
        if not self.config.adaptive:
            return True
        leader = decide_stop(self.answers, live, self.config.stop_rule).leader
        if leader is None:
            return True
        optimistic = decide_stop(self.answers + [leader] * live, self.config.k - len(self.answers) - live,
                                 self.config.stop_rule)
        return not optimistic.stop

    def on_finish(self, sample: Sample) -> None:
        self.finished.append(sample)
        if sample.finish_reason in ("cancelled", "vote_settled"):
            return
        cut = sample.finish_reason == "low_confidence"
        answer = None if cut else final_answer(sample.text, self.config.answer)
        self.answers.append(answer)
        if self.on_update:
            self.on_update(sample, answer)
        if not self.config.adaptive or self.settled:
            return
        confident = [s for s in self.finished if s.finish_reason not in ("low_confidence", "cancelled", "vote_settled")]
        if self.bar is None and len(confident) >= self.config.warmup:
            lows = [lowest_group_confidence(s.token_confidences, self.config.window) for s in confident]
            self.bar = confidence_bar(lows, self.config.keep_top_percent)
        decision = decide_stop(self.answers, self.config.k - len(self.answers), self.config.stop_rule)
        if decision.stop and decision.reason != "all_done":
            self.settled = True
            self.stop_reason = decision.reason
            self.generator.close_request(sample.request, "vote_settled")


def reason(generator: Scheduler, prompt_tokens: list[int], params: SamplingParams, max_tokens: int,
           config: ReasoningConfig, stop: tuple[str, ...] = (), on_update: Callable | None = None) -> ReasoningResult:
    """Sample, extract, vote; `on_update(sample, answer)` is called for a live view."""
    started = time.perf_counter()
    hooks = ReasoningHooks(generator, config, on_update)
    request = reasoning_request(prompt_tokens, params, max_tokens, config, stop)
    samples = generator.run([request], hooks)[0]
    return reasoning_result(samples, hooks, len(prompt_tokens), time.perf_counter() - started,
                            generator.stats.as_dict())


def reasoning_request(prompt_tokens: list[int], params: SamplingParams, max_tokens: int, config: ReasoningConfig,
                      stop: tuple[str, ...] = (), key=None) -> GenRequest:
    """The scheduler request of one reasoning question: K samples from one prompt evaluation,
    `config.live_samples()` alive at once, token confidences recorded for the weighted vote."""
    return GenRequest(prompt_tokens, params, max_tokens, stop, n=config.k, parallel=config.live_samples(),
                      confidence_top_k=CONFIDENCE_TOP_K, key=key)


def reasoning_result(samples: list[Sample], hooks: ReasoningHooks, prompt_tokens: int, wall_s: float,
                     stats: dict | None = None) -> ReasoningResult:
    """Extract every sample's answer and vote (after the request's samples have all ended)."""
    config = hooks.config
    results = [_sample_result(s, config) for s in samples]
    tally = vote(results, config.vote)
    tokens_total = sum(len(s.tokens) for s in samples)
    natural = [len(s.tokens) for s in samples if s.finish_reason in ("stop", "length", "answer")]
    full_estimate = (sum(natural) / len(natural)) * config.k if natural else tokens_total
    return ReasoningResult(
        answer=tally.answer, vote=tally, samples=results, finish_reasons=[s.finish_reason for s in samples],
        tokens_total=tokens_total, tokens_saved_est=max(0, round(full_estimate - tokens_total)),
        stopped_early=hooks.settled, stop_reason=hooks.stop_reason, prompt_tokens=prompt_tokens,
        wall_s=wall_s, stats=stats or {}, live_samples=config.live_samples(),
        sampling=_sampling_settings(samples[0].request.params) if samples else None,
    )


def _sampling_settings(params: SamplingParams) -> dict:
    return {"temperature": params.temperature, "top_k": params.top_k, "top_p": params.top_p, "min_p": params.min_p}


def _sample_result(sample: Sample, config: ReasoningConfig) -> SampleResult:
    cut = sample.finish_reason in ("low_confidence", "vote_settled", "cancelled")
    return SampleResult(
        text=sample.text,
        answer=None if cut else final_answer(sample.text, config.answer),
        weight=max(0.0, lowest_group_confidence(sample.token_confidences, config.window)),
        tokens=len(sample.tokens),
        mean_logprob=round(sample.mean_logprob, 4),
        stopped_early=sample.finish_reason == "answer",
        cut=cut,
    )


def reason_prompt(loaded, messages: list[dict], options, *, samples: int = 8, answer: str = "auto",
                  vote: str = "weighted", adaptive: bool = True, on_update: Callable | None = None) -> ReasoningResult:
    """Reasoning mode on a loaded model: validate, word the question, size the context, reason.

    The question is worded in the model family's trained reasoning prompt
    (`loaded.reasoning_style`, see `reasoning_messages`). On a GPU all samples run at once (`parallel_for`).
    """
    config = reasoning_config(samples, answer, vote, adaptive, on_gpu=loaded.plan.n_gpu_layers > 0,
                              curve=loaded.cost_curve())
    messages = reasoning_messages(messages, answer, loaded.reasoning_style)
    max_tokens = options.max_tokens_for("reason")
    if not loaded.engine.config.kv_unified:  # after a batch: K samples share one prompt's cells
        loaded.use_layout(1, True)
    tokens = loaded.prompt_tokens(messages)
    needed = len(tokens) + samples * max_tokens
    if config.sequences_needed() > loaded.engine.config.n_seq_max:
        loaded.resize(config.sequences_needed(), max(needed, loaded.engine.n_ctx))
    loaded.ensure_context(needed)
    return reason(Scheduler(loaded.engine), tokens, options.sampling("reason", samples), max_tokens, config,
                  options.stop, on_update=on_update)


def reasoning_config(samples: int, answer: str = "auto", vote: str = "weighted", adaptive: bool = True, *,
                     on_gpu: bool = False, max_sequences: int | None = None, curve=None) -> ReasoningConfig:
    """A checked ReasoningConfig: a bad answer mode, vote method or sample count fails before any
    work. `max_sequences` caps the live samples (plus the prompt's holder) to what a context has."""
    from dataclasses import replace as with_changes

    from ..errors import UsageError
    from .answers import parse_answer_mode
    from .voting import VOTE_METHODS

    parse_answer_mode(answer)
    if vote not in VOTE_METHODS:
        raise UsageError(f"unknown vote method {vote!r}", hint="use majority or weighted")
    if not isinstance(samples, int) or isinstance(samples, bool) or samples < 1:
        raise UsageError(f"samples must be an integer >= 1, got {samples!r}")
    config = ReasoningConfig(k=samples, vote=vote, answer=answer, adaptive=adaptive)
    config = with_changes(config, parallel=parallel_for(samples, on_gpu, curve, adaptive))
    if max_sequences is not None and config.sequences_needed() > max_sequences:
        if max_sequences < 2 and samples > 1:
            raise UsageError(f"{samples} samples need at least 2 sequences, the context has {max_sequences}")
        config = with_changes(config, parallel=max(1, max_sequences - 1) if samples > 1 else 1)
    return config


def reasoning_messages(messages: list[dict], answer: str, style=None) -> list[dict]:
    """The conversation worded for reasoning: the model family's trained instruction
    (`prompts.reasoning_style`: Qwen's `\\boxed{}` system prompt, DeepSeek-R1's user-turn
    instruction), or hearth's `#### <number>` line for other models in the number mode."""
    from .prompts import HEARTH_STYLE

    return (style or HEARTH_STYLE).messages(messages, answer)
