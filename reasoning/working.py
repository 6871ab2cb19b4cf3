"""Show your work, checked: find the arithmetic claims in a reasoning text and check each one exactly.

    check("345 + 278: 5+8=13, 4+7+1=12, 3+2+1=6, so 633").first_false.should
    -> "so 623"

Pure Python, no JAX; values are `Fraction`s, never floats. Three readings, tried
in this order on each line:

- The project's column notation (reasoning/worked.py), a whole line:
  `345 + 278: 5+8=13, 4+7+1=12, 3+2+1=6, so 623`, `-255 - 736: -(255 + 736): …`,
  `8 × 42: 2×8=16, 4×8+1=32+1=33, so 336`, `436 / 4: 4/4=1 (4) r0, 3/4=0 (0) r3, …`,
  `772 vs 756: 7=7, 7>5, so 772 > 756`, and the bare comparison `8 < 42`. Each
  column fact is compared with the fact worked.py writes for the step's own
  operands, so a wrong digit, a carry dropped or carried into the wrong column,
  is a false claim even where the fact's own sum happens to hold. The rewrite
  (`-(255 + 736)`) and the result (`so 623`) are claims of their own. A step
  worked.py does not work out (`15 × 25: …`) has each fact checked on its own.
- GSM8K calculator notes `<<48/2=24>>` (the number the solution then shows,
  `>>24`, is the note's copy, not a second claim).
- Free-text chains `a op b = c = d`, one claim per `=`: each side against the one
  before it. Operators × x * / ÷ + - − with the usual precedence and brackets;
  numbers with decimals, signs, thousands separators, a currency sign, `%`.

Silent, not false, on whatever it cannot read as a claim (precision over
recall): a chain whose first side is a bare number (`1 hour = 60`, `5 = 12`
after "3, 4 and"), a side that is not arithmetic (`x = 3`, `= 8 apples` ends the
chain at 8, but `2 hours × 60 = 120 minutes` has a word inside it), numbers glued
to letters or to `:`/`.`/`,` digits (times `3:45`, versions `1.2.3`, `5th`, `3x`),
`==`/`<=`/`=>` and friends, a no-space `5-10` read as a range, `%` added to or
compared with a number of unstated base (`100 + 20% = 120`, `20% = $30`).

Bounded: any text is read in time linear in its length (or nearly) and never raises. A number
of more than MAX_DIGITS digits, a value whose numerator or denominator passes MAX_BITS bits, or
brackets and signs nested deeper than MAX_DEPTH make the chain holding them unreadable: no claim.

Rounding: a stated number agrees within `rel_tolerance * max(1, |expected|)` (as
`evaluate` scores answers), and a stated number showing d ≥ 1 decimal places
also agrees when it is the exact value rounded to d places (half up or half
even): `10/3 = 3.33` holds, `10/3 = 3.34` does not.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from decimal import ROUND_HALF_EVEN, ROUND_HALF_UP
from fractions import Fraction

from reasoning import worked

DEFAULT_TOLERANCE = 1e-6  # evaluate.rel_tolerance's default; callers pass the configured one
# Far beyond any arithmetic a reasoning shows, and what keeps reading any text cheap: digits of one
# number as written, bits of a value's numerator or denominator (products and quotients grow them),
# and brackets or signs nested (each level is four Python frames of the recursive descent).
MAX_DIGITS = 100
MAX_BITS = 1024
MAX_DEPTH = 50


@dataclasses.dataclass(frozen=True)
class Claim:
    """One arithmetic claim of a reasoning text and its verdict."""

    kind: str  # column | rewrite | result | compare | division | note | chain
    text: str  # the claim as written
    start: int  # its span in the checked text: text == reasoning[start:end]
    end: int
    stated: str  # what the text says (the right side, the fact, the sign)
    expected: str  # what it should say
    ok: bool
    should: str  # the claim as it should have been written (== text when ok)
    value: Fraction | None = None  # the number the claim ends on (result, note, chain), for `ends_with`

    def as_dict(self) -> dict:
        return {
            "text": self.text,
            "start": self.start,
            "end": self.end,
            "kind": self.kind,
            "stated": self.stated,
            "expected": self.expected,
            "ok": self.ok,
            "should": self.should,
        }


@dataclasses.dataclass(frozen=True)
class Working:
    """Every claim found in one reasoning text, in text order."""

    claims: tuple[Claim, ...]

    @property
    def n_claims(self) -> int:
        return len(self.claims)

    @property
    def n_true(self) -> int:
        return sum(c.ok for c in self.claims)

    @property
    def n_false(self) -> int:
        return self.n_claims - self.n_true

    @property
    def checkable(self) -> bool:
        return bool(self.claims)

    @property
    def all_true(self) -> bool:
        return self.checkable and self.n_false == 0

    @property
    def first_false(self) -> Claim | None:
        return next((c for c in self.claims if not c.ok), None)

    @property
    def share(self) -> float:
        """Share of the claims that hold; 0 with nothing checkable."""
        return self.n_true / self.n_claims if self.claims else 0.0

    @property
    def prefix(self) -> float:
        """Share of the claims before the first false one; 0 with nothing checkable."""
        if not self.claims:
            return 0.0
        first = next((i for i, c in enumerate(self.claims) if not c.ok), self.n_claims)
        return first / self.n_claims

    @property
    def ends_with(self) -> Fraction | None:
        """The number the working ends on: the value of its last claim that ends on a number."""
        return next((c.value for c in reversed(self.claims) if c.value is not None), None)


# ---------------------------------------------------------------- numbers


def agrees(stated: Fraction, shown_places: int, exact: Fraction, rel_tolerance: float) -> bool:
    """`stated` (written with `shown_places` decimals) says `exact`: within tolerance, or rounded to its places."""
    if abs(stated - exact) <= Fraction(rel_tolerance) * max(1, abs(exact)):
        return True
    if shown_places < 1:
        return False
    return any(_round(exact, shown_places, mode) == stated for mode in (ROUND_HALF_UP, ROUND_HALF_EVEN))


def _round(x: Fraction, places: int, mode: str) -> Fraction:
    """`x` rounded to `places` decimals, ties away from zero (ROUND_HALF_UP) or to even: exact, in integers
    (a Decimal context of fixed precision cannot quantize a value with more digits than it holds)."""
    scale = 10**places
    q, r = divmod(abs(x.numerator) * scale, x.denominator)
    if 2 * r > x.denominator or (2 * r == x.denominator and (mode == ROUND_HALF_UP or q % 2)):
        q += 1
    return Fraction(-q if x < 0 else q, scale)


def _terminates(x: Fraction) -> bool:
    d = x.denominator
    for p in (2, 5):
        while d % p == 0:
            d //= p
    return d == 1


def _decimal(x: Fraction) -> str:
    """A terminating `x` written out exactly, without trailing zeros (a Decimal context of fixed
    precision would round a value with more digits than it holds)."""
    d, places = x.denominator, 0
    while d > 1:  # 10**places / denominator is whole once places covers its twos and fives
        d //= 2 if d % 2 == 0 else 5
        places += 1
    digits = str(abs(x.numerator) * 10**places // x.denominator).rjust(places + 1, "0")
    whole, frac = digits[: len(digits) - places], digits[len(digits) - places :].rstrip("0")
    return ("-" if x < 0 else "") + whole + ("." + frac if frac else "")


def fmt(x: Fraction, places: int = 0, thousands: bool = False) -> str:
    """`x` written plainly: exact when it terminates, else rounded to max(places, 2) decimals."""
    if _terminates(x):
        whole, _, frac = _decimal(x).partition(".")
        if places > len(frac):  # keep the places the text showed: $2.50, not $2.5
            frac = frac.ljust(places, "0")
        text = whole + ("." + frac if frac else "")
    else:
        text = _decimal(_round(x, max(places, 2), ROUND_HALF_UP))
    if thousands:
        sign = "-" if text.startswith("-") else ""
        whole, dot, frac = text.lstrip("-").partition(".")
        text = sign + f"{int(whole):,}" + dot + frac
    return text


# ---------------------------------------------------------------- free-text expressions

_NUM_TEXT = r"[$€£]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?%?|[$€£]?\.\d+%?"
_TOKEN = re.compile(
    rf"(?P<ws>\s+)|(?P<num>{_NUM_TEXT})|(?P<other>==|<=|>=|!=|=>|->|<-|\*\*|\^)|(?P<eq>=)"
    r"|(?P<op>[-+×*/÷])|(?P<lp>\()|(?P<rp>\))|(?P<word>[^\W\d_]+)|(?P<other2>.)",
    re.DOTALL,
)
_OPS = {"+": "+", "-": "-", "×": "*", "*": "*", "x": "*", "/": "/", "÷": "/", "of": "*"}
# Characters that may touch a chain's first number without making it part of something else (a time, a word).
_OPEN_OK = set("([{\"'“‘*>~`")
_CLOSE_OK = set(")]}\"'”’*.,;:!?<~`")


@dataclasses.dataclass
class _Tok:
    kind: str  # num | op | eq | lp | rp | word | other
    text: str
    start: int
    end: int


def _tokens(line: str, offset: int) -> list[_Tok]:
    toks = []
    for m in _TOKEN.finditer(line):
        kind = m.lastgroup
        if kind == "ws":
            continue
        toks.append(_Tok("other" if kind == "other2" else kind, m[0], offset + m.start(), offset + m.end()))
    # `x` multiplies between two operands (`3 x 4`, `3x4`); `of` after a percent (`20% of 50`).
    for i, t in enumerate(toks):
        if t.kind != "word" or t.text not in ("x", "of") or i == 0 or i + 1 == len(toks):
            continue
        before, after = toks[i - 1], toks[i + 1]
        if t.text == "x" and before.kind in ("num", "rp") and after.kind in ("num", "lp"):
            t.kind = "op"
        elif t.text == "of" and before.kind == "num" and before.text.endswith("%") and after.kind == "num":
            t.kind = "op"
    return toks


@dataclasses.dataclass
class _Num:
    value: Fraction
    percent: bool
    places: int  # decimals shown
    thousands: bool
    text: str


class _Unreadable(Exception):
    pass


def _bounded(value: Fraction) -> Fraction:
    if value.numerator.bit_length() > MAX_BITS or value.denominator.bit_length() > MAX_BITS:
        raise _Unreadable  # a number it cannot hold is no claim
    return value


def _read_num(text: str) -> _Num:
    """The number a literal writes; _Unreadable past the bounds, ValueError when it is not one."""
    body = text.lstrip("$€£")
    percent = body.endswith("%")
    body = body.rstrip("%")
    mantissa, _, exponent = body.lower().partition("e")  # a calculator note may state 1e5
    if len(mantissa) > 2 * MAX_DIGITS or sum(map(str.isdigit, mantissa)) > MAX_DIGITS or len(exponent) > 4:
        raise _Unreadable
    value = _bounded(Fraction(body.replace(",", "")))
    places = len(body.partition(".")[2])
    return _Num(value / 100 if percent else value, percent, places, "," in body, text)


class _Expr:
    """Recursive descent over one side's tokens; records whether a percent is used as a multiplier only."""

    def __init__(self, toks: list[_Tok]):
        self.toks, self.i = toks, 0
        self.depth = 0  # brackets and signs open around the current token
        self.nums: list[_Num] = []
        self.additive_percent = False

    def parse(self) -> Fraction:
        if not self.toks:
            raise _Unreadable
        value, _ = self.sum()
        if self.i != len(self.toks):
            raise _Unreadable
        return value

    def peek(self) -> _Tok | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def sum(self) -> tuple[Fraction, bool]:
        value, pct = self.product()
        terms_pct = [pct]
        while (t := self.peek()) and t.kind == "op" and _OPS[t.text] in "+-":
            self.i += 1
            rhs, rpct = self.product()
            terms_pct.append(rpct)
            value = _bounded(value + rhs if _OPS[t.text] == "+" else value - rhs)
        if len(terms_pct) > 1 and any(terms_pct):
            self.additive_percent = True  # 100 + 20%: a percent of an unstated base
        return value, len(terms_pct) == 1 and pct

    def product(self) -> tuple[Fraction, bool]:
        value, pct = self.unary()
        factors = 1
        while (t := self.peek()) and t.kind == "op" and _OPS[t.text] in "*/":
            self.i += 1
            rhs, _ = self.unary()
            factors += 1
            if _OPS[t.text] == "*":
                value = _bounded(value * rhs)
            elif rhs == 0:
                raise _Unreadable
            else:
                value = _bounded(value / rhs)
        return value, pct and factors == 1  # a percent times something is a plain number

    def unary(self) -> tuple[Fraction, bool]:
        # Every nesting (a sign, a bracket) passes here: the depth bound keeps the recursion finite.
        if self.depth >= MAX_DEPTH:
            raise _Unreadable
        self.depth += 1
        try:
            t = self.peek()
            if t and t.kind == "op" and t.text in "-+":  # GSM8K writes notes such as <<+30+46=76>>
                self.i += 1
                value, pct = self.unary()
                return (-value if t.text == "-" else value), pct
            return self.atom()
        finally:
            self.depth -= 1

    def atom(self) -> tuple[Fraction, bool]:
        t = self.peek()
        if t is None:
            raise _Unreadable
        self.i += 1
        if t.kind == "num":
            num = _read_num(t.text)
            self.nums.append(num)
            return num.value, num.percent
        if t.kind == "lp":
            value, pct = self.sum()
            close = self.peek()
            if close is None or close.kind != "rp":
                raise _Unreadable
            self.i += 1
            return value, pct
        raise _Unreadable


