"""Worked arithmetic: the column working of every step is right and ends in the step's result."""

import random
import re

import pytest

from stages.worked import show_work


@pytest.mark.parametrize(
    "step, worked",
    [
        ("345 + 278 = 623", "345 + 278: 5+8=13, 4+7+1=12, 3+2+1=6, so 623"),
        ("999 + 999 = 1998", "999 + 999: 9+9=18, 9+9+1=19, 9+9+1=19, so 1998"),
        ("345 - 278 = 67", "345 - 278: 15-8=7, 14-7-1=6, 3-2-1=0, so 67"),
        ("45 - 120 = -75", "45 - 120: -(120 - 45): 10-5=5, 12-4-1=7, 1-0-1=0, so -75"),
        ("882 × 9 = 7938", "882 × 9: 2×9=18, 8×9+1=72+1=73, 8×9+7=72+7=79, so 7938"),
        ("9 × 60 = 540", "9 × 60: 9×6=54, so 540"),
        ("492 / 6 = 82", "492 / 6: 49/6=8 (48) r1, 12/6=2 (12) r0, so 82"),
        ("540 / 60 = 9", "540 / 60: 54/6=9 (54) r0, so 9"),
    ],
)
def test_worked_examples(step, worked):
    assert show_work(step) == worked


@pytest.mark.parametrize("step", ["2.5 + 1.25 = 3.75", "15 × 25 = 375", "430 / 10 = 43", "3 × 1000 = 3000", "-5 + 3 = -2"])
def test_steps_without_useful_working_stay_plain(step):
    assert show_work(step) == step


def test_random_steps_work_out_to_their_result():
    rng = random.Random(0)
    for _ in range(3000):
        a, b = rng.randint(0, 99_999), rng.randint(0, 999)
        m = rng.choice([rng.randint(2, 12), rng.randint(2, 9) * 10 ** rng.randint(1, 3)])
        for op, c in (("+", a + b), ("-", a - b), ("×", a * m), ("/", a * m // m)):
            left = a * m if op == "/" else a
            right = m if op in "×/" else b
            worked = show_work(f"{left} {op} {right} = {c}")  # raises if the working disagrees
            assert worked.endswith(f", so {c}") or worked == f"{left} {op} {right} = {c}"


_DIVISION = re.compile(r"^(\d+)/(\d+)=(\d+) \((\d+)\) r(\d+)$")


def assert_facts_true(worked: str) -> None:
    """Every column fact the model is taught holds: `a×b+c=p+c=r` chains and `n/f=q (p) rR`."""
    columns = worked.split(": ")[-1].rsplit(", so ", 1)[0]
    for fact in columns.split(", "):
        if division := _DIVISION.match(fact):
            n, f, q, p, r = map(int, division.groups())
            assert (q * f, n - p) == (p, r) and 0 <= r < f, fact
        else:
            values = [eval(side.replace("×", "*")) for side in fact.split("=")]
            assert len(set(values)) == 1, fact


def test_every_column_fact_is_true():
    rng = random.Random(1)
    for _ in range(2000):
        a, m = rng.randint(0, 99_999), rng.choice([rng.randint(2, 12), rng.randint(2, 9) * 10 ** rng.randint(1, 3)])
        b = rng.randint(0, a)
        for step in (f"{a} + {b} = {a + b}", f"{a} - {b} = {a - b}", f"{a} × {m} = {a * m}", f"{a * m} / {m} = {a}"):
            worked = show_work(step)
            if worked != step:
                assert_facts_true(worked)


def test_a_wrong_step_is_refused():
    with pytest.raises(ValueError, match="gives 623"):
        show_work("345 + 278 = 624")
