"""`hearth chat` driven in a real pseudo-terminal (pexpect) with the embedded default model.

The terminal side is real: prompt_toolkit reads the keys, rich draws the streamed Markdown, and
the test answers prompt_toolkit's cursor-position requests the way a terminal emulator does (so
the bottom toolbar with the context meter is drawn). Greedy sampling, a fixed seed and short
answers keep each session fast.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow  # end to end through real llama.cpp: seconds per test

pexpect = pytest.importorskip("pexpect")

MAIN = "from hearth.cli.app import main; main()"
CPR_REQUEST = "\x1b[6n"
# The bottom toolbar: "<model> · USED/CTX tok (P%)"; drawn again each time a new prompt opens.
TOOLBAR = re.compile(r"embedded\) · (\d+)/(\d+) tok \((\d+)%\)")
ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[()][0-9A-Za-z]|\r")
FAST = ["--temp", "0", "--seed", "1", "-n", "24"]


def plain(text: str) -> str:
    return ANSI.sub("", text)


class Chat:
    """One `hearth chat` in a pty; `say` sends a line and returns what was printed until the next prompt."""

    def __init__(self, *args: str):
        env = dict(os.environ, TERM="xterm-256color", COLUMNS="120", LINES="40", NO_COLOR="")
        self.child = pexpect.spawn(sys.executable, ["-c", MAIN, "chat", *args], env=env, encoding="utf-8",
                                   codec_errors="replace", dimensions=(40, 120), timeout=120)
        self.meter = self.ready()[0]

    def expect(self, pattern) -> str:
        """Wait for `pattern`, answering cursor-position requests on the way; return the text before it."""
        seen = []
        while True:
            index = self.child.expect([pattern, re.escape(CPR_REQUEST)])
            seen.append(self.child.before)
            if index == 0:
                return "".join(seen)
            self.child.send("\x1b[1;1R")

    def ready(self) -> tuple[tuple[int, int], str]:
        """Wait for a fresh prompt; return the meter (used, ctx) and the plain text before it."""
        before = self.expect(TOOLBAR)
        match = self.child.match
        return (int(match.group(1)), int(match.group(2))), plain(before)

    def say(self, line: str) -> str:
        self.child.sendline(line)
        self.meter, self.text = self.ready()
        return self.text

    def close(self) -> int:
        if self.child.isalive():
            self.child.sendcontrol("d")
            self.child.expect(pexpect.EOF)
        self.child.close()
        return self.child.exitstatus


@pytest.fixture
def chat_factory():
    chats = []

    def start(*args: str) -> Chat:
        chats.append(Chat(*args))
        return chats[-1]

    yield start
    for chat in chats:
        if chat.child.isalive():
            chat.child.terminate(force=True)


def test_stream_undo_regen_commands_and_sessions(chat_factory, isolated_home):
    chat = chat_factory(*FAST)
    assert chat.meter[0] == 0 and chat.meter[1] >= 512

    text = chat.say("Hi!")
    assert "Hello" in text  # the streamed answer (greedy: "Hello! How can I help you today?")
    after_first = chat.meter[0]
    assert after_first > 10

    assert "dropped the last exchange" in chat.say("/undo")
    assert chat.meter[0] == 0
    assert "nothing to undo" in chat.say("/undo")

    assert chat.say("Name three colors.").strip()
    regen = chat.say("/regen")
    assert plain(regen).strip() and "error" not in regen
    assert re.search(r"turns\s+2\b", chat.say("/show"))  # /regen replaced the answer, not added one

    typo = chat.say("/hepl")
    assert "unknown command /hepl" in typo and "did you mean /help" in typo
    assert "/regen" in chat.say("/help") and "/think K" in chat.text
    shown = chat.say("/load /nonexistent/model.gguf")
    assert "model file not found" in shown and "still chatting with SmolLM2" in shown
    broken = isolated_home / "broken.gguf"
    broken.write_bytes(b"GGUF\x03\x00\x00\x00" + b"\xff" * 64)  # a GGUF header cut short
    shown = chat.say(f"/load {broken}")
    assert "error:" in shown and "still chatting with SmolLM2" in shown
    assert chat.say("Thanks!").strip()

    assert "saved 4 turns" in chat.say("/save s1")
    assert "new conversation" in chat.say("/clear") and chat.meter[0] == 0
    assert "opened s1: 4 turns" in chat.say("/open s1")
    assert chat.meter[0] > after_first
    saved = json.loads((isolated_home / "sessions" / "s1.json").read_text())
    assert [t["role"] for t in saved["turns"]] == ["user", "assistant"] * 2
    assert [saved["turns"][0]["content"], saved["turns"][2]["content"]] == ["Name three colors.", "Thanks!"]

    (isolated_home / "sessions" / "bad.json").write_text('{"format": "hearth-chat-ses')
    opened = chat.say("/open bad")
    assert "not valid JSON" in opened and "unchanged" in opened
    assert re.search(r"turns\s+4\b", chat.say("/show"))

    # A paste of binary junk (bracketed paste, as a terminal sends it) is refused, not sent.
    chat.child.send("\x1b[200~\x01\x02\x03\x04\x05\x06\x07\x08\x0e\x0f\x10\x11\x12\x13\x14\x15junk\x1b[201~")
    assert "binary data" in chat.say("")
    assert re.search(r"turns\s+4\b", chat.say("/show"))

    # A """ block, a paste of several lines, and Alt-Enter each make one message.
    chat.child.sendline('"""')
    chat.child.sendline("Say hello")
    chat.say('in French."""')
    chat.child.send("\x1b[200~Line one of a paste\nline two of the paste\x1b[201~")
    chat.say("")
    chat.child.send("First line\x1b\r")  # Alt-Enter: a new line, not sent yet
    chat.say("second line")
    assert re.search(r"turns\s+10\b", chat.say("/show"))
    assert chat.close() == 0
    history = (isolated_home / "chat_history").read_text()  # kept for the next session
    assert "+Hi!" in history and "+Line one of a paste" in history and "+second line" in history
    saved_turns = [t["content"] for t in json.loads((isolated_home / "sessions" / "s1.json").read_text())["turns"]]
    assert len(saved_turns) == 4  # /save wrote once; only --session saves after every step


