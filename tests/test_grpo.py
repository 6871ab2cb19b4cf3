"""The GRPO learner: the objective against a NumPy reference, the first step, learning on a bandit task,
determinism, resumption (in process and after kill -9), dynamic sampling, and the stage's pass-through."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import yaml
from flax import nnx

from stages import paths
from stages.common import read_json
from training import config as configs
from training import lora
from training.grpo import (
    GRPOConfig,
    Prompt,
    RolloutBatch,
    completion_logprobs,
    grpo,
    make_logprob_fn,
    make_update,
    sample_groups,
    select_groups,
    update_batch,
)
from training.grpo_objective import (
    ADVANTAGES,
    AGGREGATIONS,
    IMPORTANCE,
    KL_ESTIMATORS,
    REGISTRIES,
    Objective,
    Registry,
    aggregate,
    check_names,
    group_advantages,
    policy_loss,
)
from training.lm_head import token_cross_entropy
from training.loop import learning_rate_schedule, make_optimizer
from training.model import Gemma
from training.sampler import Sampler

# ---------------------------------------------------------------- the objective's names


def test_each_registry_is_the_enum_of_its_param():
    """A name registered in training/grpo_objective.py is a choice of its param in the schema (and so in
    docs/params.md), and every choice the schema offers is registered, in the same order."""
    schema = json.loads((Path(__file__).resolve().parent.parent / "schemas/params.schema.json").read_text())
    grpo_params = schema["properties"]["grpo"]["properties"]
    assert {r.param for r in REGISTRIES} == {"advantage", "importance", "kl", "aggregation"}
    for registry in REGISTRIES:
        assert grpo_params[registry.param]["enum"] == list(registry), (
            f"schemas/params.schema.json: grpo.{registry.param}"
        )
        assert registry[getattr(GRPOConfig, registry.param)] is not None  # the config's default is registered


def test_an_unknown_name_is_refused_once_at_the_lookup():
    registry = Registry("estimator")
    registry.register("a")(len)
    assert registry["a"] is len and list(registry) == ["a"]
    with pytest.raises(ValueError, match=r"unknown estimator 'b' \(expected one of a\)"):
        registry["b"]
    with pytest.raises(ValueError, match="registered twice"):
        registry.register("a")(min)
    check_names(bandit_config(advantage="rloo", importance="sequence", kl="k2", aggregation="dr_grpo"))
    for param in ("advantage", "importance", "kl", "aggregation"):
        with pytest.raises(ValueError, match=f"unknown {param} 'nope'"):
            check_names(bandit_config(**{param: "nope"}))
    with pytest.raises(ValueError, match="unknown kl 'k4'"):  # before any rollout
        grpo(tiny_model(), PROMPTS, bandit_reward, bandit_config(kl="k4"), eos_ids=[EOS], pad_id=PAD)


# ---------------------------------------------------------------- the objective against NumPy


def np_advantages(rewards: np.ndarray, scale: bool, eps: float = 1e-6) -> np.ndarray:
    out = np.zeros_like(rewards)
    for i, group in enumerate(rewards):
        mean = sum(group) / len(group)
        std = (sum((r - mean) ** 2 for r in group) / (len(group) - 1)) ** 0.5
        out[i] = [(r - mean) / (std + eps) if scale else r - mean for r in group]
    return out


def np_loss(logp, old, ref, adv, mask, eps, eps_high, beta, how, max_len):
    """The GRPO loss token by token, written out with loops."""
    b, t = logp.shape
    per = np.zeros((b, t))
    for i in range(b):
        for j in range(t):
            ratio = np.exp(np.clip(logp[i, j] - old[i, j], -20, 20))
            loss = max(-adv[i] * ratio, -adv[i] * min(max(ratio, 1 - eps), 1 + eps_high))
            if beta:
                d = ref[i, j] - logp[i, j]
                loss += beta * (np.exp(d) - d - 1)
            per[i, j] = loss * mask[i, j]
    if how == "sequence-mean-token-mean":
        return np.mean([per[i].sum() / mask[i].sum() for i in range(b)])
    if how == "token-mean":
        return per.sum() / mask.sum()
    return per.sum() / (b * max_len)


def test_group_advantages_match_numpy():
    rewards = np.array([[1.0, 0.0, 0.5, 1.5], [2.0, 2.0, 2.0, 2.0], [0.0, -1.0, 3.0, 0.25]])
    for kind, scale in (("group_std", True), ("group_mean", False)):
        got = np.asarray(group_advantages(jnp.asarray(rewards), kind))
        np.testing.assert_allclose(got, np_advantages(rewards, scale), rtol=1e-6, atol=1e-9)
    assert np.all(np.asarray(group_advantages(jnp.asarray(rewards)))[1] == 0)  # equal rewards: no signal


@pytest.mark.parametrize("how", AGGREGATIONS)
@pytest.mark.parametrize("beta", [0.0, 0.1])
def test_policy_loss_matches_numpy(how, beta):
    rng = np.random.default_rng(0)
    b, t = 6, 5
    old = rng.normal(-2.0, 0.5, (b, t))
    logp = old + rng.normal(0.0, 0.4, (b, t))  # ratios well outside [0.8, 1.28]: both clips bite
    ref = old + rng.normal(0.0, 0.3, (b, t))
    adv = rng.normal(0.0, 1.0, b)
    mask = (np.arange(t)[None] < np.array([5, 3, 1, 4, 5, 2])[:, None]).astype(np.float64)
    cfg = GRPOConfig(
        steps=1,
        prompts_per_step=3,
        group_size=2,
        max_new_tokens=8,
        beta=beta,
        epsilon=0.2,
        epsilon_high=0.28,
        aggregation=how,
    )
    f32 = lambda x: jnp.asarray(x, jnp.float32)
    loss, metrics = policy_loss(f32(logp), f32(old), f32(ref), f32(adv), f32(mask), cfg)
    expected = np_loss(logp, old, ref, adv, mask, 0.2, 0.28, beta, how, 8)
    np.testing.assert_allclose(float(loss), expected, rtol=2e-5)
    ratio = np.exp(logp - old)
    clipped = ((adv[:, None] > 0) & (ratio > 1.28)) | ((adv[:, None] < 0) & (ratio < 0.8))
    np.testing.assert_allclose(float(metrics["clip_fraction"]), (clipped * mask).sum() / mask.sum(), rtol=1e-6)
    assert 0 < float(metrics["clip_fraction"]) < 1
    if beta:
        d = ref - logp
        np.testing.assert_allclose(float(metrics["kl"]), ((np.exp(d) - d - 1) * mask).sum() / mask.sum(), rtol=1e-5)


def test_clip_higher_is_asymmetric():
    """A positive advantage stops pulling at ratio 1 + eps_high, a negative one at 1 - eps."""
    cfg = GRPOConfig(steps=1, prompts_per_step=1, group_size=2, max_new_tokens=1, epsilon=0.2, epsilon_high=0.28)
    grad = lambda lr, a: float(
        jax.grad(
            lambda x: policy_loss(x[None, None], jnp.zeros((1, 1)), None, jnp.asarray([a]), jnp.ones((1, 1)), cfg)[0]
        )(jnp.float32(lr))
    )
    assert grad(np.log(1.25), 1.0) != 0 and grad(np.log(1.30), 1.0) == 0  # clip-higher at 1.28
    assert grad(np.log(0.85), -1.0) != 0 and grad(np.log(0.75), -1.0) == 0  # the lower clip at 0.8
    assert grad(np.log(1.30), -1.0) != 0  # a harmful token is never clipped away


def test_dr_grpo_divides_by_the_budget_not_the_length():
    per_token, mask = jnp.ones((2, 4)), jnp.asarray([[1, 1, 0, 0], [1, 1, 1, 1]], jnp.float32)
    assert float(aggregate(per_token, mask, "dr_grpo", 8)) == 6 / 16
    assert float(aggregate(per_token, mask, "token-mean", 8)) == 1.0
    assert float(aggregate(per_token, mask, "sequence-mean-token-mean", 8)) == 1.0
    with pytest.raises(ValueError, match="unknown aggregation"):
        aggregate(per_token, mask, "mean", 8)


def test_rloo_is_each_reward_less_the_mean_of_the_others():
    """Worked by hand: group (1, 0, 0.5, 1.5): the others' means are 2/3, 1, 5/6, 1/2."""
    rewards = jnp.asarray([[1.0, 0.0, 0.5, 1.5], [2.0, 2.0, 2.0, 2.0], [3.0, 1.0, 0.0, 0.0]])
    got = np.asarray(group_advantages(rewards, "rloo"))
    expected = [[1 - 2 / 3, 0 - 1, 0.5 - 5 / 6, 1.5 - 0.5], [0, 0, 0, 0], [3 - 1 / 3, 1 - 1, 0 - 4 / 3, 0 - 4 / 3]]
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)
    # G / (G - 1) times the group-mean advantage: the same direction, a larger step
    np.testing.assert_allclose(got, 4 / 3 * np.asarray(group_advantages(rewards, "group_mean")), rtol=1e-6, atol=1e-7)
    assert set(ADVANTAGES) == {"group_std", "group_mean", "rloo"}
    with pytest.raises(ValueError, match="unknown advantage"):
        group_advantages(rewards, "ppo")


