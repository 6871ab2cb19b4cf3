"""Strip outputs from notebooks before they are committed, or check that they are stripped.

    python scripts/strip_notebook.py notebooks/*.ipynb           # strip in place
    python scripts/strip_notebook.py --check notebooks/*.ipynb   # exit 1 naming any notebook with outputs

Stripped means: every code cell has no outputs and `execution_count: null`, and no
cell or notebook metadata records an execution (timings, papermill, widget state).
Cell tags (the `parameters` tag) and the kernelspec are kept.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat

NOTEBOOK_KEYS_DROPPED = ("widgets", "papermill", "execution")
CELL_KEYS_DROPPED = ("execution", "papermill", "collapsed", "scrolled")


def problems(nb: nbformat.NotebookNode) -> list[str]:
    """What is not stripped in `nb`, one line per finding (empty when it is stripped)."""
    found = [f"metadata.{key}" for key in NOTEBOOK_KEYS_DROPPED if key in nb.metadata]
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            if cell.get("outputs"):
                found.append(f"cells[{i}]: {len(cell.outputs)} output(s)")
            if cell.get("execution_count") is not None:
                found.append(f"cells[{i}]: execution_count {cell.execution_count}")
        found += [f"cells[{i}].metadata.{key}" for key in CELL_KEYS_DROPPED if key in cell.metadata]
    return found


def strip(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """`nb` without outputs, execution counts or execution metadata (in place; also returned)."""
    for key in NOTEBOOK_KEYS_DROPPED:
        nb.metadata.pop(key, None)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
        for key in CELL_KEYS_DROPPED:
            cell.metadata.pop(key, None)
    return nb


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="+", type=Path)
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if any notebook has outputs")
    args = parser.parse_args(argv)
    status = 0
    for path in args.notebooks:
        nb = nbformat.read(path, as_version=4)
        found = problems(nb)
        if args.check:
            for line in found:
                print(f"{path}: {line}", file=sys.stderr)
            status |= bool(found)
        elif found:
            nbformat.write(strip(nb), path)
            print(f"{path}: stripped ({len(found)} finding(s))")
    return status


if __name__ == "__main__":
    sys.exit(main())
