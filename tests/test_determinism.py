"""Same bytes on AVX-512 and AVX2 CPUs: training under different instruction-set caps writes the same weights.

Each run is a fresh process (XLA reads its flags once) under `--xla_cpu_max_isa`: a cap makes
this machine generate the code a CPU with only those instructions would get. XLA's whole-array
sums group their partial sums by the vector width, so the trainer adds its scalar sums (the loss,
the gradient norm that clipping divides by) in a fixed order of its own (`fixed_order_sum`).
"""

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from training.trainer import fixed_order_sum, global_norm

ROOT = Path(__file__).resolve().parent.parent
TRAIN = """
import hashlib
import jax, numpy as np
from flax import nnx
from training.config import tiny
from training.data import BatchStream, Example, pack
from training.model import Gemma
from training.trainer import TrainConfig, train

rng = np.random.default_rng(0)
examples = [Example(rng.integers(4, 256, 60).astype(np.int32), np.arange(60) >= 20) for _ in range(64)]
cfg = TrainConfig(steps=6, batch_size=4, seq_len=64, learning_rate=3e-3, warmup_steps=1, log_every=1, grad_clip=0.5)
model = Gemma(tiny(256, num_hidden_layers=2), rngs=nnx.Rngs(params=0))
result = train(model, BatchStream(pack(examples, 64), 4, seed=0), cfg)
digest = hashlib.sha256()
for leaf in jax.tree.leaves(result.params):
    digest.update(np.asarray(leaf).tobytes())
print(digest.hexdigest(), *[float(loss).hex() for _, loss in result.loss_history])
"""
SUMS = """
import jax, jax.numpy as jnp, numpy as np
from training.trainer import fixed_order_sum
x = jnp.asarray(np.random.default_rng(0).standard_normal((8, 256)).astype(np.float32) * 3)
print(float(jax.jit(jnp.sum)(x)).hex(), float(jax.jit(fixed_order_sum)(x)).hex())
"""


def under_cap(code: str, cap: str | None) -> list[str]:
    """What `code` prints in a fresh process, its CPU code generated for `cap` (None: the host's own)."""
    env = {**os.environ, "XLA_FLAGS": f"--xla_cpu_max_isa={cap}" if cap else "", "JAX_PLATFORMS": "cpu"}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.split()


def host_has(feature: str) -> bool:
    cpuinfo = Path("/proc/cpuinfo")
    return cpuinfo.exists() and feature in cpuinfo.read_text().split()


def test_fixed_order_sum_is_the_sum():
    rng = np.random.default_rng(1)
    for shape in [(), (1,), (7,), (8, 256), (3, 5, 11)]:
        x = rng.standard_normal(shape).astype(np.float32)
        assert math.isclose(
            float(fixed_order_sum(x)), math.fsum(x.reshape(-1).astype(float)), rel_tol=1e-5, abs_tol=1e-5
        )
    tree = {"a": rng.standard_normal((4, 6)).astype(np.float32), "b": [rng.standard_normal(9).astype(np.float32)]}
    expected = math.sqrt(sum(float((leaf.astype(float) ** 2).sum()) for leaf in (tree["a"], tree["b"][0])))
    assert math.isclose(float(global_norm(tree)), expected, rel_tol=1e-5)


@pytest.mark.skipif(not host_has("avx512f"), reason="needs a CPU with AVX-512 to compare it with AVX2")
def test_xla_sums_differ_between_avx512_and_avx2_and_the_fixed_order_sum_does_not():
    """Why the trainer has its own sum: XLA's rounds differently under the two caps, ours the same."""
    (xla_512, ours_512), (xla_2, ours_2) = under_cap(SUMS, "AVX512"), under_cap(SUMS, "AVX2")
    assert xla_512 != xla_2
    assert ours_512 == ours_2


@pytest.mark.skipif(not host_has("avx2"), reason="needs an x86 CPU with AVX2")
def test_training_writes_the_same_weights_and_losses_under_every_cap_with_avx2():
    caps = [None, "AVX2"] + (["AVX512"] if host_has("avx512f") else [])
    runs = {cap: under_cap(TRAIN, cap) for cap in caps}
    assert len({tuple(run) for run in runs.values()}) == 1, runs
