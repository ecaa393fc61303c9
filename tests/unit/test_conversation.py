"""The chat's pure parts: conversation edits, slash commands, overflow trimming, sessions, input."""

from __future__ import annotations

import json

import pytest

from hearth.cli._output import markdown_stable_end
from hearth.errors import ContextOverflowError, InputFormatError, UsageError
from hearth.runtime import conversation as conv
from hearth.runtime.sampling import SamplingParams


def make(*turns: str, system: str | None = "Be brief.") -> conv.Conversation:
    """Alternating user/assistant turns from plain strings."""
    roles = ["user", "assistant"]
    return conv.Conversation(system, [conv.Turn(roles[i % 2], text) for i, text in enumerate(turns)])


def words(messages: list[dict]) -> int:
    """A stand-in tokenizer: one token per word, plus 4 per message for the template's markers."""
    return sum(len(m["content"].split()) + 4 for m in messages)


# -- conversation edits -----------------------------------------------------------------------
def test_messages_put_the_system_prompt_first_and_hide_dropped_turns():
    c = make("q1", "a1", "q2", "a2")
    assert c.messages()[0] == {"role": "system", "content": "Be brief."}
    c.window_start = 2
    assert [m["content"] for m in c.messages()] == ["Be brief.", "q2", "a2"]
    assert [m["content"] for m in make("q", system=None).messages()] == ["q"]


@pytest.mark.parametrize("turns, dropped, left", [
    (("q1", "a1", "q2", "a2"), 2, ["q1", "a1"]),
    (("q1", "a1", "q2"), 1, ["q1", "a1"]),  # an unanswered message goes alone
    (("q1",), 1, []),
    ((), 0, []),
])
def test_undo_drops_the_last_exchange(turns, dropped, left):
    c = make(*turns)
    assert c.undo() == dropped
    assert [t.content for t in c.turns] == left


def test_undo_never_reaches_into_dropped_turns():
    c = make("q1", "a1", "q2", "a2")
    c.window_start = 2
    assert c.undo() == 2 and c.undo() == 0
    assert [t.content for t in c.turns] == ["q1", "a1"]


def test_pop_answer_keeps_the_question_for_regen():
    c = make("q1", "a1", "q2", "a2")
    assert c.pop_answer() == "q2"
    assert [t.content for t in c.turns] == ["q1", "a1", "q2"]
    assert c.pop_answer() == "q2"  # nothing after it: unchanged
    with pytest.raises(UsageError, match="nothing to regenerate"):
        make().pop_answer()


def test_clear_keeps_the_system_prompt():
    c = make("q1", "a1")
    c.window_start = 1
    c.clear()
    assert c.turns == [] and c.window_start == 0 and c.system == "Be brief."


# -- overflow ---------------------------------------------------------------------------------
def test_trim_does_nothing_when_it_fits():
    c = make("q1", "a1", "q2")
    result = conv.trim_to_fit(c, words, limit=100)
    assert result == conv.TrimResult(0, result.tokens_before, result.tokens_before)
    assert c.window_start == 0


def test_trim_drops_whole_oldest_exchanges_keeping_system_and_newest():
    c = make("one two three", "four five six", "seven eight", "nine ten", "last question")
    # system 2+4, turns 3+4, 3+4, 2+4, 2+4, 2+4 -> 38 tokens
    assert words(c.messages()) == 38
    result = conv.trim_to_fit(c, words, limit=30)
    assert result.dropped_turns == 2 and result.tokens_before == 38 and result.tokens_after == 24
    assert c.window_start == 2
    assert [m["role"] for m in c.messages()] == ["system", "user", "assistant", "user"]
    assert len(c.turns) == 5  # the transcript keeps everything


def test_trim_goes_down_to_the_target_so_the_next_turns_fit():
    c = make("a b", "c d", "e f", "g h", "i j", "k l", "m n")
    result = conv.trim_to_fit(c, words, limit=40, target=30)
    assert result.tokens_after == 24 and c.messages()[1]["content"] == "i j"


