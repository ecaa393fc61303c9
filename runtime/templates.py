"""Chat templates: taken from the GGUF metadata, rendered in a sandboxed Jinja environment.

A model with no template (a base model) runs as plain completion; hearth never invents one.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import datetime

from ..errors import HearthError


class TemplateError(HearthError):
    """The model's chat template failed to render."""


@dataclass(frozen=True)
class PromptText:
    text: str
    templated: bool  # False: plain completion (no chat template in the model)


@functools.lru_cache(maxsize=8)
def _compile(template: str):
    from jinja2.exceptions import TemplateSyntaxError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str):
        raise TemplateError(f"the chat template refused the conversation: {message}")

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    try:
        return env.from_string(template)
    except TemplateSyntaxError as exc:
        raise TemplateError(f"the model's chat template does not parse: {exc}") from None


def render_chat(template: str, messages: list[dict], bos_token: str = "", eos_token: str = "",
                add_generation_prompt: bool = True) -> str:
    from jinja2.exceptions import TemplateError as JinjaError

    try:
        return _compile(template).render(
            messages=messages, bos_token=bos_token, eos_token=eos_token,
            add_generation_prompt=add_generation_prompt,
        )
    except JinjaError as exc:
        raise TemplateError(f"the model's chat template failed: {exc}") from None


def build_prompt(template: str | None, messages: list[dict], bos_token: str = "", eos_token: str = "",
                 tokenizer_adds_bos: bool = False) -> PromptText:
    """The text to tokenize for a conversation.

    With a template: the rendered conversation, ending with the assistant's turn opening.
    Without one: the system text (if any) and the user turns joined as plain text.
    """
    if template:
        text = render_chat(template, messages, bos_token, eos_token)
        # When the tokenizer adds BOS itself, a template that writes it too would double it.
        if tokenizer_adds_bos and bos_token and text.startswith(bos_token):
            text = text[len(bos_token):]
        return PromptText(text, True)
    parts = [m["content"] for m in messages if m.get("role") in ("system", "user") and m.get("content")]
    return PromptText("\n\n".join(parts), False)
