"""The real `dvc repro`, end to end, on small params in temporary git repos.

One module-scoped run is shared by the checks; a second, independent run of
the same commit proves every declared output is byte-for-byte reproducible.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest
import yaml

from stages.common import read_json, read_jsonl, sha256_file
from tests.pipeline_utils import make_repo, run

pytestmark = pytest.mark.slow

# Same commit hash in every test repo: the evidence records it, so outputs can be compared byte for byte.
FIXED_DATE = {"GIT_AUTHOR_DATE": "2026-01-01T00:00:00Z", "GIT_COMMITTER_DATE": "2026-01-01T00:00:00Z"}


@pytest.fixture(scope="module")
def fixed_date():
    """FIXED_DATE for this module's git commits only (later tests' `dvc exp` commits need the real clock)."""
    with pytest.MonkeyPatch.context() as patch:
        for name, value in FIXED_DATE.items():
            patch.setenv(name, value)
        yield


@pytest.fixture(scope="module")
def repro(tmp_path_factory, fixed_date) -> Path:
    repo = make_repo(tmp_path_factory.mktemp("pipeline") / "repo")
    run(["dvc", "repro"], repo)
    return repo


def declared_outs(repo: Path) -> list[Path]:
    """Every out, metric and plot dvc.yaml declares, templated paths resolved."""
    dvc_yaml = yaml.safe_load((repo / "dvc.yaml").read_text())
    params = yaml.safe_load((repo / "params.yaml").read_text())
    outs = []
    for stage in dvc_yaml["stages"].values():
        for kind in ("outs", "metrics", "plots"):
            for out in stage.get(kind, []):
                name = next(iter(out)) if isinstance(out, dict) else out
                outs.append(repo / name.replace("${base.run_version}", params["base"]["run_version"]))
    return outs


def files_under(path: Path) -> dict[str, bytes]:
    if path.is_file():
        return {path.name: path.read_bytes()}
    return {p.relative_to(path).as_posix(): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def test_every_declared_output_exists(repro):
    for out in declared_outs(repro):
        assert out.exists(), f"{out} missing"


def test_stage_outputs_are_valid(repro):
    traces = read_jsonl(repro / "data/train.jsonl", schema="trace")
    assert len(traces) == 600
    manifest = read_json(repro / "data/train_manifest.json", schema="train_manifest")
    assert manifest["sha256"] == sha256_file(repro / "data/train.jsonl")

    model = repro / "data/model"
    for name in ("config.json", "model.safetensors", "tokenizer.json", "training_info.json"):
        assert (model / name).is_file()
    info = json.loads((model / "training_info.json").read_text())
    assert info["steps"] == 12 and len(info["loss_history"]) == 3
    assert info["loss_history"][-1][1] < info["loss_history"][0][1]  # it learns

    live = json.loads((repro / "dvclive/metrics.json").read_text())
    assert live["step"] == 12 and live["train"]["loss"] > 0 and live["train"]["tokens_per_second"] > 0
    assert (repro / "dvclive/plots/metrics/train/loss.tsv").is_file()

    items = read_jsonl(repro / "evalsets/tunix_eval_v1.jsonl", schema="eval_item")
    predictions = read_jsonl(repro / "data/predictions.jsonl", schema="prediction")
    assert [p["id"] for p in predictions] == [i["id"] for i in items]

    metrics = read_json(repro / "reports/metrics.json", schema="metrics")
    assert metrics["n_items"] == len(items)
    assert isinstance(metrics["primary_score"], float)
    read_json(repro / "reports/scorecard.json", schema="scorecard")

    run_dir = repro / "submission_runs/v1"
    run_manifest = read_json(run_dir / "run_manifest.json", schema="run_manifest")
    assert run_manifest["dataset"]["sha256"] == manifest["sha256"]
    summary = read_json(run_dir / "eval_summary.json", schema="eval_summary")
    assert summary["primary_score"] == metrics["primary_score"]
    assert "loss" in (run_dir / "run_log.txt").read_text()


def test_submission_zip(repro):
    zips = list((repro / "submission").glob("tunix_rt_v1_*.zip"))
    assert len(zips) == 1
    with zipfile.ZipFile(zips[0]) as z:
        names = z.namelist()
        assert names == sorted(names)
        for required in ("params.yaml", "dvc.yaml", "dvc.lock", "submission_runs/v1/run_manifest.json",
                         "submission_runs/v1/eval_summary.json", "data/train_manifest.json",
                         "evalsets/tunix_eval_v1.jsonl", "SUBMISSION_README.md"):
            assert required in names
        assert {i.date_time for i in z.infolist()} == {(1980, 1, 1, 0, 0, 0)}


def test_second_repro_is_a_no_op(repro):
    out = run(["dvc", "repro"], repro).stdout
    assert "didn't change" in out or "up to date" in out
    assert "Running stage" not in out
    status = run(["dvc", "status", "-q"], repro, check=False)
    assert status.returncode == 0


def test_two_clean_runs_give_identical_bytes(repro, tmp_path):
    again = make_repo(tmp_path / "again")
    run(["dvc", "repro"], again)
    telemetry = repro / "dvclive"  # tokens/s and timestamps: wall-clock by nature
    for out in declared_outs(repro):
        if out == telemetry or telemetry in out.parents:
            continue
        twin = again / out.relative_to(repro)
        assert files_under(out) == files_under(twin), f"{out.relative_to(repro)} differs between runs"
