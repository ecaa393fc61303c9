"""GBNF grammars and JSON schemas checked before llama.cpp sees them.

llama.cpp's grammar parser returns NULL for most bad grammars, but a few end the process or
take minutes (found by running a table of bad grammars through `hearth run`, llama-cpp-python
0.3.36; `tests/cli/test_bad_grammars_cli.py`):

- parentheses nested ~20,000 deep overflow the recursive parser's stack (SIGSEGV);
- a character range written backwards (`[z-a]`) aborts at the first sampled token;
- a token reference past the vocabulary (`<[99999999]>`) aborts likewise (checked in the engine,
  which knows the vocabulary size: `max_token_reference`);
- a repetition whose maximum is below its minimum (`"a"{5,2}`) allocates until bad_alloc (20 s+).

A JSON schema goes through llama-cpp-python's converter, which writes every repetition out:
`"maxLength": 100000000` is a 500 MB grammar. `check_schema` bounds those counts first.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from ..errors import UsageError

MAX_NESTING = 2_000  # llama.cpp's parser overflowed its stack near 20,000 on this machine
MAX_SCHEMA_REPETITIONS = 2_000  # llama.cpp refuses ~3,000 nested optional repetitions anyway
MAX_PATTERN_EXPANSION = 100_000  # atoms a schema's `pattern` may expand to
_REPETITION_KEYWORDS = ("minLength", "maxLength", "minItems", "maxItems", "minProperties", "maxProperties")
_ESCAPE_WIDTH = {"x": 2, "u": 4, "U": 8}
_SIMPLE_ESCAPES = {"t": "\t", "r": "\r", "n": "\n", "\\": "\\", '"': '"', "[": "[", "]": "]"}


@dataclass(frozen=True)
class GrammarFacts:
    max_token_reference: int | None  # the largest `<[N]>` token id, checked against the vocabulary


@functools.lru_cache(maxsize=16)
def check_grammar(text: str) -> GrammarFacts:
    """Refuse (UsageError) a GBNF grammar llama.cpp would crash or hang on; otherwise its facts.

    A light scan, not a parser: whatever it does not recognise is left for llama.cpp, which
    refuses malformed grammars with an error of its own.
    """
    scan = _Scan(text)
    scan.run()
    return GrammarFacts(scan.max_token)


class _Scan:
    def __init__(self, text: str):
        self.text, self.i, self.depth, self.max_token = text, 0, 0, None

    def fail(self, what: str) -> UsageError:
        line = self.text.count("\n", 0, self.i) + 1
        return UsageError(f"the grammar cannot be used: {what} (line {line})")

    def run(self) -> None:
        text = self.text
        while self.i < len(text):
            c = text[self.i]
            if c == "#":
                end = text.find("\n", self.i)
                self.i = len(text) if end < 0 else end
            elif c == '"':
                self._skip_string()
            elif c == "[":
                self._char_class()
            elif c == "(":
                self.depth += 1
                if self.depth > MAX_NESTING:
                    raise self.fail(f"parentheses nested more than {MAX_NESTING} deep")
            elif c == ")":
                self.depth = max(0, self.depth - 1)
            elif c == "{":
                self._repetition()
            elif text.startswith("<[", self.i):
                self._token_reference()
            self.i += 1

    def _skip_string(self) -> None:
        i = self.i + 1
        while i < len(self.text) and self.text[i] != '"':
            i += 2 if self.text[i] == "\\" else 1
        self.i = i

    def _char(self) -> str | None:
        """The character at self.i (escapes decoded), advancing past it; None if unreadable."""
        text, i = self.text, self.i
        if i >= len(text):
            return None
        if text[i] != "\\":
            self.i += 1
            return text[i]
        kind = text[i + 1: i + 2]
        if kind in _SIMPLE_ESCAPES:
            self.i += 2
            return _SIMPLE_ESCAPES[kind]
        width = _ESCAPE_WIDTH.get(kind)
        digits = text[i + 2: i + 2 + width] if width else ""
        if not width or not re.fullmatch(r"[0-9a-fA-F]+", digits) or len(digits) != width:
            return None
        self.i += 2 + width
        return chr(min(int(digits, 16), 0x10FFFF))

    def _char_class(self) -> None:
        self.i += 1
        if self.text[self.i: self.i + 1] == "^":
            self.i += 1
        while self.i < len(self.text) and self.text[self.i] != "]":
            start = self._char()
            if start is None:
                return  # llama.cpp reports the bad escape itself
            if self.text[self.i: self.i + 1] == "-" and self.text[self.i + 1: self.i + 2] not in ("]", ""):
                self.i += 1
                end = self._char()
                if end is None:
                    return
                if end < start:  # llama.cpp aborts on the first token it matches against it
                    raise self.fail(f"character range {start!r}-{end!r} runs backwards")

    def _repetition(self) -> None:
        match = re.compile(r"\{\s*(\d+)\s*(?:,\s*(\d*)\s*)?\}").match(self.text, self.i)
        if match and match.group(2) and int(match.group(2)) < int(match.group(1)):
            raise self.fail(f"repetition {match.group(0)} has its maximum below its minimum")

    def _token_reference(self) -> None:
        match = re.compile(r"<\[(\d+)\]>").match(self.text, self.i)
        if match:
            self.max_token = max(self.max_token or 0, int(match.group(1)))


def check_token_references(facts: GrammarFacts, n_vocab: int) -> None:
    """A `<[N]>` past the vocabulary aborts llama.cpp: refuse it once the vocabulary is known."""
    if facts.max_token_reference is not None and facts.max_token_reference >= n_vocab:
        raise UsageError(f"the grammar cannot be used: token <[{facts.max_token_reference}]> is past the "
                         f"model's vocabulary of {n_vocab} tokens")


def check_schema(schema) -> None:
    """Refuse a JSON schema that is not an object, or whose repetitions would expand enormously."""
    if not isinstance(schema, dict):
        raise UsageError(f"invalid JSON schema: it must be a JSON object, not {type(schema).__name__}")
    stack = [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(node)
            continue
        if not isinstance(node, dict):
            continue
        for keyword in _REPETITION_KEYWORDS:
            count = node.get(keyword)
            if isinstance(count, (int, float)) and not isinstance(count, bool) and count > MAX_SCHEMA_REPETITIONS:
                raise UsageError(f"invalid JSON schema: {keyword} {count} is more than hearth's grammars allow "
                                 f"({MAX_SCHEMA_REPETITIONS})")
        pattern = node.get("pattern")
        if isinstance(pattern, str) and pattern_expansion(pattern) > MAX_PATTERN_EXPANSION:
            raise UsageError(f"invalid JSON schema: pattern {pattern[:40]!r} repeats to more than "
                             f"{MAX_PATTERN_EXPANSION:,} characters")
        stack.extend(node.values())


_QUANTIFIER = re.compile(r"\{(\d+)(?:,(\d*))?\}")


def pattern_expansion(pattern: str) -> int:
    """About how many atoms a regex expands to when every `{m,n}` is written out (nesting multiplies)."""
    totals, i = [0], 0
    while i < len(pattern):
        c = pattern[i]
        if c == "(":
            totals.append(0)
            i += 1
            continue
        if c == ")" and len(totals) > 1:
            weight, i = totals.pop(), i + 1
        elif c == "[":
            end = pattern.find("]", i + 2)
            weight, i = 1, (len(pattern) if end < 0 else end + 1)
        else:
            weight, i = (0 if c in "|^$" else 1), i + (2 if c == "\\" else 1)
        match = _QUANTIFIER.match(pattern, i)
        if match:
            weight *= max(int(match.group(1)), int(match.group(2) or 0))
            i = match.end()
        totals[-1] += weight
    return sum(totals)
