"""x @ kernel with a weight gradient that XLA:CPU computes without a slow fused transpose."""

from __future__ import annotations

import jax
import jax.numpy as jnp


@jax.custom_vjp
def matmul(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """x @ kernel, its weight gradient through `contract_rows`.

    The weight gradient xᵀ·g contracts over tokens, so XLA:CPU transposes one operand first, and it
    fuses that transposed copy into the elementwise fusion that computes the operand (a norm's
    backward, say), where the strided writes run ~10x slower than the same fusion followed by a
    separate transpose. Keeping them apart: +11 % on the tiny training step, the same bits
    (README "Benchmarks").
    """
    return jnp.dot(x, kernel)


def _matmul_fwd(x: jax.Array, kernel: jax.Array) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
    return jnp.dot(x, kernel), (x, kernel)


def _matmul_bwd(res: tuple[jax.Array, jax.Array], g: jax.Array) -> tuple[jax.Array, jax.Array]:
    x, kernel = res
    return jnp.dot(g, kernel.T), contract_rows(x, g)


def contract_rows(a: jax.Array, b: jax.Array, preferred_element_type: jnp.dtype | None = None) -> jax.Array:
    """aᵀ·b summed over every leading (token) axis: a [..., M], b [..., N] -> [M, N].

    The operands pass an optimization barrier, so the transposed copy XLA:CPU makes of one of them
    is a transpose of its own, not part of the fusion that computed it.
    """
    a, b = jax.lax.optimization_barrier((a.reshape(-1, a.shape[-1]), b.reshape(-1, b.shape[-1])))
    return jnp.dot(a.T, b, preferred_element_type=preferred_element_type)


matmul.defvjp(_matmul_fwd, _matmul_bwd)
