"""Verifiable rewards for reinforcement learning on `<reasoning>…</reasoning><answer>…</answer>` completions.

Pure functions, no JAX. Each built-in part scores one completion against the
record it answers; `RewardSet` weights the parts (params `grpo.rewards`) and
adds user rewards named as `module:function` (params `grpo.user_rewards`).
Correctness and partial credit call `reasoning.scoring.score_answer`, the very
function `evaluate` scores with, so a reward earned in training is a point
earned in evaluation. The `working` part credits the arithmetic of the reasoning
itself (`reasoning.working`): the share of its claims that hold (`share`) or the
share before the first false one (`prefix`), params `grpo.working_credit`; zero
when the reasoning states nothing checkable, so writing no arithmetic earns
nothing.
"""

from __future__ import annotations

import dataclasses
import importlib
import math
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from reasoning.answers import parse_completion
from reasoning.judge import Judge, JudgeError, Task, parse_rubric
from reasoning.scoring import parse_bool, parse_number, score_answer
from reasoning.working import check

BUILTIN = ("format", "correctness", "partial", "overlength", "working", "judge")
WORKING_CREDITS = ("share", "prefix")


class RewardError(ValueError):
    """A reward cannot be loaded, raised, or returned something that is not a finite number; one line."""


@dataclasses.dataclass(frozen=True)
class Rollout:
    """One completion and what it answers: the unit every reward scores."""

    prompt: str
    completion: str
    record: Mapping[str, Any]  # the training record (final_answer, meta, …)
    n_tokens: int  # completion tokens before the end of turn
    truncated: bool  # no end of turn within the length budget
    max_tokens: int  # the length budget


def answer_type(record: Mapping[str, Any]) -> str:
    """The record's `answer_type`, or (training traces carry none) the type its final answer reads as."""
    if record.get("answer_type"):
        return record["answer_type"]
    answer = str(record["final_answer"])
    if parse_bool(answer) is not None:
        return "bool"
    return "number" if parse_number(answer) is not None else "text"


def expected_answer(record: Mapping[str, Any]) -> str:
    """Eval items name it `expected_answer`, training traces `final_answer`."""
    return str(record["expected_answer"] if "expected_answer" in record else record["final_answer"])


def format_reward(r: Rollout) -> float:
    """1 when the whole completion is exactly one reasoning block then one answer block (as evaluate reads it)."""
    return 1.0 if parse_completion(r.completion)["format_ok"] else 0.0


def _score(r: Rollout, rel_tolerance: float, partial_within: float) -> tuple[bool, bool]:
    answer = parse_completion(r.completion)["answer"]
    return score_answer(
        answer,
        expected_answer(r.record),
        answer_type(r.record),
        rel_tolerance,
        partial_within,
        choices=r.record.get("choices"),
    )


def correctness_reward(r: Rollout, rel_tolerance: float, partial_within: float) -> float:
    """1 when the parsed answer is right by evaluate's scoring, else 0."""
    return 1.0 if _score(r, rel_tolerance, partial_within)[0] else 0.0


def partial_reward(r: Rollout, rel_tolerance: float, partial_within: float) -> float:
    """1 when the answer is right or (numbers) within `partial_within` of it: evaluate's partial accuracy."""
    return 1.0 if _score(r, rel_tolerance, partial_within)[1] else 0.0


def overlength_penalty(r: Rollout, buffer: int) -> float:
    """-1 for a truncated completion; within the last `buffer` tokens of the budget, a linear ramp 0 → -1 (DAPO)."""
    if r.truncated:
        return -1.0
    start = r.max_tokens - buffer
    if buffer <= 0 or r.n_tokens <= start:
        return 0.0
    return -min(1.0, (r.n_tokens - start) / buffer)


def working_reward(r: Rollout, rel_tolerance: float, credit: str = "share") -> float:
    """In [0, 1]: the share of the reasoning's arithmetic claims that hold (`share`), or of those before the
    first false one (`prefix`); 0 when there is no reasoning block or nothing in it is checkable."""
    working = check(parse_completion(r.completion)["reasoning"], rel_tolerance)
    if credit not in WORKING_CREDITS:
        raise RewardError(f"grpo.working_credit: {credit!r} (expected one of {', '.join(WORKING_CREDITS)})")
    return working.share if credit == "share" else working.prefix


