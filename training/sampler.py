"""Batched generation with a preallocated KV cache, compiled end to end.

Prompts are left-padded to a power-of-two bucket (so prompt lengths share a
few compilations), prefilled in one call, then decoded one token per
iteration inside `lax.while_loop`, which stops as soon as every row has
produced an end-of-sequence token or `max_new_tokens` are out. Decoding runs
in phases over a cache that grows (`phase_widths`), so a step reads only as
many cache slots as the longest completion so far can need.

On CPU a small model's rows are split over the host's XLA devices
(`configure_host_cpu`, `default_devices`), each decoding its share in a loop of its
own: its decode step's ops are too small for XLA:CPU to spread over cores.
Each row samples with a key of its own, so what a row gets depends on its
prompt, its index and the key, not on the split.

At a wide vocabulary (a real Gemma's) a device's rows are halved as they end
(`compaction_sizes`): when no more than half of them still run, those are
gathered, cache and all, and decoding goes on with half the rows.

A prompt asked for several times (`repeats`: GRPO's G completions of a group)
is prefilled once on each device that decodes it; its cache and first logits
are then copied to its rows.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from training.attention import softcap
from training.model import Gemma, grow_cache, init_cache

# At this vocabulary or above the tied LM head is most of a decode step's work, and XLA:CPU runs the
# product of a few rows against the table faster as table @ rowsᵀ (the vocabulary as the long side of
# the GEMM, which its kernels split over threads) than as rows @ tableᵀ. Smaller vocabularies (the tiny
# default) keep the model's own head, bit for bit.
WIDE_VOCAB = 32_768
# A bfloat16 head (`head_dtype`) is used only from this many rows a device: XLA:CPU's bfloat16 product
# of one or two rows against the table runs far slower than the float32 one.
MIN_BF16_HEAD_ROWS = 8
# Decoding halves a device's rows down to this many (`compaction_sizes`): below it a step streams the
# weights for a few rows whatever their number, and each level is one more loop to compile.
MIN_COMPACT_ROWS = 4


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
    max_new_tokens: int
    temperature: float = 0.0  # 0: greedy
    top_k: int = 0  # 0: off
    top_p: float = 1.0  # 1: off
    phase_tokens: int = 64  # new tokens of the first decode phase; each next phase doubles (see phase_widths)


@dataclasses.dataclass(frozen=True)
class Generation:
    tokens: np.ndarray  # [B, max_new_tokens], pad after the end
    lengths: np.ndarray  # [B] tokens before the end-of-sequence token (or all)
    truncated: np.ndarray  # [B] bool: no end-of-sequence token within max_new_tokens


def bucket_length(n: int, minimum: int = 16) -> int:
    """Smallest power of two >= n (and >= minimum)."""
    return max(minimum, 1 << max(n - 1, 0).bit_length())


def left_pad(prompts: Sequence[Sequence[int]], length: int, pad_id: int) -> tuple[np.ndarray, ...]:
    """Tokens, positions and segments [B, length], prompts flush right."""
    b = len(prompts)
    tokens = np.full((b, length), pad_id, np.int32)
    segments = np.zeros((b, length), np.int32)
    positions = np.zeros((b, length), np.int32)
    for row, prompt in enumerate(prompts):
        n = len(prompt)
        if n == 0 or n > length:
            raise ValueError(f"prompt {row} has {n} tokens; expected 1..{length}")
        tokens[row, length - n :] = prompt
        segments[row, length - n :] = 1
        positions[row, length - n :] = np.arange(n)
    return tokens, positions, segments


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


def choose(logits: jax.Array, key: jax.Array, cfg: SamplingConfig) -> jax.Array:
    """Next token from one row's float32 logits [V]."""
    if cfg.temperature == 0.0:
        return jnp.argmax(logits).astype(jnp.int32)
    logits = logits / cfg.temperature
    if cfg.top_k:
        kth = jax.lax.top_k(logits, cfg.top_k)[0][-1]
        logits = jnp.where(logits < kth, -jnp.inf, logits)
    if cfg.top_p < 1.0:
        sorted_logits = jnp.sort(logits)[::-1]
        cum = jnp.cumsum(jax.nn.softmax(sorted_logits))
        # keep the smallest set whose mass reaches top_p (the top token always stays)
        cutoff = sorted_logits[jnp.sum(cum < cfg.top_p)]
        logits = jnp.where(logits < cutoff, -jnp.inf, logits)
    return sample_inverse_cdf(logits, key)


