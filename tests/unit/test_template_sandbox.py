"""A model's chat template is untrusted code: it can neither escape the sandbox nor run unbounded.

Each hostile template ends in one TemplateError line (a HearthError: the CLI prints one line and
exits 1) instead of a traceback, a gigabyte allocation or a render that never ends.
"""

from __future__ import annotations

import sys

import pytest

from hearth.runtime import templates
from hearth.runtime.gguf_file import read_gguf
from hearth.runtime.templates import TemplateError, render_chat

MESSAGES = [{"role": "user", "content": "hi"}]

# name -> (template, what the error says)
HOSTILE = {
    "attribute escape": ("{{ ''.__class__.__mro__ }}", "unsafe"),
    "subclasses escape": ("{{ ''.__class__.__mro__[1].__subclasses__() }}", "unsafe"),
    "range of 10**9": ("{% for i in range(10**9) %}x{% endfor %}", "over 4,000,000"),
    "range of a literal billion": ("{% for i in range(1000000000) %}x{% endfor %}", "over 4,000,000"),
    "string times 10**9": ("{{ 'a' * 10**9 }}", "builds a value over"),
    "list times ten million": ("{{ ([1] * 10000000)|length }}", "builds a value over"),
    "power tower": ("{{ 2 ** 100000 ** 2 }}", "raises to the power"),
    "center to a billion": ("{{ 'x'|center(1000000000) }}", "over 4,000,000"),
    "percent width": ("{{ '%0999999999d' % 1 }}", "width over"),
    "format filter width": ("{{ '%.999999999f'|format(1.0) }}", "width over"),
    "str.format width": ("{{ '{:>999999999}'.format(1) }}", "width over"),
    "namespace doubling": ("{% set ns = namespace(s='a') %}{% for i in range(60) %}{% set ns.s = ns.s ~ ns.s %}"
                           "{% endfor %}{{ ns.s|length }}", "over 4,000,000"),
    "macro doubling": ("{% macro d(s, n) %}{% if n %}{{ d(s ~ s, n - 1) }}{% else %}{{ s|length }}{% endif %}"
                       "{% endmacro %}{{ d('a', 60) }}", "over 4,000,000"),
    "endless recursion": ("{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}", "recursed too deep"),
    "recursive loop": ("{% for x in [1] recursive %}{{ loop([1]) }}{% endfor %}", "recursed too deep"),
    "lipsum of a billion": ("{{ lipsum(1000000000) }}", "over 4,000,000"),
    "nested too deep to parse": ("{{ " + "(" * 5000 + "1" + ")" * 5000 + " }}", "nested too deep"),
    "iterating a number": ("{% for m in 5 %}{% endfor %}", "TypeError"),
    "division by zero": ("{{ 1 / 0 }}", "ZeroDivisionError"),
    "text plus number": ("{{ messages[0]['content'] + 5 }}", "TypeError"),
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_template_is_one_line(name):
    template, needle = HOSTILE[name]
    with pytest.raises(TemplateError) as refused:
        render_chat(template, MESSAGES)
    assert needle in refused.value.message and "\n" not in refused.value.message


@pytest.mark.parametrize("template", [
    "{% for i in range(99999) %}{% for j in range(99999) %}{% endfor %}{% endfor %}",
    "{% set l = range(99999)|list %}{% for a in l %}{% for b in l %}{% endfor %}{% endfor %}",
], ids=["nested ranges", "nested loops over a list (no sandbox hook runs)"])
def test_endless_loops_stop_at_the_time_limit(template, monkeypatch):
    monkeypatch.setattr(templates, "RENDER_TIME_LIMIT_S", 0.2)
    with pytest.raises(TemplateError, match="ran for over 0.2 s"):
        render_chat(template, MESSAGES)


def test_the_time_limit_leaves_other_tracers_in_place():
    """A debugger's or coverage's trace function is back once the template has rendered."""
    def tracer(frame, event, arg):
        return None

    before = sys.gettrace()
    sys.settrace(tracer)
    try:
        render_chat("{% for m in messages %}{{ m.content }}{% endfor %}", MESSAGES)
        with pytest.raises(TemplateError):
            render_chat("{{ 1 / 0 }}", MESSAGES)
        assert sys.gettrace() is tracer
    finally:
        sys.settrace(before)


def test_real_templates_still_render(default_model_path):
    template = read_gguf(default_model_path).chat_template
    long_chat = [{"role": ["user", "assistant"][i % 2], "content": "word " * 500} for i in range(100)]
    text = render_chat(template, long_chat, "<|im_start|>", "<|im_end|>")
    assert text.count("<|im_start|>user") == 50 and text.endswith("<|im_start|>assistant\n")
    # formatting, namespaces, loops and filters of ordinary size are untouched
    ordinary = ("{% set ns = namespace(n=0) %}{% for m in messages %}{% set ns.n = ns.n + 1 %}"
                "{{ '%03d|%s' % (ns.n, m.content|upper|center(6)) }}{{ '{}!'.format(m.role) }}{% endfor %}")
    assert render_chat(ordinary, MESSAGES) == "001|  HI  user!"