def _is_range(toks: list[_Tok], line: str, offset: int) -> bool:
    """`5-10` written without spaces and going down: a range, not a subtraction."""
    for a, op, b in zip(toks, toks[1:], toks[2:]):
        if (
            (a.kind, op.kind, b.kind) == ("num", "op", "num")
            and op.text == "-"
            and a.end == op.start
            and op.end == b.start
        ):
            try:
                x, y = _read_num(a.text).value, _read_num(b.text).value
            except (_Unreadable, ValueError):
                continue  # the chain itself is unreadable then
            if x < y:
                return True
    return False


def _segments(toks: list[_Tok]) -> Iterator[list[_Tok]]:
    """Maximal runs of arithmetic tokens (numbers, operators, brackets, `=`)."""
    run: list[_Tok] = []
    for t in toks:
        if t.kind in ("num", "op", "eq", "lp", "rp"):
            run.append(t)
        else:
            if run:
                yield run
            run = []
    if run:
        yield run


class _Shifted:
    """`line` read as if `offset` spaces came before it (indices are positions in the whole text),
    without building that string: one per line would make a text of many lines quadratic."""

    def __init__(self, line: str, offset: int):
        self.line, self.offset = line, offset

    def __len__(self) -> int:
        return self.offset + len(self.line)

    def __getitem__(self, key: int | slice) -> str:
        if isinstance(key, slice):
            start, stop = key.start or 0, len(self) if key.stop is None else key.stop
            pad = " " * max(0, min(stop, self.offset) - start)
            return pad + self.line[max(0, start - self.offset) : max(0, stop - self.offset)]
        return " " if key < self.offset else self.line[key - self.offset]


