"""x @ kernel with a weight gradient that XLA:CPU computes without a slow fused transpose."""

from __future__ import annotations

import jax
import jax.numpy as jnp


@jax.custom_vjp
def matmul(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """x @ kernel; the weight gradient's operands pass an optimization barrier.

    The weight gradient xᵀ·g contracts over tokens, so XLA:CPU transposes one operand first, and it
    fuses that transposed copy into the elementwise fusion that computes the operand (a norm's
    backward, say), where its strided writes run far slower than the same fusion followed by a
    separate transpose. Keeping them apart changes no bit of the result
    (docs/results/2026-12-03-performance-log.md has what it bought).
    """
    return jnp.dot(x, kernel)


def _matmul_fwd(x: jax.Array, kernel: jax.Array) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
    return jnp.dot(x, kernel), (x, kernel)


def _matmul_bwd(res: tuple[jax.Array, jax.Array], g: jax.Array) -> tuple[jax.Array, jax.Array]:
    x, kernel = res
    # Behind the barrier the transposed copy of x or g is a transpose of its own, outside the
    # fusion that computed the operand.
    rows, grads = jax.lax.optimization_barrier((x.reshape(-1, x.shape[-1]), g.reshape(-1, g.shape[-1])))
    return jnp.dot(g, kernel.T), jnp.dot(rows.T, grads)


matmul.defvjp(_matmul_fwd, _matmul_bwd)
