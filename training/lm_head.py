"""Per-token cross-entropy of the tied LM head, tiled over the vocabulary.

Gemma's 262k vocabulary makes the `[tokens, vocab]` float32 logits the largest
tensor of a step (4,096 tokens: 4 GiB, and autodiff keeps several of its kind).
Here they never exist whole, forward or backward: the forward pass walks the
vocabulary a tile at a time, keeping a running max, sum of exponentials and the
target's logit per token (an online log-sum-exp); the backward pass recomputes
each tile's logits (a vocabulary of one tile keeps them from the forward pass
instead) and turns them straight into the tile's gradients, `softmax - onehot`,
against the hidden states and the embedding rows. Peak memory holds one
`[tokens, tile]` block; the result equals the untiled cross-entropy up to
float rounding.

A frozen table (LoRA: the base's embedding gets no gradient) needs no second
pass: the forward pass also accumulates the gradient against the hidden states,
Σ softmax · row, in the same online way (rescaled whenever the running max
grows, as attention accumulates its values), so each tile's logits are computed
once, not twice. Whether the table is differentiated is known when the forward
rule is traced (`symbolic_zeros`); a trained table keeps the two-pass rule
above, bit for bit.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from training.attention import softcap


def token_cross_entropy(
    hidden: jax.Array, table: jax.Array, targets: jax.Array, cap: float | None, tile: int
) -> jax.Array:
    """−log softmax(softcap(hidden @ tableᵀ))[target] per token: hidden [..., D], table [V, D], targets [...]."""
    lead = hidden.shape[:-1]
    losses = _cross_entropy(hidden.reshape(-1, hidden.shape[-1]), table, targets.reshape(-1), cap, tile)
    return losses.reshape(lead)


def _tiles(table: jax.Array, tile: int) -> tuple[jax.Array, int]:
    """The table as [n, tile, D] (zero rows pad the last tile) and the vocabulary size."""
    vocab, dim = table.shape
    tile = min(tile, vocab)
    n = -(-vocab // tile)
    padded = jnp.pad(table, ((0, n * tile - vocab), (0, 0)))
    return padded.reshape(n, tile, dim), vocab


def _tile_logits(hidden: jax.Array, rows: jax.Array, cap: float | None) -> jax.Array:
    """Soft-capped float32 logits of one tile [N, tile]."""
    return softcap(jnp.einsum("nd,vd->nv", hidden, rows, preferred_element_type=jnp.float32), cap)


def _columns(index: jax.Array, size: int, vocab: int) -> tuple[jax.Array, jax.Array]:
    """The vocabulary ids of tile `index`'s columns, and which of them are real (not padding)."""
    columns = index * size + jnp.arange(size)
    return columns, columns < vocab


def _scan(step, start, tiles: jax.Array):
    """`lax.scan` of step over (tile index, tile); a single tile is one plain call (no loop to run)."""
    if tiles.shape[0] == 1:
        carry, out = step(start, (jnp.int32(0), tiles[0]))
        return carry, None if out is None else out[None]
    return jax.lax.scan(step, start, (jnp.arange(tiles.shape[0]), tiles))


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def _cross_entropy(hidden, table, targets, cap, tile):
    return _forward(hidden, table, targets, cap, tile)[0]


def _forward_rule(hidden, table, targets, cap, tile):
    """`symbolic_zeros` hands each input with whether it is differentiated: a frozen table takes the
    one-pass rule, a trained one the two-pass rule."""
    if table.perturbed:
        return _forward(hidden.value, table.value, targets.value, cap, tile)
    return _forward_frozen_table(hidden.value, table.value, targets.value, cap, tile)