def _chain_claims(line: str, offset: int, text: str | _Shifted, rel_tolerance: float) -> list[Claim]:
    toks = _tokens(line, offset)
    index = {t.start: i for i, t in enumerate(toks)}
    claims = []
    for seg in _segments(toks):
        if not any(t.kind == "eq" for t in seg):
            continue
        claims.extend(_check_chain(seg, toks, index, text, rel_tolerance))
    return claims


def _touching(text: str | _Shifted, pos: int, before: bool) -> str:
    """The character right before (or at) `pos` in `text`, '' when none or whitespace."""
    i = pos - 1 if before else pos
    if i < 0 or i >= len(text) or text[i].isspace():
        return ""
    return text[i]


def _check_chain(
    seg: list[_Tok], toks: list[_Tok], index: dict[int, int], text: str | _Shifted, rel_tolerance: float
) -> list[Claim]:
    # Unmatched brackets at the ends belong to the prose around the chain: "(so 3 + 4 = 7)".
    lps, rps = sum(t.kind == "lp" for t in seg), sum(t.kind == "rp" for t in seg)
    i, j = 0, len(seg)
    while i < j and seg[i].kind == "lp" and lps > rps:
        i, lps = i + 1, lps - 1
    while i < j and seg[j - 1].kind == "rp" and rps > lps:
        j, rps = j - 1, rps - 1
    seg = seg[i:j]
    if not seg:
        return []
    sides: list[list[_Tok]] = [[]]
    for t in seg:
        if t.kind == "eq":
            sides.append([])
        else:
            sides[-1].append(t)
    if not sides[0]:  # `x = 3 + 4 = 7`: what follows the definition can still be a chain
        sides = sides[1:]
    if sides and not sides[-1]:  # `48/2 = <<48/2=24>>24`: the note carries the claim
        sides = sides[:-1]
    if len(sides) < 2 or any(not s for s in sides):
        return []
    first, last = sides[0][0], sides[-1][-1]
    # Glued to something that is not arithmetic: 3:45, 1.2.3, 5th, 3x, v2, a-b.
    before, after = _touching(text, first.start, True), _touching(text, last.end, False)
    if before and (before not in _OPEN_OK):
        return []
    nxt = text[last.end + 1] if last.end + 1 < len(text) else ""
    if after and (after not in _CLOSE_OK or (after in ".,:" and nxt.isdigit())):
        return []
    # A leading minus right after a word or a number continues that: "total - 5 = 3".
    if first.kind == "op":
        idx = index[first.start]
        if first.text != "-" or (idx > 0 and toks[idx - 1].kind in ("word", "num", "rp")):
            return []
    if _is_range(seg, text, 0):
        return []
    parsed = []
    for side in sides:
        expr = _Expr(side)
        try:
            value = expr.parse()
        except (_Unreadable, ZeroDivisionError, ValueError):
            return []
        bare = (
            len(side) == 1
            and side[0].kind == "num"
            or (len(side) == 2 and side[0].text == "-" and side[1].kind == "num")
        )
        parsed.append((side, value, expr, bare))
    if parsed[0][3]:  # a bare number first: "1 hour = 60", "Step 5 = 12": a statement, not a computation
        return []
    all_percent = all(n.percent for _, _, e, _ in parsed for n in e.nums)  # 20% + 30% = 50%: one base throughout
    if not all_percent:
        if any(e.additive_percent for _, _, e, _ in parsed):
            return []
        for _, _, expr, bare in parsed:
            if bare and expr.nums[0].percent:
                return []  # 20% = $30: a percent of a base the text does not state
    claims = []
    for (prev, pvalue, _, _), (side, value, expr, bare) in zip(parsed, parsed[1:]):
        start, end = prev[0].start, side[-1].end
        claim_text = text[start:end]
        if bare:
            num = expr.nums[0]
            ok = agrees(value, num.places, pvalue, rel_tolerance)
            shown = fmt(pvalue * 100 if num.percent else pvalue, num.places, num.thousands)
            lit = side[-1]
            stated = text[side[0].start : side[-1].end]
            # The sign goes in front of the currency sign: -$5, as _rewrite_number writes it.
            expected = _rewrite_number(lit.text, shown)
            should = text[start : side[0].start] + expected
        else:
            ok = abs(value - pvalue) <= Fraction(rel_tolerance) * max(1, abs(pvalue))
            stated = text[side[0].start : end]
            expected = fmt(pvalue)
            should = text[start : side[0].start] + expected
        claims.append(Claim("chain", claim_text, start, end, stated, expected, ok, claim_text if ok else should, value))
    return claims