def test_gspo_clips_one_sequence_ratio_by_hand():
    """GSPO, worked by hand: a completion of 2 active tokens with log-ratios (0.4, 0.2) has s = exp(0.3)
    for both tokens; with A = 1, s above 1 + epsilon_high clips to 1.28 (no gradient), and with A = -1
    the unclipped -A·s = s is the larger and stays. A completion of 1 token, log-ratio -0.1, A = 0.5:
    s = exp(-0.1) = 0.905 inside the clip, loss -0.5·0.905 on its one token."""
    cfg = Objective(
        epsilon=0.2,
        epsilon_high=0.28,
        beta=0.0,
        kl="k3",
        importance="sequence",
        aggregation="token-mean",
        max_new_tokens=3,
    )
    old = jnp.zeros((3, 3))
    logp = jnp.asarray([[0.4, 0.2, 9.0], [0.4, 0.2, 9.0], [-0.1, 5.0, 5.0]])  # masked tokens must not count
    mask = jnp.asarray([[1, 1, 0], [1, 1, 0], [1, 0, 0]], jnp.float32)
    adv = jnp.asarray([1.0, -1.0, 0.5])
    loss, metrics = policy_loss(logp, old, None, adv, mask, cfg)
    s0, s2 = np.exp(0.3), np.exp(-0.1)
    per_token = [-1.28, -1.28, s0, s0, -0.5 * s2]  # the 5 active tokens
    np.testing.assert_allclose(float(loss), sum(per_token) / 5, rtol=1e-6)
    np.testing.assert_allclose(float(metrics["clip_fraction"]), 2 / 5, rtol=1e-6)
    np.testing.assert_allclose(float(metrics["ratio_mean"]), (4 * s0 + s2) / 5, rtol=1e-6)
    # the gradient: the clipped sequence has none; in the kept one each of its |y| = 2 tokens' losses
    # is s, and d(s)/d(logp_t) = s / |y|: 2 × s / 2 / 5 on each token; masked tokens get nothing
    grad = np.asarray(jax.grad(lambda x: policy_loss(x, old, None, adv, mask, cfg)[0])(logp))
    np.testing.assert_allclose(grad[0], 0.0, atol=1e-7)
    np.testing.assert_allclose(grad[1], [s0 / 5, s0 / 5, 0.0], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(grad[2], [-0.5 * s2 / 5, 0, 0], rtol=1e-5, atol=1e-7)
    # token-level importance on the same numbers clips each token on its own: exp(0.4) > 1.28 > exp(0.2)
    token = dataclasses.replace(cfg, importance="token")
    t_loss, _ = policy_loss(logp, old, None, adv, mask, token)
    by_token = [-1.28, -np.exp(0.2), np.exp(0.4), np.exp(0.2), -0.5 * s2]
    np.testing.assert_allclose(float(t_loss), sum(by_token) / 5, rtol=1e-6)
    assert set(IMPORTANCE) == {"token", "sequence"}


def test_kl_estimators_by_hand():
    logp, ref = jnp.asarray([-1.0]), jnp.asarray([-1.5])  # ref - logp = -0.5
    np.testing.assert_allclose(float(KL_ESTIMATORS["k1"](logp, ref)[0]), 0.5, rtol=1e-6)
    np.testing.assert_allclose(float(KL_ESTIMATORS["k2"](logp, ref)[0]), 0.125, rtol=1e-6)
    np.testing.assert_allclose(float(KL_ESTIMATORS["k3"](logp, ref)[0]), np.exp(-0.5) + 0.5 - 1, rtol=1e-6)


def test_the_schedule_counts_optimizer_updates_mu_per_step():
    """The RL config owns its schedule: warmup_steps and steps are loop steps, each `mu` updates."""
    cfg = GRPOConfig(
        steps=4,
        prompts_per_step=1,
        group_size=2,
        max_new_tokens=1,
        mu=2,
        warmup_steps=1,
        learning_rate=1.0,
        schedule="linear",
        end_lr_fraction=0.0,
    )
    lr = learning_rate_schedule(cfg)
    assert [float(lr(i)) for i in (0, 1)] == [0.5, 1.0]  # two updates of warmup
    assert float(lr(7)) == pytest.approx(1 / 6) and cfg.updates_per_step == 2 and cfg.batch_split() == (2, 1)


def test_the_update_cache_is_keyed_by_what_the_update_reads():
    from training.grpo import compiled_update

    graphdef, params, _ = lora.split_trainable(tiny_model())
    cfg = bandit_config()
    shardings = (jax.tree.map(lambda x: None, params), None)
    one = compiled_update(graphdef, cfg, shardings)
    assert (
        compiled_update(
            graphdef,
            dataclasses.replace(
                cfg, seed=3, temperature=0.5, top_k=4, dynamic_sampling=True, prompts_per_step=2, log_every=5
            ),
            shardings,
        )
        is one
    )
    for change in (
        dict(epsilon=0.1),
        dict(importance="sequence"),
        dict(learning_rate=1e-4),
        dict(mu=2),
        dict(kl="k1"),
        dict(steps=4),
        dict(vocab_tile=8),
    ):
        assert compiled_update(graphdef, dataclasses.replace(cfg, **change), shardings) is not one, change


# ---------------------------------------------------------------- a tiny model on a bandit task

VOCAB, EOS, PAD, TARGET = 32, 1, 0, 7


def tiny_model(seed: int = 0) -> Gemma:
    cfg = configs.tiny(
        VOCAB,
        hidden_size=32,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=16,
    )
    return Gemma(cfg, rngs=nnx.Rngs(params=seed))


PROMPTS = [Prompt(tokens=[2, 3 + i % 5, 3 + i % 3], text=f"q{i}", record={"id": i}) for i in range(16)]


def bandit_reward(prompt, tokens, n, truncated):
    """The share of the completion's tokens that are TARGET."""
    value = float(np.mean(tokens[:n] == TARGET)) if n else 0.0
    return value, {"target": value}


def bandit_config(**kw) -> GRPOConfig:
    base = dict(
        steps=3, prompts_per_step=4, group_size=8, max_new_tokens=4, temperature=1.0, learning_rate=3e-3, seed=0
    )
    return GRPOConfig(**{**base, **kw})


def run_bandit(cfg: GRPOConfig, **kw):
    model = tiny_model()
    result = grpo(model, PROMPTS, bandit_reward, cfg, eos_ids=[EOS], pad_id=PAD, **kw)
    return model, result


def test_a_few_grpo_steps_raise_the_reward():
    _, result = run_bandit(bandit_config(steps=8, mu=2, beta=0.04, aggregation="token-mean"))
    rewards = [row["reward_mean"] for row in result.history]
    assert np.mean(rewards[-2:]) > np.mean(rewards[:2]) + 0.2, rewards
    assert result.history[-1]["kl"] > 0  # it moved away from the reference


def test_grpo_with_lora_trains_only_the_adapters_against_the_base():
    """With adapters, only they move; the reference is the base under them (KL 0 at the first update, whose
    forward precedes any change with mu = 1; above 0 once the adapters moved)."""
    model = tiny_model()
    lora.add_adapters(model, lora.LoRASpec(rank=4, alpha=8.0), seed=0)
    adapters_before, frozen_before = jax.tree.map(np.array, lora.split_trainable(model)[1:3])
    result = grpo(
        model,
        PROMPTS,
        bandit_reward,
        bandit_config(steps=8, mu=1, beta=0.04, aggregation="token-mean", learning_rate=2e-2),
        eos_ids=[EOS],
        pad_id=PAD,
    )
    _, adapters_after, frozen_after = lora.split_trainable(model)
    jax.tree.map(np.testing.assert_array_equal, frozen_before, jax.tree.map(np.asarray, frozen_after))
    assert any(
        np.any(np.asarray(a) != np.asarray(b))
        for a, b in zip(jax.tree.leaves(adapters_before), jax.tree.leaves(adapters_after))
    )
    rewards = [row["reward_mean"] for row in result.history]
    assert abs(result.history[0]["kl"]) < 1e-6 and result.history[-1]["kl"] > 0
    assert np.mean(rewards[-2:]) > np.mean(rewards[:2]), rewards


def test_the_first_update_has_zero_kl_and_unit_ratios():
    model = tiny_model()
    cfg = bandit_config(beta=0.1, mu=1)
    graphdef, params, frozen = lora.split_trainable(model)
    rollout = sample_groups(Sampler(model, [EOS], PAD), PROMPTS[:4], cfg, jax.random.key(1), bandit_reward)
    batch = jax.tree.map(jnp.asarray, update_batch(rollout, cfg, 16, PAD))
    assert float(batch["mask"].sum()) > 0 and float(jnp.abs(batch["advantages"]).sum()) > 0
    logprobs = make_logprob_fn(graphdef, 256)
    rollout_logp = logprobs(params, frozen, batch)  # the rollout policy's log-probs, in a forward of their own
    ref_logp = logprobs(jax.tree.map(jnp.copy, params), frozen, batch)
    tx = make_optimizer(cfg)
    update = make_update(graphdef, tx, cfg)
    _, _, metrics, logp = update(params, tx.init(params), frozen, batch, None, ref_logp, first=True)
    assert float(metrics["ratio_mean"]) == 1.0 and float(metrics["clip_fraction"]) == 0.0
    assert abs(float(metrics["kl"])) < 1e-6
    mask = np.asarray(batch["mask"]) > 0
    np.testing.assert_allclose(np.asarray(logp)[mask], np.asarray(rollout_logp)[mask], atol=1e-5)


def written_out_logprobs(model: Gemma, batch: dict, vocab_tile: int) -> jax.Array:
    """The log-probs of the P·G rows each written out whole (its prompt, then its completion), in one
    uncached forward pass: what the shared-prefix pass must equal."""
    group = batch["targets"].shape[0] // batch["prompt_inputs"].shape[0]
    copy = lambda x: jnp.repeat(x, group, axis=0)
    rows = {
        k: jnp.concatenate([copy(batch[f"prompt_{k}"]), batch[k]], axis=1) for k in ("inputs", "positions", "segments")
    }
    hidden, _ = model.hidden_states(rows["inputs"], rows["positions"], rows["segments"])
    hidden = hidden[:, batch["prompt_inputs"].shape[1] - 1 :]
    table = model.embed_tokens[...]
    return -token_cross_entropy(hidden, table, batch["targets"], model.config.final_logit_softcapping, vocab_tile)


def test_each_prompt_runs_once_for_its_group_with_the_same_logprobs_and_gradient():
    """The update's shared-prefix pass (each group's prompt once, its keys and values copied to its G
    completions) gives the log-probs and the adapters' gradient of the rows written out whole, on
    prompts of different lengths (left padding) and completions that end at different steps."""
    model = tiny_model()
    lora.add_adapters(model, lora.LoRASpec(rank=4, alpha=8.0), seed=0)
    cfg = bandit_config(max_new_tokens=6)
    prompts = [Prompt([2, 3, 4, 5, 6], "a", {}), Prompt([2, 9], "b", {})]
    rollout = sample_groups(Sampler(model, [EOS], PAD), prompts, cfg, jax.random.key(2), bandit_reward)
    lengths = np.array(rollout.lengths)
    lengths[:3] = [0, 2, 6]  # an immediate end, a short one, a truncated one
    rollout = dataclasses.replace(rollout, lengths=lengths)
    batch = jax.tree.map(jnp.asarray, update_batch(rollout, cfg, 16, PAD))
    assert batch["prompt_inputs"].shape == (2, 16) and batch["inputs"].shape == (16, 5)
    graphdef, params, frozen = lora.split_trainable(model)
    mask = batch["mask"]

    def loss(fn, params):
        logp = fn(nnx.merge(graphdef, params, frozen), batch, 8)
        return jnp.sum(logp * mask * batch["advantages"][:, None]), logp

    (_, shared), g_shared = jax.value_and_grad(lambda p: loss(completion_logprobs, p), has_aux=True)(params)
    (_, whole), g_whole = jax.value_and_grad(lambda p: loss(written_out_logprobs, p), has_aux=True)(params)
    np.testing.assert_allclose(
        np.asarray(shared)[np.asarray(mask) > 0], np.asarray(whole)[np.asarray(mask) > 0], atol=2e-5
    )
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5), g_shared, g_whole
    )
    assert max(float(jnp.abs(x).max()) for x in jax.tree.leaves(g_shared)) > 1e-4  # a gradient to compare


