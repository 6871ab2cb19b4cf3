"""The trainer: sharded runs, accumulation and optimizers agree with a plain single-device run."""

import jax
import numpy as np
import pytest
from flax import nnx

from training.data import BatchStream, Example, pack
from training.model import Gemma
from training.trainer import TrainConfig, train


def stream(seed=0):
    rng = np.random.default_rng(seed)
    examples = []
    for _ in range(64):
        n = int(rng.integers(8, 24))
        tokens = rng.integers(1, 64, n).astype(np.int32)
        tokens[n // 2 :] = (tokens[: n - n // 2] + 1) % 64  # a learnable copy task
        mask = np.zeros(n, bool)
        mask[n // 2 :] = True
        examples.append(Example(tokens, mask))
    return BatchStream(pack(examples, seq_len=32), batch_size=8, seed=seed)


def run(model_cfg, **overrides):
    cfg = TrainConfig(steps=6, batch_size=8, seq_len=32, learning_rate=3e-3, warmup_steps=2, log_every=1, **overrides)
    model = Gemma(model_cfg, rngs=nnx.Rngs(0))
    result = train(model, stream(), cfg)
    return np.array([loss for _, loss in result.loss_history]), result.params


def test_eight_virtual_devices_are_visible():
    assert jax.device_count() == 8  # conftest sets --xla_force_host_platform_device_count=8


@pytest.mark.parametrize("mesh", [dict(mesh_data=8), dict(mesh_fsdp=8), dict(mesh_data=2, mesh_fsdp=4)])
def test_sharded_training_matches_one_device(mesh, tiny_config):
    single, p1 = run(tiny_config)
    sharded, p2 = run(tiny_config, **mesh)
    assert single[-1] < single[0]
    np.testing.assert_allclose(sharded, single, rtol=2e-5)
    for a, b in zip(jax.tree.leaves(p1), jax.tree.leaves(p2)):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), atol=2e-5)


def test_fsdp_shards_parameters(tiny_config):
    _, params = run(tiny_config, mesh_fsdp=8)
    sharded = [
        x for x in jax.tree.leaves(params) if len(x.sharding.device_set) == 8 and not x.sharding.is_fully_replicated
    ]
    assert sharded, "no parameter was split across the fsdp axis"


def test_gradient_accumulation_matches_the_full_batch(tiny_config):
    full, _ = run(tiny_config)
    accumulated, _ = run(tiny_config, grad_accum=4)
    np.testing.assert_allclose(accumulated, full, rtol=2e-5)


def test_adafactor_learns(tiny_config):
    losses, _ = run(tiny_config, optimizer="adafactor")
    assert losses[-1] < losses[0]
