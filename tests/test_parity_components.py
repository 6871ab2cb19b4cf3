"""Each Gemma building block against its transformers counterpart, so a parity failure names its cause.

tests/test_parity.py compares whole models; here RMSNorm, RoPE (default and
linearly scaled, local and global bases), attention (1, 2 and 4 KV heads for 4
query heads, a sliding window shorter than the sequence and full attention) and
the gated MLP are compared one at a time, with every weight random (norm
weights included) and copied from the transformers module into ours.
"""

import json

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
from transformers.masking_utils import create_causal_mask, create_sliding_window_causal_mask  # noqa: E402
from transformers.models.gemma3 import modeling_gemma3 as hf  # noqa: E402

from training.config import FULL, SLIDING, GemmaConfig  # noqa: E402
from training.model import MLP, Attention, RMSNorm, rope, rope_tables  # noqa: E402

B, T, WINDOW = 2, 12, 4  # the window is a third of the sequence: it hides most keys of the late queries
HEADS, HEAD_DIM = 4, 8
ATOL = 1e-5


def configs(kv_heads: int = 2, rope_factor: float = 4.0) -> tuple[transformers.Gemma3TextConfig, GemmaConfig]:
    """A transformers Gemma 3 config (layer 0 sliding, layer 1 full with linear RoPE scaling) and ours, read from it."""
    rope_parameters = {
        SLIDING: {"rope_type": "default", "rope_theta": 10_000.0},
        FULL: {"rope_type": "linear", "factor": rope_factor, "rope_theta": 1e6},
    }
    theirs = transformers.Gemma3TextConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=HEADS,
        num_key_value_heads=kv_heads,
        head_dim=HEAD_DIM,
        sliding_window=WINDOW,
        query_pre_attn_scalar=12,
        layer_types=[SLIDING, FULL],
        rope_parameters=rope_parameters,
    )
    theirs._attn_implementation = "eager"
    return theirs, GemmaConfig.from_hf(json.loads(theirs.to_json_string()))


def randomise(module: torch.nn.Module, seed: int = 0) -> None:
    """Every weight random, norms included (they start at zero, which would hide a wrong norm)."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            p.normal_(0.0, 0.5 if "norm" in name else 0.3)


def copy_linear(ours: nnx.Linear, theirs: torch.nn.Linear) -> None:
    ours.kernel[...] = jnp.asarray(theirs.weight.detach().numpy().T)


def copy_norm(ours: RMSNorm, theirs: torch.nn.Module) -> None:
    ours.weight[...] = jnp.asarray(theirs.weight.detach().numpy())


def inputs(width: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((B, T, width)).astype(np.float32)


def assert_close(ours, theirs: torch.Tensor) -> None:
    np.testing.assert_allclose(np.asarray(ours), theirs.detach().numpy(), atol=ATOL, rtol=1e-5)


def test_rms_norm():
    theirs = hf.Gemma3RMSNorm(HEAD_DIM, eps=1e-6)
    randomise(theirs)
    ours = RMSNorm(HEAD_DIM, 1e-6, jnp.float32)
    copy_norm(ours, theirs)
    x = 3.0 * inputs(HEAD_DIM)
    assert_close(ours(jnp.asarray(x)), theirs(torch.tensor(x)))


@pytest.mark.parametrize("layer", [0, 1], ids=["sliding-default-rope", "full-linear-rope"])
def test_rope(layer):
    theirs_cfg, cfg = configs()
    attn = Attention(cfg, layer, jnp.float32, jnp.float32, nnx.Rngs(0))  # where our config puts base and scale
    positions = np.sort(np.random.default_rng(2).integers(0, 4000, (B, T)), axis=-1)  # far apart: the scale shows
    q = np.random.default_rng(3).standard_normal((B, HEADS, T, HEAD_DIM)).astype(np.float32)  # transformers' layout
    cos, sin = hf.Gemma3RotaryEmbedding(theirs_cfg)(torch.tensor(q), torch.tensor(positions), cfg.layer_types[layer])
    expected, _ = hf.apply_rotary_pos_emb(torch.tensor(q), torch.tensor(q), cos, sin)
    ours = rope(jnp.asarray(q.transpose(0, 2, 1, 3)), attn.rope_tables(jnp.asarray(positions)))
    assert_close(ours.transpose(0, 2, 1, 3), expected)
    if layer == 1:  # the test can tell a scaled RoPE from an unscaled one
        unscaled_tables = rope_tables(jnp.asarray(positions), attn.head_dim, attn.rope_base)
        unscaled = rope(jnp.asarray(q.transpose(0, 2, 1, 3)), unscaled_tables)
        assert np.abs(np.asarray(unscaled.transpose(0, 2, 1, 3)) - expected.numpy()).max() > 0.1


def hf_mask(
    config: transformers.Gemma3TextConfig, layer: int, x: torch.Tensor, positions: torch.Tensor
) -> torch.Tensor:
    """The additive mask transformers' model builds for this layer's attention type."""
    make = create_sliding_window_causal_mask if config.layer_types[layer] == SLIDING else create_causal_mask
    return make(
        config=config,
        inputs_embeds=x,
        attention_mask=torch.ones(B, T, dtype=torch.long),
        past_key_values=None,
        position_ids=positions,
    )


@pytest.mark.parametrize("kv_heads", [1, 2, 4], ids=["mqa", "gqa", "mha"])
@pytest.mark.parametrize("layer", [0, 1], ids=["sliding-window", "full"])
def test_attention(kv_heads, layer):
    theirs_cfg, cfg = configs(kv_heads)
    theirs = hf.Gemma3Attention(theirs_cfg, layer).eval()
    randomise(theirs)
    ours = Attention(cfg, layer, jnp.float32, jnp.float32, nnx.Rngs(0))
    for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
        copy_linear(getattr(ours, name), getattr(theirs, name))
    copy_norm(ours.q_norm, theirs.q_norm)
    copy_norm(ours.k_norm, theirs.k_norm)

    x = inputs(cfg.hidden_size)
    positions = torch.arange(T).repeat(B, 1)
    rotary = hf.Gemma3RotaryEmbedding(theirs_cfg)(torch.tensor(x), positions, cfg.layer_types[layer])
    with torch.no_grad():
        expected, _ = theirs(
            torch.tensor(x),
            position_embeddings=rotary,
            attention_mask=hf_mask(theirs_cfg, layer, torch.tensor(x), positions),
        )
        everything, _ = theirs(
            torch.tensor(x),
            position_embeddings=rotary,
            attention_mask=hf_mask(theirs_cfg, 1, torch.tensor(x), positions),
        )
    got, _ = ours(jnp.asarray(x), jnp.asarray(positions.numpy()), jnp.ones((B, T), jnp.int32), None)
    assert_close(got, expected)
    if layer == 0:  # the window hides keys here: full attention would give another output
        assert np.abs(everything.numpy() - expected.numpy()).max() > 1e-2


def test_mlp():
    theirs_cfg, cfg = configs()
    theirs = hf.Gemma3MLP(theirs_cfg)
    randomise(theirs)
    ours = MLP(cfg, jnp.float32, jnp.float32, nnx.Rngs(0))
    for name in ("gate_proj", "up_proj", "down_proj"):
        copy_linear(getattr(ours, name), getattr(theirs, name))
    x = inputs(cfg.hidden_size)
    with torch.no_grad():
        assert_close(ours(jnp.asarray(x)), theirs(torch.tensor(x)))
