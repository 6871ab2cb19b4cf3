"""A rubric judge: templates, strict verdict parsing, rubric scoring, defences and a content-addressed cache.

Pure Python, no JAX and no network: the backends that turn a rendered prompt
into the judge model's reply live in `reasoning/judge_client.py` (any
OpenAI-compatible endpoint) and `training/judge_local.py` (a Gemma checkpoint
run with our sampler). Both give a `Backend`: `identity` (what judged: model,
endpoint, template, all of it part of every cache key) and `complete(prompts)`.

Scoring follows Rubrics as Rewards (arXiv 2507.17746): each criterion gets one
yes/no verdict, the score is Σ w·v over the criteria minus Σ w·v over the
pitfalls, divided by Σ w over the criteria, clipped to [0, 1]. A reply that
does not give exactly one verdict for every criterion is a failed judgment:
its score is None and it is counted, never read as yes or no.

Defences (the "master key" replies of arXiv 2507.08794, an empty answer, a
copied question, padding) are rule-based gates checked before the judge is
asked: a gated completion scores 0 and the judge never sees it, so no judge,
however weak, can be fooled by them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from reasoning.answers import parse_completion

TEMPLATES = ("rubric-lines", "criterion")
VERDICTS = {"yes": True, "no": False}


class JudgeError(RuntimeError):
    """The judge could not be asked (endpoint down, timed out, refused, bad rubric); one line."""


# ------------------------------------------------------------------ rubrics


@dataclasses.dataclass(frozen=True)
class Criterion:
    text: str
    weight: float
    pitfall: bool = False  # met = bad: counts against the score


Rubric = tuple[Criterion, ...]

# For items without a rubric of their own: judges the shown work, not the answer (which rules check).
DEFAULT_RUBRIC: Rubric = (
    Criterion("The reasoning leads step by step to the final answer it gives.", 3.0),
    Criterion("Every statement in the reasoning follows from the question or from earlier steps.", 2.0),
    Criterion("The final answer responds to what the question asks.", 2.0),
    Criterion("The reply repeats itself or pads with text that does not help answer the question.", 1.0, True),
)


def parse_rubric(raw: Sequence[Mapping[str, Any]] | None, where: str = "rubric") -> Rubric:
    """A rubric from its JSON form `[{criterion, weight, pitfall?}, …]`; None gives the default rubric."""
    if raw is None:
        return DEFAULT_RUBRIC
    if not isinstance(raw, (list, tuple)) or not raw:
        raise JudgeError(f"{where}: expected a non-empty list of {{criterion, weight, pitfall}}")
    out = []
    for i, c in enumerate(raw):
        if not isinstance(c, Mapping):
            raise JudgeError(f"{where}[{i}]: expected an object {{criterion, weight, pitfall}}")
        text, weight = c.get("criterion"), c.get("weight")
        if not isinstance(text, str) or not text.strip():
            raise JudgeError(f"{where}[{i}].criterion: expected a non-empty string")
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not weight > 0:
            raise JudgeError(f"{where}[{i}].weight: expected a number above 0, got {weight!r}")
        pitfall = c.get("pitfall", False)
        if not isinstance(pitfall, bool):
            raise JudgeError(f"{where}[{i}].pitfall: expected true or false, got {pitfall!r}")
        out.append(Criterion(" ".join(text.split()), float(weight), pitfall))
    if not any(not c.pitfall for c in out):
        raise JudgeError(f"{where}: needs at least one criterion that is not a pitfall")
    return tuple(out)


def rubric_json(rubric: Rubric) -> list[dict]:
    return [{"criterion": c.text, "weight": c.weight, "pitfall": c.pitfall} for c in rubric]


def rubric_score(rubric: Rubric, verdicts: Sequence[bool]) -> float:
    """Σ w·v (criteria) − Σ w·v (pitfalls), over Σ w (criteria), clipped to [0, 1]."""
    positive = sum(c.weight for c in rubric if not c.pitfall)
    got = sum(c.weight * (-1 if c.pitfall else 1) for c, v in zip(rubric, verdicts, strict=True) if v)
    return round(min(1.0, max(0.0, got / positive)), 6)


# ------------------------------------------------------------------ templates

# The 270M base model follows a pattern far better than an instruction, so each template shows one
# worked example before the real item; a larger instruction-tuned judge reads the same text fine. The
# example has as many criteria as the rubric (a small model copies the example's number of lines).
_INSTRUCTION = (
    "You are grading a reply against a rubric. For each numbered criterion, answer yes if the reply "
    "meets it and no if it does not. Judge only what the reply shows; a criterion that describes a "
    "mistake is answered yes when the reply makes that mistake."
)
_EXAMPLE = {
    "question": "What is 12 + 30?",
    "reply": "<reasoning>12 + 30 = 42.</reasoning><answer>42</answer>",
    "criteria": (
        ("The answer is 42.", "yes"),
        ("The reply gives a wrong sum.", "no"),
        ("The reasoning shows the addition.", "yes"),
        ("The reply repeats the question without answering it.", "no"),
        ("The reasoning uses both numbers of the question.", "yes"),
        ("The reply claims that 12 + 30 = 32.", "no"),
        ("The answer is a whole number.", "yes"),
        ("The reply pads the answer with unrelated text.", "no"),
    ),
}


def _criteria_lines(texts: Sequence[str]) -> str:
    return "\n".join(f"{i}. {t}" for i, t in enumerate(texts, start=1))


def _item_block(question: str, reply: str) -> str:
    return f"Question:\n{question}\n\nReply:\n{reply}\n"


def render_lines(question: str, reply: str, rubric: Rubric) -> str:
    """`rubric-lines`: one request per item; the judge answers `N: yes|no`, one line per criterion."""
    ex = _EXAMPLE
    shown = [ex["criteria"][i % len(ex["criteria"])] for i in range(len(rubric))]
    example = "\n".join(f"{i}: {v}" for i, (_, v) in enumerate(shown, start=1))
    return (
        f"{_INSTRUCTION} Answer with one line per criterion, `number: yes` or `number: no`, and nothing else.\n\n"
        f"{_item_block(ex['question'], ex['reply'])}\nCriteria:\n{_criteria_lines([t for t, _ in shown])}\n\n"
        f"Verdicts:\n{example}\n\n"
        f"{_item_block(question, reply)}\nCriteria:\n{_criteria_lines([c.text for c in rubric])}\n\n"
        "Verdicts:\n"
    )


def render_criterion(question: str, reply: str, criterion: Criterion) -> str:
    """`criterion`: one request per criterion; the judge answers `yes` or `no`."""
    ex = _EXAMPLE
    return (
        f"{_INSTRUCTION} Answer with the single word yes or no.\n\n"
        + "".join(
            f"{_item_block(ex['question'], ex['reply'])}\nCriterion: {text}\nVerdict: {verdict}\n\n"
            for text, verdict in ex["criteria"][:2]
        )
        + f"{_item_block(question, reply)}\nCriterion: {criterion.text}\nVerdict:"
    )


def render(template: str, question: str, reply: str, rubric: Rubric) -> list[str]:
    """The prompts one judgment takes: one (`rubric-lines`) or one per criterion (`criterion`)."""
    if template == "rubric-lines":
        return [render_lines(question, reply, rubric)]
    if template == "criterion":
        return [render_criterion(question, reply, c) for c in rubric]
    raise JudgeError(f"judge.template: {template!r} (expected one of {', '.join(TEMPLATES)})")


def max_reply_tokens(template: str, rubric: Rubric) -> int:
    """Enough tokens for the reply the template asks for (`N: yes` is at most 4 tokens and a newline)."""
    return 6 * len(rubric) + 2 if template == "rubric-lines" else 3


# ------------------------------------------------------------------ parsing

_LINE = re.compile(r"^\s*(?:criterion\s*)?\**\s*(\d+)\s*\**\s*[:.)=-]\s*\**\s*(yes|no)\b\**\s*[.!]?\s*$", re.IGNORECASE)
_WORD = re.compile(r"^\s*\**\s*(yes|no)\b\**\s*[.!]?", re.IGNORECASE)


def parse_lines(reply: str, n_criteria: int) -> tuple[list[bool] | None, str | None]:
    """(verdicts, None), or (None, why) for a reply that does not give exactly one verdict per criterion.

    Lines that carry no verdict before the first verdict are tolerated (a model may open with a header);
    parsing stops at the first blank line after verdicts began (a model may go on to a next example).
    """
    found: dict[int, bool] = {}
    started = False
    for line in reply.splitlines():
        if not line.strip():
            if started:
                break
            continue
        m = _LINE.match(line)
        if not m:
            if started:
                break
            continue
        started = True
        number, verdict = int(m.group(1)), VERDICTS[m.group(2).lower()]
        if not 1 <= number <= n_criteria:
            return None, f"a verdict for criterion {number}, which the rubric does not have"
        if number in found:
            return None, f"two verdicts for criterion {number}"
        found[number] = verdict
    if not found:
        return None, "no verdict"
    missing = [n for n in range(1, n_criteria + 1) if n not in found]
    if missing:
        return None, f"no verdict for criterion {missing[0]}"
    return [found[n] for n in range(1, n_criteria + 1)], None


def parse_word(reply: str) -> tuple[bool | None, str | None]:
    """(verdict, None) for a reply that opens with yes or no, alone on its line; else (None, why)."""
    first = next((line for line in reply.splitlines() if line.strip()), "")
    m = _WORD.match(first)
    if not m:
        return None, "no verdict"
    rest = first[m.end() :].strip().lower()
    if re.search(r"\b(yes|no)\b", rest):
        return None, "two verdicts"
    return VERDICTS[m.group(1).lower()], None


def parse(template: str, replies: Sequence[str], rubric: Rubric) -> tuple[list[bool] | None, str | None]:
    """Verdicts from the replies that `render(template, …)`'s prompts got."""
    if template == "rubric-lines":
        return parse_lines(replies[0], len(rubric))
    verdicts = []
    for i, reply in enumerate(replies, start=1):
        v, why = parse_word(reply)
        if v is None:
            return None, f"criterion {i}: {why}"
        verdicts.append(v)
    return verdicts, None


