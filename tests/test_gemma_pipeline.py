"""`dvc repro` with a Gemma preset checks its base before anything trains on it.

The pipeline on real weights (google/gemma-3-270m: LoRA SFT, GRPO, predict, exports) is
tests/test_gemma270m.py; here the base stage refuses what is not the preset's model, in one line.
"""

from __future__ import annotations

import sys

import pytest

from tests.pipeline_utils import ROOT, SMALL_PARAMS, make_repo, run

pytestmark = pytest.mark.slow


def one_line_error(repo, stage: str) -> str:
    proc = run(["dvc", "repro", stage], repo, check=False)
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, proc.stderr[-3000:]
    return errors[0]


def test_missing_checkpoint_is_one_clear_line(tmp_path):
    params = {**SMALL_PARAMS, "model": {"preset": "gemma3-1b", "checkpoint": "models/gemma-3-1b"}}
    repo = make_repo(tmp_path / "repo", params)
    assert one_line_error(repo, "base").startswith("error: models/gemma-3-1b: not found (params.yaml:")


def test_a_checkpoint_cut_from_the_preset_is_not_the_preset(tmp_path):
    params = {**SMALL_PARAMS, "model": {"preset": "gemma3-1b", "checkpoint": "models/gemma-3-1b-cut"}}
    repo = make_repo(tmp_path / "repo", params)
    run(
        [
            sys.executable,
            "scripts/make_random_checkpoint.py",
            "--preset",
            "gemma3-1b",
            "--layers",
            "2",
            "--vocab",
            "2048",
            "--out",
            str(repo / "models/gemma-3-1b-cut"),
        ],
        cwd=ROOT,
    )
    message = one_line_error(repo, "tokenizer")  # the tokenizer's base stage runs first and stops
    assert message == (
        "error: models/gemma-3-1b-cut/config.json: vocab_size 2048, preset gemma3-1b has 262144 (model.preset gemma3-1b)"
    )
    assert not (repo / "data/base").exists() and not (repo / "data/tokenizer").exists()


def test_a_checkpoint_from_elsewhere_is_linked_into_models_file_by_file(tmp_path):
    from stages.base import link_into_models

    source = tmp_path / "kaggle/input/gemma-3-1b-it"
    source.mkdir(parents=True)
    for name in ("config.json", "model.safetensors", "tokenizer.json", "README.md"):
        (source / name).write_text(name)
    root = tmp_path / "repo"
    assert link_into_models(source, root).as_posix() == "models/gemma-3-1b-it"
    linked = root / "models/gemma-3-1b-it"
    assert sorted(p.name for p in linked.iterdir()) == ["config.json", "model.safetensors", "tokenizer.json"]
    assert all(p.is_symlink() and p.resolve() == (source / p.name).resolve() for p in linked.iterdir())
    gguf = tmp_path / "gemma-3-270m-q4_k_m.gguf"
    gguf.write_bytes(b"GGUF")
    assert (root / link_into_models(gguf, root)).read_bytes() == b"GGUF"
