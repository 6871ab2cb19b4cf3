"""Decontamination of training prompts against every configured eval set.

Two rules:
- exact: the prompt equals an eval prompt once case and whitespace are folded
  (`tasks.normalize_prompt`);
- ngram: the prompt shares a run of 13 words with an eval prompt, the rule of
  GPT-3's contamination study (words lowercased, punctuation dropped). An eval
  prompt shorter than 13 words is caught by the exact rule only.

The synthetic source redraws a prompt the exact rule catches and is not held
to the 13-gram rule: its generators made our eval set, so its templates share
long runs of words with eval prompts by construction (288 of the default's
24,000 prompts do) while the numbers differ; that is the generalisation the
eval set measures, not a leak. Imported sources (gsm8k, file) are held to both
rules, and a hit is dropped (`seed.decontamination: drop`) or fails the stage
(`fail`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from reasoning.tasks import normalize_prompt

NGRAM = 13
_WORD = re.compile(r"[^\W_]+")  # letters and digits; punctuation and underscores separate words
RULES = ("exact", "ngram")


@dataclass(frozen=True)
class Hit:
    set: str  # eval set name
    item: str  # eval item id
    rule: str  # exact | ngram
    text: str  # what matched: the prompt, or the shared 13 words

    def describe(self) -> str:
        if self.rule == "exact":
            return f"equals eval item {self.item} of eval set {self.set} (leaked eval prompt)"
        return f"shares the {NGRAM} words {self.text!r} with eval item {self.item} of eval set {self.set}"


def words(text: str) -> list[str]:
    return _WORD.findall(text.casefold())


def ngrams(text: str, n: int = NGRAM) -> set[tuple[str, ...]]:
    ws = words(text)
    return {tuple(ws[i : i + n]) for i in range(len(ws) - n + 1)}


class EvalIndex:
    """Every eval prompt of every set, indexed for both rules."""

    def __init__(self, sets: Mapping[str, Iterable[Mapping]]):
        self.sets = list(sets)
        self.exact: dict[str, list[tuple[str, str]]] = {}
        self.grams: dict[tuple[str, ...], list[tuple[str, str]]] = {}
        self.sizes = {}
        for name, items in sets.items():
            items = list(items)
            self.sizes[name] = len(items)
            for item in items:
                self.exact.setdefault(normalize_prompt(item["prompt"]), []).append((name, item["id"]))
                for gram in ngrams(item["prompt"]):
                    self.grams.setdefault(gram, []).append((name, item["id"]))

    def prompts(self) -> list[str]:
        """The normalised eval prompts (what the synthetic generator must not draw)."""
        return list(self.exact)

    def exact_hits(self, prompt: str) -> list[Hit]:
        norm = normalize_prompt(prompt)
        return [Hit(s, i, "exact", norm) for s, i in self.exact.get(norm, [])]

    def ngram_hits(self, prompt: str) -> list[Hit]:
        """One hit per eval set (the first of its items, in word order of the prompt)."""
        hits: dict[str, Hit] = {}
        ws = words(prompt)
        for start in range(len(ws) - NGRAM + 1):
            gram = tuple(ws[start : start + NGRAM])
            for s, i in self.grams.get(gram, []):
                hits.setdefault(s, Hit(s, i, "ngram", " ".join(gram)))
        return list(hits.values())

    def hits(self, prompt: str) -> list[Hit]:
        """One hit per contaminated set, in set order: by the exact rule where it applies, else by 13-gram."""
        found: dict[str, Hit] = {}
        for hit in [*self.exact_hits(prompt), *self.ngram_hits(prompt)]:
            found.setdefault(hit.set, hit)
        return [found[s] for s in self.sets if s in found]
