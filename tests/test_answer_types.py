"""The answer types beyond numbers: multiple choice, yes/no, phrases, exact strings and math (math-verify),
on hand-written edge cases and on real items of the committed BIG-Bench Hard sample; and evaluate and the
GRPO reward giving the same verdict on the same completion."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import pytest

from reasoning import mathexpr, textual
from reasoning.rewards import Rollout, correctness_reward
from reasoning.scoring import ANSWER_TYPES, score_answer
from stages import evalsets
from stages.common import load_params
from stages.evaluate import score_predictions

ROOT = Path(__file__).resolve().parent.parent
TOL, PARTIAL = 1e-6, 0.10
CITIES = ["Paris", "London", "Rome", "The Hague"]


def verdict(predicted, expected, answer_type, choices=None) -> bool:
    correct, partial = score_answer(predicted, expected, answer_type, TOL, PARTIAL, choices=choices)
    assert partial == correct  # no partial credit outside numbers
    return correct


@pytest.fixture(scope="module")
def bbh() -> list[dict]:
    return evalsets.load_items(evalsets.named(load_params(path=ROOT / "params.yaml"), "bbh", ROOT), ROOT)


# ---------------------------------------------------------------- multiple choice


@pytest.mark.parametrize(
    "answer",
    [
        "B",
        "b",
        "(B)",
        "B)",
        "B.",
        "(b)",
        " (B) ",
        "London",
        "london.",
        "“London”",
        "(B) London",
        "B) London",
        "B. London",
        "B: london",
    ],
)
def test_choice_right_in_every_dress(answer):
    assert verdict(answer, "(B)", "choice", CITIES)
    assert verdict(answer, "London", "choice", CITIES)  # the expected answer given as the option's text


@pytest.mark.parametrize(
    "answer",
    [
        "A",
        "(C)",
        "Paris",
        "A or B",
        "(A) (B)",
        "A, B",
        "AB",
        "Paris or London",
        "London, Paris",
        "(A) London",
        "E",
        "(E)",
        "",
        "   ",
        None,
        "the answer is B",
    ],
)
def test_choice_wrong_two_options_empty_or_out_of_range(answer):
    assert not verdict(answer, "(B)", "choice", CITIES)


def test_choice_option_text_ignores_case_punctuation_not_articles():
    assert verdict("the hague", "D", "choice", CITIES)
    assert not verdict("Hague", "D", "choice", CITIES)  # option text is compared as text, articles kept


def test_choice_expected_must_be_an_option():
    with pytest.raises(ValueError, match="not one of the 4 choices"):
        verdict("A", "(E)", "choice", CITIES)
    with pytest.raises(ValueError, match="not one of the 4 choices"):
        verdict("A", "Berlin", "choice", CITIES)
    with pytest.raises(ValueError, match="needs its choices"):
        verdict("A", "(A)", "choice", None)


def test_pick_returns_the_option_index():
    assert textual.pick("(C)", CITIES) == 2
    assert textual.pick("c) rome", CITIES) == 2
    assert textual.pick("(C) Paris", CITIES) is None  # the letter and the text disagree: two options named
    assert textual.pick("x", CITIES) is None


# ---------------------------------------------------------------- yes/no, phrase, exact


@pytest.mark.parametrize(
    ("answer", "expected", "right"),
    [
        ("Yes", "yes", True),
        ("yes.", "Yes", True),
        ("No", "yes", False),
        ("True", "true", True),
        ("false", "True", False),
        ("yes and no", "yes", False),
        ("", "no", False),
        (None, "no", False),
    ],
)
def test_yes_no(answer, expected, right):
    assert verdict(answer, expected, "bool") is right


@pytest.mark.parametrize(
    ("answer", "expected", "right"),
    [
        ("The Eiffel Tower", "eiffel tower", True),
        ("an apple.", "Apple", True),
        ("“A” cat!", "cat", True),
        ("Eiffel", "eiffel tower", False),
        ("", "cat", False),
        (None, "cat", False),
    ],
)
def test_phrase_drops_case_punctuation_and_articles(answer, expected, right):
    assert verdict(answer, expected, "phrase") is right


def test_phrase_expected_empty_after_normalisation_is_an_error():
    with pytest.raises(ValueError, match="empty after normalisation"):
        verdict("x", "The", "phrase")


@pytest.mark.parametrize(
    ("answer", "right"), [("] } ]", True), ("]  }\n]", True), ("] ] }", False), ("]}]", False), ("", False)]
)
def test_exact_keeps_punctuation(answer, right):
    assert verdict(answer, "] } ]", "exact") is right


# ---------------------------------------------------------------- math (math-verify)


@pytest.mark.parametrize(
    ("answer", "expected", "right"),
    [
        (r"\frac{1}{2}", "0.5", True),
        ("0.5", r"\frac{1}{2}", True),
        ("1/2", r"\frac{1}{2}", True),
        (r"$\frac{2}{4}$", "0.5", True),
        (r"\boxed{0.5}", r"\frac12", True),
        ("1+x^2", "x^2+1", True),
        (r"\sqrt 2", r"\sqrt{2}", True),
        ("0.51", r"\frac{1}{2}", False),
        ("x^2-1", "x^2+1", False),
        ("", r"\frac{1}{2}", False),
        (None, "0.5", False),
        ("no idea", "0.5", False),
    ],
)
def test_math(answer, expected, right):
    assert verdict(answer, expected, "math") is right


def test_math_expected_that_is_not_math_is_an_error():
    with pytest.raises(ValueError, match="not a math expression"):
        verdict("1", "", "math")


def test_math_outside_the_main_thread():
    """math-verify's own timeout is signal.alarm, main thread only; ours works from any thread."""
    out: list[bool] = []
    worker = threading.Thread(target=lambda: out.append(verdict(r"\frac{3}{4}", "0.75", "math")))
    worker.start()
    worker.join(60)
    assert out == [True]


