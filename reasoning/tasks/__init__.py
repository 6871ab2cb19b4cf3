"""Deterministic synthetic task generators: prompts with small, mechanical, checkable steps.

Each generator is a function `(rng, difficulty) -> Draft` registered where it is
written, `@generator("rate.total", weight=6)`: its name starts with its category,
its weight is relative to the other generators of its family, and it draws only
from the `random.Random` it is given, so a task is a pure function of
(generator, difficulty, seed). The seed stage builds the training set from them
and `scripts/make_evalset.py` builds the eval set from the very same generators,
so both share one phrasing and one set of step conventions:

- `compute`: exactly one operation `a op b = c`, op one of `+ - × /`, numbers
  written plainly (no thousands separators, negatives as `-75`, decimals
  without trailing zeros). In a multiplication one operand is <= 12; a
  division is exact with divisor <= 12, or 10/100 (percentages, cents), or
  60/1000 (unit conversions, quotient <= 12).
- `restate`: a fact copied from the prompt (`Ana has 124`).
- `compare`: `401 > 400` or `159 < 170`.
- `spell`: letters separated by spaces (`p l a n e t`).
- `conclude`: the final answer itself, where it is not the last computed
  number (a name, yes/no, a fraction, a word, a letter count).

The final answer is the last computed value, or the `conclude` step's content.
Difficulty: easy = 1 operation, medium = 2, hard = 3-4 or 3-digit-heavy.
A family's draws depend on the order its generators are registered in (the
order they are written in their module), so moving one changes data/train.jsonl.
"""

from reasoning.tasks import arithmetic, sequences, strings, word_problems  # noqa: F401 (registers the generators)
from reasoning.tasks.core import (
    CATEGORIES,
    DIFFICULTIES,
    FAMILIES,
    FAMILY_OF_CATEGORY,
    GENERATORS,
    Draft,
    Task,
    generate,
    normalize_prompt,
    num,
    sample_task,
    with_commas,
)
from reasoning.tasks.word_problems import NAMES

__all__ = [
    "CATEGORIES",
    "DIFFICULTIES",
    "FAMILIES",
    "FAMILY_OF_CATEGORY",
    "GENERATORS",
    "NAMES",
    "Draft",
    "Task",
    "generate",
    "normalize_prompt",
    "num",
    "sample_task",
    "with_commas",
]