def _rewrite_number(literal: str, shown: str) -> str:
    """`shown` written the way `literal` was: its currency sign and percent kept."""
    cur = literal[0] if literal[0] in "$€£" else ""
    pct = "%" if literal.endswith("%") else ""
    if shown.startswith("-"):
        return "-" + cur + shown[1:] + pct
    return cur + shown + pct


# ---------------------------------------------------------------- calculator notes and division facts

_NOTE = re.compile(r"<<([^<>=]*)=([^<>=]*)>>(-?[$€£]?[\d,]*\.?\d*%?)")
# `49/6=8 (48) r1`: a long division's step (quotient digit, its product, the remainder).
_DIVISION_FACT = r"(\d+)/(\d+)=(\d+) \((\d+)\) r(\d+)"
_DIVISION = re.compile(rf"(?<![\d.]){_DIVISION_FACT}(?![\d.])")


def _note_claims(line: str, offset: int, rel_tolerance: float) -> tuple[list[Claim], str]:
    """Claims of `<<expr=value>>` notes, and the line with each note and its shown copy blanked out."""
    claims = []
    blanked = list(line)
    for m in _NOTE.finditer(line):
        for i in range(m.start(), m.end()):
            blanked[i] = " "
        lhs, rhs = m[1], m[2].strip()
        toks = _tokens(lhs, 0)
        expr = _Expr(toks)
        try:
            value = expr.parse()
            stated = _read_num(rhs.lstrip("-"))
        except (_Unreadable, ZeroDivisionError, ValueError):
            continue
        if expr.additive_percent:
            continue
        stated_value = -stated.value if rhs.startswith("-") else stated.value
        ok = agrees(stated_value, stated.places, value, rel_tolerance)
        shown = fmt(value * 100 if stated.percent else value, stated.places, stated.thousands)
        expected = _rewrite_number(rhs.lstrip("-"), shown)
        note_end = m.end(2) + len(">>")  # the note without the copy of its value shown after it
        note = line[m.start() : note_end]
        claims.append(
            Claim(
                "note",
                note,
                offset + m.start(),
                offset + note_end,
                rhs,
                expected,
                ok,
                note if ok else f"<<{lhs}={expected}>>",
                stated_value,
            )
        )
    return claims, "".join(blanked)