# ------------------------------------------------------------------ defences

# Replies that carry no content but read like the opening of a solution: judged correct by many judges.
MASTER_KEYS = (
    "Thought process:",
    "Let's solve this problem step by step.",
    "Solution",
    "Let me think.",
    "Let's think step by step.",
    "The answer is",
    ":",
    ".",
    "解",
)
MIN_WORDS = 3  # fewer words than this after the master-key phrases and tags are gone: nothing to judge
COPY_SHARE = 0.8  # of the reply's word 4-grams found in the question: a copy
MIN_UNIQUE_SHARE = 0.5  # of the reply's word 3-grams that are distinct, below it: padding

_WORDS = re.compile(r"\w+")


def _words(text: str) -> list[str]:
    return _WORDS.findall(text.lower())


def _ngrams(words: Sequence[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]


def gate(question: str, completion: str) -> str | None:
    """Why a completion scores 0 without asking the judge, or None when the judge should see it."""
    parsed = parse_completion(completion)
    if parsed["answer"] is None:
        return "no answer"
    text = completion
    for tag in ("<reasoning>", "</reasoning>", "<answer>", "</answer>"):
        text = text.replace(tag, " ")
    stripped = text
    for key in MASTER_KEYS:
        stripped = re.sub(re.escape(key), " ", stripped, flags=re.IGNORECASE)
    words = _words(stripped)
    if len(words) < MIN_WORDS:
        return "master key"
    # n-grams within each block only, so a question pasted into both blocks reads as one copy
    blocks = [_words(b) for b in re.split(r"</?(?:reasoning|answer)>", completion)]
    grams4 = [g for b in blocks for g in _ngrams(b, 4)]
    asked = set(_ngrams(_words(question), 4))
    if grams4 and sum(g in asked for g in grams4) >= COPY_SHARE * len(grams4):
        return "copied question"
    grams3 = [g for b in blocks for g in _ngrams(b, 3)]
    if len(grams3) >= 12 and len(set(grams3)) < MIN_UNIQUE_SHARE * len(grams3):
        return "padding"
    return None


# ------------------------------------------------------------------ cache


def cache_key(identity: Mapping[str, Any], rubric: Rubric, question: str, completion: str) -> str:
    """sha256 of (judge identity, rubric, question, completion) in canonical JSON."""
    doc = {"judge": dict(identity), "rubric": rubric_json(rubric), "question": question, "completion": completion}
    # surrogatepass: a completion may hold a lone surrogate (JSON's "\ud800" reads as one), which has no
    # UTF-8; every other text hashes exactly as plain UTF-8.
    return hashlib.sha256(
        json.dumps(doc, sort_keys=True, ensure_ascii=False).encode("utf-8", "surrogatepass")
    ).hexdigest()


class Cache:
    """Judgments by cache key, one JSON file each under `root/<key[:2]>/<key>.json`, written atomically.

    Content-addressed, so concurrent writers of one key write the same bytes, and a judgment once made
    (by evaluate, by an interrupted GRPO run) is never asked for again. `root` None: no cache.
    """

    def __init__(self, root: str | Path | None):
        self.root = Path(root) if root is not None else None

    def _path(self, key: str) -> Path:
        assert self.root is not None
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict | None:
        if self.root is None:
            return None
        try:
            return json.loads(self._path(key).read_text(encoding="utf-8"))
        except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
            return None  # absent, or a foreign file: ask again and overwrite it

    def put(self, key: str, judgment: dict) -> None:
        if self.root is None:
            return
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{key}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(json.dumps(judgment, sort_keys=True))  # ASCII escapes: any text, lone surrogates too, writes
        os.replace(tmp, path)


# ------------------------------------------------------------------ the judge


class Backend(Protocol):
    identity: Mapping[str, Any]  # what judges: backend, model, endpoint (never a key)

    def complete(self, prompts: Sequence[str], max_tokens: int) -> list[str]:
        """The model's reply to each prompt (greedy); raises JudgeError when it cannot be asked."""


@dataclasses.dataclass(frozen=True)
class Task:
    """One thing to judge: a completion of a question, against a rubric."""

    question: str
    completion: str
    rubric: Rubric = DEFAULT_RUBRIC


class Judge:
    """Judges tasks with a backend and a template; judgments are cached by content."""

    def __init__(
        self, backend: Backend, template: str = "rubric-lines", cache: Cache | None = None, defences: bool = True
    ):
        if template not in TEMPLATES:
            raise JudgeError(f"judge.template: {template!r} (expected one of {', '.join(TEMPLATES)})")
        self.backend, self.template, self.cache = backend, template, cache or Cache(None)
        # defences=False only measures what the bare judge would say (scripts/judge_measure.py)
        self.defences = defences
        self.identity = {**dict(backend.identity), "template": template, **({} if defences else {"defences": "off"})}
        self.asked = 0  # prompts sent to the backend by this judge (cache misses)
        self.failed = 0  # judgments made by this judge whose reply could not be parsed

    def judge(self, tasks: Sequence[Task]) -> list[dict]:
        """One judgment per task, in order: {key, score, verdicts, gate, failure}, and `replies` (what the
        model said) for one that was asked.

        score: in [0, 1], 0 for a gated completion, None for a failed judgment (failure says why). A
        failed judgment is cached too: greedy decoding would say the same again.
        """
        keys = [cache_key(self.identity, t.rubric, t.question, t.completion) for t in tasks]
        out: list[dict | None] = [self.cache.get(k) for k in keys]
        todo: dict[str, int] = {}  # key -> first index of a task still to judge (duplicates ask once)
        for i, (t, k) in enumerate(zip(tasks, keys)):
            if out[i] is not None or k in todo:
                continue
            why = gate(t.question, t.completion) if self.defences else None
            if why is not None:
                out[i] = {"key": k, "score": 0.0, "verdicts": None, "gate": why, "failure": None}
                self.cache.put(k, out[i])
            else:
                todo[k] = i
        # Grouped by reply budget so each backend call asks for one max_tokens.
        by_budget: dict[int, list[int]] = {}
        for i in todo.values():
            by_budget.setdefault(max_reply_tokens(self.template, tasks[i].rubric), []).append(i)
        for budget, idx in sorted(by_budget.items()):
            prompts = [render(self.template, tasks[i].question, tasks[i].completion, tasks[i].rubric) for i in idx]
            flat = [p for ps in prompts for p in ps]
            replies = self.backend.complete(flat, budget)
            self.asked += len(flat)
            at = 0
            for i, ps in zip(idx, prompts):
                got = replies[at : at + len(ps)]
                at += len(ps)
                verdicts, why = parse(self.template, got, tasks[i].rubric)
                score = rubric_score(tasks[i].rubric, verdicts) if verdicts is not None else None
                self.failed += verdicts is None
                out[i] = {
                    "key": keys[i],
                    "score": score,
                    "verdicts": verdicts,
                    "gate": None,
                    "failure": why,
                    "replies": list(got),
                }
                self.cache.put(keys[i], out[i])
        for i, k in enumerate(keys):  # a duplicate of a task judged above
            if out[i] is None:
                out[i] = out[todo[k]]
        return [dict(j) for j in out]  # type: ignore[arg-type]


def summary(judgments: Sequence[Mapping[str, Any]], rubrics: Sequence[Rubric]) -> dict:
    """Metrics over judgments: mean score (of those judged), failures, gates, per-criterion pass rates.

    Pass rates are per criterion position and only for tasks that share one rubric (the default, or a
    set whose items all carry the same one); per-item rubrics give their rates in the scorecard.
    """
    scored = [j["score"] for j in judgments if j["score"] is not None]
    gates: dict[str, int] = {}
    for j in judgments:
        if j.get("gate"):
            gates[j["gate"]] = gates.get(j["gate"], 0) + 1
    out: dict[str, Any] = {
        "score": round(sum(scored) / len(scored), 6) if scored else None,
        "n_judged": len(judgments),
        "n_failed": sum(j["score"] is None for j in judgments),
        "n_gated": sum(gates.values()),
        "gates": dict(sorted(gates.items())),
    }
    if rubrics and all(r == rubrics[0] for r in rubrics):
        asked = [j["verdicts"] for j in judgments if j.get("verdicts") is not None]
        out["criteria"] = [
            {
                "criterion": c.text,
                "pitfall": c.pitfall,
                "pass_rate": round(sum(v[i] for v in asked) / len(asked), 6) if asked else None,
            }
            for i, c in enumerate(rubrics[0])
        ]
    return out
