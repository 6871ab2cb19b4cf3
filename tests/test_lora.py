"""LoRA: exports that PEFT and transformers read with our logits, a frozen base, a bad spec named by its line.

Parity uses the tiny random configs of test_parity.py (window 8, sequences of 28,
a left-padded batch) and adapters whose A and B are both random and non-zero, so
every adapter moves the logits; step 0 of real training (B = 0) is the base exactly.
"""

from __future__ import annotations

import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from safetensors.numpy import load_file

from stages.common import yaml_line
from tests.test_bad_inputs import assert_one_line_error, run_stage, snapshot
from training import lora
from training.hf_io import load_pretrained, save_adapter, save_pretrained
from training.lora import TARGETS, LoRAError, LoRASpec

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")

from tests.test_parity import ATOL, batch, hf_logits, hf_model, max_diff, our_logits  # noqa: E402


def randomize_adapters(model, seed: int = 0, std: float = 0.2) -> None:
    """A and B both random: the adapters' term is far from zero (a real fine-tuned state)."""
    rng = np.random.default_rng(seed)
    for adapter in lora.adapters(model).values():
        adapter.a.set_value(jnp.asarray(std * rng.standard_normal(adapter.a.shape), jnp.float32))
        adapter.b.set_value(jnp.asarray(std * rng.standard_normal(adapter.b.shape), jnp.float32))


PEFT_CASES = [
    ("gemma2", TARGETS, False),  # every projection: q/k/v and gate/up fully adapted
    ("gemma3", ("k_proj", "o_proj", "up_proj"), True),  # parts of the fused matmuls only, rsLoRA scale
    ("gemma3", ("q_proj", "v_proj", "gate_proj", "down_proj"), False),
]


@pytest.mark.parametrize("case, targets, rslora", PEFT_CASES)
def test_peft_adapter_and_merged_export_give_our_logits(case, targets, rslora, tmp_path):
    ref_model = hf_model(case)
    ref_model.save_pretrained(tmp_path / "base")
    ours = load_pretrained(tmp_path / "base")
    spec = LoRASpec(rank=4, alpha=8.0, targets=targets, rslora=rslora)
    lora.add_adapters(ours, spec, seed=0)
    ids, positions, mask = batch()
    base = our_logits(ours, ids, positions, mask)
    assert max_diff(base, hf_logits(ref_model, ids, positions, mask), mask) <= ATOL
    randomize_adapters(ours)
    want = our_logits(ours, ids, positions, mask)
    assert max_diff(want, base, mask) > 0.1  # the adapters matter: a dropped one would show

    save_adapter(ours, spec, tmp_path / "adapter", base_model=str(tmp_path / "base"))
    with_adapter = peft.PeftModel.from_pretrained(ref_model, tmp_path / "adapter").eval()
    assert max_diff(hf_logits(with_adapter, ids, positions, mask), want, mask) <= ATOL

    lora.merge_adapters(ours)
    assert not lora.has_adapters(ours)
    save_pretrained(ours, tmp_path / "merged")
    merged = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "merged", attn_implementation="eager")
    assert max_diff(hf_logits(merged.eval(), ids, positions, mask), want, mask) <= ATOL


