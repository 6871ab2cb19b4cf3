"""Logit parity with the transformers PyTorch Gemma 1/2/3 on tiny random configs, both directions.

The configs are chosen so that every feature is exercised: GQA, a sliding window
much shorter than the sequence (8 vs 28), soft-capping small enough to bite,
Gemma 3's q/k norms with different local/global RoPE bases, and a left-padded
batch (only real positions are compared). Every weight, norms included, is
random and large enough that the logits spread over several units.
"""

import json
import logging
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from training.config import FULL, SLIDING, GemmaConfig  # noqa: E402
from training.hf_io import load_pretrained, save_pretrained  # noqa: E402
from training.model import Gemma  # noqa: E402

ATOL = 1e-4
VOCAB, T, PADS = 128, 28, (0, 5, 11)  # row 2 keeps 17 real tokens: more than twice the window
SHAPE = dict(
    vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_attention_heads=4, num_key_value_heads=2, head_dim=16
)
ROPE3 = {SLIDING: {"rope_type": "default", "rope_theta": 10_000.0}, FULL: {"rope_type": "default", "rope_theta": 1e6}}


def hf_model(case: str, stds: tuple[float, float, float] = (0.15, 0.3, 0.15)):
    """A tiny random transformers model (eager attention, float32) for one named case.

    `stds`: the normal init of the embedding, the norm weights and the projections.
    """
    c = transformers
    if case == "gemma1":
        cfg = c.GemmaConfig(**SHAPE, num_hidden_layers=2)
    elif case.startswith("gemma2"):
        caps = (5.0, 5.0) if case == "gemma2-smallcaps" else (50.0, 30.0)
        cfg = c.Gemma2Config(
            **SHAPE,
            num_hidden_layers=4,
            sliding_window=8,
            query_pre_attn_scalar=24,
            attn_logit_softcapping=caps[0],
            final_logit_softcapping=caps[1],
        )
    else:
        rope = json.loads(json.dumps(ROPE3))
        extra = {}
        if case == "gemma3-linear-rope":
            rope[FULL] = {"rope_type": "linear", "factor": 4.0, "rope_theta": 1e6}
        if case == "gemma3-caps":  # transformers' Gemma 3 applies the final cap and ignores the attention one
            extra = dict(attn_logit_softcapping=5.0, final_logit_softcapping=5.0)
        cfg = c.Gemma3TextConfig(
            **SHAPE,
            num_hidden_layers=4,
            sliding_window=8,
            query_pre_attn_scalar=24,
            layer_types=[SLIDING, SLIDING, FULL, SLIDING],
            rope_parameters=rope,
            **extra,
        )
    torch.manual_seed(0)
    model = c.AutoModelForCausalLM.from_config(cfg, attn_implementation="eager").eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.normal_(0.0, stds[1] if "norm" in name else stds[0] if "embed" in name else stds[2])
    return model


def batch():
    """Tokens, positions and an attention mask for a left-padded batch (positions count real tokens only)."""
    rng = np.random.default_rng(1)
    ids = rng.integers(0, VOCAB, (len(PADS), T))
    mask = np.ones((len(PADS), T), np.int64)
    for row, pad in enumerate(PADS):
        mask[row, :pad] = 0
    positions = np.maximum(np.cumsum(mask, -1) - 1, 0)
    return ids, positions, mask


def hf_logits(model, ids, positions, mask) -> np.ndarray:
    with torch.no_grad():
        out = model(
            input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask), position_ids=torch.tensor(positions)
        )
    return out.logits.numpy()


def our_logits(model: Gemma, ids, positions, mask) -> np.ndarray:
    graphdef, state = nnx.split(model)
    fwd = jax.jit(lambda s, *xs: nnx.merge(graphdef, s)(*xs)[0])  # one compilation, not one per op
    return np.asarray(fwd(state, *(jnp.asarray(x, jnp.int32) for x in (ids, positions, mask))))


def max_diff(a, b, mask) -> float:
    real = mask.astype(bool)
    return float(np.abs(a[real] - b[real]).max())


CASES = ["gemma1", "gemma2", "gemma2-smallcaps", "gemma3", "gemma3-caps", "gemma3-linear-rope"]


@pytest.mark.parametrize("case", CASES)
def test_transformers_checkpoint_loads_with_the_same_logits(case, tmp_path):
    ref_model = hf_model(case)
    ref_model.save_pretrained(tmp_path, safe_serialization=True)
    ours = load_pretrained(tmp_path)
    ids, positions, mask = batch()
    ref = hf_logits(ref_model, ids, positions, mask)
    assert np.abs(ref[mask.astype(bool)]).max() > 3.0  # logits far from uniform: a wrong feature shows
    assert max_diff(our_logits(ours, ids, positions, mask), ref, mask) <= ATOL


def test_window_rope_and_caps_each_change_the_logits(tmp_path):
    """The parity cases are sensitive: an off-by-one window, no cap or a wrong RoPE base fails them."""
    ref_model = hf_model("gemma2-smallcaps")
    ref_model.save_pretrained(tmp_path)
    ids, positions, mask = batch()
    ref = hf_logits(ref_model, ids, positions, mask)

    def broken(edit) -> float:
        model = load_pretrained(tmp_path)
        for block in model.layers:
            edit(block.self_attn)
        return max_diff(our_logits(model, ids, positions, mask), ref, mask)

    def widen(attn):  # `q - k <= window` instead of transformers' `q - k < window`
        attn.window = attn.window + 1 if attn.window else None

    assert broken(widen) > 1e-2
    assert broken(lambda attn: setattr(attn, "softcap", None)) > 1e-2
    assert broken(lambda attn: setattr(attn, "rope_base", attn.rope_base * 10)) > 1e-2


