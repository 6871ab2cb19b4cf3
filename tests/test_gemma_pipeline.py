"""`dvc repro` with a Gemma preset fine-tunes a local Hugging Face checkpoint and exports one back.

CI uses the Gemma 3 1B shape cut to 2 layers and a small vocabulary (the
checkpoint is random, written by scripts/make_random_checkpoint.py); the
full shape is the same code path, measured in the README.
"""

from __future__ import annotations

import json
import sys

import ml_dtypes  # noqa: F401  (numpy learns bfloat16: the random checkpoint's dtype)
import numpy as np
import pytest
from safetensors.numpy import load_file

from tests.pipeline_utils import ROOT, SMALL_PARAMS, make_repo, run

pytestmark = pytest.mark.slow


def test_gemma3_preset_runs_the_pipeline(tmp_path):
    checkpoint = tmp_path / "gemma-3-1b-random"
    run([sys.executable, "scripts/make_random_checkpoint.py", "--preset", "gemma3-1b", "--layers", "2",
         "--vocab", "2048", "--out", str(checkpoint)], cwd=ROOT)
    params = {
        **SMALL_PARAMS,
        "model": {"preset": "gemma3-1b", "checkpoint": str(checkpoint)},
        "train": {**SMALL_PARAMS["train"], "steps": 2, "log_every": 1, "save_every": 0, "learning_rate": 1e-4},
        "predict": {"batch_size": 64, "max_new_tokens": 8},
        # RL on the Gemma model too: one step, a user reward that differs within a group (random weights
        # earn no built-in reward), so the policy really moves. The random model is peaked (entropy ~0.06
        # nats a token at temperature 1), so completions are drawn hot enough to differ.
        "grpo": {"steps": 1, "prompts_per_step": 1, "group_size": 4, "max_new_tokens": 8, "temperature": 4.0,
                 "learning_rate": 1e-4, "dynamic_sampling": False,
                 "user_rewards": {"length_reward:longer": 1.0}},
    }
    repo = make_repo(tmp_path / "repo", params)
    (repo / "length_reward.py").write_text("def longer(prompt, completion, **fields):\n    return float(len(completion))\n")
    run(["git", "add", "length_reward.py"], repo)
    run(["git", "commit", "-qm", "a user reward"], repo)
    run(["dvc", "repro"], repo)

    model = repo / "data/model"
    config = json.loads((model / "config.json").read_text())
    assert config["architectures"] == ["Gemma3ForCausalLM"] and config["num_hidden_layers"] == 2
    assert (model / "tokenizer.json").read_bytes() == (checkpoint / "tokenizer.json").read_bytes()
    before, after = load_file(checkpoint / "model.safetensors"), load_file(model / "model.safetensors")
    assert before.keys() == after.keys()
    name = "model.layers.0.mlp.down_proj.weight"
    assert before[name].shape == after[name].shape and not np.array_equal(before[name], after[name])  # it trained
    info = json.loads((model / "training_info.json").read_text())
    assert info["preset"] == "gemma3-1b" and info["checkpoint"] == str(checkpoint)
    assert (repo / "submission_runs/v1/run_manifest.json").is_file()

    policy = repo / "data/policy"
    assert json.loads((policy / "config.json").read_text()) == config
    rl = json.loads((policy / "grpo_info.json").read_text())
    assert rl["steps"] == 1 and len(rl["history"]) == 1
    tuned = load_file(policy / "model.safetensors")
    assert tuned.keys() == after.keys() and not np.array_equal(tuned[name], after[name])  # RL moved it


def test_missing_checkpoint_is_one_clear_line(tmp_path):
    repo = make_repo(tmp_path / "repo", {**SMALL_PARAMS, "model": {"preset": "gemma3-1b", "checkpoint": str(tmp_path / "nope")}})
    proc = run(["dvc", "repro", "tokenizer"], repo, check=False)
    assert proc.returncode != 0
    assert f"{tmp_path / 'nope'}" in proc.stderr and "tokenizer.json" in proc.stderr
