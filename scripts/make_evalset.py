"""Build the committed eval set `evalsets/tunix_eval_v1.jsonl` (deterministic).

    python scripts/make_evalset.py            # (re)write it
    python scripts/make_evalset.py --check    # exit 1 if the committed file differs

The items come from the same generators as the training traces
(`reasoning/tasks/`), so they share the training phrasing and step
conventions, drawn with a seed of their own (`EVAL_SEED`, never the
training seed); the seed stage then drops any training prompt equal to one
of them. Sections:

- core (60): arithmetic chains (24) and six each of rate, percentage,
  cost_per_item, unit_conversion, comparison and sequence; all but one need
  two or more steps (two for most: longer chains are trace_sensitive).
- trace_sensitive (25): 3-4 operation chains, multi-step word problems and
  string tasks, which a model only gets right by working through the steps.
- edge_case (25): negative results, decimals, fractions, thousands
  separators (`2,000`), units in the answer (`3000 m`), yes/no questions.
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from reasoning import tasks  # noqa: E402
from stages import paths  # noqa: E402
from stages.common import StageError, run_stage, validate, write_jsonl  # noqa: E402

EVAL_SEED = 20250917  # the eval set's own seed; training uses base.seed
SECTION_PREFIX = {"core": "core", "trace_sensitive": "trace", "edge_case": "edge"}


class Slot(NamedTuple):
    generator: str
    difficulty: str
    count: int
    style: str = "plain"  # how the expected answer is written: plain | commas | unit
    min_computes: int = 0  # the least number of compute steps an item must need


PLAN: dict[str, tuple[Slot, ...]] = {
    "core": (
        Slot("arithmetic.chain", "medium", 20),
        Slot("arithmetic.chain", "hard", 4),
        Slot("rate.total", "medium", 3),
        Slot("rate.unit_rate", "medium", 3),
        Slot("percentage.of", "medium", 3),
        Slot("percentage.change", "medium", 3),
        Slot("cost_per_item.total", "medium", 3),
        Slot("cost_per_item.unit_price", "medium", 2),
        Slot("cost_per_item.change", "medium", 1),
        Slot("unit_conversion.simple", "easy", 1),
        Slot("unit_conversion.mixed", "medium", 5),
        Slot("comparison.difference", "medium", 2),
        Slot("comparison.who", "medium", 2),
        Slot("comparison.yes_no", "medium", 2),
        Slot("sequence.arithmetic", "medium", 6),
    ),
    "trace_sensitive": (
        Slot("arithmetic.chain", "hard", 8, min_computes=3),
        Slot("rate.total", "hard", 1),
        Slot("percentage.change", "hard", 1),
        Slot("cost_per_item.change", "hard", 1),
        Slot("unit_conversion.mixed", "hard", 1),
        Slot("comparison.difference", "hard", 1),
        Slot("comparison.yes_no", "hard", 1),
        Slot("sequence.arithmetic", "hard", 1, min_computes=3),
        Slot("string.reverse", "medium", 2),
        Slot("string.reverse", "hard", 2),
        Slot("string.count_letter", "medium", 2),
        Slot("string.count_letter", "hard", 1),
        Slot("string.first_letters", "medium", 1),
        Slot("string.first_letters", "hard", 2),
    ),
    "edge_case": (
        Slot("arithmetic.negative", "easy", 1),
        Slot("arithmetic.negative", "medium", 2),
        Slot("arithmetic.negative", "hard", 1),
        Slot("arithmetic.decimal", "easy", 1),
        Slot("arithmetic.decimal", "medium", 2),
        Slot("arithmetic.decimal", "hard", 1),
        Slot("arithmetic.fraction", "easy", 2),
        Slot("arithmetic.fraction", "medium", 2),
        Slot("arithmetic.fraction", "hard", 1),
        Slot("arithmetic.thousands", "easy", 1, "commas"),
        Slot("arithmetic.thousands", "medium", 2, "commas"),
        Slot("arithmetic.thousands", "hard", 1, "commas"),
        Slot("unit_conversion.simple", "easy", 3, "unit"),
        Slot("unit_conversion.mixed", "medium", 1, "unit"),
        Slot("comparison.yes_no", "medium", 3),
        Slot("comparison.yes_no", "hard", 1),
    ),
}


def _fits(task: tasks.Task, slot: Slot) -> bool:
    if sum(kind == "compute" for kind, _ in task.steps) < slot.min_computes:
        return False
    if slot.style == "commas" and "," not in task.display_answer("commas"):
        return False  # an edge case only when the answer has a separator to write
    return True


def build_items(seed: int = EVAL_SEED) -> list[tuple[dict, tasks.Task]]:
    """Every eval item with the task (and so the steps) it was generated from."""
    rng = random.Random(seed)
    seen: set[str] = set()
    out: list[tuple[dict, tasks.Task]] = []
    for section, slots in PLAN.items():
        number = 0
        for slot in slots:
            for _ in range(slot.count):
                while True:
                    task = tasks.generate(slot.generator, slot.difficulty, random.Random(rng.getrandbits(32)))
                    key = tasks.normalize_prompt(task.prompt)
                    if key not in seen and _fits(task, slot):
                        break
                seen.add(key)
                number += 1
                item = {
                    "id": f"{SECTION_PREFIX[section]}-{number:03d}",
                    "prompt": task.prompt,
                    "expected_answer": task.display_answer(slot.style),
                    "section": section,
                    "category": task.category,
                    "difficulty": task.difficulty,
                    "answer_type": task.answer_type,
                }
                validate(item, "eval_item", f"{paths.EVALSET}: item {item['id']}")
                out.append((item, task))
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / paths.EVALSET, help="where to write (default: %(default)s)")
    parser.add_argument("--check", action="store_true", help="only check that --out holds exactly this eval set")
    args = parser.parse_args(argv)
    items = [item for item, _ in build_items()]
    if args.check:
        import json

        expected = "".join(json.dumps(i, sort_keys=True, ensure_ascii=False) + "\n" for i in items).encode()
        try:
            actual = args.out.read_bytes()
        except FileNotFoundError:
            raise StageError(f"{args.out}: file not found") from None
        if actual != expected:
            raise StageError(f"{args.out}: differs from what scripts/make_evalset.py generates; rerun it")
        print(f"{args.out}: up to date ({len(items)} items)")
        return
    write_jsonl(args.out, items)
    print(f"wrote {len(items)} eval items to {args.out}")


if __name__ == "__main__":
    run_stage(main)
