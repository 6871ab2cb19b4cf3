"""Our trainer and Tunix's own `PeftTrainer` step by step on the real google/gemma-3-270m in float32, and
`train.engine: tunix` (stages/tunix_train.py, training/tunix_engine.py in .venv-tunix) writing our outputs.

One run of each engine: the train stage, as DVC runs it, trains two steps through Tunix and then the same two
steps through ours, on the same packed batches (two examples share a row, the loss on the model's turn only),
with the same AdamW and schedule. The first step's loss is both models' forward pass on the same weights and
tokens; the second follows one update of each engine's own gradients and optimizer; both stages' model
directories (Tunix's weights mapped back to Hugging Face names) hold the same weights after the two steps.

Rows are shorter than the 512-token sliding window, so the window does not bind here (tests/test_tunix_interop.py
checks Tunix's and our logits past a window shorter than the sequence).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from safetensors import safe_open
from tokenizers import Tokenizer

from stages import paths, tunix_train
from stages.common import StageError
from tests.pipeline_utils import ROOT, env
from tests.test_tunix_interop import TUNIX_PYTHON
from training import tokenizer as tokenizers_io
from training.data import encode_trace, pack

FIRST_STEP_ATOL = 1e-4
# after one AdamW update: the engines' gradients differ in summation order, which can flip the sign of a
# near-zero component's update (≈ lr); the losses measured differ by ~1e-6
SECOND_STEP_ATOL = 1e-4
QUESTIONS = [
    ("Tom has 3 apples and buys 4 more. How many apples does he have?", "3 + 4 = 7", "7"),
    ("What is 6 times 7?", "6 × 7 = 42", "42"),
    ("Half of 10?", "10 / 2 = 5", "5"),
]
TRACES = [  # records as the seed stage writes them (schemas/trace.schema.json)
    {
        "id": f"arithmetic-{i:06d}",
        "prompt": prompt,
        "steps": [{"i": 1, "type": "compute", "content": step}],
        "final_answer": answer,
        "meta": {
            "category": "arithmetic",
            "difficulty": "easy",
            "generator": "arithmetic.simple",
            "seed": i,
            "source": "synthetic",
        },
    }
    for i, (prompt, step, answer) in enumerate(QUESTIONS, start=1)
]


def tunix_params(**model) -> dict:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["train"]["engine"] = "tunix"
    params["model"].update(model)
    return params


def train_repo(root: Path, base: Path, params: dict) -> Path:
    """A repository holding what the train stage reads: the traces, data/base/ (linked), its tokenizer, params."""
    (root / paths.TOKENIZER).mkdir(parents=True)  # data/ with it
    (root / paths.TRAIN).write_text("".join(json.dumps(r) + "\n" for r in TRACES))  # no manifest: validated
    (root / paths.TOKENIZER / "tokenizer.json").symlink_to(base / "tokenizer.json")
    (root / paths.BASE).symlink_to(base)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return root


def run_train_stage(root: Path) -> float:
    """`python -m stages.train` in `root`, as DVC runs it; its wall time. A process of its own: each engine's
    270M full fine-tune frees its memory on exit, so the two never hold theirs at once."""
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "stages.train"],
        cwd=root,
        env=env() | {"PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return time.perf_counter() - started


def tensors(model_dir: Path) -> dict[str, np.ndarray]:
    with safe_open(str(model_dir / "model.safetensors"), framework="numpy") as f:
        return {name: f.get_tensor(name) for name in f.keys()}


@pytest.mark.skipif(not TUNIX_PYTHON.exists(), reason=f"no Tunix environment at {TUNIX_PYTHON} (make tunix-env)")
def test_two_steps_of_ours_and_of_the_tunix_engine_agree(gemma270m, tmp_path):
    base = gemma270m[1]
    tok = Tokenizer.from_file(str(base / "tokenizer.json"))
    examples = [encode_trace(tok, r) for r in TRACES]
    seq_len = max(len(e.tokens) for e in examples) * 2  # room for two examples in a row: packing shows
    params = tunix_params(preset="gemma3-270m", checkpoint="models/gemma-3-270m")
    params["train"].update(
        steps=2, batch_size=2, seq_len=seq_len, learning_rate=1e-5, warmup_steps=0, schedule="constant", log_every=1
    )
    params["train"]["save_every"] = 0  # a 270M full fine-tune's checkpoint is seconds of writing
    rows = pack(examples, seq_len, pad_id=tokenizers_io.token_id(tok, "<pad>"))
    assert (rows.segments.max(axis=1) >= 2).any() and rows.truncated == 0

    # The same stage, the same batches, once through each engine, one after the other.
    theirs_root = train_repo(tmp_path / "tunix", base, params)
    ours_root = train_repo(tmp_path / "ours", base, params | {"train": {**params["train"], "engine": "ours"}})
    seconds = {"tunix": run_train_stage(theirs_root), "ours": run_train_stage(ours_root)}
    print(f"train stage wall time: {seconds}")

    def history(root: Path) -> list[tuple[int, float]]:
        info = json.loads((root / paths.MODEL / "training_info.json").read_text())
        return [tuple(row) for row in info["loss_history"]]

    ours, theirs = history(ours_root), history(theirs_root)
    print(f"ours {ours}; tunix {theirs}")
    assert [s for s, _ in theirs] == [s for s, _ in ours] == [1, 2]
    assert abs(theirs[0][1] - ours[0][1]) <= FIRST_STEP_ATOL
    assert abs(theirs[1][1] - ours[1][1]) <= SECOND_STEP_ATOL
    assert ours[0][1] - ours[1][1] > 100 * SECOND_STEP_ATOL  # the step moved the loss: the check can fail

    # data/model, the directory predict reads, holds the same weights after the same two steps: AdamW moves
    # a weight by at most ~lr a step, so even a flipped near-zero update stays within 2 × lr × steps
    exported, trained = tensors(theirs_root / paths.MODEL), tensors(ours_root / paths.MODEL)
    assert exported.keys() == trained.keys()
    bound = 2 * params["train"]["learning_rate"] * params["train"]["steps"] + 1e-6
    for name, value in exported.items():
        assert float(np.abs(value.astype(np.float32) - trained[name].astype(np.float32)).max()) <= bound, name
    before = tensors(base)["model.norm.weight"]
    assert np.abs(trained["model.norm.weight"] - before).max() > params["train"]["learning_rate"]  # it moved

    # the dvclive curve as ours logs it; nothing left to resume
    metrics = json.loads((theirs_root / paths.TRAIN_LIVE / "metrics.json").read_text())
    assert metrics["step"] == 2 and metrics["train"]["loss"] == pytest.approx(theirs[-1][1])
    assert math.isfinite(metrics["train"]["grad_norm"]) and metrics["train"]["tokens_per_second"] > 0
    checkpoints = theirs_root / paths.CHECKPOINTS
    assert not checkpoints.exists() or list(checkpoints.iterdir()) == []
    assert [p.name for p in checkpoints.parent.iterdir() if p.name.startswith(".")] == []


@pytest.mark.parametrize(
    ("model", "says"),
    [
        ({"preset": "tiny"}, "tunix runs only the presets with a Tunix ModelConfig (gemma3-270m, gemma3-1b)"),
        ({"preset": "gemma3-270m", "lora": {"rank": 4}}, "tunix does not run model.lora.rank > 0 (LoRA) yet"),
    ],
)
def test_the_tunix_engine_refuses_in_one_line_naming_the_param(model, says):
    params = tunix_params(**model)
    if "lora" in model:
        params["model"]["lora"] = {**params["model"]["lora"], **model["lora"]}
    with pytest.raises(StageError) as err:
        tunix_train.check(params, ROOT)
    line = str(err.value)
    assert "\n" not in line and line.startswith("params.yaml:") and f": train.engine: {says}" in line


def test_without_the_tunix_environment_the_engine_says_how_to_make_it(monkeypatch, tmp_path):
    monkeypatch.setenv("TUNIX_PYTHON", str(tmp_path / "nowhere/bin/python"))
    with pytest.raises(StageError, match=r"train\.engine: no Tunix environment at .*nowhere.*make tunix-env"):
        tunix_train.check(tunix_params(preset="gemma3-270m"), ROOT)