def test_the_same_key_gives_the_same_rollouts_and_weights():
    cfg = bandit_config(steps=2, mu=2)
    model_a, a = run_bandit(cfg)
    model_b, b = run_bandit(cfg)
    strip = lambda h: [{k: v for k, v in row.items() if "per_second" not in k} for row in h]
    assert strip(a.history) == strip(b.history)
    same = jax.tree.map(lambda x, y: np.array_equal(np.asarray(x), np.asarray(y)), a.params, b.params)
    assert all(jax.tree.leaves(same))
    _, c = run_bandit(bandit_config(steps=2, mu=2, seed=1))
    assert strip(c.history) != strip(a.history)  # another seed samples otherwise


def test_sampling_with_one_key_is_reproducible_and_keys_differ():
    model, cfg = tiny_model(), bandit_config()
    sampler = Sampler(model, [EOS], PAD)
    one = sample_groups(sampler, PROMPTS[:4], cfg, jax.random.key(3), bandit_reward)
    two = sample_groups(sampler, PROMPTS[:4], cfg, jax.random.key(3), bandit_reward)
    other = sample_groups(sampler, PROMPTS[:4], cfg, jax.random.key(4), bandit_reward)
    assert np.array_equal(one.tokens, two.tokens) and not np.array_equal(one.tokens, other.tokens)


