"""Local table files -> rows, each with where it came from: the one reader of seed's imported
sources, eval sets and GSM8K-format files (and the one place that tells a file's format).

JSONL is read line by line (`common.read_jsonl_lines`), so an error names the
file's line; JSON, Parquet, CSV and Arrow are read with Hugging Face
`datasets`, offline, from the local path, with a throwaway cache, and an error
names the row. `datasets` is imported only when such a file is read (it takes
seconds to import, and the default pipeline reads none), and the environment
it is given is put back afterwards. Seed's `file` sources read every format,
JSONL included, with `datasets` (`read_table`: rows unified to one set of
columns, as their documentation promises); GSM8K files and eval sets read
JSONL line by line (`read_rows`).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from stages.common import StageError, read_jsonl_lines

FORMATS = {"jsonl": "json", "json": "json", "parquet": "parquet", "csv": "csv", "arrow": "arrow"}  # -> datasets builder


def suffix_format(path: str | Path) -> str:
    """The format a file name's suffix says (`data.parquet` -> parquet); may not be one of FORMATS."""
    return Path(path).suffix.lstrip(".").lower()


def table_format(path: str | Path, given: str | None = None, where: str | None = None, hint: str = "") -> str:
    """The format of a table file: `given` (a format param), else its suffix's; anything else is a
    StageError `where: …; one of … (hint)`, `where` naming the param that sets the format (if any)."""
    fmt = given or suffix_format(path)
    if fmt not in FORMATS:
        said = f"format {given!r}" if given else f"no known format for suffix {Path(path).suffix!r}"
        at = f"{path}" if where is None else f"{where}: {path}" if not given else where
        raise StageError(f"{at}: {said}; one of {', '.join(FORMATS)}{f' ({hint})' if hint else ''}")
    return fmt


def read_rows(path: Path, fmt: str, shown: str | Path | None = None) -> list[tuple[str, dict]]:
    """(where, row) for every row of a local table file, in file order.

    where: `path:LINE` for JSONL (blank lines skipped, as read_jsonl does), `shown: row K` for the
    formats `datasets` reads (`shown` defaults to `path`). Ids are not checked here: a table's id
    field, if it has one, is the caller's to name.
    """
    if fmt == "jsonl":
        return [(f"{path}:{lineno}", row) for lineno, row in read_jsonl_lines(path, schema=None, id_field=None)]
    shown = path if shown is None else shown
    return [(f"{shown}: row {k}", row) for k, row in enumerate(read_table(path, fmt, shown), start=1)]


@contextlib.contextmanager
def _environment(**values: str) -> Iterator[None]:
    """`os.environ` with `values` set inside the block and exactly as it was after it."""
    before = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def read_table(path: Path, fmt: str, shown: str | Path | None = None) -> list[dict]:
    """Every row of a local JSONL, JSON, Parquet, CSV or Arrow file, read with Hugging Face datasets.

    Offline (no hub access) and with a throwaway cache, so nothing is written
    outside the run and nothing is downloaded. Errors call the file `shown` (default: `path`).
    """
    shown = path if shown is None else shown
    if not path.is_file():
        raise StageError(f"{shown}: file not found")
    with (
        tempfile.TemporaryDirectory(prefix="tunix-rt-datasets-") as cache,
        # offline, and nothing read or written under the user's home (HF_HOME defaults to ~/.cache/huggingface)
        _environment(HF_DATASETS_OFFLINE="1", HF_HUB_OFFLINE="1", HF_HOME=cache, HF_DATASETS_CACHE=cache),
    ):
        import datasets  # imported here: seconds, and only an imported file needs it

        datasets.disable_progress_bars()  # a stage's stderr holds its one-line error and nothing else
        datasets.logging.set_verbosity_error()

        try:
            table = datasets.load_dataset(FORMATS[fmt], data_files=str(path.resolve()), split="train", cache_dir=cache)
        except Exception as err:  # datasets wraps the parser's error; its cause says what is wrong
            cause = err.__cause__ or err
            raise StageError(f"{shown}: cannot read as {fmt}: {' '.join(str(cause).split())[:200]}") from None
        return table.to_list()
