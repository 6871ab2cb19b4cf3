"""Batched generation with a preallocated KV cache, compiled end to end.

Prompts are left-padded to a power-of-two bucket (so prompt lengths share a
few compilations), prefilled in one call, then decoded one token per
iteration inside `lax.while_loop`, which stops as soon as every row has
produced an end-of-sequence token or `max_new_tokens` are out. Decoding runs
in phases over a cache that grows (`phase_widths`), so a step reads only as
many cache slots as the longest completion so far can need.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from training.model import Gemma, grow_cache, init_cache


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


def choose(logits: jax.Array, key: jax.Array, cfg: SamplingConfig) -> jax.Array:
    """Next token per row from float32 logits [B, V]."""
    if cfg.temperature == 0.0:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    logits = logits / cfg.temperature
    if cfg.top_k:
        kth = jax.lax.top_k(logits, cfg.top_k)[0][:, -1:]
        logits = jnp.where(logits < kth, -jnp.inf, logits)
    if cfg.top_p < 1.0:
        sorted_logits = jnp.sort(logits, axis=-1)[:, ::-1]
        cum = jnp.cumsum(jax.nn.softmax(sorted_logits, axis=-1), axis=-1)
        # keep the smallest set whose mass reaches top_p (the top token always stays)
        cutoff_index = jnp.sum(cum < cfg.top_p, axis=-1, keepdims=True)
        cutoff = jnp.take_along_axis(sorted_logits, cutoff_index, axis=-1)
        logits = jnp.where(logits < cutoff, -jnp.inf, logits)
    return jax.random.categorical(key, logits, axis=-1).astype(jnp.int32)


class Sampler:
    """Generates from a Gemma model; one compilation per (model structure, batch, prompt bucket, config).

    The compiled function is shared by every Sampler (the model's structure is a
    static argument, its weights, end tokens and pad id are traced), so a new
    Sampler over the same model, or other end tokens, costs no recompilation.
    """

    def __init__(self, model: Gemma, eos_ids: Sequence[int], pad_id: int, cache_dtype: str | None = None):
        self.graphdef, self.state = nnx.split(model)
        self.config = model.config
        self.eos_ids = jnp.asarray(sorted(set(eos_ids)), jnp.int32)
        self.pad_id = pad_id
        self.cache_dtype = str(jnp.dtype(cache_dtype or model.dtype))

    def __call__(
        self, prompts: Sequence[Sequence[int]], cfg: SamplingConfig, key: jax.Array | None = None
    ) -> Generation:
        length = bucket_length(max(len(p) for p in prompts))
        tokens, positions, segments = left_pad(prompts, length, self.pad_id)
        key = jax.random.key(0) if key is None else key
        out, lengths, truncated = _generate(
            self.graphdef, self.state, tokens, positions, segments, key, self.eos_ids, jnp.int32(self.pad_id),
            cfg=cfg, cache_dtype=self.cache_dtype,
        )  # fmt: skip
        return Generation(np.asarray(out), np.asarray(lengths), np.asarray(truncated))


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


@functools.partial(jax.jit, static_argnames=("graphdef", "cfg", "cache_dtype"))
def _generate(graphdef, state, tokens, positions, segments, key, eos_ids, pad_id, *, cfg: SamplingConfig, cache_dtype):
    model = nnx.merge(graphdef, state)
    batch, prompt_len = tokens.shape
    widths = phase_widths(cfg.max_new_tokens, cfg.phase_tokens)
    cache = init_cache(model.config, batch, prompt_len + widths[0], cache_dtype, prompt_len)
    hidden, cache = model.hidden_states(tokens, positions, segments, cache, 0)
    logits = model.logits(hidden[:, -1])  # the LM head on the last prompt position only
    first = choose(logits, jax.random.fold_in(key, 0), cfg)
    out = jnp.full((batch, cfg.max_new_tokens), pad_id, jnp.int32).at[:, 0].set(first)
    done = jnp.isin(first, eos_ids)
    ones = jnp.ones((batch, 1), jnp.int32)

    def body(carry):
        i, last, pos, done, out, cache = carry
        # token i-1 goes into cache slot prompt_len + i - 1 and predicts token i
        logits, cache = model(last[:, None], pos[:, None], ones, cache, prompt_len + i - 1)
        nxt = choose(logits[:, 0], jax.random.fold_in(key, i), cfg)
        nxt = jnp.where(done, pad_id, nxt)  # a finished row only pads
        out = jax.lax.dynamic_update_slice(out, nxt[:, None], (0, i))
        return i + 1, nxt, pos + 1, done | jnp.isin(nxt, eos_ids), out, cache

    def running(carry, width):
        i, _, _, done, _, _ = carry
        return (i <= width) & (i < cfg.max_new_tokens) & ~jnp.all(done)

    carry = (jnp.int32(1), first, positions[:, -1] + 1, done, out, cache)
    for width in widths:  # step i writes slot prompt_len + i - 1: a phase of width w runs while i <= w
        carry = (*carry[:5], grow_cache(model.config, carry[5], prompt_len + width))
        carry = jax.lax.while_loop(functools.partial(running, width=width), body, carry)
    out = carry[4]
    is_eos = jnp.isin(out, eos_ids)
    lengths = jnp.where(jnp.any(is_eos, axis=1), jnp.argmax(is_eos, axis=1), cfg.max_new_tokens)
    return out, lengths, ~jnp.any(is_eos, axis=1)