def test_ctrl_c_cuts_the_answer_and_the_session_goes_on(chat_factory):
    chat = chat_factory("--temp", "0", "--seed", "1", "-n", "400", "-v")
    chat.child.sendline("Tell me a very long story about a dragon.")
    chat.child.expect(re.escape("\x1b[?2004l"))  # the line editor let go of the terminal
    # The answer is streaming: greedy, it opens "There are many stories about dragons, ..." and
    # goes on for hundreds of tokens.
    chat.child.expect("stories", timeout=120)
    chat.child.sendintr()
    chat.meter, cut = chat.ready()
    assert "answer cut" in cut
    assert chat.meter[0] > 20
    assert re.search(r"turns\s+2\b", chat.say("/show"))
    assert "max-tokens 16" in chat.say("/set max-tokens 16")
    after = chat.say("Thanks, that is enough.")
    # The cut answer's KV cache was kept: the next turn evaluates only the new message.
    stats = re.search(r"prompt (\d+) tok: (\d+) evaluated, (\d+) reused", after)
    assert stats and int(stats.group(2)) < 30 and int(stats.group(3)) > int(stats.group(1)) - 30
    assert re.search(r"turns\s+4\b", chat.say("/show"))
    # Ctrl-C at an empty prompt leaves cleanly.
    chat.child.sendintr()
    chat.child.expect(pexpect.EOF)
    chat.child.close()
    assert chat.child.exitstatus == 0


def test_small_context_drops_old_turns_and_keeps_going(chat_factory):
    chat = chat_factory("--ctx", "256", *FAST)
    assert chat.meter[1] == 256
    long_message = "Here is some background about my garden, my tomatoes and my roses. " * 4
    notices = ""
    for i in range(6):
        notices += chat.say(f"{i}: {long_message} What should I plant next?")
        assert chat.meter[0] <= 256
    assert "dropped the" in notices and "oldest turns" in notices
    assert "error" not in notices
    shown = chat.say("/show")
    assert "dropped from the window" in shown
    # A single message larger than the whole window is refused with a clear message, and
    # nothing is dropped for it.
    before = chat.meter
    refused = chat.say("tomato " * 400)
    assert "tokens over" in refused and chat.meter == before
    assert shown.split("turns", 1)[1].split("\n", 1)[0] == chat.say("/show").split("turns", 1)[1].split("\n", 1)[0]
    assert chat.say("Short question: what is a rose?").strip()
    assert chat.close() == 0


