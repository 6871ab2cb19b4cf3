"""What every generator shares: numbers as traces write them, the learnability rules of a step,
the task record, and the registry the `@generator` decorator fills."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass, field, fields
from decimal import Decimal

Number = int | Decimal

# Each category's task family (params `seed.mix` weighs the families): the one place either is spelled.
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
CATEGORIES = tuple(FAMILY_OF_CATEGORY)
FAMILIES = tuple(dict.fromkeys(FAMILY_OF_CATEGORY.values()))
DIFFICULTIES = ("easy", "medium", "hard")
DIFFICULTY_WEIGHTS = {"easy": 1, "medium": 2, "hard": 2}
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


@dataclass(frozen=True)
class Draft:
    """A problem as its generator writes it; the registry labels it into a `Task`."""

    prompt: str
    steps: list[tuple[str, str]]
    answer: str
    answer_type: str = "number"
    unit: str | None = None  # unit of a numeric answer ("m", "minutes"), for eval answers like "3000 m"


@dataclass(frozen=True)
class Task(Draft):
    """One generated problem: prompt, steps, answer, and which generator wrote it at what difficulty."""

    _: KW_ONLY
    generator: str
    category: str
    difficulty: str

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
class Steps:
    """The steps of a draft as they are written: each `compute` checked against the learnability rules."""

    steps: list[tuple[str, str]] = field(default_factory=list)

    def compute(self, a: Number, op: str, b: Number) -> Number:
        c = apply_op(a, op, b)
        self.steps.append(("compute", f"{num(a)} {op} {num(b)} = {num(c)}"))
        return c

    def sum_of_products(self, *pairs: tuple[Number, Number]) -> Number:
        """`a × b`, `c × d`, … each as a step, then their sum step by step (two prices, two rates)."""
        products = [self.compute(a, "×", b) for a, b in pairs]
        total = products[0]
        for product in products[1:]:
            total = self.compute(total, "+", product)
        return total

    def add(self, kind: str, content: str) -> None:
        self.steps.append((kind, content))

    def compare(self, a: Number, b: Number) -> bool:
        """Append `a > b` or `a < b` (never equal); True when a > b."""
        if a == b:
            raise ValueError(f"compare needs distinct values: {a}")
        self.steps.append(("compare", f"{num(a)} {'>' if a > b else '<'} {num(b)}"))
        return a > b


# ---------------------------------------------------------------- registry


@dataclass(frozen=True)
class Generator:
    """A registered generator: `gen(rng, difficulty)` is a labelled Task drawn only from `rng`."""

    name: str  # `<category>.<kind>`
    weight: float  # relative to the other generators of its family
    difficulties: tuple[str, ...]
    write: Callable[[random.Random, str], Draft]

    @property
    def category(self) -> str:
        return self.name.partition(".")[0]

    @property
    def family(self) -> str:
        return FAMILY_OF_CATEGORY[self.category]

    def __call__(self, rng: random.Random, difficulty: str) -> Task:
        if difficulty not in self.difficulties:
            raise ValueError(f"{self.name} has no {difficulty} tasks (it has {', '.join(self.difficulties)})")
        draft = self.write(rng, difficulty)
        labels = dict(generator=self.name, category=self.category, difficulty=difficulty)
        return Task(**{f.name: getattr(draft, f.name) for f in fields(Draft)}, **labels)


# Every generator by name, in the order they were registered: a family's draws depend on that order.
GENERATORS: dict[str, Generator] = {}


def generator(
    name: str, *, weight: float, difficulties: tuple[str, ...] = DIFFICULTIES
) -> Callable[[Callable[[random.Random, str], Draft]], Generator]:
    """Register the decorated `(rng, difficulty) -> Draft` function as generator `name`."""
    category, dot, kind = name.partition(".")
    if not (category in FAMILY_OF_CATEGORY and dot and kind) or name in GENERATORS:
        raise ValueError(f"generator {name!r}: the name must be new and be <category>.<kind>")

    def register(write: Callable[[random.Random, str], Draft]) -> Generator:
        GENERATORS[name] = Generator(name, weight, difficulties, write)
        return GENERATORS[name]

    return register


def generate(name: str, difficulty: str, rng: random.Random) -> Task:
    """One task from generator `name` at `difficulty`, drawing only from `rng`."""
    return GENERATORS[name](rng, difficulty)


def sample_task(family: str, rng: random.Random) -> Task:
    """A task of `family`: the generator and difficulty are drawn from `rng` too.

    So `sample_task(family, random.Random(meta.seed))` regenerates a training trace.
    """
    candidates = [gen for gen in GENERATORS.values() if gen.family == family]
    gen = rng.choices(candidates, [gen.weight for gen in candidates])[0]
    difficulty = rng.choices(gen.difficulties, [DIFFICULTY_WEIGHTS[d] for d in gen.difficulties])[0]
    return gen(rng, difficulty)
