"""`hearth chat`: an interactive chat in the terminal, or line by line over a pipe.

Each turn the whole conversation is rendered with the model's chat template and tokenized; the
scheduler (`GenRequest(reuse_prefix=True)`) keeps sequence 0's KV cache between turns and
evaluates only the tokens that differ from what it holds, so a long conversation does not slow
the next answer down. The conversation state and its rules (slash commands, overflow trimming,
session files) live in `runtime/conversation.py`; this module drives the model and the terminal.
"""

from __future__ import annotations

import signal
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Annotated, Callable, Iterator, Optional

import typer

from ..errors import ContextOverflowError, DoesNotFitError, HearthError, UsageError
from ..runtime import conversation as conv
from ..runtime.generate import GenRequest, Generator, Hooks
from . import _options as opt
from . import _output as out
from .app import command

PROMPT = ">>> "


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

    def __init__(self, loaded, params, max_tokens: int, system: str | None = None, verbose: int = 0):
        self.loaded, self.params, self.max_tokens, self.verbose = loaded, params, max_tokens, verbose
        self.generator = Generator(loaded.engine)
        self.conversation = conv.Conversation(system=system)
        self.samples = 1  # >1: reasoning mode (/think K)
        self.draws = 0  # answers sampled so far: offsets a fixed seed so /regen gives a new answer
        self.used = 0  # tokens of the conversation in the context window (the meter)
        self.last: TurnResult | None = None

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
        request = GenRequest(tokens, self.draw_params(), conv.answer_tokens(self.n_ctx, len(tokens), self.max_tokens),
                             reuse_prefix=True)
        hooks = _AnswerHooks(on_text, interrupted)
        stats = self.generator.stats
        before = (stats.prompt_tokens, stats.prompt_reused, stats.decode_rows, stats.decode_s)
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
            round((stats.decode_rows - before[2]) / decode_s, 1) if decode_s > 0 else 0.0, trimmed)
        return self.last

    def respond_reasoning(self, on_update: Callable, on_trim: Callable | None = None) -> tuple[TurnResult, object]:
        """Answer the last user message by voting over `self.samples` samples (reasoning mode)."""
        from ..runtime.reasoning import ReasoningConfig, parallel_for, reason

        config = ReasoningConfig(k=self.samples, parallel=parallel_for(self.samples, self.loaded.plan.n_gpu_layers > 0))
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
        """Load another model; on any failure the current one stays."""
        from ..runtime.session import load_model

        request = replace(self.loaded.request, n_seq=1)
        new = load_model(reference, request, verbose=self.verbose >= 2)
        old, self.loaded = self.loaded, new
        self.generator = Generator(new.engine)
        old.close()
        try:
            self.refresh_usage()
        except HearthError:
            self.used = 0

    def close(self) -> None:
        self.loaded.close()


@contextmanager
def interrupt_flag() -> Iterator[Callable[[], bool]]:
    """While inside: the first Ctrl-C sets a flag (the answer stops cleanly), a second one raises."""
    state = {"set": False}

    def handler(signum, frame):
        if state["set"]:
            raise KeyboardInterrupt
        state["set"] = True

    try:
        previous = signal.signal(signal.SIGINT, handler)
    except ValueError:  # not the main thread: leave Ctrl-C as it is
        previous = None
    try:
        with _quiet_terminal():
            yield lambda: state["set"]
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)


@contextmanager
def _quiet_terminal() -> Iterator[None]:
    """While an answer streams: keys typed ahead are not echoed (they wait for the next prompt),
    and Ctrl-C neither prints ^C nor flushes the output, either of which would shift the
    redrawn answer by a line."""
    try:
        import termios

        fd = sys.stdin.fileno()
        saved = termios.tcgetattr(fd) if sys.stdin.isatty() else None
    except (ImportError, OSError, ValueError):
        saved = None
    if saved is None:
        yield
        return
    quiet = list(saved)
    quiet[3] = (quiet[3] & ~(termios.ECHO | termios.ECHOCTL)) | termios.NOFLSH
    termios.tcsetattr(fd, termios.TCSANOW, quiet)
    try:
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSANOW, saved)


@command("chat")
def chat(
    model: opt.Model = None,
    system: opt.System = None,
    max_tokens: opt.MaxTokens = 1024,
    temp: opt.Temperature = None,
    top_k: opt.TopK = 40,
    top_p: opt.TopP = 0.95,
    min_p: opt.MinP = 0.05,
    repeat_penalty: opt.RepeatPenalty = 1.0,
    seed: opt.Seed = None,
    ctx: opt.Ctx = None,
    threads: opt.Threads = None,
    gpu_layers: opt.GpuLayers = None,
    session: Annotated[Optional[str], typer.Option("--session", help="Open this saved session (if it exists) and save to it after every answer.")] = None,
    samples: Annotated[Optional[int], typer.Option("--samples", "-k", min=1, max=64, help="Reasoning mode: vote over K samples for every answer (as /think K).")] = None,
    markdown: Annotated[bool, typer.Option("--markdown/--plain", help="Render answers as Markdown on a terminal.")] = True,
    verbose: opt.Verbose = 0,
) -> None:
    """Chat with a model in the terminal. /help lists the commands.

    Answers stream as Markdown; the KV cache is kept between turns, so only your new message is
    processed. Ctrl-C stops an answer; Ctrl-C on an empty line or Ctrl-D leaves. When stdin is
    not a terminal, each line (or \"\"\"-fenced block) is a message and answers go to stdout.

    Examples:

      hearth chat

      hearth chat -m bartowski/Qwen2.5-0.5B-Instruct-GGUF:Q4_K_M --system "Answer briefly."

      hearth chat --session work --temp 0.3

      printf 'Hi!\\n/set temp 0\\nName a color.\\n' | hearth chat --plain
    """
    from ..runtime.session import PlanRequest, load_model
    from ._chat_repl import ChatRepl
    from .run import sampling_from_flags

    out.set_verbosity(verbose)
    params = sampling_from_flags(temp, top_k, top_p, min_p, repeat_penalty, seed)
    loaded = load_model(model, PlanRequest(ctx=ctx, threads=threads, gpu_layers=gpu_layers, max_tokens=max_tokens),
                        verbose=verbose >= 2)
    state = ChatSession(loaded, params, max_tokens, system, verbose)
    try:
        repl = ChatRepl(state, session_name=session, markdown=markdown)
        if samples:
            repl.dispatch(conv.Command("think", str(samples)))
        repl.run(interactive=sys.stdin.isatty() and sys.stdout.isatty())
    finally:
        state.close()
