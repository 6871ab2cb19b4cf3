"""Stage `evaluate`: score data/predictions.jsonl against the eval set.

Writes reports/metrics.json (the flat numbers `dvc exp show` compares) and
reports/scorecard.json (every item's score plus breakdowns by section,
category and difficulty). The answer is re-parsed from each raw completion, so
scores depend only on the completions and on reasoning/answers.py + scoring.py.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from reasoning.answers import parse_completion
from reasoning.scoring import score_answer
from stages import paths
from stages.common import StageError, dumps_json, load_params, read_jsonl, run_stage, validate, write_json

SECTIONS = ("core", "trace_sensitive", "edge_case")
GROUPS = ("section", "category", "difficulty")


def _lines_by_id(path: Path) -> dict[Any, int]:
    """id -> 1-based line number (only needed to word an error message)."""
    lines: dict[Any, int] = {}
    for lineno, line in enumerate(path.read_bytes().split(b"\n"), start=1):
        if line.strip():
            lines.setdefault(json.loads(line).get("id"), lineno)
    return lines


def _rate(count: int, n: int) -> float:
    return round(count / n, 6)


def score_predictions(
    items: list[dict], predictions: list[dict], params: dict, eval_path: Path, predictions_path: Path
) -> list[dict]:
    """One scorecard row per eval item, in eval-set order.

    Every eval id must have exactly one prediction and every prediction an
    eval id (duplicates are already refused by read_jsonl).
    """
    by_id = {p["id"]: p for p in predictions}
    eval_ids = {item["id"] for item in items}
    for pred in predictions:
        if pred["id"] not in eval_ids:
            line = _lines_by_id(predictions_path)[pred["id"]]
            raise StageError(f"{predictions_path}:{line}: id: {pred['id']!r} is not an item of {eval_path}")
    rows = []
    for item in items:
        pred = by_id.get(item["id"])
        if pred is None:
            line = _lines_by_id(eval_path)[item["id"]]
            raise StageError(f"{predictions_path}: id: no prediction for eval item {item['id']!r} ({eval_path}:{line})")
        parsed = parse_completion(pred["completion"])
        expected = item["expected_answer"]
        expected = expected if isinstance(expected, str) else json.dumps(expected)  # 42 -> "42", true -> "true"
        try:
            correct, partial = score_answer(
                parsed["answer"], expected, item["answer_type"], params["rel_tolerance"], params["partial_within"]
            )
        except ValueError as err:
            line = _lines_by_id(eval_path)[item["id"]]
            raise StageError(f"{eval_path}:{line}: expected_answer: {err}") from None
        rows.append(
            {
                "id": item["id"],
                "section": item["section"],
                "category": item["category"],
                "difficulty": item["difficulty"],
                "answer_type": item["answer_type"],
                "expected": expected,
                "answer": parsed["answer"],
                "correct": correct,
                "partial": partial,
                "format_ok": parsed["format_ok"],
                "n_tokens": pred["n_tokens"],
                "truncated": pred["truncated"],
            }
        )
    return rows


def _group_stats(rows: list[dict], any_scored: bool) -> dict:
    # Accuracies are null when nothing could be scored (no item has any
    # completion): a broken run must not look like a model that is merely wrong.
    # A completion without a parseable answer is scored, as wrong.
    n = len(rows)
    return {
        "n": n,
        "accuracy": _rate(sum(r["correct"] for r in rows), n) if any_scored else None,
        "format_accuracy": _rate(sum(r["format_ok"] for r in rows), n),
        "partial_accuracy": _rate(sum(r["partial"] for r in rows), n) if any_scored else None,
    }


def _breakdown(rows: Iterable[dict], key: str, any_scored: bool) -> dict:
    groups: dict[str, list[dict]] = {}
    for row in rows:
        groups.setdefault(row[key], []).append(row)
    return {name: _group_stats(members, any_scored) for name, members in sorted(groups.items())}


def summarize(rows: list[dict]) -> tuple[dict, dict]:
    """(metrics, scorecard) from scorecard rows; both validated against their schemas."""
    n_scored = sum(r["answer"] is not None for r in rows)
    any_scored = any(r["n_tokens"] > 0 for r in rows)
    overall = _group_stats(rows, any_scored)
    tokens = [r["n_tokens"] for r in rows]
    breakdowns = {key: _breakdown(rows, key, any_scored) for key in GROUPS}
    metrics = {
        "primary_score": overall["accuracy"],
        "format_accuracy": overall["format_accuracy"],
        "partial_accuracy": overall["partial_accuracy"],
        "n_items": len(rows),
        "n_scored": n_scored,
        "truncated_rate": _rate(sum(r["truncated"] for r in rows), len(rows)),
        "trace_tokens": {
            "mean": round(statistics.fmean(tokens), 4),
            "median": float(statistics.median(tokens)),
            "max": max(tokens),
        },
        "section": {s: breakdowns["section"].get(s, {}).get("accuracy") for s in SECTIONS},
    }
    scorecard = {"items": rows, "breakdowns": breakdowns}
    validate(metrics, "metrics", str(paths.METRICS))
    validate(scorecard, "scorecard", str(paths.SCORECARD))
    return metrics, scorecard


def evaluate(eval_path: Path, predictions_path: Path, params: dict) -> tuple[dict, dict]:
    """(metrics, scorecard) for one eval set and its predictions."""
    items = read_jsonl(eval_path, "eval_item")
    predictions = read_jsonl(predictions_path, "prediction")
    return summarize(score_predictions(items, predictions, params, eval_path, predictions_path))


def write_reports(metrics: dict, scorecard: dict, metrics_path: Path, scorecard_path: Path) -> None:
    write_json(metrics_path, metrics)
    write_json(scorecard_path, scorecard)


def run(params: dict, root: Path = Path(".")) -> dict:
    """The whole stage under `root`; returns the metrics."""
    metrics, scorecard = evaluate(root / paths.EVALSET, root / paths.PREDICTIONS, params["evaluate"])
    write_reports(metrics, scorecard, root / paths.METRICS, root / paths.SCORECARD)
    return metrics


def main() -> None:
    metrics = run(load_params())
    print(dumps_json(metrics), end="")


if __name__ == "__main__":
    run_stage(main)
