"""String tasks: reverse a word, count a letter, join first letters; each spelled out letter by letter."""

from __future__ import annotations

import random

from reasoning.tasks.core import Draft, generator

WORDS = (
    "cat",
    "dog",
    "sun",
    "map",
    "cup",
    "red",
    "box",
    "hat",
    "pen",
    "egg",
    "tree",
    "book",
    "fish",
    "moon",
    "star",
    "bird",
    "cake",
    "door",
    "frog",
    "lamp",
    "milk",
    "rain",
    "ship",
    "snow",
    "wind",
    "ball",
    "king",
    "leaf",
    "apple",
    "bread",
    "chair",
    "cloud",
    "green",
    "house",
    "lemon",
    "music",
    "paper",
    "queen",
    "sheep",
    "table",
    "water",
    "zebra",
    "puppy",
    "river",
    "tiger",
    "grape",
    "planet",
    "garden",
    "window",
    "yellow",
    "banana",
    "pencil",
    "rabbit",
    "orange",
    "silver",
    "basket",
    "candle",
    "castle",
    "dragon",
    "forest",
    "island",
    "jungle",
    "kitten",
    "ladder",
    "market",
    "pepper",
    "rocket",
    "school",
    "summer",
    "tomato",
    "turtle",
    "bubble",
    "cheese",
    "papaya",
    "coffee",
    "mammal",
    "elephant",
    "umbrella",
    "mountain",
    "butterfly",
    "chocolate",
    "blanket",
    "picture",
    "penguin",
    "diamond",
    "holiday",
    "morning",
    "teacher",
    "kitchen",
    "library",
    "tomorrow",
    "strawberry",
    "cinnamon",
    "seventeen",
    "lollipop",
    "volleyball",
    "balloon",
    "success",
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


def _spell(word: str) -> str:
    return " ".join(word)


@generator("string.reverse", weight=2)
def string_reverse(rng: random.Random, difficulty: str) -> Draft:
    """`Reverse the word planet.` -> spell `p l a n e t`, spell `t e n a l p`, conclude `tenalp`."""
    word = rng.choice(_REVERSE_POOLS[difficulty])
    prompt = rng.choice(
        ("Reverse the word {w}.", "Write the word {w} backwards.", "What is {w} spelled backwards?")
    ).format(w=word)
    steps = [("spell", _spell(word)), ("spell", _spell(word[::-1])), ("conclude", word[::-1])]
    return Draft(prompt, steps, word[::-1], "text")


@generator("string.count_letter", weight=1)
def string_count_letter(rng: random.Random, difficulty: str) -> Draft:
    """`How many times does the letter a appear in banana?` -> `b a n a n a`, `a a a`, `3`."""
    word, letter, count = rng.choice(_COUNT_POOLS[difficulty])
    prompt = rng.choice(
        (
            "How many times does the letter {c} appear in {w}?",
            "Count the letter {c} in the word {w}.",
            "How many {c}'s are in the word {w}?",
        )
    ).format(c=letter, w=word)
    steps = [("spell", _spell(word)), ("spell", " ".join([letter] * count)), ("conclude", str(count))]
    return Draft(prompt, steps, str(count))


@generator("string.first_letters", weight=1)
def string_first_letters(rng: random.Random, difficulty: str) -> Draft:
    """`Join the first letters of these words: red, apple, tree.` -> spell `r a t`, conclude `rat`."""
    n = {"easy": 2, "medium": 3, "hard": 4}[difficulty]
    words = rng.sample(WORDS, n)
    joined = "".join(w[0] for w in words)
    prompt = rng.choice(
        ("Join the first letters of these words: {ws}.", "Write the first letter of each word together: {ws}.")
    ).format(ws=", ".join(words))
    steps = [("spell", _spell(joined)), ("conclude", joined)]
    return Draft(prompt, steps, joined, "text")
