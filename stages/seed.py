"""The `seed` stage: the training traces `data/train.jsonl`, their manifest and the decontamination report.

    python -m stages.seed

Reads params `base.seed`, the `seed` section and `evaluate.sets`. The
sources of `seed.sources` (stages/sources.py: the synthetic generators of
`reasoning/tasks/` weighted by `seed.mix`, GSM8K-format files, any JSONL,
JSON, Parquet, CSV or Arrow file) share `seed.size` by weight, each capped by
its `limit`. No training prompt may be contaminated with an eval prompt of any
configured eval set (stages/decontam.py): the synthetic generator redraws a
prompt equal to an eval prompt; an imported record equal to one, or sharing 13
words in a row with one, is dropped (or fails the stage, `seed.decontamination:
fail`); a final check fails loudly on any equal prompt that remains.
`data/train_manifest.json` counts per source, category, difficulty and
generator and records each imported file's sha256; `data/decontamination.json`
counts what each eval set caught, per rule.

Same params, same bytes: no timestamps, no global random state.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from reasoning import tasks, worked
from stages import decontam, evalsets, paths, sources
from stages.common import (
    StageError,
    load_params,
    params_where,
    run_stage,
    sha256_file,
    validate,
    write_json,
    write_jsonl,
)

MAX_ATTEMPTS = 1000  # fresh draws per trace before giving up on avoiding eval prompts
POLICIES = ("drop", "fail")


# ---------------------------------------------------------------- eval prompts


def check_no_leaks(records: Iterable[Mapping], eval_index: Mapping[str, str], where: str | Path = paths.TRAIN) -> None:
    """Fail on the first training prompt that equals an eval prompt (after normalisation).

    `eval_index`: normalised eval prompt -> what to call it (`core-012 of eval set tunix`).
    """
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
        raise StageError(
            f"{params_where('seed', 'mix')}: seed.mix: every weight is 0; give a task family a positive weight"
        )
    quotas = {family: size * w / total for family, w in weights.items()}
    counts = {family: int(q) for family, q in quotas.items()}
    by_remainder = sorted(tasks.FAMILIES, key=lambda f: (-(quotas[f] - counts[f]), tasks.FAMILIES.index(f)))
    for family in by_remainder[: size - sum(counts.values())]:
        counts[family] += 1
    return counts


def generate_dataset(
    size: int, mix: Mapping[str, float], seed: int, eval_prompts: Iterable[str] = (), rejected: list[str] | None = None
) -> tuple[list[dict], int]:
    """`size` synthetic traces and how many drawn prompts were skipped for equalling an eval prompt.

    Family counts follow `mix` exactly (largest remainder), in an order shuffled
    by `seed`. Each trace's `meta.seed` regenerates it:
    `tasks.sample_task(family, random.Random(meta["seed"]))`. Each skipped
    prompt is appended to `rejected` when it is given.
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
            if rejected is not None:
                rejected.append(task.prompt)
        else:
            raise StageError(
                f"{paths.EVALSETS}: prompt: every {family} task drawn equals an eval prompt; "
                "the eval sets cover the whole family"
            )
        records.append(task.trace(f"{task.category}-{index:06d}", task_seed))
    return records, skipped


def build_dataset(size: int, mix: Mapping[str, float], seed: int, eval_prompts: Iterable[str] = ()) -> list[dict]:
    """`size` synthetic traces (see `generate_dataset`), none equal to an eval prompt."""
    return generate_dataset(size, mix, seed, eval_prompts)[0]


# ---------------------------------------------------------------- GSM8K


def import_gsm8k(path: str | Path, seed: int = 0) -> list[dict]:
    """Traces from a GSM8K-format JSONL file (`question`, `answer` with `<<…>>` and `#### 72`).

    One `compute` step per answer line (calculator annotations removed), the
    final answer from the `####` line (commas stripped). Errors name file:line:field.
    """
    src = sources.Source(None, "gsm8k", "gsm8k", path=str(path))
    return [sources.trace(src, *row, seed=seed, number=row[0]) for row in sources.gsm8k_rows(src)]