class Crash(Exception):
    pass


def test_a_crashed_run_resumes_bit_identical(tmp_path):
    """Checkpoint every step, crash after step 3 (of 4), resume: the weights equal an uninterrupted run's.
    Dynamic sampling makes the prompt position part of the state to restore."""
    cfg = bandit_config(steps=4, save_every=1, dynamic_sampling=True, beta=0.04)
    _, clean = run_bandit(cfg, checkpoint_dir=tmp_path / "clean")

    def crash(step, row):
        if step == 3:
            raise Crash

    with pytest.raises(Crash):
        run_bandit(cfg, checkpoint_dir=tmp_path / "run", on_log=crash)
    _, resumed = run_bandit(cfg, checkpoint_dir=tmp_path / "run")
    assert resumed.resumed_from == 2  # step 3's checkpoint is saved after its log
    same = jax.tree.map(lambda x, y: np.array_equal(np.asarray(x), np.asarray(y)), clean.params, resumed.params)
    assert all(jax.tree.leaves(same))
    strip = lambda h: [{k: v for k, v in row.items() if "per_second" not in k} for row in h]
    assert strip(resumed.history) == strip(clean.history)


def test_dynamic_sampling_keeps_groups_with_signal():
    def batch(rewards):
        p, g = rewards.shape
        return RolloutBatch(
            prompts=[PROMPTS[int(r[0] * 10) % 16] for r in rewards],
            tokens=np.arange(p * g * 2).reshape(p * g, 2),
            lengths=np.full(p * g, 2),
            truncated=np.zeros(p * g, bool),
            rewards=rewards,
            parts={"x": rewards},
        )

    first = batch(np.array([[1.0, 1.0], [0.0, 1.0], [0.0, 0.0]]))
    second = batch(np.array([[0.5, 0.0], [0.0, 0.0], [1.0, 0.25]]))
    chosen = select_groups([first, second], 3)
    np.testing.assert_array_equal(chosen.rewards, [[0.0, 1.0], [0.5, 0.0], [1.0, 0.25]])
    np.testing.assert_array_equal(chosen.tokens[:2], first.tokens[2:4])  # rows follow their group
    short = select_groups([first], 3)  # not enough signal: the rest fill in, in order
    np.testing.assert_array_equal(short.rewards, [[0.0, 1.0], [1.0, 1.0], [0.0, 0.0]])