def test_a_message_too_long_alone_is_refused_and_nothing_is_dropped():
    c = make("q1", "a1", "word " * 50)
    with pytest.raises(ContextOverflowError, match="tokens over"):
        conv.trim_to_fit(c, words, limit=30)
    assert c.window_start == 0


@pytest.mark.parametrize("n_ctx, max_tokens, reserve", [(4096, 512, 512), (256, 24, 24), (256, 1024, 128), (16, 1, 1)])
def test_reply_reserve_is_capped_at_half_the_window(n_ctx, max_tokens, reserve):
    assert conv.reply_reserve(n_ctx, max_tokens) == reserve


@pytest.mark.parametrize("n_ctx, prompt, max_tokens, allowed", [(256, 100, 24, 24), (256, 240, 100, 16), (256, 256, 10, 1)])
def test_answer_tokens_never_exceed_the_window(n_ctx, prompt, max_tokens, allowed):
    assert conv.answer_tokens(n_ctx, prompt, max_tokens) == allowed


@pytest.mark.parametrize("used, n_ctx, text, level", [
    (0, 4096, "0/4096 tok (0%)", "ok"),
    (312, 4096, "312/4096 tok (8%)", "ok"),
    (200, 256, "200/256 tok (78%)", "high"),
    (256, 256, "256/256 tok (100%)", "full"),
])
def test_context_meter(used, n_ctx, text, level):
    assert conv.context_meter(used, n_ctx) == text
    assert conv.meter_level(used, n_ctx) == level


# -- slash commands ---------------------------------------------------------------------------
@pytest.mark.parametrize("line, expected", [
    ("/help", conv.Command("help")),
    ("/", conv.Command("help")),
    ("  /undo  ", conv.Command("undo")),
    ("/set temp 0.3", conv.Command("set", "temp 0.3")),
    ("/SYSTEM You are terse.", conv.Command("system", "You are terse.")),
    ("/load  bartowski/Qwen2.5-0.5B-Instruct-GGUF:Q4_K_M", conv.Command("load", "bartowski/Qwen2.5-0.5B-Instruct-GGUF:Q4_K_M")),
    ("/quit", conv.Command("bye")),
    ("/exit", conv.Command("bye")),
    ("/think 8", conv.Command("think", "8")),
    ("hello", None),
    ("//etc/hosts is a file", None),
    ("what about /undo?", None),
])
def test_parse_command(line, expected):
    assert conv.parse_command(line) == expected


@pytest.mark.parametrize("line, message, hint", [
    ("/hepl", "unknown command /hepl", "did you mean /help"),
    ("/frobnicate", "unknown command /frobnicate", "/help lists"),
    ("/load", "/load needs an argument", "/load MODEL"),
    ("/read   ", "/read needs an argument", "/read FILE"),
])
def test_bad_commands_say_what_to_do(line, message, hint):
    with pytest.raises(UsageError) as info:
        conv.parse_command(line)
    assert info.value.message == message and hint in info.value.hint


def test_double_slash_sends_a_literal_slash():
    assert conv.message_text("//etc/hosts") == "/etc/hosts"
    assert conv.message_text("plain") == "plain"


@pytest.mark.parametrize("arg, expected", [
    ("temp 0.3", ("temperature", 0.3)),
    ("TOP-K 20", ("top_k", 20)),
    ("top_p 0.9", ("top_p", 0.9)),
    ("min-p 0", ("min_p", 0.0)),
    ("repeat-penalty 1.1", ("repeat_penalty", 1.1)),
    ("seed 7", ("seed", 7)),
    ("seed random", ("seed", None)),
    ("max-tokens 64", ("max_tokens", 64)),
    ("n 10", ("max_tokens", 10)),
])
def test_parse_setting(arg, expected):
    assert conv.parse_setting(arg) == expected