# ---------------------------------------------------------------- manifest


def count_records(records: Iterable[Mapping]) -> dict[str, dict[str, int]]:
    by_category = dict.fromkeys(tasks.CATEGORIES, 0)
    by_difficulty = dict.fromkeys(tasks.DIFFICULTIES, 0)
    by_generator: Counter[str] = Counter()
    for record in records:
        meta = record["meta"]
        by_category[meta["category"]] = by_category.get(meta["category"], 0) + 1
        by_difficulty[meta["difficulty"]] += 1
        by_generator[meta["generator"]] += 1
    return {
        "by_category": by_category,
        "by_difficulty": by_difficulty,
        "by_generator": dict(sorted(by_generator.items())),
    }


# ---------------------------------------------------------------- the stage


# Step type -> its working (reasoning/worked.py).
_WORKING = {"compute": worked.show_work, "compare": worked.show_comparison}


def with_work(record: dict) -> dict:
    """The trace with every compute step worked column by column, every comparison digit by digit."""
    steps = [
        {**s, "content": _WORKING[s["type"]](s["content"])} if s["type"] in _WORKING else s for s in record["steps"]
    ]
    return {**record, "steps": steps}


def _imported_rows(
    src: sources.Source, index: decontam.EvalIndex, policy: str, report: dict, root: Path
) -> tuple[list, int]:
    """(rows kept, rows dropped) of a file-backed source: contaminated rows are dropped (counted per
    set and rule in `report`) or refused."""
    rows = sources.gsm8k_rows(src, root) if src.type == "gsm8k" else sources.file_rows(src, root)
    kept, dropped = [], 0
    for row in rows:
        hits = index.hits(row[1])
        if not hits:
            kept.append(row)
            continue
        if policy == "fail":
            raise StageError(f"{src.path}: row {row[0]}: prompt: {hits[0].describe()} (seed.decontamination: fail)")
        dropped += 1
        for hit in hits:
            report[hit.set][f"dropped_{hit.rule}"] += 1
    return kept, dropped


def _pick(rows: list, n: int, seed: int, name: str) -> list:
    """`n` of `rows`: all of them, or a sample drawn with `seed` (in file order)."""
    if n >= len(rows):
        return rows
    chosen = sorted(random.Random(f"{seed}:{name}").sample(range(len(rows)), n))
    return [rows[i] for i in chosen]


