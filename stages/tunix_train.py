"""The train stage's `tunix` engine (`train.engine: tunix`): Tunix's own `PeftTrainer` trains, in the Tunix
environment, on the batches our engine would train on, and the stage writes what it writes for our engine.

The stage packs the batches as always and writes every step's (training/tunix_launch.py); the runner
(training/tunix_engine.py, in .venv-tunix) trains Tunix's Gemma from data/base/ with the same optimizer and
schedule, checkpoints through Tunix's Orbax manager into data/checkpoints/ (a rerun after a kill resumes
there, as ours does), appends a row per step to a log the stage follows into dvclive, and exports the trained
weights under Hugging Face names, which are read back into our model and written by the same `save_trained`.
docs/tunix.md says what each engine supports.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from flax import nnx

from stages import live, paths
from stages.common import StageError, param_error
from training.data import BatchStream
from training.hf_io import CheckpointError
from training.lora import LoRASpec
from training.model import Gemma
from training.trainer import NonFiniteLoss, TrainConfig, TrainResult
from training.tunix_launch import (
    TUNIX_PRESETS,
    TunixUnavailable,
    check_available,
    finish_engine,
    load_export,
    read_rows,
    start_engine,
    write_batches,
)

LOOP_FIELDS = ("steps", "learning_rate", "warmup_steps", "schedule", "end_lr_fraction", "weight_decay")
LOOP_FIELDS += ("grad_clip", "optimizer", "seed")
POLL_SECONDS = 1.0


def check(params: dict, root: Path) -> None:
    """Refuse, in one line naming the param, what the Tunix engine does not run; before any work."""
    preset = params["model"]["preset"]
    if preset not in TUNIX_PRESETS:
        raise param_error(
            "train",
            "engine",
            message=f"tunix runs only the presets with a Tunix ModelConfig ({', '.join(TUNIX_PRESETS)}), "
            f"not model.preset {preset}: set train.engine: ours",
            root=root,
        )
    reasons = {
        "model.lora.rank > 0 (LoRA)": LoRASpec.from_params(params["model"].get("lora")).rank > 0,
        "train.grad_accum > 1": params["train"]["grad_accum"] > 1,
        "a mesh of more than one device": params["train"]["mesh"]["data"] * params["train"]["mesh"]["fsdp"] > 1,
    }
    for what, asked in reasons.items():
        if asked:
            raise param_error(
                "train", "engine", message=f"tunix does not run {what} yet: set train.engine: ours", root=root
            )
    try:
        check_available()
    except TunixUnavailable as err:
        raise param_error("train", "engine", message=err, root=root) from None


def train(
    params: dict,
    cfg: TrainConfig,
    stream: BatchStream,
    root: Path,
    on_log: Callable[[int, dict], None],
    progress: Callable[[int], object],
) -> tuple[Gemma, TrainResult]:
    """Train with Tunix; the trained model (ours, float32, read from its export) and the run's history."""
    checkpoints = root / paths.CHECKPOINTS
    # kept with the checkpoints until the run ends; absolute, as every path the runner is given (it starts
    # in the repository root, the stage in its own directory)
    work = (checkpoints.parent / f".{checkpoints.name}.tunix").resolve()
    start = live.resume_step(checkpoints) if live.resuming(checkpoints) else 0
    log = work / "tunix_log.jsonl"
    kept = [row for row in read_rows(log) if row["step"] <= start]  # a killed run logged past its checkpoint
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    log.write_text("".join(json.dumps(row) + "\n" for row in kept))
    write_batches(stream.batch, cfg.steps, work / "batches.npz")
    request = {
        "model_dir": str((root / paths.BASE).resolve()),
        "preset": params["model"]["preset"],
        "loop": {k: getattr(cfg, k) for k in LOOP_FIELDS},
        "batches": str(work / "batches.npz"),
        "export": str(work / "export"),
    }
    if cfg.save_every:
        request |= {"checkpoint_dir": str(checkpoints.resolve()), "save_every": cfg.save_every}
    proc, log = start_engine(request | {"log": str(log)}, work)
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
        rows = finish_engine(proc, log)
    except NonFiniteLoss:
        raise
    except RuntimeError as err:
        raise StageError(f"train.engine tunix: {err}") from None
    finally:
        bar.close()
        if proc.poll() is None:
            proc.kill()
    history = [(r["step"], r["loss"]) for r in rows if r["step"] % cfg.log_every == 0 or r["step"] == cfg.steps]
    if not history or history[-1][0] != cfg.steps:
        raise StageError(f"train.engine tunix: the runner stopped at step {done} of {cfg.steps}")
    try:
        model = load_export(work / "export", root / paths.BASE)
    except CheckpointError as err:
        raise StageError(f"train.engine tunix: {err}") from None
    shutil.rmtree(work)
    result = TrainResult(
        params=nnx.to_pure_dict(nnx.state(model, nnx.Param)),
        loss_history=history,
        final_loss=history[-1][1],
        resumed_from=start,
    )
    return model, result