def judge_reward(r: Rollout, judge: Judge | None) -> float:
    """In [0, 1]: the rubric judge's score of the completion against the record's `rubric` (or the default
    rubric); 0 for a gated completion, and for a failed judgment, which the judge counts (`judge.failed`).
    A judge that cannot be asked (endpoint down) stops the run."""
    if judge is None:
        raise RewardError("grpo.rewards.judge: no judge configured (params judge)")
    try:
        rubric = parse_rubric(r.record.get("rubric"), f"record {r.record.get('id')!r} rubric")
        (judgment,) = judge.judge([Task(r.prompt, r.completion, rubric)])
    except JudgeError as err:
        raise RewardError(str(err)) from None
    return judgment["score"] if judgment["score"] is not None else 0.0


def load_user_reward(spec: str, search_path: Sequence[Path] = ()) -> Callable[..., float]:
    """The function a `module:function` spec names; modules are looked up in `search_path` first."""
    module_name, sep, func_name = spec.partition(":")
    if not sep or not module_name or not func_name:
        raise RewardError(f"user reward {spec!r}: expected module:function")
    for folder in reversed([str(Path(p).absolute()) for p in search_path]):
        if folder not in sys.path:
            sys.path.insert(0, folder)
    try:
        module = importlib.import_module(module_name)
    except Exception as err:  # ImportError, or the module itself fails on import
        raise RewardError(f"user reward {spec}: cannot import {module_name} ({type(err).__name__}: {err})") from None
    fn = getattr(module, func_name, None)
    if not callable(fn):
        raise RewardError(f"user reward {spec}: {module_name} has no function {func_name}")
    return fn


def call_user_reward(spec: str, fn: Callable[..., float], r: Rollout) -> float:
    """`fn(prompt=…, completion=…, **record fields)`; anything but a finite number is a RewardError."""
    fields = {k: v for k, v in r.record.items() if k not in ("prompt", "completion")}
    try:
        value = fn(prompt=r.prompt, completion=r.completion, **fields)
    except Exception as err:
        raise RewardError(f"user reward {spec} raised {type(err).__name__}: {err}") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise RewardError(
            f"user reward {spec} returned {value!r} for record {r.record.get('id')!r}; expected a finite number"
        )
    return float(value)


@dataclasses.dataclass
class RewardSet:
    """The weighted reward parts of a run: the built-ins with a non-zero weight, then the user rewards."""

    weights: Mapping[str, float]  # built-in part -> weight
    user: Mapping[str, float]  # module:function -> weight
    rel_tolerance: float
    partial_within: float
    overlength_buffer: int = 0
    search_path: Sequence[Path] = ()
    working_credit: str = "share"  # share | prefix (working_reward)
    judge: Judge | None = None  # the rubric judge (judge_reward), needed when the `judge` weight is not 0

    def __post_init__(self) -> None:
        unknown = sorted(set(self.weights) - set(BUILTIN))
        if unknown:
            raise RewardError(f"unknown reward {unknown[0]!r} (built-ins: {', '.join(BUILTIN)})")
        if self.working_credit not in WORKING_CREDITS:
            raise RewardError(
                f"grpo.working_credit: {self.working_credit!r} (expected one of {', '.join(WORKING_CREDITS)})"
            )
        self._user_fns = {spec: load_user_reward(spec, self.search_path) for spec in self.user}

    @property
    def parts(self) -> list[str]:
        return [name for name in BUILTIN if self.weights.get(name)] + list(self.user)

    def part(self, name: str, r: Rollout) -> float:
        if name == "format":
            return format_reward(r)
        if name == "correctness":
            return correctness_reward(r, self.rel_tolerance, self.partial_within)
        if name == "partial":
            return partial_reward(r, self.rel_tolerance, self.partial_within)
        if name == "overlength":
            return overlength_penalty(r, self.overlength_buffer)
        if name == "judge":
            return judge_reward(r, self.judge)
        if name == "working":
            return working_reward(r, self.rel_tolerance, self.working_credit)
        return call_user_reward(name, self._user_fns[name], r)

    def score(self, r: Rollout) -> tuple[float, dict[str, float]]:
        """(weighted total, each part's unweighted value) for one rollout."""
        values = {name: self.part(name, r) for name in self.parts}
        weight = lambda name: self.user[name] if name in self.user else self.weights[name]
        return sum(weight(n) * v for n, v in values.items()), values
