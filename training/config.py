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
        """config.json as transformers 5 writes it for this architecture."""
        model_type = ARCHITECTURES[self.architecture][0]
        cfg: dict[str, Any] = {
            "architectures": [self.architecture],
            "model_type": model_type,
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "head_dim": self.head_dim,
            "hidden_activation": "gelu_pytorch_tanh",
            "rms_norm_eps": self.rms_norm_eps,
            "max_position_embeddings": self.max_position_embeddings,
            "attention_bias": False,
            "attention_dropout": 0.0,
            "pad_token_id": self.pad_token_id,
            "eos_token_id": list(self.eos_token_id) if isinstance(self.eos_token_id, tuple) else self.eos_token_id,
            "bos_token_id": self.bos_token_id,
            "tie_word_embeddings": True,
            "dtype": "float32",
        }
        if self.family == 1:
            cfg["rope_parameters"] = {"rope_type": "default", "rope_theta": self.rope_theta}
            return cfg
        cfg.update(
            layer_types=list(self.layer_types),
            sliding_window=self.sliding_window,
            query_pre_attn_scalar=self.query_pre_attn_scalar,
            attn_logit_softcapping=self.attn_logit_softcapping,
            final_logit_softcapping=self.final_logit_softcapping,
        )
        if self.family == 2:
            cfg["rope_parameters"] = {"rope_type": "default", "rope_theta": self.rope_theta}
        else:
            full: dict[str, Any] = {"rope_type": "default", "rope_theta": self.rope_theta}
            if self.rope_scaling_factor != 1.0:
                full = {"rope_type": "linear", "factor": self.rope_scaling_factor, "rope_theta": self.rope_theta}
            cfg["rope_parameters"] = {
                FULL: full,
                SLIDING: {"rope_type": "default", "rope_theta": self.rope_local_base_freq},
            }
        return cfg

    @classmethod
    def from_hf(cls, hf: dict[str, Any]) -> GemmaConfig:
        """Read a transformers config.json (4.x or 5.x key styles)."""
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
        n = hf["num_hidden_layers"]
        rope = hf.get("rope_parameters") or {}
        full_rope = rope.get(FULL, rope) if family == 3 else rope
        local_rope = rope.get(SLIDING, {}) if family == 3 else {}
        rope_theta = full_rope.get("rope_theta", hf.get("rope_theta", 10_000.0))
        scaling = hf.get("rope_scaling") or (full_rope if full_rope.get("rope_type") == "linear" else {})
        layer_types = hf.get("layer_types")
        if layer_types is None:
            if family == 1:
                layer_types = [FULL] * n
            elif family == 2:
                layer_types = [SLIDING if (i + 1) % 2 else FULL for i in range(n)]
            else:
                pattern = hf.get("sliding_window_pattern", 6)
                layer_types = [SLIDING if (i + 1) % pattern else FULL for i in range(n)]
        eos = hf.get("eos_token_id", 1)
        return cls(
            family=family,
            vocab_size=hf["vocab_size"],
            hidden_size=hf["hidden_size"],
            intermediate_size=hf["intermediate_size"],
            num_hidden_layers=n,
            num_attention_heads=hf["num_attention_heads"],
            num_key_value_heads=hf.get("num_key_value_heads", hf["num_attention_heads"]),
            head_dim=hf.get("head_dim", hf["hidden_size"] // hf["num_attention_heads"]),
            layer_types=tuple(layer_types),
            query_pre_attn_scalar=hf.get("query_pre_attn_scalar", hf.get("head_dim", 256)),
            rms_norm_eps=hf.get("rms_norm_eps", 1e-6),
            rope_theta=float(rope_theta),
            rope_local_base_freq=float(local_rope.get("rope_theta", hf.get("rope_local_base_freq", 10_000.0))),
            rope_scaling_factor=float(scaling.get("factor", 1.0)),
            sliding_window=hf.get("sliding_window") if family > 1 else None,
            attn_logit_softcapping=hf.get("attn_logit_softcapping") if family > 1 else None,
            final_logit_softcapping=hf.get("final_logit_softcapping") if family > 1 else None,
            max_position_embeddings=hf.get("max_position_embeddings", 8192),
            pad_token_id=hf.get("pad_token_id", 0) or 0,
            eos_token_id=tuple(eos) if isinstance(eos, list) else eos,
            bos_token_id=hf.get("bos_token_id", 2),
        )


def gemma3_layer_types(n: int, pattern: int = 6) -> tuple[str, ...]:
    """Gemma 3: `pattern - 1` sliding-window layers, then one global layer."""
    return tuple(SLIDING if (i + 1) % pattern else FULL for i in range(n))


def tiny(vocab_size: int) -> GemmaConfig:
    """~4M-parameter Gemma-3-architecture model trained from scratch on CPU."""
    return GemmaConfig(
        family=3,
        vocab_size=vocab_size,
        hidden_size=256,
        intermediate_size=1024,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=64,
        layer_types=(SLIDING, SLIDING, SLIDING, FULL),
        query_pre_attn_scalar=64,
        sliding_window=128,
        rope_theta=10_000.0,
        rope_local_base_freq=10_000.0,
        max_position_embeddings=2048,
    )


def gemma3_1b() -> GemmaConfig:
    """The published Gemma 3 1B shape (for random-init checkpoints and benchmarks)."""
    return GemmaConfig(
        family=3,
        vocab_size=262_144,
        hidden_size=1152,
        intermediate_size=6912,
        num_hidden_layers=26,
        num_attention_heads=4,
        num_key_value_heads=1,
        head_dim=256,
        layer_types=gemma3_layer_types(26),
        query_pre_attn_scalar=256,
        sliding_window=512,
        rope_theta=1_000_000.0,
        rope_local_base_freq=10_000.0,
        max_position_embeddings=32_768,
        eos_token_id=(1, 106),
    )


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


PRESET_SHAPES = {"gemma3-1b": gemma3_1b, "gemma2-2b": gemma2_2b}