@pytest.mark.parametrize("arg, message", [("temp", "usage"), ("warmth 3", "unknown setting"), ("top-k many", "needs a number")])
def test_parse_setting_errors(arg, message):
    with pytest.raises(UsageError, match=message):
        conv.parse_setting(arg)


def test_apply_setting_validates():
    params = SamplingParams()
    new, n = conv.apply_setting(params, 100, "temperature", 0.2)
    assert new.temperature == 0.2 and n == 100 and params.temperature == 0.8
    assert conv.apply_setting(params, 100, "max_tokens", 5) == (params, 5)
    assert conv.apply_setting(SamplingParams(seed=3), 1, "seed", None)[0].seed is None
    with pytest.raises(UsageError):
        conv.apply_setting(params, 100, "temperature", 9.0)
    with pytest.raises(UsageError):
        conv.apply_setting(params, 100, "max_tokens", 0)


@pytest.mark.parametrize("arg, k", [("1", 1), ("8", 8), ("64", 64)])
def test_parse_think(arg, k):
    assert conv.parse_think(arg) == k


@pytest.mark.parametrize("arg", ["0", "65", "many", ""])
def test_parse_think_rejects(arg):
    with pytest.raises(UsageError):
        conv.parse_think(arg)


def test_help_lists_every_command():
    text = conv.help_text()
    for spec in conv.COMMANDS:
        assert spec.usage in text


# -- input ------------------------------------------------------------------------------------
def test_multiline_collector():
    collector = conv.MultilineCollector()
    assert collector.feed("single line") == "single line"
    assert collector.feed('"""') is None and collector.open
    assert collector.feed("first") is None
    assert collector.feed("") is None
    assert collector.feed('second"""') == "first\n\nsecond"
    assert not collector.open
    assert collector.feed('"""inline"""') == "inline"
    assert collector.feed('"""start here') is None
    assert collector.feed('end"""') == "start here\nend"


@pytest.mark.parametrize("text, is_open", [
    ('"""', True), ('"""\nabc', True), ('"""\nabc\n"""', False), ('"""abc"""', False), ("abc", False),
])
def test_fenced_block_open(text, is_open):
    assert conv.fenced_block_open(text) == is_open


def test_strip_fences():
    assert conv.strip_fences('"""\nline 1\nline 2\n"""') == "line 1\nline 2"
    assert conv.strip_fences("no fences") == "no fences"


@pytest.mark.parametrize("text, cleaned", [
    ("hello", "hello"),
    ("tab\tand\nnewline", "tab\tand\nnewline"),
    ("\x1b[31mred\x1b[0m text", "red text"),
    ("bell\x07 in text", "bell in text"),
    ("ünïcödé ✓", "ünïcödé ✓"),
])
def test_clean_message(text, cleaned):
    assert conv.clean_message(text) == cleaned


@pytest.mark.parametrize("junk", ["a\x00b", "\x01\x02\x03\x04\x05\x06junk", "\ufffd\ufffd\ufffd\ufffdxx", bytes(range(256)).decode("latin-1")])
def test_binary_junk_is_refused(junk):
    with pytest.raises(InputFormatError, match="binary"):
        conv.clean_message(junk)


def test_read_text_file(tmp_path):
    good = tmp_path / "notes.txt"
    good.write_text("line one\nline two\n", encoding="utf-8")
    assert conv.read_text_file(good) == "line one\nline two\n"
    binary = tmp_path / "blob.bin"
    binary.write_bytes(b"\x7fELF\x00\x01")
    with pytest.raises(InputFormatError, match="binary"):
        conv.read_text_file(binary)
    latin = tmp_path / "latin.txt"
    latin.write_bytes("café".encode("latin-1"))
    with pytest.raises(InputFormatError, match="UTF-8"):
        conv.read_text_file(latin)
    with pytest.raises(UsageError, match="cannot read"):
        conv.read_text_file(tmp_path / "missing.txt")


