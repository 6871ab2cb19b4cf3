"""Gemma-family architecture config, presets, and the Hugging Face config.json mapping."""

from __future__ import annotations

import dataclasses
from typing import Any

SLIDING = "sliding_attention"
FULL = "full_attention"

# HF architecture name -> (model_type, family)
ARCHITECTURES = {
    "GemmaForCausalLM": ("gemma", 1),
    "Gemma2ForCausalLM": ("gemma2", 2),
    "Gemma3ForCausalLM": ("gemma3_text", 3),
}


@dataclasses.dataclass(frozen=True)
class GemmaConfig:
    """One config for Gemma 1/2/3; the family switches norms, soft-capping and RoPE bases."""

    family: int  # 1, 2 or 3
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    layer_types: tuple[str, ...]
    query_pre_attn_scalar: float
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10_000.0  # full-attention layers
    rope_local_base_freq: float = 10_000.0  # sliding-window layers (Gemma 3)
    rope_scaling_factor: float = 1.0  # linear scaling of full-attention RoPE (Gemma 3 4B+)
    sliding_window: int | None = None
    attn_logit_softcapping: float | None = None
    final_logit_softcapping: float | None = None
    max_position_embeddings: int = 8192
    pad_token_id: int = 0
    eos_token_id: int | tuple[int, ...] = 1
    bos_token_id: int = 2

    def __post_init__(self) -> None:
        if len(self.layer_types) != self.num_hidden_layers:
            raise ValueError(f"layer_types has {len(self.layer_types)} entries for {self.num_hidden_layers} layers")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError("num_attention_heads must be a multiple of num_key_value_heads")
        if SLIDING in self.layer_types and not self.sliding_window:
            raise ValueError("sliding-window layers need sliding_window")
        if self.family == 1 and (self.query_pre_attn_scalar != self.head_dim or SLIDING in self.layer_types):
            # config.json cannot express either for Gemma 1: transformers would run a different model.
            raise ValueError("Gemma 1 has only full-attention layers and query_pre_attn_scalar == head_dim")
        if self.family == 1 and (self.attn_logit_softcapping or self.final_logit_softcapping):
            raise ValueError("Gemma 1 has no logit soft-capping")
        if self.family == 3 and self.attn_logit_softcapping:
            raise ValueError("Gemma 3 has no attention soft-capping (transformers ignores attn_logit_softcapping)")
        if self.family != 3 and self.rope_scaling_factor != 1.0:
            raise ValueError("RoPE scaling is only supported for Gemma 3")

    @property
    def architecture(self) -> str:
        return {1: "GemmaForCausalLM", 2: "Gemma2ForCausalLM", 3: "Gemma3ForCausalLM"}[self.family]

    @property
    def use_qk_norm(self) -> bool:
        return self.family == 3

    @property
    def use_sandwich_norms(self) -> bool:
        """Gemma 2/3 normalise block outputs too (post-attention and pre/post feed-forward)."""
        return self.family >= 2

    def rope_base(self, layer: int) -> float:
        return self.rope_local_base_freq if self.layer_types[layer] == SLIDING else self.rope_theta

    def num_params(self) -> int:
        d, h, k, hd = self.hidden_size, self.num_attention_heads, self.num_key_value_heads, self.head_dim
        attn = d * hd * (2 * h + 2 * k)
        mlp = 3 * d * self.intermediate_size
        norms = (4 if self.use_sandwich_norms else 2) * d + (2 * hd if self.use_qk_norm else 0)
        return self.vocab_size * d + self.num_hidden_layers * (attn + mlp + norms) + d

    def replace(self, **changes: Any) -> GemmaConfig:
        return dataclasses.replace(self, **changes)

    # ------------------------------------------------------------ HF mapping

    def to_hf(self) -> dict[str, Any]:
        """config.json exactly as transformers 5 writes it for this architecture (less `transformers_version`)."""
        cfg: dict[str, Any] = {
            "architectures": [self.architecture],
            "model_type": ARCHITECTURES[self.architecture][0],
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "head_dim": self.head_dim,
            "rms_norm_eps": self.rms_norm_eps,
            "max_position_embeddings": self.max_position_embeddings,
            "attention_bias": False,
            "attention_dropout": 0.0,
            "initializer_range": 0.02,
            "use_cache": True,
            "pad_token_id": self.pad_token_id,
            "eos_token_id": list(self.eos_token_id) if isinstance(self.eos_token_id, tuple) else self.eos_token_id,
            "bos_token_id": self.bos_token_id,
            "tie_word_embeddings": True,
            "dtype": "float32",
            "use_bidirectional_attention": None,
        }
        if self.family == 1:
            # Gemma 1 names its activation differently and always scales queries by head_dim ** -0.5.
            cfg["hidden_act"] = "gelu_pytorch_tanh"
            cfg["rope_parameters"] = {"rope_type": "default", "rope_theta": self.rope_theta}
            return cfg
        cfg.update(
            hidden_activation="gelu_pytorch_tanh",
            layer_types=list(self.layer_types),
            sliding_window=self.sliding_window,
            query_pre_attn_scalar=self.query_pre_attn_scalar,
            attn_logit_softcapping=self.attn_logit_softcapping,
            final_logit_softcapping=self.final_logit_softcapping,
        )
        if self.family == 2:
            cfg["rope_parameters"] = {"rope_type": "default", "rope_theta": self.rope_theta}
            return cfg
        full: dict[str, Any] = {"rope_type": "default", "rope_theta": self.rope_theta}
        if self.rope_scaling_factor != 1.0:
            full = {"rope_type": "linear", "factor": self.rope_scaling_factor, "rope_theta": self.rope_theta}
        cfg.update(
            rope_parameters={FULL: full, SLIDING: {"rope_type": "default", "rope_theta": self.rope_local_base_freq}},
            use_bidirectional_attention=False,
            # A legacy field transformers 5 still writes (its default); `layer_types` is what counts.
            _sliding_window_pattern=6,
        )
        return cfg

    @classmethod
    def from_hf(cls, hf: dict[str, Any]) -> GemmaConfig:
        """Read a transformers config.json (4.x or 5.x key styles); ValueError for what the model cannot run."""
        archs = hf.get("architectures") or []
        arch = next((a for a in archs if a in ARCHITECTURES), None)
        if arch is None:
            by_type = {mt: a for a, (mt, _) in ARCHITECTURES.items()}
            arch = by_type.get(hf.get("model_type", ""))
        if arch is None:
            raise ValueError(
                f"unknown architecture {archs or hf.get('model_type')!r}; expected one of {sorted(ARCHITECTURES)}"
            )
        family = ARCHITECTURES[arch][1]
        _check_supported(hf)
        n = hf["num_hidden_layers"]
        heads = hf["num_attention_heads"]
        head_dim = hf.get("head_dim") or hf["hidden_size"] // heads
        full_rope, local_rope = _rope_parameters(hf, family)
        layer_types = hf.get("layer_types")
        if layer_types is None:
            if family == 1:
                layer_types = [FULL] * n
            elif family == 2:
                layer_types = [SLIDING if (i + 1) % 2 else FULL for i in range(n)]
            else:
                layer_types = list(gemma3_layer_types(n, hf.get("sliding_window_pattern", 6)))
        eos = hf.get("eos_token_id", 1)
        pad = hf.get("pad_token_id", 0)
        return cls(
            family=family,
            vocab_size=hf["vocab_size"],
            hidden_size=hf["hidden_size"],
            intermediate_size=hf["intermediate_size"],
            num_hidden_layers=n,
            num_attention_heads=heads,
            num_key_value_heads=hf.get("num_key_value_heads") or heads,
            head_dim=head_dim,
            layer_types=tuple(layer_types),
            # transformers' Gemma 1 ignores query_pre_attn_scalar and scales by head_dim ** -0.5.
            query_pre_attn_scalar=head_dim if family == 1 else hf.get("query_pre_attn_scalar", 256),
            rms_norm_eps=hf.get("rms_norm_eps", 1e-6),
            rope_theta=float(full_rope["rope_theta"]),
            rope_local_base_freq=float(local_rope["rope_theta"]),
            rope_scaling_factor=float(full_rope.get("factor", 1.0)),
            sliding_window=hf.get("sliding_window", 4096) if family > 1 else None,  # transformers default
            # transformers' Gemma 3 never soft-caps attention, whatever its config says.
            attn_logit_softcapping=hf.get("attn_logit_softcapping") if family == 2 else None,
            final_logit_softcapping=hf.get("final_logit_softcapping") if family > 1 else None,
            max_position_embeddings=hf.get("max_position_embeddings", 8192),
            pad_token_id=0 if pad is None else pad,
            eos_token_id=tuple(eos) if isinstance(eos, list) else eos,
            bos_token_id=hf.get("bos_token_id", 2),
        )


