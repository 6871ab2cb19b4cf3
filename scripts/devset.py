"""A development set for choosing recipes (RL or otherwise) without touching the eval set, and its scorer.

    python scripts/devset.py make --seeds 7 8 --train data/train.jsonl --out /tmp/dev.jsonl
    python scripts/devset.py score --model data/policy --items /tmp/dev.jsonl

`make` draws the eval set's plan (scripts/make_evalset.py) with other seeds
and drops every item whose prompt is an eval prompt or a training prompt, so
a score on it is a held-out score that says nothing about the eval set.
`score` predicts greedily (stages/predict.py) and scores as evaluate does,
printing primary score, per-section accuracy and wall time as one JSON line.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from reasoning import tasks  # noqa: E402
from scripts.make_evalset import EVAL_SEED, build_items  # noqa: E402
from stages import paths  # noqa: E402
from stages.common import load_params, read_jsonl, run_stage, write_jsonl  # noqa: E402


def make(seeds: list[int], train: Path) -> list[dict]:
    if EVAL_SEED in seeds:
        raise SystemExit(f"seed {EVAL_SEED} is the eval set's own")
    taken = {tasks.normalize_prompt(r["prompt"]) for r in read_jsonl(ROOT / paths.EVALSET)}
    taken |= {tasks.normalize_prompt(r["prompt"]) for r in read_jsonl(train)}
    out: list[dict] = []
    numbers: dict[str, int] = {}
    for seed in seeds:
        for item, _ in build_items(seed):
            key = tasks.normalize_prompt(item["prompt"])
            if key not in taken:
                taken.add(key)
                prefix = item["id"].split("-")[0]
                numbers[prefix] = numbers.get(prefix, 0) + 1  # ids as the eval schema wants: section-NNN
                out.append(dict(item, id=f"{prefix}-{numbers[prefix]:03d}"))
    return out


def score(model: Path, items_path: Path, params: dict) -> dict:
    from stages.evaluate import describe_set, score_predictions, summarize
    from stages.predict import predict

    items = read_jsonl(items_path, "eval_item")
    t0 = time.perf_counter()
    p = params["predict"]
    predictions = predict(items, model, p["batch_size"], p["max_new_tokens"], params["model"]["compute_dtype"])
    seconds = time.perf_counter() - t0
    rows = score_predictions(items, predictions, params["evaluate"], items_path, Path("<predictions>"))
    metrics, _ = summarize(rows, describe_set("dev", items_path, "items", len(items)))
    return {"model": str(model), "n": len(items), "primary_score": metrics["primary_score"],
            "partial_accuracy": metrics["partial_accuracy"], "format_accuracy": metrics["format_accuracy"],
            "section": metrics["section"], "mean_tokens": metrics["trace_tokens"]["mean"],
            "predict_seconds": round(seconds, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    m = sub.add_parser("make", help="write a dev set")
    m.add_argument("--seeds", type=int, nargs="+", default=[7, 8])
    m.add_argument("--train", type=Path, default=paths.TRAIN, help="training traces whose prompts are left out")
    m.add_argument("--out", type=Path, required=True)
    s = sub.add_parser("score", help="predict and score a model directory on a dev set")
    s.add_argument("--model", type=Path, required=True)
    s.add_argument("--items", type=Path, required=True)
    s.add_argument("--params", type=Path, default=Path("params.yaml"))
    args = parser.parse_args()
    if args.command == "make":
        items = make(args.seeds, args.train)
        write_jsonl(args.out, items)
        print(f"devset: {len(items)} items -> {args.out}")
    else:
        print(json.dumps(score(args.model, args.items, load_params(path=args.params))))


if __name__ == "__main__":
    run_stage(main)
