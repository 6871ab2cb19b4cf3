"""Write evalsets/aqua_test_sample.jsonl from a copy of google-deepmind/AQuA (AQuA-RAT, Apache-2.0).

    python scripts/aqua_sample.py /path/to/AQuA

A fixed sample of the test split (`SAMPLE` of its 254 five-option algebra word
problems, drawn with a fixed seed, kept in upstream order) as multiple-choice
rows: the question with its options listed as `(A) …`, the options, the
correct letter; plus the first `EXEMPLARS` problems of the dev split with
their rationales (rows with `exemplar: true`, for `few_shot`). Same upstream
files, same bytes.
"""

from __future__ import annotations

import argparse
import json
import random
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "evalsets/aqua_test_sample.jsonl"
SAMPLE = 50
EXEMPLARS = 3
_OPTION = re.compile(r"^([A-E])\)\s*(.*)$", re.DOTALL)


def row(n: int, record: dict, split: str) -> dict:
    options = [_OPTION.match(o) for o in record["options"]]
    assert [m[1] for m in options] == list("ABCDE")[: len(options)], record["options"]
    choices = [" ".join(m[2].split()) for m in options]
    listed = "\n".join(f"({m[1]}) {text}" for m, text in zip(options, choices, strict=True))
    return {
        "id": f"aqua-{split}-{n:03d}",
        "prompt": f"{record['question'].strip()}\nOptions:\n{listed}",
        "choices": choices,
        "answer": record["correct"],
    }


def build(source: Path) -> list[dict]:
    test, dev = (
        [json.loads(line) for line in (source / name).read_text(encoding="utf-8").splitlines() if line.strip()]
        for name in ("test.json", "dev.json")
    )
    chosen = sorted(random.Random("aqua:test").sample(range(len(test)), SAMPLE))
    rows = [{**row(i, test[i], "test"), "exemplar": False} for i in chosen]
    return rows + [
        {**row(i, dev[i], "dev"), "reasoning": dev[i]["rationale"].strip(), "exemplar": True} for i in range(EXEMPLARS)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", type=Path, help="a checkout of google-deepmind/AQuA (test.json, dev.json)")
    rows = build(parser.parse_args().source)
    OUT.write_text("".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in rows), encoding="utf-8")
    print(f"{OUT.relative_to(ROOT)}: {SAMPLE} items, {EXEMPLARS} exemplars")


if __name__ == "__main__":
    main()
