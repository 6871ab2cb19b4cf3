"""Our trainer and Tunix's own `PeftTrainer` step by step on the real google/gemma-3-270m in float32, and
`train.engine: tunix` (stages/tunix_train.py, training/tunix_engine.py in .venv-tunix) writing our outputs.

One run of each engine: the train stage, as DVC runs it, trains two steps through Tunix and then the same two
steps through ours, on the same packed batches (two examples share a row, the loss on the model's turn only),
with the same AdamW and schedule. The first step's loss is both models' forward pass on the same weights and
tokens; the second follows one update of each engine's own gradients and optimizer; both stages' model
directories (Tunix's weights mapped back to Hugging Face names) hold the same weights after the two steps.

With LoRA (rank 8 on every projection, the base frozen), the same: Tunix's PeftTrainer trains qwix adapters
that start from ours, and both stages' PEFT adapters hold the same values after two steps.

Rows are shorter than the 512-token sliding window, so the window does not bind here (tests/test_tunix_interop.py
checks Tunix's and our logits past a window shorter than the sequence).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import yaml
from flax import nnx
from safetensors import safe_open
from tokenizers import Tokenizer

from stages import paths, tunix_train
from stages.common import StageError
from tests.pipeline_utils import ROOT, run_stage_process
from tests.test_preference_tunix import ENGINE_ATOL, engine_params, preference_repo
from tests.test_tunix_interop import TUNIX_PYTHON
from training import lora
from training import tokenizer as tokenizers_io
from training.data import encode_trace, pack
from training.hf_io import read_config
from training.model import Gemma

FIRST_STEP_ATOL = 1e-4
# after one AdamW update: the engines' gradients differ in summation order, which can flip the sign of a
# near-zero component's update (≈ lr); the losses measured differ by ~1e-6
SECOND_STEP_ATOL = 1e-4
# The adapters' updates, Tunix's against ours: the engines' gradients differ in summation order, and Adam's
# first update of a parameter (B's in step 1, A's in step 2: its gradient is 0 while B is) is ≈ lr · sign(g),
# which flips on a near-zero component. So every element stays within 2 · lr · steps of ours, few elements
# differ by more than lr / 10, and all the updates together stay close to ours in norm.
LORA_FLIPPED_FRACTION = 1e-2
LORA_UPDATE_RTOL = 1e-2
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


def tensors(model_dir: Path, file: str = "model.safetensors", names=None) -> dict[str, np.ndarray]:
    with safe_open(str(model_dir / file), framework="numpy") as f:
        return {name: f.get_tensor(name) for name in (f.keys() if names is None else names)}


def assert_within(exported_dir: Path, trained_dir: Path, bound: float) -> None:
    """The two directories' model.safetensors hold the same names, each tensor within `bound` of the
    other; read one tensor at a time: a 270M model is a GiB in float32, and the worker runs on."""
    with (
        safe_open(str(exported_dir / "model.safetensors"), framework="numpy") as exported,
        safe_open(str(trained_dir / "model.safetensors"), framework="numpy") as trained,
    ):
        assert set(exported.keys()) == set(trained.keys())
        for name in exported.keys():
            a, b = exported.get_tensor(name).astype(np.float32), trained.get_tensor(name).astype(np.float32)
            assert float(np.abs(a - b).max()) <= bound, name


def small_run(base: Path, steps: int = 2, **train) -> dict:
    """params for `steps` steps on TRACES, two examples packed in a row; save_every 0: a 270M full
    fine-tune's checkpoint is seconds of writing."""
    tok = Tokenizer.from_file(str(base / "tokenizer.json"))
    examples = [encode_trace(tok, r) for r in TRACES]
    seq_len = max(len(e.tokens) for e in examples) * 2  # room for two examples in a row: packing shows
    rows = pack(examples, seq_len, pad_id=tokenizers_io.token_id(tok, "<pad>"))
    assert (rows.segments.max(axis=1) >= 2).any() and rows.truncated == 0
    params = tunix_params(preset="gemma3-270m", checkpoint="models/gemma-3-270m")
    params["train"].update(
        steps=steps, batch_size=2, seq_len=seq_len, warmup_steps=0, schedule="constant", log_every=1, save_every=0
    )
    params["train"].update(train)
    return params


