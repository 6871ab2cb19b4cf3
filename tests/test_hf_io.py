"""Hugging Face directories in and out: shards, dtypes, determinism, and one-line errors."""

import importlib.util
import json
import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
from flax import nnx
from safetensors import safe_open
from safetensors.numpy import save_file
from tokenizers import Tokenizer

from training.config import GemmaConfig, gemma3_1b
from training.hf_io import CheckpointError, load_pretrained, save_pretrained
from training.model import Gemma


def random_model(cfg: GemmaConfig, seed: int = 0) -> Gemma:
    """Every parameter random (norms too), filled from numpy: no initialiser compilations."""
    model = nnx.eval_shape(lambda: Gemma(cfg, rngs=nnx.Rngs(0)))
    leaves, treedef = jax.tree.flatten(nnx.state(model, nnx.Param))
    rng = np.random.default_rng(seed)
    nnx.update(model, jax.tree.unflatten(treedef, [jnp.asarray(rng.standard_normal(x.shape), x.dtype) for x in leaves]))
    return model


def params(model: Gemma) -> dict:
    pure = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    return {jax.tree_util.keystr(k): np.asarray(v) for k, v in jax.tree.leaves_with_path(pure)}


def assert_same_params(a: Gemma, b: Gemma) -> None:
    pa, pb = params(a), params(b)
    assert pa.keys() == pb.keys()
    for name in pa:
        np.testing.assert_array_equal(pa[name], pb[name], err_msg=name)


@pytest.fixture(scope="module")
def model(tiny_config):
    return random_model(tiny_config)


@pytest.fixture
def saved(model, tmp_path):
    save_pretrained(model, tmp_path / "m")
    return tmp_path / "m"


def test_round_trip(model, saved):
    assert sorted(p.name for p in saved.iterdir()) == ["config.json", "generation_config.json", "model.safetensors"]
    with safe_open(str(saved / "model.safetensors"), "np") as f:
        assert f.get_tensor("model.layers.0.self_attn.q_proj.weight").shape == (4 * 8, 32)  # torch's [out, in]
        assert f.metadata() == {"format": "pt"}
    loaded = load_pretrained(saved)
    assert loaded.config == model.config
    assert_same_params(loaded, model)


def test_sharded_checkpoint_written_by_us_loads(model, tmp_path):
    save_pretrained(model, tmp_path, max_shard_bytes=40_000)
    shards = sorted(p.name for p in tmp_path.glob("model-*.safetensors"))
    assert len(shards) >= 2 and shards[0] == f"model-00001-of-{len(shards):05d}.safetensors"
    assert not (tmp_path / "model.safetensors").exists()
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    assert sorted(set(index["weight_map"].values())) == shards
    assert index["metadata"]["total_parameters"] == model.config.num_params()
    assert index["metadata"]["total_size"] == 4 * model.config.num_params()
    assert_same_params(load_pretrained(tmp_path), model)
    save_pretrained(model, tmp_path)  # saving again unsharded leaves no stale index or shard behind
    assert sorted(p.name for p in tmp_path.glob("model*")) == ["model.safetensors"]


def test_hand_split_checkpoint_loads(model, saved):
    """The transformers layout: an index json mapping every tensor to one of two shards."""
    with safe_open(str(saved / "model.safetensors"), "np") as f:
        tensors = {name: f.get_tensor(name) for name in f.keys()}
    (saved / "model.safetensors").unlink()
    names = sorted(tensors)
    halves = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
    for file, part in halves.items():
        save_file({n: tensors[n] for n in part}, str(saved / file), metadata={"format": "pt"})
    weight_map = {n: file for file, part in halves.items() for n in part}
    (saved / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    assert_same_params(load_pretrained(saved), model)


def test_bfloat16_export_and_import(model, tmp_path):
    save_pretrained(model, tmp_path, dtype="bfloat16")
    assert json.loads((tmp_path / "config.json").read_text())["dtype"] == "bfloat16"
    with safe_open(str(tmp_path / "model.safetensors"), "np") as f:
        assert {f.get_tensor(n).dtype for n in f.keys()} == {np.dtype(ml_dtypes.bfloat16)}
    expected = {k: v.astype(ml_dtypes.bfloat16) for k, v in params(model).items()}
    as_bf16 = params(load_pretrained(tmp_path, dtype="bfloat16", param_dtype="bfloat16"))
    as_f32 = params(load_pretrained(tmp_path))
    for name, value in expected.items():
        assert as_bf16[name].dtype == value.dtype and as_f32[name].dtype == np.float32
        np.testing.assert_array_equal(as_bf16[name], value, err_msg=name)
        np.testing.assert_array_equal(as_f32[name], value.astype(np.float32), err_msg=name)
    # a bfloat16 model exported as bfloat16 round-trips bit for bit
    save_pretrained(load_pretrained(tmp_path, param_dtype="bfloat16"), tmp_path / "again", dtype="bfloat16")
    assert (tmp_path / "again/model.safetensors").read_bytes() == (tmp_path / "model.safetensors").read_bytes()


def test_export_is_byte_deterministic(tmp_path, tiny_config):
    for run in ("a", "b"):
        save_pretrained(random_model(tiny_config, seed=5), tmp_path / run, max_shard_bytes=40_000)
    files = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert files == sorted(p.name for p in (tmp_path / "b").iterdir())
    for name in files:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def test_tokenizer_files_are_copied(model, tmp_path):
    (tmp_path / "tok").mkdir()
    (tmp_path / "tok/tokenizer.json").write_text("{}")
    save_pretrained(model, tmp_path / "m", tokenizer_dir=tmp_path / "tok")
    assert (tmp_path / "m/tokenizer.json").read_text() == "{}"


def _edit_config(directory, **changes):
    path = directory / "config.json"
    path.write_text(json.dumps(json.loads(path.read_text()) | changes))


def _rewrite_tensors(directory, edit):
    with safe_open(str(directory / "model.safetensors"), "np") as f:
        tensors = {name: f.get_tensor(name) for name in f.keys()}
    edit(tensors)
    save_file(tensors, str(directory / "model.safetensors"))


def _index_with_a_missing_shard(directory):
    first = "model-00001-of-00002.safetensors"
    (directory / "model.safetensors").rename(directory / first)
    with safe_open(str(directory / first), "np") as f:
        weight_map = dict.fromkeys(f.keys(), first) | {"model.norm.weight": "model-00002-of-00002.safetensors"}
    (directory / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))


