"""Cross-check our scoring with EleutherAI's lm-evaluation-harness, item by item, offline.

    python scripts/lmeval_crosscheck.py data/policy --limit 20 --report /tmp/crosscheck.json

runs `lm_eval run --model hf` (in .venv-lmeval: `make lmeval-env`) on the model directory with the
task YAMLs of evalsets/lmeval/ (our committed GSM8K sample and BBH's boolean_expressions items), reads
its `--log_samples` files and scores the SAME response text our way. What is compared, per item and
per lm-eval filter: lm-eval's verdict (its filter's extraction from the response, then its metric,
exact_match against the target) against ours (reasoning.answers.parse_completion: the last complete
`<answer>…</answer>` block, then reasoning.scoring.score_answer against the expected answer, as
evaluate scores a prediction). strict-match reads our answer block too, so it is the like-for-like
check (the goal: at least 98 % of all items agree); flexible-extract reads the reply's last number (or
True/False) from free text, the field's lenient reading. Every difference is listed in a category:

- format-only: the reply has no complete answer block, so ours has nothing to score and is wrong,
  while lm-eval read the right answer from the free text.
- pattern: lm-eval's pattern matched nothing in the reply (`[invalid]`) though our answer block
  holds an answer we read as right (a unit word, a fraction, `Yes` for True).
- reading: both read the same answer text and judge it differently: lm-eval compares strings
  (after dropping `,`, `$` and a final `.`), we compare values (`18.00` = `18`) or yes/no meaning.
- elsewhere: lm-eval took its answer from outside our answer block (a number after it, a True in
  the reasoning), and the two verdicts differ.

The harness needs no model to be checked on given replies: scripts/lmeval_filters.py puts them
through the task's own filters and metric (tests/test_lmeval_crosscheck.py does that).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from reasoning.answers import parse_completion  # noqa: E402
from reasoning.scoring import score_answer  # noqa: E402
from stages import gsm8k  # noqa: E402
from stages.common import PARAMS_FILE, StageError, load_params, write_json  # noqa: E402

LMEVAL_VENV = ROOT / ".venv-lmeval"
LMEVAL_PYTHON = LMEVAL_VENV / "bin" / "python"
INCLUDE_PATH = Path("evalsets/lmeval")  # relative: the tasks' data_files are relative to the repository root
TASKS = ("tunix_gsm8k_sample", "tunix_bbh_boolean_expressions")
STRICT = "strict-match"  # the filter whose agreement the goal is about
GOAL = 0.98
INVALID = "[invalid]"  # lm-eval's RegexFilter fallback when its pattern matches nothing
CATEGORIES = {
    "format-only": "no complete <answer> block: ours has nothing to score, lm-eval read the answer from free text",
    "pattern": "lm-eval's pattern matched nothing, though our answer block holds an answer we read as right",
    "reading": "the same answer text, judged differently: lm-eval compares strings, we compare values or meaning",
    "elsewhere": "lm-eval took its answer from outside our answer block",
}
# Offline: the datasets come from our JSONL, the model from a local directory; nothing may be fetched.
OFFLINE = {
    "HF_DATASETS_OFFLINE": "1",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
}


def expected(doc: Mapping) -> tuple[str, str, list | None]:
    """(expected answer, answer type, choices) of one lm-eval doc, read as our eval sets read the row."""
    if "question" in doc:  # a GSM8K row: our gsm8k format's final answer, a number
        return gsm8k.parse_row(doc, f"doc {doc.get('question', '')[:40]!r}")[2], "number", None
    return str(doc["answer"]), doc.get("answer_type") or "text", doc.get("choices")


def ours(doc: Mapping, response: str, tolerance: Mapping[str, float]) -> tuple[str | None, bool]:
    """(our parsed answer, our verdict) for one response, as evaluate scores a prediction."""
    answer = parse_completion(response)["answer"]
    gold, answer_type, choices = expected(doc)
    correct, _ = score_answer(
        answer, gold, answer_type, tolerance["rel_tolerance"], tolerance["partial_within"], choices=choices
    )
    return answer, correct


def _bare(text: str) -> str:
    return text.replace(",", "").replace("$", "").strip().rstrip(".").strip().casefold()


def category(our_answer: str | None, filtered: str) -> str:
    """Why lm-eval's verdict and ours differ on one reply (see CATEGORIES); called only where they do."""
    if our_answer is None:
        return "format-only"
    if filtered == INVALID:
        return "pattern"
    if _bare(filtered) and _bare(filtered) == _bare(our_answer):
        return "reading"
    return "elsewhere"