def run_both(params: dict, base: Path, tmp_path: Path) -> tuple[Path, Path]:
    """The same stage, the same batches, once through each engine, one after the other: (tunix's root, ours),
    their two steps' losses checked to agree."""
    theirs_root = train_repo(tmp_path / "tunix", base, params)
    ours_root = train_repo(tmp_path / "ours", base, params | {"train": {**params["train"], "engine": "ours"}})
    seconds = {"tunix": run_stage_process(theirs_root, "train"), "ours": run_stage_process(ours_root, "train")}
    print(f"train stage wall time: {seconds}")
    ours, theirs = history(ours_root), history(theirs_root)
    print(f"ours {ours}; tunix {theirs}")
    assert [s for s, _ in theirs] == [s for s, _ in ours] == [1, 2]
    assert abs(theirs[0][1] - ours[0][1]) <= FIRST_STEP_ATOL
    assert abs(theirs[1][1] - ours[1][1]) <= SECOND_STEP_ATOL
    assert ours[0][1] - ours[1][1] > 100 * SECOND_STEP_ATOL  # the step moved the loss: the check can fail
    return theirs_root, ours_root


def history(root: Path) -> list[tuple[int, float]]:
    info = json.loads((root / paths.MODEL / "training_info.json").read_text())
    return [tuple(row) for row in info["loss_history"]]


@pytest.mark.skipif(not TUNIX_PYTHON.exists(), reason=f"no Tunix environment at {TUNIX_PYTHON} (make tunix-env)")
def test_two_steps_of_ours_and_of_the_tunix_engine_agree(gemma270m, tmp_path):
    base = gemma270m[1]
    params = small_run(base, learning_rate=1e-5)
    theirs_root, ours_root = run_both(params, base, tmp_path)

    # data/model, the directory predict reads, holds the same weights after the same two steps: AdamW moves
    # a weight by at most ~lr a step, so even a flipped near-zero update stays within 2 × lr × steps
    bound = 2 * params["train"]["learning_rate"] * params["train"]["steps"] + 1e-6
    assert_within(theirs_root / paths.MODEL, ours_root / paths.MODEL, bound)
    norm = ["model.norm.weight"]
    moved = tensors(ours_root / paths.MODEL, names=norm)[norm[0]] - tensors(base, names=norm)[norm[0]]
    assert np.abs(moved).max() > params["train"]["learning_rate"]  # the check can fail: the weights moved

    # the dvclive curve as ours logs it; nothing left to resume
    metrics = json.loads((theirs_root / paths.TRAIN_LIVE / "metrics.json").read_text())
    assert metrics["step"] == 2 and metrics["train"]["loss"] == pytest.approx(history(theirs_root)[-1][1])
    assert math.isfinite(metrics["train"]["grad_norm"]) and metrics["train"]["tokens_per_second"] > 0
    checkpoints = theirs_root / paths.CHECKPOINTS
    assert not checkpoints.exists() or list(checkpoints.iterdir()) == []
    assert [p.name for p in checkpoints.parent.iterdir() if p.name.startswith(".")] == []


def initial_adapters(base: Path, params: dict) -> dict[str, np.ndarray]:
    """The adapters our engine starts from (`add_adapters`, the run's seed), PEFT-named; on an abstract
    model: no base weight is made or read."""
    model = nnx.eval_shape(lambda: Gemma(read_config(base), rngs=nnx.Rngs(0)))
    lora.add_adapters(model, lora.LoRASpec.from_params(params["model"]["lora"]), params["base"]["seed"])
    return lora.peft_tensors(model)


