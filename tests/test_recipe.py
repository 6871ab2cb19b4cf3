"""scripts/recipe.py: a recipe becomes `dvc exp run -S …` that DVC applies as the recipe says, and a bad
recipe is one line naming its own file and line, exit 1, before DVC starts.

DVC's own override code (`dvc.utils.hydra.apply_overrides`, what `dvc exp run -S` calls) applies the
command to a copy of params.yaml, so no experiment runs here.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from stages.common import ROOT, load_params

SCRIPT = ROOT / "scripts/recipe.py"


def workspace(tmp_path: Path, recipe: str) -> Path:
    """A folder with the project's params.yaml and the recipe `recipes/r.yaml`."""
    shutil.copyfile(ROOT / "params.yaml", tmp_path / "params.yaml")
    (tmp_path / "recipes").mkdir()
    (tmp_path / "recipes/r.yaml").write_text(recipe)
    return tmp_path


def recipe_cli(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def applied(cwd: Path) -> dict:
    """params.yaml after `dvc exp run` applies the recipe's `-S` values (as DVC does), loaded as a stage does."""
    from dvc.utils.hydra import apply_overrides

    from scripts.recipe import command

    cmd = command(cwd / "recipes/r.yaml", cwd / "params.yaml")
    overrides = [cmd[i + 1] for i, arg in enumerate(cmd) if arg == "-S"]
    apply_overrides(cwd / "params.yaml", overrides)
    return load_params(path=cwd / "params.yaml")


def one_line_error(proc: subprocess.CompletedProcess, prefix: str, text: str) -> str:
    assert proc.returncode == 1, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr and len(proc.stderr.splitlines()) == 1, proc.stderr
    line = proc.stderr.strip()
    assert line.startswith(f"error: {prefix}"), line
    assert text in line, line
    return line


@pytest.mark.parametrize("shipped", sorted(p.name for p in (ROOT / "recipes").glob("*.yaml")))
def test_each_shipped_recipe_is_applied_as_written(tmp_path, shipped):
    from scripts.recipe import read_layers, recipe_params

    shutil.copytree(ROOT / "recipes", tmp_path / "recipes")
    shutil.copyfile(tmp_path / "recipes" / shipped, tmp_path / "recipes/r.yaml")
    shutil.copyfile(ROOT / "params.yaml", tmp_path / "params.yaml")
    params = applied(tmp_path)
    for section, changes in recipe_params(read_layers(ROOT / "recipes" / shipped)).items():
        for key, value in changes.items():
            if isinstance(value, dict):
                assert params[section][key] | value == params[section][key], (section, key)
            else:
                assert params[section][key] == value, (section, key)


def test_a_recipe_changes_its_base_recipe(tmp_path):
    """A variant holds only what it changes: the base's params, then its own over them, its own name."""
    cwd = workspace(tmp_path, "name: variant\nbase: first.yaml\nparams:\n  train:\n    steps: 40\n")
    (cwd / "recipes/first.yaml").write_text(
        "name: first\nparams:\n  train:\n    steps: 60\n    batch_size: 4\n  seed:\n    size: 300\n"
    )
    params = applied(cwd)
    assert (params["train"]["steps"], params["train"]["batch_size"], params["seed"]["size"]) == (40, 4, 300)
    proc = recipe_cli(cwd, "recipes/r.yaml", "--print")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("dvc exp run --name variant -S"), proc.stdout


@pytest.mark.parametrize(
    "first, variant, where, message",
    [
        ("name: first\nparams:\n  seed:\n    size: lots\n", "", "recipes/first.yaml:4: ", "seed.size: 'lots'"),
        (
            "name: first\nparams:\n  seed:\n    size: lots\n",
            "  seed:\n    size: nine\n",
            "recipes/r.yaml:5: ",
            "seed.size: 'nine'",
        ),
        ("name: first\nbase: r.yaml\nparams: {}\n", "", "recipes/first.yaml:2: ", "base: r.yaml is already in this"),
        (None, "", "recipes/r.yaml:2: ", "base: "),
    ],
    ids=["bad-in-base", "bad-in-both", "cycle", "missing-base"],
)
def test_a_bad_base_recipe_names_the_file_and_line_that_hold_the_error(tmp_path, first, variant, where, message):
    cwd = workspace(tmp_path, "name: variant\nbase: first.yaml\nparams:\n" + (variant or "  {}\n"))
    if first is not None:
        (cwd / "recipes/first.yaml").write_text(first)
    before = (cwd / "params.yaml").read_bytes()
    line = one_line_error(recipe_cli(cwd, "recipes/r.yaml"), where, message)
    if first is None:
        assert "first.yaml: file not found" in line
    assert (cwd / "params.yaml").read_bytes() == before


def test_a_missing_recipe_is_one_line(tmp_path):
    shutil.copyfile(ROOT / "params.yaml", tmp_path / "params.yaml")
    one_line_error(recipe_cli(tmp_path, "recipes/nope.yaml", "--print"), "recipes/nope.yaml: ", "file not found")


@pytest.mark.parametrize("flag", [["--print"], []])
def test_a_date_is_the_string_written(tmp_path, flag):
    """`run_version: 2026-12-06` is a date to YAML 1.1; the user meant the string (and JSON has no date)."""
    cwd = workspace(tmp_path, "name: dated\nparams:\n  base:\n    run_version: 2026-12-06\n")
    if flag:
        proc = recipe_cli(cwd, "recipes/r.yaml", *flag)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.strip() == "dvc exp run --name dated -S 'base.run_version='\"'\"'2026-12-06'\"'\"''"
    else:
        assert applied(cwd)["base"]["run_version"] == "2026-12-06"


def test_a_recipe_adds_keys_params_yaml_lacks(tmp_path):
    """A new eval set and a user reward (`module:function`, a key Hydra cannot take in a dotted path)."""
    cwd = workspace(
        tmp_path,
        (
            "name: more\n"
            "params:\n"
            "  evaluate:\n"
            "    sets:\n"
            "      mine:\n"
            "        path: evalsets/mine.jsonl\n"
            "        format: items\n"
            "  grpo:\n"
            "    user_rewards:\n"
            "      my_rewards:short_reasoning: 0.2\n"
            "      pkg.sub:fn: 1.5\n"
            "  seed:\n"
            "    size: 24e3\n"
        ),
    )
    params = applied(cwd)
    assert params["evaluate"]["sets"]["mine"] == {"path": "evalsets/mine.jsonl", "format": "items"}
    assert params["evaluate"]["sets"]["tunix"]["primary"] is True  # the sets params.yaml has stay
    assert params["grpo"]["user_rewards"] == {"my_rewards:short_reasoning": 0.2, "pkg.sub:fn": 1.5}
    assert params["seed"]["size"] == 24000 and type(params["seed"]["size"]) is int


RECIPE_ERRORS = [
    # (recipe text, its line the error names, what the error says)
    (
        "name: x\nparams:\n  seed:\n    colour: blue\n",
        4,
        "seed.colour: Additional properties are not allowed ('colour'",
    ),
    ("name: x\nparams:\n  seed:\n    size: lots\n", 4, "seed.size: 'lots' is not of type 'integer'"),
    ("name: x\nparams:\n  seed:\n    size: 24000.5\n", 4, "seed.size: 24000.5 is not of type 'integer'"),
    (
        "name: x\nparams:\n  evaluate:\n    sets:\n      mine:\n        format: items\n",
        5,
        "evaluate.sets.mine.path: 'path' is a required property",
    ),
    ("name: x\nparams:\n  grpo:\n    user_rewards:\n      'not a function': 1.0\n", 4, "grpo.user_rewards"),
    ("name: x\nparams:\n  base:\n    run_version: !!binary aGVsbG8=\n", 4, "base.run_version: a YAML bytes"),
    ("name: x\nparams:\n  base:\n    run_version: [v1\n", 5, "not valid YAML"),
    ("name:\n  - x\nparams: {}\n", 1, "name: expected a string"),
    ("name: x\nparams: 3\n", 2, "params: expected a mapping"),
    ("name: x\nbase: [first.yaml]\nparams: {}\n", 2, "base: expected a file name beside the recipe"),
]


@pytest.mark.parametrize(
    "text, line, message",
    RECIPE_ERRORS,
    ids=[
        "unknown-key",
        "wrong-type",
        "fraction-for-integer",
        "new-set-without-path",
        "reward-not-module-function",
        "binary",
        "malformed-yaml",
        "name-not-a-string",
        "params-not-a-mapping",
        "base-not-a-file-name",
    ],
)
def test_a_bad_recipe_names_its_own_line(tmp_path, text, line, message):
    cwd = workspace(tmp_path, text)
    before = (cwd / "params.yaml").read_bytes()
    one_line_error(recipe_cli(cwd, "recipes/r.yaml"), f"recipes/r.yaml:{line}: ", message)
    assert (cwd / "params.yaml").read_bytes() == before