def test_with_attachments():
    text = conv.with_attachments("Summarize it.", [("a.txt", "alpha\n")])
    assert text == "a.txt:\n```\nalpha\n```\n\nSummarize it."
    assert conv.with_attachments("", [("a.txt", "x")]) == "a.txt:\n```\nx\n```"


# -- sessions ---------------------------------------------------------------------------------
def test_session_round_trip(isolated_home):
    c = make("q1", "a1", "q2", "a2 (cut)")
    c.turns[-1].cut = True
    c.window_start = 2
    path = conv.save_session("work", c, "default")
    assert path == isolated_home / "sessions" / "work.json"
    opened = conv.open_session("work")
    assert opened.conversation == c and opened.model == "default" and opened.saved_at > 0
    assert conv.open_session("work.json").conversation == c
    assert [name for name, _, _ in conv.list_sessions()] == ["work"]
    assert not list((isolated_home / "sessions").glob(".*"))  # no temp file left behind


@pytest.mark.parametrize("name", ["../escape", "a/b", "a b", "", ".hidden", "x" * 65])
def test_bad_session_names(name):
    with pytest.raises(UsageError, match="bad session name"):
        conv.session_path(name)


def test_a_json_path_is_taken_as_a_path(tmp_path, isolated_home):
    path = conv.save_session(str(tmp_path / "elsewhere.json"), make("q", "a"), None)
    assert path == tmp_path / "elsewhere.json"
    assert conv.open_session(str(path)).conversation == make("q", "a")
    assert conv.session_path("plain.json") == isolated_home / "sessions" / "plain.json"


def test_a_binary_session_file_is_refused(isolated_home):
    (conv.sessions_dir() / "bin.json").write_bytes(b"\xa1\xff\x00junk")
    with pytest.raises(InputFormatError, match="not a JSON text file"):
        conv.open_session("bin")


def test_open_missing_session(isolated_home):
    with pytest.raises(UsageError, match="no session named"):
        conv.open_session("nope")


@pytest.mark.parametrize("content, message", [
    ('{"format": "hearth-chat-ses', "not valid JSON"),
    ("[1, 2]", "not a hearth chat session"),
    ('{"format": "hearth-chat-session", "version": 99, "turns": []}', "unsupported version"),
    ('{"format": "hearth-chat-session", "version": 1, "turns": {}}', "no list of turns"),
    ('{"format": "hearth-chat-session", "version": 1, "turns": [{"role": "tool", "content": "x"}]}', "turn 1"),
    ('{"format": "hearth-chat-session", "version": 1, "turns": [{"role": "user", "content": 3}]}', "turn 1"),
    ('{"format": "hearth-chat-session", "version": 1, "system": 5, "turns": []}', "system is not text"),
    ('{"format": "hearth-chat-session", "version": 1, "turns": [], "window_start": 4}', "window_start"),
])
def test_corrupt_sessions_are_refused(isolated_home, content, message):
    (conv.sessions_dir() / "bad.json").write_text(content, encoding="utf-8")
    with pytest.raises(InputFormatError, match=message):
        conv.open_session("bad")


def test_session_file_is_plain_json(isolated_home):
    conv.save_session("s", make("q", "a"), None)
    record = json.loads((isolated_home / "sessions" / "s.json").read_text())
    assert record["format"] == conv.SESSION_FORMAT and record["turns"][1] == {"role": "assistant", "content": "a"}


# -- streamed Markdown ------------------------------------------------------------------------
@pytest.mark.parametrize("text, stable", [
    ("one paragraph", ""),
    ("para one\n\n", ""),  # the next block has not started: it may still be indented
    ("para one\n\npara two", "para one\n\n"),
    ("```\ncode\n\nmore code\n```\n\nafter", "```\ncode\n\nmore code\n```\n\n"),
    ("```py\nx = 1\n\ny", ""),  # inside an open fence nothing is final
    ("- item\n\n  continued\n\nnext", "- item\n\n  continued\n\n"),
])
def test_markdown_stable_end(text, stable):
    assert text[: markdown_stable_end(text)] == stable
