"""Plumbing every stage shares: params, JSONL/JSON I/O with precise errors, atomic outputs.

Errors are `StageError`s whose message is one line naming file, line and field;
`run_stage` turns them into that line on stderr and exit status 1.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import math
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml

ROOT = Path(__file__).resolve().parent.parent
SCHEMAS = ROOT / "schemas"
PARAMS_FILE = "params.yaml"


class StageError(Exception):
    """A failure the user must fix; the message is one line naming file, line and field."""


def run_stage(main: Callable[[], None]) -> None:
    """Run a stage's main; a StageError becomes one line on stderr and exit 1."""
    try:
        main()
    except StageError as err:
        print(f"error: {' '.join(str(err).split())}", file=sys.stderr)  # one line, whatever the message holds
        sys.exit(1)


# ---------------------------------------------------------------- schemas


@cache
def schema_validator(name: str) -> jsonschema.protocols.Validator:
    """The validator for `schemas/<name>.schema.json`."""
    schema = json.loads((SCHEMAS / f"{name}.schema.json").read_text())
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    finite = cls.TYPE_CHECKER.redefine("number", _finite_number)
    return jsonschema.validators.extend(cls, type_checker=finite)(schema)


def _finite_number(checker: jsonschema.TypeChecker, instance: Any) -> bool:
    """JSON has no NaN or infinity, so neither is a number here: `learning_rate: .nan` in params.yaml
    would pass every bound (NaN compares false) and train until the loss is NaN."""
    number = jsonschema.Draft202012Validator.TYPE_CHECKER.is_type(instance, "number")
    return number and (not isinstance(instance, float) or math.isfinite(instance))


def field_path(path: Iterable[Any]) -> str:
    """jsonschema's absolute_path as `steps[2].content`."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "<record>"


def schema_error(obj: Any, schema: str) -> jsonschema.ValidationError | None:
    """The most relevant violation of `schema` by `obj`, or None when it is valid."""
    validator = schema_validator(schema)
    if validator.is_valid(obj):  # the fast path; collecting errors is several times slower
        return None
    return jsonschema.exceptions.best_match(validator.iter_errors(obj))


def error_path(err: jsonschema.ValidationError) -> list[Any]:
    """Where a violation is: jsonschema's absolute_path, plus the missing key of a `required` error."""
    path = list(err.absolute_path)
    if err.validator == "required" and isinstance(err.instance, dict):
        missing = [key for key in err.validator_value if key not in err.instance]
        path += missing[:1]
    return path


def validate(obj: Any, schema: str, where: str) -> None:
    """Raise a StageError `where: field: message` when `obj` violates `schema`."""
    err = schema_error(obj, schema)
    if err is not None:
        raise StageError(f"{where}: {field_path(error_path(err))}: {shorten(err.message)}")


def shorten(message: str, limit: int = 160) -> str:
    """`message` on one line of at most `limit` characters: errors stay one line."""
    message = " ".join(message.split())
    return message if len(message) <= limit else message[: limit - 1] + "…"


# ---------------------------------------------------------------- params


class ParamsLoader(yaml.SafeLoader):
    """YAML 1.2's numbers: `dvc exp run -S lr=5e-5` writes `5e-05`, which YAML 1.1 reads as a string.

    And no dates: `run_version: 2026-12-06` means the string (no param is a date; YAML 1.1 would
    make it a datetime.date, which is neither a schema type nor JSON)."""

    yaml_implicit_resolvers = {
        first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }


ParamsLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def load_params(section: str | None = None, path: str | Path = PARAMS_FILE) -> dict[str, Any]:
    """params.yaml validated against schemas/params.schema.json (unknown keys are errors).

    Returns the whole document, or one section of it.
    """
    path = Path(path)
    params, text = read_yaml(path)
    err = schema_error(params, "params")
    if err is not None:
        line = yaml_line(text, error_path(err))
        raise StageError(f"{path}:{line}: {field_path(error_path(err))}: {shorten(err.message)}")
    params = integral_floats_as_ints(params)
    return params if section is None else params[section]


