"""Decoding tuned for XLA:CPU: every choice the sampler makes for the CPU's sake, and its thresholds.

The sampler's loop (training/sampler.py) is generic: it decodes the rows it is given on the devices it
is given, with the LM head and the compaction levels it is given. What those are is decided here:

- `configure_host_cpu`: XLA:CPU's flags (several host devices, in-place cache writes), set before JAX
  starts its backend;
- `default_devices`: a small model's rows split over the host's devices, each share in a loop of its own;
- `lm_head`: at a wide vocabulary (`WIDE_VOCAB`) the head as table @ rowsᵀ, [V, B], in bfloat16 when
  asked and the rows are enough for it (`MIN_BF16_HEAD_ROWS`);
- `argmax_head`: greedy decoding of many rows (`MIN_ARGMAX_HEAD_ROWS`) at a wide vocabulary finds each
  row's token without writing the [V, B] logits out;
- `compaction_sizes`: at a wide vocabulary a device's rows halved as they end (down to `MIN_COMPACT_ROWS`).

Below `WIDE_VOCAB` (the tiny default) the sampler decodes with the model's own head and one level, bit for
bit as the model computes.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import jax
import jax.numpy as jnp

from training.attention import softcap
from training.model import Gemma

# At this vocabulary or above the tied LM head is most of a decode step's work, and XLA:CPU runs the
# product of a few rows against the table faster as table @ rowsᵀ (the vocabulary as the long side of
# the GEMM, which its kernels split over threads) than as rows @ tableᵀ. Smaller vocabularies (the tiny
# default) keep the model's own head, bit for bit.
WIDE_VOCAB = 32_768
# A bfloat16 head (`head_dtype`) is used only from this many rows a device: XLA:CPU's bfloat16 product
# of one or two rows against the table runs far slower than the float32 one.
MIN_BF16_HEAD_ROWS = 8
# Greedy decoding of this many rows a device or more takes its tokens from `argmax_head`.
MIN_ARGMAX_HEAD_ROWS = 64
# Vocabulary rows of an `argmax_head` block: the product keeps one maximum per block and row.
ARGMAX_BLOCK = 128
# Decoding halves a device's rows down to this many (`compaction_sizes`): below it a step streams the
# weights for a few rows whatever their number, and each level is one more loop to compile.
MIN_COMPACT_ROWS = 4


def configure_host_cpu(devices: int = 2) -> None:
    """Set up XLA:CPU for decoding; call it before JAX starts its backend, as the stages do.

    - The CPU is exposed as `devices` XLA devices for the sampler to decode that many shares of a
      small model's batch at once: a decode step's ops are too small for XLA:CPU to spread over cores,
      so one program keeps about one core busy; two halves of a batch in two loops use both
      (docs/results/2026-12-03-performance-log.md). A device count already set in XLA_FLAGS is kept,
      and a mesh of one device (training's default) runs as before.
    - Copy insertion by region analysis: without it XLA:CPU copies every layer's KV cache on every
      decode step (twice) rather than prove that the step's write may go in place.
    """
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_force_host_platform_device_count" not in flags:
        jax.config.update("jax_num_cpu_devices", devices)
    if "xla_cpu_copy_insertion_use_region_analysis" not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} --xla_cpu_copy_insertion_use_region_analysis=true".strip()


def default_devices(vocab_size: int) -> list[jax.Device]:
    """The devices a Sampler splits rows over by default: every CPU device at a small vocabulary, else none.

    A small model's decode step is many small ops that one program runs on about one core, so two
    shares in two loops use both. At a wide vocabulary the step is a few large products (the LM head
    against the whole table first) that one program already spreads over the cores, while each share
    would stream its own copy of the weights: one program is as fast at many rows, faster at few
    (where the weights' bytes bound a step), and holds one copy (docs/results/2026-12-04-grpo-step-speed.md).
    """
    if jax.default_backend() != "cpu" or vocab_size >= WIDE_VOCAB:
        return []
    return jax.local_devices(backend="cpu")


def compaction_sizes(batch: int, vocab_size: int) -> list[int]:
    """Rows a device decodes at each level: the batch, then halves (each down to `MIN_COMPACT_ROWS`),
    entered when no more rows than the half still run, those gathered first. At a wide vocabulary
    a row's own products (most of all the LM head's) are most of a step, so a finished row that goes
    on decoding costs as much as a running one; a small vocabulary keeps one level, bit for bit."""
    sizes = [batch]
    while vocab_size >= WIDE_VOCAB and sizes[-1] % 2 == 0 and sizes[-1] // 2 >= MIN_COMPACT_ROWS:
        sizes.append(sizes[-1] // 2)
    return sizes


def lm_head(model: Gemma, batch: int, head_dtype: str | None) -> Callable[[jax.Array], jax.Array] | None:
    """The decode step's LM head, hidden [B, D] -> float32 logits: None (the model's own, [B, V]) below
    `WIDE_VOCAB`; at or above it, table @ hiddenᵀ, [V, B], against `head_table`.

    The [V, B] logits are consumed as they are (the sampler reads a row down axis 1): transposed back
    to [B, V], XLA folds the transpose into the product and computes rows @ tableᵀ, the orientation
    this one is chosen to avoid."""
    if model.config.vocab_size < WIDE_VOCAB and head_dtype is None:
        return None
    table = head_table(model, batch, head_dtype)
    return lambda hidden: table_logits(table, hidden, model.config.final_logit_softcapping)


def argmax_head(model: Gemma, batch: int, head_dtype: str | None) -> Callable[[jax.Array], jax.Array] | None:
    """Greedy decoding's head, hidden [B, D] -> tokens [B], where it pays (a wide vocabulary, at least
    `MIN_ARGMAX_HEAD_ROWS` rows, blocks that divide the vocabulary), else None.

    Written whole, `lm_head`'s [V, B] logits are read back down their columns by an argmax that XLA:CPU
    does not vectorise; a product reduced by a plain maximum is fused by YNNPACK and never reaches
    memory. So the product keeps each block's maximum ([V / block, B]), the argmax picks each row's
    block, and that block's logits are recomputed for the row ([B, block]) to find the token: the
    first block with the largest logit, its first such id, as argmax picks (ties to the lowest id).
    Two products give the two steps' logits (the first not soft-capped), so where two ids in different
    blocks lie within float32 rounding of each other the other may be picked; and the fused maximum may
    pass over a NaN logit that argmax would pick. The token is a vocabulary id whatever the logits hold."""
    vocab = model.config.vocab_size
    if vocab < WIDE_VOCAB or batch < MIN_ARGMAX_HEAD_ROWS or vocab % ARGMAX_BLOCK:
        return None
    table = head_table(model, batch, head_dtype)
    blocks = table.reshape(vocab // ARGMAX_BLOCK, ARGMAX_BLOCK, -1)
    cap = model.config.final_logit_softcapping

    def tokens(hidden: jax.Array) -> jax.Array:
        # uncapped: soft-capping is monotonic, and a tanh over all V logits would be a pass of its own
        block_max = jnp.max(table_logits(table, hidden, None).reshape(len(blocks), ARGMAX_BLOCK, -1), axis=1)
        best = jnp.argmax(block_max, axis=0)  # [B]
        rows = hidden.astype(table.dtype)
        logits = jnp.einsum("bkd,bd->bk", blocks[best], rows, preferred_element_type=jnp.float32)
        return (best * ARGMAX_BLOCK + jnp.argmax(softcap(logits, cap), axis=1)).astype(jnp.int32)

    return tokens


def head_table(model: Gemma, batch: int, head_dtype: str | None) -> jax.Array:
    """The tied table [V, D] a wide head multiplies: cast once per call (outside the decode loop) to
    `head_dtype` when asked and the rows are enough for it (`MIN_BF16_HEAD_ROWS`)."""
    dtype = head_dtype if head_dtype is not None and batch >= MIN_BF16_HEAD_ROWS else model.dtype
    return model.embed_tokens[...].astype(dtype)


def table_logits(table: jax.Array, hidden: jax.Array, cap: float | None) -> jax.Array:
    """Float32 logits [V, B] of hidden [B, D] against table rows [V, D], soft-capped as the model's head."""
    out = jnp.einsum("vd,bd->vb", table, hidden.astype(table.dtype), preferred_element_type=jnp.float32)
    return softcap(out, cap)
