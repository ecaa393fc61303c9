"""The state of a `hearth chat` conversation, and the pure rules around it.

- `Conversation`: the system prompt and the turns; `/undo`, `/regen` and overflow trimming act on
  it. Turns dropped to make room stay in the transcript (saved with the session) but are no
  longer sent to the model: `window_start` marks the first turn the model sees.
- `parse_command`: the slash-command parser (`/set temp 0.3`, `/load MODEL`, ...).
- `trim_to_fit`: drops the oldest exchanges, never the system prompt or the newest message, when
  the conversation would overflow the context window.
- Session files: JSON under HEARTH_HOME/sessions, written atomically, validated on open.

Nothing here loads a model or prints: token counts come in as a function.
"""

from __future__ import annotations

import difflib
import functools
import json
import math
import re
import stat
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

from ..errors import ContextOverflowError, InputFormatError, UsageError
from ..paths import atomic_write, data_dir
from .sampling import SamplingParams

SESSION_FORMAT = "hearth-chat-session"
SESSION_VERSION = 1
MAX_READ_BYTES = 1_000_000  # /read refuses files larger than this (they would not fit anyway)
MAX_SESSION_BYTES = 64 << 20  # a session file larger than this is not one hearth wrote
MULTILINE_FENCE = '"""'


# -- conversation ---------------------------------------------------------------------------
@dataclass
class Turn:
    role: str  # "user" | "assistant"
    content: str
    cut: bool = False  # an answer stopped by Ctrl-C (or by the token limit) before it ended


@dataclass
class Conversation:
    system: str | None = None
    turns: list[Turn] = field(default_factory=list)
    window_start: int = 0  # turns before this index were dropped to fit the context

    @property
    def visible(self) -> list[Turn]:
        """The turns the model sees."""
        return self.turns[self.window_start:]

    def messages(self) -> list[dict]:
        """The conversation as chat-template messages: system first, then the visible turns."""
        head = [{"role": "system", "content": self.system}] if self.system else []
        return head + [{"role": t.role, "content": t.content} for t in self.visible]

    def add_user(self, text: str) -> None:
        self.turns.append(Turn("user", text))

    def add_assistant(self, text: str, cut: bool = False) -> None:
        self.turns.append(Turn("assistant", text, cut))

    def clear(self) -> None:
        """A new conversation; the system prompt stays."""
        self.turns.clear()
        self.window_start = 0

    def undo(self) -> int:
        """Drop the last exchange (the last user message and the answer after it); turns dropped."""
        last_user = _last_index(self.turns, "user")
        if last_user is None or last_user < self.window_start:
            return 0
        dropped = len(self.turns) - last_user
        del self.turns[last_user:]
        return dropped

    def pop_answer(self) -> str:
        """For /regen: remove the answer(s) after the last user message; return that message."""
        last_user = _last_index(self.turns, "user")
        if last_user is None or last_user < self.window_start:
            raise UsageError("nothing to regenerate yet", hint="send a message first")
        del self.turns[last_user + 1:]
        return self.turns[last_user].content

    def drop_oldest_exchange(self) -> int:
        """Hide the oldest visible exchange from the model; turns dropped (0: only the newest is left)."""
        visible = self.visible
        users = [i for i, t in enumerate(visible) if t.role == "user"]
        if len(users) < 2:
            return 0
        # Up to the second user message, so the window always starts with a user turn
        # (some templates insist that roles alternate starting with the user).
        self.window_start += users[1]
        return users[1]


def _last_index(turns: list[Turn], role: str) -> int | None:
    for i in range(len(turns) - 1, -1, -1):
        if turns[i].role == role:
            return i
    return None


# -- context window -------------------------------------------------------------------------
@dataclass(frozen=True)
class TrimResult:
    dropped_turns: int
    tokens_before: int
    tokens_after: int


