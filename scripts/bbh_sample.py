"""Write evalsets/bbh_sample.jsonl from a copy of suzgunmirac/BIG-Bench-Hard (MIT licence).

    python scripts/bbh_sample.py /path/to/BIG-Bench-Hard

A fixed sample of every one of BBH's 27 tasks (`PER_TASK` items, drawn with a
seed per task, kept in upstream order) plus each task's three chain-of-thought
exemplars from cot-prompts/ (rows with `exemplar: true`, for `few_shot`). Each
row names its task, its answer type and, for a lettered or listed-option task,
its options; a row whose answer is not one of its options (a handful upstream)
is left out of the pool before drawing. Same upstream files, same bytes.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from reasoning import textual  # noqa: E402

OUT = ROOT / "evalsets/bbh_sample.jsonl"
PER_TASK = 5  # 27 tasks x 5 = 135 items: the tiny default's predict stays a few minutes on a CPU
ANSWER_TYPES = {  # the tasks whose answer is not an option of the prompt
    "boolean_expressions": "bool",  # True / False
    "causal_judgement": "bool",
    "navigate": "bool",
    "sports_understanding": "bool",
    "web_of_lies": "bool",
    "multistep_arithmetic_two": "number",
    "object_counting": "number",
    "dyck_languages": "exact",  # closing brackets: punctuation is the answer
    "word_sorting": "text",  # the sorted words; case and punctuation folded, every word kept
}
_LETTERED = re.compile(r"^\(([A-Z])\) (.+)$")
_LISTED = re.compile(r"^- (.+)$")
_COT = re.compile(
    r"Q: (.*?)\nA: Let's think step by step\.\s(.*?) So the answer is (.*?)\.?\s*(?=\n\nQ: |\Z)", re.DOTALL
)


def options(prompt: str) -> list[str] | None:
    """The options listed after `Options:` ((A) …, or - …), or None when the prompt lists none."""
    if "\nOptions:\n" not in prompt:
        return None
    lines = prompt.split("\nOptions:\n", 1)[1].splitlines()
    lettered = [_LETTERED.match(line) for line in lines]
    if all(lettered):
        assert [m[1] for m in lettered] == [chr(ord("A") + i) for i in range(len(lines))], prompt
        return [m[2] for m in lettered]
    listed = [_LISTED.match(line) for line in lines]
    assert all(listed), prompt
    return [m[1] for m in listed]


def row(task: str, prompt: str, answer: str) -> dict | None:
    """One eval row; None when its answer is not one of its options."""
    choices = None if task in ANSWER_TYPES else options(prompt)
    out = {"task": task, "prompt": prompt, "answer": answer, "answer_type": ANSWER_TYPES.get(task, "choice")}
    if choices is not None:
        try:
            textual.expected_choice(answer, choices)
        except ValueError:
            return None
        out["choices"] = choices
    return out


def exemplars(task: str, text: str) -> list[dict]:
    """The chain-of-thought exemplars of cot-prompts/<task>.txt (after its canary and task line)."""
    found = _COT.findall(text.split("-----\n", 1)[1])
    assert len(found) == 3, (task, len(found))
    out = []
    for n, (prompt, reasoning, answer) in enumerate(found, start=1):
        r = row(task, prompt.strip(), answer.strip())
        assert r is not None, (task, answer)
        out.append({"id": f"bbh-{task}-shot{n}", **r, "reasoning": reasoning.strip(), "exemplar": True})
    return out


def build(source: Path, per_task: int = PER_TASK) -> list[dict]:
    rows = []
    for path in sorted((source / "bbh").glob("*.json")):
        task = path.stem
        examples = json.loads(path.read_text(encoding="utf-8"))["examples"]
        pool = [(i, r) for i, e in enumerate(examples) if (r := row(task, e["input"], e["target"])) is not None]
        chosen = sorted(random.Random(f"bbh:{task}").sample(range(len(pool)), per_task))
        rows += [{"id": f"bbh-{task}-{pool[k][0]:03d}", **pool[k][1], "exemplar": False} for k in chosen]
        rows += exemplars(task, (source / "cot-prompts" / f"{task}.txt").read_text(encoding="utf-8"))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", type=Path, help="a checkout of suzgunmirac/BIG-Bench-Hard (bbh/, cot-prompts/)")
    args = parser.parse_args()
    rows = build(args.source)
    OUT.write_text("".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in rows), encoding="utf-8")
    print(
        f"{OUT.relative_to(ROOT)}: {sum(not r['exemplar'] for r in rows)} items, "
        f"{sum(r['exemplar'] for r in rows)} exemplars"
    )


if __name__ == "__main__":
    main()