def _division_fact(fact: str) -> tuple[bool, str] | None:
    """`49/6=8 (48) r1`: quotient digit's product, then the remainder (less than the divisor); None if not one."""
    m = re.fullmatch(_DIVISION_FACT, fact)
    if not m or any(len(g) > MAX_DIGITS for g in m.groups()):
        return None
    n, f, q, p, r = map(int, m.groups())
    if f == 0:
        return None
    qq, rr = divmod(n, f)
    return (q == qq and p == q * f and r == rr), f"{n}/{f}={qq} ({qq * f}) r{rr}"


def _division_claims(line: str, offset: int) -> tuple[list[Claim], str]:
    claims = []
    blanked = list(line)
    for m in _DIVISION.finditer(line):
        for i in range(m.start(), m.end()):
            blanked[i] = " "
        fact = _division_fact(m[0])
        if fact is None:  # by zero, or past the bounds: no claim
            continue
        ok, should = fact
        claims.append(
            Claim("division", m[0], offset + m.start(), offset + m.end(), m[0], should, ok, m[0] if ok else should)
        )
    return claims, "".join(blanked)


# ---------------------------------------------------------------- column notation

_N = r"-?\d+(?:\.\d+)?"
_COLUMN = re.compile(
    rf"^(?P<a>{_N}) (?P<op>[-+×/]) (?P<b>{_N}): "
    rf"(?:(?P<rewrite>-\({_N} [-+] {_N}\)|{_N} - {_N}): )?(?P<facts>.+), so (?P<result>{_N})$"
)
_VERSUS = re.compile(r"^(?P<a>\d+) vs (?P<b>\d+): (?P<facts>.+), so (?P<c>\d+) (?P<sign>[<>]) (?P<d>\d+)$")
_COMPARE = re.compile(rf"^(?P<a>{_N}) (?P<sign>[<>]) (?P<b>{_N})$")


