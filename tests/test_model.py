"""The Flax Gemma model: masks, packing, sliding windows and the KV cache agree with full attention."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from training.config import FULL, SLIDING
from training.factory import ShapeError, build_model
from training.model import Gemma, grow_cache, init_cache


def small(base, family=3, window=8, layer_types=(SLIDING, FULL)):
    """The shared tiny shape as Gemma `family`, with its own window, layers and RoPE bases."""
    return base.replace(
        family=family,
        num_hidden_layers=len(layer_types),
        layer_types=layer_types,
        sliding_window=window,
        rope_local_base_freq=10_000.0,
        rope_theta=1_000_000.0,
        attn_logit_softcapping=50.0 if family == 2 else None,
        final_logit_softcapping=30.0 if family == 2 else None,
    )


def parameter_count(model):
    return sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))


def forward(model, tokens, positions=None, segments=None):
    b, t = tokens.shape
    positions = jnp.tile(jnp.arange(t), (b, 1)) if positions is None else positions
    segments = jnp.ones((b, t), jnp.int32) if segments is None else segments
    return model(tokens, positions, segments)[0]


@pytest.mark.parametrize("family", [1, 2, 3])
@pytest.mark.parametrize("prompt", [12, 5])
def test_cached_decoding_matches_full_forward(family, prompt, tiny_config):
    """A prompt, then one token a step: the logits of one forward pass over all 20 tokens. Given the
    prompt length, the sliding layer's cache is a ring of max(window 8, prompt) slots, which wraps."""
    cfg = small(tiny_config, family, layer_types=(FULL, FULL) if family == 1 else (SLIDING, FULL))
    model = Gemma(cfg, rngs=nnx.Rngs(0))
    tokens = jax.random.randint(jax.random.key(1), (2, 20), 0, cfg.vocab_size)
    full = forward(model, tokens)
    pos = jnp.tile(jnp.arange(20), (2, 1))
    seg = jnp.ones((2, 20), jnp.int32)
    for cache in (init_cache(cfg, 2, 24), init_cache(cfg, 2, 24, prompt_len=prompt)):
        logits, cache = model(tokens[:, :prompt], pos[:, :prompt], seg[:, :prompt], cache, 0)
        steps = [logits]
        for i in range(prompt, 20):
            logits, cache = model(tokens[:, i : i + 1], pos[:, i : i + 1], seg[:, i : i + 1], cache, i)
            steps.append(logits)
        np.testing.assert_allclose(np.concatenate(steps, axis=1), full, atol=2e-5)
    assert [k.shape[-1] for k in cache["k"]] == ([24, 24] if family == 1 else [max(8, prompt), 24])
    with pytest.raises(ValueError, match="a cached call takes one token"):
        model(tokens[:, :2], pos[:, :2], seg[:, :2], cache, 23)  # two tokens past the end of a cache of 24
    # The rest as one chunk after the prompt, into a cache that does not wrap (GRPO's shared-prefix update).
    _, cache = model(tokens[:, :prompt], pos[:, :prompt], seg[:, :prompt], init_cache(cfg, 2, 20), 0)
    rest, _ = model(tokens[:, prompt:], pos[:, prompt:], seg[:, prompt:], cache, prompt)
    np.testing.assert_allclose(rest, full[:, prompt:], atol=2e-5)


def test_grown_cache_rings_hold_the_window(tiny_config):
    """Growing a cache adds slots to full-attention layers; a sliding layer stops at its window (or
    stays as wide as the prompt it took), and a written slot keeps its position."""
    cfg = small(tiny_config, window=8)
    cache = init_cache(cfg, 1, 6, prompt_len=4)
    cache["pos"] = tuple(p.at[0, 3].set(3) for p in cache["pos"])
    assert [k.shape[-1] for k in grow_cache(cfg, cache, 7)["k"]] == [7, 7]
    grown = grow_cache(cfg, grow_cache(cfg, cache, 12), 30)
    assert [k.shape[-1] for k in grown["k"]] == [8, 30]
    assert [v.shape[-2] for v in grown["v"]] == [8, 30] and [p[0, 3] for p in grown["pos"]] == [3, 3]
    assert [k.shape[-1] for k in grow_cache(cfg, init_cache(cfg, 1, 12, prompt_len=12), 30)["k"]] == [12, 30]


