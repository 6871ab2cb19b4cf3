"""Tunix's own preference trainer, `DPOTrainer` (DPO and ORPO), on our pairs: the `tunix` engine of the
preference stage (stages/tunix_preference.py starts it).

Runs in the Tunix environment (.venv-tunix), from the project root:

    .venv-tunix/bin/python -m training.tunix_dpo request.json

Of this project it imports only training/tunix_engine.py (Tunix's Gemma from our Hugging Face directory, the
weights mapped back to Hugging Face names, the optimizer of training/loop.py) and training.loop.

The inputs are pre-tokenised, Tunix's `TrainingInput`: the main environment renders each prompt with our chat
template (its one `<bos>` included) and takes the sampled completions' token ids as they are (each ending in
its `<end_of_turn>`), so DPOTrainer's own tokenisation, which would prepend a BOS to every completion and add
no end of turn, never runs. Prompts are left-padded, completions right-padded, with their masks.

The policy is Tunix's Gemma built from the SFT model; for dpo the reference is a second instance built from the
same directory, which DPOTrainer keeps frozen and runs on every batch (it recomputes the reference log-probs
each step; our engine computes them once). orpo reads no reference.

request.json: {"model_dir", "preset" (gemma3-270m | gemma3-1b), "loop" (training.loop LoopConfig fields),
"algorithm" (dpo | orpo), "beta", "lambda_orpo", "label_smoothing", "batches" (.npz of `INPUT_KEYS`, each
[steps, pairs, width]), "log" (JSON lines, one per step: step, loss, grad_norm and what DPOTrainer reports, under
our names), optional "checkpoint_dir" and "save_every" (Orbax, through DPOTrainer's TrainingConfig; a rerun
resumes from the latest), optional "export" (a directory: the trained weights as model.safetensors under Hugging
Face names, read back by training/tunix_launch.py `load_export`)}.
"""

from __future__ import annotations

import gc
import json
import sys
from pathlib import Path

import numpy as np

from training.loop import make_optimizer
from training.tunix_engine import hf_weights, loop_config, tunix_model

INPUT_KEYS = ("prompt_ids", "prompt_mask", "chosen_ids", "chosen_mask", "rejected_ids", "rejected_mask")
# DPOTrainer's aux metrics -> the names our preference learner logs (training/preference.py)
METRICS = {
    "rewards/chosen": "reward_chosen",
    "rewards/rejected": "reward_rejected",
    "rewards/margin": "margin",
    "rewards/accuracy": "pair_accuracy",
    "log_probs/chosen": "logp_chosen",
    "log_probs/rejected": "logp_rejected",
    "odds_ratio": "odds_ratio",  # orpo only
}


def training_inputs(path: str):
    """Each step's `TrainingInput`, in the order written (DPOTrainer skips those already trained on resume)."""
    from tunix.sft.dpo.dpo_trainer import TrainingInput

    with np.load(path) as data:
        arrays = {k: data[k] for k in INPUT_KEYS}
    for i in range(len(arrays["prompt_ids"])):
        yield TrainingInput(**{k: v[i] for k, v in arrays.items()})


def run(request: dict) -> list[dict]:
    """Train as `request` says; return (and append to request["log"]) one row per step trained here."""
    import orbax.checkpoint as ocp
    from tunix.sft import hooks
    from tunix.sft.dpo import dpo_trainer

    cfg = loop_config(request["loop"])
    algorithm = request["algorithm"]
    model = tunix_model(request["model_dir"], request["preset"])
    reference = tunix_model(request["model_dir"], request["preset"]) if algorithm == "dpo" else None
    options = None
    if request.get("checkpoint_dir") and request.get("save_every"):
        options = ocp.CheckpointManagerOptions(save_interval_steps=request["save_every"], max_to_keep=1)
    config = dpo_trainer.DPOTrainingConfig(
        algorithm=algorithm,
        beta=request["beta"],
        lambda_orpo=request["lambda_orpo"],
        label_smoothing=request["label_smoothing"],
        eval_every_n_steps=cfg.steps + 1,
        max_steps=cfg.steps,
        checkpoint_root_directory=request.get("checkpoint_dir") if options else None,
        checkpointing_options=options,
        pbar_description=None,
    )
    trainer = dpo_trainer.DPOTrainer(model, reference, make_optimizer(cfg), config)
    reported = {theirs: ours for theirs, ours in METRICS.items() if theirs in trainer._aux_metrics_to_log}
    rows: list[dict] = []
    log_path = Path(request["log"])

    def on_train_step_end(hooks_self, train_ctx, train_step, train_loss):
        """One row per step as DPOTrainer reports it: its metrics are logged when the next step has run."""
        last = lambda name: float(train_ctx.metrics_logger.get_metric_history("", name, "train")[-1])
        row = {"step": int(train_step), "loss": float(train_loss), "grad_norm": last("grad_norm")}
        row |= {ours: last(theirs) for theirs, ours in reported.items()}
        rows.append(row)
        with log_path.open("a") as f:
            f.write(json.dumps(row) + "\n")

    # every other hook does nothing
    noop = {name: lambda *args: None for name in hooks.TrainingHooks.__abstractmethods__}
    Rows = type("Rows", (hooks.TrainingHooks,), noop | {"on_train_step_end": on_train_step_end})
    trainer.with_training_hooks(Rows())
    trainer.train(training_inputs(request["batches"]))
    del trainer, reference  # the optimizer state and the frozen copy go before the export's copy comes
    gc.collect()  # cycles included, before the export allocates
    if request.get("export"):
        from safetensors.numpy import save_file

        Path(request["export"]).mkdir(parents=True, exist_ok=True)
        save_file(hf_weights(model), str(Path(request["export"]) / "model.safetensors"))
    return rows


def main(request_path: str) -> None:
    run(json.loads(Path(request_path).read_text()))


if __name__ == "__main__":
    main(*sys.argv[1:])
