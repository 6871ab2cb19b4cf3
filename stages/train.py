"""Stage `train`: supervised fine-tuning on data/train.jsonl -> data/model/ (a Hugging Face model dir).

Logs loss, learning rate and tokens/s with dvclive (dvclive/, drawn by
`dvc plots show`), checkpoints with orbax into data/checkpoints/ (a persistent
out: an interrupted `dvc repro` resumes from it), and writes
data/model/training_info.json: what was trained, how, and the loss curve,
with no wall-clock values so the directory's bytes are reproducible.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
from pathlib import Path

import jax

from stages import live, paths, tunix_train
from stages.common import (
    StageError,
    atomic_path,
    load_params,
    load_tokenizer,
    param_error,
    params_where,
    read_checked_jsonl,
    run_stage,
    validate,
    write_json,
)
from training import lora
from training import tokenizer as tokenizers_io
from training.data import BatchStream, encode_trace, pack
from training.factory import ShapeError, build_model
from training.hf_io import CheckpointError, read_config, save_trained
from training.host_memory import reuse_freed_memory
from training.lora import LoRAError, LoRASpec
from training.trainer import MeshError, NonFiniteLoss, TrainConfig, TrainResult, check_devices, train

VERSIONED = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "tokenizers", "safetensors", "dvc", "dvclive")


def versions() -> dict[str, str]:
    return {name: importlib.metadata.version(name) for name in VERSIONED}


def train_config(params: dict) -> TrainConfig:
    p = params["train"]
    return TrainConfig(
        seed=params["base"]["seed"],
        mesh_data=p["mesh"]["data"],
        mesh_fsdp=p["mesh"]["fsdp"],
        **{k: v for k, v in p.items() if k in TrainConfig.__dataclass_fields__},
    )


def run(params: dict, root: Path = Path(".")) -> TrainResult:
    """Train the model `params` describe on `root`'s traces; write its HF directory and dvclive curves."""
    cfg = train_config(params)
    try:
        check_devices(cfg)
    except MeshError as err:
        raise param_error("train", err.key, message=err, root=root) from None
    records = read_checked_jsonl(root / paths.TRAIN, "trace", root / paths.TRAIN_MANIFEST)
    tok = load_tokenizer(root / paths.TOKENIZER)
    examples = [encode_trace(tok, r) for r in records]
    rows = pack(examples, cfg.seq_len, pad_id=tokenizers_io.token_id(tok, "<pad>"))
    stream = BatchStream(rows, cfg.batch_size, cfg.seed)
    tunix = params["train"]["engine"] == "tunix"  # Tunix's PeftTrainer in .venv-tunix (stages/tunix_train.py)
    if tunix:
        tunix_train.check(params, root)
    spec = LoRASpec.from_params(params["model"].get("lora"))
    try:
        model = None
        # The tunix engine reads full weights from data/base/ itself; with LoRA it starts from our adapters
        # and its trained ones are read back into this model.
        if not tunix or spec.rank:
            model = build_model(
                params["model"],
                tok.get_vocab_size(),
                cfg.seed,
                remat=params["train"]["remat"],
                checkpoint=root / paths.BASE,
            )
        model_config = model.config if model is not None else read_config(root / paths.BASE)
    except CheckpointError as err:
        raise StageError(str(err)) from None
    except ShapeError as err:
        raise StageError(f"{params_where('model', 'tiny', root=root)}: {err}") from None
    except LoRAError as err:
        raise param_error("model", "lora", err.key, message=err, root=root) from None
    n_params = model_config.num_params()
    print(
        f"train: {len(records)} traces packed into {len(rows)} rows of {cfg.seq_len} "
        f"({rows.fill:.0%} full, {rows.truncated} truncated); {n_params / 1e6:.2f}M parameters "
        f"on {jax.device_count()} {jax.devices()[0].platform} device(s)"
    )

    checkpoints = root / paths.CHECKPOINTS
    with live.curves(root / paths.TRAIN_LIVE, checkpoints, prefix="train/") as on_log:
        progress = live.progress(cfg.steps, "train")
        try:
            if tunix:
                model, result = tunix_train.train(params, cfg, stream, root, model, on_log, progress)
            else:
                result = train(model, stream, cfg, checkpoint_dir=checkpoints, on_log=on_log, progress=progress)
        except NonFiniteLoss as err:
            raise StageError(f"{paths.TRAIN}: training diverged: {err}") from None

        # Inside the curves' block: they replace the last good ones only once the model is written too.
        info = {
            "preset": params["model"]["preset"],
            "checkpoint": params["model"]["checkpoint"],
            "n_params": n_params,
            "steps": cfg.steps,
            "tokens_per_step": cfg.batch_size * cfg.seq_len,
            "final_loss": result.final_loss,
            "loss_history": [[s, v] for s, v in result.loss_history],
            "packing": {
                "examples": len(examples),
                "rows": len(rows),
                "fill": round(rows.fill, 6),
                "truncated": rows.truncated,
            },
            "versions": versions(),
            "devices": [str(d) for d in jax.devices()],
        }
        if spec.rank:  # only then: the default run's training_info.json keeps its bytes
            trainable = sum(a.a.size + a.b.size for a in lora.adapters(model).values())
            # targets as the list JSON writes: the schema (checked before writing) knows no tuples
            info["lora"] = {
                **dataclasses.asdict(spec),
                "targets": list(spec.targets),
                "trainable_params": int(trainable),
            }
        validate(info, "training_info", str(paths.TRAINING_INFO))  # what evidence will read, checked where it is made
        with atomic_path(root / paths.MODEL) as out:
            save_trained(model, spec, out, root / paths.TOKENIZER, base_model=params["model"]["checkpoint"])
            write_json(out / paths.TRAINING_INFO.name, info)
    live.finished(checkpoints)
    if result.resumed_from:
        print(f"train: resumed from the checkpoint of step {result.resumed_from} in {paths.CHECKPOINTS}")
    print(f"train: final loss {result.final_loss:.4f} -> {paths.MODEL}")
    return result


def main() -> None:
    reuse_freed_memory()  # before JAX runs a program (training/host_memory.py)
    params = load_params()
    if params["train"]["distributed"]:
        jax.distributed.initialize()  # coordinator and process ids from the environment (TPU, SLURM, …)
    run(params)


if __name__ == "__main__":
    run_stage(main)