def test_dynamic_sampling_counts_zero_variance_groups():
    _, result = run_bandit(bandit_config(steps=2, dynamic_sampling=True, max_refills=1, max_new_tokens=1))
    for row in result.history:
        assert 0.0 <= row["zero_variance_share"] <= 1.0
    assert any(row["zero_variance_share"] > 0 for row in result.history)  # one token: many groups agree


def test_a_non_finite_loss_stops_and_keeps_the_last_checkpoint(tmp_path):
    from training.loop import NonFiniteLoss

    cfg = bandit_config(steps=4, save_every=1)
    calls = []

    def poisoned_from_step_3(prompt, tokens, n, truncated):
        calls.append(1)
        per_step = cfg.prompts_per_step * cfg.group_size
        return (float("inf") if len(calls) > 2 * per_step else 0.5 * (len(calls) % 2)), {}

    with pytest.raises(NonFiniteLoss, match="at step 3; the last good checkpoint is kept"):
        grpo(
            tiny_model(),
            PROMPTS,
            poisoned_from_step_3,
            cfg,
            eos_ids=[EOS],
            pad_id=PAD,
            checkpoint_dir=tmp_path / "ckpt",
        )
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["1", "2"]  # nothing diverged was saved


# ---------------------------------------------------------------- the stage


