"""Tunix's own SFT trainer, `PeftTrainer`, on our packed batches: the `tunix` engine of the train stage and
the reference our trainer is checked against step by step (tests/test_tunix_engine.py).

Runs in the Tunix environment (.venv-tunix: google-tunix pins older safetensors and transformers than
our lock), started by training/tunix_launch.py from the project root:

    .venv-tunix/bin/python -m training.tunix_engine request.json

Of this project it imports only training.loop (JAX and optax alone) and training/tunix_launch.py's names:
the optimizer and schedule Tunix steps with are the very ones our trainer builds (`make_optimizer`), not a
copy that could drift.

What is Tunix's and what is ours:

- the model is Tunix's Gemma (`ModelConfig.<preset>()`, float32) built from our Hugging Face directory by
  its own `params_safetensors.create_model_from_safe_tensors`; the step, gradients, optimizer update,
  Orbax checkpoints and resume are `PeftTrainer`'s;
- the batches are ours, token for token (the main environment packs and writes them): Tunix's trainer
  refuses packing (`max_seq_token_per_tpu`), so each row's examples are kept apart by the attention mask
  (causal within a segment) and by their positions, which restart at 0 per example, as ours;
- the loss is Tunix's default (`peft_trainer._default_loss_fn`: log-softmax of the logits at the target,
  summed over target tokens, divided by their count + 1e-8) with our explicit targets instead of the
  input shifted by one: a packed row's last token of an example has its own target, not the next
  example's first token. BOS is whatever the tokens hold (ours: the chat template's `<bos>`); nothing is
  prepended.

request.json: {"model_dir", "preset" (ours: gemma3-270m | gemma3-1b), "loop" (training.loop
LoopConfig fields), "batches" (.npz of inputs, targets, weights, positions, segments, each
[steps, rows, seq_len]), "log" (JSON lines, one per step: step, loss, grad_norm, learning_rate,
tokens_per_second),
optional "checkpoint_dir" and "save_every" (Orbax, through PeftTrainer; a rerun resumes from the latest),
optional "export" (a directory: the trained weights written there as model.safetensors under Hugging Face
names; training/tunix_launch.py `load_export` adds the config and reads them as our model)}.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from training.loop import LoopConfig, learning_rate_schedule, make_optimizer
from training.tunix_launch import BATCH_KEYS, TUNIX_PRESETS


def tunix_model(model_dir: str, preset: str):
    """Tunix's Gemma 3 of `preset`, in float32, with the weights of our Hugging Face directory."""
    from tunix.models.gemma3 import model as model_lib
    from tunix.models.gemma3 import params_safetensors

    config = dataclasses.replace(getattr(model_lib.ModelConfig, TUNIX_PRESETS[preset])(), param_dtype=jnp.float32)
    return params_safetensors.create_model_from_safe_tensors(model_dir, config, dtype=jnp.float32)


def model_inputs(batch: dict) -> dict:
    """A packed batch as the loss reads it: each example attends causally to itself only."""
    seg = batch["segments"]
    t = seg.shape[-1]
    causal = jnp.tril(jnp.ones((t, t), jnp.bool_))
    mask = (seg[:, :, None] == seg[:, None, :]) & causal[None]
    return {
        "inputs": batch["inputs"],
        "targets": batch["targets"],
        "weights": batch["weights"],
        "positions": batch["positions"],
        "attention_mask": mask,
    }


def packed_loss(model, inputs, targets, weights, positions, attention_mask) -> jax.Array:
    """Tunix's default SFT loss (mean negative log-likelihood over target tokens) with explicit targets."""
    logits, _ = model(inputs, positions, None, attention_mask)
    logp = jax.nn.log_softmax(logits.astype(jnp.float32))
    picked = jnp.take_along_axis(logp, targets[..., None].astype(jnp.int32), axis=-1)[..., 0]
    return -jnp.sum(picked * weights) / (jnp.sum(weights) + 1e-8)


def batches(path: str):
    """The steps' batches, read one at a time from the .npz (PeftTrainer skips those already trained)."""
    with np.load(path) as data:
        arrays = {k: data[k] for k in BATCH_KEYS}
    for i in range(len(arrays["inputs"])):
        yield {k: v[i] for k, v in arrays.items()}


def loop_config(fields: dict) -> LoopConfig:
    return LoopConfig(**{k: v for k, v in fields.items() if k in LoopConfig.__dataclass_fields__})


