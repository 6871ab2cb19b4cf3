"""Column-by-column working for one arithmetic step, as a person writes it on paper.

`345 + 278 = 623` becomes `345 + 278: 5+8=13, 4+7+1=12, 3+2+1=6, so 623`.
Every token the model writes is then a one-digit fact, a carry, or a copy of a
digit it can see, which a small model learns in minutes; a multi-digit sum
written in one go needs the carries of digits not yet written, which it does
not. A multiply column writes its product before adding the carry, and a
division column its product before the remainder: one fact per token, not two.
+ and − are worked for integers and decimals of any sign (as whole numbers of
their smallest place, a negative moved outside: `-(255 + 736)`), × and exact
÷ by a one- or two-digit multiplier (or such a multiplier times a power of
ten) for non-negative operands; anything else stays `a op b = c`.
"""

from __future__ import annotations

import re
from decimal import Decimal

_NUMBER = r"-?\d+(?:\.\d+)?"
_STEP = re.compile(rf"^({_NUMBER}) ([-+×/]) ({_NUMBER}) = ({_NUMBER})$")


def _digits(n: int) -> list[int]:
    """Least significant first."""
    return [int(d) for d in reversed(str(n))]


def _assemble(columns: list[int], strip_zeros: bool = False) -> str:
    """The result from column values: the last one whole, then the others' last digits, leftwards."""
    text = str(columns[-1]) + "".join(str(c % 10) for c in reversed(columns[:-1]))
    return text.lstrip("0") or "0" if strip_zeros else text


def add(a: int, b: int) -> tuple[str, str]:
    da, db = _digits(a), _digits(b)
    parts, columns, carry = [], [], 0
    for i in range(max(len(da), len(db))):
        x, y = (da[i] if i < len(da) else 0), (db[i] if i < len(db) else 0)
        s = x + y + carry
        parts.append(f"{x}+{y}" + (f"+{carry}" if carry else "") + f"={s}")
        columns.append(s)
        carry = s // 10
    return ", ".join(parts), _assemble(columns)


def subtract(a: int, b: int) -> tuple[str, str]:
    """a >= b: a column that borrows is written with its ten, `14-7-1=6`."""
    da, db = _digits(a), _digits(b)
    parts, columns, borrow = [], [], 0
    for i in range(len(da)):
        x, y = da[i], (db[i] if i < len(db) else 0)
        need = x < y + borrow
        top = x + 10 if need else x
        r = top - y - borrow
        parts.append(f"{top}-{y}" + (f"-{borrow}" if borrow else "") + f"={r}")
        columns.append(r)
        borrow = int(need)
    return ", ".join(parts), _assemble([c % 10 for c in columns], strip_zeros=True)


def _small_factor(m: int) -> tuple[int, int] | None:
    """m as (f, zeros) with f <= 12 and m = f * 10**zeros, or None."""
    zeros = 0
    while m >= 10 and m % 10 == 0:
        m, zeros = m // 10, zeros + 1
    return (m, zeros) if 1 <= m <= 12 else None


def multiply(n: int, m: int) -> tuple[str, str] | None:
    """n × m with m (or n) a small factor times a power of ten: `2×9=18, 8×9+1=73, …`."""
    factor = _small_factor(m)
    if factor is None:
        if _small_factor(n) is None:
            return None
        n, m = m, n
        factor = _small_factor(m)
    f, zeros = factor
    if f == 1:
        return None  # a power of ten: appending zeros needs no working
    parts, columns, carry = [], [], 0
    for d in _digits(n):
        p = d * f + carry
        # The product, then the carry added to it: two facts a small model learns apart.
        parts.append(f"{d}×{f}+{carry}={d * f}+{carry}={p}" if carry else f"{d}×{f}={p}")
        columns.append(p)
        carry = p // 10
    return ", ".join(parts), _assemble(columns, strip_zeros=True) + "0" * zeros