def test_adapter_files_are_what_peft_and_vllm_parse(tmp_path):
    ref_model = hf_model("gemma2")
    ref_model.save_pretrained(tmp_path / "base")
    ours = load_pretrained(tmp_path / "base")
    spec = LoRASpec(rank=4, alpha=8.0, dropout=0.05, targets=("q_proj", "down_proj"))
    lora.add_adapters(ours, spec, seed=0)
    save_adapter(ours, spec, tmp_path / "adapter", base_model="google/gemma-2-2b-it")
    config = json.loads((tmp_path / "adapter/adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["task_type"] == "CAUSAL_LM"
    assert (config["r"], config["lora_alpha"], config["lora_dropout"]) == (4, 8.0, 0.05)
    assert (
        config["target_modules"] == ["down_proj", "q_proj"]
        and config["base_model_name_or_path"] == "google/gemma-2-2b-it"
    )
    assert not config["modules_to_save"] and not config["use_dora"] and config["use_rslora"] is False
    assert peft.LoraConfig.from_pretrained(tmp_path / "adapter").r == 4  # PEFT's own config class reads it
    tensors = load_file(tmp_path / "adapter/adapter_model.safetensors")
    cfg = ours.config
    q_out = cfg.num_attention_heads * cfg.head_dim
    for layer in range(cfg.num_hidden_layers):
        q = f"base_model.model.model.layers.{layer}.self_attn.q_proj"
        down = f"base_model.model.model.layers.{layer}.mlp.down_proj"
        assert tensors[f"{q}.lora_A.weight"].shape == (4, cfg.hidden_size)
        assert tensors[f"{q}.lora_B.weight"].shape == (q_out, 4)
        assert tensors[f"{down}.lora_A.weight"].shape == (4, cfg.intermediate_size)
        assert tensors[f"{down}.lora_B.weight"].shape == (cfg.hidden_size, 4)
    assert len(tensors) == 4 * cfg.num_hidden_layers
    assert all(t.dtype == np.float32 for t in tensors.values())


def test_fresh_adapters_are_the_base_and_adapters_off_is_the_base(tmp_path):
    hf_model("gemma3").save_pretrained(tmp_path)
    ours = load_pretrained(tmp_path)
    ids, positions, mask = batch()
    base = our_logits(ours, ids, positions, mask)
    lora.add_adapters(ours, LoRASpec(rank=8, alpha=16.0), seed=3)
    a = next(iter(lora.adapters(ours).values())).a[...]
    bound = 1 / np.sqrt(a.shape[0])  # PEFT's kaiming_uniform(a=√5): U(-1/√in, 1/√in)
    assert 0.8 * bound < float(jnp.abs(a).max()) <= bound
    np.testing.assert_array_equal(our_logits(ours, ids, positions, mask), base)  # B = 0: step 0 is the base
    randomize_adapters(ours)
    graphdef, trainable, frozen = lora.split_trainable(ours)
    assert all("lora" in jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(trainable)[0])
    assert not any("lora" in jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(frozen)[0])

    @jax.jit
    def reference(frozen_params, trainable_params, *xs):  # the RL reference: the same weights, adapters skipped
        with lora.adapters_off():
            return nnx.merge(graphdef, trainable_params, frozen_params)(*xs)[0]

    xs = [jnp.asarray(x, jnp.int32) for x in (ids, positions, mask)]
    np.testing.assert_array_equal(np.asarray(reference(frozen, trainable, *xs)), base)
    assert max_diff(our_logits(ours, ids, positions, mask), base, mask) > 0.1


@pytest.mark.parametrize(
    "spec, key, message",
    [
        (LoRASpec(rank=4, targets=("q_proj", "qkv_proj")), "targets", "unknown module 'qkv_proj'"),
        (LoRASpec(rank=-1), "rank", "-1 is negative"),
        (LoRASpec(rank=33, targets=("k_proj",)), "rank", "larger than k_proj (64 -> 32) allows (32)"),
        (LoRASpec(rank=4, targets=()), "targets", "empty"),
    ],
)
def test_bad_spec_is_refused_naming_the_field(spec, key, message):
    from tests.test_parity import our_config

    with pytest.raises(LoRAError, match=message.replace("(", r"\(").replace(")", r"\)")) as err:
        lora.validate(spec, our_config(3))
    assert err.value.key == key


@pytest.mark.parametrize(
    "change, key, text",
    [
        ({"targets": ["q_proj", "attn_proj"]}, "targets", "unknown module 'attn_proj'"),
        ({"rank": -2}, "rank", "-2 is negative"),
        ({"rank": 300}, "rank", "larger than"),  # the tiny default is 256 wide
    ],
)
def test_train_stage_reports_a_bad_lora_spec_as_one_line(shared_base, tmp_path, change, key, text):
    import yaml

    repo = tmp_path / "repo"
    shutil.copytree(shared_base, repo, symlinks=True)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["model"]["lora"].update(change)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    before = snapshot(repo)
    proc = run_stage(repo, "train")
    line = yaml_line((repo / "params.yaml").read_text(), ["model", "lora", key])
    assert_one_line_error(proc, "params.yaml", line, f"model.lora.{key}", text)
    assert snapshot(repo) == before


def test_lora_sft_on_the_tiny_default_learns_and_trains_only_the_adapters(shared_base, tmp_path):
    """A short LoRA run on the default tiny shape and the pipeline's own traces: the loss falls, the base
    does not move, and the checkpoint holds the adapters and their optimizer state only."""
    import orbax.checkpoint as ocp

    from stages.common import load_params, load_tokenizer, read_jsonl
    from training import tokenizer as tokenizers_io
    from training.data import BatchStream, encode_trace, pack
    from training.factory import build_model
    from training.trainer import TrainConfig, train

    params = load_params(path=shared_base / "params.yaml")
    params["model"]["lora"] |= {"rank": 16, "alpha": 32.0, "dropout": 0.05}
    tok = load_tokenizer(shared_base / "data/tokenizer")
    examples = [encode_trace(tok, r) for r in read_jsonl(shared_base / "data/train.jsonl")]
    rows = pack(examples, 128, pad_id=tokenizers_io.token_id(tok, "<pad>"))
    model = build_model(params["model"], tok.get_vocab_size(), seed=0)
    assert model.config.hidden_size == 256 and model.config.num_hidden_layers == 4  # the default tiny shape
    base_before = jax.tree.map(np.asarray, lora.split_trainable(model)[2])
    cfg = TrainConfig(
        steps=30, batch_size=4, seq_len=128, learning_rate=1e-2, warmup_steps=3, log_every=5, save_every=10
    )
    result = train(model, BatchStream(rows, 4, seed=0), cfg, checkpoint_dir=tmp_path / "ckpt")
    first, last = result.loss_history[0][1], result.loss_history[-1][1]
    assert last < first - 0.5, result.loss_history
    base_after = jax.tree.map(np.asarray, lora.split_trainable(model)[2])
    jax.tree.map(np.testing.assert_array_equal, base_after, base_before)
    assert all(float(jnp.abs(a.b[...]).max()) > 0 for a in lora.adapters(model).values())  # trained into the model

    manager = ocp.CheckpointManager((tmp_path / "ckpt").absolute())
    restored = manager.restore(manager.latest_step())
    manager.close()
    n_adapter = sum(a.a.size + a.b.size for a in lora.adapters(model).values())
    assert sum(x.size for x in jax.tree.leaves(restored["params"])) == n_adapter
    moments = [x for x in jax.tree.leaves(restored["opt_state"]) if np.ndim(x) >= 2]
    assert moments and sum(x.size for x in moments) == 2 * n_adapter  # Adam's mu and nu, adapters only