def _forward_frozen_table(hidden, table, targets, cap, tile):
    """The loss and, for a unit cotangent, its gradient against `hidden` in one walk over the tiles:
    d loss / d hidden = Σ_v softmax_v · c_v · row_v − c_target · row_target (c: the soft-cap's slope)."""
    tiles, vocab = _tiles(table, tile)
    n_tokens = hidden.shape[0]
    slope = (lambda logits: 1.0 - jnp.square(logits / cap)) if cap is not None else jnp.ones_like

    def step(carry, xs):
        run_max, run_sum, target_logit, acc = carry
        index, rows = xs
        columns, real = _columns(index, rows.shape[0], vocab)
        raw = _tile_logits(hidden, rows, cap)
        logits = jnp.where(real, raw, -jnp.inf)
        new_max = jnp.maximum(run_max, jnp.max(logits, axis=-1))
        rescale = jnp.exp(run_max - new_max)
        e = jnp.exp(logits - new_max[:, None])
        run_sum = run_sum * rescale + jnp.sum(e, axis=-1)
        target_logit += jnp.sum(jnp.where(columns == targets[:, None], logits, 0.0), axis=-1)
        weights = jnp.where(real, e * slope(raw), 0.0).astype(hidden.dtype)
        acc = acc * rescale[:, None] + jnp.einsum("nv,vd->nd", weights, rows, preferred_element_type=jnp.float32)
        return (new_max, run_sum, target_logit, acc), None

    start = (
        jnp.full((n_tokens,), -jnp.inf),
        jnp.zeros((n_tokens,)),
        jnp.zeros((n_tokens,)),
        jnp.zeros(hidden.shape, jnp.float32),
    )
    (run_max, run_sum, target_logit, acc), _ = _scan(step, start, tiles)
    log_normalizer = run_max + jnp.log(run_sum)
    target_rows = jnp.take(table, targets, axis=0).astype(jnp.float32)
    grad_unit = acc / run_sum[:, None] - slope(target_logit)[..., None] * target_rows
    return log_normalizer - target_logit, (grad_unit, jnp.zeros((0,), hidden.dtype))  # the second: hidden's dtype


def _forward(hidden, table, targets, cap, tile):
    tiles, vocab = _tiles(table, tile)
    n_tokens = hidden.shape[0]

    def step(carry, xs):
        run_max, run_sum, target_logit = carry
        index, rows = xs
        columns, real = _columns(index, rows.shape[0], vocab)
        logits = jnp.where(real, _tile_logits(hidden, rows, cap), -jnp.inf)
        new_max = jnp.maximum(run_max, jnp.max(logits, axis=-1))
        run_sum = run_sum * jnp.exp(run_max - new_max) + jnp.sum(jnp.exp(logits - new_max[:, None]), axis=-1)
        target_logit += jnp.sum(jnp.where(columns == targets[:, None], logits, 0.0), axis=-1)
        return (new_max, run_sum, target_logit), None

    start = (jnp.full((n_tokens,), -jnp.inf), jnp.zeros((n_tokens,)), jnp.zeros((n_tokens,)))
    (run_max, run_sum, target_logit), _ = _scan(step, start, tiles)
    log_normalizer = run_max + jnp.log(run_sum)
    # One tile: its logits are no larger than a tile's working set, so they are kept, not recomputed.
    kept = _tile_logits(hidden, tiles[0], cap) if tiles.shape[0] == 1 else None
    return log_normalizer - target_logit, (hidden, table, targets, log_normalizer, kept)


def _backward(cap, tile, residuals, grad):
    if len(residuals) == 2:  # a frozen table: the forward pass computed the gradient for a unit cotangent
        grad_unit, like = residuals
        if isinstance(grad, jax.custom_derivatives.SymbolicZero):
            grad = jnp.zeros(grad_unit.shape[:1], jnp.float32)
        return (grad[:, None] * grad_unit).astype(like.dtype), None, None
    hidden, table, targets, log_normalizer, kept = residuals
    tiles, vocab = _tiles(table, tile)

    def step(grad_hidden, xs):
        index, rows = xs
        columns, real = _columns(index, rows.shape[0], vocab)
        logits = _tile_logits(hidden, rows, cap) if kept is None else kept
        probs = jnp.where(real, jnp.exp(logits - log_normalizer[:, None]), 0.0)
        grad_logits = (probs - (columns == targets[:, None])) * grad[:, None]
        if cap is not None:  # d(cap·tanh(x/cap))/dx = 1 − tanh², and tanh = logits / cap
            grad_logits *= 1.0 - jnp.square(logits / cap)
        grad_logits = grad_logits.astype(hidden.dtype)
        grad_hidden += jnp.einsum("nv,vd->nd", grad_logits, rows, preferred_element_type=jnp.float32)
        grad_rows = jnp.einsum("nv,nd->vd", grad_logits, hidden, preferred_element_type=jnp.float32)
        return grad_hidden, grad_rows.astype(table.dtype)

    start = jnp.zeros(hidden.shape, jnp.float32)
    grad_hidden, grad_tiles = _scan(step, start, tiles)
    grad_table = grad_tiles.reshape(-1, table.shape[1])[:vocab]
    return grad_hidden.astype(hidden.dtype), grad_table, None


_cross_entropy.defvjp(_forward_rule, _backward, symbolic_zeros=True)
