"""Stage `evaluate@<set>`: score data/predictions/<set>.jsonl against eval set <set>.

    python -m stages.evaluate <set>     # a name from params evaluate.sets (dvc.yaml runs one per set)

Writes reports/sets/<set>/metrics.json (the flat numbers `dvc exp show`
compares) and reports/sets/<set>/scorecard.json (every item's score plus
breakdowns by section, category and difficulty, and the eval set's file and
sha256). The answer is re-parsed from each raw completion, so scores depend
only on the completions and on reasoning/answers.py + scoring.py + working.py.

The working is scored too (reasoning/working.py checks every arithmetic claim
of the reasoning): metrics `working.*` (the share of claims that hold, of items
with a checkable claim, of number items whose answer is the value the working
ends with, and the counts of right answers over false working and of wrong
answers over working that is all true), and each scorecard row quotes its first
false claim and what it should have said.

A judged set (`answer_type: judged`, stages/evalfile.py) has no answer a rule
can check: its rows claim no correctness (`correct` and `partial` null), and its
primary score, by section and by breakdown, is the rubric judge's (judge@<set>'s
judgments, read by `attach_judgments`, the one place evaluate reads a judge).
"""

from __future__ import annotations

import functools
import json
import statistics
import sys
from collections.abc import Iterable
from fractions import Fraction
from pathlib import Path
from typing import Any

from reasoning.answers import parse_completion
from reasoning.judge import parse_rubric
from reasoning.judge import summary as judge_summary
from reasoning.scoring import parse_number, score_answer
from reasoning.working import check
from reasoning.working import summary as working_summary
from stages import evalfile, evalsets, paths
from stages.common import (
    StageError,
    dumps_json,
    load_params,
    read_jsonl,
    run_stage,
    sha256_file,
    validate,
    write_json_all,
)

SECTIONS = ("core", "trace_sensitive", "edge_case")
GROUPS = ("section", "category", "difficulty")


def _lines_by_id(path: Path) -> dict[Any, int]:
    """id -> 1-based line number (only needed to word an error message; GSM8K-format rows have no id)."""
    lines: dict[Any, int] = {}
    if path.suffix != ".jsonl":  # a Parquet, CSV, … eval set (format gsm8k or file) has no lines to name
        return lines
    for lineno, line in enumerate(path.read_bytes().split(b"\n"), start=1):
        if line.strip():
            lines.setdefault(json.loads(line).get("id"), lineno)
    return lines


def _where(path: Path, id_: Any) -> str:
    """`path:line` of the record with id `id_`, or `path` when no record carries it."""
    line = _lines_by_id(path).get(id_)
    return f"{path}:{line}" if line else str(path)


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
            raise StageError(
                f"{predictions_path}: id: no prediction for eval item {item['id']!r} ({_where(eval_path, item['id'])})"
            )
        parsed = parse_completion(pred["completion"])
        working = check(parsed["reasoning"], params["rel_tolerance"])
        if item["answer_type"] == evalfile.JUDGED:  # nothing to check by rule: the judge scores it
            rows.append(_row(item, pred, parsed, working, None, None, None, params["rel_tolerance"]))
            continue
        expected = item["expected_answer"]
        expected = expected if isinstance(expected, str) else json.dumps(expected)  # 42 -> "42", true -> "true"
        score = functools.partial(
            score_answer,
            expected=expected,
            answer_type=item["answer_type"],
            rel_tolerance=params["rel_tolerance"],
            partial_within=params["partial_within"],
            choices=item.get("choices"),
        )
        try:
            correct, partial = score(parsed["answer"])
        except ValueError as err:
            try:  # the expected answer read alone: only an error it raises too is the eval set's
                score(None)
            except ValueError:
                raise StageError(f"{_where(eval_path, item['id'])}: expected_answer: {err}") from None
            correct, partial = False, False  # an answer that cannot be read is wrong, never the eval set's fault
        rows.append(_row(item, pred, parsed, working, expected, correct, partial, params["rel_tolerance"]))
    return rows


def _row(
    item: dict,
    pred: dict,
    parsed: dict,
    working: Any,
    expected: str | None,
    correct: bool | None,
    partial: bool | None,
    rel_tolerance: float,
) -> dict:
    """One scorecard row; expected, correct and partial are None for a judged item (no rule checks it)."""
    return {
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
        "working": {
            **working_summary(working),
            "consistent": _consistent(working.ends_with, parsed["answer"], item["answer_type"], rel_tolerance),
        },
        **({"groups": item["groups"]} if item.get("groups") else {}),  # a format file set's breakdowns
    }


