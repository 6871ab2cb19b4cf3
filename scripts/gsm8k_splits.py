"""Write the project's GSM8K files from a copy of openai/grade-school-math (MIT licence).

    python scripts/gsm8k_splits.py /path/to/grade-school-math/grade_school_math/data

- evalsets/gsm8k_test_sample.jsonl: a fixed sample of the test split (the benchmark; report on it,
  never tune on it);
- trainsets/gsm8k/dev.jsonl: a fixed sample of the train split, held out of training (choose recipes here);
- trainsets/gsm8k/train.jsonl: the rest of the train split (a `seed.sources` entry of type gsm8k).

Lines are copied byte for byte in their upstream order; the samples are drawn with fixed seeds,
so the same upstream files give the same bytes.
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TEST_SAMPLE = 250
DEV_SAMPLE = 250


def sample(lines: list[bytes], k: int, seed: int) -> tuple[list[bytes], list[bytes]]:
    """(the k drawn lines, the rest), both in upstream order."""
    chosen = set(random.Random(seed).sample(range(len(lines)), k))
    drawn = [line for i, line in enumerate(lines) if i in chosen]
    return drawn, [line for i, line in enumerate(lines) if i not in chosen]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", type=Path, help="grade_school_math/data of openai/grade-school-math")
    args = parser.parse_args()
    test = (args.data / "test.jsonl").read_bytes().splitlines(keepends=True)
    train = (args.data / "train.jsonl").read_bytes().splitlines(keepends=True)
    test_sample, _ = sample(test, TEST_SAMPLE, seed=0)
    dev, rest = sample(train, DEV_SAMPLE, seed=1)
    outputs = {
        ROOT / "evalsets/gsm8k_test_sample.jsonl": test_sample,
        ROOT / "trainsets/gsm8k/dev.jsonl": dev,
        ROOT / "trainsets/gsm8k/train.jsonl": rest,
    }
    for path, lines in outputs.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"".join(lines))
        print(f"{path.relative_to(ROOT)}: {len(lines)} problems")


if __name__ == "__main__":
    main()
