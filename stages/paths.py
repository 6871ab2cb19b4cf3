"""The one place that names the files stages share, relative to the repository root.

`dvc.yaml` declares the same paths as deps and outs; `tests/test_dvc_deps.py`
checks that every path a stage reads or writes here is declared for it there.
"""

from __future__ import annotations

from pathlib import Path

MODELS = Path("models")  # base weights a user brings (files or links): base tracks the folder
BASE = Path("data/base")  # base: the checkpoint as a Hugging Face directory (only base.json for tiny)
BASE_INFO = BASE / "base.json"  # base: where the weights came from and their sha256
TRAIN = Path("data/train.jsonl")  # seed -> tokenizer, train, evidence
TRAIN_MANIFEST = Path("data/train_manifest.json")  # seed: counts, decontamination, the sha256 of TRAIN
TOKENIZER = Path("data/tokenizer")  # tokenizer -> train
MODEL = Path("data/model")  # train: the SFT model, a Hugging Face directory
TRAINING_INFO = MODEL / "training_info.json"  # train: what was trained, how, the loss curve (schemas/training_info)
CHECKPOINTS = Path("data/checkpoints")  # train's orbax checkpoints (persist: an interrupted run resumes)
TRAIN_LIVE = Path("dvclive")  # train's dvclive folder: loss, learning rate, tokens/s
TRAINSETS = Path("trainsets")  # the files seed.sources import (gsm8k, file); seed tracks the folder
DECONTAMINATION = Path("data/decontamination.json")  # seed: what each eval set caught (per set, per rule)
EVALSETS = Path("evalsets")  # every eval set lives here (git-tracked); seed and package track the folder
EVALSET = EVALSETS / "tunix_eval_v1.jsonl"  # the curated eval set (scripts/make_evalset.py writes it)
SET_REPORTS = Path("reports/sets")  # evaluate: one folder per eval set
METRICS = Path("reports/metrics.json")  # report: the primary set's metrics (primary_score for dvc exp show, sweeps)
SUBMISSION_RUNS = Path("submission_runs")  # evidence: submission_runs/<run_version>/
SUBMISSION = Path("submission")  # package: the zip
SAMPLES = Path(
    "data/samples.jsonl"
)  # samples -> preference, grpo: the SFT model's scored completions of training prompts
PREFERRED = Path("data/preferred")  # preference -> grpo: the model after preference training (the SFT model at steps 0)
PREFERENCE_INFO = PREFERRED / "preference_info.json"  # preference (when preference.steps is above 0): the run behind it
PREFERENCE_CHECKPOINTS = Path("data/preference_checkpoints")  # preference's orbax checkpoints (persist)
PREFERENCE_LIVE = Path("dvclive/preference")  # preference's dvclive folder: rewards, margin, pair accuracy, lengths
POLICY = Path("data/policy")  # grpo: the RL policy, a Hugging Face directory (the SFT model when grpo.steps is 0)
GRPO_INFO = POLICY / "grpo_info.json"  # grpo (when grpo.steps is above 0): the RL run behind it (schemas/grpo_info)
GRPO_CHECKPOINTS = Path("data/grpo_checkpoints")  # grpo's orbax checkpoints (persist)
GRPO_LIVE = Path("dvclive/grpo")  # grpo's dvclive folder: rewards, KL, clip fraction, lengths


def predictions(name: str) -> Path:
    """predict@<name> -> evaluate@<name>: the completions for eval set `name`."""
    return Path("data/predictions") / f"{name}.jsonl"


def judgments(name: str) -> Path:
    """judge@<name> -> evaluate@<name>: the judge's verdicts on the set's completions (empty when not asked)."""
    return Path("data/judgments") / f"{name}.jsonl"


def set_metrics(name: str) -> Path:
    """evaluate@<name>: the set's DVC metrics (each set's scores are columns of `dvc exp show`)."""
    return SET_REPORTS / name / "metrics.json"


def set_scorecard(name: str) -> Path:
    """evaluate@<name>: every item's verdict, breakdowns, and the eval set's sha256."""
    return SET_REPORTS / name / "scorecard.json"
