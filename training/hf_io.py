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

from training.config import GemmaConfig
from training.model import Gemma

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model")


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


def save_pretrained(
    model: Gemma, directory: Path, tokenizer_dir: Path | None = None, dtype: str = "float32"
) -> None:
    """Write config.json, generation_config.json, model.safetensors and the tokenizer files."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    cfg = model.config
    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    np_dtype = np.dtype(ml_dtypes.bfloat16) if dtype == "bfloat16" else np.dtype(dtype)
    tensors = {
        hf_name(path): np.ascontiguousarray(_to_hf(path, np.asarray(value)).astype(np_dtype))
        for path, value in _flat(params).items()
    }
    save_file(tensors, str(directory / "model.safetensors"), metadata={"format": "pt"})
    hf = cfg.to_hf() | {"dtype": dtype}
    _write_json(directory / "config.json", hf)
    eos = list(cfg.eos_token_id) if isinstance(cfg.eos_token_id, tuple) else [cfg.eos_token_id]
    _write_json(
        directory / "generation_config.json",
        {"bos_token_id": cfg.bos_token_id, "eos_token_id": eos, "pad_token_id": cfg.pad_token_id, "do_sample": False},
    )
    if tokenizer_dir is not None:
        for name in TOKENIZER_FILES:
            if (Path(tokenizer_dir) / name).exists():
                shutil.copyfile(Path(tokenizer_dir) / name, directory / name)


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
    except (json.JSONDecodeError, KeyError, ValueError) as err:
        raise CheckpointError(f"{path}: {err}") from None


def _tensor_files(directory: Path) -> dict[str, Path]:
    """HF tensor name -> the safetensors file holding it (sharded or single)."""
    index = directory / "model.safetensors.index.json"
    if index.is_file():
        weight_map = json.loads(index.read_text())["weight_map"]
        return {name: directory / file for name, file in weight_map.items()}
    single = directory / "model.safetensors"
    if not single.is_file():
        raise CheckpointError(f"{directory}: no model.safetensors or model.safetensors.index.json")
    with safe_open(str(single), "np") as f:
        return {name: single for name in f.keys()}


def _stream(directory: Path, names: dict[str, Path]) -> Iterator[tuple[str, np.ndarray]]:
    by_file: dict[Path, list[str]] = {}
    for name, file in names.items():
        by_file.setdefault(file, []).append(name)
    for file, wanted in sorted(by_file.items()):
        if not file.is_file():
            raise CheckpointError(f"{file}: missing shard")
        try:
            with safe_open(str(file), "np") as f:
                for name in wanted:
                    yield name, f.get_tensor(name)
        except (OSError, ValueError, RuntimeError) as err:
            raise CheckpointError(f"{file}: unreadable safetensors ({err})") from None


def load_pretrained(
    directory: Path, *, dtype: str = "float32", param_dtype: str = "float32", remat: bool = False
) -> Gemma:
    """A Gemma model with the weights of an HF directory, cast to `param_dtype`."""
    directory = Path(directory)
    cfg = read_config(directory)
    model = nnx.eval_shape(lambda: Gemma(cfg, rngs=nnx.Rngs(0), dtype=dtype, param_dtype=param_dtype, remat=remat))
    abstract = _flat(nnx.to_pure_dict(nnx.state(model, nnx.Param)))
    wanted = {hf_name(path): path for path in abstract}
    files = _tensor_files(directory)
    missing = sorted(set(wanted) - set(files))
    if missing:
        raise CheckpointError(f"{directory}: tensor {missing[0]} not found ({len(missing)} missing)")
    loaded: dict[tuple, jax.Array] = {}
    for name, array in _stream(directory, {n: files[n] for n in wanted}):
        path = wanted[name]
        value = _to_hf(path, array)  # the transpose is its own inverse
        expected = abstract[path].shape
        if value.shape != expected:
            shape = tuple(_to_hf(path, np.empty(expected, np.int8)).shape)
            raise CheckpointError(f"{directory}: tensor {name} has shape {tuple(array.shape)}, expected {shape}")
        loaded[path] = jnp.asarray(value, dtype=param_dtype)
    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    params = jax.tree_util.tree_map_with_path(lambda p, _: loaded[_key(p)], params)
    nnx.update(model, params)
    return model

