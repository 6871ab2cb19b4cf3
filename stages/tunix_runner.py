"""Both Tunix engines' stage side of a run (`train.engine` and `preference.engine: tunix`): the runner's work
folder beside the checkpoints, and following the runner's per-step log while it trains (the progress bar,
dvclive, the non-finite stop), so each stage keeps only what it sends and what it reads back."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import time
from pathlib import Path

from stages import live
from stages.common import StageError
from training.loop import LoopConfig, NonFiniteLoss
from training.tunix_launch import finish_engine, read_rows

POLL_SECONDS = 1.0


def work_folder(checkpoints: Path) -> tuple[Path, int, Path]:
    """The runner's work folder beside `checkpoints` (absolute: the runner starts in the repository root, the
    stage in its own directory), emptied but for the log rows up to the step a rerun resumes from; that
    folder, the step and the log. It is kept with the checkpoints until the run ends."""
    work = (checkpoints.parent / f".{checkpoints.name}.tunix").resolve()
    start = live.resume_step(checkpoints) if live.resuming(checkpoints) else 0
    log = work / "tunix_log.jsonl"
    kept = [row for row in read_rows(log) if row["step"] <= start]  # a killed run logged past its checkpoint
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    log.write_text("".join(json.dumps(row) + "\n" for row in kept))
    return work, start, log


def follow(proc: subprocess.Popen, log: Path, cfg: LoopConfig, start: int, on_log, progress, what: str) -> list[dict]:
    """A Tunix runner's rows as it writes them, from step `start`: the bar moved, each log step's row (every
    `cfg.log_every` and the last) to `on_log`, a non-finite loss stopped at once; its rows at the end. A failed
    runner is a StageError naming `what` (the engine's param)."""
    bar, done = progress(start), start
    try:
        while True:
            finished = proc.poll() is not None
            for row in read_rows(log):
                if row["step"] > done:
                    bar.update(row["step"] - done)
                    done = row["step"]
                    if not math.isfinite(row["loss"]):
                        proc.kill()
                        raise NonFiniteLoss(f"loss {row['loss']} at step {row['step']}")
                    if row["step"] % cfg.log_every == 0 or row["step"] == cfg.steps:
                        on_log(row["step"], row)
            if finished:
                break
            time.sleep(POLL_SECONDS)
        return finish_engine(proc, log)
    except NonFiniteLoss:
        raise
    except RuntimeError as err:
        raise StageError(f"{what} tunix: {err}") from None
    finally:
        bar.close()
        if proc.poll() is None:
            proc.kill()
