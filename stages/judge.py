"""Stage `judge@<set>`: a rubric judge's verdicts on data/predictions/<set>.jsonl -> data/judgments/<set>.jsonl.

    python -m stages.judge <set>     # a name from params evaluate.sets (dvc.yaml runs one per set)

Only a set marked `judge: true` in `evaluate.sets` is judged; any other gets an
empty file, written without loading a judge. The judge is params `judge`
(`backend: openai`, an OpenAI-compatible endpoint; `backend: local`, a Gemma
checkpoint run in-process with our sampler), see docs/judge.md. Judgments are
data: this file is a DVC output that evaluate@<set> reads, so re-running
evaluate asks nothing; and each judgment is also cached by content under
`judge.cache_dir`, so a re-run after a failure, or GRPO's judge reward, asks
nothing twice.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from reasoning.judge import Cache, Judge, JudgeError, Task, parse_rubric
from stages import evalsets, paths
from stages.common import StageError, load_params, param_error, read_jsonl, run_stage, sha256_tree, write_jsonl

RECORD_KEYS = ("key", "score", "verdicts", "gate", "failure")


def make_judge(params: dict, root: Path = Path(".")) -> Judge:
    """The judge params `judge` describe (a local backend loads its checkpoint here)."""
    p = params["judge"]
    try:
        if p["backend"] == "local":
            model_dir = root / p["model"]
            if not (model_dir / "config.json").is_file():
                raise param_error(
                    "judge",
                    "model",
                    root=root,
                    message=f"{p['model']!r} is not a Hugging "
                    "Face directory (config.json, model.safetensors, tokenizer.json)",
                )
            from training.judge_local import LocalBackend  # JAX only when a local judge is asked for

            backend = LocalBackend(model_dir, sha256_tree(model_dir), p["dtype"], p["batch_size"])
        else:
            from reasoning.judge_client import OpenAIBackend

            backend = OpenAIBackend(
                p["base_url"], p["model"], p["api"], p["api_key_env"], p["concurrency"], p["timeout"], p["retries"]
            )
        cache_dir = p["cache_dir"]
        return Judge(backend, p["template"], Cache(root / cache_dir if cache_dir else None))
    except JudgeError as err:
        raise StageError(str(err)) from None


def tasks_for(items: list[dict], predictions: list[dict], eval_path: Path, predictions_path: Path) -> list[Task]:
    """One task per eval item, in eval-set order: its prompt, its prediction, its rubric (or the default)."""
    by_id = {p["id"]: p for p in predictions}
    tasks = []
    for line, item in enumerate(items, start=1):
        pred = by_id.get(item["id"])
        if pred is None:
            raise StageError(f"{predictions_path}: id: no prediction for eval item {item['id']!r} ({eval_path})")
        try:
            rubric = parse_rubric(item.get("rubric"), "rubric")
        except JudgeError as err:
            raise StageError(f"{eval_path}:{line}: {err}") from None
        tasks.append(Task(item["prompt"], pred["completion"], rubric))
    return tasks


def run(params: dict, name: str, root: Path = Path(".")) -> list[dict]:
    """Judge eval set `name`'s predictions under `root` (when the set asks); write and return the records."""
    evalset = evalsets.named(params, name, root)
    out = root / paths.judgments(name)
    if not params["evaluate"]["sets"][name].get("judge", False):
        write_jsonl(out, [])
        print(f"judge {name}: not asked (evaluate.sets.{name}.judge is false) -> {paths.judgments(name)}")
        return []
    items = evalsets.load_items(evalset, root)
    predictions_path = root / paths.predictions(name)
    tasks = tasks_for(items, read_jsonl(predictions_path, "prediction"), root / evalset.path, predictions_path)
    judge = make_judge(params, root)
    start = time.perf_counter()
    try:
        judgments = judge.judge(tasks)
    except JudgeError as err:
        raise StageError(str(err)) from None
    records = [
        {"id": item["id"], "judge": judge.identity, **{k: j[k] for k in RECORD_KEYS}}
        for item, j in zip(items, judgments)
    ]
    write_jsonl(out, records)
    failed = sum(r["score"] is None for r in records)
    print(
        f"judge {name}: {len(records)} completions, {judge.asked} prompts asked in {time.perf_counter() - start:.1f} s, "
        f"{failed} failed -> {paths.judgments(name)}"
    )
    return records


def main() -> None:
    params = load_params()
    name = evalsets.main_argument(sys.argv, "judge")
    if params["evaluate"]["sets"].get(name, {}).get("judge") and params["judge"]["backend"] == "local":
        from training.cpu_tuning import configure_host_cpu

        configure_host_cpu()  # before JAX starts: XLA:CPU set up for decoding, as predict does
    run(params, name)


if __name__ == "__main__":
    run_stage(main)
