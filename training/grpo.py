"""GRPO: reinforcement learning with group-relative advantages, resumable and sharded like SFT.

Each step samples G completions for each of P prompts with the KV-cache
sampler, scores them (`reward_fn`), turns the rewards into group-relative
advantages and runs `mu` jitted updates of the clipped-ratio objective (with
DAPO's separate upper clip and, when beta > 0, a k3 KL penalty to the frozen
reference). The first update's own log-probs, taken before any change, are the
old (rollout-policy) log-probs of the later ones, so a rollout batch costs one
forward pass per update and the ratio starts at exactly one.

Trainable and frozen weights are split by `lora.split_trainable`: with LoRA
adapters only they are trained, and the reference is the base they sit on
(computed under `lora.adapters_off()`, no second copy of the weights);
without, every parameter is trained and the reference is a copy of the start.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
from flax import nnx

from training import lora
from training.lm_head import token_cross_entropy
from training.model import Gemma
from training.sampler import Sampler, SamplingConfig, bucket_length, left_pad
from training.trainer import (
    NonFiniteLoss,
    TrainConfig,
    abstract_like,
    batch_sharding,
    checkpoint_manager,
    close_run,
    make_mesh,
    make_optimizer,
    param_sharding,
    stopped_with,
)

AGGREGATIONS = ("sequence-mean-token-mean", "token-mean", "dr_grpo")
ADVANTAGES = ("group_std", "group_mean")  # (r - mean) / (std + eps) as GRPO, or r - mean as Dr. GRPO
LOG_RATIO_CLIP = 20.0  # log-ratios beyond ±20 are clipped: exp() stays finite and one stale token cannot dominate


@dataclasses.dataclass(frozen=True)
class GRPOConfig:
    steps: int
    prompts_per_step: int  # P: groups per rollout batch
    group_size: int  # G: completions per prompt
    max_new_tokens: int
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    learning_rate: float = 1e-5
    warmup_steps: int = 0
    schedule: str = "constant"
    end_lr_fraction: float = 1.0
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    optimizer: str = "adamw"
    beta: float = 0.0  # KL weight; 0 loads no reference
    epsilon: float = 0.2
    epsilon_high: float = 0.28
    mu: int = 1  # optimisation iterations per rollout batch
    advantage: str = "group_std"
    aggregation: str = "sequence-mean-token-mean"
    dynamic_sampling: bool = False  # refill the batch with groups whose rewards differ (DAPO)
    max_refills: int = 2  # extra rollout rounds per step when dynamic sampling
    log_every: int = 1
    save_every: int = 0
    vocab_tile: int = 16384
    seed: int = 0
    mesh_data: int = 1
    mesh_fsdp: int = 1

    def train_config(self) -> TrainConfig:
        """The SFT config the shared mesh and optimizer helpers read: one optimizer step per update."""
        return TrainConfig(
            steps=self.steps * self.mu, batch_size=self.prompts_per_step * self.group_size, seq_len=0,
            learning_rate=self.learning_rate, warmup_steps=self.warmup_steps * self.mu, schedule=self.schedule,
            end_lr_fraction=self.end_lr_fraction, weight_decay=self.weight_decay, grad_clip=self.grad_clip,
            optimizer=self.optimizer, seed=self.seed, mesh_data=self.mesh_data, mesh_fsdp=self.mesh_fsdp,
        )  # fmt: skip


# ---------------------------------------------------------------- the objective (pure)


def group_advantages(rewards: jax.Array, kind: str = "group_std", eps: float = 1e-6) -> jax.Array:
    """Advantages [P, G] from rewards [P, G]: r - group mean, divided by (group std + eps) for `group_std`.

    The std is the sample std (ddof 1), as Tunix computes it.
    """
    centred = rewards - rewards.mean(axis=1, keepdims=True)
    if kind == "group_mean":
        return centred
    return centred / (rewards.std(axis=1, ddof=1, keepdims=True) + eps)


def aggregate(per_token: jax.Array, mask: jax.Array, how: str, max_len: int) -> jax.Array:
    """Reduce per-token values [B, T] over the active tokens `mask`.

    sequence-mean-token-mean: mean over each sequence's tokens, then over sequences (GRPO);
    token-mean: mean over every active token of the batch (DAPO);
    dr_grpo: sum over tokens / (batch × max_len), a constant denominator (Dr. GRPO).
    """
    per_token = per_token * mask
    if how == "sequence-mean-token-mean":
        return jnp.mean(per_token.sum(axis=1) / jnp.maximum(mask.sum(axis=1), 1.0))
    if how == "token-mean":
        return per_token.sum() / jnp.maximum(mask.sum(), 1.0)
    if how == "dr_grpo":
        return per_token.sum() / (per_token.shape[0] * max_len)
    raise ValueError(f"unknown aggregation {how!r} (expected one of {', '.join(AGGREGATIONS)})")


def k3_kl(logp: jax.Array, ref_logp: jax.Array) -> jax.Array:
    """Per-token k3 estimate of KL(policy || reference): exp(ref - logp) - (ref - logp) - 1 (>= 0)."""
    d = ref_logp - logp
    return jnp.exp(d) - d - 1.0


def policy_loss(
    logp: jax.Array,
    old_logp: jax.Array,
    ref_logp: jax.Array | None,
    advantages: jax.Array,
    mask: jax.Array,
    cfg: GRPOConfig,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The clipped-ratio GRPO loss over completion tokens [B, T] with advantages [B], and its diagnostics."""
    log_ratio = jnp.clip(logp - old_logp, -LOG_RATIO_CLIP, LOG_RATIO_CLIP)
    ratio = jnp.exp(log_ratio)
    a = advantages[:, None]
    unclipped = -a * ratio
    clipped = -a * jnp.clip(ratio, 1.0 - cfg.epsilon, 1.0 + cfg.epsilon_high)
    per_token = jnp.maximum(unclipped, clipped)
    n = jnp.maximum(mask.sum(), 1.0)
    metrics = {"clip_fraction": jnp.sum((clipped > unclipped) * mask) / n}
    if ref_logp is not None and cfg.beta:
        kl = k3_kl(logp, ref_logp)
        per_token = per_token + cfg.beta * kl
        metrics["kl"] = jnp.sum(kl * mask) / n
    metrics["ratio_mean"] = jnp.sum(ratio * mask) / n
    return aggregate(per_token, mask, cfg.aggregation, cfg.max_new_tokens), metrics


