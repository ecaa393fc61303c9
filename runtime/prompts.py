"""The reasoning prompt: step-by-step work that ends with an answer line `voting` can read.

The answer line asked for is the first form each extractor looks for (see `runtime/answers.py`),
so a sample that follows the instruction votes, and its sequence can stop as soon as that line is
written (`answer_line_complete`). The instruction follows the question, the way math-tuned
instruct models (Qwen2.5 among them) were trained to see it.
"""

from __future__ import annotations

from ..errors import UsageError
from .answers import parse_answer_mode

_ANSWER_LINE_HINTS = {
    "number": 'End with a final line of the form "#### <number>": the number alone, no units.',
    "choice": 'End with a final line of the form "Answer: <letter>", where <letter> is one of A, B, C, D, E.',
    "boxed": "Put the final answer within \\boxed{}.",
    "auto": 'End with a final line of the form "Answer: <answer>".',
    "line": "Write the final answer alone on the last line.",
    # A user's regex says what to look for, not how to ask for it: no line is imposed.
    "regex": "",
}


def answer_line_hint(mode: str) -> str:
    """The instruction that makes a model write the answer line `mode` extracts ('' for regex)."""
    return _ANSWER_LINE_HINTS[parse_answer_mode(mode).kind]


def reasoning_prompt(question: str, mode: str) -> str:
    """The question, then: think step by step, and end with the answer line for `mode`."""
    question = question.strip()
    if not question:
        raise UsageError("the question is empty", hint="pass the question as the prompt or on stdin")
    hint = answer_line_hint(mode)
    instruction = "Think step by step." + (f" {hint}" if hint else "")
    return f"{question}\n\n{instruction}"
