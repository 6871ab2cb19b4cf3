"""GRPO: reinforcement learning with group-relative advantages, on the loop SFT shares (training/loop.py).

One step of the learner, in the parts a reader finds here in order and a user can swap:

1. sample groups: G completions for each of P prompts with the KV-cache sampler (`sample_groups`),
   refilled with groups whose rewards differ when `dynamic_sampling` is on (DAPO; `sample_step`);
2. score: `reward_fn(prompt, tokens, n, truncated) -> (total, parts)` per completion (`score_groups`):
   any parts, by any names, are logged as `reward/<name>`;
3. advantages: per group, by an estimator registered by name (`ADVANTAGES`: group_std, group_mean, rloo);
4. the loss: the clipped importance ratio, per token or per sequence (`IMPORTANCE`: token as GRPO,
   sequence as GSPO), a KL estimate to the reference by name (`KL_ESTIMATORS`, weight `beta`), reduced by
   an aggregation by name (`AGGREGATIONS`) (`policy_loss`). Steps 3 and 4, the objective, live in
   `training/grpo_objective.py`, with the registries of those names;
5. update: `mu` jitted updates of one rollout batch (`make_update`, `optimise`). The first update's own
   log-probs, taken before any change, are the old (rollout-policy) log-probs of the later ones, so a
   rollout batch costs one forward pass per update and the ratio starts at exactly one.

Trainable and frozen weights are split by `lora.split_trainable`: with LoRA adapters only they are
trained, and the reference is the base they sit on (computed with the adapters off, no second copy of
the weights); without, every parameter is trained and the reference is a copy of the start.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from training import loop, lora
from training.grpo_objective import Objective, check_names, group_advantages, policy_loss
from training.lm_head import token_cross_entropy
from training.loop import LoopConfig, NonFiniteLoss, make_optimizer
from training.model import Gemma, init_cache
from training.sampler import Sampler, SamplingConfig, bucket_length, left_pad

__all__ = [
    "GRPOConfig",
    "GRPOResult",
    "NonFiniteLoss",
    "Prompt",
    "PromptStream",
    "RolloutBatch",
    "grpo",
    "sample_groups",
]


@dataclasses.dataclass(frozen=True, kw_only=True)
class GRPOConfig(LoopConfig):
    """RL: `LoopConfig`'s fields (steps, optimizer, schedule, logging, checkpoints, mesh, seed) with RL's
    defaults, and the fields of the rollouts and of the objective.

    `steps` counts rollout batches; each is `mu` optimizer updates, and the schedule (`warmup_steps`
    included) is counted in those updates (`updates_per_step`)."""

    # P: prompts (groups) per rollout batch
    prompts_per_step: int
    # G: completions sampled per prompt (at least 2: advantages are relative to the group)
    group_size: int
    # the completion budget in tokens; a longer completion is cut there (and `truncated`)
    max_new_tokens: int
    # sampling temperature of the rollouts
    temperature: float = 1.0
    # sample among the k likeliest tokens only (0: off)
    top_k: int = 0
    # sample from the smallest set of tokens whose probability reaches p (1: off)
    top_p: float = 1.0
    # the LM head's table dtype in the rollouts (None: the model's): "bfloat16" halves what a decode step
    # reads at a wide vocabulary; the update's log-probs (and so the ratio's old ones) stay in the model's
    rollout_head_dtype: str | None = None
    # (LoopConfig's, with RL's defaults: a small constant rate, no decay, no weight decay, a row every step)
    learning_rate: float = 1e-5
    schedule: str = "constant"
    end_lr_fraction: float = 1.0
    weight_decay: float = 0.0
    log_every: int = 1
    # weight of the KL term to the reference (the starting policy); 0 loads no reference at all
    beta: float = 0.0
    # the KL estimator by name (`KL_ESTIMATORS`): k3 (Schulman's, >= 0, as Tunix and TRL) | k1 | k2
    kl: str = "k3"
    # the ratio is clipped below at 1 - epsilon
    epsilon: float = 0.2
    # and above at 1 + epsilon_high (DAPO's clip-higher: rare good tokens can grow further)
    epsilon_high: float = 0.28
    # optimisation iterations (updates) per rollout batch
    mu: int = 1
    # the advantage estimator by name (`ADVANTAGES`): group_std | group_mean | rloo
    advantage: str = "group_std"
    # the importance ratio by name (`IMPORTANCE`): token (GRPO) | sequence (GSPO: one ratio per completion)
    importance: str = "token"
    # how per-token losses reduce to one (`AGGREGATIONS`): sequence-mean-token-mean | token-mean | dr_grpo
    aggregation: str = "sequence-mean-token-mean"
    # refill the batch with groups whose rewards differ (DAPO's dynamic sampling)
    dynamic_sampling: bool = False
    # extra rollout rounds a step may spend refilling, when dynamic sampling
    max_refills: int = 2

    @property
    def updates_per_step(self) -> int:
        return self.mu

    def batch_split(self) -> tuple[int, int]:
        return self.prompts_per_step * self.group_size, 1  # every group in one update, no accumulation


# ---------------------------------------------------------------- log-probs and the update


def completion_logprobs(model: Gemma, batch: dict[str, jax.Array], vocab_tile: int) -> jax.Array:
    """log π(token) [P·G, width] of each completion token, the LM head taken `vocab_tile` rows at a time.

    Each group's prompt runs once ([P, L]) into a cache wide enough for it and a completion (no ring);
    its keys and values are copied to its G completions, which run after it as one chunk each. The
    copy's gradient (`jnp.repeat`'s) sums the group's, so this is the forward and backward pass of the
    P·G prompt-plus-completion rows, with each prompt's share done once instead of G times."""
    prompts, targets = batch["prompt_inputs"], batch["targets"]
    n_prompts, prompt_len = prompts.shape
    group = targets.shape[0] // n_prompts
    cache = init_cache(model.config, n_prompts, prompt_len + targets.shape[1] - 1, model.dtype)
    prompt_hidden, cache = model.hidden_states(prompts, batch["prompt_positions"], batch["prompt_segments"], cache)
    copy = lambda x: jnp.repeat(x, group, axis=0)
    # the prompt's last position predicts the first completion token, each completion input the next
    hidden = copy(prompt_hidden[:, -1:])
    if batch["inputs"].shape[1]:  # (none when the budget is one token)
        after, _ = model.hidden_states(
            batch["inputs"], batch["positions"], batch["segments"], jax.tree.map(copy, cache), prompt_len
        )
        hidden = jnp.concatenate([hidden, after], axis=1)
    table = model.embed_tokens[...].astype(hidden.dtype)
    return -token_cross_entropy(hidden, table, targets, model.config.final_logit_softcapping, vocab_tile)


