"""A chat session: a loaded model, a conversation, the sampling settings; one turn at a time.

Each turn the whole conversation is rendered with the model's chat template and tokenized; the
scheduler (`GenRequest(reuse_prefix=True)`) keeps sequence 0's KV cache between turns and
evaluates only the tokens that differ from what it holds, so a long conversation does not slow
the next answer down. The conversation's state and rules (slash commands, overflow trimming,
session files) live in `conversation.py`; `hearth chat` (cli/) drives this object from the
terminal, and `hearth.Model.chat()` hands it to Python programs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Callable

from ..errors import ContextOverflowError, DoesNotFitError, HearthError, UsageError
from . import conversation as conv
from .generation import speculation_for, speculative_timings
from .scheduler import GenRequest, Hooks, Scheduler


@dataclass
class TurnResult:
    text: str
    finish_reason: str  # stop | length | interrupted | cancelled | voted
    prompt_tokens: int  # the whole rendered conversation
    evaluated: int  # prompt tokens run through the model this turn
    reused: int  # prompt tokens served from the KV cache
    generated: int
    first_token_s: float | None
    decode_tok_s: float
    trimmed: conv.TrimResult | None = None
    speculative: dict | None = None  # drafted, accepted, draft lengths, cost curve (lookup or draft)


class _AnswerHooks(Hooks):
    """Streams text out; a Ctrl-C (the `interrupted` flag) ends the answer at the next token."""

    def __init__(self, on_text: Callable[[str], None], interrupted: Callable[[], bool]):
        self.on_text_cb, self.interrupted = on_text, interrupted
        self.sample = None

    def on_text(self, sample, delta: str) -> None:
        self.sample = sample
        self.on_text_cb(delta)
        if self.interrupted():
            # Stopped (not cancelled): the scheduler keeps the KV cache of what was generated.
            sample.stop("interrupted")

    def should_cancel(self) -> bool:
        return self.interrupted() and self.sample is None  # still reading the prompt: nothing to keep


class ChatSession:
    """A model, a conversation and the sampling settings; answers one turn at a time."""

    def __init__(self, loaded, params, max_tokens: int, system: str | None = None,
                 loader: Callable | None = None):
        self.loaded, self.params, self.max_tokens, self.loader = loaded, params, max_tokens, loader
        self.generator = Scheduler(loaded.engine)
        self.conversation = conv.Conversation(system=system)
        self.samples = 1  # >1: reasoning mode (/think K)
        self.draws = 0  # answers sampled so far: offsets a fixed seed so /regen gives a new answer
        self.used = 0  # tokens of the conversation in the context window (the meter)
        self.last: TurnResult | None = None
        self.lookup = False  # speculative decoding with prompt-lookup drafts (/lookup)
        self.draft = None  # the draft model's LoadedModel (/draft MODEL)
        self.exact_drafts = True  # greedy drafts only in exact calls (GenerationOptions.exact_drafts)

    @property
    def n_ctx(self) -> int:
        return self.loaded.engine.n_ctx

    def count_tokens(self, messages: list[dict]) -> int:
        return len(self.loaded.prompt_tokens(messages)) if messages else 0

    def refresh_usage(self) -> None:
        self.used = self.count_tokens(self.conversation.messages())

    def draw_params(self):
        seed = None if self.params.seed is None else self.params.seed + self.draws
        self.draws += 1
        return replace(self.params, seed=seed)

    def fit(self, reply_room: int) -> tuple[list[int], conv.TrimResult | None]:
        """The prompt tokens, after growing the context or dropping the oldest turns if needed."""
        tokens = self.loaded.prompt_tokens(self.conversation.messages())
        if len(tokens) + reply_room <= self.n_ctx:
            return tokens, None
        try:
            self.loaded.ensure_context(len(tokens) + reply_room)  # grows a planned (not fixed) context
            return tokens, None
        except (ContextOverflowError, DoesNotFitError):
            pass
        limit = self.n_ctx - reply_room
        trimmed = conv.trim_to_fit(self.conversation, self.count_tokens, limit, target=limit * 3 // 4)
        return self.loaded.prompt_tokens(self.conversation.messages()), trimmed

    def respond(self, on_text: Callable[[str], None], interrupted: Callable[[], bool] = lambda: False,
                on_trim: Callable[[conv.TrimResult], None] | None = None) -> TurnResult:
        """Answer the last user message; the answer (even a cut one) joins the conversation.

        If the answer cannot start (template error, the message alone overflows the context, or a
        Ctrl-C before the first token), the user message is taken back out and the error raised.
        """
        started = time.perf_counter()  # time to first token includes rendering the template
        try:
            tokens, trimmed = self.fit(conv.reply_reserve(self.n_ctx, self.max_tokens))
        except HearthError:
            self.conversation.turns.pop()
            raise
        if trimmed and on_trim:
            on_trim(trimmed)
        max_tokens = conv.answer_tokens(self.n_ctx, len(tokens), self.max_tokens)
        request = GenRequest(tokens, self.draw_params(), max_tokens, reuse_prefix=True,
                             speculation=self._speculation(len(tokens) + max_tokens))
        hooks = _AnswerHooks(on_text, interrupted)
        stats = self.generator.stats
        before = (stats.prompt_tokens, stats.prompt_reused, stats.decoded, stats.decode_s)
        try:
            results = self.generator.run([request], hooks)
        except KeyboardInterrupt:  # a second Ctrl-C: stop now, keep what was shown
            results = [[hooks.sample]] if hooks.sample is not None else [[]]
            if hooks.sample is not None:
                hooks.sample.finish_reason = "interrupted"
        sample = results[0][0] if results and results[0] else None
        if sample is None or (not sample.text and sample.finish_reason in ("interrupted", "cancelled")):
            self.conversation.turns.pop()
            raise UsageError("stopped before the answer began: the message was not kept",
                             hint="press Up to get it back")
        cut = sample.finish_reason not in ("stop",)
        self.conversation.add_assistant(sample.text, cut=cut)
        self.used = len(tokens) + len(sample.tokens)
        decode_s = stats.decode_s - before[3]
        self.last = TurnResult(
            sample.text, sample.finish_reason, len(tokens), stats.prompt_tokens - before[0],
            stats.prompt_reused - before[1], len(sample.tokens),
            None if sample.first_token_at is None else sample.first_token_at - started,
            round((stats.decoded - before[2]) / decode_s, 1) if decode_s > 0 else 0.0, trimmed,
            speculative_timings(sample))
        return self.last

    # -- speculative decoding (/lookup, /draft) -------------------------------------------------
    def _speculation(self, tokens_needed: int):
        if not (self.lookup or self.draft):
            return None
        from .options import GenerationOptions

        options = GenerationOptions(lookup=self.lookup and not self.draft,
                                    draft=self.draft.resolved.reference if self.draft else None,
                                    exact_drafts=self.exact_drafts)
        return speculation_for(self.loaded, options, tokens_needed, self.draft)

    def set_draft(self, reference: str | None) -> None:
        """Draft with this model from now on (None: no draft model). It must share the chat
        model's vocabulary; on any failure the current setting stays."""
        if reference is None:
            if self.draft is not None:
                self.draft.close()
            self.draft = None
            return
        if self.loader is None:
            raise UsageError("this chat cannot load other models")
        from .drafts import check_same_vocabulary
        from .session import PlanRequest

        draft = self.loader(reference, PlanRequest(threads=self.loaded.plan.n_threads))
        try:
            check_same_vocabulary(self.loaded.engine.model, draft.engine.model, self.loaded.name, draft.name)
        except BaseException:
            draft.close()
            raise
        self.set_draft(None)
        self.draft = draft

    @property
    def speculative_mode(self) -> str:
        if self.draft is not None:
            return f"draft model {self.draft.name}"
        return "prompt lookup" if self.lookup else "off"

    def respond_reasoning(self, on_update: Callable, on_trim: Callable | None = None) -> tuple[TurnResult, object]:
        """Answer the last user message by voting over `self.samples` samples (reasoning mode)."""
        from .reasoning import ReasoningConfig, parallel_for, reason

        config = ReasoningConfig(k=self.samples, parallel=parallel_for(self.samples, self.loaded.plan.n_gpu_layers > 0,
                                                                       self.loaded.cost_curve()))
        try:
            self._ensure_sequences(config.sequences_needed())
            tokens, trimmed = self.fit(min(self.max_tokens, self.n_ctx // 2))
            per_sample = min(self.max_tokens, (self.n_ctx - len(tokens)) // self.samples)
            if per_sample < 16:
                raise ContextOverflowError(f"no room for {self.samples} samples in a context of {self.n_ctx}",
                                           hint="raise --ctx, or /think with fewer samples")
        except HearthError:
            self.conversation.turns.pop()
            raise
        if trimmed and on_trim:
            on_trim(trimmed)
        result = reason(self.generator, tokens, self.draw_params(), per_sample, config, on_update=on_update)
        winner = result.vote.winner_index
        text = result.samples[winner].text if winner is not None else (result.answer or "")
        self.conversation.add_assistant(text, cut=winner is None)
        self.refresh_usage()  # the samples' KV is not kept: the next turn evaluates the prompt again
        self.last = TurnResult(text, "voted", len(tokens), len(tokens), 0, result.tokens_total, None, 0.0, trimmed)
        return self.last, result

    def _ensure_sequences(self, n_seq: int) -> None:
        loaded = self.loaded
        if loaded.engine.config.n_seq_max >= n_seq:
            return
        # enough cells in all for the conversation plus every sample's answer
        loaded.resize(n_seq, max(loaded.engine.n_ctx, self.used + self.samples * self.max_tokens))

    def switch_model(self, reference: str) -> None:
        """Load another model (through the loader the library gave this session, which resolves
        the reference); on any failure the current one stays."""
        if self.loader is None:
            raise UsageError("this chat cannot load other models")
        new = self.loader(reference, replace(self.loaded.request, n_seq=1))
        if self.draft is not None:
            from .drafts import check_same_vocabulary

            try:
                check_same_vocabulary(new.engine.model, self.draft.engine.model, new.name, self.draft.name)
            except HearthError as exc:
                new.close()
                raise UsageError(exc.message, hint="/draft off first, or /draft a model for the new one") from None
        old, self.loaded = self.loaded, new
        self.generator = Scheduler(new.engine)
        old.close()
        try:
            self.refresh_usage()
        except HearthError:
            self.used = 0

    # -- the Python API's conversation (hearth.Model.chat) --------------------------------------
    def send(self, text: str, on_text: Callable[[str], None] | None = None) -> TurnResult:
        """Add a user message and answer it (streamed through `on_text` when given)."""
        self.conversation.add_user(text)
        return self.respond(on_text or (lambda delta: None))

    def undo(self) -> int:
        """Drop the last exchange; returns the number of turns dropped."""
        dropped = self.conversation.undo()
        self.refresh_usage()
        return dropped

    @property
    def messages(self) -> list[dict]:
        return self.conversation.messages()

    def close(self) -> None:
        self.set_draft(None)
        self.loaded.close()
