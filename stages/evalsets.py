"""Eval sets as params: `evaluate.sets`, name -> {path, format, primary}.

`predict` and `evaluate` run once per set (a `foreach` over `evaluate.sets` in
dvc.yaml); `seed` decontaminates against all of them; `report` takes
`primary_score` from the one marked `primary: true`. A set is our eval-item
JSONL (`format: items`, schemas/eval_item.schema.json), a GSM8K-format file
(`format: gsm8k`, JSONL or Parquet) whose `question` and `#### answer` become
items, or any table file whose fields params map (`format: file`,
stages/evalfile.py; with `answer_type: judged`, a set only the judge scores).
Sets live under `evalsets/`, the folder `seed` and `package` track.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from stages import evalfile, gsm8k, paths, tables
from stages.common import PARAMS_FILE, StageError, param_error, params_where, read_json, read_jsonl, validate

FORMATS = ("items", "gsm8k", "file")


@dataclass(frozen=True)
class EvalSet:
    name: str
    path: Path  # relative to the repository root
    format: str
    primary: bool
    fields: Mapping[str, str] = field(default_factory=dict)  # format file: role or breakdown -> the file's field
    answer_type: str = "number"  # format file: of every row whose answer_type field does not say; or judged
    few_shot: int = 0  # exemplars before each prompt (format file, rows marked by fields.exemplar)


def _duplicate_name(root: Path) -> str | None:
    """`params.yaml:LINE: …` for a set name given twice under evaluate.sets (YAML keeps the last silently)."""
    try:
        node = yaml.compose((root / PARAMS_FILE).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return None  # params given programmatically; a dict cannot repeat a key
    for key in ("evaluate", "sets"):
        if not isinstance(node, yaml.MappingNode):
            return None
        node = next((v for k, v in node.value if k.value == key), None)
    if not isinstance(node, yaml.MappingNode):
        return None
    first: dict[str, int] = {}
    for key_node, _ in node.value:
        line = key_node.start_mark.line + 1
        if key_node.value in first:
            return (
                f"{PARAMS_FILE}:{line}: evaluate.sets.{key_node.value}: set name used twice "
                f"(first on line {first[key_node.value]})"
            )
        first[key_node.value] = line
    return None


def configured(params: Mapping[str, Any], root: Path = Path(".")) -> list[EvalSet]:
    """Every configured eval set, in params order; exactly one is primary, each lives under evalsets/."""
    duplicate = _duplicate_name(root)
    if duplicate:
        raise StageError(duplicate)
    sets = params["evaluate"]["sets"]
    out = []
    for name, spec in sets.items():
        path = Path(spec["path"])
        if path.is_absolute() or paths.EVALSETS not in path.parents or ".." in path.parts:
            raise StageError(
                f"{params_where('evaluate', 'sets', name, 'path', root=root)}: evaluate.sets.{name}.path: "
                f"{spec['path']!r} is not under {paths.EVALSETS}/ (seed and package track that folder)"
            )
        if not (root / path).is_file():
            where = params_where("evaluate", "sets", name, "path", root=root)
            raise StageError(f"{spec['path']}: file not found ({where}: evaluate.sets.{name}.path)")
        out.append(_evalset(name, spec, path, root))
    primaries = [s.name for s in out if s.primary]
    if len(primaries) != 1:
        why = (
            "no set is marked primary: true"
            if not primaries
            else f"{len(primaries)} sets are marked primary ({', '.join(primaries)}); mark one"
        )
        raise StageError(f"{params_where('evaluate', 'sets', root=root)}: evaluate.sets: {why}")
    return out


def _evalset(name: str, spec: Mapping[str, Any], path: Path, root: Path) -> EvalSet:
    fmt = spec.get("format", "items")
    if fmt != "file":
        for key in ("fields", "answer_type", "few_shot"):
            if spec.get(key):
                raise param_error(
                    "evaluate",
                    "sets",
                    name,
                    key,
                    root=root,
                    message=f"only a set of format file takes {key} ({fmt} fixes its fields and answers)",
                )
    if spec.get("answer_type") == evalfile.JUDGED:
        evalfile.check_judged(name, spec, root)
    return EvalSet(
        name,
        path,
        fmt,
        bool(spec.get("primary", False)),
        dict(spec.get("fields") or {}),
        spec.get("answer_type", "number"),
        int(spec.get("few_shot", 0)),
    )


def primary(params: Mapping[str, Any], root: Path = Path(".")) -> EvalSet:
    return next(s for s in configured(params, root) if s.primary)


def named(params: Mapping[str, Any], name: str, root: Path = Path(".")) -> EvalSet:
    """The configured set called `name` (the argument a per-set stage is run with)."""
    sets = configured(params, root)
    for s in sets:
        if s.name == name:
            return s
    raise StageError(
        f"{params_where('evaluate', 'sets', root=root)}: evaluate.sets: no set named {name!r} "
        f"(configured: {', '.join(s.name for s in sets)})"
    )


def load_items(evalset: EvalSet, root: Path = Path(".")) -> list[dict]:
    """The set's eval items (schema-valid), whatever its format."""
    path = root / evalset.path
    if evalset.format == "items":
        return read_jsonl(path, schema="eval_item")
    if evalset.format == "file":
        return evalfile.FileSet(evalset, root).items
    return gsm8k_items(path, evalset.path)


def asked_items(evalset: EvalSet, root: Path = Path(".")) -> list[dict]:
    """The set's items, each `prompt` what the model is asked: after `few_shot` exemplars, if any."""
    if evalset.few_shot == 0:
        return load_items(evalset, root)
    fileset = evalfile.FileSet(evalset, root)
    return [{**item, "prompt": prompt} for item, prompt in zip(fileset.items, fileset.few_shot_prompts(), strict=True)]


def gsm8k_items(path: Path, shown: str | Path | None = None) -> list[dict]:
    """Eval items from a GSM8K-format file (JSONL, or Parquet as Hugging Face ships GSM8K): the question,
    the `####` number, difficulty by working lines."""
    fmt = tables.table_format(shown or path)
    items = []
    for k, (where, row) in enumerate(tables.read_rows(path, fmt, shown or path), start=1):
        question, steps, final = gsm8k.parse_row(row, where)
        item = {
            "id": f"core-{k:03d}",
            "prompt": " ".join(question.split()),
            "expected_answer": final,
            "section": "core",
            "category": "arithmetic",
            "difficulty": gsm8k.difficulty(len(steps)),
            "answer_type": "number",
        }
        validate(item, "eval_item", where)
        items.append(item)
    return items


def metrics_document(name: str, metrics: dict) -> dict:
    """What evaluate@<name> writes: the metrics under the set's name, so `dvc exp show` names each set's
    columns `<name>.primary_score`, … and `primary_score` alone stays the primary set's (reports/metrics.json)."""
    return {name: metrics}


def read_metrics(name: str, root: Path = Path(".")) -> dict:
    """Eval set `name`'s metrics as evaluate@<name> wrote them (reports/sets/<name>/metrics.json)."""
    path = paths.set_metrics(name)
    doc = read_json(root / path)
    if not isinstance(doc, dict) or list(doc) != [name]:
        raise StageError(f"{path}: <record>: expected the metrics under the one key {name!r} (run dvc repro)")
    validate(doc[name], "metrics", f"{path}: {name}")
    return doc[name]


def main_argument(argv: list[str], stage: str) -> str:
    """The set name a per-set stage is run with (`python -m stages.predict <set>`)."""
    if len(argv) != 2:
        raise StageError(f"{stage}: usage: python -m stages.{stage} <eval set name from evaluate.sets>")
    return argv[1]