BROKEN = {
    "missing directory": (lambda d: shutil.rmtree(d), "model directory not found"),
    "missing config.json": (lambda d: (d / "config.json").unlink(), r"config\.json: missing"),
    "malformed config.json": (lambda d: (d / "config.json").write_text("{"), r"config\.json: Expecting"),
    "config without a field": (
        lambda d: (d / "config.json").write_text(json.dumps({"model_type": "gemma2"})),
        "missing field",
    ),
    "missing safetensors": (lambda d: (d / "model.safetensors").unlink(), "no model.safetensors"),
    "corrupt safetensors": (lambda d: (d / "model.safetensors").write_bytes(b"\0" * 16), "unreadable safetensors"),
    "unknown architecture": (
        lambda d: _edit_config(d, architectures=["LlamaForCausalLM"], model_type="llama"),
        "unknown architecture.*LlamaForCausalLM",
    ),
    "wrong shape": (
        lambda d: _rewrite_tensors(d, lambda t: t.update({"model.layers.1.mlp.up_proj.weight": np.zeros((64, 31))})),
        r"tensor model\.layers\.1\.mlp\.up_proj\.weight has shape \(64, 31\), expected \(64, 32\)",
    ),
    "missing tensor": (
        lambda d: _rewrite_tensors(d, lambda t: t.pop("model.layers.0.self_attn.k_norm.weight")),
        r"tensor model\.layers\.0\.self_attn\.k_norm\.weight not found",
    ),
    "unexpected tensor": (
        lambda d: _rewrite_tensors(d, lambda t: t.update({"model.layers.2.mlp.up_proj.weight": np.zeros(1)})),
        r"unexpected tensor model\.layers\.2\.mlp\.up_proj\.weight",
    ),
    "missing shard": (lambda d: _index_with_a_missing_shard(d), "model-00002-of-00002.safetensors: missing shard"),
    "corrupt index": (lambda d: (d / "model.safetensors.index.json").write_text("[]"), "not a safetensors index"),
}


@pytest.mark.parametrize("case", BROKEN)
def test_bad_checkpoint_is_a_one_line_error(case, saved):
    damage, message = BROKEN[case]
    damage(saved)
    with pytest.raises(CheckpointError, match=message) as err:
        load_pretrained(saved)
    assert "\n" not in str(err.value) and str(saved) in str(err.value)


def test_random_checkpoint_script(tmp_path):
    """A preset's real widths (fewer layers, a small vocab) written by the script load back."""
    path = Path(__file__).parent.parent / "scripts/make_random_checkpoint.py"
    spec = importlib.util.spec_from_file_location("make_random_checkpoint", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    out = tmp_path / "ckpt"
    script.main(["--preset", "gemma3-1b", "--layers", "1", "--vocab", "512", "--out", str(out)])
    model = load_pretrained(out, param_dtype="bfloat16")
    expected = gemma3_1b().replace(num_hidden_layers=1, layer_types=("sliding_attention",), vocab_size=512)
    assert model.config == expected
    assert json.loads((out / "generation_config.json").read_text())["eos_token_id"] == [1, 106]
    tok = Tokenizer.from_file(str(out / "tokenizer.json"))
    ids = {t: tok.token_to_id(t) for t in ("<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>")}
    assert list(ids.values()) == [0, 1, 2, 3, 105, 106] and tok.get_vocab_size() <= 512
    q = params(model)["['layers'][0]['self_attn']['q_proj']['kernel']"].astype(np.float32)
    assert abs(q.std() * 1152**0.5 - 1) < 0.05  # our initialiser's scale: N(0, 1/fan_in)
    with pytest.raises(SystemExit, match="not empty"):
        script.main(["--preset", "gemma3-1b", "--layers", "1", "--vocab", "512", "--out", str(out)])