def compare(samples: Iterable[Mapping], tolerance: Mapping[str, float]) -> dict:
    """Item-by-item agreement per task and filter, from lm-eval's logged samples (one per doc and filter)."""
    tasks: dict[str, dict[str, dict]] = {}
    for sample in sorted(samples, key=lambda s: (s["task"], s["filter"], s["doc_id"])):
        response = sample["resps"][0][0]
        filtered = sample["filtered_resps"][0]
        our_answer, our_correct = ours(sample["doc"], response, tolerance)
        their_correct = bool(sample["exact_match"])
        entry = tasks.setdefault(sample["task"], {}).setdefault(
            sample["filter"],
            {"n": 0, "agree": 0, "ours_correct": 0, "lmeval_correct": 0, "differences": [], "other_targets": []},
        )
        entry["n"] += 1
        # both sides must score against the same answer: lm-eval's target, read as a reply, is right by ours
        if not ours(sample["doc"], f"<answer>{sample['target']}</answer>", tolerance)[1]:
            entry["other_targets"].append(sample["doc_id"])
        entry["ours_correct"] += our_correct
        entry["lmeval_correct"] += their_correct
        if our_correct == their_correct:
            entry["agree"] += 1
        else:
            entry["differences"].append(
                {
                    "doc_id": sample["doc_id"],
                    "category": category(our_answer, filtered),
                    "target": sample["target"],
                    "ours": {"answer": our_answer, "correct": our_correct},
                    "lmeval": {"filtered": filtered, "correct": their_correct},
                    "response": response,
                }
            )
    overall: dict[str, dict] = {}
    for filters in tasks.values():
        for name, entry in filters.items():
            entry["agreement"] = entry["agree"] / entry["n"]
            total = overall.setdefault(name, {"n": 0, "agree": 0})
            total["n"] += entry["n"]
            total["agree"] += entry["agree"]
    for total in overall.values():
        total["agreement"] = total["agree"] / total["n"]
    return {
        "goal": {"filter": STRICT, "min_agreement": GOAL},
        "categories": CATEGORIES,
        "tasks": tasks,
        "overall": overall,
    }


def meets_goal(report: Mapping) -> bool:
    """The issue's goal: at least 98 % of all items (every task together) agree under strict-match."""
    return STRICT in report["overall"] and report["overall"][STRICT]["agreement"] >= GOAL


def harness_env() -> dict[str, str]:
    return {**os.environ, **OFFLINE}


def require_env() -> None:
    if not LMEVAL_PYTHON.is_file():
        raise StageError(f"{LMEVAL_PYTHON}: not found: build lm-eval's environment first (make lmeval-env)")


def run_harness(
    model_dir: Path, tasks: Iterable[str], output: Path, limit: int | None, device: str, batch_size: int
) -> None:
    """`lm_eval run --model hf` on `model_dir` with our task YAMLs, its samples logged under `output`."""
    require_env()
    cmd = [
        str(LMEVAL_VENV / "bin" / "lm_eval"),
        "run",
        "--model",
        "hf",
        "--model_args",
        f"pretrained={model_dir.resolve()},dtype=float32",
        "--tasks",
        ",".join(tasks),
        "--include_path",
        str(INCLUDE_PATH),
        "--log_samples",
        "--output_path",
        str(output.resolve()),
        "--device",
        device,
        "--batch_size",
        str(batch_size),
    ]
    if limit is not None:
        cmd += ["--limit", str(limit)]
    result = subprocess.run(cmd, cwd=ROOT, env=harness_env())
    if result.returncode != 0:
        raise StageError(f"lm_eval exited {result.returncode}: {' '.join(cmd)}")


def logged_samples(output: Path, tasks: Iterable[str]) -> list[dict]:
    """The newest `samples_<task>_*.jsonl` of each task under `output`, each line tagged with its task."""
    samples = []
    for task in tasks:
        files = sorted(output.rglob(f"samples_{task}_*.jsonl"), key=lambda p: p.stat().st_mtime)
        if not files:
            raise StageError(f"{output}: no samples_{task}_*.jsonl: did lm_eval run with --log_samples?")
        for line in files[-1].read_text(encoding="utf-8").splitlines():
            if line.strip():
                samples.append({**json.loads(line), "task": task})
    return samples


