"""Run a recipe: a DVC experiment over the same dvc.yaml, its params changes kept in one YAML file.

    python scripts/recipe.py recipes/gemma3-270m.yaml            # dvc exp run --name gemma3-270m -S …
    python scripts/recipe.py recipes/gemma3-270m.yaml --print    # the command, not run

A recipe file holds `name` (the experiment's) and `params`, a nested mapping in params.yaml's layout;
each leaf becomes one `-S key=value`. `dvc exp show` then sets the experiment beside the workspace.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from pathlib import Path

import yaml


def set_params(params: dict, prefix: str = "") -> list[str]:
    """`-S` values for every leaf of `params` (a list or a mapping under a `sets`-like key stays whole)."""
    out = []
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out += set_params(value, f"{name}.")
        else:
            out.append(f"{name}={override(value)}")
    return out


def override(value) -> str:
    """`value` in the override grammar `dvc exp run -S` reads (Hydra's): quoted strings, bare keys."""
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{override(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(override(v) for v in value) + "]"
    if isinstance(value, str):
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    return json.dumps(value)  # numbers, true/false, null


def command(recipe: Path) -> list[str]:
    spec = yaml.safe_load(recipe.read_text())
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str) or not isinstance(spec.get("params"), dict):
        sys.exit(f"{recipe}: expected a mapping with `name` (a string) and `params` (a mapping)")
    args = ["dvc", "exp", "run", "--name", spec["name"]]
    for value in set_params(spec["params"]):
        args += ["-S", value]
    return args


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("recipe", type=Path)
    parser.add_argument("--print", action="store_true", help="print the dvc command instead of running it")
    args = parser.parse_args()
    cmd = command(args.recipe)
    if args.print:
        print(shlex.join(cmd))
        return
    sys.exit(subprocess.call(cmd))


if __name__ == "__main__":
    main()
