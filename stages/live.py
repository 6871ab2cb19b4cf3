"""What the training stages (`train`, `grpo`) share around their loop: dvclive curves that resume
with the orbax checkpoints, the progress bar, and clearing the checkpoints once the run is done."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

from dvclive import Live
from tqdm import tqdm

OnLog = Callable[[int, dict[str, float]], None]


def resuming(checkpoints: Path) -> bool:
    """An interrupted run left checkpoints behind: the run resumes, and so do its curves."""
    return checkpoints.exists() and any(checkpoints.iterdir())


@contextlib.contextmanager
def curves(directory: Path, checkpoints: Path, prefix: str = "") -> Iterator[OnLog]:
    """Yield `on_log(step, metrics)`, which logs every metric (named `prefix + name`) to dvclive."""
    with Live(str(directory), resume=resuming(checkpoints), save_dvc_exp=False, dvcyaml=None) as live:

        def on_log(step: int, metrics: dict[str, float]) -> None:
            live.step = step
            for name, value in metrics.items():
                if name != "step":
                    live.log_metric(prefix + name, value)
            live.make_summary()

        yield on_log


def progress(total: int, desc: str) -> Callable[[int], tqdm]:
    """The bar a training loop opens at its start step."""
    return lambda start: tqdm(total=total, initial=start, desc=desc, unit="step", dynamic_ncols=True)


def finished(checkpoints: Path) -> None:
    """The run is done: nothing to resume (the folder stays, empty, as the persistent out DVC expects)."""
    shutil.rmtree(checkpoints, ignore_errors=True)
    checkpoints.mkdir(parents=True, exist_ok=True)
