"""Hugging Face model directories in and out: config.json + safetensors (+ tokenizer files).

Our parameter tree mirrors the HF names: `layers.3.mlp.up_proj.kernel` is
`model.layers.3.mlp.up_proj.weight` transposed (Flax kernels are [in, out]).
Import streams one tensor at a time from (possibly sharded) safetensors, so
host memory peaks near one copy of the weights; weights never come from pickle.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
from flax import nnx
from safetensors import safe_open
from safetensors.numpy import save_file

from training import lora
from training.config import GemmaConfig
from training.model import Gemma
from training.tokenizer import TOKENIZER_FILES


class CheckpointError(ValueError):
    """A model directory that cannot be loaded; the message names the path and what was expected."""


def hf_name(path: tuple[Any, ...]) -> str:
    """HF tensor name of a parameter path such as ('layers', 3, 'mlp', 'up_proj', 'kernel')."""
    parts = ["weight" if p == "kernel" else str(p) for p in path]
    if parts == ["embed_tokens"]:
        parts.append("weight")
    return "model." + ".".join(parts)


def _key(path) -> tuple:
    """A jax key path as a plain tuple: ('layers', 3, 'mlp', 'up_proj', 'kernel')."""
    return tuple(k.key if hasattr(k, "key") else k.idx for k in path)


def _flat(params: dict) -> dict[tuple, Any]:
    return {_key(path): v for path, v in jax.tree_util.tree_flatten_with_path(params)[0]}


def _to_hf(path: tuple, value: np.ndarray) -> np.ndarray:
    return value.T if path[-1] == "kernel" else value


WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json")


def save_pretrained(
    model: Gemma,
    directory: Path,
    tokenizer_dir: Path | None = None,
    dtype: str = "float32",
    max_shard_bytes: int | None = None,
) -> None:
    """Write config.json, generation_config.json, the weights and the tokenizer files.

    Weights go to model.safetensors, or, when they exceed `max_shard_bytes`, to
    model-0000i-of-0000n.safetensors shards plus model.safetensors.index.json
    (the layout transformers writes). Tensors are converted one shard at a time,
    so host memory holds the model plus at most one shard. Same model, same bytes.
    """
    if lora.has_adapters(model):
        raise ValueError("save_pretrained: the model carries LoRA adapters; lora.merge_adapters(model) first")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    cfg = model.config
    np_dtype = np.dtype(ml_dtypes.bfloat16) if dtype == "bfloat16" else np.dtype(dtype)
    params = _flat(nnx.to_pure_dict(nnx.state(model, nnx.Param)))
    shards = _plan_shards(params, np_dtype.itemsize, max_shard_bytes)
    for stale in [*directory.glob("model-*-of-*.safetensors"), *(directory / f for f in WEIGHT_FILES)]:
        stale.unlink(missing_ok=True)  # an index left from an earlier save would shadow the new weights
    names = (
        ["model.safetensors"]
        if len(shards) == 1
        else [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
    )
    weight_map = {}
    for file, paths in zip(names, shards):
        tensors = {hf_name(p): _to_hf(p, np.asarray(params[p])).astype(np_dtype, order="C") for p in paths}
        save_file(tensors, str(directory / file), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(tensors, file))
        del tensors
    if len(shards) > 1:
        sizes = [int(np.prod(v.shape)) for v in params.values()]
        metadata = {"total_parameters": sum(sizes), "total_size": sum(sizes) * np_dtype.itemsize}
        _write_json(directory / WEIGHT_FILES[1], {"metadata": metadata, "weight_map": weight_map})
    _write_json(directory / "config.json", cfg.to_hf() | {"dtype": dtype})
    eos = list(cfg.eos_token_id) if isinstance(cfg.eos_token_id, tuple) else [cfg.eos_token_id]
    _write_json(
        directory / "generation_config.json",
        {"bos_token_id": cfg.bos_token_id, "eos_token_id": eos, "pad_token_id": cfg.pad_token_id, "do_sample": False},
    )
    if tokenizer_dir is not None:
        for name in TOKENIZER_FILES:
            if (Path(tokenizer_dir) / name).exists():
                shutil.copyfile(Path(tokenizer_dir) / name, directory / name)


ADAPTER_DIR = "adapter"  # beside the merged weights: data/model/adapter/


def save_adapter(model: Gemma, spec: lora.LoRASpec, directory: Path, base_model: str | None) -> None:
    """A PEFT LoRA directory: adapter_config.json and adapter_model.safetensors (float32).

    `PeftModel.from_pretrained(base, directory)` and vLLM's LoRA loader read it;
    `base_model` is the base's name or path (None for a model trained from scratch).
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    save_file(lora.peft_tensors(model), str(directory / "adapter_model.safetensors"), metadata={"format": "pt"})
    _write_json(directory / "adapter_config.json", lora.peft_config(spec, base_model))