# ---------------------------------------------------------------- log-probs and the update


def completion_logprobs(model: Gemma, batch: dict[str, jax.Array], prompt_len: int, vocab_tile: int) -> jax.Array:
    """log π(token) [B, max_new] of each completion token, the LM head taken `vocab_tile` rows at a time."""
    hidden, _ = model.hidden_states(batch["inputs"], batch["positions"], batch["segments"])
    hidden = hidden[:, prompt_len - 1 :]  # the positions that predict completion tokens
    table = model.embed_tokens[...].astype(hidden.dtype)
    return -token_cross_entropy(hidden, table, batch["targets"], model.config.final_logit_softcapping, vocab_tile)


@functools.lru_cache(maxsize=16)
def make_logprob_fn(graphdef: nnx.GraphDef, prompt_len: int, vocab_tile: int, base: bool = False) -> Callable:
    """Jitted log-probs of a frozen model (the reference): no gradient. With `base`, adapters are skipped."""

    def fn(params, frozen, batch):
        with lora.adapters_off() if base else contextlib.nullcontext():
            return completion_logprobs(nnx.merge(graphdef, params, frozen), batch, prompt_len, vocab_tile)

    return jax.jit(fn)


_COMPILED: dict[Any, tuple[optax.GradientTransformation, Callable]] = {}


def compiled_update(graphdef: nnx.GraphDef, cfg: GRPOConfig, prompt_len: int, shardings: Any) -> tuple:
    """(optimizer, jitted update), shared by every run whose update is the same function (a resumed run,
    another seed), so it compiles once per process."""
    same = dataclasses.replace(cfg, seed=0, log_every=1, save_every=0, dynamic_sampling=False, max_refills=0,
                               temperature=1.0, top_k=0, top_p=1.0, prompts_per_step=1)
    key = (graphdef, same, prompt_len, jax.tree.structure(shardings), tuple(jax.tree.leaves(shardings)))
    if key not in _COMPILED:
        tx = make_optimizer(cfg.train_config())
        _COMPILED[key] = tx, make_update(graphdef, tx, cfg, prompt_len, out_shardings=shardings)
    return _COMPILED[key]


