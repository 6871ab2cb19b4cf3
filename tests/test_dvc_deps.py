"""Every project module a stage imports, directly or not, is a declared dep of that stage in dvc.yaml.

A module missing from the deps is a change DVC cannot see (a stale output is
taken as up to date); a dep the stage never imports retrains for nothing.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("stages", "reasoning", "training")


def module_file(name: str) -> Path | None:
    """The project file of a dotted module name, or None when it is not ours."""
    if name.split(".")[0] not in PACKAGES:
        return None
    path = ROOT / Path(*name.split("."))
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imported_modules(path: Path) -> set[str]:
    """Dotted names of what `path` imports when it is loaded: module-level statements, not the lazy
    imports inside functions (`stages.common.load_tokenizer` imports the tokenizer only when called;
    a stage that calls it imports the tokenizer itself)."""
    names = set()
    body = ast.parse(path.read_text(), str(path)).body
    for node in (n for top in body if not isinstance(top, (ast.FunctionDef, ast.ClassDef)) for n in ast.walk(top)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)  # `from training import chat`
    return names


def project_closure(module: str) -> set[Path]:
    """Files of the project modules `module` loads, itself included."""
    seen: set[Path] = set()
    todo = [module]
    while todo:
        path = module_file(todo.pop())
        if path is None or path in seen:
            continue
        seen.add(path)
        todo.extend(imported_modules(path))
    return seen


def stages() -> list[tuple[str, dict]]:
    return list(yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"].items())


@pytest.mark.parametrize(("name", "stage"), stages(), ids=[name for name, _ in stages()])
def test_every_imported_module_is_a_dep(name, stage):
    module = stage_module(stage)
    deps = [ROOT / d for d in (stage.get("do") or stage)["deps"]]
    missing = [
        str(path.relative_to(ROOT))
        for path in sorted(project_closure(module))
        if path.name != "__init__.py" and not any(path == d or d in path.parents for d in deps)
    ]
    assert not missing, f"dvc.yaml: stages.{name}.deps: add {', '.join(missing)}"


def test_the_closure_follows_imports():
    closure = {p.relative_to(ROOT).as_posix() for p in project_closure("stages.train")}
    assert {"stages/train.py", "stages/common.py", "training/trainer.py", "training/model.py"} <= closure
    assert "training/sampler.py" not in closure


def shared_paths_used(module: str) -> set[Path]:
    """The `stages.paths` names a stage module reads (`paths.MODEL`), as paths; a per-eval-set path
    (`paths.predictions(name)`) as dvc.yaml's foreach writes it (`data/predictions/${key}.jsonl`)."""
    paths = importlib.import_module("stages.paths")
    tree = ast.parse(module_file(module).read_text())
    used = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "paths":
            value = getattr(paths, node.attr)
            used.add(Path(value("${key}") if callable(value) else value))
    return used


def stage_module(stage: dict) -> str:
    """`stages.predict` of `python -m stages.predict ${key}` (a foreach stage's `do`)."""
    return (stage.get("do") or stage)["cmd"].removeprefix("python -m ").split()[0]


def declared(stage: dict) -> list[Path]:
    """A stage's deps, outs, metrics and plots as paths (`cache: false` entries are one-key dicts)."""
    entries = [*stage.get("deps", [])]
    for kind in ("outs", "metrics", "plots"):
        entries += [next(iter(e)) if isinstance(e, dict) else e for e in stage.get(kind, [])]
    return [Path(e) for e in entries]


@pytest.mark.parametrize(("name", "stage"), stages(), ids=[name for name, _ in stages()])
def test_every_shared_path_a_stage_uses_is_declared(name, stage):
    files = declared(stage.get("do") or stage)
    used = shared_paths_used(stage_module(stage))
    # a file inside a declared folder is declared; so is a folder whose files are (dvclive's metrics and plots)
    missing = [str(p) for p in sorted(used) if not any(p == f or f in p.parents or p in f.parents for f in files)]
    assert not missing, f"dvc.yaml: stages.{name}: declare {', '.join(missing)} as a dep or an out"
