"""Word problems: rates, percentages, cost per item, unit conversion, comparisons."""

from __future__ import annotations

import random
from dataclasses import dataclass

from reasoning.tasks.core import Draft, Steps, generator, num

NAMES = (
    "Ana",
    "Ben",
    "Carlos",
    "Dana",
    "Eli",
    "Fatima",
    "Grace",
    "Hiro",
    "Ivan",
    "Jade",
    "Kofi",
    "Lena",
    "Maya",
    "Noah",
    "Omar",
    "Priya",
    "Quinn",
    "Rosa",
    "Sam",
    "Tara",
    "Uma",
    "Victor",
    "Wen",
    "Yusuf",
    "Zoe",
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
    Unit(
        "km",
        "km",
        "meters",
        "m",
        1000,
        "{name} walks {q} km and {r} meters. How many meters does {name} walk?",
        "{name} walks {q1} km, then {q2} km and {r} meters. How many meters does {name} walk in total?",
    ),
    Unit(
        "kg",
        "kg",
        "grams",
        "g",
        1000,
        "A box weighs {q} kg and {r} grams. How many grams does it weigh?",
        "A bag of rice weighs {q1} kg. A bag of flour weighs {q2} kg and {r} grams. "
        "How many grams do they weigh together?",
    ),
    Unit(
        "hours",
        "hours",
        "minutes",
        "minutes",
        60,
        "A trip takes {q} hours and {r} minutes. How many minutes does it take?",
        "A trip takes {q1} hours, then {q2} more hours and {r} minutes. How many minutes does it take in total?",
    ),
    Unit(
        "dollars",
        "dollars",
        "cents",
        "cents",
        100,
        "{name} has {q} dollars and {r} cents. How many cents does {name} have?",
        "{name} has {q1} dollars and finds {q2} dollars and {r} cents. How many cents does {name} have now?",
    ),
    Unit(
        "meters",
        "m",
        "centimeters",
        "cm",
        100,
        "A rope is {q} meters and {r} centimeters long. How many centimeters long is it?",
        "One rope is {q1} meters long. Another is {q2} meters and {r} centimeters long. "
        "How many centimeters are they together?",
    ),
    Unit(
        "minutes",
        "minutes",
        "seconds",
        "seconds",
        60,
        "A song lasts {q} minutes and {r} seconds. How many seconds does it last?",
        "One song lasts {q1} minutes. Another lasts {q2} minutes and {r} seconds. "
        "How many seconds do they last together?",
    ),
    Unit(
        "liters",
        "liters",
        "milliliters",
        "ml",
        1000,
        "A jug holds {q} liters and {r} milliliters. How many milliliters does it hold?",
        "A pot holds {q1} liters. A jug holds {q2} liters and {r} milliliters. "
        "How many milliliters do they hold together?",
    ),
)


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _a(noun: str) -> str:
    return ("an " if noun[0] in "aeiou" else "a ") + noun


def _two_names(rng: random.Random) -> tuple[str, str]:
    a, b = rng.sample(NAMES, 2)
    return a, b


# ---------------------------------------------------------------- word problems: rate


def _rate_context(rng: random.Random) -> tuple[str, str, str, str, str, str, str, range]:
    subj, pron, verbs, verb, noun, unit, lo, hi = rng.choice(RATE_CONTEXTS)
    name = rng.choice(NAMES)
    per = rng.choice(("per", "every", "each"))
    return subj.format(name=name), pron.format(name=name), verbs, verb, noun, unit, per, range(lo, hi + 1)


@generator("rate.total", weight=6)
def rate_total(rng: random.Random, difficulty: str) -> Draft:
    """Rate × time: `A car travels 60 km per hour. How many km does it travel in 4 hours?`."""
    subj, pron, verbs, verb, noun, unit, per, rates = _rate_context(rng)
    s = Steps()
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
            prompt = (
                f"{subj} {verbs} {r} {noun} {per} {unit}. "
                f"How many {noun} does {pron} {verb} in {t1} {unit}s and then {more}?"
            )
            total = s.compute(t1, "+", t2)
            value = s.compute(r, "×", total)
        else:
            t1 = rng.randint(3, 12)
            t2 = rng.randint(2, t1 - 1)
            prompt = (
                f"{subj} {verbs} {r} {noun} {per} {unit}. "
                f"How many more {noun} does {pron} {verb} in {t1} {unit}s than in {t2} {unit}s?"
            )
            diff = s.compute(t1, "-", t2)
            value = s.compute(r, "×", diff)
    else:
        r1, r2 = rng.sample(rates, 2)
        t1, t2 = rng.randint(2, 12), rng.randint(2, 12)
        prompt = (
            f"{subj} {verbs} {r1} {noun} {per} {unit} for {t1} {unit}s, "
            f"then {r2} {noun} {per} {unit} for {t2} {unit}s. How many {noun} is that in total?"
        )
        value = s.sum_of_products((r1, t1), (r2, t2))
    return Draft(prompt, s.steps, num(value))


