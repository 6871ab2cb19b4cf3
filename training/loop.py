"""The training loop SFT (training/trainer.py) and RL (training/grpo.py) share; only their step differs.

What both need and this module owns, once:

- `LoopConfig`: the run's length, optimizer and schedule, logging, checkpoints and devices. `TrainConfig`
  and `GRPOConfig` are its subclasses: each adds the fields of its own step and borrows none.
- devices: the (data, fsdp) mesh, parameter and batch shardings (`place` puts a model's trainable and
  frozen weights and the optimizer state on it);
- the optimizer: AdamW or Adafactor behind a global-norm clip summed in a fixed order, and the learning
  rate schedule, counted in optimizer updates (`LoopConfig.updates_per_step` of them per loop step);
- `run`: restore from the latest orbax checkpoint, the steps, the non-finite stop, history rows, dvclive
  (`on_log`), the progress bar, periodic saves. A checkpoint holds the step owner's `state` (a pytree of
  arrays: weights, optimizer state, whatever else the next step reads) and the history (JSON rows, the
  same for SFT and RL).
"""

from __future__ import annotations

import dataclasses
import json
import math
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


class NonFiniteLoss(RuntimeError):
    pass


@dataclasses.dataclass(frozen=True, kw_only=True)
class LoopConfig:
    """What every training loop reads. The defaults are SFT's; `GRPOConfig` sets its own where they differ."""

    # loop steps: SFT optimizer steps (one batch each); RL rollout batches (`mu` updates each)
    steps: int
    # the peak learning rate, reached at the end of the warmup
    learning_rate: float
    # loop steps of linear warmup from learning_rate / warmup to the peak (0: none)
    warmup_steps: int = 0
    # after warmup: constant | linear | cosine decay to learning_rate × end_lr_fraction at the last step
    schedule: str = "cosine"
    # where linear and cosine decay end, as a fraction of the peak
    end_lr_fraction: float = 0.05
    # decoupled weight decay (AdamW) or decay rate (Adafactor); matrices only, never norms or biases
    weight_decay: float = 0.01
    # gradients are scaled down to this global L2 norm when above it
    grad_clip: float = 1.0
    # adamw (b1 0.9, b2 0.98) | adafactor (factored second moments: optimizer memory ~ rows + cols)
    optimizer: str = "adamw"
    # a history row (and an `on_log` call) every this many steps, and at the last
    log_every: int = 10
    # an orbax checkpoint every this many steps (0: none); an interrupted run resumes from the last
    save_every: int = 0
    # vocabulary rows of the LM head per tile of the cross-entropy: [tokens, tile] logits at a time (lm_head.py)
    vocab_tile: int = 16384
    # the run's seed: data order, sampling and dropout keys all derive from it
    seed: int = 0
    # devices along the data-parallel axis of the mesh
    mesh_data: int = 1
    # devices along the fully-sharded axis (parameters and optimizer state split over them)
    mesh_fsdp: int = 1

    @property
    def updates_per_step(self) -> int:
        """Optimizer updates per loop step: what the schedule counts in."""
        return 1

    def batch_split(self) -> tuple[int, int]:
        """(rows of the batch one step splits over the mesh, microbatches it accumulates: each of
        them must split over the mesh too)."""
        raise NotImplementedError


# ---------------------------------------------------------------- the optimizer


def learning_rate_schedule(cfg: LoopConfig) -> optax.Schedule:
    """Linear warmup, then constant, linear or cosine decay to `end_lr_fraction`, in optimizer updates."""
    k = cfg.updates_per_step
    total = cfg.steps * k
    peak, end = cfg.learning_rate, cfg.learning_rate * cfg.end_lr_fraction
    warmup = min(cfg.warmup_steps * k, total)
    decay_steps = max(total - warmup, 1)
    after = {
        "constant": optax.constant_schedule(peak),
        "linear": optax.linear_schedule(peak, end, decay_steps),
        "cosine": optax.cosine_decay_schedule(peak, decay_steps, alpha=cfg.end_lr_fraction),
    }[cfg.schedule]
    if warmup == 0:
        return after
    return optax.join_schedules([optax.linear_schedule(peak / warmup, peak, warmup - 1), after], [warmup])


