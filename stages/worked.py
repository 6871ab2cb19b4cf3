"""Column-by-column working for one arithmetic step, as a person writes it on paper.

`345 + 278 = 623` becomes `345 + 278: 5+8=13, 4+7+1=12, 3+2+1=6, so 623`.
Every token the model writes is then a one-digit fact, a carry, or a copy of a
digit it can see, which a small model learns in minutes; a multi-digit sum
written in one go needs the carries of digits not yet written, which it does
not. Integer +, −, × and exact ÷ by a one- or two-digit multiplier (or such a
multiplier times a power of ten) are worked; anything else stays `a op b = c`.
"""

from __future__ import annotations

import re

_STEP = re.compile(r"^(-?\d+) ([-+×/]) (-?\d+) = (-?\d+)$")


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


def show_work(content: str) -> str:
    """A compute step `a op b = c` with its working; other steps unchanged."""
    match = _STEP.match(content)
    if not match:
        return content
    a, op, b, c = int(match[1]), match[2], int(match[3]), match[4]
    if a < 0 or b < 0:
        return content
    if op == "+":
        work = add(a, b)
    elif op == "-":
        if a < b:
            cols, value = subtract(b, a)
            work = (f"-({b} - {a}): {cols}", f"-{value}")
        else:
            work = subtract(a, b)
    elif op == "×":
        work = multiply(a, b)
    else:
        work = divide(a, b)
    if work is None:
        return content
    cols, value = work
    if value != c:
        raise ValueError(f"worked {content!r} gives {value}")
    return f"{a} {op} {b}: {cols}, so {c}"
