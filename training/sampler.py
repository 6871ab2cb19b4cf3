"""Batched generation with a preallocated KV cache, compiled end to end.

Prompts are left-padded to a power-of-two bucket (so prompt lengths share a
few compilations), prefilled in one call, then decoded one token per
iteration inside `lax.while_loop`, which stops as soon as every row has
produced an end-of-sequence token or `max_new_tokens` are out. Decoding runs
in phases over a cache that grows (`phase_widths`), so a step reads only as
many cache slots as the longest completion so far can need.

On CPU a small model's rows are split over the host's XLA devices, each
decoding its share in a loop of its own: its decode step's ops are too small
for XLA:CPU to spread over cores. Each row samples with a key of its own, so
what a row gets depends on its prompt, its index and the key, not on the split.

At a wide vocabulary (a real Gemma's) a device's rows are halved as they end
(compaction levels): when no more than half of them still run, those are
gathered, cache and all, and decoding goes on with half the rows; the LM
head runs as table @ rowsᵀ; and greedy decoding of many rows takes its tokens
from an argmax head that never writes the logits out. Every such choice made
for XLA:CPU's sake (the devices, the heads, the levels, XLA's flags) is made in
training/cpu_tuning.py; this module's loop decodes as it is told.

A prompt asked for several times (`repeats`: GRPO's G completions of a group)
is prefilled once on each device that decodes it; its cache and first logits
are then copied to its rows.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from training.cpu_tuning import argmax_head, compaction_sizes, default_devices, lm_head
from training.model import Cache, Gemma, grow_cache, init_cache


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


def right_pad(rows: Sequence[Sequence[int]], length: int, pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Tokens and their mask (1 on a row's own tokens) [B, length], rows flush left: completions after
    their prompts."""
    tokens = np.full((len(rows), length), pad_id, np.int32)
    mask = np.zeros((len(rows), length), np.int32)
    for i, r in enumerate(rows):
        tokens[i, : len(r)] = r
        mask[i, : len(r)] = 1
    return tokens, mask


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
    `cpu_tuning.default_devices(vocab)`: every CPU device at a small vocabulary on a CPU host, else none.
    `head_dtype`: opt-in dtype of the LM head's table in decoding (e.g. "bfloat16": half the bytes a
    step reads, and AVX512_BF16 products; the logits change by the table's rounding, so greedy picks
    may differ from the model's own head). None: the model's dtype.
    """

    def __init__(
        self,
        model: Gemma,
        eos_ids: Sequence[int],
        pad_id: int,
        cache_dtype: str | None = None,
        devices: Sequence[jax.Device] | None = None,
        head_dtype: str | None = None,
    ):
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


class DecodeState(NamedTuple):
    """The decode loop's carry. Its rows are a device's, as many as the compaction level decodes (R):
    `rows` says where each one's tokens go in `tokens`, which always holds every row of the device."""

    step: jax.Array  # i: the new token this step picks; token i - 1 goes into cache slot prompt_len + i - 1
    last: jax.Array  # [R] each row's latest token
    positions: jax.Array  # [R] that token's position
    done: jax.Array  # [R] bool: the row has picked an end-of-sequence token (it only pads from then on)
    rows: jax.Array  # [R] each row's index in `tokens`
    keys: jax.Array  # [R] each row's sampling key, folded with the step for each draw
    tokens: jax.Array  # [B, max_new_tokens] every row's tokens so far, pad after its end
    cache: Cache  # the R rows' KV cache


def step_hidden(model: Gemma, state: DecodeState, index: jax.Array) -> tuple[jax.Array, Cache]:
    """The final hidden state [R, D] after each row's last token, written into the cache at `index`."""
    ones = jnp.ones((state.last.shape[0], 1), jnp.int32)
    hidden, cache = model.hidden_states(state.last[:, None], state.positions[:, None], ones, state.cache, index)
    return hidden[:, 0], cache


def compact(state: DecodeState, size: int) -> DecodeState:
    """The first `size` rows after sorting the running ones first (all of them, as at most `size` run)."""
    keep = jnp.argsort(state.done, stable=True)[:size]
    take = lambda x: jnp.take(x, keep, axis=0)
    return state._replace(
        last=take(state.last),
        positions=take(state.positions),
        done=take(state.done),
        rows=take(state.rows),
        keys=take(state.keys),
        cache=jax.tree.map(take, state.cache),
    )


def running(state: DecodeState, width: int, floor: int, max_new_tokens: int) -> jax.Array:
    """A phase of capacity `width` goes on while its step writes inside it (i <= width), the budget is
    not spent, and more rows run than the next compaction level holds (`floor`)."""
    return (state.step <= width) & (state.step < max_new_tokens) & (jnp.sum(~state.done) > floor)


def decode_levels(
    step: Callable[[DecodeState], DecodeState],
    state: DecodeState,
    *,
    widths: Sequence[int],
    sizes: Sequence[int],
    max_new_tokens: int,
    grow: Callable[[Cache, int], Cache],
) -> DecodeState:
    """`step` in a loop until every row has ended or the budget is spent: at each compaction level
    (`sizes`: the rows it decodes), then in each phase (`widths`: new tokens it has room for), the
    cache grown by `grow(cache, width)` first. Phases grow the cache of the first level; a level after
    a compaction decodes over the whole-width cache it was left."""
    for level, size in enumerate(sizes):
        # A level runs while more rows than the next level holds still run; the last until all end.
        floor = sizes[level + 1] if level + 1 < len(sizes) else 0
        if level:
            state = compact(state, size)
        for width in widths if level == 0 else widths[-1:]:
            state = state._replace(cache=grow(state.cache, width))
            go_on = functools.partial(running, width=width, floor=floor, max_new_tokens=max_new_tokens)
            state = jax.lax.while_loop(go_on, step, state)
    return state