def _consistent(ends_with: Fraction | None, answer: str | None, answer_type: str, rel_tolerance: float) -> bool | None:
    """The answer is the number the working ends on; None when that cannot be asked (not a number item,
    or working that ends on no number). A fraction item's working ends on its numerator or denominator
    (`9 + 4 = 13`, then `13/10`), so only number items are asked."""
    if answer_type != "number" or ends_with is None:
        return None
    value = parse_number(answer) if answer else None
    return value is not None and abs(value - ends_with) <= Fraction(rel_tolerance) * max(1, abs(ends_with))


def _group_stats(rows: list[dict], any_scored: bool) -> dict:
    # Accuracies are null when nothing could be scored (no item has any
    # completion): a broken run must not look like a model that is merely wrong.
    # A completion without a parseable answer is scored, as wrong. Judged rows (correct None) have no
    # accuracy at all: the judge's score stands in for it (attach_judgments).
    n = len(rows)
    checked = [r for r in rows if r["correct"] is not None]
    any_scored = any_scored and bool(checked)
    return {
        "n": n,
        "accuracy": _rate(sum(r["correct"] for r in checked), len(checked)) if any_scored else None,
        "format_accuracy": _rate(sum(r["format_ok"] for r in rows), n),
        "partial_accuracy": _rate(sum(r["partial"] for r in checked), len(checked)) if any_scored else None,
    }


def working_metrics(rows: list[dict]) -> dict:
    """The working's scores over scorecard rows (each with its `working` summary)."""
    n_claims = sum(r["working"]["n_claims"] for r in rows)
    n_false = sum(r["working"]["n_false"] for r in rows)
    asked = [r["working"]["consistent"] for r in rows if r["working"]["consistent"] is not None]
    checked = [r for r in rows if r["working"]["n_claims"]]
    return {
        "claim_accuracy": _rate(n_claims - n_false, n_claims) if n_claims else None,
        "checkable_share": _rate(len(checked), len(rows)),
        "consistency": _rate(sum(asked), len(asked)) if asked else None,
        "right_over_false": sum(r["correct"] is True and r["working"]["n_false"] > 0 for r in checked),
        "wrong_over_true": sum(r["correct"] is False and r["working"]["n_false"] == 0 for r in checked),
        "n_claims": n_claims,
        "n_false_claims": n_false,
    }


def _grouped(rows: Iterable[dict], key: str) -> dict[str, list[dict]]:
    """Scorecard rows by their value of breakdown `key` (section, category, difficulty, or a file set's own)."""
    groups: dict[str, list[dict]] = {}
    for row in rows:
        groups.setdefault(row[key] if key in GROUPS else row["groups"][key], []).append(row)
    return dict(sorted(groups.items()))


def _breakdown(rows: Iterable[dict], key: str, any_scored: bool) -> dict:
    return {name: _group_stats(members, any_scored) for name, members in _grouped(rows, key).items()}


def summarize(rows: list[dict], eval_set: dict) -> tuple[dict, dict]:
    """(metrics, scorecard) from scorecard rows; both validated against their schemas.

    `eval_set`: the set's name, path, format, sha256 and size, recorded in the scorecard.
    """
    n_scored = sum(r["answer"] is not None for r in rows)
    any_scored = any(r["n_tokens"] > 0 for r in rows)
    overall = _group_stats(rows, any_scored)
    tokens = [r["n_tokens"] for r in rows]
    extra = list(dict.fromkeys(key for r in rows for key in r.get("groups", {})))  # a format file set's (task, …)
    breakdowns = {key: _breakdown(rows, key, any_scored) for key in [*GROUPS, *extra]}
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
        **(
            {"by": {key: {value: stats["accuracy"] for value, stats in breakdowns[key].items()} for key in extra}}
            if extra
            else {}
        ),
        "working": working_metrics(rows),
    }
    scorecard = {"eval_set": eval_set, "items": rows, "breakdowns": breakdowns}
    validate(metrics, "metrics", str(paths.set_metrics(eval_set["name"])))
    validate(scorecard, "scorecard", str(paths.set_scorecard(eval_set["name"])))
    return metrics, scorecard


