"""The chat's KV cache is kept between turns: each turn evaluates only what is new.

Counted with the scheduler's own statistics (tokens evaluated vs served from the cache), which
does not depend on how busy the machine is; scripts/bench_chat.py measures the time to first token.
"""

from __future__ import annotations

import pytest

import hearth
from hearth.runtime.chat import ChatSession

# The template's markers around a user turn (<|im_end|>\n<|im_start|>user\n ... <|im_start|>assistant\n)
# plus the few tokens where a re-tokenized answer may differ from the sampled tokens.
TEMPLATE_SLACK = 12


@pytest.fixture(scope="module")
def session(default_model_path):
    chat = hearth.load(str(default_model_path), ctx=2048).chat(system="You are brief.", temperature=0.0, seed=1,
                                                                max_tokens=12)
    yield chat
    chat.close()


def ask(chat: ChatSession, text: str, **kwargs):
    chat.conversation.add_user(text)
    return chat.respond(lambda delta: None, **kwargs)


def test_ten_turns_evaluate_only_the_new_messages(session):
    results = []
    for i in range(10):
        message = f"Turn {i}: name one fruit and one color."
        result = ask(session, message)
        new = len(session.loaded.engine.tokenize(message, add_special=False))
        results.append((result, new))
    first = results[0][0]
    assert first.reused == 0 and first.evaluated == first.prompt_tokens
    for result, new in results[1:]:
        assert result.evaluated <= new + TEMPLATE_SLACK, result
        assert result.reused >= result.prompt_tokens - new - TEMPLATE_SLACK, result
    last = results[-1][0]
    assert last.prompt_tokens > 5 * first.prompt_tokens / 2  # the history did grow
    assert session.used == last.prompt_tokens + last.generated
    assert len(session.conversation.turns) == 20


def test_regen_reuses_the_whole_prompt(session):
    ask(session, "Name a tree.")
    question = session.conversation.pop_answer()
    assert question == "Name a tree."
    again = session.respond(lambda delta: None)
    assert again.evaluated == 1  # the last prompt token is evaluated again for its logits
    assert again.reused == again.prompt_tokens - 1


def test_an_interrupted_answer_keeps_its_cache_and_is_marked_cut(session):
    seen = []

    def interrupted() -> bool:
        return len(seen) >= 3

    session.conversation.add_user("Count from 1 to 50.")
    cut = session.respond(seen.append, interrupted)
    assert cut.finish_reason == "interrupted" and 0 < cut.generated < 12
    assert session.conversation.turns[-1].cut and session.conversation.turns[-1].content == cut.text
    after = ask(session, "Thanks.")
    assert after.evaluated <= len(session.loaded.engine.tokenize("Thanks.", add_special=False)) + TEMPLATE_SLACK