def test_piped_stdin_answers_on_stdout(isolated_home, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("The shed key is under the blue pot.\n")
    script = (f'Hi!\n/foo\n"""\nTwo lines\nof text\n"""\n\x00\x01\x02\x03binary\n/system Answer in one word.\n'
              f'/set temp 0.5\n/read {notes}\nWhere is the key?\n/read {tmp_path / "missing.txt"}\n/save piped\n')
    result = subprocess.run([sys.executable, "-c", MAIN, "chat", *FAST], input=script.encode(),
                            capture_output=True, timeout=60)
    assert result.returncode == 0, result.stderr.decode()
    stderr = result.stderr.decode()
    assert "unknown command /foo" in stderr and "binary data" in stderr and "cannot read" in stderr
    assert "temp 0.5" in stderr and "goes with your next message" in stderr
    assert result.stdout.decode().strip()  # the answers
    assert "\x1b[" not in result.stdout.decode()  # plain text, not a terminal rendering
    saved = json.loads((isolated_home / "sessions" / "piped.json").read_text())
    users = [t["content"] for t in saved["turns"] if t["role"] == "user"]
    assert users[:2] == ["Hi!", "Two lines\nof text"] and len(saved["turns"]) == 6
    assert users[2].startswith("notes.txt:\n```\nThe shed key") and users[2].endswith("Where is the key?")
    assert saved["system"] == "Answer in one word."


def test_think_votes_over_samples_in_a_pipe():
    script = "/think 3\nWhat is 2+3? Answer with a number.\n/think 1\n"
    result = subprocess.run([sys.executable, "-c", MAIN, "chat", "--seed", "1", "-n", "32"], input=script.encode(),
                            capture_output=True, timeout=60)
    assert result.returncode == 0, result.stderr.decode()
    stderr = result.stderr.decode()
    assert "vote over 3 samples" in stderr and "reasoning mode off" in stderr
    votes = re.search(r"votes (.+) · (\d) samples", stderr)
    assert votes and 1 <= int(votes.group(2)) <= 3  # adaptive voting may settle before the third
    answer = result.stdout.decode().strip()
    assert answer and answer in votes.group(1)  # the voted answer is printed on stdout


def test_session_flag_resumes_and_saves_after_every_step(isolated_home):
    def chat_in(script: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-c", MAIN, "chat", "--session", "garden", *FAST],
                              input=script.encode(), capture_output=True, timeout=60)

    first = chat_in("Hi!\n/system Be terse.\n")
    assert first.returncode == 0, first.stderr.decode()
    saved = json.loads((isolated_home / "sessions" / "garden.json").read_text())
    assert len(saved["turns"]) == 2 and saved["system"] == "Be terse."  # saved after the command too
    second = chat_in("Thanks!\n")
    assert "opened garden: 2 turns" in second.stderr.decode()
    saved = json.loads((isolated_home / "sessions" / "garden.json").read_text())
    assert [t["content"] for t in saved["turns"] if t["role"] == "user"] == ["Hi!", "Thanks!"]
    (isolated_home / "sessions" / "garden.json").write_text("{not json")
    broken = chat_in("Hello?\n")
    assert broken.returncode != 0 and "not valid JSON" in broken.stderr.decode()
    assert (isolated_home / "sessions" / "garden.json").read_text() == "{not json"  # not overwritten


def test_ctrl_r_finds_a_line_from_an_earlier_session(chat_factory, isolated_home):
    first = chat_factory(*FAST)
    assert first.say("Tell me one zebra fact.").strip()
    assert first.say("What is two plus two?").strip()
    assert first.close() == 0

    second = chat_factory(*FAST)
    second.child.send("\x12")  # Ctrl-R: reverse incremental search through the saved history
    second.child.send("zebra")
    second.expect("I-search backward:")
    second.expect("Tell me one ")  # the match is shown while typing (its "zebra" highlighted)
    second.child.send("\r")  # Enter ends the search with the match in the edit buffer
    second.say("")  # Enter again sends it
    assert "saved 2 turns" in second.say("/save found")
    turns = json.loads((isolated_home / "sessions" / "found.json").read_text())["turns"]
    assert turns[0] == {**turns[0], "role": "user", "content": "Tell me one zebra fact."}