def divide(n: int, m: int) -> tuple[str, str] | None:
    """Exact n / m, long division left to right: `49/6=8 r1, 12/6=2 r0`."""
    factor = _small_factor(m)
    if factor is None or n % m or factor[0] == 1:
        return None  # not exact, or a power of ten (dropping zeros needs no working)
    f, zeros = factor
    text = str(n)[: len(str(n)) - zeros] if zeros else str(n)  # divide by the power of ten first
    parts, quotient, cur, i = [], "", 0, 0
    while i < len(text):
        cur = cur * 10 + int(text[i])
        i += 1
        if cur < f and i < len(text) and not quotient:
            continue  # take another digit before the first division
        q, cur = divmod(cur, f)
        # The quotient digit's product before the remainder: the remainder is then a difference.
        parts.append(f"{cur + q * f}/{f}={q} ({q * f}) r{cur}")
        quotient += str(q)
    return ", ".join(parts), quotient.lstrip("0") or "0"


def _whole(number: str) -> int:
    """A decimal as a whole number of its smallest place: `53.20` -> 5320."""
    return int(number.replace(".", ""))


def _rewritten(rewrite: str, work: tuple[str, str], negate: bool = False) -> tuple[str, str]:
    """Working of an equivalent step, named first: `-(120 - 45): 10-5=5, …`."""
    cols, value = work
    return (f"-({rewrite}): {cols}", f"-{value}") if negate else (f"{rewrite}: {cols}", value)


def _add_or_subtract(a: str, op: str, b: str) -> tuple[str, str] | None:
    """a ± b worked on magnitudes: a negative first operand or result is moved outside, `-(…)`."""
    x, y = _whole(a), _whole(b)
    if y < 0:
        return None
    if x < 0 and op == "-":  # -a - b = -(a + b)
        return _rewritten(f"{a[1:]} + {b}", add(-x, y), negate=True)
    if x < 0:  # -a + b = b - a
        if y < -x:
            return _rewritten(f"{a[1:]} - {b}", subtract(-x, y), negate=True)
        return _rewritten(f"{b} - {a[1:]}", subtract(y, -x))
    if op == "+":
        return add(x, y)
    return _rewritten(f"{b} - {a}", subtract(y, x), negate=True) if x < y else subtract(x, y)


def show_work(content: str) -> str:
    """A compute step `a op b = c` with its working; other steps unchanged.

    Decimal operands are padded to the same places, `6.18 + 53.20: 8+0=8, …, so 59.38`.
    """
    match = _STEP.match(content)
    if not match:
        return content
    a, op, b, c = match[1], match[2], match[3], match[4]
    places = max(len(n.partition(".")[2]) for n in (a, b))
    if op in "+-":
        a, b = (f"{Decimal(n):.{places}f}" for n in (a, b))
        work = _add_or_subtract(a, op, b)
    elif "-" in a + b:  # × and ÷ are worked for non-negative operands only
        work = None
    elif op == "×":
        work = None if "." in b else multiply(_whole(a), int(b))
    else:
        work = None if places else divide(int(a), int(b))
    if work is None:
        return content
    cols, value = work
    result = Decimal(value).scaleb(-places)  # the columns' digits, read with the operands' decimals
    if result != Decimal(c):
        raise ValueError(f"worked {content!r} gives {result}")
    return f"{a} {op} {b}: {cols}, so {c}"


_COMPARE = re.compile(r"^(\d+) ([<>]) (\d+)$")


def show_comparison(content: str) -> str:
    """`772 > 756` decided digit by digit from the left: `772 vs 756: 7=7, 7>5, so 772 > 756`.

    Numbers of different lengths (the longer is larger) and single digits stay as they are.
    """
    match = _COMPARE.match(content)
    if not match or len(match[1]) != len(match[3]) or len(match[1]) < 2:
        return content
    a, sign, b = match[1], match[2], match[3]
    parts = []
    for x, y in zip(a, b):
        parts.append(f"{x}{'=' if x == y else '>' if x > y else '<'}{y}")
        if x != y:
            break
    if parts[-1][1] != sign:
        raise ValueError(f"compared {content!r} gives {parts[-1]}")
    return f"{a} vs {b}: {', '.join(parts)}, so {content}"