def read_yaml(path: str | Path) -> tuple[Any, str]:
    """A YAML file read as params.yaml is (ParamsLoader), and its text; any problem is one line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
        return yaml.load(text, Loader=ParamsLoader), text
    except FileNotFoundError:
        raise StageError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise StageError(f"{path}: a folder, not a file") from None
    except UnicodeDecodeError as err:
        raise StageError(f"{path}: not UTF-8 (byte {err.start})") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        if mark is not None and getattr(err, "problem", None):
            where = f"{path}:{mark.line + 1}"
            raise StageError(f"{where}: not valid YAML: {err.problem} (column {mark.column + 1})") from None
        raise StageError(f"{path}: not valid YAML: {shorten(str(err))}") from None


@cache
def _strict_integers(name: str) -> jsonschema.protocols.Validator:
    """`name`'s validator with `integer` meaning a Python int: jsonschema's own takes 24000.0 for one."""
    validator = schema_validator(name)
    ints = validator.TYPE_CHECKER.redefine("integer", lambda checker, x: isinstance(x, int) and not isinstance(x, bool))
    return jsonschema.validators.extend(type(validator), type_checker=ints)(validator.schema)


def integral_floats_as_ints(params: Any, schema: str = "params") -> Any:
    """`params` (valid against `schema`) with every float where the schema says integer made the int it
    is: `dvc exp run -S seed.size=24e3` writes `24000.0`, which jsonschema accepts as an integer and
    code such as range() or a split does not. The schema has already refused a non-integral one."""
    out = copy.deepcopy(params)
    pending = list(_strict_integers(schema).iter_errors(out))
    while pending:
        err = pending.pop()
        pending += err.context or []
        types = err.validator_value if isinstance(err.validator_value, list) else [err.validator_value]
        if err.validator == "type" and "integer" in types and isinstance(err.instance, float):
            *parents, last = err.absolute_path
            node = out
            for key in parents:
                node = node[key]
            node[last] = int(err.instance)
    return out


def yaml_line(text: str, keys: list[Any]) -> int:
    """1-based line of the node at `keys` in a YAML document (deepest existing node)."""
    node = yaml.compose(text)
    line = node.start_mark.line if node is not None else 0
    for key in keys:
        if isinstance(node, yaml.MappingNode):
            match = [(k, v) for k, v in node.value if k.value == str(key)]
            if not match:
                break
            key_node, node = match[0]
            line = key_node.start_mark.line
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            node = node.value[key]
            line = node.start_mark.line
        else:
            break
    return line + 1


def params_where(*keys: str, root: Path = Path(".")) -> str:
    """`params.yaml:LINE` of a key when the file is there to point into, else `params.yaml`."""
    try:
        return f"{PARAMS_FILE}:{yaml_line((root / PARAMS_FILE).read_text(encoding='utf-8'), list(keys))}"
    except Exception:  # no readable params file (params given programmatically)
        return PARAMS_FILE


def param_error(*keys: str, message: object, root: Path = Path(".")) -> StageError:
    """A one-line error pointing at a param: `params.yaml:LINE: section.key: message`."""
    return StageError(f"{params_where(*keys, root=root)}: {'.'.join(keys)}: {message}")


# ---------------------------------------------------------------- reading

MAX_LINE_BYTES = 1 << 20  # no record of any JSONL file here comes near 1 MiB; a bigger line is a mistake


def _largest_field(line: bytes) -> str:
    """Path of the biggest value in a JSON line (descending into the biggest child), or <record>."""
    try:
        node: Any = json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        return "<record>"
    path: list[Any] = []
    while isinstance(node, (dict, list)) and node:
        items = node.items() if isinstance(node, dict) else enumerate(node)
        key, node = max(items, key=lambda kv: len(json.dumps(kv[1], ensure_ascii=False)))
        path.append(key)
    return field_path(path)


def read_jsonl(path: str | Path, schema: str | None = None, id_field: str | None = "id") -> list[dict]:
    """Every record of a JSONL file, each validated against `schema`; ids must be unique.

    Any problem is a StageError `path:line: field: message`.
    """
    return [record for _, record in read_jsonl_lines(path, schema, id_field)]


def read_jsonl_lines(
    path: str | Path, schema: str | None = None, id_field: str | None = "id"
) -> list[tuple[int, dict]]:
    """(1-based line number, record) of every record of a JSONL file, checked as `read_jsonl` checks them."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise StageError(f"{path}: file not found") from None
    if not raw.strip():
        raise StageError(f"{path}: file is empty")
    records: list[tuple[int, dict]] = []
    seen: dict[Any, int] = {}
    for lineno, line in enumerate(raw.split(b"\n"), start=1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        if len(line) > MAX_LINE_BYTES:
            raise StageError(
                f"{where}: {_largest_field(line)}: line is {len(line) / 1e6:.1f} MB, "
                f"more than the {MAX_LINE_BYTES / 1e6:.1f} MB a record may hold"
            )
        try:
            record = json.loads(line.decode("utf-8"))
        except UnicodeDecodeError as err:
            raise StageError(f"{where}: not UTF-8 (byte {err.start})") from None
        except json.JSONDecodeError as err:
            raise StageError(f"{where}: malformed JSON: {err.msg} at column {err.colno}") from None
        if schema is not None:
            validate(record, schema, where)
        elif not isinstance(record, dict):
            raise StageError(f"{where}: <record>: expected a JSON object")
        if id_field is not None and id_field in record:
            key = record[id_field]
            if key in seen:
                raise StageError(f"{where}: {id_field}: duplicate id {key!r} (first on line {seen[key]})")
            seen[key] = lineno
        records.append((lineno, record))
    return records


def read_checked_jsonl(path: str | Path, schema: str, manifest: str | Path) -> list[dict]:
    """Records of a JSONL file whose producing stage recorded its sha256 in `manifest`.

    A file matching the manifest is exactly what that stage wrote (from
    schema-tested generators, or validated imports), so per-record validation,
    the slow part, is skipped; any other file, an edited one say, is validated
    record by record.
    """
    recorded = None
    with contextlib.suppress(StageError, AttributeError, TypeError):
        recorded = read_json(manifest).get("sha256")
    if recorded is not None and Path(path).is_file() and sha256_file(path) == recorded:
        return read_jsonl(path)
    return read_jsonl(path, schema=schema)


def read_json(path: str | Path, schema: str | None = None) -> Any:
    """A JSON document, validated against `schema`; errors name the file and field."""
    path = Path(path)
    try:
        obj = json.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise StageError(f"{path}: file not found") from None
    except UnicodeDecodeError as err:
        raise StageError(f"{path}: not UTF-8 (byte {err.start})") from None
    except json.JSONDecodeError as err:
        raise StageError(f"{path}:{err.lineno}: malformed JSON: {err.msg} at column {err.colno}") from None
    if schema is not None:
        validate(obj, schema, str(path))
    return obj


def load_tokenizer(directory: str | Path, hint: str = "run the tokenizer stage"):
    """The tokenizers.Tokenizer of `directory`/tokenizer.json; missing or unreadable is a StageError."""
    from training import tokenizer as tokenizers_io  # imported here: most stages never need it

    path = Path(directory) / "tokenizer.json"
    if not path.is_file():
        raise StageError(f"{path}: missing ({hint})")
    try:
        return tokenizers_io.load(Path(directory))
    except Exception as err:  # tokenizers raises a bare Exception for a corrupt file
        raise StageError(f"{path}: not a valid tokenizer ({shorten(str(err))})") from None


# ---------------------------------------------------------------- writing


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling of `path`; on success it replaces `path`, on failure it is removed.

    Works for files and directories: a stage writes into the yielded path and
    readers only ever see the old output or the complete new one.
    """
    with atomic_paths(path) as (target,):
        yield target


@contextlib.contextmanager
def atomic_paths(*paths: str | Path) -> Iterator[list[Path]]:
    """Yield a temporary sibling for each of `paths`, to commit several outputs together: all or none.

    Compute everything first, write every temporary inside the block; only when the block ends without
    an error and every temporary exists is each output replaced, by renames alone (nothing left that
    could fail halfway through reports that must agree). On any failure every temporary is removed and
    every output stays as it was.
    """
    outputs = [Path(p) for p in paths]
    tmps: list[Path] = []
    try:
        for path in outputs:
            path.parent.mkdir(parents=True, exist_ok=True)
            remove_stale_temporaries(path)
            tmps.append(Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)))
        targets = [tmp / path.name for tmp, path in zip(tmps, outputs)]
        yield targets
        for path, target in zip(outputs, targets):
            if not target.exists():
                raise RuntimeError(f"atomic_path: nothing was written for {path}")
        for path, tmp, target in zip(outputs, tmps, targets):
            if path.is_dir() and not path.is_symlink():
                os.replace(path, tmp / (path.name + ".old"))  # a directory cannot be replaced in one step
            os.replace(target, path)
    finally:
        for tmp in tmps:
            shutil.rmtree(tmp, ignore_errors=True)


def remove_stale_temporaries(path: str | Path) -> list[Path]:
    """Remove the temporaries of `path` that an earlier, killed run left behind; return them.

    They are never taken for the output (it only appears by rename), but a
    killed model write would otherwise leave its bytes behind for good.
    """
    path = Path(path)
    pattern = re.compile(rf"\.{re.escape(path.name)}\.[A-Za-z0-9_]{{8}}\.tmp")
    stale = [p for p in path.parent.iterdir() if pattern.fullmatch(p.name) and p.is_dir() and not p.is_symlink()]
    for p in stale:
        shutil.rmtree(p, ignore_errors=True)
    return stale


_SURROGATE = re.compile("[\ud800-\udfff]")


def _encodable(text: str) -> str:
    """JSON text with each lone surrogate as its `\\uXXXX` escape. A model can write one (JSON's
    "\\ud800" reads as a str holding it); it has no UTF-8, and escaped it reads back the same string."""
    return _SURROGATE.sub(lambda m: f"\\u{ord(m[0]):04x}", text)


def dumps_json(obj: Any) -> str:
    """Canonical JSON text: sorted keys, two-space indent, trailing newline (stable bytes)."""
    return _encodable(json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False)) + "\n"


def write_json(path: str | Path, obj: Any) -> None:
    write_json_all({path: obj})


def write_json_all(documents: Mapping[str | Path, Any]) -> None:
    """Several JSON documents as one commit (atomic_paths): every text made, then every file written,
    then all renamed; a document that cannot be written leaves every file as it was."""
    texts = {Path(path): dumps_json(obj).encode("utf-8") for path, obj in documents.items()}
    with atomic_paths(*texts) as tmps:
        for tmp, data in zip(tmps, texts.values()):
            tmp.write_bytes(data)


def write_jsonl(path: str | Path, records: Iterable[dict]) -> None:
    with atomic_path(path) as tmp, tmp.open("w", encoding="utf-8") as f:
        for record in records:
            f.write(_encodable(json.dumps(record, sort_keys=True, ensure_ascii=False)) + "\n")


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_tree(path: str | Path) -> str:
    """Content hash of a file, or of a directory's files (relative names and bytes, sorted)."""
    path = Path(path)
    if path.is_file():
        return sha256_file(path)
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(file.relative_to(path).as_posix().encode() + b"\0")
        digest.update(sha256_file(file).encode() + b"\n")
    return digest.hexdigest()