def stage_repo(shared_base, dest, **grpo_params):
    """A copy of the bad-inputs base (seed, tokenizer, a random tiny model) with `grpo` params set."""
    shutil.copytree(shared_base, dest, symlinks=True)
    params = yaml.safe_load((dest / "params.yaml").read_text())
    params["grpo"].update(grpo_params)
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for name in ("data/policy", "dvclive/grpo", "data/grpo_checkpoints"):
        shutil.rmtree(dest / name, ignore_errors=True)
    return dest


def run_grpo_stage(repo, **kw) -> subprocess.CompletedProcess:
    from tests.test_bad_inputs import stage_env

    return subprocess.run(
        [sys.executable, "-m", "stages.grpo"],
        cwd=repo,
        env=stage_env(),
        capture_output=True,
        text=True,
        timeout=600,
        **kw,
    )


def files_under(path):
    return {p.relative_to(path).as_posix(): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def test_zero_steps_pass_the_sft_model_through_unchanged(shared_base, tmp_path):
    repo = stage_repo(shared_base, tmp_path / "repo", steps=0)
    proc = run_grpo_stage(repo)
    assert proc.returncode == 0, proc.stderr
    assert files_under(repo / "data/policy") == files_under(repo / "data/preferred") == files_under(repo / "data/model")
    assert json.loads((repo / "dvclive/grpo/metrics.json").read_text()) == {"steps": 0}


RL_LORA = {"rank": 4, "alpha": 8.0, "dropout": 0.0, "targets": ["q_proj", "v_proj"], "rslora": False}


def test_grpo_lora_trains_rl_adapters_on_a_fully_fine_tuned_model(shared_base, tmp_path):
    """`grpo.lora` puts fresh adapters on an SFT model trained without any (`model.lora.rank` 0): the policy
    is the merged model, and its RL adapter alone is saved in PEFT format, naming the SFT model its base."""
    repo = stage_repo(
        shared_base,
        tmp_path / "repo",
        steps=1,
        prompts_per_step=2,
        group_size=4,
        max_new_tokens=12,
        learning_rate=1e-2,
        dynamic_sampling=False,
        lora=RL_LORA,
        user_rewards={"length_reward:longer": 0.01},
    )
    (repo / "length_reward.py").write_text(LENGTH_REWARD)
    assert yaml.safe_load((repo / "params.yaml").read_text())["model"]["lora"]["rank"] == 0
    proc = run_grpo_stage(repo)
    assert proc.returncode == 0, proc.stderr[-3000:]
    adapter = json.loads((repo / "data/policy/adapter/adapter_config.json").read_text())
    assert adapter["r"] == 4 and sorted(adapter["target_modules"]) == ["q_proj", "v_proj"]
    assert adapter["base_model_name_or_path"] == "data/preferred"  # the preference stage's (here the SFT model)
    policy, sft = files_under(repo / "data/policy"), files_under(repo / "data/preferred")
    assert policy["model.safetensors"] != sft["model.safetensors"]  # the adapters moved and were merged in


def test_a_bad_grpo_lora_spec_is_one_line_naming_grpo_lora(shared_base, tmp_path):
    from stages.common import yaml_line
    from tests.test_bad_inputs import assert_one_line_error, snapshot

    repo = stage_repo(shared_base, tmp_path / "repo", steps=1, lora=dict(RL_LORA, rank=300))
    before = snapshot(repo)
    proc = run_grpo_stage(repo)
    line = yaml_line((repo / "params.yaml").read_text(), ["grpo", "lora", "rank"])
    assert_one_line_error(proc, "params.yaml", line, "grpo.lora.rank", "300 is larger than")
    assert snapshot(repo) == before


KILL_PARAMS = dict(
    steps=4,
    save_every=1,
    prompts_per_step=2,
    group_size=4,
    max_new_tokens=16,
    temperature=1.0,
    learning_rate=1e-3,
    beta=0.04,
    dynamic_sampling=False,
)  # a random model: no group has signal


@pytest.mark.slow
def test_killed_grpo_resumes_bit_identical(shared_base, tmp_path):
    from tests.test_faults import kill_when, start

    reference = stage_repo(shared_base, tmp_path / "reference", **KILL_PARAMS)
    proc = run_grpo_stage(reference)
    assert proc.returncode == 0, proc.stderr[-3000:]
    info = read_json(reference / paths.GRPO_INFO, "grpo_info")  # what evidence reads, by its schema
    assert info["steps"] == 4 and len(info["history"]) == 4
    assert info["sft_model"]["sha256"] and set(info["reward_curve"]) >= {"first", "last"}

    repo = stage_repo(shared_base, tmp_path / "repo", **KILL_PARAMS)
    ckpt = repo / "data/grpo_checkpoints"
    saved = lambda: sorted(int(p.name) for p in ckpt.iterdir() if p.name.isdigit()) if ckpt.is_dir() else []
    log = tmp_path / "killed.log"
    killed = start([sys.executable, "-m", "stages.grpo"], repo, log)
    kill_when(killed, lambda: bool(saved()), log)
    assert saved() and max(saved()) < 4 and not (repo / "data/policy").exists()

    proc = run_grpo_stage(repo)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "grpo: resumed from the checkpoint of step" in proc.stdout
    assert files_under(repo / "data/policy") == files_under(reference / "data/policy")  # weights and curve
    assert saved() == []  # a finished run leaves nothing to resume


# ---------------------------------------------------------------- the real pipeline

RL_PARAMS = dict(
    steps=2,
    prompts_per_step=2,
    group_size=4,
    max_new_tokens=24,
    temperature=1.0,
    learning_rate=1e-3,
    beta=0.04,
    save_every=1,
    dynamic_sampling=False,
    user_rewards={"length_reward:longer": 0.01},
)
LENGTH_REWARD = '''
def longer(prompt, completion, **fields):
    """A reward that differs within a group even for an untrained model: more signal for the test."""
    return float(len(completion))
'''


def rl_repo(tmp_path, params: dict):
    from tests.pipeline_utils import make_repo

    repo = make_repo(tmp_path / "repo", params)
    (repo / "length_reward.py").write_text(LENGTH_REWARD)
    run_git = lambda *a: subprocess.run(["git", *a], cwd=repo, check=True, capture_output=True)
    run_git("add", "length_reward.py")
    run_git("commit", "-qm", "a user reward")
    return repo


@pytest.mark.slow
def test_dvc_exp_run_with_another_beta_reruns_grpo_and_what_follows_only(tmp_path):
    from tests.pipeline_utils import SMALL_PARAMS, run

    repo = rl_repo(tmp_path, {**SMALL_PARAMS, "grpo": RL_PARAMS})
    run(["dvc", "repro"], repo)
    info = json.loads((repo / "data/policy/grpo_info.json").read_text())
    assert info["steps"] == 2 and set(info["history"][0]) >= {"reward_mean", "reward/length_reward:longer", "kl"}
    assert (repo / "data/policy/model.safetensors").read_bytes() != (repo / "data/model/model.safetensors").read_bytes()
    plots = run(["dvc", "plots", "show", "--json"], repo).stdout
    assert "dvclive/grpo/plots/metrics/reward_mean.tsv" in plots and "clip_fraction.tsv" in plots
    manifest = json.loads((repo / "submission_runs/v1/run_manifest.json").read_text())
    assert manifest["rl"]["steps"] == 2 and manifest["rl"]["sft_model_sha256"] == info["sft_model"]["sha256"]

    out = run(["dvc", "exp", "run", "-S", "grpo.beta=0.0"], repo).stdout
    ran = {name.split("@")[0] for name in re.findall(r"Running stage '([^']+)'", out)}  # predict@tunix -> predict
    # predict follows the new policy; evaluate and on re-run when their inputs changed (dvc's own rule)
    assert {"grpo", "predict"} <= ran and not ran & {"seed", "tokenizer", "train"}, out[-3000:]
    assert "Stage 'train' didn't change, skipping" in out
    info = json.loads((repo / "data/policy/grpo_info.json").read_text())
    assert info["params"]["beta"] == 0.0 and "kl" not in info["history"][0]  # no reference was loaded
