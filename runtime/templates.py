"""Chat templates: taken from the GGUF metadata, rendered in a sandboxed Jinja environment.

A model with no template (a base model) runs as plain completion; hearth never invents one.

A template is code from the model file, so it is untrusted. Jinja's ImmutableSandboxedEnvironment
refuses attribute escapes (`''.__class__.__mro__`) and caps `range()` at 100,000 items; hearth
also bounds what a template can build and how long it can run:
- `*` and `**` are checked before they run (`'a' * 10**9`, `10**10**10`), and so are the counts
  passed to calls and filters (`'x'|center(10**9)`), macro arguments and namespace values: a
  doubling loop or recursion stops at MAX_BUILT characters or items;
- a trace function on the template's own frames stops it after RENDER_TIME_LIMIT_S (nested
  loops over 100,000 items each run no Python hook of the sandbox);
- any exception inside the template becomes one TemplateError line.
"""

from __future__ import annotations

import contextlib
import functools
import re
import sys
import time
from dataclasses import dataclass
from datetime import datetime

from ..errors import HearthError

MAX_BUILT = 4_000_000  # characters or items one step of a template may build or pass on
MAX_EXPONENT = 256
RENDER_TIME_LIMIT_S = 2.0  # real templates render in milliseconds


class TemplateError(HearthError):
    """The model's chat template failed to render."""


@dataclass(frozen=True)
class PromptText:
    text: str
    templated: bool  # False: plain completion (no chat template in the model)


def _too_big(value) -> bool:
    if isinstance(value, int) and not isinstance(value, bool):
        return abs(value) > MAX_BUILT
    return isinstance(value, (str, list, tuple, dict)) and len(value) > MAX_BUILT


# A %-spec or a {}-field of a format string: its width and precision are in there.
_FORMAT_SPEC = re.compile(r"%[-#0 +*]*\d*(?:\.\d+)?[a-zA-Z%]|\{[^{}]*\}")


def _check_format(text) -> None:
    """`'%0999999999d' % 1` or `'{:>999999999}'.format(1)` would build a gigabyte in one C call."""
    if not isinstance(text, str):
        return
    for spec in _FORMAT_SPEC.finditer(text):
        if any(int(n) > MAX_BUILT for n in re.findall(r"\d+", spec.group(0))):
            raise TemplateError(f"the model's chat template formats to a width over {MAX_BUILT:,}: stopped")


def _check_arguments(args, kwargs) -> None:
    for value in (*args, *kwargs.values()):
        if _too_big(value):
            raise TemplateError(f"the model's chat template passes a value over {MAX_BUILT:,} (characters, items "
                                "or count): stopped")


@functools.lru_cache(maxsize=1)
def _sandbox_class():
    from jinja2.sandbox import ImmutableSandboxedEnvironment
    from jinja2.utils import Namespace

    class BoundedNamespace(Namespace):
        def __setitem__(self, name, value):
            _check_arguments((value,), {})
            super().__setitem__(name, value)

    class BoundedSandbox(ImmutableSandboxedEnvironment):
        intercepted_binops = frozenset({"*", "**", "%"})  # also keeps Jinja from folding them at compile time

        def call_binop(self, context, operator, left, right):
            if operator == "*":
                sized, count = (left, right) if isinstance(right, int) else (right, left)
                if isinstance(sized, (str, list, tuple)) and isinstance(count, int) and len(sized) * count > MAX_BUILT:
                    raise TemplateError(f"the model's chat template builds a value over {MAX_BUILT:,} long: stopped")
            elif operator == "**" and isinstance(right, (int, float)) and abs(right) > MAX_EXPONENT:
                raise TemplateError(f"the model's chat template raises to the power {right}: stopped")
            elif operator == "%":
                _check_format(left)
                _check_arguments(right if isinstance(right, tuple) else (right,), {})
            return super().call_binop(context, operator, left, right)

        def call(__self, __context, __obj, *args, **kwargs):  # noqa: N805 - Jinja's own signature
            _check_arguments(args, kwargs)
            method = getattr(__obj, "__wrapped__", __obj)  # the sandbox wraps str.format
            if isinstance(getattr(method, "__self__", None), str) and getattr(method, "__name__", "") in ("format", "format_map"):
                _check_format(method.__self__)
            return super().call(__context, __obj, *args, **kwargs)

    def bounded_filter(func):
        @functools.wraps(func)  # keeps Jinja's pass_context / pass_environment marks
        def run(*args, **kwargs):
            _check_arguments([a for a in args[1:] if isinstance(a, int)], {k: v for k, v in kwargs.items() if isinstance(v, int)})
            if func.__name__ == "do_format":  # `fmt|format(...)`: the widths are in the value
                _check_format(args[0])
            return func(*args, **kwargs)
        return run

    return BoundedSandbox, BoundedNamespace, bounded_filter


@functools.lru_cache(maxsize=8)
def _compile(template: str):
    from jinja2.exceptions import TemplateSyntaxError

    def raise_exception(message: str):
        raise TemplateError(f"the chat template refused the conversation: {message}")

    sandbox, namespace, bounded_filter = _sandbox_class()
    env = sandbox(trim_blocks=True, lstrip_blocks=True)
    env.filters = {name: bounded_filter(f) for name, f in env.filters.items()}
    env.globals["namespace"] = namespace
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    try:
        return env.from_string(template)
    except TemplateSyntaxError as exc:
        raise TemplateError(f"the model's chat template does not parse: {_one_line(exc)}") from None
    except (RecursionError, MemoryError):
        raise TemplateError("the model's chat template is nested too deep to parse") from None


@contextlib.contextmanager
def _time_limit(seconds: float):
    """Stop template code that runs past `seconds` (a trace function on its frames only)."""
    deadline = time.monotonic() + seconds

    def on_line(frame, event, arg):
        if time.monotonic() > deadline:
            raise TemplateError(f"the model's chat template ran for over {seconds:g} s: stopped")
        return on_line

    def on_call(frame, event, arg):
        return on_line if frame.f_code.co_filename == "<template>" else None

    previous = sys.gettrace()
    sys.settrace(on_call)
    try:
        yield
    finally:
        sys.settrace(previous)


def _one_line(exc: BaseException) -> str:
    text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return text if len(text) <= 200 else text[:197] + "..."


def render_chat(template: str, messages: list[dict], bos_token: str = "", eos_token: str = "",
                add_generation_prompt: bool = True) -> str:
    from jinja2.exceptions import TemplateError as JinjaError

    compiled = _compile(template)
    try:
        with _time_limit(RENDER_TIME_LIMIT_S):
            return compiled.render(
                messages=messages, bos_token=bos_token, eos_token=eos_token,
                add_generation_prompt=add_generation_prompt,
            )
    except TemplateError:
        raise
    except JinjaError as exc:
        raise TemplateError(f"the model's chat template failed: {_one_line(exc)}") from None
    except RecursionError:
        raise TemplateError("the model's chat template recursed too deep: stopped") from None
    except Exception as exc:  # noqa: BLE001 - the template is the model's code: any failure is the template's
        raise TemplateError(f"the model's chat template failed: {type(exc).__name__}: {_one_line(exc)}") from None


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
