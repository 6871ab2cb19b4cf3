"""Local table files in the formats Hugging Face `datasets` reads: JSONL, JSON, Parquet, CSV, Arrow.

Offline, from a local path: no hub access, a throwaway cache, nothing read or
written under the user's home. `datasets` is imported only when a file is read
(it takes seconds to import, and the default pipeline reads none).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from stages.common import StageError

FORMATS = {"jsonl": "json", "json": "json", "parquet": "parquet", "csv": "csv", "arrow": "arrow"}  # -> datasets builder


def suffix_format(path: str | Path) -> str:
    """The format a file name's suffix says (`data.parquet` -> parquet); may not be one of FORMATS."""
    return Path(path).suffix.lstrip(".").lower()


def read_table(path: Path, fmt: str, shown: str | Path | None = None) -> list[dict]:
    """Every row of a local JSONL, JSON, Parquet, CSV or Arrow file, read with Hugging Face datasets.

    Offline (no hub access) and with a throwaway cache, so nothing is written
    outside the run and nothing is downloaded. Errors call the file `shown` (default: `path`).
    """
    shown = path if shown is None else shown
    if not path.is_file():
        raise StageError(f"{shown}: file not found")
    with tempfile.TemporaryDirectory(prefix="tunix-rt-datasets-") as cache:
        # Offline, and nothing read or written under the user's home (HF_HOME defaults to ~/.cache/huggingface).
        os.environ.update(HF_DATASETS_OFFLINE="1", HF_HUB_OFFLINE="1", HF_HOME=cache, HF_DATASETS_CACHE=cache)
        import datasets  # imported here: seconds, and only an imported file needs it

        datasets.disable_progress_bars()  # a stage's stderr holds its one-line error and nothing else
        datasets.logging.set_verbosity_error()

        try:
            table = datasets.load_dataset(FORMATS[fmt], data_files=str(path.resolve()), split="train", cache_dir=cache)
        except Exception as err:  # datasets wraps the parser's error; its cause says what is wrong
            cause = err.__cause__ or err
            raise StageError(f"{shown}: cannot read as {fmt}: {' '.join(str(cause).split())[:200]}") from None
        return table.to_list()
