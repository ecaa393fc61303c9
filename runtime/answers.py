"""Final answers of reasoning samples: extraction, normalization, per-sample completion.

Pure functions over text. The engine decodes K samples of one question; for each it calls
`answer_line_complete` as text arrives (to stop that sequence once its answer line is written),
then `final_answer` (= `normalize_answer(extract_answer(text, mode), mode)`) when it ends; the
vote over the samples is `runtime/voting.py`. Samples with no extractable answer get `None`.

Answer modes (`--answer`):
- `number`: GSM8K style. `\\boxed{..}` > `#### 42` > "The answer is 42" / "Answer: 42" > last number.
- `choice`: a letter A-E. `\\boxed{B}` > "answer is (B)" / "Answer: B" > a letter on the last line.
- `boxed`: the content of the last complete `\\boxed{...}` (nested braces allowed).
- `line`: the last non-empty line.
- `regex:PATTERN`: the last match of PATTERN (multiline); its group 1 if it has groups.
- `auto`: `\\boxed{..}` > the `####` line > the answer-phrase clause > the last number.

Numbers normalize to one exact canonical form through `fractions.Fraction`: "1,000" -> "1000",
"$5.50" -> "5.5", "42.0" -> "42", ".5" == "0.5" == "1/2" == "\\frac{1}{2}" -> "0.5"; values
with no finite decimal stay fractions ("1/3").
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from typing import NamedTuple

from ..errors import UsageError

ANSWER_MODES = ("auto", "number", "choice", "boxed", "line", "regex:PATTERN")
_SIMPLE_MODES = ("auto", "number", "choice", "boxed", "line")

# A number as people and models write it: optional sign and currency, thousands commas,
# decimals, a simple fraction. Not inside a word ("x2") or right after a decimal point.
_NUMBER_RE = re.compile(
    r"""(?<![\w.])
        (?P<sign>[-+\u2212])?
        (?:[$\u20ac\u00a3\u00a5]\s?)?
        (?P<sign2>[-\u2212])?
        (?P<value>(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?|\.\d+)
        (?:/(?P<den>\d+))?""",
    re.VERBOSE,
)
# "The answer is", "Final Answer:", "answer would be", "Answer =".
_ANSWER_PHRASE_RE = re.compile(r"\banswer\s*(?:[:=]|(?:is|was|would\s+be|should\s+be|will\s+be)\b\s*:?)", re.I)
# Where the answer clause after a phrase ends: sentence end (a period not followed by a digit),
# a comma + space (thousands commas have no space), or a word that starts an explanation.
_CLAUSE_END_RE = re.compile(r"\.(?=\s|$)|[!?;]|,\s|\s(?:because|since|as|which|so|for|but)\s", re.I)
# After the number on an unfinished `####` line: what shows the number cannot grow any more.
# Digits, ".", ",", "/" and operators could still extend it, so they do not settle it.
_SETTLES_NUMBER_RE = re.compile(r"\.(?=\s)|\s*[A-Za-wyz%<>)\]!?;:'\"]")
_BOXED_RE = re.compile(r"\\(?:boxed|fbox)\b\s*")
_CHOICE_AFTER_PHRASE_RE = re.compile(r"\s*(?:(?i:option|choice)\s*)?(?P<open>\()?(?P<letter>[A-E])\)?(?=[\s.,;:)\]!*]|$)")
_CHOICE_LINE_START_RE = re.compile(r"\s*\(?(?P<letter>[A-E])(?:[.:)]|\s*$)")
_CHOICE_WHOLE_RE = re.compile(r"^(?i:option|choice)?\s*\(?([A-Ea-e])\)?[.:]?$")
_CHOICE_LENIENT_RE = re.compile(r"^(?i:option|choice)?\s*\(?([A-Ea-e])(?:\)|[.:]|\s|$)")

_TEXT_WRAPPER_RE = re.compile(r"\\(?:text|textbf|textit|textrm|mathrm|mathbf|mbox|operatorname)\s*\{([^{}]*)\}")
_FRAC_RE = re.compile(r"\\[dt]?frac\s*\{([^{}]*)\}\s*\{([^{}]*)\}")
_FRAC_SHORT_RE = re.compile(r"\\[dt]?frac\s*(\d)\s*(\d)")
_MINUS_SIGNS = "-\u2212"
_SIMPLE_SIGNED_RE = re.compile(r"^[-\u2212]?\d+(?:\.\d+)?$")
_MAX_AUTO_CLAUSE_WORDS = 4  # a longer "answer is ..." clause is prose, not an answer
# ... and so is one that starts like a sentence: "the answer is not yet clear", "is that ...".
_PROSE_STARTS = frozenset("not unclear unknown still yet being that this to in what how clear simple obvious "
                          "easy found below above given as".split())
# What may stand before an answer phrase that opens its line: "**The final answer is", "So, Answer:".
_LINE_OPENING_RE = re.compile(r"[\s*#>-]*(?:(?:so|thus|therefore|hence)\s*,?\s*)?(?:the\s+)?(?:(?:final|correct)\s+)?", re.I)
# Per-sample stops look at the end of the text only: called after every token, an answer line
# is complete within the last few hundred characters when it becomes complete.
_COMPLETION_TAIL_CHARS = 512


@dataclass(frozen=True)
class AnswerMode:
    kind: str  # auto | number | choice | boxed | line | regex
    pattern: re.Pattern | None = None  # regex mode only


@lru_cache(maxsize=64)
def parse_answer_mode(mode: str) -> AnswerMode:
    """Validate an `--answer` value; raises UsageError naming the choices."""
    kind, sep, pattern = mode.partition(":")
    kind = kind.strip().lower()
    if kind == "regex":
        if not pattern:
            raise UsageError("--answer regex: needs a pattern",
                             hint="e.g. --answer 'regex:ANSWER: (\\w+)' (group 1 is the answer)")
        try:
            return AnswerMode("regex", re.compile(pattern, re.MULTILINE))
        except re.error as exc:
            raise UsageError(f"bad --answer regex {pattern!r}: {exc}",
                             hint="use Python regex syntax; group 1 (if any) is the answer") from None
    if sep or kind not in _SIMPLE_MODES:
        raise UsageError(f"unknown answer mode {mode!r}", hint="use one of: " + ", ".join(ANSWER_MODES))
    return AnswerMode(kind)


# ---------------------------------------------------------------- numbers and LaTeX


def format_number(value: Fraction) -> str:
    """Canonical text of an exact number: integers as ints, finite decimals without trailing
    zeros, other rationals as "p/q" (rounding 1/3 would make "0.333" and "0.3333" differ)."""
    if value.denominator == 1:
        return str(value.numerator)
    rest, twos, fives = value.denominator, 0, 0
    while rest % 2 == 0:
        rest, twos = rest // 2, twos + 1
    while rest % 5 == 0:
        rest, fives = rest // 5, fives + 1
    if rest != 1:
        return f"{value.numerator}/{value.denominator}"
    places = max(twos, fives)  # the fewest decimal places that represent it exactly
    digits = str(abs(value.numerator) * 10**places // value.denominator).rjust(places + 1, "0")
    sign = "-" if value < 0 else ""
    return f"{sign}{digits[:-places]}.{digits[-places:]}"


def _number_value(match: re.Match) -> Fraction | None:
    value = Fraction(match["value"].replace(",", ""))
    if match["den"] is not None:
        if int(match["den"]) == 0:
            return None
        value /= int(match["den"])
    negative = any(sign in ("-", "\u2212") for sign in (match["sign"], match["sign2"]) if sign)
    return -value if negative else value


def _frac_to_slash(match: re.Match) -> str:
    num, den = match[1].strip(), match[2].strip()
    # A digit right before \frac (a mixed number, "2\frac{1}{2}") must not glue onto it.
    lead = " " if match.start() > 0 and match.string[match.start() - 1].isdigit() else ""
    if _SIMPLE_SIGNED_RE.match(num) and _SIMPLE_SIGNED_RE.match(den):
        negative = (num[0] in _MINUS_SIGNS) != (den[0] in _MINUS_SIGNS)
        sign = "-" if negative else ""
        return f"{lead}{sign}{num.lstrip(_MINUS_SIGNS)}/{den.lstrip(_MINUS_SIGNS)}"
    return f"{lead}({num})/({den})"


def clean_latex(text: str) -> str:
    """Plain text from the LaTeX and markdown that models wrap answers in."""
    text = text.replace("**", "").replace("\\$", "$").replace("\\%", "%").replace("{,}", ",")
    text = re.sub(r"(?<=\d)\\[,!]\s?(?=\d{3})", "", text)  # 1\,000 is a thousands separator
    text = re.sub(r"\\[,!;: ]", " ", text)
    text = re.sub(r"\\(?:left|right)\b", "", text)
    text = re.sub(r"\\[dt]frac\b", r"\\frac", text)
    text = re.sub(r"\^\s*\{?\\circ\}?", "", text)
    previous = None
    while previous != text:  # innermost first, until nested wrappers are all gone
        previous = text
        text = _TEXT_WRAPPER_RE.sub(r"\1", text)
        text = _FRAC_RE.sub(_frac_to_slash, text)
    return _FRAC_SHORT_RE.sub(r"\1/\2", text)


def _after_last_equals(text: str) -> str:
    return text.rsplit("=", 1)[1] if "=" in text else text


def _first_number(text: str) -> re.Match | None:
    """The number an answer clause states: the first one after its last '=' ("12*3 = 36")."""
    tail = _after_last_equals(text)
    return _NUMBER_RE.search(tail) or _NUMBER_RE.search(text)


def _number_with_units(text: str) -> Fraction | None:
    """A string that IS a number, maybe with units or %: "5 apples", "$5.50", "25%", "x = 5"."""
    for candidate in (_after_last_equals(text).strip(), text.strip()):
        match = _NUMBER_RE.match(candidate)
        if match and not re.search(r"\d", candidate[match.end():]):
            return _number_value(match)
    return None


# ---------------------------------------------------------------- where answers are written


def _last_boxed(text: str) -> str | None:
    """Content of the last complete \\boxed{...} (braces nested); an unclosed one is skipped."""
    for match in reversed(list(_BOXED_RE.finditer(text))):
        start = match.end()
        if start < len(text) and text[start] != "{":
            bare = re.match(r"[^\s$]+", text[start:])  # "\boxed 5"
            if bare:
                return bare.group(0)
            continue
        depth = 0
        for index in range(start, len(text)):
            if text[index] == "{":
                depth += 1
            elif text[index] == "}":
                depth -= 1
                if depth == 0:
                    return text[start + 1:index]
    return None


def _hash_line(text: str) -> tuple[str, bool] | None:
    """What follows the last '####' on its line, and whether that line has ended."""
    position = text.rfind("####")
    if position < 0:
        return None
    rest = text[position + 4:].lstrip("#")
    newline = rest.find("\n")
    return (rest, False) if newline < 0 else (rest[:newline], True)


class _Clause(NamedTuple):
    phrase: re.Match  # "The answer is", "Answer:"
    rest: str  # the rest of its line
    text: str  # the clause: up to the end of its sentence
    ended: bool  # whether that end has been written


def _phrase_clauses(text: str) -> list[_Clause]:
    """The clause after each answer phrase, last first. "Answer:\\n42" reads the next line."""
    clauses = []
    for match in reversed(list(_ANSWER_PHRASE_RE.finditer(text))):
        start, line_ended = match.end(), False
        while True:
            newline = text.find("\n", start)
            rest = text[start:] if newline < 0 else text[start:newline]
            line_ended = newline >= 0
            if rest.strip() or not line_ended:
                break
            start = newline + 1
        cut = _CLAUSE_END_RE.search(rest)
        clause = rest[: cut.start()] if cut else rest
        ended = line_ended or (cut is not None and cut.end() < len(rest))
        clauses.append(_Clause(match, rest, clause.strip(), ended))
    return clauses


def _number_token(text: str) -> str | None:
    match = _first_number(clean_latex(text))
    return match.group(0).strip() if match and _number_value(match) is not None else None


def _last_number_token(text: str) -> str | None:
    for match in reversed(list(_NUMBER_RE.finditer(clean_latex(text)))):
        if _number_value(match) is not None:
            return match.group(0).strip()
    return None


def _choice_after_phrase(rest: str) -> str | None:
    match = _CHOICE_AFTER_PHRASE_RE.match(rest)
    if not match:
        return None
    # "The answer is A bigger..." uses A as an article, not as option (A).
    if match["letter"] == "A" and not match["open"] and re.match(r"\s+[a-z]", rest[match.end():]):
        return None
    return match["letter"]


def _choice_letter(text: str, lenient: bool = False) -> str | None:
    stripped = clean_latex(text).strip().strip("*`'\"").strip()
    match = (_CHOICE_LENIENT_RE if lenient else _CHOICE_WHOLE_RE).match(stripped)
    return match[1].upper() if match else None


def _extract_number(text: str) -> str | None:
    boxed = _last_boxed(text)
    if boxed is not None and (token := _number_token(boxed)):
        return token
    hashes = _hash_line(text)
    if hashes is not None and (token := _number_token(hashes[0])):
        return token
    for clause in _phrase_clauses(text.replace("**", "")):
        if token := _number_token(clause.text):
            return token
    return _last_number_token(text)


def _extract_choice(text: str) -> str | None:
    boxed = _last_boxed(text)
    if boxed is not None and (letter := _choice_letter(boxed, lenient=True)):
        return letter
    for clause in _phrase_clauses(text.replace("**", "")):
        if letter := _choice_after_phrase(clause.rest):
            return letter
    lines = [line for line in text.replace("**", "").splitlines() if line.strip()]
    if not lines:
        return None
    if start := _CHOICE_LINE_START_RE.match(lines[-1]):
        return start["letter"]
    parens = re.findall(r"\(([A-E])\)", lines[-1])
    return parens[-1] if parens else None


def _extract_auto(text: str) -> str | None:
    boxed = _last_boxed(text)
    if boxed is not None and boxed.strip():
        return boxed.strip()
    hashes = _hash_line(text)
    if hashes is not None and hashes[0].strip():
        return hashes[0].strip()
    for clause in _phrase_clauses(text.replace("**", "")):
        words = clause.text.split()
        if words and len(words) <= _MAX_AUTO_CLAUSE_WORDS and words[0].casefold() not in _PROSE_STARTS:
            return clause.text
    return _last_number_token(text)


def _extract_regex(text: str, pattern: re.Pattern) -> str | None:
    last = None
    for last in pattern.finditer(text):
        pass
    found = (last.group(1) if pattern.groups else last.group(0)) if last else None
    return found.strip() if found and found.strip() else None


def extract_answer(text: str, mode: str) -> str | None:
    """The raw final answer written in a sample (see the module doc for each mode), or None."""
    answer_mode = parse_answer_mode(mode)
    if answer_mode.kind == "number":
        return _extract_number(text)
    if answer_mode.kind == "choice":
        return _extract_choice(text)
    if answer_mode.kind == "boxed":
        boxed = _last_boxed(text)
        return boxed.strip() if boxed is not None and boxed.strip() else None
    if answer_mode.kind == "line":
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        return lines[-1] if lines else None
    if answer_mode.kind == "regex":
        return _extract_regex(text, answer_mode.pattern)
    return _extract_auto(text)


def _normalize_text(text: str, keep_case: bool) -> str | None:
    text = text.replace("$", "").strip().strip("*`'\"").strip().rstrip(".").strip()
    # LaTeX answers ("x+1" vs "x + 1") compare without spaces; prose compares by words.
    text = re.sub(r"\s+", "", text) if keep_case else " ".join(text.split()).casefold()
    return text or None


def normalize_answer(raw: str | None, mode: str) -> str | None:
    """The canonical form two equal answers share, or None when `raw` holds no answer.

    number: the first number (after a last '=') as `format_number`; choice: the letter;
    other modes: a number if the text is one (units and % allowed), else a choice letter if it
    is one, else the text (boxed: spaces removed, case kept; others: words casefolded).
    """
    kind = parse_answer_mode(mode).kind
    if raw is None:
        return None
    text = clean_latex(raw).strip()
    if kind == "number":
        match = _first_number(text)
        value = _number_value(match) if match else None
        return format_number(value) if value is not None else None
    if kind == "choice":
        return _choice_letter(text, lenient=True)
    value = _number_with_units(text)
    if value is not None:
        return format_number(value)
    return _choice_letter(text) or _normalize_text(text, keep_case=kind == "boxed")


def final_answer(text: str, mode: str) -> str | None:
    """The normalized answer of one sample: what it votes for (None: it does not vote)."""
    return normalize_answer(extract_answer(text, mode), mode)


# ---------------------------------------------------------------- per-sample early stop


def _hash_line_settled(text: str, kind: str) -> bool:
    hashes = _hash_line(text)
    if hashes is None:
        return False
    line, ended = hashes
    if ended:
        return bool(line.strip()) if kind == "auto" else _number_token(line) is not None
    # Unfinished line: "#### 4" may still become "#### 42", "#### 4.5" or "#### 4,000".
    segment_start = line.rfind("=") + 1
    match = _NUMBER_RE.search(line, segment_start)
    return match is not None and _SETTLES_NUMBER_RE.match(line, match.end()) is not None


def _opens_line(phrase: re.Match) -> bool:
    line_start = phrase.string.rfind("\n", 0, phrase.start()) + 1
    return _LINE_OPENING_RE.fullmatch(phrase.string, line_start, phrase.start()) is not None


def _choice_settled(clause: _Clause) -> bool:
    match = _CHOICE_AFTER_PHRASE_RE.match(clause.rest)
    if not match or not _choice_after_phrase(clause.rest):
        return False
    # "(B)" is closed; a bare letter must be followed by something that shows it is not the
    # first letter of a word ("A big...", "Because").
    return bool(clause.ended or (match["open"] and match.group(0).endswith(")")) or re.match(
        r"(?:[\n.,;:)\]!*]|\s+[^\sa-z])", clause.rest[match.end():]))


def _phrase_settled(text: str, kind: str) -> bool:
    """An answer phrase that opens its line ("so the answer is 5 but..." mid-sentence does not
    end a sample) and whose answer has been written out."""
    for clause in _phrase_clauses(text.replace("**", "")):
        if not _opens_line(clause.phrase):
            continue
        if kind == "choice" and _choice_settled(clause):
            return True
        if not clause.ended or not clause.text:
            continue
        if kind == "number" and _number_token(clause.text) is not None:
            return True
        if kind == "auto" and _auto_clause_settles(clause):
            return True
    return False


def _auto_clause_settles(clause: _Clause) -> bool:
    """Free text only on the "Answer: ..." line the prompt asks for ("The answer is not yet
    clear." is prose); after "the answer is", only a number or a letter."""
    if clause.phrase.group(0).rstrip().endswith(":"):
        return True
    return _number_with_units(clean_latex(clause.text)) is not None or _choice_letter(clause.text) is not None


def answer_line_complete(text: str, mode: str) -> bool:
    """Whether the sample has completely written its final answer, so its sequence can stop.

    True for a closed \\boxed{..}; a `####` line ended by a newline (or whose number is followed
    by something that cannot extend it: "#### 4" is not complete, "#### 4\\n" and "#### 4 apples"
    are); an answer phrase that opens its line and whose sentence has ended ("The answer is
    42." + space or newline; in auto mode free text only after "Answer:"). Never for `line`
    and `regex` modes: only the end of the sample shows their answer. Only the last ~512
    characters are read, so call it after every token.
    """
    kind = parse_answer_mode(mode).kind
    if kind in ("line", "regex"):
        return False
    if len(text) > _COMPLETION_TAIL_CHARS:  # from the start of the line the tail begins in
        text = text[text.rfind("\n", 0, len(text) - _COMPLETION_TAIL_CHARS) + 1:]
    boxed = _last_boxed(text)
    if boxed is not None and (
        (kind in ("boxed", "auto") and boxed.strip())
        or (kind == "number" and _number_token(boxed) is not None)
        or (kind == "choice" and _choice_letter(boxed, lenient=True) is not None)
    ):
        return True
    if kind in ("number", "auto") and _hash_line_settled(text, kind):
        return True
    return kind != "boxed" and _phrase_settled(text, kind)
