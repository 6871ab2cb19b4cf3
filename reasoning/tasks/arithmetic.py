"""Arithmetic: chains of + - × /, negative results, decimals, fractions, thousands separators."""

from __future__ import annotations

import random
from decimal import Decimal
from math import gcd

from reasoning.tasks.core import Draft, Steps, generator, num, with_commas

_WHAT_IS = ("What is {e}?", "Calculate {e}.", "Compute {e}.", "Work out {e}.")


def _what_is(rng: random.Random, expr: str, s: Steps, answer: str, answer_type: str = "number") -> Draft:
    """`What is <expr>?` in one of its phrasings (the generator's last draw), answered by `s`'s steps."""
    return Draft(rng.choice(_WHAT_IS).format(e=expr), s.steps, answer, answer_type)


@generator("arithmetic.chain", weight=10)
def arithmetic_chain(rng: random.Random, difficulty: str) -> Draft:
    """Left-to-right chains of + - × (and an exact / first): `What is 124 + 35 - 48?`."""
    n_ops = {"easy": 1, "medium": 2, "hard": rng.choice((3, 4))}[difficulty]
    lo = 100 if difficulty == "hard" else 10
    s = Steps()
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
    return _what_is(rng, expr, s, num(value))


@generator("arithmetic.negative", weight=2)
def arithmetic_negative(rng: random.Random, difficulty: str) -> Draft:
    """Chains of + and - whose result is negative: `What is 48 - 125 + 30?`."""
    n_ops = {"easy": 1, "medium": 2, "hard": 3}[difficulty]
    while True:
        s = Steps()
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
            return _what_is(rng, expr, s, num(value))


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


@generator("arithmetic.decimal", weight=2)
def arithmetic_decimal(rng: random.Random, difficulty: str) -> Draft:
    """Decimals: `What is 2.5 + 1.25?`; hard ones may start with `1.5 × 4`."""
    n_ops = {"easy": 1, "medium": 2, "hard": 3}[difficulty]
    s = Steps()
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
    return _what_is(rng, expr, s, num(value))


@generator("arithmetic.fraction", weight=2)
def arithmetic_fraction(rng: random.Random, difficulty: str) -> Draft:
    """Fractions answered in lowest terms: `What is 1/4 + 2/4?` -> `1 + 2 = 3`, `3/4`.

    easy: two terms over one denominator; medium: three terms; hard: one
    denominator a multiple of the other (`1/2 + 1/4`: `4 / 2 = 2`, `1 × 2 = 2`, `2 + 1 = 3`).
    """
    while True:
        s = Steps()
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
            return _what_is(rng, expr, s, answer, "fraction")


@generator("arithmetic.thousands", weight=2)
def arithmetic_thousands(rng: random.Random, difficulty: str) -> Draft:
    """Prompts with thousands separators; steps use plain digits: `1,250 + 750` -> `1250 + 750 = 2000`."""
    n_ops = {"easy": 1, "medium": 2, "hard": 3}[difficulty]
    while True:
        s = Steps()
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
            return _what_is(rng, expr, s, num(value))
