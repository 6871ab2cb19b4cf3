"""Worked arithmetic: the column working of every step is right and ends in the step's result."""

import random
import re
from decimal import Decimal

import pytest

from reasoning.tasks import num
from reasoning.worked import show_comparison, show_work


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
        ("-255 - 736 = -991", "-255 - 736: -(255 + 736): 5+6=11, 5+3+1=9, 2+7=9, so -991"),
        ("-255 + 736 = 481", "-255 + 736: 736 - 255: 6-5=1, 13-5=8, 7-2-1=4, so 481"),
        ("-736 + 255 = -481", "-736 + 255: -(736 - 255): 6-5=1, 13-5=8, 7-2-1=4, so -481"),
        ("6.18 + 53.2 = 59.38", "6.18 + 53.20: 8+0=8, 1+2=3, 6+3=9, 0+5=5, so 59.38"),
        ("0.5 - 0.43 = 0.07", "0.50 - 0.43: 10-3=7, 5-4-1=0, so 0.07"),
        ("3.6 - 97.3 = -93.7", "3.6 - 97.3: -(97.3 - 3.6): 13-6=7, 7-3-1=3, 9-0=9, so -93.7"),
        ("27.1 × 6 = 162.6", "27.1 × 6: 1×6=6, 7×6=42, 2×6+4=12+4=16, so 162.6"),
    ],
)
def test_worked_examples(step, worked):
    assert show_work(step) == worked


@pytest.mark.parametrize(
    "step", ["15 × 25 = 375", "430 / 10 = 43", "3 × 1000 = 3000", "1.5 / 3 = 0.5", "2.5 × 1.5 = 3.75", "5 - -3 = 8"]
)
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


def test_signed_and_decimal_steps_work_out_to_their_result():
    rng = random.Random(2)
    for _ in range(3000):
        places = rng.choice([0, 1, 2])
        a, b = (Decimal(rng.randint(-99_999, 99_999)).scaleb(-places) for _ in "ab")
        b, m = abs(b), rng.choice([2, 3, 4, 5, 6, 7, 8, 9, 11, 12])  # 10 is a shift, not worked
        for left, op, right, c in ((a, "+", b, a + b), (a, "-", b, a - b), (abs(a), "×", m, abs(a) * m)):
            step = f"{num(left)} {op} {num(right)} = {num(c)}"
            worked = show_work(step)  # raises if the working disagrees
            assert worked.endswith(f", so {num(c)}") and worked != step, step
            assert_facts_true(worked)


def test_a_wrong_step_is_refused():
    with pytest.raises(ValueError, match="gives 623"):
        show_work("345 + 278 = 624")


@pytest.mark.parametrize(
    "step, worked",
    [
        ("772 > 756", "772 vs 756: 7=7, 7>5, so 772 > 756"),
        ("1057 < 1080", "1057 vs 1080: 1=1, 0=0, 5<8, so 1057 < 1080"),
        ("613 > 566", "613 vs 566: 6>5, so 613 > 566"),
        ("66 < 761", "66 < 761"),  # the longer number is the larger: nothing to work
        ("5 > 3", "5 > 3"),
        ("2.5 > 1.75", "2.5 > 1.75"),
    ],
)
def test_comparisons_are_decided_at_the_first_digit_that_differs(step, worked):
    assert show_comparison(step) == worked


def test_a_wrong_comparison_is_refused():
    with pytest.raises(ValueError, match="7>5"):
        show_comparison("772 < 756")