def sample_inverse_cdf(logits: jax.Array, key: jax.Array) -> jax.Array:
    """A token drawn from softmax(logits [V]) with one uniform: the first whose cumulative mass passes it.

    The Gumbel-max draw (`jax.random.categorical`) takes V random numbers a row, and at a real Gemma's
    262,144 tokens making them costs more than the LM head's product itself. The mass is summed in about
    √V blocks: the uniform picks a block by the blocks' running sums, then a token inside it.
    """
    vocab = logits.shape[0]
    size = 1 << ((vocab - 1).bit_length() + 1) // 2  # tokens a block (a power of two near √V)
    blocks = -(-vocab // size)
    weights = jnp.exp(logits - jnp.max(logits))
    weights = jnp.pad(weights, (0, blocks * size - vocab)).reshape(blocks, size)
    block_mass = jnp.sum(weights, axis=1)
    below = jnp.cumsum(block_mass)
    u = jax.random.uniform(key, dtype=jnp.float32) * below[-1]
    # (`minimum`s: rounding can leave u at or past the last running sum)
    block = jnp.minimum(jnp.sum(below <= u), blocks - 1)
    inside = jnp.cumsum(weights[block]) <= u - (below[block] - block_mass[block])
    token = block * size + jnp.minimum(jnp.sum(inside), size - 1)
    return jnp.minimum(token, vocab - 1).astype(jnp.int32)


class Sampler:
    """Generates from a Gemma model; one compilation per (model structure, batch, prompt bucket, config).

    The compiled function is shared by every Sampler (the model's structure is a
    static argument, its weights, end tokens and pad id are traced), so a new
    Sampler over the same model, or other end tokens, costs no recompilation.
    `devices`: those to split the rows over (weights copied to each); by default
    `default_devices(vocab)`: every CPU device at a small vocabulary on a CPU host, else none (one program).
    `head_dtype`: opt-in dtype of the LM head's table in decoding (e.g. "bfloat16": half the bytes a
    step reads, and AVX512_BF16 products; the logits change by the table's rounding, so greedy picks
    may differ from the model's own head). None: the model's dtype.
    """

    def __init__(
        self, model: Gemma, eos_ids: Sequence[int], pad_id: int, cache_dtype: str | None = None,
        devices: Sequence[jax.Device] | None = None, head_dtype: str | None = None,
    ):  # fmt: skip
        self.head_dtype = None if head_dtype is None else str(jnp.dtype(head_dtype))
        self.graphdef, self.state = nnx.split(model)
        self.config = model.config
        self.eos_ids = jnp.asarray(sorted(set(eos_ids)), jnp.int32)
        self.pad_id = pad_id
        self.cache_dtype = str(jnp.dtype(cache_dtype or model.dtype))
        if devices is None:  # split on a CPU host only at a small vocabulary (see `default_devices`)
            devices = default_devices(model.config.vocab_size)
        self.mesh = Mesh(np.asarray(devices), ("rows",)) if len(devices) > 1 else None
        self.replicated = NamedSharding(self.mesh, PartitionSpec()) if self.mesh is not None else None
        if self.replicated is not None:
            self.state, self.eos_ids = jax.device_put((self.state, self.eos_ids), self.replicated)

    def __call__(
        self, prompts: Sequence[Sequence[int]], cfg: SamplingConfig, key: jax.Array | None = None, repeats: int = 1
    ) -> Generation:
        """`repeats` rows of each prompt, prompt-major (row i · repeats + j is prompt i's j-th)."""
        length = bucket_length(max(len(p) for p in prompts))
        wanted = [p for p in prompts for _ in range(repeats)]
        shares = self.mesh.size if self.mesh is not None else 1
        rows = -(-len(wanted) // shares) * shares  # rows padded to whole shares with copies of the last prompt
        wanted += [prompts[-1]] * (rows - len(wanted))
        # Rows prefilled together: a run of equal prompts that never crosses a share's edge (a divisor of
        # both `repeats` and a share's rows, so padding, all copies of the last prompt, is such a run too).
        prefilled = math.gcd(repeats, rows // shares)
        tokens, positions, segments = left_pad(wanted[::prefilled], length, self.pad_id)
        key = jax.random.key(0) if key is None else key
        if self.replicated is not None:  # a key made on (committed to) one device goes to every device
            key = jax.device_put(key, self.replicated)
        args = (tokens, positions, segments, np.arange(rows, dtype=np.int32), key, self.eos_ids, jnp.int32(self.pad_id))
        static = dict(cfg=cfg, cache_dtype=self.cache_dtype, head_dtype=self.head_dtype, repeats=prefilled)
        if self.mesh is None:
            out = _generate(self.graphdef, self.state, *args, **static)
        else:
            out = _generate_split(self.graphdef, self.state, *args, **static, mesh=self.mesh)
        tokens, lengths, truncated = (np.asarray(x)[: len(prompts) * repeats] for x in out)
        return Generation(tokens, lengths, truncated)


def phase_widths(max_new_tokens: int, first: int) -> list[int]:
    """New-token capacities of the decode phases: `first` (64), then doubling up to `max_new_tokens`.

    Each phase attends over a cache only as long as its capacity (plus the
    prompt), so short completions never read the empty end of a cache sized
    for the longest: at 256 new tokens a 70-token answer reads about a third
    of the slots it would read from the whole cache.
    """
    widths = [min(first, max_new_tokens)]
    while widths[-1] < max_new_tokens:
        widths.append(min(2 * widths[-1], max_new_tokens))
    return widths


def compaction_sizes(batch: int, vocab_size: int) -> list[int]:
    """Rows a device decodes at each level: the batch, then halves (each down to `MIN_COMPACT_ROWS`),
    entered when no more rows than the half still run, those gathered first. At a wide vocabulary
    a row's own products (most of all the LM head's) are most of a step, so a finished row that goes
    on decoding costs as much as a running one; a small vocabulary keeps one level, bit for bit."""
    sizes = [batch]
    while vocab_size >= WIDE_VOCAB and sizes[-1] % 2 == 0 and sizes[-1] // 2 >= MIN_COMPACT_ROWS:
        sizes.append(sizes[-1] // 2)
    return sizes


def lm_head(model: Gemma, batch: int, head_dtype: str | None):
    """The decode step's LM head, hidden [B, D] -> float32 logits: None (the model's own, [B, V]) below
    `WIDE_VOCAB`; at or above it, table @ hiddenᵀ, [V, B], the table cast once per call (outside the
    decode loop) to `head_dtype` when asked and the rows are enough for it (`MIN_BF16_HEAD_ROWS`).

    The [V, B] logits are consumed as they are (`pick` reads a row down axis 1): transposed back to
    [B, V], XLA folds the transpose into the product and computes rows @ tableᵀ, the orientation this
    one is chosen to avoid."""
    cfg = model.config
    if cfg.vocab_size < WIDE_VOCAB and head_dtype is None:
        return None
    dtype = head_dtype if head_dtype is not None and batch >= MIN_BF16_HEAD_ROWS else model.dtype
    table = model.embed_tokens[...].astype(dtype)

    def head(hidden: jax.Array) -> jax.Array:
        out = jnp.einsum("vd,bd->vb", table, hidden.astype(dtype), preferred_element_type=jnp.float32)
        return softcap(out, cfg.final_logit_softcapping)

    return head


def _decode(graphdef, state, tokens, positions, segments, rows, key, eos_ids, pad_id, *, cfg: SamplingConfig,
            cache_dtype, head_dtype=None, repeats=1):  # fmt: skip
    """Tokens [B, max_new_tokens], lengths and truncation flags [B] for left-padded prompts [B / repeats,
    prompt_len], each the prompt of `repeats` consecutive rows; `rows`: each row's index in the whole
    batch (its sampling key)."""
    model = nnx.merge(graphdef, state)
    batch, prompt_len = rows.shape[0], tokens.shape[1]
    row_keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(key, rows)
    fold = lambda keys, step: jax.vmap(jax.random.fold_in, in_axes=(0, None))(keys, step)
    widths = phase_widths(cfg.max_new_tokens, cfg.phase_tokens)
    sizes = compaction_sizes(batch, model.config.vocab_size)
    heads = {size: lm_head(model, size, head_dtype) for size in sizes}
    # (logits, keys [B]) -> tokens [B]: the model's own head gives [B, V], a wide one [V, B] (`lm_head`)
    row_axis = 0 if heads[batch] is None else 1
    pick = jax.vmap(functools.partial(choose, cfg=cfg), in_axes=(row_axis, 0))
    cache = init_cache(model.config, tokens.shape[0], prompt_len + widths[0], cache_dtype, prompt_len)
    hidden, cache = model.hidden_states(tokens, positions, segments, cache, 0)
    logits = (heads[batch] or model.logits)(hidden[:, -1])  # the LM head on the last prompt position only
    if repeats > 1:  # each prompt's cache, logits and positions to its rows
        cache, positions = jax.tree.map(lambda x: jnp.repeat(x, repeats, axis=0), (cache, positions))
        logits = jnp.repeat(logits, repeats, axis=row_axis)
    first = pick(logits, fold(row_keys, 0))
    out = jnp.full((batch, cfg.max_new_tokens), pad_id, jnp.int32).at[:, 0].set(first)
    done = jnp.isin(first, eos_ids)

    def body(carry):
        i, last, pos, done, ids, keys, out, cache = carry
        head, ones = heads[last.shape[0]], jnp.ones((last.shape[0], 1), jnp.int32)
        # token i-1 goes into cache slot prompt_len + i - 1 and predicts token i
        if head is None:
            logits, cache = model(last[:, None], pos[:, None], ones, cache, prompt_len + i - 1)
            logits = logits[:, 0]
        else:
            hidden, cache = model.hidden_states(last[:, None], pos[:, None], ones, cache, prompt_len + i - 1)
            logits = head(hidden[:, 0])  # [V, B]
        nxt = pick(logits, fold(keys, i))
        nxt = jnp.where(done, pad_id, nxt)  # a finished row only pads
        if last.shape[0] == batch:  # every row, in order
            out = jax.lax.dynamic_update_slice(out, nxt[:, None], (0, i))
        else:
            out = out.at[ids, i].set(nxt)
        return i + 1, nxt, pos + 1, done | jnp.isin(nxt, eos_ids), ids, keys, out, cache

    def running(carry, width, floor):
        i, _, _, done, *_ = carry
        return (i <= width) & (i < cfg.max_new_tokens) & (jnp.sum(~done) > floor)

    def compact(carry, size):
        """The first `size` rows after sorting the running ones first (all of them, as at most `size` run)."""
        i, last, pos, done, ids, keys, out, cache = carry
        keep = jnp.argsort(done, stable=True)[:size]
        take = lambda x: jnp.take(x, keep, axis=0)
        return i, take(last), take(pos), take(done), take(ids), take(keys), out, jax.tree.map(take, cache)

    carry = (jnp.int32(1), first, positions[:, -1] + 1, done, jnp.arange(batch), row_keys, out, cache)
    for level, size in enumerate(sizes):
        # A level runs while more rows than the next level holds still run; the last until all end.
        floor = sizes[level + 1] if level + 1 < len(sizes) else 0
        if level:
            carry = compact(carry, size)
        # Step i writes slot prompt_len + i - 1: a phase of width w runs while i <= w. Phases grow the cache
        # of the first level; a level after a compaction decodes over the whole-width cache it was left.
        for width in widths if level == 0 else widths[-1:]:
            carry = (*carry[:7], grow_cache(model.config, carry[7], prompt_len + width))
            carry = jax.lax.while_loop(functools.partial(running, width=width, floor=floor), body, carry)
    out = carry[6]
    is_eos = jnp.isin(out, eos_ids)
    lengths = jnp.where(jnp.any(is_eos, axis=1), jnp.argmax(is_eos, axis=1), cfg.max_new_tokens)
    return out, lengths, ~jnp.any(is_eos, axis=1)


_generate = jax.jit(_decode, static_argnames=("graphdef", "cfg", "cache_dtype", "head_dtype", "repeats"))


@functools.partial(jax.jit, static_argnames=("graphdef", "cfg", "cache_dtype", "head_dtype", "repeats", "mesh"))
def _generate_split(graphdef, state, *batch_and_keys, cfg: SamplingConfig, cache_dtype, head_dtype, repeats,
                    mesh: Mesh):  # fmt: skip
    """`_decode` with the rows split over the mesh: each device decodes its share until its own rows end."""
    rows, shared = PartitionSpec("rows"), PartitionSpec()
    decode = functools.partial(_decode, graphdef, cfg=cfg, cache_dtype=cache_dtype, head_dtype=head_dtype,
                               repeats=repeats)  # fmt: skip
    return jax.shard_map(
        decode, mesh=mesh, in_specs=(shared, rows, rows, rows, rows, shared, shared, shared), out_specs=rows,
        check_vma=False,
    )(state, *batch_and_keys)