def _sign(x: Fraction | int, y: Fraction | int) -> str:
    return ">" if x > y else "<" if x < y else "="


def _exact(a: Fraction, op: str, b: Fraction) -> Fraction | None:
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "×":
        return a * b
    return a / b if b else None


def _reference(a: str, op: str, b: str, value: Fraction) -> tuple[str | None, list[str]] | None:
    """(rewrite, facts) worked.py writes for `a op b`, or None where it writes no working."""
    if not _terminates(value):
        return None
    try:
        step = f"{a} {op} {b} = {fmt(value)}"
        text = worked.show_work(step)
    except (ValueError, ArithmeticError):
        return None
    if text == step:
        return None
    body = text.split(": ", 1)[1].rsplit(", so ", 1)[0]
    rewrite = None
    if ": " in body:
        rewrite, body = body.split(": ", 1)
    return rewrite, body.split(", ")


def _fact_alone(fact: str, start: int, rel_tolerance: float) -> list[Claim]:
    """A column fact checked on its own arithmetic (a step worked.py does not work out)."""
    division = _division_fact(fact)
    if division is not None:
        ok, should = division
        return [Claim("column", fact, start, start + len(fact), fact, should, ok, fact if ok else should)]
    m = re.fullmatch(r"(\d)([=<>])(\d)", fact)
    if m:  # a digit comparison
        x, y = int(m[1]), int(m[3])
        sign = _sign(x, y)
        return [Claim("column", fact, start, start + len(fact), m[2], sign, sign == m[2], f"{x}{sign}{y}")]
    claims = _chain_claims(fact, start, _Shifted(fact, start), rel_tolerance)
    return [dataclasses.replace(c, kind="column", value=None) for c in claims]


