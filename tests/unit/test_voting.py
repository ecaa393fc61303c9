"""Answer extraction, normalization, per-sample completion and the vote, on hand-made texts."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest

from hearth.errors import UsageError
from hearth.runtime.answers import (
    answer_line_complete,
    extract_answer,
    final_answer,
    format_number,
    normalize_answer,
    parse_answer_mode,
)
from hearth.runtime.voting import SampleResult, vote


def mismatches(function, cases):
    """Every table row whose result differs, as (row, got): one failure lists them all."""
    return [(row, got) for row in cases if (got := function(*row[:-1])) != row[-1]]


# ---------------------------------------------------------------- number mode (GSM8K style)

NUMBER_CASES = [
    ("#### 42", "42"),
    ("Step 1: 3+4=7 apples\n#### 1,234.00", "1234"),
    ("#### 1,234", "1234"),
    ("#### -15", "-15"),
    ("#### 25%", "25"),
    ("Costs were $1,200 and $300.\n#### $1,500", "1500"),
    ("She pays 3 + 4 = 7.\n#### 7\n\nQuestion: Tom has 5 apples. How many", "7"),
    ("The answer is 42.", "42"),
    ("The answer is -3.", "-3"),
    ("The temperature ends at \u22127 degrees.", "-7"),
    ("So the answer is $5.50.", "5.5"),
    ("the answer is -$4", "-4"),
    ("The answer is $-4$.", "-4"),
    ("Answer: 1,000 apples", "1000"),
    ("The answer is: 7", "7"),
    ("The answer would be 100.", "100"),
    ("The answer is 42.0", "42"),
    ("The answer is 3.50 dollars.", "3.5"),
    ("The answer is 0.5", "0.5"),
    ("The answer is .5", "0.5"),
    ("The answer is 1/2 of the cake.", "0.5"),
    ("The answer is 1/3.", "1/3"),
    ("The answer is \\(\\frac{1}{4}\\).", "0.25"),
    ("The answer is $1\\,000$.", "1000"),
    # answers followed by explanations that hold other numbers
    ("The answer is 42 apples because 3 + 39 = 45.", "42"),
    ("In 2023 she was 40; the answer is 45, since 5 years passed.", "45"),
    # several numbers on the answer line: the result after the last '='
    ("The answer is 12 * 3 = 36.\nThat's all.", "36"),
    ("Answer: 5 - 3 = 2", "2"),
    ("**Answer:** 18", "18"),
    ("The answer is **18** dollars.", "18"),
    ("Answer:\n\n  17\n", "17"),
    ("Final Answer: The final answer is 9. I hope it is correct.", "9"),
    # a later phrase without a number does not hide the earlier answer
    ("The answer is 42.\nLet me check: 40 + 2 = 42. Yes, the answer is correct.", "42"),
    # no answer phrase: the last number
    ("She has 3 apples, buys 4 more, so 7 in total.", "7"),
    ("The total is 1,000,000 dollars", "1000000"),
    ("$\\boxed{\\frac{3}{4}}$", "0.75"),
    ("Therefore \\boxed{12}.\n#### 13", "12"),  # \boxed outranks ####
    ("\\boxed{\\text{no number}}\n#### 13", "13"),  # a box without a number does not count
    ("Let x2 be the unknown.", None),  # "x2" is a name, not a number
    ("I cannot tell.", None),
    ("", None),
]


def test_number_answers():
    assert mismatches(lambda text: final_answer(text, "number"), NUMBER_CASES) == []


# ---------------------------------------------------------------- normalization

NORMALIZE_CASES = [
    ("1,000", "number", "1000"),
    ("$5.50", "number", "5.5"),
    ("\u20ac3", "number", "3"),
    ("\u00a31,250.75", "number", "1250.75"),
    ("5 apples", "number", "5"),
    ("25%", "number", "25"),
    ("100\\%", "number", "100"),
    ("30^\\circ", "number", "30"),
    ("42.0", "number", "42"),
    ("42.", "number", "42"),
    ("-3", "number", "-3"),
    ("\u22123", "number", "-3"),
    ("+3", "number", "3"),
    ("-0.0", "number", "0"),
    ("0.5", "number", "0.5"),
    (".5", "number", "0.5"),
    ("1/2", "number", "0.5"),
    ("2/4", "number", "0.5"),
    ("3/4", "number", "0.75"),
    ("1/3", "number", "1/3"),
    ("0.125", "number", "0.125"),
    ("1,234.00", "number", "1234"),
    ("1{,}000", "number", "1000"),
    ("\\frac{1}{2}", "number", "0.5"),
    ("\\dfrac{3}{4}", "number", "0.75"),
    ("\\frac{-1}{2}", "number", "-0.5"),
    ("-\\frac{1}{2}", "number", "-0.5"),
    ("\\frac{3}{-4}", "number", "-0.75"),
    ("\\frac12", "number", "0.5"),
    ("\\text{5 apples}", "number", "5"),
    ("x = 5", "number", "5"),
    ("no digits", "number", None),
    (None, "number", None),
    ("(b)", "choice", "B"),
    ("B.", "choice", "B"),
    ("**C**", "choice", "C"),
    ("option d", "choice", "D"),
    ("B) 42", "choice", "B"),
    ("F", "choice", None),
    ("42", "choice", None),
    ("x + 1", "boxed", "x+1"),
    ("\\text{Paris}", "boxed", "Paris"),
    ("\\$5.50", "boxed", "5.5"),
    ("\\frac{x}{2}", "boxed", "(x)/(2)"),
    ("\\dfrac{\\sqrt{2}}{2}", "boxed", "\\frac{\\sqrt{2}}{2}"),
    ("42 apples", "auto", "42"),
    ("Paris.", "auto", "paris"),
    ("(B)", "auto", "B"),
    ("The  Big   Apple", "auto", "the big apple"),
    ("5 apples and 3 pears", "line", "5 apples and 3 pears"),
    ("  42 ", "line", "42"),
    ("FOO", "regex:x", "foo"),
    ("   ", "line", None),
]


def test_normalize_answer():
    assert mismatches(normalize_answer, NORMALIZE_CASES) == []


FORMAT_CASES = [
        (Fraction(5), "5"),
        (Fraction(0), "0"),
        (Fraction(-7), "-7"),
        (Fraction(3, 4), "0.75"),
        (Fraction(-1, 8), "-0.125"),
        (Fraction(1, 1000), "0.001"),
        (Fraction(12345, 100), "123.45"),
        (Fraction(1, 3), "1/3"),
        (Fraction(-2, 6), "-1/3"),
        (Fraction(1, 6), "1/6"),
]


def test_format_number_is_exact_and_canonical():
    assert mismatches(format_number, FORMAT_CASES) == []
    assert all(Fraction(text) == value for value, text in FORMAT_CASES)  # reads back the same


def test_equal_numbers_written_differently_share_one_form():
    spellings = ["0.5", ".5", "1/2", "0.50", "\\frac{1}{2}", "\\dfrac{2}{4}", "$0.5$"]
    assert {normalize_answer(spelling, "number") for spelling in spellings} == {"0.5"}


# ---------------------------------------------------------------- choice, boxed, line, regex, auto

CHOICE_CASES = [
    ("The answer is (B).", "B"),
    ("The correct answer is C because the others are too small.", "C"),
    ("Answer: D", "D"),
    ("The answer is option B", "B"),
    ("The answer is A.", "A"),
    ("The answer is A bigger number, so the answer is C", "C"),
    ("The answer is A bigger one.", None),  # "A" is an article here
    ("**Answer:** E", "E"),
    ("Answer: B\nExplanation: (A) is wrong because it is negative.", "B"),
    ("\\boxed{B}", "B"),
    ("\\boxed{\\text{(C)}}", "C"),
    ("Reasoning goes here.\nB", "B"),
    ("Reasoning goes here.\nB. 42", "B"),
    ("Let me see.\nSo (D) is correct", "D"),
    ("I think it is 42.", None),
]


def test_choice_answers():
    assert mismatches(lambda text: final_answer(text, "choice"), CHOICE_CASES) == []


BOXED_CASES = [
    ("so \\boxed{\\frac{1}{2}}", "\\frac{1}{2}", "0.5"),
    ("$\\boxed{x^{2}}$", "x^{2}", "x^{2}"),
    ("first \\boxed{1} then \\boxed{2}", "2", "2"),
    ("done \\boxed{3} and then \\boxed{4", "3", "3"),  # the unclosed box is still being written
    ("\\boxed{\\left(1, \\frac{2}{3}\\right)}", "\\left(1, \\frac{2}{3}\\right)", "(1,2/3)"),
    ("\\boxed 7", "7", "7"),
    ("\\fbox{9}", "9", "9"),
    ("\\boxed{}", None, None),
    ("no box at all: 5", None, None),
]


def test_boxed_answers():
    raw_cases = [(text, raw) for text, raw, _normalized in BOXED_CASES]
    normalized_cases = [(text, normalized) for text, _raw, normalized in BOXED_CASES]
    assert mismatches(lambda text: extract_answer(text, "boxed"), raw_cases) == []
    assert mismatches(lambda text: final_answer(text, "boxed"), normalized_cases) == []


OTHER_MODE_CASES = [
    ("Work...\n\n42 \n\n", "line", "42"),
    ("one line", "line", "one line"),
    ("", "line", None),
    ("ANSWER: foo\nANSWER: bar", "regex:ANSWER: (\\w+)", "bar"),  # the last match
    ("a 12 b 34", "regex:\\d+", "34"),  # no group: the whole match
    ("only y", "regex:(x)?y", None),  # group 1 did not take part
    ("nothing", "regex:ANSWER: (\\w+)", None),
    ("key: a:b", "regex:key: (a:b)", "a:b"),  # ':' inside the pattern
    ("\\boxed{5}\n#### 6", "auto", "5"),
    ("#### 6\nThe answer is 7.", "auto", "6"),
    ("The answer is Paris.", "auto", "paris"),
    ("The answer is (B).", "auto", "B"),
    ("We get 3 and then 4", "auto", "4"),
    ("The answer is what we find below after working through many long steps: 5", "auto", "5"),
    ("Nothing here", "auto", None),
    ("We get 36 so far, and the answer is not yet clear.", "auto", "36"),  # prose, not an answer
]


def test_other_modes():
    assert mismatches(final_answer, OTHER_MODE_CASES) == []


@pytest.mark.parametrize(
    ("mode", "kind"),
    [("number", "number"), ("NUMBER", "number"), (" auto ", "auto"), ("choice", "choice"),
     ("boxed", "boxed"), ("line", "line"), ("regex:(\\d+)", "regex")],
)
def test_parse_answer_mode(mode, kind):
    assert parse_answer_mode(mode).kind == kind


@pytest.mark.parametrize("mode", ["bogus", "number:x", "regex:", "regex:(", ""])
def test_bad_answer_modes_are_usage_errors(mode):
    with pytest.raises(UsageError) as raised:
        extract_answer("#### 1", mode)
    assert raised.value.hint


# ---------------------------------------------------------------- per-sample early stop

COMPLETE_CASES = [
    ("#### 4", "number", False),  # more digits may come
    ("#### 4\n", "number", True),
    ("#### 4.", "number", False),  # 4.5 may come
    ("#### 4.5", "number", False),
    ("#### 4.5\n", "number", True),
    ("#### 1,2", "number", False),  # 1,234 may come
    ("#### 1,234\n", "number", True),
    ("#### 3/", "number", False),
    ("#### 42 apples", "number", True),  # a word cannot extend the number
    ("#### 12 * 3", "number", False),  # an expression is still being written
    ("#### ", "number", False),
    ("####\n", "number", False),  # the line ended without a number
    ("The answer is 42", "number", False),
    ("The answer is 42.", "number", False),  # could be 42.5
    ("The answer is 42.\n", "number", True),
    ("The answer is 42. ", "number", True),
    ("The answer is unclear.\n", "number", False),
    ("\\boxed{4", "number", False),
    ("\\boxed{42}", "number", True),
    ("Answer: B", "choice", False),  # could be "Because..."
    ("Answer: B\n", "choice", True),
    ("Answer: B.", "choice", True),
    ("The answer is (A", "choice", False),
    ("The answer is (A)", "choice", True),
    ("The answer is A", "choice", False),
    ("The answer is A big", "choice", False),
    ("The answer is A.", "choice", True),
    ("\\boxed{C}", "choice", True),
    ("\\boxed{x+1", "boxed", False),
    ("\\boxed{x+1}", "boxed", True),
    ("The answer is 5.\n", "boxed", False),  # boxed mode waits for a box
    ("#### Paris\n", "auto", True),
    ("#### Paris", "auto", False),
    ("The answer is 42.\n", "auto", True),
    ("Answer: Paris\n", "auto", True),  # the line the auto prompt asks for
    ("The answer is Paris.\n", "auto", False),  # free text after "answer is" may be prose
    ("The answer is not yet clear.\n", "auto", False),
    ("So, the answer is 8.\n", "number", True),
    ("So far the answer is 5 but we must add 3.\n", "number", False),  # mid-sentence
    ("Still thinking.\n", "auto", False),
    ("42\n", "line", False),  # only the end of the sample shows its last line
    ("ANSWER: x\n", "regex:ANSWER: (\\w+)", False),
]


def test_answer_line_complete():
    assert mismatches(answer_line_complete, COMPLETE_CASES) == []


def test_completion_reads_the_end_of_long_samples():
    reasoning = "We add the numbers one by one, carefully.\n" * 80
    assert answer_line_complete(reasoning + "#### 42\n", "number")
    assert not answer_line_complete(reasoning + "#### 42", "number")
    # An answer line long past was seen complete when it was written; it is not looked for again.
    assert not answer_line_complete("#### 42\n" + reasoning, "number")
    assert final_answer("#### 42\n" + reasoning, "number") == "42"


def test_complete_answer_line_reads_as_the_same_answer_it_stopped_on():
    """Growing a sample token by token: once complete, the answer no longer changes."""
    text = "3 + 4 = 7 apples. 7 * 2 = 14.\n#### 14\nQuestion: next one is 99"
    stop_at = next(end for end in range(len(text) + 1) if answer_line_complete(text[:end], "number"))
    assert text[:stop_at].endswith("#### 14\n")
    assert final_answer(text[:stop_at], "number") == final_answer(text, "number") == "14"


# ---------------------------------------------------------------- the vote


def samples(*answers_and_weights, cut=()):
    return [SampleResult(text="", answer=answer, weight=weight, tokens=10, cut=index in cut)
            for index, (answer, weight) in enumerate(answers_and_weights)]


def test_majority_counts_votes_and_skips_samples_without_answers():
    result = vote(samples(("42", 1), ("42", 1), ("7", 1), (None, 1), ("42", 1), ("7", 1)), "majority")
    assert result.answer == "42"
    assert result.counts == {"42": 3, "7": 2}
    assert result.n_voted == 5
    assert result.margin == 1
    assert result.winner_index == 0


def test_majority_tie_goes_to_the_larger_total_weight():
    result = vote(samples(("a", 0.2), ("b", 0.9), ("a", 0.3), ("b", 0.1)), "majority")
    assert result.counts == {"b": 2, "a": 2}
    assert result.answer == "b"
    assert result.weights["b"] == pytest.approx(1.0) and result.weights["a"] == pytest.approx(0.5)
    assert result.margin == 0


def test_majority_tie_in_count_and_weight_goes_to_the_first_seen():
    result = vote(samples(("x", 1.0), ("y", 1.0), ("y", 1.0), ("x", 1.0)), "majority")
    assert result.answer == "x"
    assert list(result.counts) == ["x", "y"]


def test_weighted_vote_can_overrule_the_majority():
    sample_set = samples(("a", 0.1), ("a", 0.1), ("a", 0.1), ("b", 0.5))
    assert vote(sample_set, "majority").answer == "a"
    weighted = vote(sample_set, "weighted")
    assert weighted.answer == "b"
    assert weighted.margin == pytest.approx(0.5 - 0.3)
    assert weighted.counts == {"b": 1, "a": 3}  # best first by the method's ranking
    assert weighted.winner_index == 3


def test_weighted_tie_goes_to_more_votes_then_first_seen():
    assert vote(samples(("a", 0.5), ("b", 0.25), ("b", 0.25)), "weighted").answer == "b"
    assert vote(samples(("b", 0.5), ("a", 0.5)), "weighted").answer == "b"


def test_cut_samples_do_not_vote():
    result = vote(samples(("a", 5.0), ("a", 5.0), ("b", 1.0), cut={0, 1}), "weighted")
    assert (result.answer, result.n_voted, result.counts) == ("b", 1, {"b": 1})
    assert result.winner_index == 2


def test_no_answers_no_winner():
    result = vote(samples((None, 1.0), (None, 2.0)), "weighted")
    assert (result.answer, result.counts, result.n_voted, result.margin, result.winner_index) == (
        None, {}, 0, 0.0, None)
    assert vote([], "majority").answer is None


def test_winner_index_is_the_most_confident_sample_of_the_winner():
    result = vote(samples(("a", 0.2), ("b", 0.1), ("a", 0.9), ("a", 0.9)), "weighted")
    assert (result.answer, result.winner_index) == ("a", 2)


def test_single_answer_margin_is_its_whole_score():
    assert vote(samples(("a", 1), ("a", 1), ("a", 1)), "majority").margin == 3


@pytest.mark.parametrize("weight", [-0.1, math.nan, math.inf])
def test_invalid_weights_are_rejected(weight):
    with pytest.raises(ValueError):
        vote(samples(("a", weight)), "weighted")


def test_unknown_vote_method():
    with pytest.raises(UsageError):
        vote(samples(("a", 1)), "plurality")


def test_differently_written_answers_vote_together():
    texts = [
        "12 * 83 = 996, plus 4 is 1000.\n#### 1,000",
        "So she has 1000 left. The answer is 1000.",
        "That makes $1,000.00 in total. The answer is $1,000.",
        "#### 999",
        "I don't know how to solve this.",
        "Total: \\boxed{1000}",
    ]
    result = vote([SampleResult(text, final_answer(text, "number"), 1.0, 20) for text in texts], "majority")
    assert result.counts == {"1000": 4, "999": 1}
    assert result.answer == "1000"
    assert result.n_voted == 5