def make_update(
    graphdef: nnx.GraphDef, tx: optax.GradientTransformation, cfg: GRPOConfig, prompt_len: int, out_shardings=None
) -> Callable:
    """One jitted, buffer-donating update. With `first`, the log-probs it computes are also the old ones."""

    def loss_fn(params, frozen, batch, old_logp, ref_logp, first):
        logp = completion_logprobs(nnx.merge(graphdef, params, frozen), batch, prompt_len, cfg.vocab_tile)
        old = jax.lax.stop_gradient(logp) if first else old_logp
        loss, metrics = policy_loss(logp, old, ref_logp, batch["advantages"], batch["mask"], cfg)
        return loss, (metrics, jax.lax.stop_gradient(logp))

    def update(params, opt_state, frozen, batch, old_logp, ref_logp, first):
        (loss, (metrics, logp)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            params, frozen, batch, old_logp, ref_logp, first
        )
        updates, opt_state = tx.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        mask = batch["mask"]
        metrics = {
            **metrics, "loss": loss, "grad_norm": optax.tree.norm(grads),
            # E[-log π(y)] over sampled tokens: a one-sample estimate of the policy's entropy
            "entropy": -jnp.sum(logp * mask) / jnp.maximum(mask.sum(), 1.0),
        }  # fmt: skip
        return params, opt_state, metrics, logp

    return jax.jit(
        update, static_argnames=("first",), donate_argnums=(0, 1),
        out_shardings=None if out_shardings is None else (*out_shardings, None, None),
    )  # fmt: skip


# ---------------------------------------------------------------- rollouts


@dataclasses.dataclass(frozen=True)
class Prompt:
    tokens: list[int]  # the rendered chat prompt
    text: str  # the user's question
    record: dict  # the record it comes from (its known answer)


@dataclasses.dataclass
class RolloutBatch:
    """P groups of G rows: arrays for the update and what the rewards saw."""

    prompts: list[Prompt]  # one per group
    tokens: np.ndarray  # [P·G, max_new] completion tokens (pad after the end)
    lengths: np.ndarray  # [P·G] tokens before the end of turn
    truncated: np.ndarray  # [P·G]
    rewards: np.ndarray  # [P, G]
    parts: dict[str, np.ndarray]  # reward part -> [P, G]


RewardFn = Callable[[Prompt, np.ndarray, int, bool], tuple[float, dict[str, float]]]


def sample_groups(
    sampler: Sampler, prompts: Sequence[Prompt], cfg: GRPOConfig, key: jax.Array, reward_fn: RewardFn
) -> RolloutBatch:
    """G completions of each prompt (rows prompt-major), scored by `reward_fn`."""
    sampling = SamplingConfig(cfg.max_new_tokens, cfg.temperature, cfg.top_k, cfg.top_p)
    rows = [p.tokens for p in prompts for _ in range(cfg.group_size)]
    gen = sampler(rows, sampling, key)
    g = cfg.group_size
    rewards = np.zeros((len(prompts), g), np.float64)
    parts: dict[str, np.ndarray] = {}
    for i, prompt in enumerate(prompts):
        for j in range(g):
            row = i * g + j
            n = int(gen.lengths[row])
            total, values = reward_fn(prompt, gen.tokens[row, :n], n, bool(gen.truncated[row]))
            rewards[i, j] = total
            for name, v in values.items():
                parts.setdefault(name, np.zeros((len(prompts), g)))[i, j] = v
    return RolloutBatch(list(prompts), gen.tokens, gen.lengths, gen.truncated, rewards, parts)


def has_signal(rewards: np.ndarray) -> np.ndarray:
    """[P] bool: groups whose rewards are not all equal (the others get zero advantage)."""
    return rewards.max(axis=1) > rewards.min(axis=1)


def select_groups(batches: Sequence[RolloutBatch], want: int) -> RolloutBatch:
    """`want` groups from the rollout rounds: those with signal first (in order), then the rest."""
    groups = [(b, i) for b in batches for i in range(len(b.prompts))]
    ranked = [x for x in groups if has_signal(x[0].rewards[x[1] : x[1] + 1])[0]]
    ranked += [x for x in groups if not has_signal(x[0].rewards[x[1] : x[1] + 1])[0]]
    chosen = ranked[:want]
    g = batches[0].rewards.shape[1]
    rows = lambda b, i: slice(i * g, (i + 1) * g)
    cat = lambda name: np.concatenate([getattr(b, name)[rows(b, i)] for b, i in chosen])
    names = list(batches[0].parts)
    return RolloutBatch(
        prompts=[b.prompts[i] for b, i in chosen],
        tokens=cat("tokens"), lengths=cat("lengths"), truncated=cat("truncated"),
        rewards=np.stack([b.rewards[i] for b, i in chosen]),
        parts={n: np.stack([b.parts[n][i] for b, i in chosen]) for n in names},
    )  # fmt: skip