def _fact_claims(facts: str, start: int, reference: list[str] | None, rel_tolerance: float) -> list[Claim]:
    claims = []
    pos = start
    for i, fact in enumerate(facts.split(", ")):
        if reference is None:
            claims.extend(_fact_alone(fact, pos, rel_tolerance))
        else:
            want = reference[i] if i < len(reference) else ""
            ok = fact == want
            stated, expected = fact.rsplit("=", 1)[-1] if "=" in fact else fact, want.rsplit("=", 1)[-1] if want else ""
            if _DIVISION.fullmatch(fact) or _DIVISION.fullmatch(want) or not re.search(r"[-+×]", fact + want):
                stated, expected = fact, want  # a division or a digit comparison is read whole
            claims.append(
                Claim(
                    "column",
                    fact,
                    pos,
                    pos + len(fact),
                    stated,
                    expected or "(no such column)",
                    ok,
                    fact if ok else (want or "(no such column)"),
                )
            )
        pos += len(fact) + 2
    return claims


def _column_claims(line: str, offset: int, rel_tolerance: float) -> list[Claim] | None:
    """The claims of a line of column notation; None when the line is not one (or holds a number past
    MAX_DIGITS: then it is read as free text, where such a number makes its chain unreadable)."""
    if any(len(n) > MAX_DIGITS for n in re.findall(r"\d+", line)):
        return None
    for notation, read in _NOTATIONS:
        m = notation.match(line)
        if m:
            return read(m, offset, rel_tolerance)
    return None


def _operation_claims(m: re.Match, offset: int, rel_tolerance: float) -> list[Claim] | None:
    """`a op b: [rewrite: ]facts, so result` (None for a division by zero: no claim)."""
    a, op, b = m["a"], m["op"], m["b"]
    value = _exact(Fraction(a), op, Fraction(b))
    if value is None:
        return None
    ref = _reference(a, op, b, value)
    claims = []
    if m["rewrite"]:
        rewrite = m["rewrite"]
        want = ref[0] if ref is not None else None
        if want is not None:
            ok = rewrite == want
        else:  # check it as an equality of values
            inner = rewrite.removeprefix("-(").removesuffix(")")
            x, rop, y = inner.split(" ")
            rv = _exact(Fraction(x), rop, Fraction(y))
            rv = -rv if rewrite.startswith("-(") else rv
            ok, want = rv == value, rewrite
        claims.append(
            Claim(
                "rewrite",
                rewrite,
                offset + m.start("rewrite"),
                offset + m.end("rewrite"),
                rewrite,
                want or rewrite,
                ok,
                rewrite if ok else want,
            )
        )
    claims.extend(_fact_claims(m["facts"], offset + m.start("facts"), ref[1] if ref else None, rel_tolerance))
    result = _read_num(m["result"].lstrip("-"))
    stated = -result.value if m["result"].startswith("-") else result.value
    ok = agrees(stated, result.places, value, rel_tolerance)
    places = max(len(n.partition(".")[2]) for n in (a, b))
    expected = fmt(value, result.places if ok else min(places, result.places) if _terminates(value) else places)
    claims.append(
        Claim(
            "result",
            f"so {m['result']}",
            offset + m.start("result") - 3,
            offset + m.end("result"),
            m["result"],
            expected,
            ok,
            f"so {m['result']}" if ok else f"so {expected}",
            stated,
        )
    )
    return claims


