"""Answers compared as text: a lettered option, a short phrase, an exact string. Pure functions, no I/O.

- choice: the expected answer is one of `choices` (by letter, `A`/`(A)`, or by
  its text); the prediction may be the letter in any of the usual dresses
  (`B`, `b`, `(B)`, `B)`, `B.`), the option's text, or both (`(B) Paris`, when
  they agree). Anything that does not pick exactly one option, such as two
  letters or a letter whose text is another option's, picks none and is wrong.
- phrase: text equal once case, punctuation, quotes and the articles a/an/the are dropped.
- exact: text equal once whitespace is collapsed (`) ] }` and `]})` differ; case counts).
"""

from __future__ import annotations

import re
import string
import unicodedata
from collections.abc import Sequence

from reasoning.scoring import normalize_text

_QUOTES = "\"'`“”‘’"
_LETTER = re.compile(r"\(?([A-Za-z])\)?\.?")  # B, b, (B), B), B.
_LETTER_TEXT = re.compile(r"\(?([A-Za-z])[).:]\s*(\S.*)", re.DOTALL)  # (B) Paris, B) Paris, B. Paris, B: Paris
_ARTICLES = {"a", "an", "the"}


def _clean(s: str) -> str:
    return unicodedata.normalize("NFKC", s).strip().strip(_QUOTES).strip()


def _by_text(text: str, choices: Sequence[str]) -> int | None:
    """The one option whose normalised text is `text`'s; None when no option or several are."""
    key = normalize_text(text)
    hits = [i for i, choice in enumerate(choices) if key and normalize_text(choice) == key]
    return hits[0] if len(hits) == 1 else None


def _letter_index(letter: str, choices: Sequence[str]) -> int | None:
    i = string.ascii_uppercase.index(letter.upper())
    return i if i < len(choices) else None


def pick(answer: str | None, choices: Sequence[str]) -> int | None:
    """The index of the one option `answer` names, or None when it names none or more than one."""
    if answer is None or not choices:
        return None
    text = _clean(answer)
    if not text:
        return None
    if (m := _LETTER.fullmatch(text)) is not None:
        return _letter_index(m[1], choices)
    by_text = _by_text(text, choices)
    if by_text is not None:
        return by_text
    if (m := _LETTER_TEXT.fullmatch(text)) is not None:
        i = _letter_index(m[1], choices)
        return i if i is not None and _by_text(m[2], choices) == i else None
    return None


def expected_choice(expected: str, choices: Sequence[str] | None) -> int:
    """The index of the expected option; ValueError when there are no choices or it names none of them."""
    if not choices:
        raise ValueError("a choice answer needs its choices")
    i = pick(expected, choices)
    if i is None:
        raise ValueError(
            f"expected answer {expected!r} is not one of the {len(choices)} choices "
            f"(a letter A-{string.ascii_uppercase[len(choices) - 1]} or an option's text)"
        )
    return i


def normalize_phrase(s: str) -> str:
    """normalize_text without the articles a, an, the."""
    return " ".join(word for word in normalize_text(s).split() if word not in _ARTICLES)


def normalize_exact(s: str) -> str:
    return " ".join(unicodedata.normalize("NFKC", s).split())


NORMALIZERS = {"phrase": normalize_phrase, "exact": normalize_exact}


def same_text(predicted: str | None, expected: str, kind: str) -> bool:
    """`predicted` equals `expected` under the `kind` (phrase | exact) normalisation; ValueError when
    `expected` is empty under it."""
    normalize = NORMALIZERS[kind]
    gold = normalize(expected)
    if not gold:
        raise ValueError(f"expected answer {expected!r} is empty after normalisation")
    return predicted is not None and normalize(predicted) == gold