def test_packed_examples_do_not_see_each_other(tiny_config):
    cfg = small(tiny_config)
    model = Gemma(cfg, rngs=nnx.Rngs(0))
    a = jax.random.randint(jax.random.key(1), (1, 11), 0, cfg.vocab_size)
    b = jax.random.randint(jax.random.key(2), (1, 13), 0, cfg.vocab_size)
    packed = jnp.concatenate([a, b, jnp.zeros((1, 8), jnp.int32)], axis=1)
    positions = jnp.concatenate([jnp.arange(11), jnp.arange(13), jnp.zeros(8, jnp.int32)])[None]
    segments = jnp.concatenate([jnp.full(11, 1), jnp.full(13, 2), jnp.zeros(8, jnp.int32)])[None]
    out = forward(model, packed, positions, segments)
    np.testing.assert_allclose(out[:, :11], forward(model, a), atol=2e-5)
    np.testing.assert_allclose(out[:, 11:24], forward(model, b), atol=2e-5)


@pytest.mark.parametrize("family", [2, 3])
def test_query_blocks_equal_one_product_over_every_key(family, tiny_config):
    """A whole sequence attends a block of query rows at a time, skipping keys its mask hides;
    prefilling a cache attends with one product over every key: packed rows of 300 tokens
    (blocks of 75) with a 40-token window must give the same logits either way."""
    cfg = small(tiny_config, family, window=40, layer_types=(SLIDING, FULL))
    model = Gemma(cfg, rngs=nnx.Rngs(0))
    lengths = [(90, 150, 60), (300,)]
    tokens = jax.random.randint(jax.random.key(1), (2, 300), 0, cfg.vocab_size)
    positions = jnp.stack([jnp.concatenate([jnp.arange(n) for n in row]) for row in lengths])
    segments = jnp.stack([jnp.concatenate([jnp.full(n, i + 1) for i, n in enumerate(row)]) for row in lengths])
    blocked = forward(model, tokens, positions, segments)
    one_product, _ = model(tokens, positions, segments, init_cache(cfg, 2, 300), 0)
    np.testing.assert_allclose(blocked, one_product, atol=2e-5)


def test_sliding_window_hides_keys_outside_it(tiny_config):
    cfg = small(tiny_config, window=4, layer_types=(SLIDING,))
    model = Gemma(cfg, rngs=nnx.Rngs(0))
    tokens = jax.random.randint(jax.random.key(1), (1, 16), 0, cfg.vocab_size)
    changed = tokens.at[0, 2].set((tokens[0, 2] + 1) % cfg.vocab_size)
    before, after = forward(model, tokens), forward(model, changed)
    # position 2 is visible from queries 2..5 (window 4) and from no query after that
    assert not np.allclose(before[0, 5], after[0, 5])
    np.testing.assert_allclose(before[0, 6:], after[0, 6:], atol=1e-6)


def test_param_count_matches_config(tiny_config):
    cfg = small(tiny_config, 2)
    model = Gemma(cfg, rngs=nnx.Rngs(0))
    assert parameter_count(model) == cfg.num_params()


def test_tiny_preset_takes_its_shape_from_params():
    shape = dict(
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=5,
        num_attention_heads=4,
        num_key_value_heads=1,
        head_dim=8,
    )
    spec = {"preset": "tiny", "checkpoint": None, "tiny": shape, "param_dtype": "float32", "compute_dtype": "float32"}
    model = build_model(spec, vocab_size=50, seed=0)
    assert {key: getattr(model.config, key) for key in shape} == shape
    assert model.config.layer_types == (SLIDING, SLIDING, SLIDING, FULL, SLIDING)
    assert model.layers[4].mlp.up_proj.kernel.shape == (32, 48)
    assert parameter_count(model) == model.config.num_params()
    with pytest.raises(
        ShapeError, match=r"^model\.tiny: num_attention_heads must be a multiple of num_key_value_heads"
    ):
        build_model({**spec, "tiny": {**shape, "num_key_value_heads": 3}}, vocab_size=50, seed=0)