def reply_reserve(n_ctx: int, max_tokens: int) -> int:
    """Context cells kept free for the answer: max tokens, but never more than half the window."""
    return max(1, min(max_tokens, n_ctx // 2))


def trim_to_fit(conversation: Conversation, count_tokens: Callable[[list[dict]], int], limit: int,
                target: int | None = None) -> TrimResult:
    """Drop the oldest exchanges while the prompt is over `limit` tokens.

    Once over, trimming goes down to `target` (default: `limit`), so that the next turns fit
    without dropping (and re-evaluating the conversation) again at every message. The system
    prompt and the newest user message are never dropped: if they alone are over `limit`,
    ContextOverflowError says by how much.
    """
    before = count_tokens(conversation.messages())
    if before <= limit:
        return TrimResult(0, before, before)
    goal = limit if target is None else min(target, limit)
    tokens, dropped, start = before, 0, conversation.window_start
    while tokens > goal:
        n = conversation.drop_oldest_exchange()
        if n == 0:
            break
        dropped += n
        tokens = count_tokens(conversation.messages())
    if tokens > limit:
        conversation.window_start = start  # nothing is dropped for a message that cannot be sent
        raise ContextOverflowError(
            f"this message needs {tokens} tokens with the system prompt, the context holds {limit} "
            f"(after room for the answer): {tokens - limit} tokens over",
            hint="shorten the message, raise --ctx, or lower max tokens with /set max-tokens N",
        )
    return TrimResult(dropped, before, tokens)


def answer_tokens(n_ctx: int, prompt_tokens: int, max_tokens: int) -> int:
    """Tokens this answer may generate: max tokens, or what is left of the window if less."""
    return max(1, min(max_tokens, n_ctx - prompt_tokens))


def context_meter(used: int, n_ctx: int) -> str:
    """`312/4096 tok (8%)`: the context window's fill, for the toolbar."""
    percent = 100 * used / n_ctx if n_ctx else 0.0
    return f"{used}/{n_ctx} tok ({percent:.0f}%)"


def meter_level(used: int, n_ctx: int) -> str:
    """ok | high (over 75%: old turns will be dropped soon) | full."""
    if n_ctx <= 0 or used >= n_ctx:
        return "full"
    return "high" if used > 0.75 * n_ctx else "ok"


# -- slash commands -------------------------------------------------------------------------
@dataclass(frozen=True)
class CommandSpec:
    name: str
    usage: str
    help: str
    needs_arg: bool = False
    aliases: tuple[str, ...] = ()


COMMANDS: tuple[CommandSpec, ...] = (
    CommandSpec("help", "/help", "list the commands"),
    CommandSpec("clear", "/clear", "start a new conversation (the system prompt stays)"),
    CommandSpec("undo", "/undo", "drop the last exchange"),
    CommandSpec("regen", "/regen", "sample the last answer again"),
    CommandSpec("system", "/system [TEXT|-]", "show, set, or (-) remove the system prompt"),
    CommandSpec("set", "/set [KEY VALUE]", "show or change sampling: temp, top-k, top-p, min-p, repeat-penalty, seed, max-tokens"),
    CommandSpec("show", "/show", "model, template, context, sampling and plan"),
    CommandSpec("load", "/load MODEL", "switch model, keep the conversation", needs_arg=True),
    CommandSpec("save", "/save [NAME]", "save the conversation as a session"),
    CommandSpec("open", "/open [NAME]", "open a saved session (no name: list them)"),
    CommandSpec("read", "/read FILE", "insert a text file into the next message", needs_arg=True),
    CommandSpec("lookup", "/lookup [on|off]", "speculative decoding with prompt-lookup drafts (no argument: show)"),
    CommandSpec("draft", "/draft [MODEL|off]", "speculative decoding with a small draft model (no argument: show)"),
    CommandSpec("think", "/think K", "reasoning mode: vote over K samples for the next answers (1: off)", needs_arg=True),
    CommandSpec("bye", "/bye", "leave", aliases=("exit", "quit")),
)
_BY_NAME = {name: spec for spec in COMMANDS for name in (spec.name, *spec.aliases)}


@dataclass(frozen=True)
class Command:
    name: str
    arg: str = ""


def parse_command(line: str) -> Command | None:
    """A slash command, or None when the line is a message (`//text` sends `/text`)."""
    text = line.strip()
    if not text.startswith("/") or text.startswith("//"):
        return None
    head, _, arg = text[1:].partition(" ")
    name = head.lower()
    if not name:
        return Command("help")
    spec = _BY_NAME.get(name)
    if spec is None:
        close = difflib.get_close_matches(name, list(_BY_NAME), n=1)
        hint = (f"did you mean /{close[0]}? " if close else "") + "/help lists the commands (start with // to send a slash)"
        raise UsageError(f"unknown command /{head}", hint=hint)
    arg = arg.strip()
    if spec.needs_arg and not arg:
        raise UsageError(f"/{spec.name} needs an argument", hint=f"usage: {spec.usage}")
    return Command(spec.name, arg)


def message_text(line: str) -> str:
    """What a non-command line sends: `//x` becomes `/x`."""
    stripped = line.lstrip()
    return stripped[1:] if stripped.startswith("//") else line


def parse_switch(name: str, arg: str) -> bool:
    """`on`/`off` (and the usual spellings) for a slash command's switch."""
    value = arg.strip().lower()
    if value in ("on", "1", "yes", "true"):
        return True
    if value in ("off", "0", "no", "false"):
        return False
    raise UsageError(f"/{name} takes on or off, got {arg!r}", hint=f"/{name} on")


def parse_think(arg: str) -> int:
    try:
        k = int(arg)
    except ValueError:
        k = 0
    if not 1 <= k <= 64:
        raise UsageError(f"/think needs a number of samples from 1 to 64, got {arg!r}", hint="/think 8 (or /think 1 to turn it off)")
    return k


# `/set KEY VALUE`: accepted spellings -> (field, parser)
_SETTINGS: dict[str, tuple[str, Callable[[str], object]]] = {}
for _names, _field, _parse in (
    (("temp", "temperature", "t"), "temperature", float),
    (("top-k", "top_k", "topk"), "top_k", int),
    (("top-p", "top_p", "topp"), "top_p", float),
    (("min-p", "min_p", "minp"), "min_p", float),
    (("repeat-penalty", "repeat_penalty"), "repeat_penalty", float),
    (("seed",), "seed", lambda v: None if v.lower() in ("random", "none") else int(v)),
    (("max-tokens", "max_tokens", "n"), "max_tokens", int),
):
    for _name in _names:
        _SETTINGS[_name] = (_field, _parse)


def parse_setting(arg: str) -> tuple[str, object]:
    """`temp 0.3` -> ("temperature", 0.3); unknown keys and bad values raise UsageError."""
    parts = arg.split()
    if len(parts) != 2:
        raise UsageError("usage: /set KEY VALUE", hint="keys: temp, top-k, top-p, min-p, repeat-penalty, seed, max-tokens")
    key, raw = parts[0].lower(), parts[1]
    if key not in _SETTINGS:
        raise UsageError(f"unknown setting {parts[0]!r}", hint="keys: temp, top-k, top-p, min-p, repeat-penalty, seed, max-tokens")
    name, parse = _SETTINGS[key]
    try:
        return name, parse(raw)
    except ValueError:
        raise UsageError(f"{parts[0]} needs a number, got {raw!r}") from None


def apply_setting(params: SamplingParams, max_tokens: int, name: str, value) -> tuple[SamplingParams, int]:
    """The sampling parameters and max tokens after `/set` (validated: a bad value raises)."""
    if name == "max_tokens":
        if not isinstance(value, int) or value < 1:
            raise UsageError(f"max-tokens must be >= 1, got {value}")
        return params, value
    return replace(params, **{name: value}).validated(), max_tokens


def settings_text(params: SamplingParams, max_tokens: int) -> str:
    seed = "random" if params.seed is None else params.seed
    return (f"temp {params.temperature} · top-k {params.top_k} · top-p {params.top_p} · min-p {params.min_p} · "
            f"repeat-penalty {params.repeat_penalty} · seed {seed} · max-tokens {max_tokens}")


def help_text() -> str:
    width = max(len(spec.usage) for spec in COMMANDS)
    lines = [f"  {spec.usage.ljust(width)}  {spec.help}" for spec in COMMANDS]
    lines += ["", '  """ starts and ends a multi-line message; Alt-Enter adds a line; // sends a leading slash.',
              "  Ctrl-C stops an answer; Ctrl-C on an empty line or Ctrl-D leaves."]
    return "\n".join(lines)


# -- input text -----------------------------------------------------------------------------
class MultilineCollector:
    """Joins lines between `\"\"\"` fences into one message (for line-by-line input)."""

    def __init__(self):
        self._lines: list[str] | None = None

    @property
    def open(self) -> bool:
        return self._lines is not None

    def feed(self, line: str) -> str | None:
        """The complete message when `line` ends one, else None (more lines needed)."""
        if self._lines is None:
            if not line.lstrip().startswith(MULTILINE_FENCE):
                return line
            rest = line.lstrip()[len(MULTILINE_FENCE):]
            if rest.rstrip().endswith(MULTILINE_FENCE):  # """one line"""
                return rest.rstrip()[: -len(MULTILINE_FENCE)]
            self._lines = [rest] if rest.strip() else []
            return None
        if line.rstrip().endswith(MULTILINE_FENCE):
            self._lines.append(line.rstrip()[: -len(MULTILINE_FENCE)])
            text, self._lines = "\n".join(self._lines).strip("\n"), None
            return text
        self._lines.append(line)
        return None


def fenced_block_open(text: str) -> bool:
    """True while an edited buffer starts a `\"\"\"` block that is not closed yet."""
    stripped = text.lstrip()
    if not stripped.startswith(MULTILINE_FENCE):
        return False
    body = stripped[len(MULTILINE_FENCE):]
    return not body.rstrip().endswith(MULTILINE_FENCE)


def strip_fences(text: str) -> str:
    """`\"\"\"a\\nb\"\"\"` -> `a\\nb` (a block typed in the line editor)."""
    stripped = text.strip()
    if stripped.startswith(MULTILINE_FENCE) and stripped.endswith(MULTILINE_FENCE) and len(stripped) >= 6:
        return stripped[3:-3].strip("\n")
    return text


_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")


def clean_message(text: str) -> str:
    """A message fit to send: terminal escapes and control characters removed.

    Text that is mostly not text (a paste of binary data) raises InputFormatError instead of
    reaching the model.
    """
    if "\x00" in text or _looks_binary(_ANSI_ESCAPE.sub("", text)):
        raise InputFormatError("that looks like binary data, not text: not sent",
                               hint="paste text, or /read a text file")
    return _CONTROL.sub("", _ANSI_ESCAPE.sub("", text))


def _looks_binary(text: str) -> bool:
    if not text:
        return False
    odd = len(_CONTROL.findall(text)) + text.count("\ufffd")
    return odd > max(2, len(text) // 20)


def read_text_file(path: str | Path) -> str:
    """A file's text for /read: UTF-8, not binary, at most MAX_READ_BYTES."""
    target = Path(path).expanduser()
    try:
        size = target.stat().st_size
        if size > MAX_READ_BYTES:
            raise UsageError(f"{target} is {size} bytes; /read takes files up to {MAX_READ_BYTES}")
        data = target.read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {target}: {exc.strerror or exc}") from None
    if b"\x00" in data:
        raise InputFormatError(f"{target} is a binary file, not text")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise InputFormatError(f"{target} is not UTF-8 text") from None


def with_attachments(message: str, attachments: list[tuple[str, str]]) -> str:
    """The message with /read files placed before it, each in a fenced block under its name."""
    parts = [f"{name}:\n```\n{text.rstrip()}\n```" for name, text in attachments]
    return "\n\n".join(parts + [message]) if message.strip() else "\n\n".join(parts)


# -- session files --------------------------------------------------------------------------
_SESSION_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


@dataclass
class SessionFile:
    conversation: Conversation
    model: str | None
    saved_at: float
    path: Path


def sessions_dir() -> Path:
    return data_dir("sessions")


def history_path() -> Path:
    """The line editor's history, kept across sessions."""
    return data_dir() / "chat_history"


def session_path(name: str) -> Path:
    """A session name -> its file under HEARTH_HOME/sessions; a path to a .json file is taken as is."""
    if name.endswith(".json") and ("/" in name or name.startswith("~")):
        return Path(name).expanduser()
    name = name[: -len(".json")] if name.endswith(".json") else name
    if not _SESSION_NAME.match(name):
        raise UsageError(f"bad session name {name!r}", hint="letters, digits, . _ - (up to 64)")
    return sessions_dir() / f"{name}.json"


def session_record(conversation: Conversation, model: str | None) -> dict:
    return {
        "format": SESSION_FORMAT,
        "version": SESSION_VERSION,
        "model": model,
        "saved_at": time.time(),
        "system": conversation.system,
        "window_start": conversation.window_start,
        "turns": [{"role": t.role, "content": t.content, **({"cut": True} if t.cut else {})} for t in conversation.turns],
    }


def save_session(name: str, conversation: Conversation, model: str | None) -> Path:
    path = session_path(name)
    with atomic_write(path, encoding="utf-8") as handle:
        json.dump(session_record(conversation, model), handle, ensure_ascii=False, indent=1)
        handle.write("\n")
    return path


def open_session(name: str) -> SessionFile:
    """A saved session; a missing, unreadable or damaged file is a one-line error (nothing changes)."""
    path = session_path(name)
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):  # a directory, or a FIFO that would block the read
            raise InputFormatError(f"session {path} is not a regular file: not opened")
        if info.st_size > MAX_SESSION_BYTES:
            raise _damaged(path, f"over {MAX_SESSION_BYTES >> 20} MiB, not a session hearth wrote")
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"no session named {name!r}", hint="/open with no name lists the saved sessions") from None
    except UnicodeDecodeError:
        raise InputFormatError(f"session {path} is not a JSON text file: not opened",
                               hint="the current conversation is unchanged") from None
    except OSError as exc:
        raise InputFormatError(f"cannot read session {path}: {exc.strerror or exc}") from None
    try:
        record = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputFormatError(f"session {path} is not valid JSON (line {exc.lineno}): not opened",
                               hint="the current conversation is unchanged") from None
    except (RecursionError, ValueError):  # nested too deep; a number Python will not convert
        raise _damaged(path, "not JSON hearth can read") from None
    conversation = session_from_record(record, path)
    model, saved_at = record.get("model"), record.get("saved_at") or 0
    if model is not None and not isinstance(model, str):
        raise _damaged(path, "model is not a name")
    if not isinstance(saved_at, (int, float)) or isinstance(saved_at, bool) or not math.isfinite(saved_at):
        raise _damaged(path, "saved_at is not a time")
    return SessionFile(conversation, model, float(saved_at), path)


def _damaged(path: Path | str, what: str) -> InputFormatError:
    return InputFormatError(f"session {path} is damaged: {what}: not opened", hint="the current conversation is unchanged")


def session_from_record(record, path: Path | str = "session") -> Conversation:
    """Validate a session record's shape; InputFormatError names the first problem."""
    bad = functools.partial(_damaged, path)
    if not isinstance(record, dict) or record.get("format") != SESSION_FORMAT:
        raise bad("not a hearth chat session")
    if record.get("version") != SESSION_VERSION:
        raise bad(f"unsupported version {record.get('version')!r}")
    system, turns = record.get("system"), record.get("turns")
    if system is not None and not isinstance(system, str):
        raise bad("system is not text")
    if not isinstance(turns, list):
        raise bad("no list of turns")
    parsed = []
    for i, turn in enumerate(turns):
        if (not isinstance(turn, dict) or turn.get("role") not in ("user", "assistant")
                or not isinstance(turn.get("content"), str)):
            raise bad(f"turn {i + 1} is not a user/assistant message")
        parsed.append(Turn(turn["role"], turn["content"], bool(turn.get("cut", False))))
    window_start = record.get("window_start", 0)
    if not isinstance(window_start, int) or isinstance(window_start, bool) or not 0 <= window_start <= len(parsed):
        raise bad("window_start is out of range")
    return Conversation(system, parsed, window_start)


def list_sessions() -> list[tuple[str, float, int]]:
    """(name, modified time, size in bytes) of every saved session, newest first."""
    found = [(p.stem, p.stat().st_mtime, p.stat().st_size) for p in sessions_dir().glob("*.json")]
    return sorted(found, key=lambda item: -item[1])
