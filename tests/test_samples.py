"""Stage `samples` (stages/samples.py): the SFT model's scored completions of its training prompts."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from stages.common import read_jsonl, sha256_tree
from stages.samples import pass_rate

SAMPLES = "data/samples.jsonl"


def samples_repo(shared_base: Path, dest: Path, **samples_params) -> Path:
    """A copy of the bad-inputs base (seed, tokenizer, a random tiny model) with `samples` params set."""
    shutil.copytree(shared_base, dest, symlinks=True)
    params = yaml.safe_load((dest / "params.yaml").read_text())
    params["samples"].update(samples_params)
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (dest / SAMPLES).unlink(missing_ok=True)
    return dest


def run_samples(repo: Path) -> subprocess.CompletedProcess:
    from tests.test_bad_inputs import stage_env

    return subprocess.run(
        [sys.executable, "-m", "stages.samples"],
        cwd=repo,
        env=stage_env(),
        capture_output=True,
        check=False,
        text=True,
        timeout=600,
    )


def test_pass_rate_counts_the_sampled_completions_only():
    c = lambda correct, greedy=False: {"correct": correct, "greedy": greedy}
    assert pass_rate([c(True), c(False), c(True), c(False), c(True, greedy=True)]) == 0.5
    assert pass_rate([c(False), c(False, greedy=True)]) == 0.0
    assert pass_rate([c(True, greedy=True)]) == 0.0  # no sample: nothing passed


def test_no_prompts_write_an_empty_file(shared_base, tmp_path):
    repo = samples_repo(shared_base, tmp_path / "repo", prompts=0)
    proc = run_samples(repo)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (repo / SAMPLES).read_bytes() == b""


def test_samples_are_scored_with_the_model_hash_and_the_same_bytes_again(shared_base, tmp_path):
    repo = samples_repo(
        shared_base,
        tmp_path / "repo",
        prompts=3,
        completions=2,
        max_new_tokens=8,
        include_greedy=True,
        prompts_per_batch=2,
    )
    proc = run_samples(repo)
    assert proc.returncode == 0, proc.stderr[-3000:]
    first = (repo / SAMPLES).read_bytes()
    records = read_jsonl(repo / SAMPLES, schema="samples")
    train = read_jsonl(repo / "data/train.jsonl")
    assert [r["id"] for r in records] == [r["id"] for r in train[:3]]  # the first prompts, in file order
    sha = sha256_tree(repo / "data/model")
    for record in records:
        assert record["model_sha256"] == sha
        assert [c["greedy"] for c in record["completions"]] == [False, False, True]
        assert record["pass_rate"] == pass_rate(record["completions"])
        for c in record["completions"]:
            assert set(c["parts"]) >= {"format", "correctness"}
            assert c["n_tokens"] <= 8 and len(c["tokens"]) == c["n_tokens"] + (0 if c["truncated"] else 1)
    assert run_samples(repo).returncode == 0
    assert (repo / SAMPLES).read_bytes() == first  # same params, same bytes
    assert json.loads(first.splitlines()[0])["id"] == train[0]["id"]
