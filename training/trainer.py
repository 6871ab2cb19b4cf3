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
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
from flax import nnx
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from training import lora
from training.data import BatchStream
from training.lm_head import token_cross_entropy
from training.model import Gemma


class NonFiniteLoss(RuntimeError):
    pass


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    steps: int
    batch_size: int
    seq_len: int
    learning_rate: float
    warmup_steps: int
    schedule: str = "cosine"
    end_lr_fraction: float = 0.05
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    log_every: int = 10
    save_every: int = 0  # 0: no intermediate checkpoints
    vocab_tile: int = 16384  # vocabulary tile of the cross-entropy: [tokens, tile] logits at a time (lm_head.py)
    seed: int = 0
    optimizer: str = "adamw"  # adamw | adafactor
    grad_accum: int = 1  # microbatches per step, accumulated in a lax.scan
    mesh_data: int = 1  # devices along the data-parallel axis
    mesh_fsdp: int = 1  # devices along the fully-sharded axis (params and optimizer state split)


def learning_rate_schedule(cfg: TrainConfig) -> optax.Schedule:
    """Linear warmup, then constant, linear or cosine decay to `end_lr_fraction`."""
    peak, end = cfg.learning_rate, cfg.learning_rate * cfg.end_lr_fraction
    warmup = min(cfg.warmup_steps, cfg.steps)
    decay_steps = max(cfg.steps - warmup, 1)
    after = {
        "constant": optax.constant_schedule(peak),
        "linear": optax.linear_schedule(peak, end, decay_steps),
        "cosine": optax.cosine_decay_schedule(peak, decay_steps, alpha=cfg.end_lr_fraction),
    }[cfg.schedule]
    if warmup == 0:
        return after
    return optax.join_schedules([optax.linear_schedule(peak / warmup, peak, warmup - 1), after], [warmup])


def make_optimizer(cfg: TrainConfig) -> optax.GradientTransformation:
    decay_mask = lambda params: jax.tree.map(lambda x: x.ndim >= 2, params)  # no decay on norms
    lr = learning_rate_schedule(cfg)
    if cfg.optimizer == "adafactor":  # factored second moments: optimizer memory ~ O(rows + cols)
        opt = optax.adafactor(lr, weight_decay_rate=cfg.weight_decay or None, weight_decay_mask=decay_mask)
    else:
        opt = optax.adamw(lr, b1=0.9, b2=0.98, weight_decay=cfg.weight_decay, mask=decay_mask)
    return optax.chain(clip_by_global_norm(cfg.grad_clip), opt)


def fixed_order_sum(x: jax.Array) -> jax.Array:
    """The sum of every element of `x`, added as a pairwise tree written out here.

    XLA's CPU reduction of a whole array groups its partial sums by the host's vector width,
    so an AVX-512 machine rounds a sum differently from an AVX2 one; this order is the same
    on every CPU (zeros pad the array to a power of two: adding them is exact)."""
    flat = x.reshape(-1)
    flat = jnp.pad(flat, (0, (1 << max(flat.size - 1, 0).bit_length()) - flat.size))
    while flat.size > 1:
        pairs = flat.reshape(-1, 2)
        flat = pairs[:, 0] + pairs[:, 1]
    return flat[0]


def global_norm(tree: Any) -> jax.Array:
    """The L2 norm of every leaf together, summed in a fixed order (leaf by leaf, each a fixed tree)."""
    return jnp.sqrt(sum(fixed_order_sum(jnp.square(x.astype(jnp.float32))) for x in jax.tree.leaves(tree)))


def clip_by_global_norm(max_norm: float) -> optax.GradientTransformation:
    """optax.clip_by_global_norm with the norm of `global_norm`: the same bytes under AVX-512 and AVX2."""

    def clip(updates: Any, params: Any = None) -> Any:
        norm = global_norm(updates)
        return jax.tree.map(lambda t: jnp.where(norm < max_norm, t, (t / norm.astype(t.dtype)) * max_norm), updates)

    return optax.stateless(clip)


class MeshError(ValueError):
    """The mesh or the batch does not fit the devices; `key` names the `train` param at fault
    (the message names no param: a stage says which of its own sets the batch)."""

    def __init__(self, key: str, message: str):
        super().__init__(message)
        self.key = key


def check_devices(cfg: TrainConfig) -> None:
    """Raise a MeshError unless the mesh fits the visible devices and the batch splits evenly over it."""
    n = cfg.mesh_data * cfg.mesh_fsdp
    if n > jax.device_count():
        raise MeshError("mesh", f"{n} devices asked for, {jax.device_count()} visible")
    if cfg.batch_size % (cfg.grad_accum * n):
        raise MeshError("batch_size", f"a batch of {cfg.batch_size} is not a multiple of "
                                      f"grad_accum × mesh devices ({cfg.grad_accum * n})")


def make_mesh(cfg: TrainConfig) -> Mesh:
    """A (data, fsdp) device mesh over the first data × fsdp devices."""
    check_devices(cfg)
    n = cfg.mesh_data * cfg.mesh_fsdp
    return Mesh(np.asarray(jax.devices()[:n]).reshape(cfg.mesh_data, cfg.mesh_fsdp), ("data", "fsdp"))