# Compiled functions of this module, each keyed by everything it depends on (the model's graph, the
# static config it reads, the shapes it is built for), so a run that differs in nothing it reads (a
# resumed run, another seed or temperature) reuses it and one that differs in any of it compiles anew.
_COMPILED: dict[tuple, Any] = {}


def compiled(key: tuple, build: Callable[[], Any]) -> Any:
    """`build()` the first time `key` is asked for, the same object every time after."""
    if key not in _COMPILED:
        _COMPILED[key] = build()
    return _COMPILED[key]


def make_logprob_fn(graphdef: nnx.GraphDef, vocab_tile: int, base: bool = False) -> Callable:
    """Jitted log-probs of a frozen model (the reference): no gradient. With `base`, adapters are skipped.

    `base` is an argument, and part of the cache key, because `lora.adapters_off()` acts when JAX
    traces: a function traced once inside it computes the base ever after, whatever context calls it."""

    def build() -> Callable:
        def fn(params, frozen, batch):
            with lora.adapters_off() if base else contextlib.nullcontext():
                return completion_logprobs(nnx.merge(graphdef, params, frozen), batch, vocab_tile)

        return jax.jit(fn)

    return compiled(("logprobs", graphdef, vocab_tile, base), build)


def compiled_update(graphdef: nnx.GraphDef, cfg: GRPOConfig, shardings: Any) -> Callable:
    """The jitted update of `make_update`, shared by every run whose update reads the same: the model
    graph, the optimizer's fields (`loop.optimizer_key`), the objective (`Objective`), the LM head's tile
    and the state's shardings (the batch's widths are its shapes: jit compiles each once)."""
    key = (
        "update",
        graphdef,
        loop.optimizer_key(cfg),
        Objective.of(cfg),
        cfg.vocab_tile,
        jax.tree.structure(shardings),
        tuple(jax.tree.leaves(shardings)),
    )
    return compiled(key, lambda: make_update(graphdef, make_optimizer(cfg), cfg, out_shardings=shardings))


