"""The GSM8K format: `question`, and an `answer` whose lines are the working (with `<<…>>`
calculator annotations) and whose last line is `#### 72`.

Shared by the seed stage (a GSM8K train file becomes traces) and by the eval
sets (a GSM8K test file becomes eval items); stages/tables.py reads the file.
Errors name file:line (or row) and field.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from stages.common import StageError

_ANNOTATION = re.compile(r"<<[^<>]*>>")
_FINAL = re.compile(r"^####\s*(.*?)\s*$")
_NUMBER = re.compile(r"^-?[0-9]+(\.[0-9]+)?$")


def difficulty(n_steps: int) -> str:
    return "easy" if n_steps <= 2 else "medium" if n_steps <= 4 else "hard"


def parse_row(row: Mapping[str, Any], where: str) -> tuple[str, list[str], str]:
    """(question, working lines, final answer) of one GSM8K record.

    The working lines lose their calculator annotations; the final answer is
    the `####` line's number with thousands separators and `$` removed.
    """
    for key in ("question", "answer"):
        if key not in row:
            raise StageError(f"{where}: {key}: missing")
        if not isinstance(row[key], str) or not row[key].strip():
            raise StageError(f"{where}: {key}: expected a non-empty string")
    lines = [" ".join(line.split()) for line in row["answer"].split("\n")]
    lines = [line for line in lines if line]
    match = _FINAL.match(lines[-1])
    if match is None:
        raise StageError(f"{where}: answer: no final '#### <answer>' line")
    final = match.group(1).replace(",", "").removeprefix("$")
    if not _NUMBER.match(final):
        raise StageError(f"{where}: answer: final answer {match.group(1)!r} is not a number")
    steps = []
    for n, line in enumerate(lines[:-1], start=1):
        text = " ".join(_ANNOTATION.sub("", line).split())
        if "<<" in text or ">>" in text:
            raise StageError(f"{where}: answer: unbalanced '<<…>>' calculator annotation on answer line {n}")
        if text.startswith("####"):
            raise StageError(f"{where}: answer: more than one '####' line")
        if text:
            steps.append(text)
    if not steps:
        raise StageError(f"{where}: answer: no working lines before '#### {final}'")
    return row["question"].strip(), steps, final