def test_matmul_gradients_equal_autodiff_of_a_plain_dot():
    """`matmul` reroutes only where XLA puts the weight gradient's transpose, not what it computes."""
    from training.matmul import matmul

    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(3, 40, 16)), jnp.float32)  # [batch, tokens, in]: rows span both leading axes
    kernel = jnp.asarray(rng.normal(size=(16, 24)), jnp.float32)
    weight = jnp.asarray(rng.normal(size=(3, 40, 24)), jnp.float32)

    def loss(dot):
        return jax.jit(jax.value_and_grad(lambda x, k: jnp.sum(jnp.tanh(dot(x, k)) * weight), argnums=(0, 1)))

    (ours, (dx, dk)), (ref, (dx_ref, dk_ref)) = loss(matmul)(x, kernel), loss(jnp.dot)(x, kernel)
    assert dk.shape == kernel.shape and dx.shape == x.shape
    np.testing.assert_allclose(ours, ref, rtol=1e-6)
    np.testing.assert_allclose(dx, dx_ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(dk, dk_ref, rtol=1e-5, atol=1e-5)


def test_rope_sin_and_cos_are_computed_once_per_base(tiny_config):
    """A training step evaluates RoPE's cos and sin once per (base, scale) and model call, not inside
    every layer's q and k fusions, forward and backward (XLA:CPU's sin and cos are scalar calls)."""
    cfg = small(tiny_config, layer_types=(SLIDING, FULL, SLIDING, FULL))  # two bases, each used twice
    graphdef, params = nnx.split(Gemma(cfg, rngs=nnx.Rngs(0)))
    tokens = jnp.zeros((2, 16), jnp.int32)
    positions, segments = jnp.tile(jnp.arange(16), (2, 1)), jnp.ones((2, 16), jnp.int32)

    def loss(p):
        return jnp.sum(nnx.merge(graphdef, p)(tokens, positions, segments)[0] ** 2)

    hlo = jax.jit(jax.grad(loss)).lower(params).compile().as_text()
    tables = [line.split("=")[1].split("{")[0].strip() for line in hlo.splitlines() if " cosine(" in line]
    assert tables == ["f32[2,16,4]"] * 2  # [B, T, hd/2] for each base


@pytest.mark.parametrize("cap", [None, 50.0])
def test_attend_gradients_equal_autodiff_of_masked_softmax_attention(cap):
    """`attend`'s flash-style backward computes autodiff's gradients, soft-capping and a fully masked
    (padding) query row included."""
    from training.attention import _NEG, attend, softcap

    rng = np.random.default_rng(0)
    b, heads, t, groups, s, hd = 2, 2, 5, 3, 7, 8
    q = jnp.asarray(rng.normal(size=(b, heads, t * groups, hd)), jnp.float32)
    kt = jnp.asarray(rng.normal(size=(b, heads, hd, s)), jnp.float32)
    v = jnp.asarray(rng.normal(size=(b, heads, s, hd)), jnp.float32)
    mask = jnp.asarray(rng.random((b, t, s)) < 0.6).at[1, 2].set(False)  # row (1, 2) sees no key
    weight = jnp.asarray(rng.normal(size=(b, heads, t * groups, hd)), jnp.float32)

    def plain(q, kt, v, mask, cap):
        logits = softcap(jnp.einsum("bkrh,bkhs->bkrs", q, kt), cap).reshape(b, heads, t, groups, s)
        probs = jax.nn.softmax(jnp.where(mask[:, None, :, None], logits, _NEG), axis=-1)
        return jnp.einsum("bkrs,bksh->bkrh", probs.reshape(b, heads, t * groups, s), v)

    def loss(fn):
        return jax.jit(jax.value_and_grad(lambda *x: jnp.sum(jnp.tanh(fn(*x, mask, cap)) * weight), argnums=(0, 1, 2)))

    (ours, grads), (ref, ref_grads) = loss(attend)(q, kt, v), loss(plain)(q, kt, v)
    np.testing.assert_allclose(ours, ref, rtol=1e-6)
    for got, want in zip(grads, ref_grads):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
