"""scripts/devset.py headroom: how samples are voted, and the sampled predictions it is built on."""

from __future__ import annotations

from scripts.devset import vote
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