@generator("rate.unit_rate", weight=4)
def rate_unit_rate(rng: random.Random, difficulty: str) -> Draft:
    """Total / time, then maybe × another time: `A car travels 240 km in 4 hours. ... per hour?`."""
    subj, pron, verbs, verb, noun, unit, per, rates = _rate_context(rng)
    r, t = rng.choice(rates), rng.randint(2, 12)
    total = r * t
    s = Steps()
    if difficulty == "easy":
        prompt = f"{subj} {verbs} {total} {noun} in {t} {unit}s. How many {noun} does {pron} {verb} {per} {unit}?"
        value = s.compute(total, "/", t)
    elif difficulty == "medium":
        t2 = rng.choice([x for x in range(2, 13) if x != t])
        prompt = (
            f"{subj} {verbs} {total} {noun} in {t} {unit}s. "
            f"At that rate, how many {noun} does {pron} {verb} in {t2} {unit}s?"
        )
        rate = s.compute(total, "/", t)
        value = s.compute(rate, "×", t2)
    else:
        t2 = rng.randint(2, 9)
        t3 = rng.randint(1, 12 - t2)
        more = f"{t3} more {unit}" + ("s" if t3 > 1 else "")
        prompt = (
            f"{subj} {verbs} {total} {noun} in {t} {unit}s. "
            f"At that rate, how many {noun} does {pron} {verb} in {t2} {unit}s and then {more}?"
        )
        rate = s.compute(total, "/", t)
        time = s.compute(t2, "+", t3)
        value = s.compute(rate, "×", time)
    return Draft(prompt, s.steps, num(value))


# ---------------------------------------------------------------- word problems: percentage

_ONE_STEP_PERCENTS = (10, 25, 50)
_TWO_STEP_PERCENTS = (20, 30, 40, 60, 70, 75, 80, 90)


