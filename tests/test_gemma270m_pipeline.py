"""The pipeline on the real google/gemma-3-270m (`dvc repro`: LoRA SFT, a GRPO step, predict, evaluate,
evidence), with its PEFT adapter loaded by `peft` on the same base and its merged export by Tunix's Gemma 3
loader, each with the logits we compute. Apart from tests/test_gemma270m.py so that the worker whose
`dvc repro` trains the 270M does not also hold the two models that module keeps for its tests (a module's
fixtures live until its last test). It takes that module's skip (`pytestmark`: no gemma extra, outside CI).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from stages import base as base_stage
from stages import paths
from tests.pipeline_utils import ROOT, make_repo, run
from tests.test_gemma270m import long_text_ids, pytestmark, torch, transformers  # noqa: F401
from tests.test_grpo import LENGTH_REWARD
from tests.test_parity import our_logits
from tests.test_tunix_interop import TUNIX_PYTHON, tunix_logits
from training import tokenizer as tokenizers_io
from training.hf_io import load_pretrained


@pytest.fixture(scope="module")
def base(gemma270m) -> Path:
    return gemma270m[1]


@pytest.fixture(scope="module")
def tok(base):
    return tokenizers_io.load(base)


MINI_SET = "evalsets/mini.jsonl"


@pytest.fixture(scope="module")
def repo(base, tmp_path_factory) -> Path:
    """`dvc repro` on the real model: a Hugging Face directory this time (linked file by file)."""
    repo = make_repo(tmp_path_factory.mktemp("gemma-repo") / "repo", params=None)
    folder = repo / "models" / "gemma-3-270m"
    folder.mkdir()
    for file in base.iterdir():
        if file.name != base_stage.BASE_FILE:
            (folder / file.name).symlink_to(file)
    items = (ROOT / "evalsets/tunix_eval_v1.jsonl").read_text().splitlines()[:6]
    (repo / MINI_SET).write_text("\n".join(items) + "\n")
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["model"].update(
        preset="gemma3-270m",
        checkpoint="models/gemma-3-270m",
        lora={**params["model"]["lora"], "rank": 4, "alpha": 8.0},
    )
    params["seed"].update(sources=[{"type": "gsm8k", "path": "trainsets/gsm8k/train.jsonl"}], size=32)
    params["train"].update(
        steps=2, batch_size=2, seq_len=128, warmup_steps=0, log_every=1, save_every=0, learning_rate=1e-4
    )
    # One RL step, sampled hot enough that a group's completions (and so their lengths) differ.
    params["grpo"].update(
        steps=1,
        prompts_per_step=1,
        group_size=4,
        max_new_tokens=8,
        temperature=1.5,
        learning_rate=1e-4,
        dynamic_sampling=False,
        lora=None,
        user_rewards={"length_reward:longer": 1.0},
    )
    params["predict"].update(batch_size=8, max_new_tokens=8)
    params["evaluate"]["sets"] = {"mini": {"path": MINI_SET, "format": "items", "primary": True}}
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (repo / "length_reward.py").write_text(LENGTH_REWARD)
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "the real model"], repo)
    run(["dvc", "repro"], repo)
    return repo


def test_the_pipeline_runs_on_the_real_model_and_records_its_base(repo, base):
    info = json.loads((repo / paths.BASE_INFO).read_text())
    assert info["format"] == "huggingface"
    assert info["files"]["model.safetensors"] == base_stage.sha256_file(base / "model.safetensors")
    manifest = json.loads((repo / "submission_runs/v1/run_manifest.json").read_text())
    assert manifest["model"]["base"] == info
    predictions = (repo / paths.predictions("mini")).read_text().splitlines()
    assert len(predictions) == 6
    training = json.loads((repo / paths.TRAINING_INFO).read_text())
    assert training["lora"]["rank"] == 4 and len(training["loss_history"]) == 2
    before = read_tensor(repo / paths.MODEL, "model.layers.0.self_attn.q_proj.weight")
    after = read_tensor(repo / paths.POLICY, "model.layers.0.self_attn.q_proj.weight")
    assert not np.array_equal(before, after)  # the GRPO step moved the policy


def read_tensor(directory: Path, name: str) -> np.ndarray:
    from safetensors import safe_open

    with safe_open(str(directory / "model.safetensors"), framework="numpy") as f:  # that one tensor, not a GiB
        return f.get_tensor(name)


def test_peft_loads_the_adapter_on_the_same_base_with_our_logits(repo, tok):
    peft = pytest.importorskip("peft")
    base_model = transformers.AutoModelForCausalLM.from_pretrained(repo / "models/gemma-3-270m", dtype=torch.float32)
    adapted = peft.PeftModel.from_pretrained(base_model, repo / paths.MODEL / "adapter").eval()
    ids = long_text_ids(tok, 96)
    with torch.no_grad():
        want = adapted(input_ids=torch.tensor(ids)).logits.numpy()
    got = our_logits(load_pretrained(repo / paths.MODEL), ids, np.arange(ids.shape[1])[None], np.ones_like(ids))
    assert float(np.abs(got - want).max()) <= 5e-3


@pytest.mark.skipif(not TUNIX_PYTHON.exists(), reason=f"no Tunix environment at {TUNIX_PYTHON} (make tunix-env)")
def test_tunix_loads_the_merged_export_with_our_logits(repo, tok, tmp_path):
    ids = long_text_ids(tok, 64)
    want = our_logits(load_pretrained(repo / paths.POLICY), ids, np.arange(ids.shape[1])[None], np.ones_like(ids))
    request = {"dir": str(repo / paths.POLICY), "family": 3, "preset": "gemma3_270m", "tokens": ids.tolist()}
    got = tunix_logits(request, tmp_path)
    assert got.shape == want.shape
    assert float(np.abs(got - want).max()) <= 5e-3