def run(request: dict) -> list[dict]:
    """Train as `request` says; return (and append to request["log"]) one row per step trained here."""
    import orbax.checkpoint as ocp
    from tunix.sft import hooks, peft_trainer

    cfg = loop_config(request["loop"])
    schedule = learning_rate_schedule(cfg)
    model = tunix_model(request["model_dir"], request["preset"])
    options = None
    if request.get("checkpoint_dir") and request.get("save_every"):
        options = ocp.CheckpointManagerOptions(save_interval_steps=request["save_every"], max_to_keep=1)
    training_config = peft_trainer.TrainingConfig(
        eval_every_n_steps=cfg.steps + 1,
        max_steps=cfg.steps,
        checkpoint_root_directory=request.get("checkpoint_dir") if options else None,
        checkpointing_options=options,
        pbar_description=None,
    )
    trainer = peft_trainer.PeftTrainer(model, make_optimizer(cfg), training_config)
    trainer.with_gen_model_input_fn(model_inputs).with_loss_fn(packed_loss)
    rows: list[dict] = []
    log_path = Path(request["log"])
    with np.load(request["batches"]) as data:
        tokens_per_step = int(np.prod(data["inputs"].shape[1:]))
    clock = [time.perf_counter()]

    class Rows(hooks.TrainingHooks):
        """One row per step as PeftTrainer reports it (its metrics trail the step by one)."""

        def on_train_step_end(self, train_ctx, train_step, train_loss):
            norms = train_ctx.metrics_logger.get_metric_history("", "grad_norm", "train")
            now = time.perf_counter()
            row = {
                "step": int(train_step),
                "loss": float(train_loss),
                "grad_norm": float(norms[-1]),
                "learning_rate": float(schedule(int(train_step) - 1)),
                # every slot of the rows, padding included, as ours counts; the first step's includes compiling
                "tokens_per_second": tokens_per_step / max(now - clock[0], 1e-9),
            }
            clock[0] = now
            rows.append(row)
            with log_path.open("a") as f:
                f.write(json.dumps(row) + "\n")

        def on_train_start(self, train_ctx):
            clock[0] = time.perf_counter()

        def on_train_end(self, train_ctx):
            pass

        def on_train_step_start(self, train_ctx):
            pass

        def on_eval_step_start(self, train_ctx):
            pass

        def on_eval_step_end(self, train_ctx, eval_loss):
            pass

    trainer.with_training_hooks(Rows())
    trainer.train(batches(request["batches"]))
    if request.get("export"):
        from safetensors.numpy import save_file

        Path(request["export"]).mkdir(parents=True, exist_ok=True)
        save_file(hf_weights(model), str(Path(request["export"]) / "model.safetensors"))
    return rows


def hf_weights(model) -> dict[str, np.ndarray]:
    """The trained Tunix Gemma 3 as Hugging Face tensors: `params_safetensors`' mapping run backwards."""
    from flax import nnx

    flat = {".".join(str(p) for p in path): np.asarray(v) for path, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}
    cfg = model.config
    out = {"model.embed_tokens.weight": flat["embedder.input_embedding"], "model.norm.weight": flat["final_norm.scale"]}

    def proj(w: np.ndarray) -> np.ndarray:  # [heads, D, H] -> [heads * H, D]
        n, d, h = w.shape
        return w.transpose(0, 2, 1).reshape(n * h, d)

    norms = {
        "pre_attention_norm": "input_layernorm",
        "post_attention_norm": "post_attention_layernorm",
        "pre_ffw_norm": "pre_feedforward_layernorm",
        "post_ffw_norm": "post_feedforward_layernorm",
        "attn._query_norm": "self_attn.q_norm",
        "attn._key_norm": "self_attn.k_norm",
    }
    for i in range(cfg.num_layers):
        ours, theirs = f"model.layers.{i}.", f"layers.{i}."
        if theirs + "attn.qkv_einsum.w" in flat:
            q, k, v = flat[theirs + "attn.qkv_einsum.w"]
        else:
            q = flat[theirs + "attn.q_einsum.w"]
            k, v = flat[theirs + "attn.kv_einsum.w"]
        out[ours + "self_attn.q_proj.weight"] = proj(q)
        out[ours + "self_attn.k_proj.weight"] = proj(k)
        out[ours + "self_attn.v_proj.weight"] = proj(v)
        o = flat[theirs + "attn.attn_vec_einsum.w"]  # [heads, H, D]
        out[ours + "self_attn.o_proj.weight"] = o.reshape(-1, o.shape[-1]).T
        for name in ("gate_proj", "up_proj", "down_proj"):
            out[ours + f"mlp.{name}.weight"] = flat[theirs + f"mlp.{name}.kernel"].T
        for theirs_norm, ours_norm in norms.items():
            out[ours + ours_norm + ".weight"] = flat[theirs + theirs_norm + ".scale"]
    return {k: np.ascontiguousarray(v, np.float32) for k, v in out.items()}


def main(request_path: str) -> None:
    run(json.loads(Path(request_path).read_text()))


if __name__ == "__main__":
    main(*sys.argv[1:])