@pytest.mark.skipif(not TUNIX_PYTHON.exists(), reason=f"no Tunix environment at {TUNIX_PYTHON} (make tunix-env)")
def test_lora_through_qwix_and_ours_agree_and_export_the_same_adapter(gemma270m, tmp_path):
    base = gemma270m[1]
    params = small_run(base, learning_rate=1e-3)
    params["model"]["lora"] = {**params["model"]["lora"], "rank": 8, "alpha": 16.0, "dropout": 0.0}
    theirs_root, ours_root = run_both(params, base, tmp_path)

    # the PEFT adapter (data/model/adapter/) of each: the same names and config, the same two updates
    adapter = paths.MODEL / "adapter"
    exported = tensors(theirs_root / adapter, "adapter_model.safetensors")
    trained = tensors(ours_root / adapter, "adapter_model.safetensors")
    init = initial_adapters(base, params)
    assert exported.keys() == trained.keys() == init.keys() and len(init) == 18 * 7 * 2
    lr, steps = params["train"]["learning_rate"], params["train"]["steps"]
    ours_updates, differences = [], []
    for name, start in init.items():
        ours_update, theirs_update = trained[name] - start, exported[name] - start
        assert np.linalg.norm(ours_update) > 0, name  # every A and B moved (A in the second step)
        assert np.abs(theirs_update - ours_update).max() <= 2 * lr * steps, name
        ours_updates.append(ours_update.ravel())
        differences.append((theirs_update - ours_update).ravel())
    ours_updates, differences = np.concatenate(ours_updates), np.concatenate(differences)
    overall = np.linalg.norm(differences) / np.linalg.norm(ours_updates)
    flipped = float(np.mean(np.abs(differences) > lr / 10))
    print(f"the adapters' updates differ by {overall:.2e} of ours (in norm); {flipped:.2e} of them by > lr / 10")
    assert flipped <= LORA_FLIPPED_FRACTION
    assert overall <= LORA_UPDATE_RTOL
    config = (theirs_root / adapter / "adapter_config.json").read_text()
    assert config == (ours_root / adapter / "adapter_config.json").read_text()
    from peft import LoraConfig

    loaded = LoraConfig.from_pretrained(str(theirs_root / adapter))
    assert (loaded.r, loaded.lora_alpha, set(loaded.target_modules)) == (8, 16.0, set(lora.TARGETS))

    # the merged model predict reads: the base plus s · B A of the same adapters
    names = [f"model.layers.0.self_attn.{t}.weight" for t in lora.ATTENTION_TARGETS]
    names += [f"model.layers.17.mlp.{t}.weight" for t in lora.MLP_TARGETS]
    merged, ours_merged = tensors(theirs_root / paths.MODEL, names=names), tensors(ours_root / paths.MODEL, names=names)
    before = tensors(base, names=names)
    for name in names:
        assert (
            np.abs(merged[name] - ours_merged[name]).max()
            <= LORA_UPDATE_RTOL * np.abs(ours_merged[name] - before[name]).max()
        )