def _versus_claims(m: re.Match, offset: int, rel_tolerance: float) -> list[Claim]:
    """`a vs b: facts, so c > d`: a comparison worked digit by digit."""
    a, b = m["a"], m["b"]
    sign = _sign(int(a), int(b))
    ref = None
    if sign != "=":
        work = worked.show_comparison(f"{a} {sign} {b}")
        if work.startswith(f"{a} vs {b}: "):
            ref = work.split(": ", 1)[1].rsplit(", so ", 1)[0].split(", ")
    claims = _fact_claims(m["facts"], offset + m.start("facts"), ref, rel_tolerance)
    ok = _sign(Fraction(m["c"]), Fraction(m["d"])) == m["sign"] and (m["c"], m["d"]) == (a, b)
    stated = f"{m['c']} {m['sign']} {m['d']}"
    want = f"{a} {sign} {b}"
    claims.append(
        Claim(
            "compare",
            f"so {stated}",
            offset + m.start("c") - 3,
            offset + m.end("d"),
            stated,
            want,
            ok,
            f"so {stated}" if ok else f"so {want}",
        )
    )
    return claims


def _comparison_claims(m: re.Match, offset: int, rel_tolerance: float) -> list[Claim]:
    """`a < b` alone on its line."""
    line = m.string
    truth = _sign(Fraction(m["a"]), Fraction(m["b"]))
    want = f"{m['a']} {truth} {m['b']}"
    ok = truth == m["sign"]
    return [Claim("compare", line, offset, offset + len(line), m["sign"], truth, ok, line if ok else want)]


_NOTATIONS = ((_COLUMN, _operation_claims), (_VERSUS, _versus_claims), (_COMPARE, _comparison_claims))


# ---------------------------------------------------------------- the checker


def check(reasoning: str | None, rel_tolerance: float = DEFAULT_TOLERANCE) -> Working:
    """Every arithmetic claim found in `reasoning`, checked; spans index `reasoning` itself."""
    if not reasoning:
        return Working(())
    text = reasoning.replace("\u2212", "-")  # one character for one: spans stay those of `reasoning`
    claims: list[Claim] = []
    offset = 0
    for raw in text.split("\n"):
        line = raw.rstrip()
        lead = len(line) - len(line.lstrip())
        column = _column_claims(line.strip(), offset + lead, rel_tolerance)
        if column is not None:
            claims.extend(column)
        else:
            notes, blanked = _note_claims(line, offset, rel_tolerance)
            divisions, blanked = _division_claims(blanked, offset)
            page = _Shifted(blanked, offset)  # spans and touching characters read against the blanked line
            claims.extend(notes + divisions + _chain_claims(blanked, offset, page, rel_tolerance))
        offset += len(raw) + 1
    claims.sort(key=lambda c: (c.start, c.end))
    return Working(tuple(claims))


def summary(working: Working) -> dict:
    """What a scorecard row records of an item's working."""
    first = working.first_false
    return {
        "n_claims": working.n_claims,
        "n_false": working.n_false,
        "first_false": None
        if first is None
        else {"text": first.text, "should": first.should, "stated": first.stated, "expected": first.expected},
        "ends_with": None if working.ends_with is None else fmt(working.ends_with),
    }