def make_update(
    graphdef: nnx.GraphDef, tx: optax.GradientTransformation, cfg: GRPOConfig, out_shardings=None
) -> Callable:
    """One jitted, buffer-donating update. With `first`, the log-probs it computes are also the old ones."""
    objective, vocab_tile = Objective.of(cfg), cfg.vocab_tile

    def loss_fn(params, frozen, batch, old_logp, ref_logp, first):
        logp = completion_logprobs(nnx.merge(graphdef, params, frozen), batch, vocab_tile)
        old = jax.lax.stop_gradient(logp) if first else old_logp
        loss, metrics = policy_loss(logp, old, ref_logp, batch["advantages"], batch["mask"], objective)
        return loss, (metrics, jax.lax.stop_gradient(logp))

    def update(params, opt_state, frozen, batch, old_logp, ref_logp, first):
        (loss, (metrics, logp)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            params, frozen, batch, old_logp, ref_logp, first
        )
        updates, opt_state = tx.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        mask = batch["mask"]
        metrics = {
            **metrics,
            "loss": loss,
            "grad_norm": optax.tree.norm(grads),
            # E[-log π(y)] over sampled tokens: a one-sample estimate of the policy's entropy
            "entropy": -jnp.sum(logp * mask) / jnp.maximum(mask.sum(), 1.0),
        }
        return params, opt_state, metrics, logp

    return jax.jit(
        update,
        static_argnames=("first",),
        donate_argnums=(0, 1),
        out_shardings=None if out_shardings is None else (*out_shardings, None, None),
    )


def optimise(update: Callable, params, opt_state, frozen, batch, ref_logp, mu: int) -> tuple:
    """`mu` updates on one rollout batch: the first one's log-probs are the old ones of the rest."""
    old_logp = None
    for it in range(mu):
        params, opt_state, metrics, logp = update(params, opt_state, frozen, batch, old_logp, ref_logp, first=it == 0)
        if it == 0:
            old_logp = logp
    return params, opt_state, metrics


# ---------------------------------------------------------------- sample groups and score them


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
    """G completions of each prompt (rows prompt-major; each prompt prefilled once), scored by `reward_fn`."""
    sampling = SamplingConfig(cfg.max_new_tokens, cfg.temperature, cfg.top_k, cfg.top_p)
    gen = sampler([p.tokens for p in prompts], sampling, key, repeats=cfg.group_size)
    rewards, parts = score_groups(prompts, gen.tokens, gen.lengths, gen.truncated, reward_fn)
    return RolloutBatch(list(prompts), gen.tokens, gen.lengths, gen.truncated, rewards, parts)


