"""The RL rewards on hand-made completions: format, correctness and partial credit by evaluate's scoring,
the over-length penalty, user rewards from a module of their own, and the one-line errors of bad ones."""

from __future__ import annotations

import math

import pytest

from reasoning.rewards import (
    RewardError,
    RewardSet,
    Rollout,
    answer_type,
    correctness_reward,
    format_reward,
    load_user_reward,
    overlength_penalty,
    partial_reward,
)
from reasoning.scoring import score_answer

RECORD = {
    "id": "rate-000007",
    "prompt": "A car drives 40 km/h for 3 hours. How far?",
    "final_answer": "120",
    "steps": [],
    "meta": {"category": "rate", "difficulty": "easy"},
}
TOL, PARTIAL = 1e-6, 0.10


def rollout(completion: str, record: dict = RECORD, n_tokens: int = 20, truncated: bool = False, budget: int = 64):
    return Rollout(record["prompt"], completion, record, n_tokens, truncated, budget)


@pytest.mark.parametrize(
    "completion, expected",
    [
        ("<reasoning>40 × 3 = 120</reasoning><answer>120</answer>", 1.0),
        ("  <reasoning>40 × 3 = 120</reasoning>\n<answer>120</answer>\n", 1.0),  # whitespace around is fine
        ("<reasoning>40 × 3 = 120</reasoning>", 0.0),  # no answer
        ("<answer>120</answer>", 0.0),  # no reasoning
        ("So: <reasoning>40 × 3</reasoning><answer>120</answer>", 0.0),  # text outside the blocks
        ("<reasoning>a</reasoning><answer>1</answer><answer>120</answer>", 0.0),  # two answers
        ("<reasoning> </reasoning><answer>120</answer>", 0.0),  # empty reasoning
        ("<answer>120</answer><reasoning>40 × 3</reasoning>", 0.0),  # wrong order
        ("<reasoning>40 × 3 = 120</reasoning><answer>120", 0.0),  # cut off
    ],
)
def test_format_reward(completion, expected):
    assert format_reward(rollout(completion)) == expected


@pytest.mark.parametrize(
    "answer, correct, partial",
    [
        ("120", 1.0, 1.0),
        ("120.0", 1.0, 1.0),
        ("120 km", 1.0, 1.0),  # a unit word, as evaluate reads it
        ("110", 0.0, 1.0),  # within 10 %
        ("108", 0.0, 1.0),  # exactly 10 % off
        ("107", 0.0, 0.0),
        ("about 120", 0.0, 0.0),  # not one number
        ("", 0.0, 0.0),
    ],
)
def test_correctness_and_partial_credit_agree_with_evaluate(answer, correct, partial):
    r = rollout(f"<reasoning>40 × 3</reasoning><answer>{answer}</answer>")
    assert correctness_reward(r, TOL, PARTIAL) == correct
    assert partial_reward(r, TOL, PARTIAL) == partial
    assert (correct, partial) == tuple(float(x) for x in score_answer(answer or None, "120", "number", TOL, PARTIAL))


def test_an_answer_outside_a_well_formed_completion_still_scores_as_evaluate_reads_it():
    # evaluate parses the last complete answer block whatever surrounds it; the reward must agree
    r = rollout("Let me think. <answer>120</answer> done")
    assert correctness_reward(r, TOL, PARTIAL) == 1.0 and format_reward(r) == 0.0


@pytest.mark.parametrize(
    "final_answer, kind, right, wrong",
    [
        ("yes", "bool", "Yes", "no"),
        ("3/4", "number", "0.75", "3/5"),
        ("-12.5", "number", "-12.50", "12.5"),
        ("olleh", "text", "OLLEH", "hello"),
    ],
)
def test_answer_type_is_read_from_the_training_answer(final_answer, kind, right, wrong):
    record = dict(RECORD, final_answer=final_answer)
    assert answer_type(record) == kind
    assert correctness_reward(rollout(f"<reasoning>x</reasoning><answer>{right}</answer>", record), TOL, PARTIAL) == 1
    assert correctness_reward(rollout(f"<reasoning>x</reasoning><answer>{wrong}</answer>", record), TOL, PARTIAL) == 0


def test_an_eval_item_keeps_its_own_answer_type():
    item = {"id": "edge-001", "prompt": "Write 3/4.", "expected_answer": "3/4", "answer_type": "fraction"}
    assert answer_type(item) == "fraction"
    assert correctness_reward(rollout("<reasoning>x</reasoning><answer>6/8</answer>", item), TOL, PARTIAL) == 1.0