def make_optimizer(cfg: LoopConfig) -> optax.GradientTransformation:
    decay_mask = lambda params: jax.tree.map(lambda x: x.ndim >= 2, params)  # no decay on norms
    lr = learning_rate_schedule(cfg)
    if cfg.optimizer == "adafactor":
        opt = optax.adafactor(lr, weight_decay_rate=cfg.weight_decay or None, weight_decay_mask=decay_mask)
    else:
        opt = optax.adamw(lr, b1=0.9, b2=0.98, weight_decay=cfg.weight_decay, mask=decay_mask)
    return optax.chain(clip_by_global_norm(cfg.grad_clip), opt)


OPTIMIZER_FIELDS = (
    "steps",
    "learning_rate",
    "warmup_steps",
    "schedule",
    "end_lr_fraction",
    "weight_decay",
    "grad_clip",
    "optimizer",
)


def optimizer_key(cfg: LoopConfig) -> tuple:
    """What `make_optimizer(cfg)` reads: a compile cache of a step that embeds the optimizer keys on it."""
    return (*(getattr(cfg, name) for name in OPTIMIZER_FIELDS), cfg.updates_per_step)


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


# ---------------------------------------------------------------- devices


class MeshError(ValueError):
    """The mesh or the batch does not fit the devices; `key` names the param at fault (`mesh` or
    `batch_size`; the message names no param: a stage says which of its own sets the batch)."""

    def __init__(self, key: str, message: str):
        super().__init__(message)
        self.key = key


def check_devices(cfg: LoopConfig) -> None:
    """Raise a MeshError unless the mesh fits the visible devices and the batch splits evenly over it."""
    n = cfg.mesh_data * cfg.mesh_fsdp
    if n > jax.device_count():
        raise MeshError("mesh", f"{n} devices asked for, {jax.device_count()} visible")
    rows, microbatches = cfg.batch_split()
    if rows % (microbatches * n):
        raise MeshError(
            "batch_size", f"a batch of {rows} is not a multiple of grad_accum × mesh devices ({microbatches * n})"
        )


def make_mesh(cfg: LoopConfig) -> Mesh:
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


@dataclasses.dataclass
class Placed:
    """A model split for a pure step and put on the mesh, with its optimizer."""

    graphdef: nnx.GraphDef
    params: Any  # the trained weights (LoRA: the adapters alone), sharded
    frozen: Any  # what is only read (LoRA: the base; empty in full fine-tuning), sharded
    tx: optax.GradientTransformation
    opt_state: Any  # moments split like their parameters, scalars replicated
    mesh: Mesh
    batches: NamedSharding  # where a batch goes

    @property
    def shardings(self) -> tuple[Any, Any]:
        """(params, opt_state) shardings: what a donating step's outputs keep."""
        return jax.tree.map(lambda x: x.sharding, self.params), jax.tree.map(lambda x: x.sharding, self.opt_state)


def place(model: nnx.Module, cfg: LoopConfig) -> Placed:
    """Split `model` into trained and frozen weights (`lora.split_trainable`), shard both over the
    mesh of `cfg`, and start its optimizer."""
    graphdef, params, frozen = lora.split_trainable(model)
    mesh = make_mesh(cfg)
    shard = lambda tree: jax.device_put(tree, jax.tree.map(lambda x: param_sharding(mesh, x), tree))
    params, frozen = shard(params), shard(frozen)
    tx = make_optimizer(cfg)
    return Placed(graphdef, params, frozen, tx, shard(tx.init(params)), mesh, batch_sharding(mesh))


# ---------------------------------------------------------------- checkpoints


def checkpoint_manager(directory: Path) -> ocp.CheckpointManager:
    """Orbax checkpoints in `directory`: the last two kept, each written before the step after it starts."""
    return ocp.CheckpointManager(
        Path(directory).absolute(),
        options=ocp.CheckpointManagerOptions(max_to_keep=2, create=True, enable_async_checkpointing=False),
    )


def abstract_like(tree: Any) -> Any:
    """Shapes and dtypes of `tree` (what orbax restores into)."""
    return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)


def history_bytes(history: list[dict]) -> np.ndarray:
    """The history as JSON in a byte array: one pytree leaf among the state's, never of size zero
    (orbax refuses those; an empty history is `[]`), its floats exact (JSON writes their shortest repr)."""
    return np.frombuffer(json.dumps(history).encode(), np.uint8)