@pytest.mark.parametrize("behaviour", ["time.sleep(600)", "sys.exit(0)", "print('garbled', flush=True)"])
def test_math_a_stuck_or_dead_worker_is_wrong_and_the_next_comparison_works(monkeypatch, behaviour):
    """A worker that never replies (sympy stuck on some text) or dies: wrong after the deadline, not a hang,
    and a fresh worker serves the next comparison."""
    mathexpr.stop()
    script = f"import sys, time; print('ready', flush=True); sys.stdin.readline(); {behaviour}"
    monkeypatch.setattr(mathexpr, "WORKER", [sys.executable, "-c", script])
    start = time.perf_counter()
    assert mathexpr.compare("0.5", r"\frac{1}{2}", timeout=1.0) == (True, False)
    assert time.perf_counter() - start < 10
    monkeypatch.undo()
    assert verdict(r"\frac{1}{2}", "0.5", "math")


def test_unknown_answer_type():
    with pytest.raises(ValueError, match="unknown answer_type 'letter'"):
        verdict("A", "A", "letter")
    assert {"number", "bool", "choice", "phrase", "exact", "math"} <= set(ANSWER_TYPES)


# ---------------------------------------------------------------- real BBH items


def test_bbh_items_score_their_own_answers_right_and_others_wrong(bbh):
    types = {item["answer_type"] for item in bbh}
    assert types == {"choice", "bool", "number", "exact", "text"}
    for item in bbh:
        expected, choices = item["expected_answer"], item.get("choices")
        assert verdict(expected, expected, item["answer_type"], choices), item["id"]
        assert not verdict("", expected, item["answer_type"], choices), item["id"]
        if item["answer_type"] == "choice":
            i = textual.expected_choice(expected, choices)
            assert verdict(choices[i], expected, "choice", choices), item["id"]  # the option's text
            assert verdict(chr(ord("a") + i), expected, "choice", choices), item["id"]  # the bare small letter
            other = (i + 1) % len(choices)
            assert not verdict(f"({chr(ord('A') + other)})", expected, "choice", choices), item["id"]
            assert not verdict("(A) or (B)", expected, "choice", choices), item["id"]  # two options


