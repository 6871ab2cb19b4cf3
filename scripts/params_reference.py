"""Write docs/params.md, the params reference, from the descriptions in schemas/params.schema.json.

    python scripts/params_reference.py            # rewrite docs/params.md
    python scripts/params_reference.py --check    # exit 1 when docs/params.md is out of step

Every key of params.yaml is a row: its dotted path, its type and bounds, its default (the value in
params.yaml) and its description. A key without a description in the schema is an error, so a new
key is documented where it is validated. tests/test_docs.py runs the check.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "schemas" / "params.schema.json"
PARAMS = ROOT / "params.yaml"
OUT = ROOT / "docs" / "params.md"

HEADER = """# Params reference

Every key of `params.yaml`, validated against `schemas/params.schema.json` (an unknown key or a value
out of bounds stops the stage with one line naming the `params.yaml` line). Change one for a single run
with `dvc exp run -S section.key=value`; see [Experiments and sweeps](experiments.md).

This page is generated from the schema's descriptions by `python scripts/params_reference.py`; do not
edit it by hand (`tests/test_docs.py` fails when it is out of step with the schema). The default is
the value in `params.yaml` today; `-` is a key that `params.yaml` leaves out.
"""


def resolve(node: dict, schema: dict) -> dict:
    """`node` with a local `$ref` merged in (the node's own keys win)."""
    ref = node.get("$ref")
    if not ref:
        return node
    target: dict = schema
    for part in ref.removeprefix("#/").split("/"):
        target = target[part]
    return {**target, **{k: v for k, v in node.items() if k != "$ref"}}


def kind(node: dict) -> str:
    """The type and bounds of a schema node, in a few words."""
    if "enum" in node:
        return " \\| ".join(f"`{json.dumps(v)}`" for v in node["enum"])
    types = node.get("type", "any")
    text = " or ".join(types) if isinstance(types, list) else types
    bounds = []
    for key, sign in (("minimum", "≥"), ("exclusiveMinimum", ">"), ("maximum", "≤"), ("exclusiveMaximum", "<")):
        if key in node:
            bounds.append(f"{sign} {node[key]}")
    if "pattern" in node:
        bounds.append(f"matches `{node['pattern']}`")
    if "minItems" in node:
        bounds.append(f"at least {node['minItems']} item(s)")
    return text + (f" ({', '.join(bounds)})" if bounds else "")


def default(params: object, path: list[str]) -> str:
    """The value at `path` in params.yaml, as it would be written there, or `-`."""
    value = params
    for part in path:
        if not isinstance(value, dict) or part not in value:
            return "-"
        value = value[part]
    if isinstance(value, dict) and value:
        return "(see below)"
    if isinstance(value, list) and any(isinstance(v, (dict, list)) for v in value):
        return f"{len(value)} item(s)"
    return f"`{json.dumps(value)}`"


def rows(node: dict, schema: dict, path: list[str], params: object, missing: list[str]) -> list[tuple[str, ...]]:
    """(path, type, default, description) for every key under `node`, depth first, in schema order."""
    out: list[tuple[str, ...]] = []
    for name, child in node.get("properties", {}).items():
        child = resolve(child, schema)
        here = [*path, name]
        dotted = ".".join(here)
        if "description" not in child:
            missing.append(dotted)
        desc = " ".join(str(child.get("description", "")).split())
        desc = desc.replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")
        out.append((f"`{dotted}`", kind(child), default(params, here), desc))
        out += rows(child, schema, here, params, missing)
        items = child.get("items")
        if isinstance(items, dict):
            out += rows(resolve(items, schema), schema, [*here[:-1], f"{name}[]"], None, missing)
        extra = child.get("additionalProperties")
        if isinstance(extra, dict) and extra.get("properties"):
            out += rows(resolve(extra, schema), schema, [*here, "<name>"], None, missing)
    return out


def render() -> str:
    """docs/params.md as it should read; ValueError naming every key that lacks a description."""
    schema = json.loads(SCHEMA.read_text())
    params = yaml.safe_load(PARAMS.read_text())
    missing: list[str] = []
    lines = [HEADER]
    for section, node in schema["properties"].items():
        node = resolve(node, schema)
        lines.append(f"## `{section}`\n")
        if node.get("description"):
            lines.append(" ".join(node["description"].split()).replace("<", "&lt;").replace(">", "&gt;") + "\n")
        else:
            missing.append(section)
        table = rows(node, schema, [section], params, missing)
        lines.append("| key | type | default | description |\n| --- | --- | --- | --- |")
        lines += ["| " + " | ".join(row) + " |" for row in table]
        lines.append("")
    if missing:
        raise ValueError(f"{SCHEMA.relative_to(ROOT)}: no description for {', '.join(missing)}")
    return "\n".join(lines).rstrip("\n") + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when docs/params.md is out of step")
    args = parser.parse_args(argv)
    try:
        text = render()
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    rel = OUT.relative_to(ROOT)
    if args.check:
        if not OUT.is_file() or OUT.read_text() != text:
            print(
                f"error: {rel} is out of step with {SCHEMA.relative_to(ROOT)}; run: python scripts/params_reference.py",
                file=sys.stderr,
            )
            return 1
        print(f"{rel} is up to date")
        return 0
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(text)
    print(f"wrote {rel}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
