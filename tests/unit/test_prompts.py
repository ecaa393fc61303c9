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


# --- The reasoning prompt per model family ---------------------------------------------------------

from hearth.runtime.prompts import BOXED_INSTRUCTION, HEARTH_STYLE, reasoning_style, style_for_gguf  # noqa: E402

QUESTION = [{"role": "user", "content": "What is 6 times 7?"}]


@pytest.mark.parametrize(
    ("arch", "name", "style"),
    [
        ("qwen2", "Qwen2.5 Coder 1.5B Instruct", "hearth"),  # measured: see runtime/prompts.py
        ("qwen2", "Qwen2.5 Math 1.5B Instruct", "boxed-system"),
        ("qwen3", "qwen3-math", "boxed-system"),
        ("llama", "Qwen2.5-Math-7B-Instruct (llama-fied)", "boxed-system"),
        ("qwen2", "DeepSeek-R1-Distill-Qwen-1.5B", "boxed-user"),
        ("llama", "SmolLM2 135M Instruct", "hearth"),
        ("gemma3", "Gemma 3 270m", "hearth"),
        ("", "", "hearth"),
    ],
)
def test_the_style_follows_the_model_family(arch, name, style):
    assert reasoning_style(arch, name).name == style
    assert reasoning_style(arch, name).why  # -v has something to say


def test_style_from_gguf_metadata_reads_the_name_keys():
    meta = {"general.architecture": "llama", "general.basename": "DeepSeek-R1-Distill-Llama", "general.name": "x"}
    assert style_for_gguf(meta).name == "boxed-user"
    assert style_for_gguf({"general.architecture": "qwen2", "general.name": "Qwen2.5 Math 7B"}).name == "boxed-system"
    assert style_for_gguf({"general.architecture": "qwen2"}).name == "hearth"
    assert style_for_gguf({}).name == "hearth"


@pytest.mark.parametrize("mode", ["number", "choice", "boxed", "auto"])
def test_qwen_math_style_adds_its_system_prompt_and_keeps_the_question(mode):
    out = reasoning_style("qwen2", "Qwen2.5-Math").messages(QUESTION, mode)
    assert out == [{"role": "system", "content": BOXED_INSTRUCTION}] + QUESTION
    assert QUESTION == [{"role": "user", "content": "What is 6 times 7?"}]  # not mutated


def test_qwen_math_style_with_a_users_system_prompt_puts_the_instruction_in_the_user_turn():
    convo = [{"role": "system", "content": "Be terse."}] + QUESTION
    out = reasoning_style("qwen2", "Qwen2.5-Math").messages(convo, "number")
    assert out[0] == convo[0] and len(out) == 2
    assert out[1]["content"] == f"What is 6 times 7?\n{BOXED_INSTRUCTION}"


def test_deepseek_style_asks_in_the_user_turn():
    out = reasoning_style("qwen2", "DeepSeek-R1-Distill-Qwen-7B").messages(QUESTION, "number")
    assert out == [{"role": "user", "content": f"What is 6 times 7?\n{BOXED_INSTRUCTION}"}]


@pytest.mark.parametrize("mode", ["line", "regex:ANSWER: (\\w+)"])
def test_modes_that_do_not_read_boxed_answers_keep_hearths_wording(mode):
    assert reasoning_style("qwen2", "Qwen2.5-Math").messages(QUESTION, mode) == HEARTH_STYLE.messages(QUESTION, mode) == QUESTION


def test_hearth_style_instructs_the_number_mode_only():
    assert HEARTH_STYLE.messages(QUESTION, "number")[-1]["content"] == reasoning_prompt("What is 6 times 7?", "number")
    assert HEARTH_STYLE.messages(QUESTION, "auto") == QUESTION


@pytest.mark.parametrize("mode", ["number", "choice", "boxed", "auto"])
def test_a_boxed_answer_is_read_by_every_mode_the_boxed_style_serves(mode):
    response = "6 * 7 = 42.\n\\boxed{42}" if mode != "choice" else "It is option C.\n\\boxed{C}"
    assert final_answer(response, mode) == ("C" if mode == "choice" else "42")
    assert answer_line_complete(response, mode)


def test_the_last_message_not_from_the_user_is_left_alone():
    convo = QUESTION + [{"role": "assistant", "content": "42"}]
    assert reasoning_style("qwen2", "Qwen2.5-Math").messages(convo, "number") == convo