def _plan_shards(params: dict[tuple, Any], itemsize: int, max_bytes: int | None) -> list[list[tuple]]:
    """Parameter paths grouped into consecutive shards of at most `max_bytes` (a bigger tensor gets its own)."""
    shards: list[list[tuple]] = [[]]
    size = 0
    for path, value in params.items():
        nbytes = int(np.prod(value.shape)) * itemsize
        if max_bytes is not None and shards[-1] and size + nbytes > max_bytes:
            shards.append([])
            size = 0
        shards[-1].append(path)
        size += nbytes
    return shards


def _write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def read_config(directory: Path) -> GemmaConfig:
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"{directory}: model directory not found (expected config.json and *.safetensors)")
    path = directory / "config.json"
    if not path.is_file():
        raise CheckpointError(f"{path}: missing (expected a Hugging Face config.json)")
    try:
        hf = json.loads(path.read_text())
        return GemmaConfig.from_hf(hf.get("text_config", hf))
    except KeyError as err:
        raise CheckpointError(f"{path}: missing field {err}") from None
    except (json.JSONDecodeError, ValueError, TypeError) as err:
        raise CheckpointError(f"{path}: {err}") from None


def _tensor_files(directory: Path) -> dict[str, Path]:
    """HF tensor name -> the safetensors file holding it (sharded or single)."""
    index = directory / WEIGHT_FILES[1]
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
            return {name: directory / file for name, file in weight_map.items()}
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as err:
            raise CheckpointError(f"{index}: not a safetensors index ({err!r})") from None
    single = directory / WEIGHT_FILES[0]
    if not single.is_file():
        raise CheckpointError(f"{directory}: no {WEIGHT_FILES[0]} or {WEIGHT_FILES[1]}")
    try:
        with safe_open(str(single), "np") as f:
            return {name: single for name in f.keys()}
    except Exception as err:  # safetensors raises its own SafetensorError for a corrupt header
        raise CheckpointError(f"{single}: unreadable safetensors ({err})") from None


def _stream(names: dict[str, Path]) -> Iterator[tuple[str, np.ndarray]]:
    """(name, array) one tensor at a time, file by file.

    The file is mapped only while one tensor is read: a mapping held open keeps
    every page read so far resident, a second copy of the weights at the end.
    """
    for name, file in sorted(names.items(), key=lambda item: (str(item[1]), item[0])):
        if not file.is_file():
            raise CheckpointError(f"{file}: missing shard (listed in {WEIGHT_FILES[1]})")
        try:
            with safe_open(str(file), "np") as f:
                array = f.get_tensor(name)
        except Exception as err:  # safetensors raises its own SafetensorError
            raise CheckpointError(f"{file}: unreadable safetensors, tensor {name} ({err})") from None
        yield name, array


def load_pretrained(
    directory: Path, *, dtype: str = "float32", param_dtype: str = "float32", remat: bool = False
) -> Gemma:
    """A Gemma model with the weights of an HF directory, cast to `param_dtype`.

    Host memory peaks near one copy of the weights (in `param_dtype`) plus one tensor.
    """
    directory = Path(directory)
    cfg = read_config(directory)
    model = nnx.eval_shape(lambda: Gemma(cfg, rngs=nnx.Rngs(0), dtype=dtype, param_dtype=param_dtype, remat=remat))
    abstract = _flat(nnx.to_pure_dict(nnx.state(model, nnx.Param)))
    wanted = {hf_name(path): path for path in abstract}
    files = _tensor_files(directory)
    missing = sorted(set(wanted) - set(files))
    if missing:
        raise CheckpointError(f"{directory}: tensor {missing[0]} not found ({len(missing)} missing)")
    # A tied checkpoint may still carry lm_head.weight; anything else unknown means a different architecture.
    unexpected = sorted(set(files) - set(wanted) - {"lm_head.weight"})
    if unexpected:
        raise CheckpointError(f"{directory}: unexpected tensor {unexpected[0]} ({len(unexpected)} not in the model)")
    loaded: dict[tuple, jax.Array] = {}
    for name, array in _stream({n: files[n] for n in wanted}):
        path = wanted[name]
        expected = tuple(_to_hf(path, np.empty(abstract[path].shape, np.int8)).shape)
        if tuple(array.shape) != expected:
            raise CheckpointError(f"{directory}: tensor {name} has shape {tuple(array.shape)}, expected {expected}")
        loaded[path] = jnp.asarray(_to_hf(path, array), dtype=param_dtype)  # the transpose is its own inverse
        del array
    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    params = jax.tree_util.tree_map_with_path(lambda p, _: loaded.pop(_key(p)), params)
    nnx.update(model, params)
    return model


def save_trained(
    model: Gemma, spec: lora.LoRASpec, directory: Path, tokenizer_dir: Path, base_model: str | None
) -> None:
    """A trained model's HF directory: with adapters, first their PEFT `adapter/`, then the model with them
    folded in (the directory transformers, vLLM and Tunix load); without, the model as it is."""
    if spec.rank:
        save_adapter(model, spec, Path(directory) / ADAPTER_DIR, base_model=base_model)
        lora.merge_adapters(model)
    save_pretrained(model, directory, tokenizer_dir=tokenizer_dir)
