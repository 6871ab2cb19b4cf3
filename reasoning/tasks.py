"""Deterministic synthetic task generators: prompts with small, mechanical, checkable steps.

Every generator is a function `(rng, difficulty) -> Task` that draws only from the
`random.Random` it is given, so a task is a pure function of (generator,
difficulty, seed). The seed stage builds the training set from them and
`scripts/make_evalset.py` builds the eval set from the very same generators,
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
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from math import gcd
from typing import Union

Number = Union[int, Decimal]

CATEGORIES = (
    "arithmetic",
    "rate",
    "percentage",
    "cost_per_item",
    "unit_conversion",
    "comparison",
    "sequence",
    "string",
)
DIFFICULTIES = ("easy", "medium", "hard")
FAMILIES = ("arithmetic", "word_problem", "sequence", "string")
STEP_TYPES = ("restate", "compute", "compare", "spell", "conclude")
ANSWER_TYPES = ("number", "text", "fraction", "bool")
FAMILY_OF_CATEGORY = {
    "arithmetic": "arithmetic",
    "rate": "word_problem",
    "percentage": "word_problem",
    "cost_per_item": "word_problem",
    "unit_conversion": "word_problem",
    "comparison": "word_problem",
    "sequence": "sequence",
    "string": "string",
}
# Divisors allowed beyond 2..12: tenths/hundredths (percentages, cents) and unit factors.
UNIT_DIVISORS = (60, 100, 1000)


def normalize_prompt(prompt: str) -> str:
    """The form two prompts are compared in for decontamination: case and whitespace folded."""
    return " ".join(prompt.casefold().split())


def num(x: Number) -> str:
    """A number as steps and answers write it: plain digits, `-75`, `3.75` (no trailing zeros)."""
    if isinstance(x, Decimal):
        text = format(x.normalize(), "f")
        return "0" if text == "-0" else text
    return str(x)


def with_commas(x: Number) -> str:
    """`2000` -> `2,000` (how a person writes a large number; prompts and eval answers only)."""
    if isinstance(x, Decimal):
        whole, _, frac = num(x).partition(".")
        return f"{int(whole):,}" + (f".{frac}" if frac else "")
    return f"{x:,}"


def apply_op(a: Number, op: str, b: Number) -> Number:
    """`a op b` under the learnability rules; a generator that breaks them is a bug (ValueError)."""
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "×":
        if min(abs(a), abs(b)) > 12:
            raise ValueError(f"multiplication needs an operand <= 12: {a} × {b}")
        return a * b
    if op == "/":
        if not (isinstance(a, int) and isinstance(b, int)):
            raise ValueError(f"division is integer only: {a} / {b}")
        if not (2 <= b <= 12 or b in UNIT_DIVISORS):
            raise ValueError(f"divisor must be 2..12, 60, 100 or 1000: {a} / {b}")
        q, r = divmod(a, b)
        if r:
            raise ValueError(f"division must be exact: {a} / {b}")
        if b in (60, 1000) and q > 12:
            raise ValueError(f"unit division must give at most 12: {a} / {b}")
        return q
    raise ValueError(f"unknown operator {op!r}")


@dataclass
class Task:
    """One generated problem: prompt, steps, answer, and how to label it."""

    prompt: str
    steps: list[tuple[str, str]]
    answer: str
    category: str
    difficulty: str
    generator: str
    answer_type: str = "number"
    unit: str | None = None  # unit of a numeric answer ("m", "minutes"), for eval answers like "3000 m"

    def trace(self, id: str, seed: int) -> dict:
        """The trace record of data/train.jsonl."""
        return {
            "id": id,
            "prompt": self.prompt,
            "steps": [{"i": i, "type": t, "content": c} for i, (t, c) in enumerate(self.steps, start=1)],
            "final_answer": self.answer,
            "meta": {
                "source": "synthetic",
                "generator": self.generator,
                "category": self.category,
                "difficulty": self.difficulty,
                "seed": seed,
            },
        }

    def display_answer(self, style: str = "plain") -> str:
        """The answer as a person would write it: plain, `commas` (2,000) or with its `unit` (3000 m)."""
        if style == "plain":
            return self.answer
        if style == "commas":
            value = Decimal(self.answer)
            return with_commas(int(value) if value == value.to_integral_value() else value)
        if style == "unit":
            if self.unit is None:
                raise ValueError(f"{self.generator} answer has no unit")
            return f"{self.answer} {self.unit}"
        raise ValueError(f"unknown answer style {style!r}")


@dataclass
class _Steps:
    steps: list[tuple[str, str]] = field(default_factory=list)

    def compute(self, a: Number, op: str, b: Number) -> Number:
        c = apply_op(a, op, b)
        self.steps.append(("compute", f"{num(a)} {op} {num(b)} = {num(c)}"))
        return c

    def add(self, kind: str, content: str) -> None:
        self.steps.append((kind, content))

    def compare(self, a: Number, b: Number) -> bool:
        """Append `a > b` or `a < b` (never equal); True when a > b."""
        if a == b:
            raise ValueError(f"compare needs distinct values: {a}")
        self.steps.append(("compare", f"{num(a)} {'>' if a > b else '<'} {num(b)}"))
        return a > b


# ---------------------------------------------------------------- vocabulary

NAMES = (
    "Ana", "Ben", "Carlos", "Dana", "Eli", "Fatima", "Grace", "Hiro", "Ivan", "Jade",
    "Kofi", "Lena", "Maya", "Noah", "Omar", "Priya", "Quinn", "Rosa", "Sam", "Tara",
    "Uma", "Victor", "Wen", "Yusuf", "Zoe",
)
COUNT_ITEMS = ("stickers", "marbles", "cards", "coins", "stamps", "books", "shells", "beads", "apples", "pencils")
# singular, plural, price range in dollars
SHOP_ITEMS = (
    ("pen", "pens", 2, 9),
    ("notebook", "notebooks", 2, 15),
    ("apple", "apples", 2, 6),
    ("book", "books", 5, 40),
    ("ticket", "tickets", 5, 60),
    ("shirt", "shirts", 8, 60),
    ("toy car", "toy cars", 3, 25),
    ("cup", "cups", 2, 12),
    ("lamp", "lamps", 10, 90),
    ("chair", "chairs", 15, 120),
    ("bike", "bikes", 90, 450),
    ("game", "games", 10, 70),
)
_CHEAP_ITEMS = tuple(item for item in SHOP_ITEMS if item[3] <= 120)  # totals stay under 2000 with change
# subject, pronoun after "does", verb (3rd person), verb, counted noun, time unit, plausible rates
RATE_CONTEXTS = (
    ("A car", "it", "travels", "travel", "km", "hour", 30, 120),
    ("A train", "it", "travels", "travel", "km", "hour", 40, 250),
    ("A machine", "it", "makes", "make", "toys", "hour", 5, 250),
    ("A printer", "it", "prints", "print", "pages", "minute", 5, 60),
    ("A pump", "it", "moves", "move", "liters", "minute", 5, 250),
    ("A bakery", "it", "bakes", "bake", "cookies", "hour", 10, 250),
    ("A farm", "it", "collects", "collect", "eggs", "day", 10, 250),
    ("{name}", "{name}", "reads", "read", "pages", "day", 5, 80),
    ("{name}", "{name}", "earns", "earn", "dollars", "hour", 8, 60),
    ("{name}", "{name}", "walks", "walk", "km", "day", 2, 30),
    ("{name}", "{name}", "types", "type", "words", "minute", 20, 120),
    ("{name}", "{name}", "saves", "save", "dollars", "week", 5, 250),
)


@dataclass(frozen=True)
class Unit:
    big: str  # plural as written in prompts: "km", "hours"
    big_short: str  # in an answer with units: "km", "hours"
    small: str  # "meters", "minutes"
    small_short: str  # "m", "minutes"
    factor: int
    mixed: str  # "{q} big and {r} small" phrasing, medium
    mixed_hard: str  # "({q1} + {q2}) big and {r} small", hard


UNITS = (
    Unit("km", "km", "meters", "m", 1000,
         "{name} walks {q} km and {r} meters. How many meters does {name} walk?",
         "{name} walks {q1} km, then {q2} km and {r} meters. How many meters does {name} walk in total?"),
    Unit("kg", "kg", "grams", "g", 1000,
         "A box weighs {q} kg and {r} grams. How many grams does it weigh?",
         "A bag of rice weighs {q1} kg. A bag of flour weighs {q2} kg and {r} grams. "
         "How many grams do they weigh together?"),
    Unit("hours", "hours", "minutes", "minutes", 60,
         "A trip takes {q} hours and {r} minutes. How many minutes does it take?",
         "A trip takes {q1} hours, then {q2} more hours and {r} minutes. How many minutes does it take in total?"),
    Unit("dollars", "dollars", "cents", "cents", 100,
         "{name} has {q} dollars and {r} cents. How many cents does {name} have?",
         "{name} has {q1} dollars and finds {q2} dollars and {r} cents. How many cents does {name} have now?"),
    Unit("meters", "m", "centimeters", "cm", 100,
         "A rope is {q} meters and {r} centimeters long. How many centimeters long is it?",
         "One rope is {q1} meters long. Another is {q2} meters and {r} centimeters long. "
         "How many centimeters are they together?"),
    Unit("minutes", "minutes", "seconds", "seconds", 60,
         "A song lasts {q} minutes and {r} seconds. How many seconds does it last?",
         "One song lasts {q1} minutes. Another lasts {q2} minutes and {r} seconds. "
         "How many seconds do they last together?"),
    Unit("liters", "liters", "milliliters", "ml", 1000,
         "A jug holds {q} liters and {r} milliliters. How many milliliters does it hold?",
         "A pot holds {q1} liters. A jug holds {q2} liters and {r} milliliters. "
         "How many milliliters do they hold together?"),
)

WORDS = (
    "cat", "dog", "sun", "map", "cup", "red", "box", "hat", "pen", "egg",
    "tree", "book", "fish", "moon", "star", "bird", "cake", "door", "frog", "lamp",
    "milk", "rain", "ship", "snow", "wind", "ball", "king", "leaf",
    "apple", "bread", "chair", "cloud", "green", "house", "lemon", "music", "paper", "queen",
    "sheep", "table", "water", "zebra", "puppy", "river", "tiger", "grape",
    "planet", "garden", "window", "yellow", "banana", "pencil", "rabbit", "orange", "silver", "basket",
    "candle", "castle", "dragon", "forest", "island", "jungle", "kitten", "ladder", "market", "pepper",
    "rocket", "school", "summer", "tomato", "turtle", "bubble", "cheese", "papaya", "coffee", "mammal",
    "elephant", "umbrella", "mountain", "butterfly", "chocolate", "blanket", "picture", "penguin",
    "diamond", "holiday", "morning", "teacher", "kitchen", "library", "tomorrow", "strawberry",
    "cinnamon", "seventeen", "lollipop", "volleyball", "balloon", "success",
)
_REVERSE_POOLS = {
    "easy": tuple(w for w in WORDS if len(w) <= 4),
    "medium": tuple(w for w in WORDS if 5 <= len(w) <= 6),
    "hard": tuple(w for w in WORDS if len(w) >= 7),
}
_LETTER_COUNTS = tuple((w, ch, w.count(ch)) for w in WORDS for ch in sorted(set(w)))
_COUNT_POOLS = {
    "easy": tuple(x for x in _LETTER_COUNTS if x[2] == 1),
    "medium": tuple(x for x in _LETTER_COUNTS if x[2] == 2),
    "hard": tuple(x for x in _LETTER_COUNTS if x[2] >= 3),
}


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _a(noun: str) -> str:
    return ("an " if noun[0] in "aeiou" else "a ") + noun


def _two_names(rng: random.Random) -> tuple[str, str]:
    a, b = rng.sample(NAMES, 2)
    return a, b


# ---------------------------------------------------------------- arithmetic family

_WHAT_IS = ("What is {e}?", "Calculate {e}.", "Compute {e}.", "Work out {e}.")


def arithmetic_chain(rng: random.Random, difficulty: str) -> Task:
    """Left-to-right chains of + - × (and an exact / first): `What is 124 + 35 - 48?`."""
    n_ops = {"easy": 1, "medium": 2, "hard": rng.choice((3, 4))}[difficulty]
    lo = 100 if difficulty == "hard" else 10
    s = _Steps()
    r = rng.random()
    if r < 0.2:  # starts with a product
        a, m = rng.randint(lo, 999), rng.randint(2, 12)
        if rng.random() < 0.5:
            expr, value = f"{a} × {m}", s.compute(a, "×", m)
        else:
            expr, value = f"{m} × {a}", s.compute(m, "×", a)
        done, muldiv = 1, True
    elif r < 0.3:  # starts with an exact quotient
        d = rng.randint(2, 12)
        q = rng.randint(max(2, -(-lo // d)), 999 // d)
        expr, value = f"{d * q} / {d}", s.compute(d * q, "/", d)
        done, muldiv = 1, True
    else:
        value = rng.randint(lo, 999)
        expr, done, muldiv = str(value), 0, False
    while done < n_ops:
        ops, weights = ["+", "-"], [0.45, 0.45]
        if not muldiv and done >= 1 and value <= 999:
            ops.append("×")
            weights.append(0.25)
        op = rng.choices(ops, weights)[0]
        if op == "-" and value < 2:
            op = "+"
        if op == "+":
            b = rng.randint(10, 999)
            expr = f"{expr} + {b}"
        elif op == "-":
            b = rng.randint(10 if value > 20 else 1, min(999, value - 1))
            expr = f"{expr} - {b}"
        else:
            b = rng.randint(2, 12)
            expr = f"({expr}) × {b}"
            muldiv = True
        value = s.compute(value, op, b)
        done += 1
    prompt = rng.choice(_WHAT_IS).format(e=expr)
    return Task(prompt, s.steps, num(value), "arithmetic", difficulty, "arithmetic.chain")


def arithmetic_negative(rng: random.Random, difficulty: str) -> Task:
    """Chains of + and - whose result is negative: `What is 48 - 125 + 30?`."""
    n_ops = {"easy": 1, "medium": 2, "hard": 3}[difficulty]
    while True:
        s = _Steps()
        a = rng.randint(10, 499)
        value, expr = a, str(a)
        for k in range(n_ops):
            if k == 0:
                op, b = "-", rng.randint(a + 1, 999)
            else:
                op = rng.choices(("+", "-"), (0.4, 0.6))[0]
                b = rng.randint(10, 999)
            expr = f"{expr} {op} {b}"
            value = s.compute(value, op, b)
        if value < 0:
            prompt = rng.choice(_WHAT_IS).format(e=expr)
            return Task(prompt, s.steps, num(value), "arithmetic", difficulty, "arithmetic.negative")


def _decimal(rng: random.Random) -> Decimal:
    if rng.random() < 0.5:  # one decimal place, 0.1 .. 99.9
        n = rng.randint(1, 999)
        while n % 10 == 0:
            n = rng.randint(1, 999)
        return Decimal(n) / 10
    n = rng.randint(1, 999)  # two decimal places, 0.01 .. 9.99
    while n % 10 == 0:
        n = rng.randint(1, 999)
    return Decimal(n) / 100


def arithmetic_decimal(rng: random.Random, difficulty: str) -> Task:
    """Decimals: `What is 2.5 + 1.25?`; hard ones may start with `1.5 × 4`."""
    n_ops = {"easy": 1, "medium": 2, "hard": 3}[difficulty]
    s = _Steps()
    if difficulty == "hard" and rng.random() < 0.4:
        a, m = _decimal(rng), rng.randint(2, 12)
        expr, value, done = f"{num(a)} × {m}", s.compute(a, "×", m), 1
    else:
        value = _decimal(rng)
        expr, done = num(value), 0
    while done < n_ops:
        b = _decimal(rng)
        op = "+" if b >= value or rng.random() < 0.5 else "-"
        expr = f"{expr} {op} {num(b)}"
        value = s.compute(value, op, b)
        done += 1
    prompt = rng.choice(_WHAT_IS).format(e=expr)
    return Task(prompt, s.steps, num(value), "arithmetic", difficulty, "arithmetic.decimal")


def arithmetic_fraction(rng: random.Random, difficulty: str) -> Task:
    """Fractions answered in lowest terms: `What is 1/4 + 2/4?` -> `1 + 2 = 3`, `3/4`.

    easy: two terms over one denominator; medium: three terms; hard: one
    denominator a multiple of the other (`1/2 + 1/4`: `4 / 2 = 2`, `1 × 2 = 2`, `2 + 1 = 3`).
    """
    while True:
        s = _Steps()
        if difficulty in ("easy", "medium"):
            den = rng.randint(3, 12)
            nums = [rng.randint(1, den - 1) for _ in range(2 if difficulty == "easy" else 3)]
            ops = [rng.choice("+-") for _ in nums[1:]]
            expr, value = f"{nums[0]}/{den}", nums[0]
            for op, n in zip(ops, nums[1:]):
                expr += f" {op} {n}/{den}"
                value = s.compute(value, op, n)
                if value <= 0:
                    break
        else:
            small = rng.randint(2, 6)
            den = small * rng.randint(2, 12 // small)
            k = den // small
            n_small, n_big = rng.randint(1, small - 1), rng.randint(1, den - 1)
            op = rng.choice("+-")
            small_first = rng.random() < 0.5
            s.compute(den, "/", small)
            scaled = s.compute(n_small, "×", k)
            if small_first:
                expr = f"{n_small}/{small} {op} {n_big}/{den}"
                value = s.compute(scaled, op, n_big)
            else:
                expr = f"{n_big}/{den} {op} {n_small}/{small}"
                value = s.compute(n_big, op, scaled)
        if value > 0 and gcd(value, den) == 1 and value != den:
            answer = f"{value}/{den}"
            s.add("conclude", answer)
            prompt = rng.choice(_WHAT_IS).format(e=expr)
            return Task(prompt, s.steps, answer, "arithmetic", difficulty, "arithmetic.fraction", "fraction")


def arithmetic_thousands(rng: random.Random, difficulty: str) -> Task:
    """Prompts with thousands separators; steps use plain digits: `1,250 + 750` -> `1250 + 750 = 2000`."""
    n_ops = {"easy": 1, "medium": 2, "hard": 3}[difficulty]
    while True:
        s = _Steps()
        value = rng.randint(1000, 9999)
        if rng.random() < 0.5:
            value = value // 50 * 50
        expr = with_commas(value)
        for _ in range(n_ops):
            b = rng.randint(100, 999) if rng.random() < 0.6 else rng.randint(1000, 4999)
            op = "-" if b < value and rng.random() < 0.4 else "+"
            expr = f"{expr} {op} {with_commas(b)}"
            value = s.compute(value, op, b)
        if value >= 1000:
            prompt = rng.choice(_WHAT_IS).format(e=expr)
            return Task(prompt, s.steps, num(value), "arithmetic", difficulty, "arithmetic.thousands")


# ---------------------------------------------------------------- word problems: rate


def _rate_context(rng: random.Random) -> tuple[str, str, str, str, str, str, str, range]:
    subj, pron, verbs, verb, noun, unit, lo, hi = rng.choice(RATE_CONTEXTS)
    name = rng.choice(NAMES)
    per = rng.choice(("per", "every", "each"))
    return subj.format(name=name), pron.format(name=name), verbs, verb, noun, unit, per, range(lo, hi + 1)


def rate_total(rng: random.Random, difficulty: str) -> Task:
    """Rate × time: `A car travels 60 km per hour. How many km does it travel in 4 hours?`."""
    subj, pron, verbs, verb, noun, unit, per, rates = _rate_context(rng)
    s = _Steps()
    if difficulty == "easy":
        r, t = rng.choice(rates), rng.randint(2, 12)
        prompt = f"{subj} {verbs} {r} {noun} {per} {unit}. How many {noun} does {pron} {verb} in {t} {unit}s?"
        value = s.compute(r, "×", t)
    elif difficulty == "medium":
        r = rng.choice(rates)
        if rng.random() < 0.5:
            t1 = rng.randint(2, 9)
            t2 = rng.randint(1, 12 - t1)
            more = f"{t2} more {unit}" + ("s" if t2 > 1 else "")
            prompt = (f"{subj} {verbs} {r} {noun} {per} {unit}. "
                      f"How many {noun} does {pron} {verb} in {t1} {unit}s and then {more}?")
            total = s.compute(t1, "+", t2)
            value = s.compute(r, "×", total)
        else:
            t1 = rng.randint(3, 12)
            t2 = rng.randint(2, t1 - 1)
            prompt = (f"{subj} {verbs} {r} {noun} {per} {unit}. "
                      f"How many more {noun} does {pron} {verb} in {t1} {unit}s than in {t2} {unit}s?")
            diff = s.compute(t1, "-", t2)
            value = s.compute(r, "×", diff)
    else:
        r1, r2 = rng.sample(rates, 2)
        t1, t2 = rng.randint(2, 12), rng.randint(2, 12)
        prompt = (f"{subj} {verbs} {r1} {noun} {per} {unit} for {t1} {unit}s, "
                  f"then {r2} {noun} {per} {unit} for {t2} {unit}s. How many {noun} is that in total?")
        a = s.compute(r1, "×", t1)
        b = s.compute(r2, "×", t2)
        value = s.compute(a, "+", b)
    return Task(prompt, s.steps, num(value), "rate", difficulty, "rate.total")


def rate_unit_rate(rng: random.Random, difficulty: str) -> Task:
    """Total / time, then maybe × another time: `A car travels 240 km in 4 hours. ... per hour?`."""
    subj, pron, verbs, verb, noun, unit, per, rates = _rate_context(rng)
    r, t = rng.choice(rates), rng.randint(2, 12)
    total = r * t
    s = _Steps()
    if difficulty == "easy":
        prompt = f"{subj} {verbs} {total} {noun} in {t} {unit}s. How many {noun} does {pron} {verb} {per} {unit}?"
        value = s.compute(total, "/", t)
    elif difficulty == "medium":
        t2 = rng.choice([x for x in range(2, 13) if x != t])
        prompt = (f"{subj} {verbs} {total} {noun} in {t} {unit}s. "
                  f"At that rate, how many {noun} does {pron} {verb} in {t2} {unit}s?")
        rate = s.compute(total, "/", t)
        value = s.compute(rate, "×", t2)
    else:
        t2 = rng.randint(2, 9)
        t3 = rng.randint(1, 12 - t2)
        more = f"{t3} more {unit}" + ("s" if t3 > 1 else "")
        prompt = (f"{subj} {verbs} {total} {noun} in {t} {unit}s. "
                  f"At that rate, how many {noun} does {pron} {verb} in {t2} {unit}s and then {more}?")
        rate = s.compute(total, "/", t)
        time = s.compute(t2, "+", t3)
        value = s.compute(rate, "×", time)
    return Task(prompt, s.steps, num(value), "rate", difficulty, "rate.unit_rate")


# ---------------------------------------------------------------- word problems: percentage

_ONE_STEP_PERCENTS = (10, 25, 50)
_TWO_STEP_PERCENTS = (20, 30, 40, 60, 70, 75, 80, 90)


def _percent_base(rng: random.Random, p: int, lo: int = 20, hi: int = 990) -> int:
    step = 4 if p in (25, 75) else 2 if p == 50 else 10
    return step * rng.randint(-(-lo // step), hi // step)


def _percent_part(s: _Steps, n: int, p: int) -> int:
    """p% of n as `n / 10` (or `/ 4`, `/ 2`) then `× k`."""
    if p == 50:
        return s.compute(n, "/", 2)
    if p in (25, 75):
        q = s.compute(n, "/", 4)
        return q if p == 25 else s.compute(q, "×", 3)
    q = s.compute(n, "/", 10)
    return q if p == 10 else s.compute(q, "×", p // 10)


def percentage_of(rng: random.Random, difficulty: str) -> Task:
    """p% of n: `What is 25% of 360?` -> `360 / 4 = 90`."""
    p = rng.choice(_ONE_STEP_PERCENTS if difficulty == "easy" else _TWO_STEP_PERCENTS)
    n = _percent_base(rng, p)
    name, items = rng.choice(NAMES), rng.choice(COUNT_ITEMS)
    prompt = rng.choice((
        "What is {p}% of {n}?",
        "Find {p}% of {n}.",
        "{name} has {n} {items}. {name} gives away {p}% of them. How many {items} does {name} give away?",
        "A class has {n} students. {p}% of them walk to school. How many students walk to school?",
        "A tank holds {n} liters. It is {p}% full. How many liters are in the tank?",
        "A book has {n} pages. {name} has read {p}% of it. How many pages has {name} read?",
    )).format(p=p, n=n, name=name, items=items)
    s = _Steps()
    value = _percent_part(s, n, p)
    return Task(prompt, s.steps, num(value), "percentage", difficulty, "percentage.of")


def percentage_change(rng: random.Random, difficulty: str) -> Task:
    """A discount or an increase: part, then `n - part` or `n + part`."""
    p = rng.choice(_ONE_STEP_PERCENTS if difficulty == "medium" else _TWO_STEP_PERCENTS)
    n = _percent_base(rng, p, 20, 990)
    name = rng.choice(NAMES)
    item = rng.choice(SHOP_ITEMS)[0]
    template, op = rng.choice((
        ("A {item} costs {n} dollars. It is {p}% off. What is the sale price in dollars?", "-"),
        ("{name} had {n} dollars and spent {p}% of it. How many dollars does {name} have left?", "-"),
        ("A farm had {n} sheep and sold {p}% of them. How many sheep are left?", "-"),
        ("A town has {n} people. The number grows by {p}%. How many people live there now?", "+"),
        ("A shop sold {n} cups last week and {p}% more this week. How many cups did it sell this week?", "+"),
        ("{name} earns {n} dollars a week and gets a {p}% raise. How many dollars a week is that now?", "+"),
    ))
    prompt = template.format(item=item, n=n, p=p, name=name)
    s = _Steps()
    part = _percent_part(s, n, p)
    value = s.compute(n, op, part)
    return Task(prompt, s.steps, num(value), "percentage", difficulty, "percentage.change")


# ---------------------------------------------------------------- word problems: cost per item


def _price(rng: random.Random, item: tuple[str, str, int, int]) -> int:
    return rng.randint(item[2], item[3])


def cost_total(rng: random.Random, difficulty: str) -> Task:
    """Count × price (+ more): `Pens cost 3 dollars each. How much do 7 pens cost?`."""
    name = rng.choice(NAMES)
    s = _Steps()
    if difficulty == "easy":
        item = rng.choice(SHOP_ITEMS)
        one, many = item[0], item[1]
        p, k = _price(rng, item), rng.randint(2, 12)
        form = rng.randrange(3)
        if form == 0:
            prompt = f"{_cap(many)} cost {p} dollars each. How much do {k} {many} cost?"
            value = s.compute(p, "×", k)
        elif form == 1:
            prompt = f"One {one} costs {p} dollars. How many dollars do {k} {many} cost?"
            value = s.compute(p, "×", k)
        else:
            prompt = f"{name} buys {k} {many} at {p} dollars each. How many dollars does {name} pay?"
            value = s.compute(k, "×", p)
    elif difficulty == "medium":
        item, other = rng.sample(SHOP_ITEMS, 2)
        p, k, q = _price(rng, item), rng.randint(2, 12), _price(rng, other)
        prompt = (f"{name} buys {k} {item[1]} at {p} dollars each and {_a(other[0])} for {q} dollars. "
                  f"How much does {name} spend in dollars?")
        cost = s.compute(k, "×", p)
        value = s.compute(cost, "+", q)
    else:
        item, other = rng.sample(SHOP_ITEMS, 2)
        k1, p1, k2, p2 = rng.randint(2, 12), _price(rng, item), rng.randint(2, 12), _price(rng, other)
        prompt = (f"{name} buys {k1} {item[1]} at {p1} dollars each and {k2} {other[1]} at {p2} dollars each. "
                  f"How much does {name} spend in dollars?")
        a = s.compute(k1, "×", p1)
        b = s.compute(k2, "×", p2)
        value = s.compute(a, "+", b)
    return Task(prompt, s.steps, num(value), "cost_per_item", difficulty, "cost_per_item.total")


def cost_unit_price(rng: random.Random, difficulty: str) -> Task:
    """Total / count: `5 notebooks cost 40 dollars. How much does one notebook cost?`."""
    item = rng.choice(SHOP_ITEMS if difficulty != "hard" else _CHEAP_ITEMS)
    one, many = item[0], item[1]
    p = _price(rng, item)
    k = rng.randint(2, max(2, min(12, 999 // p)))  # the total stays within three digits
    total = p * k
    name = rng.choice(NAMES)
    s = _Steps()
    if difficulty == "easy":
        prompt = f"{k} {many} cost {total} dollars. How many dollars does one {one} cost?"
        value = s.compute(total, "/", k)
    elif difficulty == "medium":
        m = rng.choice([x for x in range(2, 13) if x != k])
        prompt = f"{k} {many} cost {total} dollars. How many dollars do {m} {many} cost?"
        price = s.compute(total, "/", k)
        value = s.compute(price, "×", m)
    else:
        bill = _bill_for(rng, total)
        change = bill - total
        m = rng.choice([x for x in range(2, 13) if x != k])
        prompt = (f"{name} pays {bill} dollars for {k} {many} and gets {change} dollars in change. "
                  f"How many dollars would {m} {many} cost?")
        paid = s.compute(bill, "-", change)
        price = s.compute(paid, "/", k)
        value = s.compute(price, "×", m)
    return Task(prompt, s.steps, num(value), "cost_per_item", difficulty, "cost_per_item.unit_price")


def _bill_for(rng: random.Random, total: int) -> int:
    options = [b for b in (10, 20, 50, 100, 200, 500, 1000, 2000) if b > total]
    return options[0] if rng.random() < 0.7 or len(options) == 1 else options[1]


def cost_change(rng: random.Random, difficulty: str) -> Task:
    """Change from a bill: `k × p`, then `bill - cost`."""
    name = rng.choice(NAMES)
    s = _Steps()
    if difficulty == "medium":
        item = rng.choice(_CHEAP_ITEMS)
        k, p = rng.randint(2, 12), _price(rng, item)
        bill = _bill_for(rng, k * p)
        prompt = (f"{name} buys {k} {item[1]} at {p} dollars each and pays with {bill} dollars. "
                  f"How many dollars of change does {name} get?")
        cost = s.compute(k, "×", p)
        value = s.compute(bill, "-", cost)
    else:
        item, other = rng.sample(_CHEAP_ITEMS, 2)
        k1, p1, k2, p2 = rng.randint(2, 6), _price(rng, item), rng.randint(2, 6), _price(rng, other)
        bill = _bill_for(rng, k1 * p1 + k2 * p2)
        prompt = (f"{name} buys {k1} {item[1]} at {p1} dollars each and {k2} {other[1]} at {p2} dollars each, "
                  f"and pays with {bill} dollars. How many dollars of change does {name} get?")
        a = s.compute(k1, "×", p1)
        b = s.compute(k2, "×", p2)
        cost = s.compute(a, "+", b)
        value = s.compute(bill, "-", cost)
    return Task(prompt, s.steps, num(value), "cost_per_item", difficulty, "cost_per_item.change")


# ---------------------------------------------------------------- word problems: unit conversion


def unit_simple(rng: random.Random, difficulty: str) -> Task:
    """One conversion: `How many meters are in 7 km?` -> `7 × 1000 = 7000`; or back with `/`."""
    unit = rng.choice(UNITS)
    q = rng.randint(2, 12)
    s = _Steps()
    if rng.random() < 0.6:
        template = rng.choice(("How many {small} are in {q} {big}?", "Convert {q} {big} to {small}."))
        prompt = template.format(small=unit.small, big=unit.big, q=q)
        value = s.compute(q, "×", unit.factor)
        short = unit.small_short
    else:
        template = rng.choice(("How many {big} are in {x} {small}?", "Convert {x} {small} to {big}."))
        prompt = template.format(small=unit.small, big=unit.big, x=q * unit.factor)
        value = s.compute(q * unit.factor, "/", unit.factor)
        short = unit.big_short
    return Task(prompt, s.steps, num(value), "unit_conversion", difficulty, "unit_conversion.simple", unit=short)


def unit_mixed(rng: random.Random, difficulty: str) -> Task:
    """Mixed units to the small one: `3 km and 450 meters` -> `3 × 1000 = 3000`, `3000 + 450 = 3450`."""
    unit = rng.choice(UNITS)
    name = rng.choice(NAMES)
    r = rng.randint(1, unit.factor - 1)
    s = _Steps()
    if difficulty == "medium":
        q = rng.randint(2, 12)
        if rng.random() < 0.75:
            prompt = unit.mixed.format(name=name, q=q, r=r)
        else:
            prompt = f"How many {unit.small} are in {q} {unit.big} and {r} {unit.small}?"
        big = s.compute(q, "×", unit.factor)
    else:
        q1 = rng.randint(2, 10)
        q2 = rng.randint(2, 12 - q1)
        prompt = unit.mixed_hard.format(name=name, q1=q1, q2=q2, r=r)
        q = s.compute(q1, "+", q2)
        big = s.compute(q, "×", unit.factor)
    value = s.compute(big, "+", r)
    return Task(prompt, s.steps, num(value), "unit_conversion", difficulty, "unit_conversion.mixed",
                unit=unit.small_short)


# ---------------------------------------------------------------- word problems: comparison


def _change(rng: random.Random, s: _Steps, who: str, have: int) -> tuple[str, int]:
    """`and gets 35 more` / `and gives away 20`, computed."""
    if rng.random() < 0.55 or have < 30:
        x = rng.randint(5, 250)
        return f"{who} has {have} {{items}} and gets {x} more.", s.compute(have, "+", x)
    x = rng.randint(5, have - 10)
    return f"{who} has {have} {{items}} and gives away {x}.", s.compute(have, "-", x)


def comparison_who(rng: random.Random, difficulty: str) -> Task:
    """Who has more/fewer: restate, compare `124 > 87`, conclude the name."""
    a_name, b_name = _two_names(rng)
    items = rng.choice(COUNT_ITEMS)
    more = rng.random() < 0.6
    question = f"Who has {'more' if more else 'fewer'} {items}" + ("?" if difficulty == "easy" else " now?")
    while True:
        a, b = rng.randint(10, 999), rng.randint(10, 999)
        s = _Steps()
        if difficulty == "easy":
            first, second = f"{a_name} has {a} {items}.", f"{b_name} has {b} {items}."
            s.add("restate", f"{a_name} has {a}")
            s.add("restate", f"{b_name} has {b}")
            va, vb = a, b
        elif difficulty == "medium":
            first, va = _change(rng, s, a_name, a)
            first = first.format(items=items)
            second, vb = f"{b_name} has {b} {items}.", b
            s.add("restate", f"{b_name} has {b}")
        else:
            first, va = _change(rng, s, a_name, a)
            second, vb = _change(rng, s, b_name, b)
            first, second = first.format(items=items), second.format(items=items)
        if va != vb:
            break
    a_more = s.compare(va, vb)
    answer = a_name if a_more == more else b_name
    s.add("conclude", answer)
    prompt = f"{first} {second} {question}"
    return Task(prompt, s.steps, answer, "comparison", difficulty, "comparison.who", "text")


def comparison_difference(rng: random.Random, difficulty: str) -> Task:
    """How many more: `124 - 87 = 37` (bigger minus smaller), after any changes."""
    a_name, b_name = _two_names(rng)
    items = rng.choice(COUNT_ITEMS)
    while True:
        a, b = rng.randint(10, 999), rng.randint(10, 999)
        s = _Steps()
        if difficulty == "easy":
            first, second, va, vb = f"{a_name} has {a} {items}.", f"{b_name} has {b} {items}.", a, b
        elif difficulty == "medium":
            first, va = f"{a_name} has {a} {items}.", a
            second, vb = _change(rng, s, b_name, b)
            second = second.format(items=items)
        else:
            first, va = _change(rng, s, a_name, a)
            second, vb = _change(rng, s, b_name, b)
            first, second = first.format(items=items), second.format(items=items)
        if va != vb:
            break
    now = "" if difficulty == "easy" else " now"
    big, small = (a_name, b_name) if va > vb else (b_name, a_name)
    if rng.random() < 0.6:
        question = f"How many more {items} does {big} have than {small}{now}?"
    else:
        question = f"How many fewer {items} does {small} have than {big}{now}?"
    value = s.compute(max(va, vb), "-", min(va, vb))
    prompt = f"{first} {second} {question}"
    return Task(prompt, s.steps, num(value), "comparison", difficulty, "comparison.difference")


def comparison_yes_no(rng: random.Random, difficulty: str) -> Task:
    """`Is 234 + 167 greater than 400?` -> `234 + 167 = 401`, `401 > 400`, `yes`."""
    s = _Steps()
    form = rng.randrange(4) if difficulty == "medium" else 4 + rng.randrange(2)
    if form == 0:
        a, b = rng.randint(10, 999), rng.randint(10, 999)
        expr, value, greater = f"{a} + {b}", s.compute(a, "+", b), True
    elif form == 1:
        a = rng.randint(100, 999)
        b = rng.randint(10, a - 1)
        expr, value, greater = f"{a} - {b}", s.compute(a, "-", b), False
    elif form == 2:
        a, k = rng.randint(10, 999), rng.randint(2, 12)
        expr, value, greater = f"{a} × {k}", s.compute(a, "×", k), True
    elif form == 3:
        a, b = rng.randint(10, 999), rng.randint(5, 250)
        expr, value, greater = None, s.compute(a, "+", b), True
    elif form == 4:
        a, b = rng.randint(10, 999), rng.randint(10, 999)
        c = rng.randint(10, a + b - 1)
        x = s.compute(a, "+", b)
        expr, value, greater = f"{a} + {b} - {c}", s.compute(x, "-", c), rng.random() < 0.5
    else:
        a, b, c = rng.randint(10, 999), rng.randint(10, 999), rng.randint(10, 999)
        name, items = rng.choice(NAMES), rng.choice(COUNT_ITEMS)
        x = s.compute(a, "+", b)
        value = s.compute(x, "+", c)
        expr, greater = None, True
    threshold = value + rng.choice((-1, 1)) * rng.randint(1, 60)
    if threshold <= 0:
        threshold = value + rng.randint(1, 60)
    if form == 3:
        name, items = rng.choice(NAMES), rng.choice(COUNT_ITEMS)
        prompt = f"{name} has {a} {items} and buys {b} more. Does {name} now have more than {threshold} {items}?"
    elif form == 5:
        prompt = (f"{name} has {a} {items}, buys {b} more, then finds {c} more. "
                  f"Does {name} now have more than {threshold} {items}?")
    else:
        prompt = f"Is {expr} {'greater' if greater else 'less'} than {threshold}?"
    is_greater = s.compare(value, threshold)
    answer = "yes" if is_greater == greater else "no"
    s.add("conclude", answer)
    return Task(prompt, s.steps, answer, "comparison", difficulty, "comparison.yes_no", "bool")


# ---------------------------------------------------------------- sequences

_ORDINALS = {5: "5th", 6: "6th", 7: "7th"}


def sequence_arithmetic(rng: random.Random, difficulty: str) -> Task:
    """`What comes next: 3, 7, 11, 15?` -> `7 - 3 = 4`, `15 + 4 = 19` (decreasing: `40 - 33 = 7`, `19 - 7 = 12`)."""
    s = _Steps()
    if difficulty == "easy":
        up = rng.random() < 0.6
        d = rng.randint(2, 12)
        x = rng.randint(1, 99) if up else rng.randint(d + 1, 120)
        prompt = f"What number comes after {x} when counting {'up' if up else 'down'} by {d}?"
        value = s.compute(x, "+" if up else "-", d)
        return Task(prompt, s.steps, num(value), "sequence", difficulty, "sequence.arithmetic")
    n_terms = rng.choice((4, 5))
    up = rng.random() < 0.6
    extra = 2 if difficulty == "hard" and rng.random() < 0.5 else 1
    if difficulty == "medium":
        d, start = rng.randint(2, 30), rng.randint(1, 99)
    else:
        d, start = rng.randint(3, 99), rng.randint(100, 900)
    if not up:
        start += d * (n_terms + extra)
    terms = [start + (d if up else -d) * i for i in range(n_terms)]
    seq = ", ".join(map(str, terms))
    if extra == 1:
        prompt = rng.choice(("What comes next: {s}?", "What is the next number in {s}?",
                             "Find the next number: {s}.")).format(s=seq)
    else:
        prompt = f"In the sequence {seq}, what is the {_ORDINALS[n_terms + 2]} number?"
    step = s.compute(max(terms[0], terms[1]), "-", min(terms[0], terms[1]))
    value = terms[-1]
    for _ in range(extra):
        value = s.compute(value, "+" if up else "-", step)
    return Task(prompt, s.steps, num(value), "sequence", difficulty, "sequence.arithmetic")


# ---------------------------------------------------------------- strings


def _spell(word: str) -> str:
    return " ".join(word)


def string_reverse(rng: random.Random, difficulty: str) -> Task:
    """`Reverse the word planet.` -> spell `p l a n e t`, spell `t e n a l p`, conclude `tenalp`."""
    word = rng.choice(_REVERSE_POOLS[difficulty])
    prompt = rng.choice(("Reverse the word {w}.", "Write the word {w} backwards.",
                         "What is {w} spelled backwards?")).format(w=word)
    steps = [("spell", _spell(word)), ("spell", _spell(word[::-1])), ("conclude", word[::-1])]
    return Task(prompt, steps, word[::-1], "string", difficulty, "string.reverse", "text")


def string_count_letter(rng: random.Random, difficulty: str) -> Task:
    """`How many times does the letter a appear in banana?` -> `b a n a n a`, `a a a`, `3`."""
    word, letter, count = rng.choice(_COUNT_POOLS[difficulty])
    prompt = rng.choice(("How many times does the letter {c} appear in {w}?",
                         "Count the letter {c} in the word {w}.",
                         "How many {c}'s are in the word {w}?")).format(c=letter, w=word)
    steps = [("spell", _spell(word)), ("spell", " ".join([letter] * count)), ("conclude", str(count))]
    return Task(prompt, steps, str(count), "string", difficulty, "string.count_letter")


def string_first_letters(rng: random.Random, difficulty: str) -> Task:
    """`Join the first letters of these words: red, apple, tree.` -> spell `r a t`, conclude `rat`."""
    n = {"easy": 2, "medium": 3, "hard": 4}[difficulty]
    words = rng.sample(WORDS, n)
    joined = "".join(w[0] for w in words)
    prompt = rng.choice(("Join the first letters of these words: {ws}.",
                         "Write the first letter of each word together: {ws}.")).format(ws=", ".join(words))
    steps = [("spell", _spell(joined)), ("conclude", joined)]
    return Task(prompt, steps, joined, "string", difficulty, "string.first_letters", "text")


# ---------------------------------------------------------------- registry


@dataclass(frozen=True)
class Generator:
    name: str
    category: str
    fn: Callable[[random.Random, str], Task]
    difficulties: tuple[str, ...] = DIFFICULTIES


GENERATORS: dict[str, Generator] = {
    g.name: g
    for g in (
        Generator("arithmetic.chain", "arithmetic", arithmetic_chain),
        Generator("arithmetic.negative", "arithmetic", arithmetic_negative),
        Generator("arithmetic.decimal", "arithmetic", arithmetic_decimal),
        Generator("arithmetic.fraction", "arithmetic", arithmetic_fraction),
        Generator("arithmetic.thousands", "arithmetic", arithmetic_thousands),
        Generator("rate.total", "rate", rate_total),
        Generator("rate.unit_rate", "rate", rate_unit_rate),
        Generator("percentage.of", "percentage", percentage_of, ("easy", "medium")),
        Generator("percentage.change", "percentage", percentage_change, ("medium", "hard")),
        Generator("cost_per_item.total", "cost_per_item", cost_total),
        Generator("cost_per_item.unit_price", "cost_per_item", cost_unit_price),
        Generator("cost_per_item.change", "cost_per_item", cost_change, ("medium", "hard")),
        Generator("unit_conversion.simple", "unit_conversion", unit_simple, ("easy",)),
        Generator("unit_conversion.mixed", "unit_conversion", unit_mixed, ("medium", "hard")),
        Generator("comparison.who", "comparison", comparison_who),
        Generator("comparison.difference", "comparison", comparison_difference),
        Generator("comparison.yes_no", "comparison", comparison_yes_no, ("medium", "hard")),
        Generator("sequence.arithmetic", "sequence", sequence_arithmetic),
        Generator("string.reverse", "string", string_reverse),
        Generator("string.count_letter", "string", string_count_letter),
        Generator("string.first_letters", "string", string_first_letters),
    )
}

# Relative weight of each generator inside its family (params `seed.mix` weighs the families).
FAMILY_GENERATORS: dict[str, tuple[tuple[str, float], ...]] = {
    "arithmetic": (
        ("arithmetic.chain", 10),
        ("arithmetic.negative", 2),
        ("arithmetic.decimal", 2),
        ("arithmetic.fraction", 2),
        ("arithmetic.thousands", 2),
    ),
    "word_problem": (  # one fifth per category
        ("rate.total", 6),
        ("rate.unit_rate", 4),
        ("percentage.of", 5),
        ("percentage.change", 5),
        ("cost_per_item.total", 4),
        ("cost_per_item.unit_price", 3),
        ("cost_per_item.change", 3),
        ("unit_conversion.simple", 4),
        ("unit_conversion.mixed", 6),
        ("comparison.who", 3),
        ("comparison.difference", 4),
        ("comparison.yes_no", 3),
    ),
    "sequence": (("sequence.arithmetic", 1),),
    "string": (
        ("string.reverse", 2),
        ("string.count_letter", 1),
        ("string.first_letters", 1),
    ),
}
DIFFICULTY_WEIGHTS = {"easy": 1, "medium": 2, "hard": 2}


def generate(name: str, difficulty: str, rng: random.Random) -> Task:
    """One task from generator `name` at `difficulty`, drawing only from `rng`."""
    gen = GENERATORS[name]
    if difficulty not in gen.difficulties:
        raise ValueError(f"{name} has no {difficulty} tasks (it has {', '.join(gen.difficulties)})")
    return gen.fn(rng, difficulty)


def sample_task(family: str, rng: random.Random) -> Task:
    """A task of `family`: the generator and difficulty are drawn from `rng` too.

    So `sample_task(family, random.Random(meta.seed))` regenerates a training trace.
    """
    names, weights = zip(*FAMILY_GENERATORS[family])
    gen = GENERATORS[rng.choices(names, weights)[0]]
    difficulty = rng.choices(gen.difficulties, [DIFFICULTY_WEIGHTS[d] for d in gen.difficulties])[0]
    return gen.fn(rng, difficulty)
