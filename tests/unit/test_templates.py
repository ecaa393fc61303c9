"""Chat templates render in a sandbox; models without one run as plain completion."""

from __future__ import annotations

import pytest

from hearth.runtime.gguf_file import read_gguf
from hearth.runtime.templates import TemplateError, build_prompt, render_chat


def test_smollm_template_renders_chatml(default_model_path):
    template = read_gguf(default_model_path).chat_template
    text = build_prompt(template, [{"role": "user", "content": "Hi"}], "<|im_start|>", "<|im_end|>").text
    assert text.startswith("<|im_start|>system\n")
    assert text.endswith("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")


def test_bos_not_doubled_when_tokenizer_adds_it():
    template = "{{ bos_token }}{% for m in messages %}{{ m['content'] }}{% endfor %}"
    messages = [{"role": "user", "content": "x"}]
    assert build_prompt(template, messages, "<s>", "</s>", tokenizer_adds_bos=True).text == "x"
    assert build_prompt(template, messages, "<s>", "</s>", tokenizer_adds_bos=False).text == "<s>x"


def test_no_template_is_plain_completion():
    prompt = build_prompt(None, [{"role": "system", "content": "S"}, {"role": "user", "content": "Once upon"}])
    assert prompt.templated is False
    assert prompt.text == "S\n\nOnce upon"


def test_sandbox_blocks_attribute_escape():
    evil = "{{ ''.__class__.__mro__[1].__subclasses__() }}"
    with pytest.raises(TemplateError):
        render_chat(evil, [])


def test_raise_exception_in_template_is_a_clear_error():
    template = "{% if messages[0]['role'] != 'user' %}{{ raise_exception('first must be user') }}{% endif %}"
    with pytest.raises(TemplateError, match="first must be user"):
        render_chat(template, [{"role": "assistant", "content": "x"}])


def test_syntax_error_in_template():
    with pytest.raises(TemplateError, match="does not parse"):
        render_chat("{% for %}", [])
