"""The one place that names the files stages share, relative to the repository root.

`dvc.yaml` declares the same paths as deps and outs; `tests/test_dvc_deps.py`
checks that every path a stage reads or writes here is declared for it there.
"""

from __future__ import annotations

from pathlib import Path

TRAIN = Path("data/train.jsonl")  # seed -> tokenizer, train, evidence
TRAIN_MANIFEST = Path("data/train_manifest.json")  # seed: counts, decontamination, the sha256 of TRAIN
TOKENIZER = Path("data/tokenizer")  # tokenizer -> train
MODEL = Path("data/model")  # train: the SFT model, a Hugging Face directory
TRAINING_INFO = MODEL / "training_info.json"
CHECKPOINTS = Path("data/checkpoints")  # train's orbax checkpoints (persist: an interrupted run resumes)
TRAIN_LIVE = Path("dvclive")  # train's dvclive folder: loss, learning rate, tokens/s
EVALSET = Path("evalsets/tunix_eval_v1.jsonl")  # the curated eval set (git-tracked)
PREDICTIONS = Path("data/predictions.jsonl")  # predict -> evaluate
METRICS = Path("reports/metrics.json")  # evaluate: DVC metrics
SCORECARD = Path("reports/scorecard.json")  # evaluate: every item's verdict
SUBMISSION_RUNS = Path("submission_runs")  # evidence: submission_runs/<run_version>/
SUBMISSION = Path("submission")  # package: the zip
POLICY = Path("data/policy")  # grpo: the RL policy, a Hugging Face directory (the SFT model when grpo.steps is 0)
GRPO_CHECKPOINTS = Path("data/grpo_checkpoints")  # grpo's orbax checkpoints (persist)
GRPO_LIVE = Path("dvclive/grpo")  # grpo's dvclive folder: rewards, KL, clip fraction, lengths