def score_groups(
    prompts: Sequence[Prompt], tokens: np.ndarray, lengths: np.ndarray, truncated: np.ndarray, reward_fn: RewardFn
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Rewards [P, G] of the rows (prompt-major) and each part `reward_fn` reports, by its own name."""
    g = len(lengths) // len(prompts)
    rewards = np.zeros((len(prompts), g), np.float64)
    parts: dict[str, np.ndarray] = {}
    for i, prompt in enumerate(prompts):
        for j in range(g):
            row = i * g + j
            n = int(lengths[row])
            total, values = reward_fn(prompt, tokens[row, :n], n, bool(truncated[row]))
            rewards[i, j] = total
            for name, v in values.items():
                parts.setdefault(name, np.zeros((len(prompts), g)))[i, j] = v
    return rewards, parts


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
        tokens=cat("tokens"),
        lengths=cat("lengths"),
        truncated=cat("truncated"),
        rewards=np.stack([b.rewards[i] for b, i in chosen]),
        parts={n: np.stack([b.parts[n][i] for b, i in chosen]) for n in names},
    )


def completion_width(lengths: np.ndarray, max_new_tokens: int) -> int:
    """Completion positions the update needs: the longest completion and its end token, in a power-of-two
    bucket (few compilations), so short completions do not pay for the whole budget."""
    return min(max_new_tokens, bucket_length(int(lengths.max()) + 1, minimum=32))


def update_batch(rollout: RolloutBatch, cfg: GRPOConfig, prompt_len: int, pad_id: int) -> dict[str, np.ndarray]:
    """The arrays of `completion_logprobs`: each group's prompt [P, prompt_len], left-padded, and its
    completions [P·G, width]: the inputs (all but the last token), targets, mask and advantages."""
    new = completion_width(rollout.lengths, cfg.max_new_tokens)
    # the end-of-turn token is a completion token too: the policy learns when to stop
    scored = np.minimum(rollout.lengths + 1, new)
    tokens = rollout.tokens[:, :new].astype(np.int32)
    batch = completion_batch([p.tokens for p in rollout.prompts], tokens, scored, prompt_len, pad_id)
    adv = np.asarray(group_advantages(jnp.asarray(rollout.rewards, jnp.float32), cfg.advantage)).reshape(-1)
    return batch | {"advantages": adv.astype(np.float32)}


def completion_batch(
    prompts: Sequence[Sequence[int]], tokens: np.ndarray, scored: np.ndarray, prompt_len: int, pad_id: int
) -> dict[str, np.ndarray]:
    """The arrays of `completion_logprobs` for P prompts and their k completions each, prompt-major: the
    prompts [P, prompt_len] left-padded, the completions' `tokens` [P·k, width] (inputs: all but the last),
    positions following their prompt's, and the mask of each row's first `scored` tokens."""
    k = len(tokens) // len(prompts)
    p_tok, p_pos, p_seg = left_pad(prompts, prompt_len, pad_id)
    steps = np.arange(tokens.shape[1])[None, :]
    active = steps < scored[:, None]
    positions = (np.repeat(p_pos[:, -1:], k, axis=0) + 1 + steps).astype(np.int32)
    return {
        "prompt_inputs": p_tok,
        "prompt_positions": p_pos,
        "prompt_segments": p_seg,
        "inputs": tokens[:, :-1],
        "positions": positions[:, :-1],
        "segments": active[:, :-1].astype(np.int32),
        "targets": tokens,
        "mask": active.astype(np.float32),
    }


def place_batch(batch: dict[str, np.ndarray], sharding: NamedSharding) -> dict[str, jax.Array]:
    """The batch on the mesh, rows split; the prompts too when their count splits as evenly (else each
    device holds them all: they are P rows, the completions P·G)."""
    devices = sharding.mesh.size
    where = lambda x: sharding if x.shape[0] % devices == 0 else NamedSharding(sharding.mesh, PartitionSpec())
    return jax.device_put(batch, {k: where(v) for k, v in batch.items()})


# ---------------------------------------------------------------- the step and the loop


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
class Sampled:
    """What one step's rollouts give the update and the log."""

    rollout: RolloutBatch  # the P groups the update trains on
    sampled_tokens: int  # completion tokens generated, refills included
    zero_variance_share: float  # of the first, unfiltered round: groups whose rewards all tie
    seconds: float


def sample_step(
    sampler: Sampler, stream: PromptStream, position: int, key: jax.Array, cfg: GRPOConfig, reward_fn: RewardFn
) -> tuple[Sampled, int, jax.Array]:
    """The step's P groups, sampled and scored from prompt `position` on: with dynamic sampling, up to
    `max_refills` more rounds until P groups have signal, those first. Returns (sampled, the next
    position, the next key): both are the run's state, so a resumed run draws what this one would."""
    t0 = time.perf_counter()
    rounds: list[RolloutBatch] = []
    for _ in range(1 + (cfg.max_refills if cfg.dynamic_sampling else 0)):
        key, sample_key = jax.random.split(key)
        rounds.append(sample_groups(sampler, stream.take(position, cfg.prompts_per_step), cfg, sample_key, reward_fn))
        position += cfg.prompts_per_step
        if not cfg.dynamic_sampling or sum(has_signal(r.rewards).sum() for r in rounds) >= cfg.prompts_per_step:
            break
    seconds = time.perf_counter() - t0
    rollout = select_groups(rounds, cfg.prompts_per_step) if cfg.dynamic_sampling else rounds[0]
    sampled = sum(int(r.lengths.sum()) for r in rounds)
    zero_share = 1.0 - float(has_signal(rounds[0].rewards).mean())
    return Sampled(rollout, sampled, zero_share, seconds), position, key


def step_row(done: int, sampled: Sampled, metrics: dict[str, float], update_tokens: float, update_s: float) -> dict:
    """The history row (and dvclive's) of one step."""
    rollout = sampled.rollout
    return {
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
        "zero_variance_share": sampled.zero_variance_share,
        "rollout_tokens_per_second": sampled.sampled_tokens / sampled.seconds,
        "update_tokens_per_second": update_tokens / update_s,
    }


@dataclasses.dataclass
class GRPOResult:
    params: dict
    history: list[dict[str, float]]  # one row of metrics per log step
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
    """Run `cfg.steps` GRPO steps on `model` in place, resuming from `checkpoint_dir` when it holds a checkpoint.

    The loop around the step is `training.loop.run`; the checkpointed state is the params, the optimizer
    state, the sampling key and the prompt position."""
    if cfg.group_size < 2:
        raise ValueError("group_size must be at least 2: a group of one has no relative advantage")
    check_names(cfg)
    placed = loop.place(model, cfg)
    adapters = lora.has_adapters(model)
    # The reference is the starting policy: with adapters the base (nothing to copy); with beta = 0, none at all.
    ref_params = jax.tree.map(jnp.copy, placed.params) if cfg.beta and not adapters else None
    # One prompt width for every update (the longest prompt's bucket): each width is a compilation of the
    # update, and a prompt's share of the update is already once per group, not once per completion.
    prompt_len = bucket_length(max(len(p.tokens) for p in prompts))
    update = compiled_update(placed.graphdef, cfg, placed.shardings)
    reference = make_logprob_fn(placed.graphdef, cfg.vocab_tile, base=adapters) if cfg.beta else None
    stream = PromptStream(prompts, cfg.seed)

    def step(index: int, state: dict) -> tuple[dict, dict]:
        nnx.update(model, state["params"])  # the rollout policy
        key = jax.random.wrap_key_data(jnp.asarray(state["key"]))
        # The sampler (its copies of the weights, one a device) lives only while it samples, not in the update.
        sampler = Sampler(model, eos_ids=eos_ids, pad_id=pad_id, head_dtype=cfg.rollout_head_dtype)
        sampled, position, key = sample_step(sampler, stream, int(state["position"]), key, cfg, reward_fn)
        del sampler

        t1 = time.perf_counter()
        batch = place_batch(update_batch(sampled.rollout, cfg, prompt_len, pad_id), placed.batches)
        ref_logp = None
        if reference is not None:
            ref_logp = reference(state["params"] if adapters else ref_params, placed.frozen, batch)
        params, opt_state, metrics = optimise(
            update, state["params"], state["opt_state"], placed.frozen, batch, ref_logp, cfg.mu
        )
        metrics = {k: float(v) for k, v in metrics.items()}
        row = step_row(index + 1, sampled, metrics, cfg.mu * float(batch["mask"].sum()), time.perf_counter() - t1)
        state = {
            "params": params,
            "opt_state": opt_state,
            "key": jax.random.key_data(key),
            "position": np.asarray(position, np.int64),
        }
        return state, row

    start = {
        "params": placed.params,
        "opt_state": placed.opt_state,
        "key": jax.random.key_data(jax.random.key(cfg.seed)),
        "position": np.zeros((), np.int64),
    }
    result = loop.run(
        cfg,
        start,
        step,
        lambda done, row: row,
        checkpoint_dir=checkpoint_dir,
        on_log=on_log,
        progress=progress,
        postfix=lambda row: {"reward": f"{row['reward_mean']:.3f}"},
    )
    params = result.state["params"]
    nnx.update(model, params)
    return GRPOResult(params=params, history=result.history, resumed_from=result.resumed_from)