def completion_width(lengths: np.ndarray, max_new_tokens: int) -> int:
    """Completion positions the update needs: the longest completion and its end token, in a power-of-two
    bucket (few compilations), so short completions do not pay for the whole budget."""
    return min(max_new_tokens, bucket_length(int(lengths.max()) + 1, minimum=32))


def update_batch(rollout: RolloutBatch, cfg: GRPOConfig, prompt_len: int, pad_id: int) -> dict[str, np.ndarray]:
    """Prompt + completion rows [P·G, prompt_len + width - 1] for the forward pass, with advantages and mask."""
    g = cfg.group_size
    new = completion_width(rollout.lengths, cfg.max_new_tokens)
    prompts = [p.tokens for p in rollout.prompts for _ in range(g)]
    p_tok, p_pos, p_seg = left_pad(prompts, prompt_len, pad_id)
    b = len(prompts)
    steps = np.arange(new)[None, :]
    # the end-of-turn token is a completion token too: the policy learns when to stop
    active = steps < np.minimum(rollout.lengths + 1, new)[:, None]
    tokens = rollout.tokens[:, :new].astype(np.int32)
    full = np.concatenate([p_tok, tokens], axis=1)
    positions = np.concatenate([p_pos, p_pos[:, -1:] + 1 + steps.repeat(b, 0)], axis=1).astype(np.int32)
    segments = np.concatenate([p_seg, active.astype(np.int32)], axis=1)
    adv = np.asarray(group_advantages(jnp.asarray(rollout.rewards, jnp.float32), cfg.advantage)).reshape(-1)
    return {
        "inputs": full[:, :-1], "positions": positions[:, :-1], "segments": segments[:, :-1],
        "targets": tokens, "mask": active.astype(np.float32),
        "advantages": adv.astype(np.float32),
    }  # fmt: skip


# ---------------------------------------------------------------- the loop


class PromptStream:
    """Prompts in a seeded order, a fresh permutation each pass; position `n` is a pure function of (seed, n)."""

    def __init__(self, prompts: Sequence[Prompt], seed: int):
        if not prompts:
            raise ValueError("no prompts")
        self.prompts, self.seed = list(prompts), seed
        self._perms: dict[int, np.ndarray] = {}

    def take(self, position: int, n: int) -> list[Prompt]:
        out = []
        for at in range(position, position + n):
            epoch, i = divmod(at, len(self.prompts))
            if epoch not in self._perms:
                self._perms[epoch] = np.random.default_rng([self.seed, epoch]).permutation(len(self.prompts))
            out.append(self.prompts[int(self._perms[epoch][i])])
        return out


@dataclasses.dataclass
class GRPOResult:
    params: dict
    history: list[dict[str, float]]  # one row of metrics per step
    resumed_from: int


