"""An eval set read from any table file (`evaluate.sets.<name>.format: file`): rows -> eval items.

    bbh:
      path: evalsets/bbh_sample.jsonl       # JSONL, JSON, Parquet, CSV or Arrow (stages/tables.py)
      format: file
      fields: {prompt: input, answer: target, id: id, choices: choices, answer_type: answer_type,
               reasoning: reasoning, exemplar: exemplar, task: task}
      answer_type: choice                   # for rows whose answer_type field does not say (default: number)
      few_shot: 3                           # exemplars before each prompt (for base models)

`fields` maps a role to the file's field: prompt and answer (required; they
default to fields of those names), id (else `item-0001`, … by row), choices
(a list of option texts, for choice answers), answer_type (per row), reasoning
and exemplar (few-shot exemplar rows: `exemplar` true, with their reasoning;
they are not scored). Every other key is a breakdown (task, category,
difficulty, …): evaluate reports accuracy per value of each. An item's
exemplars are the exemplar rows whose breakdown values all equal its own, in
file order. Every mistake is one line naming the file and line (JSONL) or row,
or the params.yaml line of the mapping.

A set whose answers no rule can check (a summary, a plan, a poem) is judged:

    open_ended:
      path: evalsets/open_ended_v1.jsonl
      format: file
      answer_type: judged                   # no answer to check: the judge's rubric score is the set's score
      judge: true                           # required: judge@open_ended asks params judge (docs/judge.md)
      fields: {id: id, prompt: prompt, rubric: rubric, domain: domain}

Its rows have a prompt and optionally a rubric (`[{criterion, weight, pitfall}]`,
reasoning/judge.py; a row without one is judged with the default rubric); it
takes no answer, choices, answer_type, reasoning or exemplar field and no
few-shot, and it cannot be the primary set (the run's primary score is one a
rule checks). `check_judged` holds these params rules; every stage that reads
evaluate.sets runs it, so `dvc repro` stops at its first stage with one line.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reasoning.scoring import ANSWER_TYPES, score_answer
from stages import tables
from stages.common import StageError, param_error, params_where

if TYPE_CHECKING:  # evalsets imports this module
    from stages.evalsets import EvalSet

ROLES = ("prompt", "answer", "id", "choices", "answer_type", "reasoning", "exemplar", "rubric")
DEFAULT_FIELDS = {"prompt": "prompt", "answer": "answer"}
# A set-level answer type, not a scoring rule (reasoning/scoring.py has none for it): the judge scores the set.
JUDGED = "judged"
SET_ANSWER_TYPES = (*ANSWER_TYPES, JUDGED)  # what evaluate.sets.<set>.answer_type and scorecards name
JUDGED_FIELDS = {"prompt": "prompt", "rubric": "rubric"}  # a judged set's defaults (rubric only if the file has it)
NOT_JUDGED_ROLES = ("answer", "choices", "answer_type", "reasoning", "exemplar")  # what a judged set has not
SECTION = "core"  # the fixed sections of our own set (core, trace_sensitive, edge_case) mean nothing here
UNRATED = "unrated"  # the difficulty of an item whose file gives none


def breakdowns(fields: Mapping[str, str]) -> list[str]:
    """The breakdown names of a fields mapping (every key that is not a role), in params order."""
    return [key for key in fields if key not in ROLES]


def check_judged(name: str, spec: Mapping[str, Any], root: Path = Path(".")) -> None:
    """The params rules of a judged set (`answer_type: judged`), each a one-line error naming its key."""
    keys = ("evaluate", "sets", name)
    if not spec.get("judge", False):
        raise param_error(
            *keys,
            "answer_type",
            root=root,
            message=f"a judged set needs the judge: add judge: true to evaluate.sets.{name} "
            "(and point params judge at a judge model, docs/judge.md)",
        )
    if spec.get("primary", False):
        raise param_error(
            *keys,
            "primary",
            root=root,
            message="a judged set cannot be primary: the run's primary_score is checked by rule",
        )
    if spec.get("few_shot", 0):
        raise param_error(*keys, "few_shot", root=root, message="a judged set has no exemplars to show")
    for role in NOT_JUDGED_ROLES:
        if role in (spec.get("fields") or {}):
            raise param_error(
                *keys, "fields", role, root=root, message=f"a judged set has no {role}: the judge scores each reply"
            )


def _rubric(value: Any, where: str, name: str) -> list:
    """A row's rubric, checked as the judge reads it (reasoning/judge.py parse_rubric)."""
    # Imported here: only judge@ and evaluate@ read a rubric's meaning, and they declare reasoning/judge.py;
    # predict and seed, which read eval sets too, must not re-run when the judge's code changes.
    from reasoning.judge import JudgeError, parse_rubric

    try:
        parse_rubric(value, name)
    except JudgeError as err:
        raise StageError(f"{where}: {err}") from None
    return value


