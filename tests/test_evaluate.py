"""The evaluate stage on small fixture files in tmp_path."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from stages import evaluate, paths
from stages.common import StageError, sha256_file

REPO = Path(__file__).resolve().parent.parent
SETS = {"tunix": {"path": "evalsets/tunix_eval_v1.jsonl", "format": "items", "primary": True}}
PARAMS = {"evaluate": {"rel_tolerance": 1e-6, "partial_within": 0.10, "sets": SETS}}
METRICS, SCORECARD, PREDICTIONS_FILE = (
    paths.set_metrics("tunix"),
    paths.set_scorecard("tunix"),
    paths.predictions("tunix"),
)


def item(id_, expected, answer_type, section="core", category="arithmetic", difficulty="easy"):
    return {
        "id": id_,
        "prompt": f"question {id_}?",
        "expected_answer": expected,
        "section": section,
        "category": category,
        "difficulty": difficulty,
        "answer_type": answer_type,
    }


def pred(id_, completion, n_tokens=10, truncated=False):
    from reasoning.answers import parse_completion

    parsed = parse_completion(completion)
    return {"id": id_, "completion": completion, **parsed, "n_tokens": n_tokens, "truncated": truncated}


ITEMS = [
    item("core-001", "42", "number"),
    item("core-002", "3/4", "fraction", category="percentage", difficulty="medium"),
    item("trace-001", "100", "number", section="trace_sensitive", category="rate", difficulty="hard"),
    item("edge-001", "Paris", "text", section="edge_case", category="string", difficulty="hard"),
    item("edge-002", "yes", "bool", section="edge_case", category="comparison", difficulty="medium"),
]
PREDICTIONS = [
    pred("core-001", "<reasoning>6*7=42</reasoning><answer>42</answer>", 10),
    pred("core-002", "<reasoning>3 of 4</reasoning><answer>0.75</answer>", 20),
    pred("trace-001", "<reasoning>about</reasoning><answer>95</answer>", 30),  # partial only
    pred("edge-001", "The answer is Paris", 40, truncated=True),  # no tags: unscored
    pred("edge-002", "<reasoning>yes</reasoning><answer>Yes</answer>", 50),
]


def write_jsonl(path: Path, records) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def make_root(root: Path, items=ITEMS, predictions=PREDICTIONS) -> Path:
    write_jsonl(root / paths.EVALSET, items)
    write_jsonl(root / PREDICTIONS_FILE, predictions)
    return root


def test_metrics_and_scorecard(tmp_path):
    metrics = evaluate.run(PARAMS, "tunix", make_root(tmp_path))
    # under the set's name: dvc exp show calls the column tunix.primary_score
    assert json.loads((tmp_path / METRICS).read_text()) == {"tunix": metrics}
    assert metrics == {
        "primary_score": 0.6,
        "format_accuracy": 0.8,
        "partial_accuracy": 0.8,
        "n_items": 5,
        "n_scored": 4,
        "truncated_rate": 0.2,
        "trace_tokens": {"mean": 30.0, "median": 30.0, "max": 50},
        "section": {"core": 1.0, "trace_sensitive": 0.0, "edge_case": 0.5},
        "working": {
            "claim_accuracy": 1.0,
            "checkable_share": 0.2,
            "consistency": 1.0,
            "right_over_false": 0,
            "wrong_over_true": 0,
            "n_claims": 1,
            "n_false_claims": 0,
        },
    }
    card = json.loads((tmp_path / SCORECARD).read_text())
    assert card["eval_set"] == {
        "name": "tunix",
        "path": "evalsets/tunix_eval_v1.jsonl",
        "format": "items",
        "sha256": sha256_file(tmp_path / paths.EVALSET),
        "n_items": 5,
    }
    assert [r["id"] for r in card["items"]] == [i["id"] for i in ITEMS]
    rows = {r["id"]: r for r in card["items"]}
    assert rows["core-002"]["answer"] == "0.75" and rows["core-002"]["correct"]
    assert rows["trace-001"]["partial"] and not rows["trace-001"]["correct"]
    assert rows["edge-001"]["answer"] is None and rows["edge-001"]["truncated"] and not rows["edge-001"]["format_ok"]
    assert card["breakdowns"]["section"]["edge_case"] == {
        "n": 2,
        "accuracy": 0.5,
        "format_accuracy": 0.5,
        "partial_accuracy": 0.5,
    }
    assert card["breakdowns"]["difficulty"]["hard"]["accuracy"] == 0.0
    assert set(card["breakdowns"]["category"]) == {"arithmetic", "percentage", "rate", "string", "comparison"}


def test_outputs_are_deterministic_bytes(tmp_path):
    root = make_root(tmp_path)
    evaluate.run(PARAMS, "tunix", root)
    first = [(root / p).read_bytes() for p in (METRICS, SCORECARD)]
    evaluate.run(PARAMS, "tunix", root)
    assert [(root / p).read_bytes() for p in (METRICS, SCORECARD)] == first
    assert first[0].endswith(b"\n")


def test_answer_is_reparsed_from_the_completion(tmp_path):
    tampered = [dict(p, answer="42", format_ok=True) if p["id"] == "edge-001" else p for p in PREDICTIONS]
    metrics = evaluate.run(PARAMS, "tunix", make_root(tmp_path, predictions=tampered))
    assert metrics["n_scored"] == 4 and metrics["format_accuracy"] == 0.8


def test_nothing_scored_gives_null_primary_score(tmp_path):
    preds = [pred(p["id"], "", n_tokens=0) for p in PREDICTIONS]
    metrics = evaluate.run(PARAMS, "tunix", make_root(tmp_path, predictions=preds))
    assert metrics["primary_score"] is None and metrics["n_scored"] == 0
    assert metrics["section"] == {"core": None, "trace_sensitive": None, "edge_case": None}
    assert metrics["format_accuracy"] == 0.0


def test_completions_without_an_answer_score_zero(tmp_path):
    preds = [pred(p["id"], "no idea") for p in PREDICTIONS]
    metrics = evaluate.run(PARAMS, "tunix", make_root(tmp_path, predictions=preds))
    assert metrics["primary_score"] == 0.0 and metrics["n_scored"] == 0
    assert metrics["format_accuracy"] == 0.0


def test_section_without_items_is_null(tmp_path):
    metrics = evaluate.run(PARAMS, "tunix", make_root(tmp_path, ITEMS[:2], PREDICTIONS[:2]))
    assert metrics["section"] == {"core": 1.0, "trace_sensitive": None, "edge_case": None}


def test_missing_prediction_names_file_and_id(tmp_path):
    make_root(tmp_path, predictions=PREDICTIONS[:3] + PREDICTIONS[4:])
    with pytest.raises(StageError, match=r"predictions/tunix\.jsonl: id: no prediction for eval item 'edge-001'.*:4\)"):
        evaluate.run(PARAMS, "tunix", tmp_path)
    assert not (tmp_path / METRICS).exists()


def test_unknown_prediction_names_line(tmp_path):
    make_root(tmp_path, predictions=PREDICTIONS + [pred("stray", "x")])
    with pytest.raises(StageError, match=r"predictions/tunix\.jsonl:6: id: 'stray' is not an item"):
        evaluate.run(PARAMS, "tunix", tmp_path)


def test_duplicate_prediction_refused(tmp_path):
    make_root(tmp_path, predictions=PREDICTIONS + [PREDICTIONS[0]])
    with pytest.raises(StageError, match=r"predictions/tunix\.jsonl:6: id: duplicate id 'core-001'"):
        evaluate.run(PARAMS, "tunix", tmp_path)


def test_bad_prediction_record_names_line_and_field(tmp_path):
    bad = [dict(p, n_tokens="ten") if p["id"] == "core-002" else p for p in PREDICTIONS]
    make_root(tmp_path, predictions=bad)
    with pytest.raises(StageError, match=r"predictions/tunix\.jsonl:2: n_tokens: 'ten' is not of type 'integer'"):
        evaluate.run(PARAMS, "tunix", tmp_path)


def test_bad_eval_item_names_line_and_field(tmp_path):
    items = [dict(i, difficulty="extreme") if i["id"] == "trace-001" else i for i in ITEMS]
    make_root(tmp_path, items=items)
    with pytest.raises(StageError, match=r"tunix_eval_v1\.jsonl:3: difficulty: 'extreme' is not one of"):
        evaluate.run(PARAMS, "tunix", tmp_path)


def test_unreadable_expected_answer_names_line_and_field(tmp_path):
    # The eval_item schema already refuses such an item; scoring still guards against it.
    items = [dict(i, expected_answer="forty-two") if i["id"] == "core-001" else i for i in ITEMS]
    root = make_root(tmp_path, items=items)
    eval_path, pred_path = root / paths.EVALSET, root / PREDICTIONS_FILE
    with pytest.raises(StageError, match=r"tunix_eval_v1\.jsonl:1: expected_answer: .*not a number"):
        evaluate.score_predictions(items, PREDICTIONS, PARAMS["evaluate"], eval_path, pred_path)


def test_cli_error_is_one_line_and_exit_1(tmp_path):
    (tmp_path / "params.yaml").write_text((REPO / "params.yaml").read_text())
    env = dict(os.environ, PYTHONPATH=str(REPO))
    for args, message in (
        (["tunix"], f"{paths.EVALSET}: file not found (params.yaml:"),
        ([], "evaluate: usage: python -m stages.evaluate <eval set name from evaluate.sets>"),
    ):
        proc = subprocess.run(
            [sys.executable, "-m", "stages.evaluate", *args], cwd=tmp_path, env=env, capture_output=True, text=True
        )
        assert proc.returncode == 1
        assert proc.stderr.startswith(f"error: {message}") and proc.stderr.count("\n") == 1, proc.stderr
    shutil.copytree(REPO / paths.EVALSETS, tmp_path / paths.EVALSETS)
    proc = subprocess.run(
        [sys.executable, "-m", "stages.evaluate", "nope"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert proc.stderr.startswith("error: params.yaml:")
    assert "evaluate.sets: no set named 'nope' (configured: tunix, gsm8k, bbh, aqua)" in proc.stderr


def test_gsm8k_format_eval_set(tmp_path):
    """A GSM8K test file scored as an eval set: its `#### answer` is the expected answer."""
    rows = [
        {"question": "Tom has 3 bags of 4 apples. How many apples?", "answer": "3*4 = <<3*4=12>>12\n#### 12"},
        {
            "question": "Ann reads 1,000 pages in 4 days. How many a day?",
            "answer": "1000/4 = <<1000/4=250>>250\n#### 250",
        },
    ]
    write_jsonl(tmp_path / "evalsets/gsm8k_test.jsonl", rows)
    write_jsonl(
        tmp_path / paths.predictions("gsm8k_test"),
        [
            pred("core-001", "<reasoning>3 × 4 = 12</reasoning><answer>12</answer>"),
            pred("core-002", "<reasoning>1000 / 4 = 200</reasoning><answer>200</answer>"),
        ],
    )
    params = {
        "evaluate": {
            **PARAMS["evaluate"],
            "sets": {**SETS, "gsm8k_test": {"path": "evalsets/gsm8k_test.jsonl", "format": "gsm8k"}},
        }
    }
    make_root(tmp_path)
    metrics = evaluate.run(params, "gsm8k_test", tmp_path)
    assert metrics["primary_score"] == 0.5 and metrics["n_items"] == 2 and metrics["section"]["core"] == 0.5
    # 1000 / 4 = 200: the answer follows the working, and the working is false
    assert metrics["working"] == {
        "claim_accuracy": 0.5,
        "checkable_share": 1.0,
        "consistency": 1.0,
        "right_over_false": 0,
        "wrong_over_true": 0,
        "n_claims": 2,
        "n_false_claims": 1,
    }
    card = json.loads((tmp_path / paths.set_scorecard("gsm8k_test")).read_text())
    assert card["eval_set"]["format"] == "gsm8k" and [r["expected"] for r in card["items"]] == ["12", "250"]
    write_jsonl(tmp_path / paths.predictions("gsm8k_test"), [pred("core-001", "x")])
    with pytest.raises(StageError) as err:
        evaluate.run(params, "gsm8k_test", tmp_path)
    assert str(err.value).endswith(
        f"id: no prediction for eval item 'core-002' ({tmp_path / 'evalsets/gsm8k_test.jsonl'})"
    )


def test_working_metrics_on_hand_made_predictions(tmp_path):
    """Right over false working, wrong over true working, consistency, and the first false claim quoted."""
    items = [
        item("core-101", "623", "number"),
        item("core-102", "48", "number"),
        item("core-103", "15", "number"),
        item("core-104", "yes", "bool", category="comparison"),
        item("core-105", "7", "number"),
    ]
    preds = [
        # right answer, false working (the column fact drops its carry)
        pred("core-101", "<reasoning>345 + 278: 5+8=13, 4+7=11, 3+2+1=6, so 623</reasoning><answer>623</answer>"),
        # wrong answer over working that is all true: the plan was wrong (12 × 3 instead of 12 × 4)
        pred("core-102", "<reasoning>12 × 3 = 36</reasoning><answer>36</answer>"),
        # the answer is not the value the working ends with (and wrong over true working too)
        pred("core-103", "<reasoning>10 + 5 = 15</reasoning><answer>16</answer>"),
        # checkable, but a yes/no item is not asked for consistency
        pred("core-104", "<reasoning>8 < 42</reasoning><answer>yes</answer>"),
        # nothing checkable
        pred("core-105", "<reasoning>seven it is</reasoning><answer>7</answer>"),
    ]
    metrics = evaluate.run(PARAMS, "tunix", make_root(tmp_path, items, preds))
    assert metrics["working"] == {
        "claim_accuracy": round(6 / 7, 6),
        "checkable_share": 0.8,
        "consistency": round(2 / 3, 6),
        "right_over_false": 1,
        "wrong_over_true": 2,
        "n_claims": 7,
        "n_false_claims": 1,  # w-2 and w-3
    }
    rows = {r["id"]: r["working"] for r in json.loads((tmp_path / SCORECARD).read_text())["items"]}
    assert rows["core-101"] == {
        "n_claims": 4,
        "n_false": 1,
        "ends_with": "623",
        "consistent": True,
        "first_false": {"text": "4+7=11", "should": "4+7+1=12", "stated": "11", "expected": "12"},
    }
    assert rows["core-103"]["consistent"] is False and rows["core-103"]["first_false"] is None
    assert rows["core-104"]["consistent"] is None and rows["core-104"]["n_claims"] == 1
    assert rows["core-105"] == {"n_claims": 0, "n_false": 0, "first_false": None, "ends_with": None, "consistent": None}


# ---------------------------------------------------------------- issue 38: any model output is scored

ISSUE_38 = {  # the completion of core-001 (expected 42) that crashed or hung evaluate, by the issue's item
    "1 division by zero": "<reasoning>675 / 0: 67/0=0 (0) r67, so 0</reasoning><answer>0</answer>",
    "1 a division fact alone": "<reasoning>12/0=0 (0) r12</reasoning><answer>0</answer>",
    "2 a 70-digit operand": f"<reasoning>{'1' * 70} × 10 = 1.5</reasoning><answer>1.5</answer>",
    "3 300 brackets": f"<reasoning>{'(' * 300}1{')' * 300} = 1</reasoning><answer>1</answer>",
    "4 a huge exponent": "<reasoning>6 × 7 = 42</reasoning><answer>1e99999999</answer>",
    "4 a large exponent": "<reasoning>6 × 7 = 42</reasoning><answer>1e9999999</answer>",
    "5 5,000 nines": f"<reasoning>6 × 7 = 42</reasoning><answer>{'9' * 5000}</answer>",
    "6 a lone surrogate": "<reasoning>6 × 7 = 42</reasoning><answer>306\ud800</answer>",
    "a NUL byte": "<reasoning>6 × 7 = 42\x00</reasoning><answer>4\x002</answer>",
}


@pytest.mark.parametrize("completion", ISSUE_38.values(), ids=ISSUE_38.keys())
def test_issue_38_model_output_is_scored_as_wrong_not_crashed_on(tmp_path, completion):
    preds = [pred("core-001", completion) if p["id"] == "core-001" else p for p in PREDICTIONS]
    root = make_root(tmp_path, predictions=preds)
    metrics = evaluate.run(PARAMS, "tunix", root)
    assert metrics["primary_score"] == 0.4 and metrics["section"]["core"] == 0.5  # core-001 wrong, the rest as before
    card = json.loads((root / SCORECARD).read_bytes().decode("utf-8"))  # valid UTF-8, surrogate or not
    row = next(r for r in card["items"] if r["id"] == "core-001")
    assert row["answer"] == pred("core-001", completion)["answer"] and not row["correct"] and not row["partial"]
    assert json.loads((root / METRICS).read_text()) == {"tunix": metrics}


def test_an_unreadable_prediction_is_never_blamed_on_the_eval_set(tmp_path, monkeypatch):
    """Item 5: parse_number's failure on the prediction was reported as the expected answer's. Were
    scoring ever to raise on a prediction again, the item is wrong; only the expected answer's own
    failure names the eval set."""
    real = evaluate.score_answer

    def raising_on_predictions(predicted, expected, *args, **kw):
        if predicted is not None:
            raise ValueError("Exceeds the limit (4300 digits) for integer string conversion")
        return real(predicted, expected, *args, **kw)

    monkeypatch.setattr(evaluate, "score_answer", raising_on_predictions)
    metrics = evaluate.run(PARAMS, "tunix", make_root(tmp_path))
    assert metrics["primary_score"] == 0.0 and metrics["n_scored"] == 4


# ---------------------------------------------------------------- all outputs or none


def test_reports_are_replaced_together_or_not_at_all(tmp_path, monkeypatch):
    """Item 6: metrics.json was replaced, then writing scorecard.json failed: the reports disagreed.
    A failure while writing the second report, or while making either, leaves both as they were."""
    root = make_root(tmp_path)
    evaluate.run(PARAMS, "tunix", root)
    before = {p: (root / p).read_bytes() for p in (METRICS, SCORECARD)}
    changed = [
        dict(p, completion="<reasoning>6 × 7 = 42</reasoning><answer>41</answer>") if p["id"] == "core-001" else p
        for p in PREDICTIONS
    ]
    make_root(tmp_path, predictions=changed)

    writes = []
    real_write = Path.write_bytes

    def fail_second_write(self, data):
        writes.append(self.name)
        if len(writes) == 2:
            raise OSError(28, "No space left on device")
        return real_write(self, data)

    monkeypatch.setattr(Path, "write_bytes", fail_second_write)
    with pytest.raises(OSError, match="No space left"):
        evaluate.run(PARAMS, "tunix", root)
    assert writes == [METRICS.name, SCORECARD.name]  # the first was written (to its temporary) before the failure
    monkeypatch.undo()
    assert {p: (root / p).read_bytes() for p in before} == before

    real_summarize = evaluate.summarize

    def unserialisable_scorecard(rows, eval_set):  # the last computation fails
        metrics, scorecard = real_summarize(rows, eval_set)
        return metrics, {**scorecard, "oops": object()}

    monkeypatch.setattr(evaluate, "summarize", unserialisable_scorecard)
    with pytest.raises(TypeError):
        evaluate.run(PARAMS, "tunix", root)
    assert {p: (root / p).read_bytes() for p in before} == before
    assert sorted(p.name for p in (root / METRICS).parent.iterdir()) == sorted(p.name for p in before)  # no temporaries
    monkeypatch.undo()
    assert evaluate.run(PARAMS, "tunix", root)["primary_score"] == 0.4  # and the next good run replaces both