def build(params: Mapping[str, Any], root: Path = Path(".")) -> tuple[list[dict], dict, dict]:
    """(traces, manifest without its sha256, decontamination report) for the params."""
    base, cfg = params["base"], params["seed"]
    policy = cfg.get("decontamination", "drop")
    srcs = sources.configured(cfg, root)
    sets = evalsets.configured(params, root)
    items = {s.name: evalsets.load_items(s, root) for s in sets}
    index = decontam.EvalIndex(items)
    report = {
        s.name: {
            "path": s.path.as_posix(),
            "format": s.format,
            "sha256": sha256_file(root / s.path),
            "prompts": len(items[s.name]),
            "redrawn": 0,
            "dropped_exact": 0,
            "dropped_ngram": 0,
            "synthetic_ngram_shared": 0,
        }
        for s in sets
    }
    imported = {src.name: _imported_rows(src, index, policy, report, root) for src in srcs if src.type != "synthetic"}
    caps = {
        src.name: min(
            src.limit if src.limit is not None else math.inf,
            len(imported[src.name][0]) if src.name in imported else math.inf,
        )
        for src in srcs
    }
    counts = sources.apportion(cfg["size"], {src.name: src.weight for src in srcs}, caps)
    by_source: dict[str, list[dict]] = {}
    numbers = Counter()
    summary = []
    for src in srcs:
        entry = {
            "name": src.name,
            "type": src.type,
            "weight": src.weight,
            "limit": src.limit,
            "records": counts[src.name],
        }
        if src.type == "synthetic":
            rejected: list[str] = []
            records, _ = generate_dataset(counts[src.name], cfg["mix"], base["seed"], index.prompts(), rejected)
            for prompt in rejected:
                for hit in index.exact_hits(prompt):
                    report[hit.set]["redrawn"] += 1
            for record in records:
                for hit in index.ngram_hits(record["prompt"]):
                    report[hit.set]["synthetic_ngram_shared"] += 1
            entry["redrawn"] = len(rejected)
        else:
            kept, dropped = imported[src.name]
            rows = _pick(kept, counts[src.name], base["seed"], src.name)
            records = []
            for row in rows:
                numbers[src.type] += 1
                records.append(sources.trace(src, *row, seed=base["seed"], number=numbers[src.type]))
            entry.update(
                {
                    "path": src.path,
                    "sha256": sha256_file(root / src.path),
                    "rows": len(kept) + dropped,
                    "dropped": dropped,
                }
            )
        by_source[src.name] = records
        summary.append(entry)
    records = [r for src in srcs for r in by_source[src.name]]
    if len(srcs) > 1:  # mixed: interleave the sources (the trainer packs neighbouring traces into one row)
        random.Random(base["seed"]).shuffle(records)
    if not records:
        raise StageError(
            f"{params_where('seed', 'sources', root=root)}: seed.sources: no traces "
            "(every source is empty, capped at 0 or dropped by decontamination)"
        )
    if cfg["show_work"]:
        records = [with_work(r) for r in records]
    check_no_leaks(records, {p: f"{ids[0][1]} of eval set {ids[0][0]}" for p, ids in index.exact.items()}, paths.TRAIN)
    manifest = {
        "size": len(records),
        "requested": cfg["size"],
        "seed": base["seed"],
        "mix": dict(cfg["mix"]),
        "sources": summary,
        "counts": {**count_records(records), "by_source": {name: len(recs) for name, recs in by_source.items()}},
        "sha256": "0" * 64,  # filled in once the file is written
        "decontamination": {
            "policy": policy,
            "ngram": decontam.NGRAM,
            "redrawn": sum(r["redrawn"] for r in report.values()),
            "dropped": sum(r["dropped_exact"] + r["dropped_ngram"] for r in report.values()),
            "report": paths.DECONTAMINATION.as_posix(),
        },
    }
    return records, manifest, {"policy": policy, "ngram": decontam.NGRAM, "sets": report}


def run(params: Mapping[str, Any], root: str | Path = ".") -> dict:
    """Write `data/train.jsonl`, `data/train_manifest.json` and `data/decontamination.json` under `root`;
    return the manifest."""
    root = Path(root)
    records, manifest, report = build(params, root)
    validate(manifest, "train_manifest", str(paths.TRAIN_MANIFEST))  # before anything is written
    validate(report, "decontamination", str(paths.DECONTAMINATION))
    write_jsonl(root / paths.TRAIN, records)
    manifest["sha256"] = sha256_file(root / paths.TRAIN)
    write_json(root / paths.TRAIN_MANIFEST, manifest)
    write_json(root / paths.DECONTAMINATION, report)
    return manifest


def main() -> None:
    params = load_params()
    manifest = run(params)
    counts = ", ".join(f"{k} {v}" for k, v in manifest["counts"]["by_source"].items())
    deco = manifest["decontamination"]
    print(
        f"seed: wrote {manifest['size']} traces to {paths.TRAIN} ({counts}); against "
        f"{len(params['evaluate']['sets'])} eval set(s): redrew {deco['redrawn']} synthetic prompts, dropped {deco['dropped']} imported records "
        f"(details: {paths.DECONTAMINATION})"
    )


if __name__ == "__main__":
    run_stage(main)