def _percent_base(rng: random.Random, p: int, lo: int = 20, hi: int = 990) -> int:
    step = 4 if p in (25, 75) else 2 if p == 50 else 10
    return step * rng.randint(-(-lo // step), hi // step)


def _percent_part(s: Steps, n: int, p: int) -> int:
    """p% of n as `n / 10` (or `/ 4`, `/ 2`) then `× k`."""
    if p == 50:
        return s.compute(n, "/", 2)
    if p in (25, 75):
        q = s.compute(n, "/", 4)
        return q if p == 25 else s.compute(q, "×", 3)
    q = s.compute(n, "/", 10)
    return q if p == 10 else s.compute(q, "×", p // 10)


@generator("percentage.of", weight=5, difficulties=("easy", "medium"))
def percentage_of(rng: random.Random, difficulty: str) -> Draft:
    """p% of n: `What is 25% of 360?` -> `360 / 4 = 90`."""
    p = rng.choice(_ONE_STEP_PERCENTS if difficulty == "easy" else _TWO_STEP_PERCENTS)
    n = _percent_base(rng, p)
    name, items = rng.choice(NAMES), rng.choice(COUNT_ITEMS)
    prompt = rng.choice(
        (
            "What is {p}% of {n}?",
            "Find {p}% of {n}.",
            "{name} has {n} {items}. {name} gives away {p}% of them. How many {items} does {name} give away?",
            "A class has {n} students. {p}% of them walk to school. How many students walk to school?",
            "A tank holds {n} liters. It is {p}% full. How many liters are in the tank?",
            "A book has {n} pages. {name} has read {p}% of it. How many pages has {name} read?",
        )
    ).format(p=p, n=n, name=name, items=items)
    s = Steps()
    value = _percent_part(s, n, p)
    return Draft(prompt, s.steps, num(value))


@generator("percentage.change", weight=5, difficulties=("medium", "hard"))
def percentage_change(rng: random.Random, difficulty: str) -> Draft:
    """A discount or an increase: part, then `n - part` or `n + part`."""
    p = rng.choice(_ONE_STEP_PERCENTS if difficulty == "medium" else _TWO_STEP_PERCENTS)
    n = _percent_base(rng, p, 20, 990)
    name = rng.choice(NAMES)
    item = rng.choice(SHOP_ITEMS)[0]
    template, op = rng.choice(
        (
            ("A {item} costs {n} dollars. It is {p}% off. What is the sale price in dollars?", "-"),
            ("{name} had {n} dollars and spent {p}% of it. How many dollars does {name} have left?", "-"),
            ("A farm had {n} sheep and sold {p}% of them. How many sheep are left?", "-"),
            ("A town has {n} people. The number grows by {p}%. How many people live there now?", "+"),
            ("A shop sold {n} cups last week and {p}% more this week. How many cups did it sell this week?", "+"),
            ("{name} earns {n} dollars a week and gets a {p}% raise. How many dollars a week is that now?", "+"),
        )
    )
    prompt = template.format(item=item, n=n, p=p, name=name)
    s = Steps()
    part = _percent_part(s, n, p)
    value = s.compute(n, op, part)
    return Draft(prompt, s.steps, num(value))


# ---------------------------------------------------------------- word problems: cost per item


def _price(rng: random.Random, item: tuple[str, str, int, int]) -> int:
    return rng.randint(item[2], item[3])


@generator("cost_per_item.total", weight=4)
def cost_total(rng: random.Random, difficulty: str) -> Draft:
    """Count × price (+ more): `Pens cost 3 dollars each. How much do 7 pens cost?`."""
    name = rng.choice(NAMES)
    s = Steps()
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
        prompt = (
            f"{name} buys {k} {item[1]} at {p} dollars each and {_a(other[0])} for {q} dollars. "
            f"How much does {name} spend in dollars?"
        )
        cost = s.compute(k, "×", p)
        value = s.compute(cost, "+", q)
    else:
        item, other = rng.sample(SHOP_ITEMS, 2)
        k1, p1, k2, p2 = rng.randint(2, 12), _price(rng, item), rng.randint(2, 12), _price(rng, other)
        prompt = (
            f"{name} buys {k1} {item[1]} at {p1} dollars each and {k2} {other[1]} at {p2} dollars each. "
            f"How much does {name} spend in dollars?"
        )
        value = s.sum_of_products((k1, p1), (k2, p2))
    return Draft(prompt, s.steps, num(value))


@generator("cost_per_item.unit_price", weight=3)
def cost_unit_price(rng: random.Random, difficulty: str) -> Draft:
    """Total / count: `5 notebooks cost 40 dollars. How much does one notebook cost?`."""
    item = rng.choice(SHOP_ITEMS if difficulty != "hard" else _CHEAP_ITEMS)
    one, many = item[0], item[1]
    p = _price(rng, item)
    k = rng.randint(2, max(2, min(12, 999 // p)))  # the total stays within three digits
    total = p * k
    name = rng.choice(NAMES)
    s = Steps()
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
        prompt = (
            f"{name} pays {bill} dollars for {k} {many} and gets {change} dollars in change. "
            f"How many dollars would {m} {many} cost?"
        )
        paid = s.compute(bill, "-", change)
        price = s.compute(paid, "/", k)
        value = s.compute(price, "×", m)
    return Draft(prompt, s.steps, num(value))


def _bill_for(rng: random.Random, total: int) -> int:
    options = [b for b in (10, 20, 50, 100, 200, 500, 1000, 2000) if b > total]
    return options[0] if rng.random() < 0.7 or len(options) == 1 else options[1]


@generator("cost_per_item.change", weight=3, difficulties=("medium", "hard"))
def cost_change(rng: random.Random, difficulty: str) -> Draft:
    """Change from a bill: `k × p`, then `bill - cost`."""
    name = rng.choice(NAMES)
    s = Steps()
    if difficulty == "medium":
        item = rng.choice(_CHEAP_ITEMS)
        k, p = rng.randint(2, 12), _price(rng, item)
        bill = _bill_for(rng, k * p)
        prompt = (
            f"{name} buys {k} {item[1]} at {p} dollars each and pays with {bill} dollars. "
            f"How many dollars of change does {name} get?"
        )
        cost = s.compute(k, "×", p)
        value = s.compute(bill, "-", cost)
    else:
        item, other = rng.sample(_CHEAP_ITEMS, 2)
        k1, p1, k2, p2 = rng.randint(2, 6), _price(rng, item), rng.randint(2, 6), _price(rng, other)
        bill = _bill_for(rng, k1 * p1 + k2 * p2)
        prompt = (
            f"{name} buys {k1} {item[1]} at {p1} dollars each and {k2} {other[1]} at {p2} dollars each, "
            f"and pays with {bill} dollars. How many dollars of change does {name} get?"
        )
        cost = s.sum_of_products((k1, p1), (k2, p2))
        value = s.compute(bill, "-", cost)
    return Draft(prompt, s.steps, num(value))


# ---------------------------------------------------------------- word problems: unit conversion


@generator("unit_conversion.simple", weight=4, difficulties=("easy",))
def unit_simple(rng: random.Random, difficulty: str) -> Draft:
    """One conversion: `How many meters are in 7 km?` -> `7 × 1000 = 7000`; or back with `/`."""
    unit = rng.choice(UNITS)
    q = rng.randint(2, 12)
    s = Steps()
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
    return Draft(prompt, s.steps, num(value), unit=short)


@generator("unit_conversion.mixed", weight=6, difficulties=("medium", "hard"))
def unit_mixed(rng: random.Random, difficulty: str) -> Draft:
    """Mixed units to the small one: `3 km and 450 meters` -> `3 × 1000 = 3000`, `3000 + 450 = 3450`."""
    unit = rng.choice(UNITS)
    name = rng.choice(NAMES)
    r = rng.randint(1, unit.factor - 1)
    s = Steps()
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
    return Draft(prompt, s.steps, num(value), unit=unit.small_short)


# ---------------------------------------------------------------- word problems: comparison


def _change(rng: random.Random, s: Steps, who: str, have: int) -> tuple[str, int]:
    """`and gets 35 more` / `and gives away 20`, computed."""
    if rng.random() < 0.55 or have < 30:
        x = rng.randint(5, 250)
        return f"{who} has {have} {{items}} and gets {x} more.", s.compute(have, "+", x)
    x = rng.randint(5, have - 10)
    return f"{who} has {have} {{items}} and gives away {x}.", s.compute(have, "-", x)


@generator("comparison.who", weight=3)
def comparison_who(rng: random.Random, difficulty: str) -> Draft:
    """Who has more/fewer: restate, compare `124 > 87`, conclude the name."""
    a_name, b_name = _two_names(rng)
    items = rng.choice(COUNT_ITEMS)
    more = rng.random() < 0.6
    question = f"Who has {'more' if more else 'fewer'} {items}" + ("?" if difficulty == "easy" else " now?")
    while True:
        a, b = rng.randint(10, 999), rng.randint(10, 999)
        s = Steps()
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
    return Draft(prompt, s.steps, answer, "text")


@generator("comparison.difference", weight=4)
def comparison_difference(rng: random.Random, difficulty: str) -> Draft:
    """How many more: `124 - 87 = 37` (bigger minus smaller), after any changes."""
    a_name, b_name = _two_names(rng)
    items = rng.choice(COUNT_ITEMS)
    while True:
        a, b = rng.randint(10, 999), rng.randint(10, 999)
        s = Steps()
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
    return Draft(prompt, s.steps, num(value))


@generator("comparison.yes_no", weight=3, difficulties=("medium", "hard"))
def comparison_yes_no(rng: random.Random, difficulty: str) -> Draft:
    """`Is 234 + 167 greater than 400?` -> `234 + 167 = 401`, `401 > 400`, `yes`."""
    s = Steps()
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
        prompt = (
            f"{name} has {a} {items}, buys {b} more, then finds {c} more. "
            f"Does {name} now have more than {threshold} {items}?"
        )
    else:
        prompt = f"Is {expr} {'greater' if greater else 'less'} than {threshold}?"
    is_greater = s.compare(value, threshold)
    answer = "yes" if is_greater == greater else "no"
    s.add("conclude", answer)
    return Draft(prompt, s.steps, answer, "bool")
