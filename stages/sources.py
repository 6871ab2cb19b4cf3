"""The training sources of the seed stage: `seed.sources`, mixed by weight and capped by limit.

    seed:
      size: 24000
      sources:
        - type: synthetic                  # reasoning/tasks/, families weighted by seed.mix
          weight: 3
        - type: gsm8k                      # a GSM8K-format file (JSONL, or Parquet as on Hugging Face)
          path: trainsets/gsm8k_train.jsonl
          weight: 1
          limit: 5000
        - type: file                       # JSONL, JSON, Parquet, CSV or Arrow, read with Hugging Face datasets
          path: trainsets/my_traces.parquet
          fields: {prompt: question, answer: final, reasoning: steps}   # or {messages: messages}

This module turns the params into `Source`s (every mistake a one-line error
naming the params.yaml line), splits `seed.size` over them, and reads the
file-backed ones into trace records. Generating synthetic traces and
decontamination stay in stages/seed.py and stages/decontam.py.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reasoning.answers import parse_completion
from stages import gsm8k, paths, tables
from stages.common import StageError, params_where, validate

TYPES = ("synthetic", "gsm8k", "file")
FIELDS = ("prompt", "answer", "reasoning", "messages")
DEFAULT_FIELDS = {"prompt": "prompt", "answer": "answer", "reasoning": "reasoning"}
FILE_CATEGORY = "general"  # a user's file says nothing of our task families


@dataclass(frozen=True)
class Source:
    index: int | None  # position in seed.sources (None: the legacy seed.source / seed.gsm8k_path keys)
    name: str
    type: str
    weight: float = 1.0
    limit: int | None = None
    path: str | None = None  # as written in params (relative to the repository root)
    format: str | None = None
    fields: Mapping[str, str] = field(default_factory=dict)

    def where(self, *keys: str, root: Path = Path(".")) -> str:
        """`params.yaml:LINE: seed.sources[i].key` for an error about this source."""
        if self.index is None:
            legacy = {"path": "gsm8k_path"}.get(keys[0], keys[0]) if keys else "source"
            return f"{params_where('seed', legacy, root=root)}: seed.{legacy}"
        dotted = "".join(f".{k}" for k in keys)
        return f"{params_where('seed', 'sources', self.index, *keys, root=root)}: seed.sources[{self.index}]{dotted}"


# ---------------------------------------------------------------- params -> sources


def configured(cfg: Mapping[str, Any], root: Path = Path(".")) -> list[Source]:
    """The sources of the `seed` params section, checked; the legacy single-source keys still work."""
    if "sources" not in cfg:  # seed.source: synthetic | gsm8k (+ seed.gsm8k_path), as before seed.sources
        legacy = Source(
            None, cfg.get("source", "synthetic"), cfg.get("source", "synthetic"), path=cfg.get("gsm8k_path")
        )
        if legacy.type == "gsm8k" and not legacy.path:
            raise StageError(f"{legacy.where('path', root=root)}: required when seed.source is gsm8k")
        if legacy.type == "gsm8k":
            _check_path(legacy, root)
        return [legacy]
    if "source" in cfg or "gsm8k_path" in cfg:
        key = "source" if "source" in cfg else "gsm8k_path"
        raise StageError(
            f"{params_where('seed', key, root=root)}: seed.{key}: replaced by seed.sources; "
            "remove it (seed.sources: [{type: gsm8k, path: …}] imports a GSM8K file)"
        )
    sources: list[Source] = []
    for i, raw in enumerate(cfg["sources"]):
        kind = raw["type"]
        default_name = Path(raw["path"]).stem if kind == "file" and raw.get("path") else kind
        fields = dict(raw.get("fields") or DEFAULT_FIELDS) if kind == "file" else {}
        src = Source(
            i,
            raw.get("name", default_name),
            kind,
            float(raw.get("weight", 1)),
            raw.get("limit"),
            raw.get("path"),
            raw.get("format"),
            fields,
        )
        if kind == "synthetic" and src.path is not None:
            raise StageError(f"{src.where('path', root=root)}: a synthetic source reads no file; remove path")
        if kind != "synthetic" and not src.path:
            raise StageError(f"{src.where('path', root=root)}: required for a {kind} source")
        if kind == "synthetic" and src.format:
            raise StageError(f"{src.where('format', root=root)}: a synthetic source reads no file; remove format")
        if kind != "file" and raw.get("fields"):
            raise StageError(f"{src.where('fields', root=root)}: only a file source takes fields")
        if kind != "synthetic":
            _check_path(src, root)
        if kind == "file":
            _check_fields(src, root)
        for other in sources:
            if other.name == src.name:
                raise StageError(
                    f"{src.where('name', root=root)}: source name {src.name!r} used twice "
                    f"(also seed.sources[{other.index}]); give each source its own name"
                )
            if kind == "synthetic" and other.type == "synthetic":
                raise StageError(
                    f"{src.where('type', root=root)}: only one synthetic source (seed.mix weights its families)"
                )
        sources.append(src)
    if not any(s.weight > 0 for s in sources):
        raise StageError(f"{params_where('seed', 'sources', root=root)}: seed.sources: every weight is 0")
    return sources


def _check_path(src: Source, root: Path) -> None:
    """An imported file lives under trainsets/ (the folder the seed stage tracks) and exists."""
    path = Path(src.path)
    if path.is_absolute() or paths.TRAINSETS not in path.parents or ".." in path.parts:
        raise StageError(
            f"{src.where('path', root=root)}: {src.path!r} is not under {paths.TRAINSETS}/ "
            "(the seed stage tracks that folder, so a changed file re-runs it)"
        )
    if not (root / path).is_file():
        raise StageError(f"{src.path}: file not found ({src.where('path', root=root)})")


def _check_fields(src: Source, root: Path) -> None:
    fields = src.fields
    if "messages" in fields and set(fields) - {"messages"}:
        raise StageError(
            f"{src.where('fields', root=root)}: give either messages (a chat export) or "
            "prompt, answer and reasoning, not both"
        )
    if "messages" not in fields and set(fields) != {"prompt", "answer", "reasoning"}:
        missing = sorted({"prompt", "answer", "reasoning"} - set(fields))
        raise StageError(
            f"{src.where('fields', root=root)}: missing {', '.join(missing)} "
            "(name the file's prompt, answer and reasoning fields, or its messages)"
        )


def file_format(src: Source, root: Path = Path(".")) -> str:
    """The source's format: as given, else from the file name's suffix."""
    return tables.table_format(src.path, src.format, src.where("format", root=root), "set seed.sources[…].format")


# ---------------------------------------------------------------- how many from each


def apportion(size: int, weights: Mapping[str, float], caps: Mapping[str, float]) -> dict[str, int]:
    """Split `size` over the sources in proportion to their weights, none above its cap.

    Largest remainder, ties by source order; what a capped source cannot give
    goes to the others by weight. When every source is capped the total is
    less than `size`.
    """
    counts = dict.fromkeys(weights, 0)
    active = [name for name, w in weights.items() if w > 0]
    remaining = size
    while active and remaining > 0:
        total = sum(weights[n] for n in active)
        quotas = {n: remaining * weights[n] / total for n in active}
        share = {n: math.floor(q) for n, q in quotas.items()}
        for n in sorted(active, key=lambda n: (-(quotas[n] - share[n]), active.index(n)))[
            : remaining - sum(share.values())
        ]:
            share[n] += 1
        capped = [n for n in active if share[n] >= caps[n]]
        if not capped:
            counts.update(share)
            break
        for n in capped:
            counts[n] = int(caps[n])
            remaining -= int(caps[n])
            active.remove(n)
    return counts


# ---------------------------------------------------------------- reading files


def _text(value: Any, where: str, name: str) -> str:
    """A field as one line of text: strings and numbers; anything else, or blank, is an error."""
    if value is None:
        raise StageError(f"{where}: {name}: empty")
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise StageError(f"{where}: {name}: expected text, got {type(value).__name__}")
    text = " ".join(str(value).split())
    if not text:
        raise StageError(f"{where}: {name}: empty")
    return text


def _steps(value: Any, where: str, name: str) -> list[str]:
    """Reasoning as steps: a text (one step per non-blank line) or a list of texts."""
    if isinstance(value, list):
        if not value:
            raise StageError(f"{where}: {name}: empty")
        return [_text(v, where, f"{name}[{i}]") for i, v in enumerate(value)]
    if value is None:
        raise StageError(f"{where}: {name}: empty")
    if not isinstance(value, str):
        raise StageError(f"{where}: {name}: expected text or a list of steps, got {type(value).__name__}")
    lines = [" ".join(line.split()) for line in value.splitlines()]
    lines = [line for line in lines if line]
    if not lines:
        raise StageError(f"{where}: {name}: empty")
    return lines


def _from_messages(row: Mapping, name: str, where: str) -> tuple[str, list[str], str]:
    """(prompt, steps, answer) of a chat record: the first user turn, and the last assistant
    turn's `<reasoning>…</reasoning><answer>…</answer>` (parsed as predict parses a completion)."""
    messages = row[name]
    if not isinstance(messages, list) or not all(isinstance(m, Mapping) for m in messages):
        raise StageError(f"{where}: {name}: expected a list of {{role, content}} turns")
    user = [i for i, m in enumerate(messages) if m.get("role") == "user"]
    assistant = [i for i, m in enumerate(messages) if m.get("role") == "assistant"]
    if not user:
        raise StageError(f"{where}: {name}: no user turn")
    if not assistant:
        raise StageError(f"{where}: {name}: no assistant turn")
    prompt = _text(messages[user[0]].get("content"), where, f"{name}[{user[0]}].content")
    turn = f"{name}[{assistant[-1]}].content"
    content = messages[assistant[-1]].get("content")
    if not isinstance(content, str):
        raise StageError(f"{where}: {turn}: expected text, got {type(content).__name__}")
    parsed = parse_completion(content)
    if parsed["reasoning"] is None:
        raise StageError(f"{where}: {turn}: no <reasoning>…</reasoning> block (or it is empty)")
    if parsed["answer"] is None:
        raise StageError(f"{where}: {turn}: no <answer>…</answer> block (or it is empty)")
    return prompt, _steps(parsed["reasoning"], where, turn), _text(parsed["answer"], where, turn)