def harness_verdicts(responses: Mapping[str, Iterable[tuple[int, str]]]) -> list[dict]:
    """lm-eval's filters and metric on given replies, task name -> [(doc_id, reply)], as logged samples
    (scripts/lmeval_filters.py in .venv-lmeval: one process, lm_eval imported once)."""
    require_env()
    request = {
        "include_path": str(INCLUDE_PATH),
        "tasks": {task: [list(r) for r in rs] for task, rs in responses.items()},
    }
    result = subprocess.run(
        [str(LMEVAL_PYTHON), str(ROOT / "scripts" / "lmeval_filters.py")],
        cwd=ROOT,
        env=harness_env(),
        input=json.dumps(request),
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise StageError(f"scripts/lmeval_filters.py exited {result.returncode}: {result.stderr.strip()[-2000:]}")
    return json.loads(result.stdout)


def tolerance(root: Path = ROOT) -> dict[str, float]:
    """evaluate's rel_tolerance and partial_within from params.yaml: the numbers evaluate scores with."""
    params = load_params("evaluate", root / PARAMS_FILE)
    return {"rel_tolerance": params["rel_tolerance"], "partial_within": params["partial_within"]}


def _one_line(text: str, width: int = 100) -> str:
    flat = " ".join(str(text).split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def markdown(report: Mapping) -> str:
    """The summary table, then every difference with its category."""
    lines = [
        "| task | filter | items | agree | agreement | ours right | lm-eval right |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for task, filters in report["tasks"].items():
        for name, e in filters.items():
            lines.append(
                f"| {task} | {name} | {e['n']} | {e['agree']} | {e['agreement']:.1%} | {e['ours_correct']} "
                f"| {e['lmeval_correct']} |"
            )
    for task, filters in report["tasks"].items():
        for name, e in filters.items():
            for d in e["differences"]:
                lines.append(
                    f"- {task} / {name} / doc {d['doc_id']}: **{d['category']}** (target {d['target']!r}; "
                    f"ours {d['ours']['answer']!r} → {d['ours']['correct']}, lm-eval "
                    f"{d['lmeval']['filtered']!r} → {d['lmeval']['correct']}): {_one_line(d['response'])}"
                )
    for task, filters in report["tasks"].items():
        for name, e in filters.items():
            if e["other_targets"]:
                lines.append(
                    f"- {task} / {name}: lm-eval's target is not our expected answer on docs {e['other_targets']}"
                )
    found = sorted(
        {d["category"] for filters in report["tasks"].values() for e in filters.values() for d in e["differences"]}
    )
    lines += [f"- *{name}*: {CATEGORIES[name]}" for name in found]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model_dir", type=Path, help="a Hugging Face model directory (e.g. data/policy)")
    parser.add_argument("--tasks", default=",".join(TASKS), help="comma-separated lm-eval task names")
    parser.add_argument("--limit", type=int, default=None, help="the first N items of each task")
    parser.add_argument("--output", type=Path, default=Path("/tmp/tunix-rt-lmeval"), help="lm_eval's --output_path")
    parser.add_argument("--report", type=Path, default=None, help="write the comparison as JSON here")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args(argv)
    tasks = [t for t in args.tasks.split(",") if t]
    try:
        if not (args.model_dir / "config.json").is_file():
            raise StageError(f"{args.model_dir}: not a Hugging Face model directory (no config.json)")
        run_harness(args.model_dir, tasks, args.output, args.limit, args.device, args.batch_size)
        report = compare(logged_samples(args.output, tasks), tolerance())
    except StageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if args.report is not None:
        write_json(args.report, report)
    print(markdown(report))
    goal = "met" if meets_goal(report) else "NOT met"
    overall = report["overall"].get(STRICT)
    if overall:
        print(
            f"\n{STRICT} agreement over all items: {overall['agree']}/{overall['n']} = {overall['agreement']:.1%}; "
            f"goal (>= {GOAL:.0%}): {goal}"
        )
    return 0 if meets_goal(report) else 2


if __name__ == "__main__":
    sys.exit(main())
