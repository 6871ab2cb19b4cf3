"""The Gemma decoder family (Gemma 1/2/3) in Flax NNX, selected by `GemmaConfig`.

One attention mask rule serves training, packing and cached decoding: a query
sees a key when both belong to the same segment (segment 0 is padding), the
key's position is not after the query's, and, on sliding-window layers, the
key lies inside the window. Keys carry their own positions and segments, so a
left-padded, partly filled KV cache needs nothing special.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from training.attention import attend, attend_beside_cache, softcap
from training.config import SLIDING, GemmaConfig
from training.lora import adapter_of
from training.matmul import matmul

Cache = dict[str, Any]  # per layer: {"k": L × [B,K,hd,S], "v": L × [B,K,S,hd], "pos": L × [B,S], "seg": L × [B,S]}


class LayerCache(NamedTuple):
    """One layer's share of the KV cache as one attention call gets it (`Cache` holds the model's)."""

    keys: jax.Array  # [B, K, hd, S], keys transposed as the decode step's product reads them
    values: jax.Array  # [B, K, S, hd]
    positions: jax.Array  # [B, S] each slot's position, this call's already written
    segments: jax.Array  # [B, S] each slot's segment (0: empty or padding), this call's already written
    index: jax.Array | int  # the slot this call's first key and value go to


class RMSNorm(nnx.Module):
    """Gemma RMSNorm: x * rsqrt(mean(x²) + eps) * (1 + w), computed in float32."""

    def __init__(self, dim: int, eps: float, param_dtype: jnp.dtype):
        self.weight = nnx.Param(jnp.zeros((dim,), param_dtype))
        self.eps = eps

    def __call__(self, x: jax.Array) -> jax.Array:
        x32 = x.astype(jnp.float32)
        normed = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
        return (normed * (1.0 + self.weight[...].astype(jnp.float32))).astype(x.dtype)


def rope_tables(positions: jax.Array, head_dim: int, base: float, scale: float = 1.0) -> tuple[jax.Array, jax.Array]:
    """cos and sin of RoPE's angles for `rope`, each [B,T,1,hd] (both halves alike: rotate-half).

    A model call computes them once and shares them among the layers with the same base and scale.
    XLA:CPU evaluates sin and cos with scalar calls, far slower than an exp; given tables of their
    own, each layer's q and k fused them in and recomputed them for every head, forward and
    backward. Shared, they are computed once (docs/results/2026-12-03-performance-log.md).
    """
    inv_freq = 1.0 / (base ** (jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim))
    angles = (positions.astype(jnp.float32) / scale)[..., None] * inv_freq  # [B,T,hd/2]
    whole = lambda half: jnp.concatenate([half, half], axis=-1)[:, :, None, :]
    return whole(jnp.cos(angles)), whole(jnp.sin(angles))


def rope(x: jax.Array, tables: tuple[jax.Array, jax.Array]) -> jax.Array:
    """Rotary embedding, rotate-half convention (as in transformers); x: [B,T,N,hd], tables: `rope_tables`."""
    cos, sin = tables
    x32 = x.astype(jnp.float32)
    x1, x2 = jnp.split(x32, 2, axis=-1)
    rotated = jnp.concatenate([-x2, x1], axis=-1)
    return (x32 * cos + rotated * sin).astype(x.dtype)


def attention_mask(
    q_pos: jax.Array, q_seg: jax.Array, k_pos: jax.Array, k_seg: jax.Array, window: int | None
) -> jax.Array:
    """[B,T,S] boolean: same non-padding segment, causal by position, inside the window."""
    qp, kp = q_pos[:, :, None], k_pos[:, None, :]
    mask = (q_seg[:, :, None] == k_seg[:, None, :]) & (k_seg[:, None, :] != 0) & (kp <= qp)
    if window is not None:
        mask &= qp - kp < window
    return mask


def fused_linear(x: jax.Array, layers: tuple[nnx.Linear, ...]) -> jax.Array:
    """x @ [W1 | W2 | …] for bias-free Linears sharing an input (kept apart as HF names them), or x @ W for one.

    A projection carrying a LoRA adapter (training/lora.py) gets its low-rank term added to its slice.
    """
    dtype = layers[0].dtype
    kernel = jnp.concatenate([layer.kernel[...] for layer in layers], axis=1).astype(dtype)
    out = matmul(x.astype(dtype), kernel)
    start = 0
    for layer in layers:
        width = layer.kernel.shape[1]
        adapter = adapter_of(layer)
        if adapter is not None:
            out = out.at[..., start : start + width].add(adapter.delta(x, dtype))
        start += width
    return out


class Attention(nnx.Module):
    def __init__(self, cfg: GemmaConfig, layer: int, dtype: jnp.dtype, param_dtype: jnp.dtype, rngs: nnx.Rngs):
        d, h, k, hd = cfg.hidden_size, cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
        linear = dict(use_bias=False, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.q_proj = nnx.Linear(d, h * hd, **linear)
        self.k_proj = nnx.Linear(d, k * hd, **linear)
        self.v_proj = nnx.Linear(d, k * hd, **linear)
        self.o_proj = nnx.Linear(h * hd, d, **linear)
        if cfg.use_qk_norm:
            self.q_norm = RMSNorm(hd, cfg.rms_norm_eps, param_dtype)
            self.k_norm = RMSNorm(hd, cfg.rms_norm_eps, param_dtype)
        sliding = cfg.layer_types[layer] == SLIDING
        self.window = cfg.sliding_window if sliding else None
        self.rope_base = cfg.rope_base(layer)
        self.rope_scale = 1.0 if sliding else cfg.rope_scaling_factor
        self.heads, self.kv_heads, self.head_dim = h, k, hd
        self.scale = cfg.query_pre_attn_scalar**-0.5
        self.softcap = cfg.attn_logit_softcapping
        self.qk_norm = cfg.use_qk_norm

    def __call__(
        self,
        x: jax.Array,
        pos: jax.Array,
        seg: jax.Array,
        kv: LayerCache | None,
        rotary: tuple[jax.Array, jax.Array] | None = None,
    ) -> tuple[jax.Array, tuple[jax.Array, jax.Array] | None]:
        """x: [B,T,D]. `kv` is the layer's cache, its key positions and segments and the write index, or None;
        `rotary` is this layer's `rope_tables` (computed here when not given).

        With a cache, this call's keys and values are written at the index first,
        so the queries see them; returns the output and the updated (k, v) cache.
        """
        b, t, _ = x.shape
        # One matmul for q, k and v: on CPU a few large matmuls run faster than many small ones.
        qkv = fused_linear(x, (self.q_proj, self.k_proj, self.v_proj))
        q, k, v = jnp.split(qkv, [self.heads * self.head_dim, (self.heads + self.kv_heads) * self.head_dim], axis=-1)
        q = q.reshape(b, t, self.heads, self.head_dim)
        k = k.reshape(b, t, self.kv_heads, self.head_dim)
        v = v.reshape(b, t, self.kv_heads, self.head_dim)
        if self.qk_norm:
            q, k = self.q_norm(q), self.k_norm(k)
        if rotary is None:
            rotary = self.rope_tables(pos)
        q, k = rope(q, rotary), rope(k, rotary)
        # A KV head's G query heads as (query, group) rows, [B, K, T·G, hd]; values [B, K, S, hd]; keys
        # [B, K, hd, S] as the cache holds them. Each (row, KV head) is then one plain 4-D matmul, the
        # fastest layout on CPU (a [B, T, K, hd] layout makes XLA transpose per product), and a decode
        # step's few rows meet the cached keys in a plain [rows, hd] @ [hd, S] product, which XLA:CPU
        # need not repack on every call as it does against [S, hd] keys.
        groups = self.heads // self.kv_heads
        q = (q * self.scale).reshape(b, t, self.kv_heads, groups, self.head_dim).transpose(0, 2, 1, 3, 4)
        q = q.reshape(b, self.kv_heads, t * groups, self.head_dim)
        kt, v = k.transpose(0, 2, 3, 1), v.transpose(0, 2, 1, 3)
        if kv is None:
            out, new_kv = self.attend_in_blocks(q, kt, v, pos, seg), None
        else:
            keys = jax.lax.dynamic_update_slice(kv.keys, kt.astype(kv.keys.dtype), (0, 0, 0, kv.index))
            values = jax.lax.dynamic_update_slice(kv.values, v.astype(kv.values.dtype), (0, 0, kv.index, 0))
            new_kv = (keys, values)
            mask = attention_mask(pos, seg, kv.positions, kv.segments, self.window)
            if t == 1:  # a decode step: the cache as it was, and the new key beside it (attend_beside_cache)
                written = jnp.arange(kv.keys.shape[-1]) == kv.index
                own = attention_mask(pos, seg, pos, seg, self.window)
                out = attend_beside_cache(q, kv.keys, kv.values, mask & ~written, kt, v, own, self.softcap)
            else:
                out = attend(q, keys, values, mask, self.softcap)
        out = out.reshape(b, self.kv_heads, t, groups, self.head_dim).transpose(0, 2, 1, 3, 4)
        return fused_linear(out.reshape(b, t, self.heads * self.head_dim), (self.o_proj,)), new_kv

    def rope_tables(self, pos: jax.Array) -> tuple[jax.Array, jax.Array]:
        return rope_tables(pos, self.head_dim, self.rope_base, self.rope_scale)

    def attend_in_blocks(self, q: jax.Array, kt: jax.Array, v: jax.Array, pos: jax.Array, seg: jax.Array) -> jax.Array:
        """Self-attention of a whole sequence (q: [B, K, T·G, hd] rows), a block of queries at a time.

        Each block skips the keys its mask would hide anyway: those after its last query and, on a
        sliding-window layer, those a window or more before its first. (Positions count up by one
        per row inside every segment, as packing and left padding lay rows out.) On a causal
        256-token sequence four blocks compute 5/8 of the full logits (a 128-token window: 9/16).
        """
        t = pos.shape[1]
        groups = q.shape[2] // t
        size = max(64, -(-t // 4))
        outs = []
        for start in range(0, t, size):
            stop = min(t, start + size)
            first = 0 if self.window is None else max(0, start - self.window + 1)
            mask = attention_mask(
                pos[:, start:stop], seg[:, start:stop], pos[:, first:stop], seg[:, first:stop], self.window
            )
            block = q[:, :, start * groups : stop * groups]
            outs.append(attend(block, kt[..., first:stop], v[:, :, first:stop], mask, self.softcap))
        return jnp.concatenate(outs, axis=2)


class MLP(nnx.Module):
    def __init__(self, cfg: GemmaConfig, dtype: jnp.dtype, param_dtype: jnp.dtype, rngs: nnx.Rngs):
        linear = dict(use_bias=False, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.gate_proj = nnx.Linear(cfg.hidden_size, cfg.intermediate_size, **linear)
        self.up_proj = nnx.Linear(cfg.hidden_size, cfg.intermediate_size, **linear)
        self.down_proj = nnx.Linear(cfg.intermediate_size, cfg.hidden_size, **linear)

    def __call__(self, x: jax.Array) -> jax.Array:
        gate, up = jnp.split(fused_linear(x, (self.gate_proj, self.up_proj)), 2, axis=-1)
        return fused_linear(jax.nn.gelu(gate, approximate=True) * up, (self.down_proj,))


class Block(nnx.Module):
    def __init__(self, cfg: GemmaConfig, layer: int, dtype: jnp.dtype, param_dtype: jnp.dtype, rngs: nnx.Rngs):
        eps = cfg.rms_norm_eps
        self.input_layernorm = RMSNorm(cfg.hidden_size, eps, param_dtype)
        self.self_attn = Attention(cfg, layer, dtype, param_dtype, rngs)
        # Gemma 1 calls its pre-MLP norm "post_attention_layernorm"; Gemma 2/3 use sandwich norms.
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, eps, param_dtype)
        self.sandwich = cfg.use_sandwich_norms
        if self.sandwich:
            self.pre_feedforward_layernorm = RMSNorm(cfg.hidden_size, eps, param_dtype)
            self.post_feedforward_layernorm = RMSNorm(cfg.hidden_size, eps, param_dtype)
        self.mlp = MLP(cfg, dtype, param_dtype, rngs)

    def __call__(self, x, pos, seg, kv, rotary=None):
        attn, new_kv = self.self_attn(self.input_layernorm(x), pos, seg, kv, rotary)
        if self.sandwich:
            x = x + self.post_attention_layernorm(attn)
            x = x + self.post_feedforward_layernorm(self.mlp(self.pre_feedforward_layernorm(x)))
        else:
            x = x + attn
            x = x + self.mlp(self.post_attention_layernorm(x))
        return x, new_kv


class Gemma(nnx.Module):
    """Decoder-only Gemma with tied embeddings. Parameter names follow the HF checkpoints."""

    def __init__(
        self,
        cfg: GemmaConfig,
        *,
        rngs: nnx.Rngs,
        dtype: str | jnp.dtype = "float32",
        param_dtype: str | jnp.dtype = "float32",
        remat: bool = False,
    ):
        dtype, param_dtype = jnp.dtype(dtype), jnp.dtype(param_dtype)
        self.config = cfg
        self.dtype = dtype
        # Scaled by sqrt(hidden) on the way in and tied to the head: unit-scale activations and logits.
        init = nnx.initializers.normal(stddev=cfg.hidden_size**-0.5)
        self.embed_tokens = nnx.Param(init(rngs.params(), (cfg.vocab_size, cfg.hidden_size), param_dtype))
        self.layers = nnx.List([Block(cfg, i, dtype, param_dtype, rngs) for i in range(cfg.num_hidden_layers)])
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, param_dtype)
        self.remat = remat

    def embed(self, tokens: jax.Array) -> jax.Array:
        table = self.embed_tokens[...]
        scale = jnp.asarray(math.sqrt(self.config.hidden_size), self.dtype)
        return jnp.take(table, tokens, axis=0).astype(self.dtype) * scale

    def logits(self, hidden: jax.Array) -> jax.Array:
        """Tied LM head with final soft-capping; float32 out."""
        table = self.embed_tokens[...].astype(self.dtype)
        out = jnp.einsum("...d,vd->...v", hidden, table, preferred_element_type=jnp.float32)
        return softcap(out, self.config.final_logit_softcapping)

    def hidden_states(
        self,
        tokens: jax.Array,
        positions: jax.Array,
        segments: jax.Array,
        cache: Cache | None = None,
        cache_index: jax.Array | int = 0,
    ) -> tuple[jax.Array, Cache | None]:
        """Final normed hidden states [B,T,D] and, when decoding, the updated cache.

        With a cache, this call's tokens are written at `cache_index` and attend
        to everything the cache holds (earlier tokens included): the whole prompt
        at index 0, then one token a call; or a chunk of tokens at a fixed index
        (a completion after its prompt) where no layer's cache wraps.
        """
        x = self.embed(tokens)
        t = tokens.shape[1]
        if cache is not None and t > 1:
            # Several tokens written into a ring at once could overwrite keys their own queries need.
            fits = isinstance(cache_index, int) and cache_index + t <= min(k.shape[-1] for k in cache["k"])
            if not fits:
                raise ValueError(
                    f"a cached call takes one token, or {t} at a fixed index that every layer's "
                    f"cache holds without wrapping; got index {cache_index}"
                )
        new = {"k": [], "v": [], "pos": [], "seg": []}
        rotary = {}  # rope tables by (base, scale): computed once, shared by the layers
        for i, layer in enumerate(self.layers):
            attn = layer.self_attn
            base = (attn.rope_base, attn.rope_scale)
            if base not in rotary:
                rotary[base] = attn.rope_tables(positions)
            tables = rotary[base]
            if cache is None:
                call = nnx.remat(type(layer).__call__) if self.remat else type(layer).__call__
                x, _ = call(layer, x, positions, segments, None, tables)
                continue
            # A layer's cache is a ring of its own width: full-attention layers never wrap, and
            # sliding-window ones overwrite the oldest slot once a window's keys are held (init_cache).
            slot = cache_index % cache["k"][i].shape[-1]
            k_pos = jax.lax.dynamic_update_slice(cache["pos"][i], positions.astype(jnp.int32), (0, slot))
            k_seg = jax.lax.dynamic_update_slice(cache["seg"][i], segments.astype(jnp.int32), (0, slot))
            kv = LayerCache(cache["k"][i], cache["v"][i], k_pos, k_seg, slot)
            x, (ck, cv) = layer(x, positions, segments, kv, tables)
            for name, value in zip(new, (ck, cv, k_pos, k_seg)):
                new[name].append(value)
        if cache is not None:
            cache = {name: tuple(values) for name, values in new.items()}
        return self.norm(x), cache

    def __call__(self, tokens, positions, segments, cache=None, cache_index=0):
        hidden, cache = self.hidden_states(tokens, positions, segments, cache, cache_index)
        return self.logits(hidden), cache


def cache_widths(cfg: GemmaConfig, length: int, prompt_len: int | None = None) -> tuple[int, ...]:
    """Slots per layer for `length` tokens: all of them, except that a sliding-window layer given
    `prompt_len` holds at most max(window, prompt_len), as a ring.

    A ring of at least the window still holds every key a query can see, and one of at least the
    prompt takes the whole prefill without wrapping; past that, decoding reads no key a window old.
    (Gemma 3 1B, window 512, a 256-token prompt and 1,024 new tokens: 22 of its 26 layers read 512
    slots a step at most, not up to 1,280.)
    """
    ring = length if prompt_len is None else max(cfg.sliding_window or length, prompt_len)
    return tuple(min(length, ring) if kind == SLIDING else length for kind in cfg.layer_types)


def init_cache(
    cfg: GemmaConfig, batch: int, length: int, dtype: str | jnp.dtype = "float32", prompt_len: int | None = None
) -> Cache:
    """An empty KV cache (widths: `cache_widths`): every slot is padding (segment 0) until written."""
    heads, hd, widths = cfg.num_key_value_heads, cfg.head_dim, cache_widths(cfg, length, prompt_len)
    return {
        "k": tuple(jnp.zeros((batch, heads, hd, s), dtype) for s in widths),
        "v": tuple(jnp.zeros((batch, heads, s, hd), dtype) for s in widths),
        "pos": tuple(jnp.zeros((batch, s), jnp.int32) for s in widths),
        "seg": tuple(jnp.zeros((batch, s), jnp.int32) for s in widths),
    }


def grow_cache(cfg: GemmaConfig, cache: Cache, length: int) -> Cache:
    """The cache with empty slots (segment 0) appended for `length` tokens in all.

    A sliding-window layer grows only up to its window: a cache that took its prefill whole is at
    least the prompt wide, so the ring still holds what `cache_widths` asks of one.
    """
    grown = lambda kind, k: max(k.shape[-1], min(length, cfg.sliding_window)) if kind == SLIDING else length
    widths = [grown(kind, k) for kind, k in zip(cfg.layer_types, cache["k"])]

    def pad(x: jax.Array, axis: int, width: int) -> jax.Array:
        widths = [(0, 0)] * x.ndim
        widths[axis] = (0, width - x.shape[axis])
        return jnp.pad(x, widths)

    return {
        "k": tuple(pad(k, 3, w) for k, w in zip(cache["k"], widths)),
        "v": tuple(pad(v, 2, w) for v, w in zip(cache["v"], widths)),
        "pos": tuple(pad(p, 1, w) for p, w in zip(cache["pos"], widths)),
        "seg": tuple(pad(s, 1, w) for s, w in zip(cache["seg"], widths)),
    }