def test_bbh_real_edge_items(bbh):
    by_task = {}
    for item in bbh:
        by_task.setdefault(item["groups"]["task"], []).append(item)
    assert len(by_task) == 27 and all(len(items) == 5 for items in by_task.values())
    boolean = by_task["boolean_expressions"][0]
    flipped = "False" if boolean["expected_answer"] == "True" else "True"
    assert not verdict(flipped, boolean["expected_answer"], "bool")
    dyck = next(item for item in by_task["dyck_languages"] if " " in item["expected_answer"])
    assert verdict(f" {dyck['expected_answer']} ", dyck["expected_answer"], "exact")
    assert not verdict(dyck["expected_answer"].replace(" ", ""), dyck["expected_answer"], "exact")
    words = by_task["word_sorting"][0]
    assert verdict(words["expected_answer"].upper(), words["expected_answer"], "text")
    assert not verdict(" ".join(reversed(words["expected_answer"].split())), words["expected_answer"], "text")


# ---------------------------------------------------------------- evaluate and the reward agree


def completions(item: dict) -> list[str]:
    """Right, wrong, malformed and empty answers to one item."""
    expected, choices = item["expected_answer"], item.get("choices") or []
    answers = [
        expected,
        expected.lower(),
        "",
        "(A) (B)",
        "yes",
        "0",
        *choices[:2],
        *(f"({chr(ord('A') + i)})" for i in range(min(3, len(choices)))),
    ]
    out = [f"<reasoning>r</reasoning><answer>{a}</answer>" for a in answers]
    return out + ["no tags at all", f"<answer>{expected}</answer>", f"<reasoning>{expected}</reasoning>"]


def test_evaluate_and_reward_give_the_same_verdicts(bbh, tmp_path):
    items = [item for item in bbh for _ in completions(item)]
    texts = [text for item in bbh for text in completions(item)]
    items = [{**item, "id": f"{item['id']}#{k}"} for k, item in enumerate(items)]
    predictions = [
        {"id": item["id"], "completion": text, "n_tokens": 1, "truncated": False}
        for item, text in zip(items, texts, strict=True)
    ]
    params = {"rel_tolerance": TOL, "partial_within": PARTIAL}
    rows = score_predictions(items, predictions, params, tmp_path / "set.jsonl", tmp_path / "p.jsonl")
    rewards = [
        correctness_reward(Rollout("", text, item, 1, False, 8), TOL, PARTIAL)
        for item, text in zip(items, texts, strict=True)
    ]
    assert [float(row["correct"]) for row in rows] == rewards
    assert 0 < sum(rewards) < len(rewards)  # both verdicts occur


def test_schemas_name_the_answer_types_scoring_knows():
    """Adding an answer type to scoring.ANSWER_TYPES means adding it where params and scorecards name them
    (with `judged`, the set-level type of stages/evalfile.py that only a judge scores)."""
    import json

    from stages.evalfile import JUDGED, SET_ANSWER_TYPES

    assert SET_ANSWER_TYPES == (*ANSWER_TYPES, JUDGED)
    params = json.loads((ROOT / "schemas/params.schema.json").read_text())
    entry = params["properties"]["evaluate"]["properties"]["sets"]["additionalProperties"]["properties"]
    card = json.loads((ROOT / "schemas/scorecard.schema.json").read_text())
    assert entry["answer_type"]["enum"] == list(SET_ANSWER_TYPES)
    assert card["properties"]["items"]["items"]["properties"]["answer_type"]["enum"] == list(SET_ANSWER_TYPES)


def test_any_model_text_is_scored_never_raised():
    """A model's answer is never bad input: random text, huge text, control characters, lone brackets."""
    import random

    rng = random.Random(0)
    alphabet = "AaBb()[]{}<>.,:;!?'\"\\$^_ \n\t0123456789xyz=+-*/" + "\u00e9\u2212\u00bd\u200b"
    texts = ["", " ", "(", ")", "((B", "B" * 10_000, "\x00", "$", "\\frac{", "\\boxed{", "9^9^9^9", "1/0", "nan", "inf"]
    texts += ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 40))) for _ in range(150)]
    golds = {
        "number": "12",
        "fraction": "1/2",
        "bool": "yes",
        "text": "cat",
        "phrase": "the cat",
        "exact": "] }",
        "choice": "(B)",
    }
    for text in texts:
        for answer_type, gold in golds.items():
            verdict(text, gold, answer_type, CITIES if answer_type == "choice" else None)
    for text in texts[:30]:
        verdict(text, r"\frac{1}{2}", "math")