def grpo(
    model: Gemma,
    prompts: Sequence[Prompt],
    reward_fn: RewardFn,
    cfg: GRPOConfig,
    *,
    eos_ids: Sequence[int],
    pad_id: int,
    checkpoint_dir: Path | None = None,
    on_log: Callable[[int, dict[str, float]], None] | None = None,
    progress: Callable[[int], Any] | None = None,
) -> GRPOResult:
    """Run `cfg.steps` GRPO steps on `model` in place, resuming from `checkpoint_dir` when it holds a checkpoint."""
    if cfg.group_size < 2:
        raise ValueError("group_size must be at least 2: a group of one has no relative advantage")
    tcfg = cfg.train_config()
    mesh = make_mesh(tcfg)
    graphdef, params, frozen = lora.split_trainable(model)
    adapters = lora.has_adapters(model)
    shard = lambda tree: jax.device_put(tree, jax.tree.map(lambda x: param_sharding(mesh, x), tree))
    params = shard(params)
    tx = make_optimizer(tcfg)
    opt_state = shard(tx.init(params))
    shardings = (jax.tree.map(lambda x: x.sharding, params), jax.tree.map(lambda x: x.sharding, opt_state))
    # The reference is the starting policy: with adapters the base (nothing to copy); with beta = 0, none at all.
    ref_params = jax.tree.map(jnp.copy, params) if cfg.beta and not adapters else None
    # One prompt width for every update (the longest prompt's bucket): fewer compilations
    prompt_len = bucket_length(max(len(p.tokens) for p in prompts))
    _, update = compiled_update(graphdef, cfg, prompt_len, shardings)
    on_mesh = batch_sharding(mesh)
    stream = PromptStream(prompts, cfg.seed)

    key = jax.random.key(cfg.seed)
    start, position, history = 0, 0, []
    manager = None
    if checkpoint_dir is not None:
        manager = checkpoint_manager(checkpoint_dir)
        latest = manager.latest_step()
        if latest is not None:
            state = {"params": params, "opt_state": opt_state, "key": jax.random.key_data(key),
                     "position": np.zeros((), np.int64)}
            restored = manager.restore(latest, args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract_like(state)), history=ocp.args.JsonRestore()))
            state = restored["state"]
            params, opt_state, start = state["params"], state["opt_state"], latest
            key = jax.random.wrap_key_data(jnp.asarray(state["key"]))
            position = int(state["position"])
            history = list(restored["history"])

    bar = progress(start) if progress else None
    for step in range(start, cfg.steps):
        nnx.update(model, params)  # the rollout policy
        sampler = Sampler(model, eos_ids=eos_ids, pad_id=pad_id)
        t0 = time.perf_counter()
        rounds: list[RolloutBatch] = []
        for attempt in range(1 + (cfg.max_refills if cfg.dynamic_sampling else 0)):
            key, sample_key = jax.random.split(key)
            rounds.append(sample_groups(sampler, stream.take(position, cfg.prompts_per_step), cfg, sample_key, reward_fn))
            position += cfg.prompts_per_step
            if not cfg.dynamic_sampling or sum(has_signal(r.rewards).sum() for r in rounds) >= cfg.prompts_per_step:
                break
        rollout_s = time.perf_counter() - t0
        sampled = sum(int(r.lengths.sum()) for r in rounds)
        zero_share = 1.0 - float(has_signal(rounds[0].rewards).mean())  # of the first, unfiltered round
        rollout = select_groups(rounds, cfg.prompts_per_step) if cfg.dynamic_sampling else rounds[0]

        t1 = time.perf_counter()
        batch = jax.device_put(update_batch(rollout, cfg, prompt_len, pad_id), on_mesh)
        ref_logp = None
        if cfg.beta:
            reference = make_logprob_fn(graphdef, prompt_len, cfg.vocab_tile, base=adapters)
            ref_logp = reference(params if adapters else ref_params, frozen, batch)
        old_logp = None
        for it in range(cfg.mu):
            params, opt_state, metrics, logp = update(params, opt_state, frozen, batch, old_logp, ref_logp, first=it == 0)
            if it == 0:
                old_logp = logp
        metrics = {k: float(v) for k, v in metrics.items()}
        update_s = time.perf_counter() - t1
        done = step + 1
        if not all(math.isfinite(v) for v in (metrics["loss"], metrics["grad_norm"])):
            raise stopped_with(bar, manager, NonFiniteLoss(
                f"loss is {metrics['loss']} (gradient norm {metrics['grad_norm']}) at step {done}; "
                + (f"the last good checkpoint is kept in {checkpoint_dir}" if checkpoint_dir else "nothing was saved")
            ))  # fmt: skip
        row = {
            "step": float(done),
            "reward_mean": float(rollout.rewards.mean()),
            "reward_std": float(rollout.rewards.std()),
            **{f"reward/{n}": float(v.mean()) for n, v in rollout.parts.items()},
            "loss": metrics["loss"],
            **({"kl": metrics["kl"]} if "kl" in metrics else {}),
            "clip_fraction": metrics["clip_fraction"],
            "entropy": metrics["entropy"],
            "grad_norm": metrics["grad_norm"],
            "completion_length": float(rollout.lengths.mean()),
            "truncated_share": float(rollout.truncated.mean()),
            "zero_variance_share": zero_share,
            "rollout_tokens_per_second": sampled / rollout_s,
            "update_tokens_per_second": cfg.mu * float(batch["mask"].sum()) / update_s,
        }
        history.append(row)
        if on_log and (done % cfg.log_every == 0 or done == cfg.steps):
            on_log(done, row)
        if manager is not None and cfg.save_every and done % cfg.save_every == 0 and done < cfg.steps:
            manager.save(done, args=ocp.args.Composite(
                state=ocp.args.StandardSave({"params": params, "opt_state": opt_state, "key": jax.random.key_data(key),
                                             "position": np.asarray(position, np.int64)}),
                history=ocp.args.JsonSave(history),
            ))  # fmt: skip
        if bar is not None:
            bar.update(1)
            bar.set_postfix(reward=f"{row['reward_mean']:.3f}", refresh=False)
    close_run(bar, manager)
    nnx.update(model, params)
    return GRPOResult(params=params, history=history, resumed_from=start)
