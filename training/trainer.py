"""Supervised fine-tuning: one jitted step, loss on the model's turn only, resumable.

Parameters travel as a plain nested dict (`nnx.to_pure_dict`) so optax, orbax
and jit see an ordinary pytree; the model is rebuilt with `nnx.merge` inside
the pure step function. Checkpoints hold params, optimizer state and the step;
the step is also the data position (see `data.BatchStream`).

With LoRA adapters on the model (training/lora.py) only the adapters are
"params": they alone get gradients, optimizer state and checkpoints, while the
frozen base rides along as a separate, undonated input (`lora.split_trainable`).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from training import loop, lora
from training.data import BatchStream
from training.lm_head import token_cross_entropy
from training.loop import (  # the shared loop's names, importable from here as before
    LoopConfig,
    MeshError,
    NonFiniteLoss,
    batch_sharding,
    check_devices,
    clip_by_global_norm,
    fixed_order_sum,
    global_norm,
    learning_rate_schedule,
    make_mesh,
    make_optimizer,
    param_sharding,
)
from training.model import Gemma

__all__ = [
    "LoopConfig",
    "MeshError",
    "NonFiniteLoss",
    "TrainConfig",
    "TrainResult",
    "batch_sharding",
    "check_devices",
    "clip_by_global_norm",
    "fixed_order_sum",
    "global_norm",
    "learning_rate_schedule",
    "make_mesh",
    "make_optimizer",
    "make_train_step",
    "param_sharding",
    "sft_loss_sum",
    "train",
]


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainConfig(LoopConfig):
    """SFT: `LoopConfig`'s fields (steps, optimizer, schedule, logging, checkpoints, mesh, seed) and its batches."""

    # rows per optimizer step (packed sequences of seq_len tokens); a multiple of grad_accum × mesh devices
    batch_size: int
    # tokens per packed row
    seq_len: int
    # the learning rate's warmup, in steps (required here: SFT from scratch wants one)
    warmup_steps: int
    # microbatches per step, accumulated in a lax.scan (same update as one batch, less activation memory)
    grad_accum: int = 1

    def batch_split(self) -> tuple[int, int]:
        return self.batch_size, self.grad_accum


def sft_loss_sum(model: Gemma, batch: dict[str, jax.Array], vocab_tile: int) -> tuple[jax.Array, jax.Array]:
    """Summed cross-entropy over target tokens, and their count (sums accumulate exactly)."""
    hidden, _ = model.hidden_states(batch["inputs"], batch["positions"], batch["segments"])
    table = model.embed_tokens[...].astype(hidden.dtype)
    ce = token_cross_entropy(hidden, table, batch["targets"], model.config.final_logit_softcapping, vocab_tile)
    w = batch["weights"]
    return fixed_order_sum(ce * w), jnp.sum(w)  # the weights are 0/1: their float sum is exact in any order


def make_train_step(
    graphdef: nnx.GraphDef,
    tx: optax.GradientTransformation,
    cfg: TrainConfig,
    out_shardings: Any = None,
    lora_dropout: bool = False,
) -> Callable:
    """One jitted, buffer-donating step: accumulate over microbatches, mean over target tokens, update.

    `step(params, opt_state, frozen, batch, step_index)`: `params` are trained and donated, `frozen`
    (the LoRA base; empty in full fine-tuning) only read. With `lora_dropout` the adapters' dropout
    masks come from (base.seed, step, microbatch): a resumed run draws the same ones.
    """

    def grads_of(params, frozen, micro, key):
        def loss(p):
            model = nnx.merge(graphdef, p, frozen)
            if not lora_dropout:
                return sft_loss_sum(model, micro, cfg.vocab_tile)
            with lora.dropout(key):
                return sft_loss_sum(model, micro, cfg.vocab_tile)

        return jax.value_and_grad(loss, has_aux=True)(params)

    def step(params, opt_state, frozen, batch, step_index):
        key = jax.random.fold_in(jax.random.key(cfg.seed), step_index)
        if cfg.grad_accum == 1:
            (total, n_tokens), grads = grads_of(params, frozen, batch, key)
        else:
            micro = jax.tree.map(lambda x: x.reshape(cfg.grad_accum, -1, *x.shape[1:]), batch)

            def accumulate(carry, xs):
                i, mb = xs
                (s, n), g = grads_of(params, frozen, mb, jax.random.fold_in(key, i))
                return jax.tree.map(jnp.add, carry, (s, n, g)), None

            zero = (jnp.zeros(()), jnp.zeros(()), jax.tree.map(jnp.zeros_like, params))
            (total, n_tokens, grads), _ = jax.lax.scan(accumulate, zero, (jnp.arange(cfg.grad_accum), micro))
        scale = 1.0 / jnp.maximum(n_tokens, 1.0)
        grads = jax.tree.map(lambda g: g * scale, grads)
        updates, opt_state = tx.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        metrics = {"loss": total * scale, "grad_norm": global_norm(grads), "target_tokens": n_tokens}
        return params, opt_state, metrics

    return jax.jit(step, donate_argnums=(0, 1), out_shardings=out_shardings)


@dataclasses.dataclass
class TrainResult:
    params: dict
    loss_history: list[tuple[int, float]]
    final_loss: float
    resumed_from: int


def train(
    model: Gemma,
    stream: BatchStream,
    cfg: TrainConfig,
    *,
    checkpoint_dir: Path | None = None,
    on_log: Callable[[int, dict[str, float]], None] | None = None,
    progress: Callable[[int], Any] | None = None,
) -> TrainResult:
    """Train `model` in place for `cfg.steps`, resuming from `checkpoint_dir` when it holds a checkpoint.

    A model with LoRA adapters trains (and checkpoints) only them; the base stays as it is. The loop
    around the step is `training.loop.run`; the checkpointed state is the params and optimizer state
    (the step is the data position).
    """
    placed = loop.place(model, cfg)
    schedule = learning_rate_schedule(cfg)
    dropout = any(a.dropout > 0 for a in lora.adapters(model).values())
    step_fn = make_train_step(
        placed.graphdef, placed.tx, cfg, out_shardings=(*placed.shardings, None), lora_dropout=dropout
    )
    window = {"tokens": 0, "start": time.perf_counter()}  # tokens/s since the last log step

    def step(index: int, state: dict) -> tuple[dict, dict]:
        batch = jax.device_put(stream.batch(index), placed.batches)
        params, opt_state, metrics = step_fn(state["params"], state["opt_state"], placed.frozen, batch, np.int32(index))
        window["tokens"] += batch["inputs"].size
        return {"params": params, "opt_state": opt_state}, metrics

    def row(done: int, metrics: dict) -> dict[str, float]:
        out = {
            "step": done,
            "loss": float(metrics["loss"]),
            "learning_rate": float(schedule(done - 1)),
            "grad_norm": float(metrics["grad_norm"]),
            "tokens_per_second": window["tokens"] / (time.perf_counter() - window["start"]),
        }
        window.update(tokens=0, start=time.perf_counter())
        return out

    result = loop.run(
        cfg,
        {"params": placed.params, "opt_state": placed.opt_state},
        step,
        row,
        checkpoint_dir=checkpoint_dir,
        on_log=on_log,
        progress=progress,
        postfix=lambda r: {"loss": f"{r['loss']:.4f}"},
    )
    params = result.state["params"]
    nnx.update(model, params)
    history = [(int(r["step"]), float(r["loss"])) for r in result.history]
    final = history[-1][1] if history else float("nan")
    return TrainResult(params=params, loss_history=history, final_loss=final, resumed_from=result.resumed_from)
