"""scripts/devset.py: how headroom votes samples, the sampled predictions it is built on, and compare's paired test."""

from __future__ import annotations

import json
import math

import pytest

from scripts.devset import compare, sign_test, vote
from stages.common import read_jsonl
from stages.predict import predict
from tests.test_bad_inputs import EVAL_SET


def test_vote_counts_share_majority_and_any():
    assert vote([("7", True), ("7", True), ("8", False)]) == (2 / 3, True, True)
    # the right answer is a minority: pass@k sees it, maj@k does not
    assert vote([("8", False), ("7", True), ("8", False)]) == (1 / 3, False, True)
    assert vote([("8", False), (None, False)]) == (0.0, False, False)


def test_vote_breaks_a_tie_for_the_answer_sampled_first():
    assert vote([("7", True), ("8", False), ("8", False), ("7", True)])[1] is True
    assert vote([("8", False), ("7", True), ("7", True), ("8", False)])[1] is False


def test_sampled_predictions_follow_the_seed_and_greedy_ignores_it(shared_base):
    items = read_jsonl(shared_base / EVAL_SET)[:6]
    model = shared_base / "data" / "policy"
    run = lambda temperature, seed: [p["completion"] for p in predict(items, model, 4, 8, "float32", temperature, seed)]
    assert run(0.0, 0) == run(0.0, 5) == [p["completion"] for p in predict(items, model, 4, 8, "float32")]
    assert run(1.0, 3) == run(1.0, 3)
    assert run(1.0, 3) != run(1.0, 4)


def test_sign_test_is_the_exact_binomial_tail():
    assert sign_test(0, 0) == 1.0
    assert sign_test(3, 3) == 1.0
    assert sign_test(5, 0) == pytest.approx(2 / 32)  # both tails of 5 fair coins all one way
    assert sign_test(1, 9) == pytest.approx(2 * (1 + 10) / 1024)
    assert sign_test(9, 1) == sign_test(1, 9)
    # by hand from the binomial sum, for a larger count
    assert sign_test(20, 40) == pytest.approx(2 * sum(math.comb(60, i) for i in range(21)) / 2**60)


def write_rows(path, correct):
    path.write_text("".join(json.dumps({"id": f"core-{i:03d}", "correct": c}) + "\n" for i, c in enumerate(correct)))
    return path


def test_compare_pairs_the_same_items(tmp_path):
    a = write_rows(tmp_path / "a.jsonl", [True, True, False, False, True])
    b = write_rows(tmp_path / "b.jsonl", [True, False, True, True, True])
    got = compare(a, b)
    assert got == {
        "n": 5,
        "a": 0.6,
        "b": 0.8,
        "b_minus_a": 0.2,
        "only_a": 1,
        "only_b": 2,
        "sign_test_p": round(sign_test(2, 1), 4),
    }


def test_compare_refuses_rows_of_other_items(tmp_path):
    a = write_rows(tmp_path / "a.jsonl", [True, False])
    b = write_rows(tmp_path / "b.jsonl", [True, False, True])
    with pytest.raises(SystemExit, match="b.jsonl: not the items of"):
        compare(a, b)
