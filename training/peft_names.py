"""PEFT's names for the LoRA adapters of a Gemma, in one place: training/lora.py (JAX) writes and reads
them, and so does the Tunix engine on both sides of its subprocess (training/tunix_launch.py imports no JAX).
"""

from __future__ import annotations

ATTENTION_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP_TARGETS = ("gate_proj", "up_proj", "down_proj")
TARGETS = ATTENTION_TARGETS + MLP_TARGETS


def adapter_name(layer: int, target: str, which: str) -> str:
    """PEFT's name of one adapter matrix of `target` in decoder layer `layer`; `which`: "A" or "B"."""
    module = "self_attn" if target in ATTENTION_TARGETS else "mlp"
    return f"base_model.model.model.layers.{layer}.{module}.{target}.lora_{which}.weight"