def param_sharding(mesh: Mesh, x: jax.Array) -> NamedSharding:
    """FSDP: split a tensor's largest axis that the fsdp axis divides; replicate the rest."""
    fsdp = mesh.shape["fsdp"]
    spec = [None] * x.ndim
    for axis in sorted(range(x.ndim), key=lambda a: -x.shape[a]):
        if fsdp > 1 and x.shape[axis] % fsdp == 0:
            spec[axis] = "fsdp"
            break
    return NamedSharding(mesh, P(*spec))


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Batches split along their first axis over every device of the mesh."""
    return NamedSharding(mesh, P(("data", "fsdp")))


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

    A model with LoRA adapters trains (and checkpoints) only them; the base stays as it is.
    """
    graphdef, params, frozen = lora.split_trainable(model)
    mesh = make_mesh(cfg)
    shard = lambda tree: jax.device_put(tree, jax.tree.map(lambda x: param_sharding(mesh, x), tree))
    params, frozen = shard(params), shard(frozen)
    tx = make_optimizer(cfg)
    opt_state = shard(tx.init(params))  # moments split like their parameters, scalars replicated
    shardings = (jax.tree.map(lambda x: x.sharding, params), jax.tree.map(lambda x: x.sharding, opt_state), None)
    schedule = learning_rate_schedule(cfg)
    dropout = any(a.dropout > 0 for a in lora.adapters(model).values())
    step_fn = make_train_step(graphdef, tx, cfg, out_shardings=shardings, lora_dropout=dropout)
    on_mesh = batch_sharding(mesh)

    manager = None
    start = 0
    history: list[tuple[int, float]] = []
    if checkpoint_dir is not None:
        manager = checkpoint_manager(checkpoint_dir)
        latest = manager.latest_step()
        if latest is not None:
            target = {"params": params, "opt_state": opt_state, "history": np.zeros((0, 2), np.float64)}
            restored = manager.restore(latest, args=ocp.args.StandardRestore(abstract_like(target)))
            params, opt_state, start = restored["params"], restored["opt_state"], latest
            history = [(int(s), float(v)) for s, v in np.asarray(restored["history"]) if s >= 0]

    bar = progress(start) if progress else None
    window_tokens, window_start, loss = 0, time.perf_counter(), math.nan
    for step in range(start, cfg.steps):
        batch = jax.device_put(stream.batch(step), on_mesh)
        params, opt_state, metrics = step_fn(params, opt_state, frozen, batch, np.int32(step))
        window_tokens += batch["inputs"].size
        done = step + 1
        if done % cfg.log_every == 0 or done == cfg.steps:
            loss = float(metrics["loss"])
            if not math.isfinite(loss):
                raise stopped_with(bar, manager, NonFiniteLoss(
                    f"loss is {loss} at step {done}; the last good checkpoint is kept"
                    + (f" in {checkpoint_dir}" if checkpoint_dir else "")
                ))
            elapsed = time.perf_counter() - window_start
            history.append((done, loss))
            if on_log:
                on_log(
                    done,
                    {
                        "loss": loss,
                        "learning_rate": float(schedule(step)),
                        "grad_norm": float(metrics["grad_norm"]),
                        "tokens_per_second": window_tokens / elapsed,
                    },
                )
            window_tokens, window_start = 0, time.perf_counter()
        if manager is not None and cfg.save_every and done % cfg.save_every == 0 and done < cfg.steps:
            # Never checkpoint a diverged state, even between log steps: the last good one must survive.
            step_loss, grad_norm = float(metrics["loss"]), float(metrics["grad_norm"])
            if not (math.isfinite(step_loss) and math.isfinite(grad_norm)):
                raise stopped_with(bar, manager, NonFiniteLoss(
                    f"loss is {step_loss} (gradient norm {grad_norm}) at step {done}; "
                    f"the last good checkpoint is kept in {checkpoint_dir}"
                ))
            # A leading (-1, 0) row: a save before the first log step would be a zero-size array, which orbax refuses.
            hist = np.asarray([(-1, 0.0), *history], np.float64).reshape(-1, 2)
            manager.save(done, args=ocp.args.StandardSave({"params": params, "opt_state": opt_state, "history": hist}))
        if bar is not None:
            bar.update(1)
            if math.isfinite(loss):  # nothing logged yet in this run: no "loss=nan" on the bar
                bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
    close_run(bar, manager)
    nnx.update(model, params)
    return TrainResult(params=params, loss_history=history, final_loss=loss, resumed_from=start)


def checkpoint_manager(directory: Path) -> ocp.CheckpointManager:
    """Orbax checkpoints in `directory`: the last two kept, each written before the step after it starts."""
    return ocp.CheckpointManager(
        Path(directory).absolute(),
        options=ocp.CheckpointManagerOptions(max_to_keep=2, create=True, enable_async_checkpointing=False),
    )


def close_run(bar: Any, manager: ocp.CheckpointManager | None) -> None:
    """Close the progress bar and the checkpoint manager (its last save finished)."""
    if bar is not None:
        bar.close()
    if manager is not None:
        manager.wait_until_finished()
        manager.close()


def stopped_with(bar: Any, manager: ocp.CheckpointManager | None, err: Exception) -> Exception:
    """`err`, once the progress bar and the checkpoint manager are closed (the run stops with it)."""
    close_run(bar, manager)
    return err


def abstract_like(tree: Any) -> Any:
    """Shapes and dtypes of `tree` (what orbax restores into)."""
    return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)
