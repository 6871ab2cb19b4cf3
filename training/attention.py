"""Masked softmax attention over (query, group) rows, with a flash-attention-style backward."""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

_NEG = -2.3819763e38  # a large finite negative: fully masked rows stay NaN-free


def softcap(x: jax.Array, cap: float | None) -> jax.Array:
    return x if cap is None else cap * jnp.tanh(x / cap)


@partial(jax.custom_vjp, nondiff_argnums=(4,))
def attend(q: jax.Array, kt: jax.Array, v: jax.Array, mask: jax.Array, cap: float | None) -> jax.Array:
    """softmax(mask(softcap(q·kᵀ))) · v for each KV head; returns [B, K, T·G, hd].

    q: [B, K, T·G, hd], the queries of a KV head's G heads as rows (query-major, already scaled);
    kt: keys as [B, K, hd, S]; v: [B, K, S, hd]; mask: [B, T, S], True where a query sees a key.
    Logits and weights are float32; the weighted sum runs in v's dtype.
    """
    return _forward(q, kt, v, mask, cap)[0]


def _masked_softmax(logits: jax.Array, mask: jax.Array, cap: float | None) -> tuple[jax.Array, jax.Array]:
    """Weights [B, K, T·G, S] of float32 logits [B, K, T·G, S] under mask [B, T, S], and the capped logits
    as [B, K, T, G, S] (the backward's input)."""
    b, heads, rows, s = logits.shape
    t = mask.shape[1]
    capped = softcap(logits, cap).reshape(b, heads, t, rows // t, s)
    probs = jax.nn.softmax(jnp.where(mask[:, None, :, None], capped, _NEG), axis=-1).reshape(b, heads, rows, s)
    return probs, capped


def _forward(q, kt, v, mask, cap):
    logits = jnp.einsum("bkrh,bkhs->bkrs", q, kt, preferred_element_type=jnp.float32)
    probs, capped = _masked_softmax(logits, mask, cap)
    out = jnp.einsum("bkrs,bksh->bkrh", probs.astype(v.dtype), v)
    return out, (q, kt, v, mask, probs, out, None if cap is None else capped)


def _attend_bwd(cap, res, d_out):
    """The flash-attention backward. With P the weights and O = P·V, the logits' gradient is
    P ∘ (dP − rowsum(dO ∘ O)): a sum over head_dim where autodiff of softmax sums dP ∘ P over keys."""
    q, kt, v, mask, probs, out, capped = res
    d_v = jnp.einsum("bkrs,bkrh->bksh", probs.astype(d_out.dtype), d_out)
    d_probs = jnp.einsum("bkrh,bksh->bkrs", d_out, v, preferred_element_type=jnp.float32)
    row_dot = jnp.sum(d_out.astype(jnp.float32) * out.astype(jnp.float32), axis=-1, keepdims=True)
    b, heads, rows, s = probs.shape
    t = mask.shape[1]
    d_logits = (probs * (d_probs - row_dot)).reshape(b, heads, t, rows // t, s)
    d_logits = jnp.where(mask[:, None, :, None], d_logits, 0.0)  # as autodiff: a fully masked row passes nothing
    if cap is not None:
        d_logits = d_logits * (1.0 - jnp.square(capped / cap))
    d_logits = d_logits.reshape(b, heads, rows, s).astype(q.dtype)
    return jnp.einsum("bkrs,bkhs->bkrh", d_logits, kt), jnp.einsum("bkrh,bkrs->bkhs", q, d_logits), d_v, None


attend.defvjp(_forward, _attend_bwd)


def attend_beside_cache(
    q: jax.Array,
    cache_kt: jax.Array,
    cache_v: jax.Array,
    cache_mask: jax.Array,
    kt: jax.Array,
    v: jax.Array,
    self_mask: jax.Array,
    cap: float | None,
) -> jax.Array:
    """`attend` over a cache's keys and values and this call's own, as if the latter were written in (decoding).

    Read apart, the cache is only read before the call writes its new key into it: a product that reads
    the written cache is a second consumer of the write, and XLA then copies the whole cache (every
    layer's, every step) to keep the write in place. One softmax runs over both sets of logits.
    cache_mask [B, T, S] must hide the slot being written; self_mask [B, T, T] is this call's own.
    """
    s = cache_mask.shape[2]
    logits = jnp.concatenate(
        [
            jnp.einsum("bkrh,bkhs->bkrs", q, cache_kt, preferred_element_type=jnp.float32),
            jnp.einsum("bkrh,bkhs->bkrs", q, kt, preferred_element_type=jnp.float32),
        ],
        axis=-1,
    )
    probs = _masked_softmax(logits, jnp.concatenate([cache_mask, self_mask], axis=-1), cap)[0].astype(v.dtype)
    return jnp.einsum("bkrs,bksh->bkrh", probs[..., :s], cache_v.astype(v.dtype)) + jnp.einsum(
        "bkrs,bksh->bkrh", probs[..., s:], v
    )
