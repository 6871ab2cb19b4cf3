"""Preference optimisation and rejection-sampling fine-tuning on the loop SFT and RL share (training/loop.py).

The losses are pure functions of per-sequence log-probs (summed over a completion's tokens, its end of
turn included) and token counts, registered by name in `LOSSES`:

- `dpo`: −(1−ε)·logσ(βΔ) − ε·logσ(−βΔ), Δ = (log π(c) − log π_ref(c)) − (log π(r) − log π_ref(r))
  (sigmoid DPO with label smoothing ε);
- `ipo`: (Δ per token − 1/(2β))², each log-ratio divided by its completion's length (as TRL does);
- `robust`: ((1−ε)·(−logσ(βΔ)) + ε·logσ(−βΔ)) / (1 − 2ε) (robust DPO: unbiased under label noise ε);
- `simpo`: −(1−ε)·logσ(β(ā_c − ā_r) − γ) − ε·logσ(−(…)), ā the length-averaged log-prob; no reference;
- `orpo`: NLL(c) − β·logσ(log-odds(ā_c) − log-odds(ā_r)), log-odds(a) = a − log(1 − eᵃ); no reference;
- `rft`: NLL(c) alone: supervised fine-tuning on the chosen (best right) completions.

NLL(c) is the mean over every chosen token of the batch (TRL's ORPO cross-entropy). The reference-based
losses (`REFERENCE_LOSSES`) add `nll_weight`·NLL(c) when asked: the known failure where chosen and
rejected log-probs both fall while the margin grows.

The reference log-probs are computed once, before the first step, from the model as it starts (with
LoRA adapters: the same model with `lora.adapters_off()`, no second copy of the weights) and read by
every step from the stored arrays, never recomputed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from training import loop, lora
from training.grpo import PromptStream, compiled, completion_batch, completion_logprobs, make_logprob_fn
from training.loop import LoopConfig, NonFiniteLoss, global_norm, make_optimizer
from training.model import Gemma
from training.sampler import bucket_length, right_pad

__all__ = [
    "LOSSES",
    "REFERENCE_LOSSES",
    "NonFiniteLoss",
    "Objective",
    "Pair",
    "PreferenceConfig",
    "PreferenceResult",
    "log1mexp",
    "preference_loss",
    "reference_logps",
    "train_preference",
]


@dataclasses.dataclass(frozen=True, kw_only=True)
class PreferenceConfig(LoopConfig):
    """Preference training: `LoopConfig`'s fields and the objective's. A step is one batch of pairs."""

    # pairs (prompts) per step; a multiple of the mesh's devices
    pairs_per_step: int
    # the loss by name (`LOSSES`)
    loss: str = "dpo"
    # dpo, ipo, robust, simpo: the inverse temperature β; orpo: λ, the weight of the odds-ratio term
    beta: float = 0.1
    # ε of dpo, robust and simpo: the assumed share of flipped labels
    label_smoothing: float = 0.0
    # simpo's target reward margin γ
    gamma: float = 0.5
    # weight of NLL(chosen) added to dpo, ipo and robust (0: none)
    nll_weight: float = 0.0
    # (LoopConfig's, with preference training's defaults: a constant rate, a row every step)
    schedule: str = "constant"
    end_lr_fraction: float = 1.0
    weight_decay: float = 0.0
    log_every: int = 1

    def batch_split(self) -> tuple[int, int]:
        return self.pairs_per_step, 1


@dataclasses.dataclass(frozen=True)
class Objective:
    """What the loss reads of a `PreferenceConfig`."""

    loss: str
    beta: float
    label_smoothing: float = 0.0
    gamma: float = 0.5
    nll_weight: float = 0.0

    @classmethod
    def of(cls, cfg: PreferenceConfig) -> Objective:
        return cls(**{f.name: getattr(cfg, f.name) for f in dataclasses.fields(cls)})

    @property
    def rows(self) -> int:
        """Completions per prompt the loss reads: chosen and rejected, or (rft) chosen alone."""
        return 1 if self.loss == "rft" else 2


# ---------------------------------------------------------------- the losses (pure, by name)


def log1mexp(x: jax.Array) -> jax.Array:
    """log(1 − eˣ) for x < 0, branching at −ln 2 against cancellation (Mächler; TRL's ORPO)."""
    return jnp.where(x < -0.6931471805599453, jnp.log1p(-jnp.exp(x)), jnp.log(-jnp.expm1(x)))


def smoothed_sigmoid(z: jax.Array, eps: float) -> jax.Array:
    """−(1−ε)·logσ(z) − ε·logσ(−z): the logistic loss with labels flipped at rate ε."""
    return -(1.0 - eps) * jax.nn.log_sigmoid(z) - eps * jax.nn.log_sigmoid(-z)


# (summed log-probs [B, k], reference's [B, k] or None, token counts [B, k], objective) -> per-pair loss [B]
LossFn = Callable[[jax.Array, jax.Array | None, jax.Array, Objective], jax.Array]


def _margin(logp: jax.Array, ref: jax.Array) -> jax.Array:
    """Δ: the chosen log-ratio to the reference less the rejected one."""
    ratio = logp - ref
    return ratio[:, 0] - ratio[:, 1]


def dpo_loss(logp, ref, n, obj):
    return smoothed_sigmoid(obj.beta * _margin(logp, ref), obj.label_smoothing)


def ipo_loss(logp, ref, n, obj):
    per_token = (logp - ref) / jnp.maximum(n, 1.0)
    return jnp.square(per_token[:, 0] - per_token[:, 1] - 1.0 / (2.0 * obj.beta))


def robust_loss(logp, ref, n, obj):
    z, eps = obj.beta * _margin(logp, ref), obj.label_smoothing
    return ((1.0 - eps) * -jax.nn.log_sigmoid(z) + eps * jax.nn.log_sigmoid(-z)) / (1.0 - 2.0 * eps)


def simpo_loss(logp, ref, n, obj):
    avg = logp / jnp.maximum(n, 1.0)
    return smoothed_sigmoid(obj.beta * (avg[:, 0] - avg[:, 1]) - obj.gamma, obj.label_smoothing)


def orpo_loss(logp, ref, n, obj):
    avg = logp / jnp.maximum(n, 1.0)
    log_odds = (avg[:, 0] - avg[:, 1]) - (log1mexp(avg[:, 0]) - log1mexp(avg[:, 1]))
    return -obj.beta * jax.nn.log_sigmoid(log_odds)


def rft_loss(logp, ref, n, obj):
    return jnp.zeros(logp.shape[:1], logp.dtype)


LOSSES: dict[str, LossFn] = {
    "dpo": dpo_loss,
    "ipo": ipo_loss,
    "robust": robust_loss,
    "simpo": simpo_loss,
    "orpo": orpo_loss,
    "rft": rft_loss,
}
REFERENCE_LOSSES = frozenset({"dpo", "ipo", "robust"})  # the ones that read a reference
NLL_LOSSES = frozenset({"orpo", "rft"})  # NLL(chosen) is part of the loss itself (weight 1)


def chosen_nll(logp: jax.Array, n: jax.Array) -> jax.Array:
    """−log π per chosen token, averaged over every chosen token of the batch."""
    return -jnp.sum(logp[:, 0]) / jnp.maximum(jnp.sum(n[:, 0]), 1.0)


def preference_loss(
    logp: jax.Array, ref: jax.Array | None, n: jax.Array, obj: Objective
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The batch's loss and its diagnostics from summed log-probs [B, k] (column 0 chosen, 1 rejected), the
    reference's (None for the losses that read none) and token counts [B, k].

    The implicit rewards logged are β × the log-ratio to the reference (DPO's) for the reference-based
    losses, β × the average log-prob (SimPO's, CPO's) for the others."""
    if obj.loss not in LOSSES:
        raise ValueError(f"unknown loss {obj.loss!r} (expected one of {', '.join(LOSSES)})")
    uses_ref = obj.loss in REFERENCE_LOSSES
    if uses_ref and ref is None:
        raise ValueError(f"loss {obj.loss!r} needs reference log-probs")
    per_pair = LOSSES[obj.loss](logp, ref, n, obj)
    nll = chosen_nll(logp, n)
    weight = 1.0 if obj.loss in NLL_LOSSES else obj.nll_weight
    loss = jnp.mean(per_pair) + weight * nll
    metrics = {"nll_chosen": nll, "logp_chosen": jnp.mean(logp[:, 0]), "length_chosen": jnp.mean(n[:, 0])}
    if logp.shape[1] > 1:
        rewards = obj.beta * ((logp - ref) if uses_ref else logp / jnp.maximum(n, 1.0))
        margin = rewards[:, 0] - rewards[:, 1]
        metrics.update(
            {
                "reward_chosen": jnp.mean(rewards[:, 0]),
                "reward_rejected": jnp.mean(rewards[:, 1]),
                "margin": jnp.mean(margin),
                "pair_accuracy": jnp.mean((margin > 0).astype(jnp.float32)),
                "logp_rejected": jnp.mean(logp[:, 1]),
                "length_rejected": jnp.mean(n[:, 1]),
            }
        )
    return loss, metrics


# ---------------------------------------------------------------- batches of pairs


@dataclasses.dataclass(frozen=True)
class Pair:
    """A prompt and its completions as token ids (each ending in its end of turn unless it was cut):
    `completions[0]` chosen, `[1]` rejected (rft: chosen alone)."""

    prompt: Sequence[int]
    completions: tuple[Sequence[int], ...]


def pair_batch(pairs: Sequence[Pair], prompt_len: int, pad_id: int) -> dict[str, np.ndarray]:
    """The arrays of `grpo.completion_logprobs` for pairs: each prompt once [P, prompt_len], left-padded,
    its k completions after it [P·k, width] (a power-of-two bucket of the longest), and the token mask."""
    rows = [list(c) for p in pairs for c in p.completions]
    tokens, _ = right_pad(rows, bucket_length(max(len(r) for r in rows), minimum=32), pad_id)
    lengths = np.asarray([len(r) for r in rows])
    return completion_batch([p.prompt for p in pairs], tokens, lengths, prompt_len, pad_id)


def summed(token_logp: jax.Array, mask: jax.Array, k: int) -> tuple[jax.Array, jax.Array]:
    """(summed log-probs [P, k], token counts [P, k]) of the rows of a batch, prompt-major."""
    return (token_logp * mask).sum(axis=1).reshape(-1, k), mask.sum(axis=1).reshape(-1, k)


def prompt_width(pairs: Sequence[Pair]) -> int:
    """One prompt width for the run (the longest prompt's bucket): each width is a compilation."""
    return bucket_length(max(len(p.prompt) for p in pairs))


def reference_logps(model: Gemma, pairs: Sequence[Pair], cfg: PreferenceConfig, pad_id: int) -> np.ndarray:
    """Summed log-probs [len(pairs), k] of every completion under the reference: the model as it is now, its
    LoRA adapters off when it has any. Computed in batches of `pairs_per_step` (the last one short)."""
    graphdef, params, frozen = lora.split_trainable(model)
    fn = make_logprob_fn(graphdef, cfg.vocab_tile, base=lora.has_adapters(model))
    width, k = prompt_width(pairs), len(pairs[0].completions)
    out = []
    for start in range(0, len(pairs), cfg.pairs_per_step):
        batch = pair_batch(pairs[start : start + cfg.pairs_per_step], width, pad_id)
        logp, _ = summed(fn(params, frozen, batch), jnp.asarray(batch["mask"]), k)
        out.append(np.asarray(logp, np.float32))
    return np.concatenate(out)


def compiled_step(graphdef: nnx.GraphDef, cfg: PreferenceConfig, shardings: Any) -> Callable:
    """The jitted step of `make_step`, shared by every run whose step reads the same: the model graph, the
    optimizer's fields, the objective, the LM head's tile and the state's shardings."""
    key = (
        "preference",
        graphdef,
        loop.optimizer_key(cfg),
        Objective.of(cfg),
        cfg.vocab_tile,
        jax.tree.structure(shardings),
        tuple(jax.tree.leaves(shardings)),
    )
    return compiled(key, lambda: make_step(graphdef, make_optimizer(cfg), cfg, out_shardings=shardings))


def make_step(
    graphdef: nnx.GraphDef, tx: optax.GradientTransformation, cfg: PreferenceConfig, out_shardings: Any = None
) -> Callable:
    """One jitted, buffer-donating step: log-probs of the batch's completions, the loss, the update."""
    obj, k, vocab_tile = Objective.of(cfg), Objective.of(cfg).rows, cfg.vocab_tile

    def loss_fn(params, frozen, batch, ref):
        token_logp = completion_logprobs(nnx.merge(graphdef, params, frozen), batch, vocab_tile)
        logp, n = summed(token_logp, batch["mask"], k)
        return preference_loss(logp, ref if obj.loss in REFERENCE_LOSSES else None, n, obj)

    def step(params, opt_state, frozen, batch, ref):
        (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, frozen, batch, ref)
        updates, opt_state = tx.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        return params, opt_state, {**metrics, "loss": loss, "grad_norm": global_norm(grads)}

    return jax.jit(step, donate_argnums=(0, 1), out_shardings=None if out_shardings is None else (*out_shardings, None))


@dataclasses.dataclass
class PreferenceResult:
    params: dict
    history: list[dict[str, float]]
    resumed_from: int
    reference: np.ndarray | None  # the stored reference log-probs [pairs, k] (None: the loss reads none)


def train_preference(
    model: Gemma,
    pairs: Sequence[Pair],
    cfg: PreferenceConfig,
    *,
    pad_id: int,
    checkpoint_dir: Path | None = None,
    on_log: Callable[[int, dict[str, float]], None] | None = None,
    progress: Callable[[int], Any] | None = None,
) -> PreferenceResult:
    """Train `model` in place on `pairs` for `cfg.steps` (pairs in a seeded order, a fresh permutation
    each pass), resuming from `checkpoint_dir` when it holds a checkpoint; the state checkpointed is the
    params and optimizer state (the step is the data position)."""
    obj = Objective.of(cfg)
    if obj.loss not in LOSSES:
        raise ValueError(f"unknown loss {obj.loss!r} (expected one of {', '.join(LOSSES)})")
    if not pairs:
        raise ValueError("no pairs")
    if any(len(p.completions) != obj.rows for p in pairs):
        raise ValueError(f"loss {obj.loss!r} reads {obj.rows} completion(s) per pair")
    reference = reference_logps(model, pairs, cfg, pad_id) if obj.loss in REFERENCE_LOSSES else None
    placed = loop.place(model, cfg)
    step_fn = compiled_step(placed.graphdef, cfg, placed.shardings)
    width = prompt_width(pairs)
    order = PromptStream(list(range(len(pairs))), cfg.seed)
    dummy_ref = np.zeros((cfg.pairs_per_step, obj.rows), np.float32)

    def step(index: int, state: dict) -> tuple[dict, dict]:
        chosen = order.take(index * cfg.pairs_per_step, cfg.pairs_per_step)
        batch = pair_batch([pairs[i] for i in chosen], width, pad_id)
        ref = reference[chosen] if reference is not None else dummy_ref
        batch, ref = jax.device_put((batch, ref), placed.batches)
        params, opt_state, metrics = step_fn(state["params"], state["opt_state"], placed.frozen, batch, ref)
        return {"params": params, "opt_state": opt_state}, metrics

    def row(done: int, metrics: dict) -> dict[str, float]:
        return {"step": float(done), **{name: float(v) for name, v in sorted(metrics.items())}}

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
    return PreferenceResult(params, result.history, result.resumed_from, reference)
