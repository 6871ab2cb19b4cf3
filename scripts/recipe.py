"""Run a recipe: a DVC experiment over the same dvc.yaml, its params changes kept in one YAML file.

    python scripts/recipe.py recipes/gemma3-270m.yaml            # dvc exp run --name gemma3-270m -S …
    python scripts/recipe.py recipes/gemma3-270m.yaml --print    # the command, not run

A recipe file holds `name` (the experiment's) and `params`, a nested mapping in params.yaml's layout,
and may name a `base` recipe (a file beside it) whose params it changes: the base's params first, its
own merged over them, so a variant holds only what it changes. Each leaf becomes one `-S key=value`,
and a key params.yaml lacks (a new eval set, a user reward) one `-S +key=value`, which adds it. The
recipe is read as params.yaml is (`2026-12-06` is a string), and params.yaml with the recipe merged in
is checked against schemas/params.schema.json before DVC starts: an error is one line naming the line
of the recipe that sets the key (or params.yaml's), and exit status 1.
`dvc exp show` then sets the experiment beside the workspace.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any, NamedTuple

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from stages.common import (  # noqa: E402
    PARAMS_FILE,
    StageError,
    error_path,
    field_path,
    load_params,
    read_yaml,
    run_stage,
    schema_error,
    shorten,
    yaml_line,
)

# A key Hydra's override grammar takes bare in a dotted path (its ID); any other (`my_rewards:fn`) is
# written inside a mapping value, escaped.
BARE_KEY = re.compile(r"[A-Za-z_$][A-Za-z0-9_$-]*")
ESCAPED = re.compile(r"([\\()\[\]{}:=, \t])")
JSON_SCALARS = (str, int, float, bool, type(None))


class Layer(NamedTuple):
    """One recipe file of a chain: its path, its mapping and its text (for error lines)."""

    path: Path
    spec: dict
    text: str


def set_params(params: dict, workspace: Any = None, prefix: str = "") -> list[str]:
    """`-S` values for every leaf of `params` (lists stay whole): `key=value` for a key `workspace`
    (params.yaml) has, `+key=value` for one it lacks. A mapping whose keys are not all bare, or that
    replaces a value that is not a mapping, is set whole (`++` merges it into a mapping there)."""
    out = []
    for key, value in params.items():
        name = f"{prefix}{key}"
        there = isinstance(workspace, dict) and key in workspace
        below = workspace[key] if there else None
        if (
            isinstance(value, dict)
            and value
            and all(BARE_KEY.fullmatch(k) for k in value)
            and (not there or isinstance(below, dict))
        ):
            out += set_params(value, below, f"{name}.")
        else:
            merge = (
                isinstance(value, dict) and value and isinstance(below, dict)
            )  # Hydra adds no key to a mapping with `=`
            op = ("++" if merge else "") if there else "+"
            out.append(f"{op}{name}={override(value)}")
    return out


def override(value) -> str:
    """`value` in the override grammar `dvc exp run -S` reads (Hydra's): quoted strings, escaped keys."""
    if isinstance(value, dict):
        return "{" + ",".join(ESCAPED.sub(r"\\\1", k) + ":" + override(v) for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(override(v) for v in value) + "]"
    if isinstance(value, str):
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    return json.dumps(value)  # numbers, true/false, null


def read_recipe(recipe: Path) -> tuple[dict, str]:
    """The recipe's mapping and its text; anything else is a one-line StageError naming its line."""
    if not recipe.exists():
        raise StageError(f"{recipe}: file not found (a recipe holds `name` and `params`: see recipes/)")
    spec, text = read_yaml(recipe)
    if not isinstance(spec, dict):
        raise StageError(f"{recipe}: expected a mapping with `name` (a string) and `params` (a mapping)")
    for key, kind in (("name", str), ("params", dict)):
        if not isinstance(spec.get(key), kind):
            raise StageError(
                f"{recipe}:{yaml_line(text, [key])}: {key}: expected {'a string' if kind is str else 'a mapping'}"
            )
    if "base" in spec and not isinstance(spec["base"], str):
        raise StageError(f"{recipe}:{yaml_line(text, ['base'])}: base: expected a file name beside the recipe")
    bad = _not_json(spec["params"], [])
    if bad is not None:
        keys, what = bad
        raise StageError(f"{recipe}:{yaml_line(text, ['params', *keys])}: {field_path(keys)}: {what}")
    return spec, text


def read_layers(recipe: Path) -> list[Layer]:
    """The recipe and the chain of `base` recipes under it, the deepest base first."""
    layers: list[Layer] = []
    while True:
        spec, text = read_recipe(recipe)
        layers.insert(0, Layer(recipe, spec, text))
        if "base" not in spec:
            return layers
        base = recipe.parent / spec["base"]
        if any(base.resolve() == layer.path.resolve() for layer in layers):
            raise StageError(f"{recipe}:{yaml_line(text, ['base'])}: base: {spec['base']} is already in this chain")
        if not base.exists():
            raise StageError(f"{recipe}:{yaml_line(text, ['base'])}: base: {base}: file not found")
        recipe = base


def _not_json(node: Any, keys: list) -> tuple[list, str] | None:
    """Where the recipe holds something params.yaml cannot (a YAML set, binary, a key not a string)."""
    if isinstance(node, dict):
        for key, value in node.items():
            if not isinstance(key, str):
                return keys, f"key {key!r} is a YAML {type(key).__name__}, params keys are strings"
            found = _not_json(value, [*keys, key])
            if found:
                return found
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found = _not_json(value, [*keys, i])
            if found:
                return found
    elif not isinstance(node, JSON_SCALARS):
        return keys, f"a YAML {type(node).__name__} is not a params value (quote it for a string)"
    return None


def merged(workspace: Any, changes: Any) -> Any:
    """params.yaml as `dvc exp run -S` leaves it: mappings merged key by key, anything else replaced."""
    if isinstance(workspace, dict) and isinstance(changes, dict):
        return {**workspace, **{k: merged(workspace.get(k), v) for k, v in changes.items()}}
    return changes


def check(layers: list[Layer], workspace: dict, params_file: str | Path = PARAMS_FILE) -> None:
    """params.yaml with the recipes merged in must be valid: one line naming the line of the recipe that
    sets the key (the nearest to the top of the chain that holds most of its path; params.yaml's otherwise)."""
    err = schema_error(merged(workspace, recipe_params(layers)), "params")
    if err is None:
        return
    keys = error_path(err)
    if err.validator == "additionalProperties" and isinstance(err.instance, dict):
        allowed = err.schema.get("properties", {})
        keys += [k for k in err.instance if k not in allowed][:1]  # the unexpected key's own line
    held = [(len(held_path(layer.spec["params"], keys)), i) for i, layer in enumerate(layers)]
    depth, i = max(held)
    if depth:
        layer = layers[i]
        where = f"{layer.path}:{yaml_line(layer.text, ['params', *keys[:depth]])}"
    else:
        where = f"{params_file}:{yaml_line(Path(params_file).read_text(encoding='utf-8'), keys)}"
    raise StageError(f"{where}: {field_path(keys)}: {shorten(err.message)}")


def held_path(node: Any, keys: list) -> list:
    """The part of the path `keys` that the recipe params `node` hold."""
    ours = []
    for key in keys:
        held = (
            key in node
            if isinstance(node, dict)
            else isinstance(node, list) and isinstance(key, int) and key < len(node)
        )
        if not held:
            break
        ours.append(key)
        node = node[key]
    return ours


def recipe_params(layers: list[Layer]) -> dict:
    """The chain's params: each recipe's merged over its base's."""
    params: dict = {}
    for layer in layers:
        params = merged(params, layer.spec["params"])
    return params


def command(recipe: Path, params_file: str | Path = PARAMS_FILE) -> list[str]:
    """The `dvc exp run` of `recipe` over the workspace's params.yaml, checked before it runs."""
    layers = read_layers(recipe)
    workspace = load_params(path=params_file)
    check(layers, workspace, params_file)
    args = ["dvc", "exp", "run", "--name", layers[-1].spec["name"]]
    for value in set_params(recipe_params(layers), workspace):
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
    run_stage(main)
