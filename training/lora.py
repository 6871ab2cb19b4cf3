"""LoRA adapters on the NNX Gemma: W x + s · B A x on chosen projections, the base frozen.

An adapter lives on the projection it adapts (`layers.3.self_attn.q_proj.lora.a`),
its two matrices typed `nnx.LoRAParam` (a `Param` subclass) so one filter tells the
trainable adapters from the frozen base. A starts he-uniform as in PEFT, B at zero:
step 0 is the base model. s = alpha / r, or alpha / √r with rsLoRA.

The model's projections call `project` (training.model.fused_linear), which adds each
adapter's low-rank term to its slice of a fused q/k/v or gate/up output. Two
trace-time switches act on every adapter at once, with no copy of any weight:
`adapters_off()` (the base model: the reference policy of RL) and `dropout(key)`
(training only; a model called outside it never drops).
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import math
from collections.abc import Iterator

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from training.config import GemmaConfig
from training.matmul import matmul
from training.peft_names import ATTENTION_TARGETS, MLP_TARGETS, TARGETS, adapter_name


class LoRAError(ValueError):
    """A LoRA spec the model cannot take; `key` names the field at fault (`model.lora`'s or `grpo.lora`'s:
    the stage that read the spec names it)."""

    def __init__(self, key: str, message: str):
        super().__init__(message)
        self.key = key


@dataclasses.dataclass(frozen=True)
class LoRASpec:
    rank: int = 0  # 0: no adapters (full fine-tuning)
    alpha: float = 16.0
    dropout: float = 0.0
    targets: tuple[str, ...] = TARGETS
    rslora: bool = False

    @property
    def scale(self) -> float:
        return self.alpha / (math.sqrt(self.rank) if self.rslora else self.rank)

    @classmethod
    def from_params(cls, lora: dict | None) -> LoRASpec:
        lora = dict(lora or {})
        if "targets" in lora:
            lora["targets"] = tuple(lora["targets"])
        return cls(**lora)


def projection_shapes(cfg: GemmaConfig) -> dict[str, tuple[int, int]]:
    """(in, out) of every projection LoRA can adapt."""
    d, f = cfg.hidden_size, cfg.intermediate_size
    q, kv = cfg.num_attention_heads * cfg.head_dim, cfg.num_key_value_heads * cfg.head_dim
    return {
        "q_proj": (d, q),
        "k_proj": (d, kv),
        "v_proj": (d, kv),
        "o_proj": (q, d),
        "gate_proj": (d, f),
        "up_proj": (d, f),
        "down_proj": (f, d),
    }


def validate(spec: LoRASpec, cfg: GemmaConfig) -> None:
    """Raise a LoRAError naming the field unless `spec` fits the model `cfg` describes."""
    if spec.rank < 0:
        raise LoRAError("rank", f"{spec.rank} is negative (0 turns LoRA off)")
    unknown = [t for t in spec.targets if t not in TARGETS]
    if unknown:
        raise LoRAError("targets", f"unknown module {unknown[0]!r} (known: {', '.join(TARGETS)})")
    if len(set(spec.targets)) != len(spec.targets):
        raise LoRAError("targets", f"{list(spec.targets)} names a module twice")
    if spec.rank == 0:
        return
    if not spec.targets:
        raise LoRAError("targets", "empty, but rank is above 0 (name the modules to adapt)")
    if spec.alpha <= 0:
        raise LoRAError("alpha", f"{spec.alpha} must be positive")
    if not 0 <= spec.dropout < 1:
        raise LoRAError("dropout", f"{spec.dropout} must be in [0, 1)")
    shapes = projection_shapes(cfg)
    for target in spec.targets:
        limit = min(shapes[target])
        if spec.rank > limit:
            raise LoRAError(
                "rank",
                f"{spec.rank} is larger than {target} ({shapes[target][0]} -> {shapes[target][1]}) allows ({limit})",
            )


class LoRA(nnx.Module):
    """One adapter: a [in, r] and b [r, out] (Flax layout; PEFT stores their transposes), float32."""

    def __init__(self, a: jax.Array, b: jax.Array, scale: float, dropout: float, index: int):
        self.a = nnx.LoRAParam(a)
        self.b = nnx.LoRAParam(b)
        self.scale = scale
        self.dropout = dropout
        self.index = index  # tells this adapter's dropout mask from the others'

    def delta(self, x: jax.Array, dtype: jnp.dtype) -> jax.Array:
        """s · B A x in `dtype` (the model's compute dtype); x: [..., in]."""
        key = _DROPOUT.get()
        if key is not None and self.dropout > 0:
            keep = jax.random.bernoulli(jax.random.fold_in(key, self.index), 1.0 - self.dropout, x.shape)
            x = jnp.where(keep, x / (1.0 - self.dropout), 0).astype(x.dtype)
        low = matmul(x.astype(dtype), self.a[...].astype(dtype))
        return matmul(low, self.b[...].astype(dtype)) * jnp.asarray(self.scale, dtype)


_OFF: contextvars.ContextVar[bool] = contextvars.ContextVar("lora_off", default=False)
_DROPOUT: contextvars.ContextVar[jax.Array | None] = contextvars.ContextVar("lora_dropout", default=None)


@contextlib.contextmanager
def adapters_off() -> Iterator[None]:
    """Inside (at trace time), every model computes as its base: the adapters are skipped, not copied.

    The hazard: it acts while JAX traces, not when a compiled function runs. A jitted function traced
    inside it computes the base on every later call, from any context, and one traced outside never
    skips them; a cache of compiled functions must hold the flag in its key (as training/grpo.py's
    `make_logprob_fn(..., base=...)` does), or it hands the base to a caller that wants the adapters."""
    token = _OFF.set(True)
    try:
        yield
    finally:
        _OFF.reset(token)


@contextlib.contextmanager
def dropout(key: jax.Array) -> Iterator[None]:
    """Inside (at trace time), adapters drop their inputs at `model.lora.dropout`, masks drawn from `key`."""
    token = _DROPOUT.set(key)
    try:
        yield
    finally:
        _DROPOUT.reset(token)


def adapter_of(layer: nnx.Module) -> LoRA | None:
    """The adapter a projection carries, unless there is none or `adapters_off()` is in force."""
    adapter = getattr(layer, "lora", None)
    return None if adapter is None or _OFF.get() else adapter


def _targets(model) -> Iterator[tuple[int, str, nnx.Linear]]:
    """(layer index, HF module name, the projection) over every adaptable projection."""
    for i, block in enumerate(model.layers):
        for name in ATTENTION_TARGETS:
            yield i, name, getattr(block.self_attn, name)
        for name in MLP_TARGETS:
            yield i, name, getattr(block.mlp, name)


_INIT_STREAM = 0x10A  # adapters draw from their own stream of `seed`, apart from the base's init


def add_adapters(model, spec: LoRASpec, seed: int) -> None:
    """Attach fresh adapters (A he-uniform like PEFT's kaiming_uniform(a=√5), B zero) to `spec.targets`.

    Nothing changes when `spec.rank` is 0. Deterministic in `seed`.
    """
    validate(spec, model.config)
    if spec.rank == 0:
        return
    key = jax.random.fold_in(jax.random.key(seed), _INIT_STREAM)
    wanted = [layer for _, name, layer in _targets(model) if name in spec.targets]
    for index, layer in enumerate(wanted):
        fan_in, fan_out = layer.kernel.shape
        bound = 1.0 / math.sqrt(fan_in)  # PEFT: kaiming_uniform_(a=√5) on a [r, in] weight
        a = jax.random.uniform(jax.random.fold_in(key, index), (fan_in, spec.rank), jnp.float32, -bound, bound)
        layer.lora = LoRA(a, jnp.zeros((spec.rank, fan_out), jnp.float32), spec.scale, spec.dropout, index)


def has_adapters(model) -> bool:
    return any(getattr(layer, "lora", None) is not None for _, _, layer in _targets(model))


def adapters(model) -> dict[tuple[int, str], LoRA]:
    """{(layer index, HF module name): adapter} of every adapted projection."""
    return {(i, name): layer.lora for i, name, layer in _targets(model) if getattr(layer, "lora", None) is not None}


def split_trainable(model) -> tuple[nnx.GraphDef, dict, dict]:
    """(graphdef, trainable, frozen) as plain nested dicts; `nnx.merge(graphdef, trainable, frozen)` rebuilds.

    With adapters, trainable = the adapters and frozen = the base; without, every
    parameter is trainable and frozen is empty (full fine-tuning).
    """
    trainable = nnx.LoRAParam if has_adapters(model) else nnx.Param
    graphdef, train_state, frozen_state = nnx.split(model, trainable, ...)
    return graphdef, nnx.to_pure_dict(train_state), nnx.to_pure_dict(frozen_state)


def merge_adapters(model) -> None:
    """Fold every adapter into its base weight in float32 (W + s · A B) and remove it, in place.

    The model is then a plain Gemma (its folded weights float32), as the merged export wants.
    """
    for _, _, layer in _targets(model):
        adapter = getattr(layer, "lora", None)
        if adapter is None:
            continue
        a, b = np.asarray(adapter.a[...], np.float32), np.asarray(adapter.b[...], np.float32)
        kernel = np.asarray(layer.kernel[...], np.float32) + np.float32(adapter.scale) * (a @ b)
        layer.kernel = nnx.Param(jnp.asarray(kernel))
        del layer.lora


def peft_tensors(model) -> dict[str, np.ndarray]:
    """The adapters under PEFT's names and shapes: lora_A.weight [r, in], lora_B.weight [out, r], float32."""
    out = {}
    for (i, name), adapter in adapters(model).items():
        out[adapter_name(i, name, "A")] = np.ascontiguousarray(np.asarray(adapter.a[...], np.float32).T)
        out[adapter_name(i, name, "B")] = np.ascontiguousarray(np.asarray(adapter.b[...], np.float32).T)
    return out


def peft_config(spec: LoRASpec, base_model: str | None) -> dict:
    """adapter_config.json as PEFT writes it and vLLM parses it (no modules_to_save, no DoRA)."""
    return {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base_model,
        "r": spec.rank,
        "lora_alpha": spec.alpha,
        "lora_dropout": spec.dropout,
        "target_modules": sorted(spec.targets),
        "use_rslora": spec.rslora,
        "use_dora": False,
        "bias": "none",
        "fan_in_fan_out": False,
        "inference_mode": True,
        "init_lora_weights": True,
        "modules_to_save": None,
    }