def _decode(
    graphdef,
    weights,
    tokens,
    positions,
    segments,
    rows,
    key,
    eos_ids,
    pad_id,
    *,
    cfg: SamplingConfig,
    cache_dtype,
    head_dtype=None,
    repeats=1,
):
    """Tokens [B, max_new_tokens], lengths and truncation flags [B] for left-padded prompts [B / repeats,
    prompt_len], each the prompt of `repeats` consecutive rows; `rows`: each row's index in the whole
    batch (its sampling key)."""
    model = nnx.merge(graphdef, weights)
    batch, prompt_len = rows.shape[0], tokens.shape[1]
    row_keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(key, rows)
    fold = lambda keys, step: jax.vmap(jax.random.fold_in, in_axes=(0, None))(keys, step)
    widths = phase_widths(cfg.max_new_tokens, cfg.phase_tokens)
    sizes = compaction_sizes(batch, model.config.vocab_size)
    heads = {size: lm_head(model, size, head_dtype) for size in sizes}
    greedy_heads = {size: argmax_head(model, size, head_dtype) if cfg.temperature == 0 else None for size in sizes}
    # (logits, keys [B]) -> tokens [B]: the model's own head gives [B, V], a wide one [V, B] (`lm_head`)
    row_axis = 0 if heads[batch] is None else 1
    pick = jax.vmap(functools.partial(choose, cfg=cfg), in_axes=(row_axis, 0))

    def logits(hidden: jax.Array, level: int) -> jax.Array:
        """The logits of final hidden states [R, D] from the head of the level of `level` rows."""
        return heads[level](hidden) if heads[level] is not None else model.logits(hidden)

    def next_tokens(hidden: jax.Array, keys: jax.Array) -> jax.Array:
        """Each row's next token from its final hidden state [R, D]."""
        greedy_head = greedy_heads[hidden.shape[0]]
        return greedy_head(hidden) if greedy_head is not None else pick(logits(hidden, hidden.shape[0]), keys)

    cache = init_cache(model.config, tokens.shape[0], prompt_len + widths[0], cache_dtype, prompt_len)
    hidden, cache = model.hidden_states(tokens, positions, segments, cache, 0)
    first_logits = logits(hidden[:, -1], batch)  # the LM head on the last prompt position only
    if repeats > 1:  # each prompt's cache, logits and positions to its rows
        cache, positions = jax.tree.map(lambda x: jnp.repeat(x, repeats, axis=0), (cache, positions))
        first_logits = jnp.repeat(first_logits, repeats, axis=row_axis)
    first = pick(first_logits, fold(row_keys, 0))
    out = jnp.full((batch, cfg.max_new_tokens), pad_id, jnp.int32).at[:, 0].set(first)

    def step(state: DecodeState) -> DecodeState:
        hidden, cache = step_hidden(model, state, prompt_len + state.step - 1)
        nxt = next_tokens(hidden, fold(state.keys, state.step))
        nxt = jnp.where(state.done, pad_id, nxt)  # a finished row only pads
        if state.last.shape[0] == batch:  # every row, in order
            tokens = jax.lax.dynamic_update_slice(state.tokens, nxt[:, None], (0, state.step))
        else:
            tokens = state.tokens.at[state.rows, state.step].set(nxt)
        return DecodeState(
            state.step + 1,
            nxt,
            state.positions + 1,
            state.done | jnp.isin(nxt, eos_ids),
            state.rows,
            state.keys,
            tokens,
            cache,
        )

    start = DecodeState(
        step=jnp.int32(1),
        last=first,
        positions=positions[:, -1] + 1,
        done=jnp.isin(first, eos_ids),
        rows=jnp.arange(batch),
        keys=row_keys,
        tokens=out,
        cache=cache,
    )
    grow = lambda cache, width: grow_cache(model.config, cache, prompt_len + width)
    end = decode_levels(step, start, widths=widths, sizes=sizes, max_new_tokens=cfg.max_new_tokens, grow=grow)
    is_eos = jnp.isin(end.tokens, eos_ids)
    lengths = jnp.where(jnp.any(is_eos, axis=1), jnp.argmax(is_eos, axis=1), cfg.max_new_tokens)
    return end.tokens, lengths, ~jnp.any(is_eos, axis=1)


_generate = jax.jit(_decode, static_argnames=("graphdef", "cfg", "cache_dtype", "head_dtype", "repeats"))


@functools.partial(jax.jit, static_argnames=("graphdef", "cfg", "cache_dtype", "head_dtype", "repeats", "mesh"))
def _generate_split(
    graphdef, state, *batch_and_keys, cfg: SamplingConfig, cache_dtype, head_dtype, repeats, mesh: Mesh
):
    """`_decode` with the rows split over the mesh: each device decodes its share until its own rows end."""
    rows, shared = PartitionSpec("rows"), PartitionSpec()
    decode = functools.partial(
        _decode, graphdef, cfg=cfg, cache_dtype=cache_dtype, head_dtype=head_dtype, repeats=repeats
    )
    return jax.shard_map(
        decode,
        mesh=mesh,
        in_specs=(shared, rows, rows, rows, rows, shared, shared, shared),
        out_specs=rows,
        check_vma=False,
    )(state, *batch_and_keys)