def restore_latest(manager: ocp.CheckpointManager, state: dict) -> tuple[int, dict, list[dict]] | None:
    """(step, state, history) of the latest checkpoint, `state` restored into the shapes of the one
    given; None when there is none."""
    latest = manager.latest_step()
    if latest is None:
        return None
    target = abstract_like({**state, "history": history_bytes([])})  # numpy leaves take the saved shape
    restored = dict(manager.restore(latest, args=ocp.args.StandardRestore(target)))
    history = json.loads(bytes(np.asarray(restored.pop("history"))))
    return latest, restored, history


def save(manager: ocp.CheckpointManager, step: int, state: dict, history: list[dict]) -> None:
    """Checkpoint `state` (a dict: its entries at the top, as `params`, `opt_state`) and `history` as
    step `step`: one standard pytree, readable by a plain `restore`."""
    if "history" in state:
        raise ValueError("a checkpointed state cannot hold an entry named 'history'")
    manager.save(step, args=ocp.args.StandardSave({**state, "history": history_bytes(history)}))


def close_run(bar: Any, manager: ocp.CheckpointManager | None) -> None:
    """Close the progress bar and the checkpoint manager (its last save finished)."""
    if bar is not None:
        bar.close()
    if manager is not None:
        manager.wait_until_finished()
        manager.close()


# ---------------------------------------------------------------- the loop

# `step(index, state) -> (state, metrics)`: one step of the run from 0-based `index`. `metrics` hold at
# least `loss` and `grad_norm` (device scalars or floats); reading them may wait for the device, so
# the loop reads them only where it logs or saves.
Step = Callable[[int, Any], tuple[Any, dict[str, Any]]]
# `row(done, metrics) -> a history row` of plain floats (with its `step`), at a log step.
Row = Callable[[int, dict[str, Any]], dict[str, float]]


@dataclasses.dataclass
class LoopResult:
    state: Any
    history: list[dict[str, float]]  # one row per log step, the resumed run's earlier rows first
    resumed_from: int


def non_finite(metrics: dict[str, Any], done: int, checkpoint_dir: Path | None) -> NonFiniteLoss | None:
    """The error that stops a run whose loss or gradient norm is not finite after step `done`; None when both are."""
    loss, grad_norm = float(metrics["loss"]), float(metrics["grad_norm"])
    if math.isfinite(loss) and math.isfinite(grad_norm):
        return None
    kept = f"the last good checkpoint is kept in {checkpoint_dir}" if checkpoint_dir else "nothing was saved"
    return NonFiniteLoss(f"loss is {loss} (gradient norm {grad_norm}) at step {done}; {kept}")


def run(
    cfg: LoopConfig,
    state: Any,
    step: Step,
    row: Row,
    *,
    checkpoint_dir: Path | None = None,
    on_log: Callable[[int, dict[str, float]], None] | None = None,
    progress: Callable[[int], Any] | None = None,
    postfix: Callable[[dict[str, float]], dict[str, str]] | None = None,
) -> LoopResult:
    """Run `step` from the latest checkpoint in `checkpoint_dir` (or from `state` at step 0) to `cfg.steps`.

    At a log step (every `log_every`, and the last) the step's `row` joins the history and goes to
    `on_log`; every `save_every` steps (not the last: the caller writes the result) `state` and the
    history are checkpointed. Both first check that the loss and the gradient norm are finite: a
    diverged state is never logged as good nor saved, and the run stops with a `NonFiniteLoss`.
    """
    manager = checkpoint_manager(checkpoint_dir) if checkpoint_dir is not None else None
    start, history = 0, []
    restored = restore_latest(manager, state) if manager is not None else None
    if restored is not None:
        start, state, history = restored
    bar = progress(start) if progress else None
    shown: dict[str, str] = {}
    try:
        for index in range(start, cfg.steps):
            state, metrics = step(index, state)
            done = index + 1
            log_now = done % cfg.log_every == 0 or done == cfg.steps
            save_now = manager is not None and cfg.save_every and done % cfg.save_every == 0 and done < cfg.steps
            if log_now or save_now:
                err = non_finite(metrics, done, checkpoint_dir)
                if err is not None:
                    raise err
            if log_now:
                history.append(row(done, metrics))
                if on_log:
                    on_log(done, history[-1])
                shown = postfix(history[-1]) if postfix else {}
            if save_now:
                save(manager, done, state, history)
            if bar is not None:
                bar.update(1)
                if shown:  # nothing logged yet in this run: no stale or nan figure on the bar
                    bar.set_postfix(shown, refresh=False)
    finally:
        close_run(bar, manager)
    return LoopResult(state, history, start)
