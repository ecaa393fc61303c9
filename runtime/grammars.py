"""JSON schemas checked before they become grammars for llama.cpp.

A JSON schema goes through llama-cpp-python's converter, which writes every repetition out:
`"maxLength": 100000000` is a 500 MB grammar. `check_schema` bounds those counts first.
"""

from __future__ import annotations

import re

from ..errors import UsageError

MAX_SCHEMA_REPETITIONS = 2_000  # llama.cpp refuses ~3,000 nested optional repetitions anyway
MAX_PATTERN_EXPANSION = 100_000  # atoms a schema's `pattern` may expand to
_REPETITION_KEYWORDS = ("minLength", "maxLength", "minItems", "maxItems", "minProperties", "maxProperties")


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
