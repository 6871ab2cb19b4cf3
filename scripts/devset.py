"""A development set for choosing recipes (RL or otherwise) without touching the eval set, and its scorer.

    python scripts/devset.py make --seeds 7 8 --train data/train.jsonl --out /tmp/dev.jsonl
    python scripts/devset.py score --model data/policy --items /tmp/dev.jsonl
    python scripts/devset.py headroom --model data/model --items /tmp/dev.jsonl --k 16
    python scripts/devset.py score --model data/model --items /tmp/dev.jsonl --rows /tmp/sft.jsonl
    python scripts/devset.py compare /tmp/sft.jsonl /tmp/policy.jsonl

`make` draws the eval set's plan (scripts/make_evalset.py) with other seeds
and drops every item whose prompt is an eval prompt or a training prompt, so
a score on it is a held-out score that says nothing about the eval set.
`score` predicts greedily (stages/predict.py) and scores as evaluate does,
printing primary score, per-section accuracy and wall time as one JSON line;
`--rows` also writes whether each item was right, so that `compare` can set two
models side by side on the same items: the difference in accuracy, the items
only one of them gets right, and the exact two-sided sign test on those (a
paired comparison, tighter than two means).
`headroom` asks what RL could gain before any is run: it samples k completions
of each item (grpo's temperature) and prints, overall and per section, the
greedy accuracy, the mean sampled accuracy, maj@k (the most frequent answer
is right) and pass@k (some sample is right). RL that only sharpens the policy
moves greedy towards maj@k, and at most to pass@k.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections import Counter
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


def score(model: Path, items_path: Path, params: dict, rows_out: Path | None = None) -> dict:
    from stages.evaluate import describe_set, score_predictions, summarize
    from stages.predict import predict

    items = read_jsonl(items_path, "eval_item")
    t0 = time.perf_counter()
    p = params["predict"]
    predictions = predict(items, model, p["batch_size"], p["max_new_tokens"], params["model"]["compute_dtype"])
    seconds = time.perf_counter() - t0
    rows = score_predictions(items, predictions, params["evaluate"], items_path, Path("<predictions>"))
    metrics, _ = summarize(rows, describe_set("dev", items_path, "items", len(items)))
    if rows_out is not None:
        write_jsonl(rows_out, [{"id": r["id"], "correct": bool(r["correct"])} for r in rows])
    return {
        "model": str(model),
        "n": len(items),
        "primary_score": metrics["primary_score"],
        "partial_accuracy": metrics["partial_accuracy"],
        "format_accuracy": metrics["format_accuracy"],
        "section": metrics["section"],
        "mean_tokens": metrics["trace_tokens"]["mean"],
        "predict_seconds": round(seconds, 1),
    }


def sign_test(wins: int, losses: int) -> float:
    """Two-sided exact p-value of `wins` against `losses` when each discordant item is a fair coin."""
    n, low = wins + losses, min(wins, losses)
    if n == 0:
        return 1.0
    return min(1.0, 2 * sum(math.comb(n, i) for i in range(low + 1)) / 2**n)


def compare(a_path: Path, b_path: Path) -> dict:
    """B against A on the same items: accuracy of each, B - A, the items only one gets right, the sign test."""
    a = {r["id"]: r["correct"] for r in read_jsonl(a_path)}
    b = {r["id"]: r["correct"] for r in read_jsonl(b_path)}
    if a.keys() != b.keys():
        raise SystemExit(f"{b_path}: not the items of {a_path} ({len(a.keys() ^ b.keys())} ids differ)")
    only_a = sum(a[i] and not b[i] for i in a)
    only_b = sum(b[i] and not a[i] for i in a)
    n = len(a)
    return {
        "n": n,
        "a": round(sum(a.values()) / n, 3),
        "b": round(sum(b.values()) / n, 3),
        "b_minus_a": round((only_b - only_a) / n, 3),
        "only_a": only_a,
        "only_b": only_b,
        "sign_test_p": round(sign_test(only_b, only_a), 4),
    }


def vote(samples: list[tuple[str | None, bool]]) -> tuple[float, bool, bool]:
    """(share right, the most frequent answer is right, some answer is right) of one item's scored samples;
    a tie for most frequent goes to the answer sampled first. The share is the samples stage's pass rate
    (stages/samples.py), so headroom and the pairs, RFT and grpo.prompt_filter read one definition."""
    from stages.samples import pass_rate

    top = Counter(answer for answer, _ in samples).most_common(1)[0][0]
    majority = next(correct for answer, correct in samples if answer == top)
    share = pass_rate([{"correct": correct, "greedy": False} for _, correct in samples])
    return share, majority, any(c for _, c in samples)


def headroom(model: Path, items_path: Path, params: dict, k: int, temperature: float, seed: int) -> dict:
    from stages.evaluate import score_predictions
    from stages.predict import predict

    items = read_jsonl(items_path, "eval_item")
    p = params["predict"]
    greedy = score(model, items_path, params)
    t0 = time.perf_counter()
    samples = predict(
        [item for item in items for _ in range(k)],
        model,
        p["batch_size"],
        p["max_new_tokens"],
        params["model"]["compute_dtype"],
        temperature=temperature,
        seed=seed,
    )
    # rows[j][i]: item i's j-th sample, scored as evaluate scores
    rows = [
        score_predictions(items, samples[j::k], params["evaluate"], items_path, Path("<samples>")) for j in range(k)
    ]
    by_section: dict[str, list[tuple[float, bool, bool]]] = {}
    for i, item in enumerate(items):
        by_section.setdefault(item["section"], []).append(vote([(r[i]["answer"], bool(r[i]["correct"])) for r in rows]))
    every = [x for xs in by_section.values() for x in xs]
    summary = lambda xs: {
        "sampled": round(sum(x[0] for x in xs) / len(xs), 3),
        f"maj@{k}": round(sum(x[1] for x in xs) / len(xs), 3),
        f"pass@{k}": round(sum(x[2] for x in xs) / len(xs), 3),
    }
    return {
        "model": str(model),
        "n": len(items),
        "k": k,
        "temperature": temperature,
        "greedy": round(greedy["primary_score"], 3),
        **summary(every),
        "section": {
            name: {"greedy": round(greedy["section"][name], 3), **summary(xs)}
            for name, xs in sorted(by_section.items())
        },
        "sample_seconds": round(time.perf_counter() - t0, 1),
    }


def positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}")
    return int(text)


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
    s.add_argument("--rows", type=Path, help="also write each item's id and whether it was right (for compare)")
    c = sub.add_parser("compare", help="two models' --rows files on the same items, paired")
    c.add_argument("a", type=Path)
    c.add_argument("b", type=Path)
    h = sub.add_parser("headroom", help="greedy, mean sampled, maj@k and pass@k accuracy of a model on a dev set")
    h.add_argument("--model", type=Path, required=True)
    h.add_argument("--items", type=Path, required=True)
    h.add_argument("--params", type=Path, default=Path("params.yaml"))
    h.add_argument("--k", type=positive, default=16, help="samples per item (default: 16)")
    h.add_argument("--temperature", type=float, help="above 0 (default: params grpo.temperature)")
    h.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.command == "make":
        items = make(args.seeds, args.train)
        write_jsonl(args.out, items)
        print(f"devset: {len(items)} items -> {args.out}")
    elif args.command == "score":
        print(json.dumps(score(args.model, args.items, load_params(path=args.params), args.rows)))
    elif args.command == "compare":
        print(json.dumps(compare(args.a, args.b)))
    else:
        params = load_params(path=args.params)
        temperature = params["grpo"]["temperature"] if args.temperature is None else args.temperature
        if not temperature > 0:
            parser.error(f"--temperature: sampling needs a temperature above 0, got {temperature}")
        print(json.dumps(headroom(args.model, args.items, params, args.k, temperature, args.seed)))


if __name__ == "__main__":
    run_stage(main)
