"""Number sequences: the next term, or one further on."""

from __future__ import annotations

import random

from reasoning.tasks.core import Draft, Steps, generator, num

_ORDINALS = {5: "5th", 6: "6th", 7: "7th"}


@generator("sequence.arithmetic", weight=1)
def sequence_arithmetic(rng: random.Random, difficulty: str) -> Draft:
    """`What comes next: 3, 7, 11, 15?` -> `7 - 3 = 4`, `15 + 4 = 19` (decreasing: `40 - 33 = 7`, `19 - 7 = 12`)."""
    s = Steps()
    if difficulty == "easy":
        up = rng.random() < 0.6
        d = rng.randint(2, 12)
        x = rng.randint(1, 99) if up else rng.randint(d + 1, 120)
        prompt = f"What number comes after {x} when counting {'up' if up else 'down'} by {d}?"
        value = s.compute(x, "+" if up else "-", d)
        return Draft(prompt, s.steps, num(value))
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
        prompt = rng.choice(
            ("What comes next: {s}?", "What is the next number in {s}?", "Find the next number: {s}.")
        ).format(s=seq)
    else:
        prompt = f"In the sequence {seq}, what is the {_ORDINALS[n_terms + 2]} number?"
    step = s.compute(max(terms[0], terms[1]), "-", min(terms[0], terms[1]))
    value = terms[-1]
    for _ in range(extra):
        value = s.compute(value, "+" if up else "-", step)
    return Draft(prompt, s.steps, num(value))
