"""The vocabulary-tiled cross-entropy: the untiled loss and gradients, without the whole logits."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from training.lm_head import token_cross_entropy


def untiled(hidden, table, targets, cap):
    logits = jnp.einsum("btd,vd->btv", hidden, table, preferred_element_type=jnp.float32)
    if cap is not None:
        logits = cap * jnp.tanh(logits / cap)
    return optax.softmax_cross_entropy_with_integer_labels(logits, targets)


@pytest.mark.parametrize(
    ("vocab", "tile", "cap"),
    [(1000, 4096, None), (1000, 256, None), (777, 128, 5.0), (1024, 1024, 30.0)],
    ids=["one tile", "4 tiles, last padded", "softcap, 7 tiles", "softcap, one exact tile"],
)
def test_loss_and_gradients_equal_the_untiled_cross_entropy(vocab, tile, cap):
    rng = np.random.default_rng(0)
    hidden = jnp.asarray(rng.normal(size=(3, 5, 16)), jnp.float32)
    table = jnp.asarray(rng.normal(size=(vocab, 16)), jnp.float32)
    targets = jnp.asarray(rng.integers(0, vocab, (3, 5)))
    weights = jnp.asarray(rng.normal(size=(3, 5)), jnp.float32)  # a cotangent that is not all ones

    def weighted(fn):
        return jax.value_and_grad(lambda h, w: jnp.sum(fn(h, w) * weights), (0, 1))(hidden, table)

    ours, (d_hidden, d_table) = weighted(lambda h, w: token_cross_entropy(h, w, targets, cap, tile))
    theirs, (want_hidden, want_table) = weighted(lambda h, w: untiled(h, w, targets, cap))
    np.testing.assert_allclose(
        token_cross_entropy(hidden, table, targets, cap, tile), untiled(hidden, table, targets, cap), atol=1e-5
    )
    np.testing.assert_allclose(ours, theirs, rtol=1e-5)
    np.testing.assert_allclose(d_hidden, want_hidden, atol=1e-5)
    np.testing.assert_allclose(d_table, want_table, atol=1e-5)


def test_whole_logits_never_exist_forward_or_backward():
    """2,048 tokens over a 65,536-row vocabulary: whole float32 logits are 512 MiB; the compiled
    loss-and-gradient step holds a few [tokens, 4,096] tiles (32 MiB each) at a time."""
    tokens, vocab, dim, tile = 2048, 65536, 64, 4096
    hidden = jax.ShapeDtypeStruct((tokens, dim), jnp.float32)
    table = jax.ShapeDtypeStruct((vocab, dim), jnp.float32)
    targets = jax.ShapeDtypeStruct((tokens,), jnp.int32)
    step = jax.jit(jax.grad(lambda h, w, y: token_cross_entropy(h, w, y, None, tile).sum(), (0, 1)))
    temporaries = step.lower(hidden, table, targets).compile().memory_analysis().temp_size_in_bytes
    whole_logits = tokens * vocab * 4
    assert temporaries < whole_logits / 4, f"{temporaries / 2**20:.0f} MiB of temporaries"


@pytest.mark.parametrize(("vocab", "tile", "cap"), [(1000, 256, None), (777, 128, 5.0)], ids=["4 tiles", "softcap"])
def test_a_frozen_table_takes_the_one_pass_rule_with_the_same_gradient(vocab, tile, cap):
    """LoRA: the table is not differentiated, and the hidden states' gradient is accumulated in the
    forward walk over the tiles; it equals the untiled cross-entropy's."""
    rng = np.random.default_rng(1)
    hidden = jnp.asarray(rng.normal(size=(3, 5, 16)), jnp.float32)
    table = jnp.asarray(rng.normal(size=(vocab, 16)), jnp.float32)
    targets = jnp.asarray(rng.integers(0, vocab, (3, 5)))
    weights = jnp.asarray(rng.normal(size=(3, 5)), jnp.float32)

    def weighted(fn):
        return jax.value_and_grad(lambda h: jnp.sum(fn(h) * weights))(hidden)

    ours, d_hidden = weighted(lambda h: token_cross_entropy(h, table, targets, cap, tile))
    theirs, want = weighted(lambda h: untiled(h, table, targets, cap))
    np.testing.assert_allclose(ours, theirs, rtol=1e-5)
    np.testing.assert_allclose(d_hidden, want, atol=1e-5)