def evaluate(evalset: evalsets.EvalSet, params: dict, root: Path = Path(".")) -> tuple[dict, dict]:
    """(metrics, scorecard) for one eval set and its predictions."""
    items = evalsets.load_items(evalset, root)
    predictions_path = root / paths.predictions(evalset.name)
    predictions = read_jsonl(predictions_path, "prediction")
    rows = score_predictions(items, predictions, params["evaluate"], root / evalset.path, predictions_path)
    metrics, scorecard = summarize(rows, describe_set(evalset.name, evalset.path, evalset.format, len(items), root))
    attach_judgments(evalset, items, params, metrics, scorecard, root)  # a set with judge: true
    return metrics, scorecard


def attach_judgments(
    evalset: evalsets.EvalSet, items: list[dict], params: dict, metrics: dict, scorecard: dict, root: Path = Path(".")
) -> None:
    """evaluate@<name>'s hook: for a set with `judge: true`, each scorecard row gets its judgment, the
    metrics the judge's score, failures and gates, each breakdown group its `judge_score`, the scorecard
    which judge judged. A judged set's primary score (overall, by section, by breakdown) is the judge's.
    Re-validated."""
    name = evalset.name
    if not params["evaluate"]["sets"][name].get("judge", False):
        return
    path = root / paths.judgments(name)
    if path.is_file() and not path.stat().st_size:
        raise StageError(f"{paths.judgments(name)}: no judgments (judge@{name} ran before the set asked: dvc repro)")
    by_id = {r["id"]: r for r in read_jsonl(path, "judgment")}
    for row in scorecard["items"]:
        record = by_id.get(row["id"])
        if record is None:
            raise StageError(
                f"{paths.judgments(name)}: id: no judgment for eval item {row['id']!r} (dvc repro judge@{name})"
            )
        row["judge"] = {k: record[k] for k in ("score", "verdicts", "gate", "failure")}
    records = [by_id[row["id"]] for row in scorecard["items"]]
    rubrics = [parse_rubric(item.get("rubric")) for item in items]  # the item's own, else the default
    totals = judge_summary(records, rubrics)
    metrics["judge"] = {k: totals[k] for k in ("score", "n_judged", "n_failed", "n_gated")}
    scorecard["judge"] = {"identity": records[0]["judge"], **totals}
    rows = scorecard["items"]
    for key, groups in scorecard["breakdowns"].items():
        for value, members in _grouped(rows, key).items():
            groups[value]["judge_score"] = judge_summary([r["judge"] for r in members], [])["score"]
    if evalset.answer_type == evalfile.JUDGED:
        # as for accuracy: null when no completion has a token (a broken run, not a bad model)
        scored = any(r["n_tokens"] > 0 for r in rows)
        metrics["primary_score"] = totals["score"] if scored else None
        judged = {
            key: {v: g["judge_score"] if scored else None for v, g in groups.items()}
            for key, groups in scorecard["breakdowns"].items()
        }
        metrics["section"] = {s: judged["section"].get(s) for s in SECTIONS}
        if "by" in metrics:
            metrics["by"] = {key: judged[key] for key in metrics["by"]}
    validate(metrics, "metrics", str(paths.set_metrics(name)))
    validate(scorecard, "scorecard", str(paths.set_scorecard(name)))


def describe_set(name: str, path: Path, fmt: str, n_items: int, root: Path = Path(".")) -> dict:
    """How metrics and scorecards name an eval set: its name, path, format, sha256 and size."""
    return {
        "name": name,
        "path": path.as_posix(),
        "format": fmt,
        "sha256": sha256_file(root / path),
        "n_items": n_items,
    }


def write_reports(name: str, metrics: dict, scorecard: dict, root: Path = Path(".")) -> None:
    """Both reports or neither: they must agree, so one is never replaced while the other cannot be."""
    write_json_all(
        {
            root / paths.set_metrics(name): evalsets.metrics_document(name, metrics),
            root / paths.set_scorecard(name): scorecard,
        }
    )


def run(params: dict, name: str, root: Path = Path(".")) -> dict:
    """The stage for eval set `name` under `root`; returns its metrics."""
    metrics, scorecard = evaluate(evalsets.named(params, name, root), params, root)
    write_reports(name, metrics, scorecard, root)
    return metrics


def main() -> None:
    metrics = run(load_params(), evalsets.main_argument(sys.argv, "evaluate"))
    print(dumps_json(metrics), end="")


if __name__ == "__main__":
    run_stage(main)