def test_overlength_penalty():
    assert overlength_penalty(rollout("x", n_tokens=64, truncated=True), buffer=0) == -1.0
    assert overlength_penalty(rollout("x", n_tokens=63), buffer=0) == 0.0
    # DAPO's soft penalty: a linear ramp over the last `buffer` tokens of the budget
    assert overlength_penalty(rollout("x", n_tokens=48), buffer=16) == 0.0
    assert overlength_penalty(rollout("x", n_tokens=56), buffer=16) == -0.5
    assert overlength_penalty(rollout("x", n_tokens=64, truncated=True), buffer=16) == -1.0


def test_reward_set_weights_each_part():
    rewards = RewardSet({"format": 0.5, "correctness": 1.0, "partial": 0.25, "overlength": 0.0}, {}, TOL, PARTIAL)
    assert rewards.parts == ["format", "correctness", "partial"]  # a zero weight is off
    total, parts = rewards.score(rollout("<reasoning>40 × 3</reasoning><answer>110</answer>"))
    assert parts == {"format": 1.0, "correctness": 0.0, "partial": 1.0}
    assert total == 0.5 + 0.25
    total, _ = rewards.score(rollout("<reasoning>40 × 3</reasoning><answer>120</answer>"))
    assert total == 1.75


USER_MODULE = """
CALLS = []


def exact_length(prompt, completion, final_answer, meta, **fields):
    CALLS.append({"prompt": prompt, "completion": completion, "final_answer": final_answer, "meta": meta, **fields})
    return -0.01 * len(completion)


def boom(prompt, completion, **fields):
    raise KeyError("steps")


def nan(prompt, completion, **fields):
    return math.nan


def words(prompt, completion, **fields):
    return "good"


import math
"""


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    """A reward module in a temporary folder (a fresh name each test: no cached import)."""
    name = f"user_rewards_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{name}.py").write_text(USER_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))  # undone after the test
    return name, tmp_path


def test_a_user_reward_is_called_with_the_prompt_completion_and_record_fields(user_module):
    name, folder = user_module
    rewards = RewardSet({"format": 1.0}, {f"{name}:exact_length": 2.0}, TOL, PARTIAL, search_path=[folder])
    completion = "<reasoning>40 × 3</reasoning><answer>120</answer>"
    total, parts = rewards.score(rollout(completion))
    assert parts == {"format": 1.0, f"{name}:exact_length": pytest.approx(-0.01 * len(completion))}
    assert total == pytest.approx(1.0 - 0.02 * len(completion))
    calls = __import__(name).CALLS
    assert calls == [
        {
            "prompt": RECORD["prompt"],
            "completion": completion,
            "final_answer": "120",
            "meta": RECORD["meta"],
            "id": RECORD["id"],
            "steps": [],
        }
    ]


@pytest.mark.parametrize(
    "func, message",
    [
        ("boom", "raised KeyError: 'steps'"),
        ("nan", "returned nan for record 'rate-000007'; expected a finite number"),
        ("words", "returned 'good'"),
    ],
)
def test_a_bad_user_reward_is_a_one_line_error_naming_it(user_module, func, message):
    name, folder = user_module
    rewards = RewardSet({}, {f"{name}:{func}": 1.0}, TOL, PARTIAL, search_path=[folder])
    with pytest.raises(RewardError) as err:
        rewards.score(rollout("<reasoning>x</reasoning><answer>1</answer>"))
    text = str(err.value)
    assert f"user reward {name}:{func}" in text and message in text and "\n" not in text


@pytest.mark.parametrize(
    "spec, message",
    [
        ("no_such_module_xyz:fn", "cannot import no_such_module_xyz (ModuleNotFoundError"),
        ("math:no_such_function", "math has no function no_such_function"),
        ("math", "expected module:function"),
    ],
)
def test_an_unloadable_user_reward_is_a_one_line_error(spec, message):
    with pytest.raises(RewardError, match=None) as err:
        load_user_reward(spec)
    assert message in str(err.value) and spec.split(":")[0] in str(err.value) and "\n" not in str(err.value)


def test_rewards_are_finite_numbers():
    rewards = RewardSet({"format": 1.0, "correctness": 1.0, "partial": 1.0, "overlength": 1.0}, {}, TOL, PARTIAL)
    for completion in ("", "<answer>", "<reasoning></reasoning><answer></answer>", "\x00" * 5):
        total, parts = rewards.score(rollout(completion, truncated=True))
        assert math.isfinite(total) and all(math.isfinite(v) for v in parts.values())
