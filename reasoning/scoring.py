"""Answer scoring: pure functions, no I/O.

Numbers are parsed into exact `Fraction`s so "0.75", "3/4" and "75/100" compare
equal without float noise. Parsing is strict about the number itself (a bare
number, optionally with a sign, a currency symbol, thousands separators, a
percent sign or a few unit words) so that "about 12" or "5 or 6" never count as
a right answer by accident.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from fractions import Fraction

ANSWER_TYPES = ("number", "text", "fraction", "bool", "choice", "phrase", "exact", "math")

_DECIMAL = r"(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?"
_UNIT_WORD = r"(?:[^\W\d_]|°)+"  # letters (any script) and the degree sign
_NUMBER = re.compile(
    # possessive `\s*+`: three optional runs of spaces back to back would backtrack cubically ("-   …x")
    r"(?P<sign>[+-])?\s*+(?P<cur>[$€£¥])?\s*+(?P<sign2>[+-])?\s*+"
    r"(?:(?P<whole>\d+)\s+(?P<mnum>\d+)/(?P<mden>\d+)"  # mixed number: 1 1/2
    r"|(?P<num>\d+)\s*/\s*(?P<den>\d+)"  # fraction: 3/4
    rf"|(?P<dec>{_DECIMAL}))"  # 1,000.50 / 3.75 / 1e3
    rf"\s*(?:%|[$€£¥]|{_UNIT_WORD}(?:[ /-]{_UNIT_WORD}){{0,2}})?"  # 25% / 3000 m / km/h / 20 dollars
)
# A number longer than this is no answer anyone writes, and reading it costs without bound:
# Fraction("1e99999999") builds the integer, and Python refuses int strings over 4300 digits.
MAX_DIGITS = 1000  # digits in any one part of a number (whole, numerator, denominator, mantissa)
MAX_EXPONENT = 1000  # |e| of scientific notation
_QUOTES = "\"'`“”‘’"
_TRUE = {"yes", "true", "y"}
_FALSE = {"no", "false", "n"}


def parse_number(s: str | None) -> Fraction | None:
    """The exact value of a numeric answer, or None when `s` is not one number.

    Accepts "-75", "3.75", "1,000", "$1,250.50", "3/4", "-1/2", "1 1/2",
    "3000 m", "45 km/h", "25%" (the value is 25: percent is read as a unit),
    a trailing full stop and surrounding quotes. Rejects misplaced thousands
    separators ("1,00"), leading words ("about 12") and several numbers.
    """
    if s is None:
        return None
    text = unicodedata.normalize("NFKC", s).replace("\u2212", "-").strip().strip(_QUOTES).strip()
    if text.endswith("."):
        text = text[:-1].rstrip()
    m = _NUMBER.fullmatch(text)
    if m is None or (m["sign"] and m["sign2"]):
        return None
    negative = (m["sign"] or m["sign2"]) == "-"
    if not _holdable(m):
        return None  # a number it cannot hold is not a number
    if m["dec"] is not None:
        value = Fraction(m["dec"].replace(",", ""))
    else:
        den = int(m["mden"] if m["whole"] is not None else m["den"])
        if den == 0:
            return None
        if m["whole"] is not None:
            value = int(m["whole"]) + Fraction(int(m["mnum"]), den)
        else:
            value = Fraction(int(m["num"]), den)
    return -value if negative else value


def _holdable(m: re.Match) -> bool:
    """Every part of the matched number within MAX_DIGITS digits, its exponent within MAX_EXPONENT."""
    mantissa, _, exponent = (m["dec"] or "").replace(",", "").replace(".", "").lower().partition("e")
    parts = (mantissa, m["whole"], m["mnum"], m["mden"], m["num"], m["den"])
    if any(part is not None and len(part) > MAX_DIGITS for part in parts):
        return False
    digits = exponent.lstrip("+-")  # leading zeros count: Python reads them too (1e000…01)
    return len(digits) <= len(str(MAX_EXPONENT)) and int(digits or 0) <= MAX_EXPONENT


def normalize_text(s: str) -> str:
    """Casefolded, punctuation and quotes removed, whitespace collapsed."""
    s = unicodedata.normalize("NFKC", s).casefold()
    kept = (ch for ch in s if ch not in _QUOTES and not unicodedata.category(ch).startswith("P"))
    return " ".join("".join(kept).split())


def parse_bool(s: str) -> bool | None:
    word = normalize_text(s)
    return True if word in _TRUE else False if word in _FALSE else None


def _within(a: Fraction, b: Fraction, tolerance: Fraction) -> bool:
    return abs(a - b) <= tolerance


def score_answer(
    predicted: str | None,
    expected: str,
    answer_type: str,
    rel_tolerance: float,
    partial_within: float,
    choices: Sequence[str] | None = None,
) -> tuple[bool, bool]:
    """(correct, partial) for one predicted answer against the expected one.

    number: |a-b| <= rel_tolerance * max(1, |b|); fraction: exact value
    ("0.75" matches "3/4"); text: normalised equality; bool: yes/true/y vs
    no/false/n. partial is correct, or (number, fraction) |a-b| <=
    partial_within * |b|. A missing or empty prediction is (False, False).
    choice (one of `choices`), phrase, exact and math are right or wrong, never partial (_score_other).
    Raises ValueError when `expected` itself cannot be read as `answer_type`.
    """
    if answer_type not in ANSWER_TYPES:
        raise ValueError(f"unknown answer_type {answer_type!r} (expected one of {', '.join(ANSWER_TYPES)})")
    if answer_type in ("choice", "phrase", "exact", "math"):
        correct = _score_other(predicted, expected, answer_type, choices)
        return correct, correct
    if answer_type in ("number", "fraction"):
        b = parse_number(expected)
        if b is None:
            raise ValueError(f"expected answer {expected!r} is not a {answer_type}")
        a = parse_number(predicted) if predicted and predicted.strip() else None
        if a is None:
            return False, False
        if answer_type == "fraction":
            correct = a == b
        else:
            correct = _within(a, b, Fraction(rel_tolerance) * max(1, abs(b)))
        return correct, correct or _within(a, b, Fraction(partial_within) * abs(b))
    if answer_type == "bool":
        b = parse_bool(expected)
        if b is None:
            raise ValueError(f"expected answer {expected!r} is not a yes/no answer")
        correct = predicted is not None and parse_bool(predicted) is b
        return correct, correct
    b_text = normalize_text(expected)
    if not b_text:
        raise ValueError(f"expected answer {expected!r} is empty after normalisation")
    correct = predicted is not None and normalize_text(predicted) == b_text
    return correct, correct


def _score_other(predicted: str | None, expected: str, answer_type: str, choices: Sequence[str] | None) -> bool:
    """choice, phrase and exact (reasoning/textual.py), math (reasoning/mathexpr.py): right or wrong, no partial."""
    from reasoning import mathexpr, textual  # imported here: textual imports this module

    if answer_type == "choice":
        return textual.pick(predicted, choices or []) == textual.expected_choice(expected, choices)
    if answer_type == "math":
        return mathexpr.equivalent(predicted, expected)
    return textual.same_text(predicted, expected, answer_type)
