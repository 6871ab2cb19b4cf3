"""The `seed` stage: the training traces `data/train.jsonl` and their manifest.

    python -m stages.seed

Reads params `base.seed` and the `seed` section. `seed.source: synthetic`
draws `seed.size` traces from the generators of `reasoning/tasks.py`, the task
families weighted by `seed.mix`; `seed.source: gsm8k` imports a local JSONL
file in GSM8K format (`seed.gsm8k_path`). Either way no training prompt may
equal an eval prompt of `evalsets/tunix_eval_v1.jsonl`: the synthetic
generator skips such prompts (counted in the manifest), and a final check
fails loudly on any that remain.

Same params, same bytes: no timestamps, no global random state.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from reasoning import tasks, worked
from stages import paths
from stages.common import (
    StageError,
    load_params,
    params_where,
    read_jsonl,
    run_stage,
    sha256_file,
    validate,
    write_json,
    write_jsonl,
)


MAX_ATTEMPTS = 1000  # fresh draws per trace before giving up on avoiding eval prompts


# ---------------------------------------------------------------- eval prompts


def load_eval_index(path: str | Path) -> dict[str, str]:
    """Normalised eval prompt -> eval item id, from a schema-valid eval set."""
    items = read_jsonl(path, schema="eval_item")
    return {tasks.normalize_prompt(item["prompt"]): item["id"] for item in items}


def check_no_leaks(records: Iterable[Mapping], eval_index: Mapping[str, str], where: str | Path = paths.TRAIN) -> None:
    """Fail on the first training prompt that equals an eval prompt (after normalisation)."""
    for lineno, record in enumerate(records, start=1):
        hit = eval_index.get(tasks.normalize_prompt(record["prompt"]))
        if hit is not None:
            raise StageError(f"{where}:{lineno}: prompt: equals eval item {hit} (leaked eval prompt)")


# ---------------------------------------------------------------- synthetic


def apportion(size: int, mix: Mapping[str, float]) -> dict[str, int]:
    """Split `size` over the task families in proportion to `mix` (largest remainder; ties by family order)."""
    weights = {family: float(mix.get(family, 0)) for family in tasks.FAMILIES}
    total = sum(weights.values())
    if total <= 0:
        raise StageError(f"{params_where('seed', 'mix')}: seed.mix: every weight is 0; give a task family a positive weight")
    quotas = {family: size * w / total for family, w in weights.items()}
    counts = {family: int(q) for family, q in quotas.items()}
    by_remainder = sorted(tasks.FAMILIES, key=lambda f: (-(quotas[f] - counts[f]), tasks.FAMILIES.index(f)))
    for family in by_remainder[: size - sum(counts.values())]:
        counts[family] += 1
    return counts


def generate_dataset(
    size: int, mix: Mapping[str, float], seed: int, eval_prompts: Iterable[str] = ()
) -> tuple[list[dict], int]:
    """`size` synthetic traces and how many drawn prompts were skipped for equalling an eval prompt.

    Family counts follow `mix` exactly (largest remainder), in an order shuffled
    by `seed`. Each trace's `meta.seed` regenerates it:
    `tasks.sample_task(family, random.Random(meta["seed"]))`.
    """
    banned = {tasks.normalize_prompt(p) for p in eval_prompts}
    counts = apportion(size, mix)
    rng = random.Random(seed)
    families = [family for family in tasks.FAMILIES for _ in range(counts[family])]
    rng.shuffle(families)
    records: list[dict] = []
    skipped = 0
    for index, family in enumerate(families, start=1):
        for _ in range(MAX_ATTEMPTS):
            task_seed = rng.getrandbits(32)
            task = tasks.sample_task(family, random.Random(task_seed))
            if tasks.normalize_prompt(task.prompt) not in banned:
                break
            skipped += 1
        else:
            raise StageError(f"{paths.EVALSET}: prompt: every {family} task drawn equals an eval prompt; the eval set covers the whole family")
        records.append(task.trace(f"{task.category}-{index:06d}", task_seed))
    return records, skipped


def build_dataset(size: int, mix: Mapping[str, float], seed: int, eval_prompts: Iterable[str] = ()) -> list[dict]:
    """`size` synthetic traces (see `generate_dataset`), none equal to an eval prompt."""
    return generate_dataset(size, mix, seed, eval_prompts)[0]


# ---------------------------------------------------------------- GSM8K

_ANNOTATION = re.compile(r"<<[^<>]*>>")
_FINAL = re.compile(r"^####\s*(.*?)\s*$")
_NUMBER = re.compile(r"^-?[0-9]+(\.[0-9]+)?$")


def _gsm8k_difficulty(n_steps: int) -> str:
    return "easy" if n_steps <= 2 else "medium" if n_steps <= 4 else "hard"


def import_gsm8k(path: str | Path, seed: int = 0) -> list[dict]:
    """Traces from a GSM8K-format JSONL file (`question`, `answer` with `<<…>>` and `#### 72`).

    One `compute` step per answer line (calculator annotations removed), the
    final answer from the `####` line (commas stripped). Errors name file:line:field.
    """
    path = Path(path)
    rows = read_jsonl(path, schema=None, id_field=None)
    linenos = [n for n, line in enumerate(path.read_bytes().split(b"\n"), start=1) if line.strip()]
    records = []
    for k, (lineno, row) in enumerate(zip(linenos, rows, strict=True), start=1):
        where = f"{path}:{lineno}"
        for key in ("question", "answer"):
            if key not in row:
                raise StageError(f"{where}: {key}: missing")
            if not isinstance(row[key], str) or not row[key].strip():
                raise StageError(f"{where}: {key}: expected a non-empty string")
        lines = [" ".join(line.split()) for line in row["answer"].split("\n")]
        lines = [line for line in lines if line]
        match = _FINAL.match(lines[-1])
        if match is None:
            raise StageError(f"{where}: answer: no final '#### <answer>' line")
        final = match.group(1).replace(",", "").removeprefix("$")
        if not _NUMBER.match(final):
            raise StageError(f"{where}: answer: final answer {match.group(1)!r} is not a number")
        steps = []
        for n, line in enumerate(lines[:-1], start=1):
            text = " ".join(_ANNOTATION.sub("", line).split())
            if "<<" in text or ">>" in text:
                raise StageError(f"{where}: answer: unbalanced '<<…>>' calculator annotation on answer line {n}")
            if text.startswith("####"):
                raise StageError(f"{where}: answer: more than one '####' line")
            if text:
                steps.append({"i": len(steps) + 1, "type": "compute", "content": text})
        if not steps:
            raise StageError(f"{where}: answer: no working lines before '#### {final}'")
        record = {
            "id": f"gsm8k-{k:06d}",
            "prompt": row["question"].strip(),
            "steps": steps,
            "final_answer": final,
            "meta": {
                "source": "gsm8k",
                "generator": "gsm8k",
                "category": "arithmetic",
                "difficulty": _gsm8k_difficulty(len(steps)),
                "seed": seed,
            },
        }
        validate(record, "trace", where)
        records.append(record)
    return records


# ---------------------------------------------------------------- manifest


def count_records(records: Iterable[Mapping]) -> dict[str, dict[str, int]]:
    by_category = dict.fromkeys(tasks.CATEGORIES, 0)
    by_difficulty = dict.fromkeys(tasks.DIFFICULTIES, 0)
    by_generator: Counter[str] = Counter()
    for record in records:
        meta = record["meta"]
        by_category[meta["category"]] += 1
        by_difficulty[meta["difficulty"]] += 1
        by_generator[meta["generator"]] += 1
    return {"by_category": by_category, "by_difficulty": by_difficulty, "by_generator": dict(sorted(by_generator.items()))}


# ---------------------------------------------------------------- the stage


# Step type -> its working (reasoning/worked.py).
_WORKING = {"compute": worked.show_work, "compare": worked.show_comparison}


def with_work(record: dict) -> dict:
    """The trace with every compute step worked column by column, every comparison digit by digit."""
    steps = [{**s, "content": _WORKING[s["type"]](s["content"])} if s["type"] in _WORKING else s
             for s in record["steps"]]
    return {**record, "steps": steps}


def run(params: Mapping[str, Any], root: str | Path = ".") -> dict:
    """Write `data/train.jsonl` and `data/train_manifest.json` under `root`; return the manifest."""
    root = Path(root)
    base, cfg = params["base"], params["seed"]
    eval_index = load_eval_index(root / paths.EVALSET)
    extra: dict[str, Any] = {}
    if cfg["source"] == "synthetic":
        records, skipped = generate_dataset(cfg["size"], cfg["mix"], base["seed"], eval_index)
    else:
        if not cfg.get("gsm8k_path"):
            raise StageError(f"{params_where('seed', 'gsm8k_path', root=root)}: seed.gsm8k_path: "
                             "required when seed.source is gsm8k")
        gsm8k_path = root / cfg["gsm8k_path"]
        records, skipped = import_gsm8k(gsm8k_path, base["seed"]), 0
        extra["gsm8k"] = {"path": str(cfg["gsm8k_path"]), "sha256": sha256_file(gsm8k_path)}
    if cfg["show_work"]:
        records = [with_work(r) for r in records]
    check_no_leaks(records, eval_index, paths.TRAIN)
    manifest = {
        "source": cfg["source"],
        "size": len(records),
        "seed": base["seed"],
        "mix": dict(cfg["mix"]),
        "counts": count_records(records),
        "sha256": "0" * 64,  # filled in once the file is written
        "decontamination": {
            "eval_set": paths.EVALSET.as_posix(),
            "eval_prompts": len(eval_index),
            "skipped_collisions": skipped,
        },
        **extra,
    }
    validate(manifest, "train_manifest", str(paths.TRAIN_MANIFEST))  # before anything is written
    write_jsonl(root / paths.TRAIN, records)
    manifest["sha256"] = sha256_file(root / paths.TRAIN)
    write_json(root / paths.TRAIN_MANIFEST, manifest)
    return manifest


def main() -> None:
    manifest = run(load_params())
    counts = ", ".join(f"{k} {v}" for k, v in manifest["counts"]["by_category"].items() if v)
    print(f"seed: wrote {manifest['size']} traces to {paths.TRAIN} ({counts}); "
          f"skipped {manifest['decontamination']['skipped_collisions']} eval-prompt collisions")


if __name__ == "__main__":
    run_stage(main)
