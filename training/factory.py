"""Build the model a params.yaml `model` section asks for: the tiny preset from scratch, or a
Gemma preset's weights from a local Hugging Face directory (the base stage's data/base/)."""

from __future__ import annotations

from pathlib import Path

from flax import nnx

from training import config as configs
from training.hf_io import CheckpointError, load_pretrained, read_config
from training.lora import LoRASpec, add_adapters, validate
from training.model import Gemma


class ShapeError(ValueError):
    """`model.tiny` asks for a shape the architecture cannot have; the message names the field."""


def build_model(
    model_params: dict, vocab_size: int, seed: int, remat: bool = False, checkpoint: Path | None = None
) -> Gemma:
    """The model, with fresh LoRA adapters when `model.lora.rank` > 0 (a LoRAError names a bad field).

    A Gemma preset loads `checkpoint` (default: `model.checkpoint`), which must be the preset's shape.

    With LoRA the frozen base is held in `compute_dtype` (no float32 master copy); adapters are float32.
    """
    spec = LoRASpec.from_params(model_params.get("lora"))
    model = _build_base(model_params, vocab_size, seed, remat, spec, checkpoint)
    add_adapters(model, spec, seed)
    return model


def _build_base(
    model_params: dict, vocab_size: int, seed: int, remat: bool, spec: LoRASpec, checkpoint: Path | None
) -> Gemma:
    """The base model; `spec` is checked against its shape before any weight is made or read."""
    preset = model_params["preset"]
    param_dtype = model_params["compute_dtype"] if spec.rank else model_params["param_dtype"]
    dtypes = dict(dtype=model_params["compute_dtype"], param_dtype=param_dtype)
    if preset == "tiny":
        try:
            cfg = configs.tiny(vocab_size, **model_params["tiny"])
        except ValueError as err:
            raise ShapeError(f"model.tiny: {err}") from None
        validate(spec, cfg)
        return Gemma(cfg, rngs=nnx.Rngs(params=seed), remat=remat, **dtypes)
    checkpoint = checkpoint or model_params.get("checkpoint")
    if not checkpoint:
        raise CheckpointError(f"model.checkpoint: preset {preset} needs a local Hugging Face model directory")
    cfg = read_config(Path(checkpoint))
    mismatch = configs.shape_mismatch(cfg, preset)
    if mismatch:
        raise CheckpointError(f"{checkpoint}/config.json: {mismatch}")
    if cfg.vocab_size < vocab_size:
        raise CheckpointError(
            f"{checkpoint}: tokenizer has {vocab_size} tokens but the model's vocab_size is {cfg.vocab_size}"
        )
    validate(spec, cfg)
    return load_pretrained(Path(checkpoint), remat=remat, **dtypes)
