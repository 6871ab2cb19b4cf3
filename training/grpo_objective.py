"""The GRPO objective: advantages, the importance ratio, the KL estimate, the aggregation, and the loss.

Each swappable part is a function registered by name in a `Registry` (`ADVANTAGES`, `IMPORTANCE`,
`KL_ESTIMATORS`, `AGGREGATIONS`), whose name is the param it answers to (`grpo.advantage`, …). A name is
checked in one place, the registry's lookup, which raises a ValueError naming the param and the choices
(`check_names` looks every configured one up before a run does any work). To add an estimator: register
it here; `tests/test_grpo.py` then tells you the schema's enum for its param must list it too.

Everything here is pure: arrays in, arrays out, no model and no state.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

__all__ = [
    "ADVANTAGES",
    "AGGREGATIONS",
    "IMPORTANCE",
    "KL_ESTIMATORS",
    "LOG_RATIO_CLIP",
    "REGISTRIES",
    "Objective",
    "Registry",
    "aggregate",
    "check_names",
    "group_advantages",
    "policy_loss",
]

LOG_RATIO_CLIP = 20.0  # log-ratios beyond ±20 are clipped: exp() stays finite and one stale token cannot dominate


class Registry(dict[str, Callable]):
    """Functions of one part of the objective by name; `param` is the key under `grpo` that picks one.

    Looking up a name that is not registered raises a ValueError that names the param and the choices:
    the one check of a configured name."""

    def __init__(self, param: str):
        super().__init__()
        self.param = param

    def register(self, name: str) -> Callable[[Callable], Callable]:
        """A decorator: register the function under `name`."""

        def add(fn: Callable) -> Callable:
            if name in self:
                raise ValueError(f"{self.param} {name!r} is registered twice")
            self[name] = fn
            return fn

        return add

    def __missing__(self, name: str) -> Callable:
        raise ValueError(f"unknown {self.param} {name!r} (expected one of {', '.join(self)})")


# (rewards [P, G], eps) -> advantages [P, G]
ADVANTAGES = Registry("advantage")
# (logp, old_logp, active-token mask), each [B, T] -> log-ratios [B, T] or [B, 1]
IMPORTANCE = Registry("importance")
# (logp, ref_logp) [B, T] -> per-token KL estimates [B, T]
KL_ESTIMATORS = Registry("kl")
# (per-token values [B, T], active-token mask [B, T], the completion budget) -> a scalar
AGGREGATIONS = Registry("aggregation")
REGISTRIES: tuple[Registry, ...] = (ADVANTAGES, IMPORTANCE, KL_ESTIMATORS, AGGREGATIONS)


def check_names(cfg: Any) -> None:
    """Every part `cfg` names (its `advantage`, `importance`, `kl`, `aggregation`) is registered."""
    for registry in REGISTRIES:
        registry[getattr(cfg, registry.param)]


# ---------------------------------------------------------------- advantages


@ADVANTAGES.register("group_std")
def group_std_advantages(rewards: jax.Array, eps: float) -> jax.Array:
    """(r - group mean) / (group std + eps), the std the sample std (ddof 1) as Tunix computes it (GRPO)."""
    centred = rewards - rewards.mean(axis=1, keepdims=True)
    return centred / (rewards.std(axis=1, ddof=1, keepdims=True) + eps)


@ADVANTAGES.register("group_mean")
def group_mean_advantages(rewards: jax.Array, eps: float) -> jax.Array:
    """r - group mean, unscaled (Dr. GRPO: the std's division favours groups that barely differ)."""
    return rewards - rewards.mean(axis=1, keepdims=True)


@ADVANTAGES.register("rloo")
def rloo_advantages(rewards: jax.Array, eps: float) -> jax.Array:
    """REINFORCE leave-one-out: r_i - the mean of the group's other G - 1 rewards (a baseline that
    does not hold the completion's own reward); equals G / (G - 1) × (r_i - group mean)."""
    g = rewards.shape[1]
    others = (rewards.sum(axis=1, keepdims=True) - rewards) / (g - 1)
    return rewards - others


def group_advantages(rewards: jax.Array, kind: str = "group_std", eps: float = 1e-6) -> jax.Array:
    """Advantages [P, G] from rewards [P, G] by the estimator registered as `kind`."""
    return ADVANTAGES[kind](rewards, eps)


# ---------------------------------------------------------------- the importance ratio


@IMPORTANCE.register("token")
def token_log_ratio(logp: jax.Array, old_logp: jax.Array, mask: jax.Array) -> jax.Array:
    """log π/π_old per token [B, T] (GRPO): each token clipped on its own. (`mask` is unused: a token's
    ratio reads no other token, and every importance takes the same arguments so the loss calls any.)"""
    return jnp.clip(logp - old_logp, -LOG_RATIO_CLIP, LOG_RATIO_CLIP)


@IMPORTANCE.register("sequence")
def sequence_log_ratio(logp: jax.Array, old_logp: jax.Array, mask: jax.Array) -> jax.Array:
    """log s_i [B, 1] (GSPO): the mean over a completion's active tokens of log π/π_old, so
    s_i = (π(y_i) / π_old(y_i)) ** (1 / |y_i|), one ratio (and one clip) for all its tokens."""
    mean = jnp.sum((logp - old_logp) * mask, axis=1, keepdims=True) / jnp.maximum(mask.sum(axis=1, keepdims=True), 1.0)
    return jnp.clip(mean, -LOG_RATIO_CLIP, LOG_RATIO_CLIP)


# ---------------------------------------------------------------- KL to the reference


@KL_ESTIMATORS.register("k3")
def k3_kl(logp: jax.Array, ref_logp: jax.Array) -> jax.Array:
    """Per-token k3 estimate of KL(policy || reference): exp(ref - logp) - (ref - logp) - 1 (>= 0)."""
    d = ref_logp - logp
    return jnp.exp(d) - d - 1.0


@KL_ESTIMATORS.register("k1")
def k1_kl(logp: jax.Array, ref_logp: jax.Array) -> jax.Array:
    """Per-token k1 estimate: logp - ref (unbiased, of either sign)."""
    return logp - ref_logp


@KL_ESTIMATORS.register("k2")
def k2_kl(logp: jax.Array, ref_logp: jax.Array) -> jax.Array:
    """Per-token k2 estimate: (logp - ref)² / 2 (>= 0, biased)."""
    return 0.5 * jnp.square(logp - ref_logp)


# ---------------------------------------------------------------- aggregation


@AGGREGATIONS.register("sequence-mean-token-mean")
def sequence_mean_token_mean(per_token: jax.Array, mask: jax.Array, max_len: int) -> jax.Array:
    """Mean over each sequence's tokens, then over sequences (GRPO; a long completion's tokens weigh less)."""
    return jnp.mean(per_token.sum(axis=1) / jnp.maximum(mask.sum(axis=1), 1.0))


@AGGREGATIONS.register("token-mean")
def token_mean(per_token: jax.Array, mask: jax.Array, max_len: int) -> jax.Array:
    """Mean over every active token of the batch (DAPO)."""
    return per_token.sum() / jnp.maximum(mask.sum(), 1.0)


@AGGREGATIONS.register("dr_grpo")
def dr_grpo(per_token: jax.Array, mask: jax.Array, max_len: int) -> jax.Array:
    """Sum over tokens / (batch × max_len): a constant denominator (Dr. GRPO)."""
    return per_token.sum() / (per_token.shape[0] * max_len)


def aggregate(per_token: jax.Array, mask: jax.Array, how: str, max_len: int) -> jax.Array:
    """Reduce per-token values [B, T] over the active tokens `mask` by the aggregation named `how`."""
    return AGGREGATIONS[how](per_token * mask, mask, max_len)


# ---------------------------------------------------------------- the loss


@dataclasses.dataclass(frozen=True)
class Objective:
    """What the loss reads of a `GRPOConfig` (and so what a compiled update depends on)."""

    epsilon: float
    epsilon_high: float
    beta: float
    kl: str
    importance: str
    aggregation: str
    max_new_tokens: int  # dr_grpo's denominator

    @classmethod
    def of(cls, cfg: Any) -> Objective:
        """The objective of a config that has these fields (a `GRPOConfig`)."""
        return cls(**{f.name: getattr(cfg, f.name) for f in dataclasses.fields(cls)})


def policy_loss(
    logp: jax.Array,
    old_logp: jax.Array,
    ref_logp: jax.Array | None,
    advantages: jax.Array,
    mask: jax.Array,
    cfg: Objective,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The clipped-ratio loss over completion tokens [B, T] with advantages [B], and its diagnostics:
    max(-A·ratio, -A·clip(ratio, 1 - epsilon, 1 + epsilon_high)) per token, + beta × KL, aggregated.
    `cfg`: an `Objective`, or any config with its fields (a `GRPOConfig`)."""
    ratio = jnp.exp(IMPORTANCE[cfg.importance](logp, old_logp, mask))
    a = advantages[:, None]
    unclipped = -a * ratio
    clipped = -a * jnp.clip(ratio, 1.0 - cfg.epsilon, 1.0 + cfg.epsilon_high)
    per_token = jnp.maximum(unclipped, clipped)
    n = jnp.maximum(mask.sum(), 1.0)
    metrics = {"clip_fraction": jnp.sum((clipped > unclipped) * mask) / n}
    if ref_logp is not None and cfg.beta:
        kl = KL_ESTIMATORS[cfg.kl](logp, ref_logp)
        per_token = per_token + cfg.beta * kl
        metrics["kl"] = jnp.sum(kl * mask) / n
    metrics["ratio_mean"] = jnp.sum(ratio * mask) / n
    return aggregate(per_token, mask, cfg.aggregation, cfg.max_new_tokens), metrics
