"""The train stage's `tunix` engine (`train.engine: tunix`): Tunix's own `PeftTrainer` trains, in the Tunix
environment, on the batches our engine would train on, and the stage writes what it writes for our engine.

The stage packs the batches as always and writes every step's (training/tunix_launch.py); the runner
(training/tunix_engine.py, in .venv-tunix) trains Tunix's Gemma from data/base/ with the same optimizer and
schedule, checkpoints through Tunix's Orbax manager into data/checkpoints/ (a rerun after a kill resumes
there, as ours does), appends a row per step to a log the stage follows into dvclive, and exports the trained
weights under Hugging Face names, which are read back into our model and written by the same `save_trained`.
With LoRA (model.lora.rank > 0) the stage builds our model with its adapters first, as for our engine, hands
their initial values to the runner (qwix LoRA on the same projections starts from them), and reads the trained
adapters back into it: `save_trained` then writes the same PEFT adapter and merged model as for our engine.
docs/tunix.md says what each engine supports.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

from flax import nnx
from safetensors.numpy import save_file

from stages import paths
from stages.common import StageError, param_error
from stages.tunix_runner import follow, work_folder
from training import lora
from training.data import BatchStream
from training.hf_io import CheckpointError
from training.lora import LoRASpec
from training.model import Gemma
from training.trainer import TrainConfig, TrainResult
from training.tunix_launch import (
    TUNIX_PRESETS,
    TunixUnavailable,
    check_available,
    load_adapters,
    load_export,
    start_engine,
    write_batches,
)

LOOP_FIELDS = ("steps", "learning_rate", "warmup_steps", "schedule", "end_lr_fraction", "weight_decay")
LOOP_FIELDS += ("grad_clip", "optimizer", "seed")


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
    spec = LoRASpec.from_params(params["model"].get("lora"))
    reasons = {
        "LoRA with model.lora.dropout > 0": spec.rank > 0 and spec.dropout > 0,
        # Tunix computes k and v in one einsum: qwix adapts both or neither
        "LoRA on only one of k_proj and v_proj": spec.rank > 0
        and ("k_proj" in spec.targets) != ("v_proj" in spec.targets),
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
    model: Gemma | None,
    on_log: Callable[[int, dict], None],
    progress: Callable[[int], object],
) -> tuple[Gemma, TrainResult]:
    """Train with Tunix; the trained model (ours, float32) and the run's history. With LoRA, `model` is ours
    with its fresh adapters (the runner starts from them; the trained ones are read back into it); for full
    fine-tuning it is None and the model is read from the runner's export."""
    spec = LoRASpec.from_params(params["model"].get("lora"))
    checkpoints = root / paths.CHECKPOINTS
    work, start, log = work_folder(checkpoints)
    write_batches(stream.batch, cfg.steps, work / "batches.npz")
    if spec.rank:
        save_file(lora.peft_tensors(model), str(work / "lora_init.safetensors"))
    request = {
        "model_dir": str((root / paths.BASE).resolve()),
        "preset": params["model"]["preset"],
        "loop": {k: getattr(cfg, k) for k in LOOP_FIELDS},
        "batches": str(work / "batches.npz"),
        "export": str(work / "export"),
    }
    if spec.rank:
        lora_fields = {"rank": spec.rank, "alpha": spec.alpha, "targets": list(spec.targets), "rslora": spec.rslora}
        request["lora"] = lora_fields | {"init": str(work / "lora_init.safetensors")}
    if cfg.save_every:
        request |= {"checkpoint_dir": str(checkpoints.resolve()), "save_every": cfg.save_every}
    rows = follow(*start_engine(request | {"log": str(log)}, work), cfg, start, on_log, progress, "train.engine")
    history = [(r["step"], r["loss"]) for r in rows if r["step"] % cfg.log_every == 0 or r["step"] == cfg.steps]
    if not history or history[-1][0] != cfg.steps:
        done = rows[-1]["step"] if rows else start
        raise StageError(f"train.engine tunix: the runner stopped at step {done} of {cfg.steps}")
    try:
        if model is None:
            model = load_export(work / "export", root / paths.BASE)
        else:
            load_adapters(model, work / "export")
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