def _check_supported(hf: dict[str, Any]) -> None:
    """Refuse config switches this implementation does not have, rather than run a different model."""
    act = hf.get("hidden_activation") or hf.get("hidden_act") or "gelu_pytorch_tanh"
    if act not in ("gelu_pytorch_tanh", "gelu"):  # Gemma 1 configs say "gelu" but mean the tanh approximation
        raise ValueError(f"hidden_activation {act!r} is not supported (expected gelu_pytorch_tanh)")
    if hf.get("tie_word_embeddings") is False:
        raise ValueError("tie_word_embeddings false is not supported (the LM head is the embedding)")
    if hf.get("attention_bias"):
        raise ValueError("attention_bias true is not supported")
    if hf.get("use_bidirectional_attention"):
        raise ValueError("use_bidirectional_attention true is not supported (decoder-only)")


def _rope_parameters(hf: dict[str, Any], family: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """(full-attention, sliding-attention) RoPE parameters from 5.x `rope_parameters` or 4.x flat keys.

    Only Gemma 3 may scale RoPE (linearly, on its global layers): that is all the released models use.
    """
    rope = dict(hf.get("rope_parameters") or {})
    if family == 3 and (FULL in rope or SLIDING in rope):
        full, local = dict(rope.get(FULL) or {}), dict(rope.get(SLIDING) or {})
    else:  # one dict for every layer (5.x Gemma 1/2) or 4.x flat keys
        full = rope or {"rope_theta": hf.get("rope_theta", 1_000_000.0 if family == 3 else 10_000.0)}
        full.update({k: v for k, v in (hf.get("rope_scaling") or {}).items() if k not in full})
        local = {"rope_theta": hf.get("rope_local_base_freq", 10_000.0)} if family == 3 else dict(full)
    full.setdefault("rope_theta", 1_000_000.0 if family == 3 else 10_000.0)
    local.setdefault("rope_theta", 10_000.0)
    for name, params in (("full_attention", full), ("sliding_attention", local)):
        kind = params.get("rope_type", params.get("type", "default"))
        allowed = ("default", "linear") if family == 3 and name == "full_attention" else ("default",)
        if kind not in allowed:
            raise ValueError(f"rope_type {kind!r} for {name} layers is not supported (expected one of {allowed})")
    return full, local


def gemma3_layer_types(n: int, pattern: int = 6) -> tuple[str, ...]:
    """Gemma 3: `pattern - 1` sliding-window layers, then one global layer."""
    return tuple(SLIDING if (i + 1) % pattern else FULL for i in range(n))


def tiny(
    vocab_size: int,
    hidden_size: int = 256,
    intermediate_size: int = 256,
    num_hidden_layers: int = 4,
    num_attention_heads: int = 4,
    num_key_value_heads: int = 2,
    head_dim: int = 64,
) -> GemmaConfig:
    """The Gemma-3-architecture model trained from scratch on CPU (params.yaml `model.tiny`).

    The default (1.8M parameters) has an MLP as wide as the residual stream: at a
    fixed CPU budget a narrow MLP buys more steps, and more steps beat width
    (docs/results/2026-11-26-sft-recipe.md). Every fourth layer attends globally.
    """
    return GemmaConfig(
        family=3,
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=num_attention_heads,
        num_key_value_heads=num_key_value_heads,
        head_dim=head_dim,
        layer_types=gemma3_layer_types(num_hidden_layers, pattern=4),
        query_pre_attn_scalar=head_dim,
        sliding_window=128,
        rope_theta=10_000.0,
        rope_local_base_freq=10_000.0,
        max_position_embeddings=2048,
    )


def _published_gemma3(hidden_size: int, intermediate_size: int, num_hidden_layers: int) -> GemmaConfig:
    """The small published Gemma 3 text models: 262k vocabulary, 4 query heads and one KV head of 256,
    five sliding-window (512) layers to one global."""
    return GemmaConfig(
        family=3,
        vocab_size=262_144,
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=4,
        num_key_value_heads=1,
        head_dim=256,
        layer_types=gemma3_layer_types(num_hidden_layers),
        query_pre_attn_scalar=256,
        sliding_window=512,
        rope_theta=1_000_000.0,
        rope_local_base_freq=10_000.0,
        max_position_embeddings=32_768,
        eos_token_id=(1, 106),
    )


def gemma3_270m() -> GemmaConfig:
    """The published Gemma 3 270M shape: most of its parameters are the embedding."""
    return _published_gemma3(hidden_size=640, intermediate_size=2048, num_hidden_layers=18)


def gemma3_1b() -> GemmaConfig:
    """The published Gemma 3 1B shape (for random-init checkpoints and benchmarks)."""
    return _published_gemma3(hidden_size=1152, intermediate_size=6912, num_hidden_layers=26)


def gemma2_2b() -> GemmaConfig:
    """The published Gemma 2 2B shape."""
    return GemmaConfig(
        family=2,
        vocab_size=256_000,
        hidden_size=2304,
        intermediate_size=9216,
        num_hidden_layers=26,
        num_attention_heads=8,
        num_key_value_heads=4,
        head_dim=256,
        layer_types=tuple(SLIDING if (i + 1) % 2 else FULL for i in range(26)),
        query_pre_attn_scalar=256,
        sliding_window=4096,
        attn_logit_softcapping=50.0,
        final_logit_softcapping=30.0,
        max_position_embeddings=8192,
        eos_token_id=(1, 107),
    )


PRESET_SHAPES = {"gemma3-270m": gemma3_270m, "gemma3-1b": gemma3_1b, "gemma2-2b": gemma2_2b}
# What makes a checkpoint the preset's model: its architecture and shape (not ids, dtypes or context length).
SHAPE_FIELDS = (
    "family",
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "layer_types",
    "sliding_window",
)


def shape_mismatch(cfg: GemmaConfig, preset: str) -> str | None:
    """Why `cfg` is not preset `preset`'s model ("num_hidden_layers 26, gemma3-270m has 18"), or None."""
    expected = PRESET_SHAPES[preset]()
    if cfg.architecture != expected.architecture:
        return f"architecture {cfg.architecture}, preset {preset} expects {expected.architecture}"
    for field in SHAPE_FIELDS:
        got, want = getattr(cfg, field), getattr(expected, field)
        if got != want:
            if field == "layer_types":
                got, want = got.count(FULL), f"{want.count(FULL)} (full-attention layers)"
            return f"{field} {got}, preset {preset} has {want}"
    return None