def _text(value: Any, where: str, name: str) -> str:
    """A field as text: strings, numbers and booleans; blank or anything else is an error."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None or not isinstance(value, (str, int, float)):
        what = "missing or null" if value is None else f"expected text, got {type(value).__name__}"
        raise StageError(f"{where}: {name}: {what}")
    text = str(value).strip()
    if not text:
        raise StageError(f"{where}: {name}: empty")
    return text


def _choices(value: Any, where: str, name: str) -> list[str]:
    if not isinstance(value, list) or len(value) < 2:
        raise StageError(f"{where}: {name}: expected a list of at least two options")
    return [_text(v, where, f"{name}[{i}]") for i, v in enumerate(value)]


class FileSet:
    """The rows of one `format: file` eval set, read and checked: its items and its exemplars."""

    def __init__(self, evalset: EvalSet, root: Path = Path(".")):
        self.evalset = evalset
        self.root = root
        self.judged = evalset.answer_type == JUDGED
        self.fields = {**(JUDGED_FIELDS if self.judged else DEFAULT_FIELDS), **evalset.fields}
        path = root / evalset.path
        rows = tables.read_rows(path, tables.table_format(evalset.path), evalset.path)
        if not rows:
            raise StageError(f"{evalset.path}: no rows")
        self._check_fields(rows)
        self.items: list[dict] = []
        self.exemplars: list[dict] = []
        seen: dict[str, str] = {}
        for k, (where, row) in enumerate(rows, start=1):
            record = self._record(k, where, row)
            if record.pop("exemplar"):
                self.exemplars.append(record)
                continue
            if record["id"] in seen:
                raise StageError(
                    f"{where}: {self.fields.get('id', 'id')}: duplicate id {record['id']!r} "
                    f"(first at {seen[record['id']]})"
                )
            seen[record["id"]] = where
            self.items.append(record)
        if not self.items:
            raise StageError(f"{evalset.path}: no rows to score (every row is an exemplar)")

    def _where(self, *keys: str) -> str:
        name = self.evalset.name
        return f"{params_where('evaluate', 'sets', name, *keys, root=self.root)}: evaluate.sets.{name}.{'.'.join(keys)}"

    def _check_fields(self, rows: list[tuple[str, dict]]) -> None:
        """Every field the mapping names is a field of the file (of some row: options are on choice rows only)."""
        columns: dict[str, None] = {}
        for _, row in rows:
            columns.update(dict.fromkeys(row))
        if "rubric" not in self.evalset.fields and self.fields.get("rubric") not in columns:
            self.fields.pop("rubric", None)  # a judged file without rubrics: the default rubric for every row
        for role, name in self.fields.items():
            if role == "section":
                raise StageError(
                    f"{self._where('fields', role)}: section is our own set's; name the breakdown otherwise"
                )
            if name not in columns:
                raise StageError(
                    f"{self._where('fields', role)}: {name!r} is not a field of {self.evalset.path} "
                    f"(fields: {', '.join(columns)})"
                )
        if self.evalset.few_shot and not {"exemplar", "reasoning"} <= set(self.fields):
            raise StageError(
                f"{self._where('few_shot')}: few_shot needs exemplar rows: map fields.exemplar "
                "(true on an exemplar row) and fields.reasoning"
            )

    def _record(self, k: int, where: str, row: Mapping[str, Any]) -> dict:
        f = self.fields
        exemplar = row.get(f["exemplar"], False) if "exemplar" in f else False
        if exemplar not in (True, False, None):
            raise StageError(f"{where}: {f['exemplar']}: expected true or false, got {exemplar!r}")
        answer_type = self.evalset.answer_type
        if "answer_type" in f and row.get(f["answer_type"]) is not None:
            answer_type = row[f["answer_type"]]
            if answer_type not in ANSWER_TYPES:
                raise StageError(
                    f"{where}: {f['answer_type']}: unknown answer type {answer_type!r} "
                    f"(one of {', '.join(ANSWER_TYPES)})"
                )
        record = {
            "id": _text(row.get(f["id"]), where, f["id"]) if "id" in f else f"item-{k:04d}",
            "prompt": _text(row.get(f["prompt"]), where, f["prompt"]),
            "expected_answer": None if self.judged else _text(row.get(f["answer"]), where, f["answer"]),
            "answer_type": answer_type,
            "section": SECTION,
            "exemplar": bool(exemplar),
            "groups": {
                name: _text(row.get(f[name]), where, f[name])
                for name in breakdowns(f)
                if name not in ("category", "difficulty")
            },
        }
        record["category"] = _text(row.get(f["category"]), where, f["category"]) if "category" in f else "general"
        record["difficulty"] = _text(row.get(f["difficulty"]), where, f["difficulty"]) if "difficulty" in f else UNRATED
        if "choices" in f and row.get(f["choices"]) is not None:
            record["choices"] = _choices(row[f["choices"]], where, f["choices"])
        elif answer_type == "choice":
            raise StageError(
                f"{where}: {f.get('choices', 'choices')}: a choice answer needs its options "
                "(a list, the field fields.choices names)"
            )
        if "rubric" in f and row.get(f["rubric"]) is not None:
            record["rubric"] = _rubric(row[f["rubric"]], where, f["rubric"])
        if self.judged:
            return record
        try:  # the answer must read as its type: a number, one of the options, math, …
            score_answer(None, record["expected_answer"], answer_type, 0.0, 0.0, record.get("choices"))
        except ValueError as err:
            raise StageError(f"{where}: {f['answer']}: {err}") from None
        if record["exemplar"]:
            if "reasoning" not in f:
                raise StageError(
                    f"{where}: {f['exemplar']}: an exemplar row needs its reasoning (map fields.reasoning)"
                )
            record["reasoning"] = _text(row.get(f["reasoning"]), where, f["reasoning"])
        return record

    def few_shot_prompts(self) -> list[str]:
        """Each item's prompt after `few_shot` of its exemplars (each answered in our format)."""
        n = self.evalset.few_shot
        if n == 0:
            return [item["prompt"] for item in self.items]
        out = []
        for item in self.items:
            key = (item["category"], item["difficulty"], item["groups"])
            shots = [e for e in self.exemplars if (e["category"], e["difficulty"], e["groups"]) == key][:n]
            if len(shots) < n:
                raise StageError(
                    f"{self._where('few_shot')}: {n} exemplars asked, item {item['id']} of "
                    f"{self.evalset.path} has {len(shots)}"
                )
            out.append(
                "".join(
                    f"{e['prompt']}\n<reasoning>{e['reasoning']}</reasoning><answer>{e['expected_answer']}</answer>\n\n"
                    for e in shots
                )
                + item["prompt"]
            )
        return out