def random_gemma(cfg: GemmaConfig, seed: int = 0) -> Gemma:
    """Our model with every parameter random, norms included (they start at zero, which would hide a
    missing norm). Filled from numpy into an abstract model: no per-op compilation of the initialisers."""
    model = nnx.eval_shape(lambda: Gemma(cfg, rngs=nnx.Rngs(0)))
    leaves, treedef = jax.tree.flatten(nnx.state(model, nnx.Param))
    rng = np.random.default_rng(seed)
    nnx.update(
        model, jax.tree.unflatten(treedef, [jnp.asarray(0.15 * rng.standard_normal(x.shape), x.dtype) for x in leaves])
    )
    return model


def our_config(family: int) -> GemmaConfig:
    layer_types = (FULL, FULL) if family == 1 else (SLIDING, FULL, SLIDING, SLIDING)
    return GemmaConfig(
        family=family,
        **SHAPE,
        num_hidden_layers=len(layer_types),
        layer_types=layer_types,
        query_pre_attn_scalar=16 if family == 1 else 24,
        sliding_window=None if family == 1 else 8,
        rope_theta=1e6 if family == 3 else 1e4,
        rope_local_base_freq=1e4,
        attn_logit_softcapping=5.0 if family == 2 else None,
        final_logit_softcapping=None if family == 1 else 5.0,
    )


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage())


@pytest.mark.parametrize("family", [1, 2, 3])
def test_our_checkpoint_loads_in_transformers_cleanly(family, tmp_path):
    ours = random_gemma(our_config(family))
    save_pretrained(ours, tmp_path)
    records = _Records()
    hf_logger = logging.getLogger("transformers")
    hf_logger.addHandler(records)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model, info = transformers.AutoModelForCausalLM.from_pretrained(
                tmp_path, attn_implementation="eager", output_loading_info=True
            )
    finally:
        hf_logger.removeHandler(records)
    assert type(model).__name__ == ours.config.architecture
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs")), info
    # A ResourceWarning is another test's garbage collected meanwhile (a notebook kernel's sockets), not the load's.
    assert records.messages == [] and [str(w.message) for w in caught if w.category is not ResourceWarning] == []
    ids, positions, mask = batch()
    ref = hf_logits(model.eval(), ids, positions, mask)
    assert max_diff(our_logits(ours, ids, positions, mask), ref, mask) <= ATOL


@pytest.mark.parametrize("case", ["gemma1", "gemma2", "gemma3", "gemma3-linear-rope"])
def test_config_json_round_trips(case, tmp_path):
    """transformers' config.json -> GemmaConfig -> config.json is the same file (less the version stamp)."""
    hf_model(case).save_pretrained(tmp_path)
    written = json.loads((tmp_path / "config.json").read_text())
    written.pop("transformers_version")
    ours = GemmaConfig.from_hf(written)
    assert ours.to_hf() == written
    assert GemmaConfig.from_hf(ours.to_hf()) == ours


def test_transformers4_style_config_reads_the_same():
    """Hub configs written by transformers 4.x: flat rope_theta / rope_local_base_freq / rope_scaling, a pattern."""
    v4 = {
        "architectures": ["Gemma3ForCausalLM"],
        "model_type": "gemma3_text",
        "vocab_size": 262144,
        "hidden_size": 1152,
        "intermediate_size": 6912,
        "num_hidden_layers": 26,
        "num_attention_heads": 4,
        "num_key_value_heads": 1,
        "head_dim": 256,
        "query_pre_attn_scalar": 256,
        "sliding_window": 512,
        "sliding_window_pattern": 6,
        "rope_theta": 1000000.0,
        "rope_local_base_freq": 10000.0,
        "rope_scaling": None,
        "max_position_embeddings": 32768,
        "eos_token_id": [1, 106],
        "attn_logit_softcapping": None,
        "final_logit_softcapping": None,
        "hidden_activation": "gelu_pytorch_tanh",
    }
    from training.config import gemma3_1b

    assert GemmaConfig.from_hf(v4) == gemma3_1b()
    hf5 = transformers.Gemma3TextConfig(**{k: v for k, v in v4.items() if k not in ("architectures", "model_type")})
    assert GemmaConfig.from_hf(hf5.to_dict()) == gemma3_1b()
    scaled = GemmaConfig.from_hf(v4 | {"rope_scaling": {"rope_type": "linear", "factor": 8.0}})
    assert scaled.rope_scaling_factor == 8.0 and scaled.rope_theta == 1e6


@pytest.mark.parametrize(
    "change, message",
    [
        ({"tie_word_embeddings": False}, "tie_word_embeddings"),
        ({"hidden_activation": "relu"}, "hidden_activation"),
        ({"use_bidirectional_attention": True}, "bidirectional"),
        ({"rope_parameters": {FULL: {"rope_type": "yarn", "factor": 2.0}, SLIDING: {}}}, "yarn"),
    ],
)
def test_unsupported_config_switches_are_refused(change, message):
    base = our_config(3).to_hf()
    with pytest.raises(ValueError, match=message):
        GemmaConfig.from_hf(base | change)