# The preference stage's two engines (tests/test_preference_tunix.py has the rest): in this file so that the
# 270M runs of both Tunix engines never overlap (pytest-xdist keeps a file on one worker, one test at a time).
@pytest.mark.skipif(not TUNIX_PYTHON.exists(), reason=f"no Tunix environment at {TUNIX_PYTHON} (make tunix-env)")
def test_two_dpo_steps_of_ours_and_of_the_tunix_engine_agree(gemma270m, tmp_path):
    base = gemma270m[1]
    settings = dict(steps=2, pairs_per_step=2, loss="dpo", beta=0.1, learning_rate=1e-5, save_every=0, log_every=1)
    theirs_root = preference_repo(tmp_path / "tunix", base, engine_params("tunix", **settings))
    ours_root = preference_repo(tmp_path / "ours", base, engine_params("ours", **settings))
    seconds = {
        "tunix": run_stage_process(theirs_root, "preference"),
        "ours": run_stage_process(ours_root, "preference"),
    }
    print(f"preference stage wall time: {seconds}")

    info = lambda root: json.loads((root / paths.PREFERENCE_INFO).read_text())
    ours, theirs = info(ours_root), info(theirs_root)
    print(f"ours {ours['history']}\ntunix {theirs['history']}")
    assert [r["step"] for r in theirs["history"]] == [r["step"] for r in ours["history"]] == [1.0, 2.0]
    first, second = zip(ours["history"], theirs["history"])
    # step 1: the policy is the reference, so the loss is log 2 on both; the forward passes are what differ
    assert abs(first[0]["loss"] - first[1]["loss"]) <= ENGINE_ATOL
    for key in ("logp_chosen", "logp_rejected", "grad_norm"):  # log-probs summed over a completion: relative
        assert first[1][key] == pytest.approx(first[0][key], rel=ENGINE_ATOL), key
    # step 2: other pairs, after one update of each engine's own gradients and AdamW
    assert abs(second[0]["loss"] - second[1]["loss"]) <= ENGINE_ATOL
    assert abs(second[0]["loss"] - math.log(2)) > 10 * ENGINE_ATOL  # the update moved the loss: the check can fail
    for key in ("margin", "reward_chosen", "reward_rejected"):
        assert abs(second[0][key] - second[1][key]) <= ENGINE_ATOL, key
    assert second[1]["grad_norm"] == pytest.approx(second[0]["grad_norm"], rel=ENGINE_ATOL)
    assert second[0]["pair_accuracy"] == second[1]["pair_accuracy"]
    assert theirs["pairs"] == ours["pairs"] and theirs["reference_logps_mean"] is None

    # data/preferred holds the same weights: AdamW moves a weight by at most ~lr a step
    bound = 2 * settings["learning_rate"] * settings["steps"] + 1e-6
    assert_within(theirs_root / paths.PREFERRED, ours_root / paths.PREFERRED, bound)
    assert sorted(p.name for p in (theirs_root / paths.PREFERRED).iterdir()) == sorted(
        p.name for p in (ours_root / paths.PREFERRED).iterdir()
    )

    # the dvclive curves as ours logs them; nothing left to resume
    metrics = json.loads((theirs_root / paths.PREFERENCE_LIVE / "metrics.json").read_text())
    assert metrics["step"] == 2 and metrics["loss"] == pytest.approx(second[1]["loss"])
    assert {"margin", "pair_accuracy", "logp_chosen", "grad_norm"} <= metrics.keys()
    checkpoints = theirs_root / paths.PREFERENCE_CHECKPOINTS
    assert list(checkpoints.iterdir()) == []
    assert [p.name for p in checkpoints.parent.iterdir() if p.name.startswith(".")] == []


@pytest.mark.parametrize(
    ("model", "says"),
    [
        ({"preset": "tiny"}, "tunix runs only the presets with a Tunix ModelConfig (gemma3-270m, gemma3-1b)"),
        (
            {"preset": "gemma3-270m", "lora": {"rank": 4, "dropout": 0.1}},
            "tunix does not run LoRA with model.lora.dropout > 0",
        ),
        (
            {"preset": "gemma3-270m", "lora": {"rank": 4, "targets": ["q_proj", "k_proj"]}},
            "tunix does not run LoRA on only one of k_proj and v_proj",
        ),
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


def test_the_tunix_engine_takes_lora_without_dropout():
    params = tunix_params(preset="gemma3-270m")
    params["model"]["lora"] = {**params["model"]["lora"], "rank": 8, "dropout": 0.0}
    tunix_train.check(params, ROOT)  # no StageError


def test_without_the_tunix_environment_the_engine_says_how_to_make_it(monkeypatch, tmp_path):
    monkeypatch.setenv("TUNIX_PYTHON", str(tmp_path / "nowhere/bin/python"))
    with pytest.raises(StageError, match=r"train\.engine: no Tunix environment at .*nowhere.*make tunix-env"):
        tunix_train.check(tunix_params(preset="gemma3-270m"), ROOT)