def file_rows(src: Source, root: Path = Path(".")) -> list[tuple[int, str, list[str], str]]:
    """(row number, prompt, steps, answer) of every row of a file source; errors name file, row and field."""
    rows = tables.read_table(root / src.path, file_format(src, root), src.path)
    if not rows:
        raise StageError(f"{src.path}: no rows")
    columns = list(rows[0])
    for role, name in src.fields.items():
        if name not in columns:
            raise StageError(
                f"{src.where('fields', role, root=root)}: {name!r} is not a field of {src.path} "
                f"(fields: {', '.join(columns)})"
            )
    out = []
    for k, row in enumerate(rows, start=1):
        where = f"{src.path}: row {k}"
        if "messages" in src.fields:
            prompt, steps, answer = _from_messages(row, src.fields["messages"], where)
        else:
            prompt = _text(row[src.fields["prompt"]], where, src.fields["prompt"])
            answer = _text(row[src.fields["answer"]], where, src.fields["answer"])
            steps = _steps(row[src.fields["reasoning"]], where, src.fields["reasoning"])
        out.append((k, prompt, steps, answer))
    return out


def gsm8k_rows(src: Source, root: Path = Path(".")) -> list[tuple[int, str, list[str], str]]:
    """(row number, question, working lines, final answer) of a GSM8K-format source: JSONL as the
    GSM8K repository ships it, or Parquet (or any table format) as Hugging Face does."""
    rows = tables.read_rows(root / src.path, file_format(src, root), src.path)
    return [(k, *gsm8k.parse_row(row, where)) for k, (where, row) in enumerate(rows, start=1)]


def trace(src: Source, row: int, prompt: str, steps: list[str], answer: str, seed: int, number: int) -> dict:
    """The trace record of one imported row; `meta` keeps its source, file and row."""
    is_gsm8k = src.type == "gsm8k"
    record = {
        "id": f"{src.type}-{number:06d}",
        "prompt": prompt,
        "steps": [{"i": i, "type": "compute", "content": text} for i, text in enumerate(steps, start=1)],
        "final_answer": answer,
        "meta": {
            "source": src.type,
            "name": src.name,
            "path": src.path,
            "row": row,
            "generator": src.type,
            "category": "arithmetic" if is_gsm8k else FILE_CATEGORY,
            "difficulty": gsm8k.difficulty(len(steps)),
            "seed": seed,
        },
    }
    validate(record, "trace", f"{src.path}: row {row}")
    return record
