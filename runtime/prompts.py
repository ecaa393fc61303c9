"""The reasoning prompt: step-by-step work that ends with an answer line `voting` can read.

The answer line asked for is the first form each extractor looks for (see `runtime/answers.py`),
so a sample that follows the instruction votes, and its sequence can stop as soon as that line is
written (`answer_line_complete`). The instruction follows the question, the way math-tuned
instruct models (Qwen2.5 among them) were trained to see it.
"""

from __future__ import annotations

from dataclasses import dataclass

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


# --- The reasoning prompt per model family -------------------------------------------------------
#
# Models answer best in the form they were trained on, where that is known — and measured where a
# model is here. Qwen2.5-Math and DeepSeek-R1's distillations document "Please reason step by step,
# and put your final answer within \boxed{}." (Qwen's as the system prompt, DeepSeek-R1's inside the
# user turn: its model card says no system prompt). For Qwen2.5-Coder-1.5B it was measured here
# (GSM8K train 0-99, greedy, paired): hearth's `#### <number>` instruction 70% right with 289 tokens
# per answer, Qwen's math system prompt 64% with 313 (-6 points, 95% interval -13.8 to +1.8) — so
# Qwen's general and Coder models keep hearth's instruction. Every style asks for a form that the
# extractors of the modes it serves read first (`\boxed{}` for number, choice, boxed and auto), so
# `--answer` chooses only what is extracted.

BOXED_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."
# Modes whose extractor reads `\boxed{...}` before anything else (runtime/answers.py).
_BOXED_READERS = ("number", "choice", "boxed", "auto")


@dataclass(frozen=True)
class ReasoningStyle:
    name: str  # "boxed-system" | "boxed-user" | "hearth"
    why: str  # what chose it, for -v

    def messages(self, messages: list[dict], answer: str) -> list[dict]:
        """The conversation with this style's instruction, for reasoning with `--answer answer`."""
        if not messages or messages[-1].get("role") != "user":
            return messages
        kind = parse_answer_mode(answer).kind
        if self.name == "hearth" or kind not in _BOXED_READERS:
            return _hearth_messages(messages, answer)
        last = messages[-1]
        has_system = any(m.get("role") == "system" for m in messages)
        if self.name == "boxed-system" and not has_system:
            return [{"role": "system", "content": BOXED_INSTRUCTION}] + messages
        # DeepSeek-R1 style, or the user brought their own system prompt: the instruction follows
        # the question in the user's turn.
        return messages[:-1] + [{**last, "content": f"{str(last['content']).strip()}\n{BOXED_INSTRUCTION}"}]


HEARTH_STYLE = ReasoningStyle("hearth", "hearth's own instruction (no trained reasoning prompt known for this model)")


def _hearth_messages(messages: list[dict], answer: str) -> list[dict]:
    # hearth's instruction for the number mode only: elsewhere the question is left as written.
    if parse_answer_mode(answer).kind != "number":
        return messages
    return messages[:-1] + [{**messages[-1], "content": reasoning_prompt(messages[-1]["content"], answer)}]


def reasoning_style(architecture: str, name: str = "", chat_template: str | None = None,
                    also: str = "") -> ReasoningStyle:
    """The reasoning prompt a model was trained with, from its GGUF architecture, name and chat
    template (`general.architecture`, `general.name`/`general.basename`, `tokenizer.chat_template`)."""
    arch = (architecture or "").lower()
    label = f"{name} {also}".lower()  # `also`: more name keys to match (basename, finetune), not shown
    template = chat_template or ""
    if "deepseek-r1" in label or "deepseek_r1" in label or "r1-distill" in label:
        return ReasoningStyle("boxed-user", f"DeepSeek-R1 model ({name}): its trained instruction in the user turn")
    is_qwen = arch.startswith("qwen") or "qwen" in label or ("<|im_start|>" in template and "Qwen" in template)
    if is_qwen and "math" in label:
        return ReasoningStyle("boxed-system", f"Qwen math model ({name}): Qwen's math system prompt")
    if is_qwen:
        return ReasoningStyle("hearth", f"Qwen model ({architecture}, {name or 'unnamed'}): hearth's instruction "
                                        "(measured on Qwen2.5-Coder-1.5B, GSM8K greedy: 70% right against 64% "
                                        "with Qwen's math prompt, 8% fewer tokens)")
    return HEARTH_STYLE


def style_for_gguf(metadata: dict) -> ReasoningStyle:
    """`reasoning_style` from a GGUF's metadata."""
    name = str(metadata.get("general.name") or metadata.get("general.basename") or "")
    also = " ".join(str(metadata.get(k, "")) for k in ("general.basename", "general.finetune"))
    template = metadata.get("tokenizer.chat_template")
    return reasoning_style(str(metadata.get("general.architecture", "")), name,
                           template if isinstance(template, str) else None, also)


STYLES = {"boxed-system": ReasoningStyle("boxed-system", "chosen by name"),
          "boxed-user": ReasoningStyle("boxed-user", "chosen by name"), "hearth": HEARTH_STYLE}
