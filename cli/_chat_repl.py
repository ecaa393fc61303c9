"""The terminal side of `hearth chat`: the line editor, slash commands, streamed answers.

`ChatRepl` reads lines (prompt_toolkit on a terminal, plain lines from a pipe), turns each into
a slash command or a message, and prints what happened. Every error is reported and the session
goes on; only /bye, Ctrl-D, or Ctrl-C at an empty prompt end it.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Iterator

from ..errors import HearthError, UsageError
from ..runtime import conversation as conv
from . import _output as out
from ..runtime.chat import ChatSession, TurnResult
from .chat import PROMPT, interrupt_flag


class ChatRepl:
    def __init__(self, session: ChatSession, session_name: str | None = None, markdown: bool = True):
        self.session = session
        self.markdown = markdown
        self.name = session_name  # /save without a name saves here
        self.autosave = session_name is not None  # --session: saved after every answer
        self.attachments: list[tuple[str, str]] = []
        if session_name and conv.session_path(session_name).exists():
            self.dispatch(conv.Command("open", session_name))

    # -- the loop -------------------------------------------------------------------------
    def run(self, interactive: bool) -> None:
        if interactive or out.stderr_is_tty():
            self._banner()
        if not self.session.loaded.has_template:
            out.warn(f"{self.session.loaded.name} has no chat template: the conversation is sent as plain text")
        lines = self._terminal_lines() if interactive else self._piped_lines()
        for line in lines:
            if not self.handle(line):
                break

    def handle(self, line: str) -> bool:
        """One line of input; False when the session should end."""
        try:
            command = conv.parse_command(line)
            if command is not None and not self.dispatch(command):
                return False
            if command is None:
                self.send(conv.message_text(line))
            if self.autosave:
                conv.save_session(self.name, self.session.conversation, self.session.loaded.resolved.reference)
        except KeyboardInterrupt:  # a second Ctrl-C, or one outside an answer: this step only
            turns = self.session.conversation.turns
            if turns and turns[-1].role == "user":
                turns.pop()  # never leave a message without its answer
            out.notice("[interrupted]", style="yellow")
        except HearthError as exc:
            if os.environ.get("HEARTH_DEBUG"):
                raise
            out.error(exc.message, exc.hint)
        except Exception as exc:  # a bug must not cost the user the conversation
            if os.environ.get("HEARTH_DEBUG"):
                raise
            out.error(f"internal error: {type(exc).__name__}: {exc}", "the conversation is intact; HEARTH_DEBUG=1 shows the traceback")
        return True

    def _banner(self) -> None:
        loaded = self.session.loaded
        out.notice(f"hearth chat · {loaded.name} · {self.session.n_ctx}-token context · /help · Ctrl-D leaves")

    def _piped_lines(self) -> Iterator[str]:
        """Lines from a pipe; a \"\"\"-fenced block is one message. Undecodable bytes become U+FFFD."""
        collector = conv.MultilineCollector()
        typed = sys.stdin.isatty()  # a terminal, but stdout is redirected: prompt on stderr
        try:
            while True:
                if typed:
                    sys.stderr.write("... " if collector.open else PROMPT)
                    sys.stderr.flush()
                raw = sys.stdin.buffer.readline()
                if not raw:
                    return
                message = collector.feed(raw.decode("utf-8", errors="replace").rstrip("\r\n"))
                if message is not None and message.strip():
                    yield message
        except KeyboardInterrupt:
            return

    def _terminal_lines(self) -> Iterator[str]:
        prompt = self._prompt_session()
        while True:
            try:
                text = prompt.prompt(PROMPT)
            except (EOFError, KeyboardInterrupt):
                return
            text = conv.strip_fences(text)
            if text.strip():
                yield text

    def _prompt_session(self):
        from prompt_toolkit import PromptSession
        from prompt_toolkit.enums import DEFAULT_BUFFER
        from prompt_toolkit.filters import has_focus
        from prompt_toolkit.history import FileHistory
        from prompt_toolkit.key_binding import KeyBindings

        keys = KeyBindings()
        editing = has_focus(DEFAULT_BUFFER)  # not while Ctrl-R searches

        @keys.add("enter", filter=editing)
        def _send(event):
            buffer = event.current_buffer
            if conv.fenced_block_open(buffer.text):
                buffer.insert_text("\n")
            else:
                buffer.validate_and_handle()

        @keys.add("escape", "enter", filter=editing)
        def _newline(event):
            event.current_buffer.insert_text("\n")

        @keys.add("c-c", filter=editing)
        def _clear_or_leave(event):
            if event.current_buffer.text:
                event.current_buffer.reset()
            else:
                event.app.exit(exception=EOFError)

        return PromptSession(
            history=FileHistory(str(conv.history_path())), key_bindings=keys, multiline=True,
            prompt_continuation=lambda width, line_number, wrap_count: "... ".rjust(width),
            bottom_toolbar=self._toolbar,
        )

    def _toolbar(self) -> str:
        session = self.session
        level = conv.meter_level(session.used, session.n_ctx)
        parts = [session.loaded.name, conv.context_meter(session.used, session.n_ctx)]
        if level != "ok":
            parts.append("old turns will be dropped soon" if level == "high" else "context full")
        if session.samples > 1:
            parts.append(f"reasoning ×{session.samples}")
        if self.attachments:
            parts.append(f"{len(self.attachments)} file(s) attached")
        return " " + " · ".join(parts + ["/help"])

    # -- messages -------------------------------------------------------------------------
    def send(self, text: str) -> None:
        text = conv.clean_message(text)
        if not text.strip() and not self.attachments:
            return
        self.session.conversation.add_user(conv.with_attachments(text, self.attachments) if self.attachments else text)
        self.attachments = []
        self.answer()

    def answer(self) -> None:
        if self.session.samples > 1:
            self._answer_reasoning()
        else:
            with interrupt_flag() as interrupted, out.answer_stream(self.markdown) as stream:
                result = self.session.respond(stream.write, interrupted, on_trim=self._trimmed)
            self._after_answer(result)

    def _trimmed(self, trimmed: conv.TrimResult) -> None:
        out.notice(f"context almost full ({trimmed.tokens_before} of {self.session.n_ctx} tok with room for the answer): "
                   f"dropped the {trimmed.dropped_turns} oldest turns, now {trimmed.tokens_after} tok "
                   "(they stay in the saved session)", style="yellow")

    def _after_answer(self, result: TurnResult) -> None:
        if result.finish_reason == "interrupted":
            out.notice("[answer cut: kept in the conversation · /regen for a new one · /undo to drop it]", style="yellow")
        elif result.finish_reason == "length":
            out.notice(f"[answer cut at {result.generated} tokens · /set max-tokens N for longer answers]", style="yellow")
        first = "-" if result.first_token_s is None else f"{result.first_token_s:.2f}s"
        out.detail(f"prompt {result.prompt_tokens} tok: {result.evaluated} evaluated, {result.reused} reused from the KV cache · "
                   f"first token {first} · {result.generated} tok at {result.decode_tok_s} tok/s · "
                   f"{conv.context_meter(self.session.used, self.session.n_ctx)}")
        if result.speculative:
            from .run import speculative_lines

            for line in speculative_lines(result.speculative):
                out.detail(line)

    def _answer_reasoning(self) -> None:
        from .reasoning import LiveView

        try:
            with out.live_text() as live:
                view = LiveView(self.session.samples, live)
                _, result = self.session.respond_reasoning(view.update, on_trim=self._trimmed)
        except KeyboardInterrupt:
            self.session.conversation.turns.pop()
            out.notice("[stopped: the message was not kept]", style="yellow")
            return
        if result.answer is None:
            out.warn("no sample produced an extractable answer; the best sample's text is kept")
        else:
            out.write(result.answer + "\n")
        counts = ", ".join(f"{a}: {n}" for a, n in result.vote.counts.items())
        out.notice(f"votes {counts or 'none'} · {len(result.samples)} samples · {result.tokens_total} tokens · {result.wall_s:.1f}s")

    # -- slash commands -------------------------------------------------------------------
    def dispatch(self, command: conv.Command) -> bool:
        """Run a slash command; False for /bye."""
        if command.name == "bye":
            return False
        getattr(self, f"cmd_{command.name}")(command.arg)
        return True

    def cmd_help(self, arg: str) -> None:
        out.notice(conv.help_text(), style="")

    def cmd_clear(self, arg: str) -> None:
        self.session.conversation.clear()
        self.attachments = []
        self.session.refresh_usage()
        out.notice("new conversation" + (" (the system prompt stays)" if self.session.conversation.system else ""))

    def cmd_undo(self, arg: str) -> None:
        dropped = self.session.conversation.undo()
        if not dropped:
            raise UsageError("nothing to undo")
        self.session.refresh_usage()
        out.notice(f"dropped the last exchange ({dropped} turn{'s' if dropped > 1 else ''})")

    def cmd_regen(self, arg: str) -> None:
        self.session.conversation.pop_answer()
        self.session.refresh_usage()
        self.answer()

    def cmd_system(self, arg: str) -> None:
        conversation = self.session.conversation
        if not arg:
            out.notice(f"system prompt: {conversation.system!r}" if conversation.system else "no system prompt", style="")
            return
        conversation.system = None if arg == "-" else arg
        self.session.refresh_usage()
        out.notice("system prompt removed" if arg == "-" else "system prompt set")

    def cmd_set(self, arg: str) -> None:
        session = self.session
        if arg:
            name, value = conv.parse_setting(arg)
            session.params, session.max_tokens = conv.apply_setting(session.params, session.max_tokens, name, value)
            session.draws = 0
        out.notice(conv.settings_text(session.params, session.max_tokens), style="")

    def cmd_show(self, arg: str) -> None:
        session, loaded = self.session, self.session.loaded
        conversation = session.conversation
        reuse = (f"{session.last.reused} reused, {session.last.evaluated} evaluated in the last turn"
                 if session.last else "no turn yet")
        rows = [
            ("model", f"{loaded.name} ({loaded.resolved.source}) {loaded.resolved.path}"),
            ("template", "the model's chat template" if loaded.has_template else "none: plain completion"),
            ("context", f"{conv.context_meter(session.used, session.n_ctx)} · KV cache: {reuse}"),
            ("turns", f"{len(conversation.turns)}" + (f" ({conversation.window_start} dropped from the window)" if conversation.window_start else "")),
            ("system", conversation.system or "-"),
            ("sampling", conv.settings_text(session.params, session.max_tokens)),
            ("reasoning", f"vote over {session.samples} samples" if session.samples > 1 else "off"),
            ("speculative", session.speculative_mode),
            ("session", (self.name + (" (saved after every answer)" if self.autosave else "")) if self.name else "-"),
        ] + [("plan", reason) for reason in getattr(loaded.plan, "reasons", [])]
        width = max(len(key) for key, _ in rows)
        out.notice("\n".join(f"{key.ljust(width)}  {value}" for key, value in rows), style="")

    def cmd_load(self, arg: str) -> None:
        old = self.session.loaded.name
        out.notice(f"loading {arg} …")
        try:
            self.session.switch_model(arg)
        except HearthError as exc:
            out.error(exc.message, exc.hint)
            out.notice(f"still chatting with {old}")
            return
        loaded = self.session.loaded
        out.notice(f"now chatting with {loaded.name} · context {self.session.n_ctx} tok · the conversation is kept")
        if not loaded.has_template:
            out.warn(f"{loaded.name} has no chat template: the conversation is sent as plain text")

    def cmd_save(self, arg: str) -> None:
        name = arg or self.name
        if not name:
            raise UsageError("/save needs a name the first time", hint="/save NAME")
        path = conv.save_session(name, self.session.conversation, self.session.loaded.resolved.reference)
        self.name = name
        out.notice(f"saved {len(self.session.conversation.turns)} turns to {path}")

    def cmd_open(self, arg: str) -> None:
        if not arg:
            found = conv.list_sessions()
            out.notice("\n".join(f"  {name}  ({size // 1024 + 1} KB)" for name, _, size in found)
                       if found else "no saved sessions yet (/save NAME)", style="")
            return
        opened = conv.open_session(arg)
        self.session.conversation = opened.conversation
        self.name = arg
        try:
            self.session.refresh_usage()
        except HearthError:
            self.session.used = 0
        out.notice(f"opened {arg}: {len(opened.conversation.turns)} turns")
        current = self.session.loaded.resolved.reference
        if opened.model and opened.model != current:
            out.notice(f"it was saved with model {opened.model}; /load {opened.model} to switch")
        last = opened.conversation.turns[-1] if opened.conversation.turns else None
        if last is not None and last.role == "assistant":
            out.notice(f"last answer: {last.content[:200]}" + ("…" if len(last.content) > 200 else ""))

    def cmd_read(self, arg: str) -> None:
        text = conv.read_text_file(arg)
        self.attachments.append((Path(arg).name, text))
        n = len(self.session.loaded.engine.tokenize(text, add_special=False))
        out.notice(f"read {arg} ({len(text)} characters, {n} tokens): it goes with your next message")

    def cmd_lookup(self, arg: str) -> None:
        session = self.session
        if arg:
            session.lookup = conv.parse_switch("lookup", arg)
            if session.lookup and session.draft is not None:
                session.set_draft(None)
                out.notice("draft model off: prompt lookup drafts instead")
        out.notice(f"speculative decoding: {session.speculative_mode}")

    def cmd_draft(self, arg: str) -> None:
        session = self.session
        if arg.strip().lower() in ("off", "-", "none"):
            session.set_draft(None)
        elif arg:
            out.notice(f"loading draft model {arg} …")
            session.set_draft(arg)
            session.lookup = False
        out.notice(f"speculative decoding: {session.speculative_mode}")

    def cmd_think(self, arg: str) -> None:
        k = conv.parse_think(arg)
        if k > 1:
            try:
                import importlib

                importlib.import_module(f"{__package__.rsplit('.', 1)[0]}.runtime.reasoning")
            except ImportError as exc:
                raise UsageError(f"reasoning mode is not available in this build ({exc})") from None
        self.session.samples = k
        out.notice(f"reasoning mode: the next answers vote over {k} samples" if k > 1 else "reasoning mode off")
