"""The reasoning prompt asks for exactly the answer line the extractor reads first."""

from __future__ import annotations

import pytest

from hearth.errors import UsageError
from hearth.runtime.prompts import answer_line_hint, reasoning_prompt
from hearth.runtime.answers import answer_line_complete, final_answer


@pytest.mark.parametrize(
    ("mode", "marker"),
    [
        ("number", '"#### <number>"'),
        ("choice", '"Answer: <letter>"'),
        ("boxed", "\\boxed{}"),
        ("auto", '"Answer: <answer>"'),
        ("line", "last line"),
    ],
)
def test_prompt_ends_with_the_answer_line_instruction(mode, marker):
    prompt = reasoning_prompt("  What is 6 times 7?\n", mode)
    assert prompt.startswith("What is 6 times 7?\n\nThink step by step. ")
    assert marker in answer_line_hint(mode)
    assert prompt.endswith(answer_line_hint(mode))


def test_regex_mode_asks_for_no_particular_line():
    assert answer_line_hint("regex:ANSWER: (\\w+)") == ""
    assert reasoning_prompt("Q?", "regex:ANSWER: (\\w+)") == "Q?\n\nThink step by step."


@pytest.mark.parametrize(
    ("mode", "response", "answer"),
    [
        ("number", "6 * 7 = 42 apples.\n#### 42\n", "42"),
        ("choice", "6 * 7 = 42, which is option C.\nAnswer: C\n", "C"),
        ("boxed", "6 * 7 = 42, so the answer is \\boxed{42}", "42"),
        ("auto", "6 * 7 = 42.\nAnswer: 42\n", "42"),
    ],
)
def test_a_response_that_follows_the_prompt_votes_and_stops(mode, response, answer):
    """What the hint asks for is what the extractor reads, and what ends the sequence early."""
    assert final_answer(response, mode) == answer
    assert answer_line_complete(response, mode)


def test_empty_question_or_bad_mode_is_a_usage_error():
    with pytest.raises(UsageError):
        reasoning_prompt("   ", "number")
    with pytest.raises(UsageError):
        reasoning_prompt("Q?", "numbers")
