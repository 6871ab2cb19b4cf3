"""The real `dvc repro`, end to end, on small params in temporary git repos.

One module-scoped run, with two eval sets (ours and a GSM8K-format test file),
is shared by the checks; a second, independent run of the same commit proves
every declared output is byte-for-byte reproducible; a third set added to a
copy runs only that set's predict and evaluate (and what reads every set).
"""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import pytest
import yaml

from stages import evalsets
from stages.common import read_json, read_jsonl, sha256_file
from tests.pipeline_utils import SMALL_PARAMS, declared_outs, make_repo, run

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


GSM8K_TEST = [
    {
        "question": "Tom has 3 bags with 4 apples in each bag. How many apples does Tom have?",
        "answer": "Tom has 3*4 = <<3*4=12>>12 apples.\n#### 12",
    },
    {
        "question": "A shop sells 25 pens on Monday and 17 pens on Tuesday. How many pens does it sell?",
        "answer": "It sells 25+17 = <<25+17=42>>42 pens.\n#### 42",
    },
    {
        "question": "Ann has 90 stickers and gives away 35. How many stickers are left?",
        "answer": "90-35 = <<90-35=55>>55 stickers are left.\n#### 55",
    },
]
SETS = {
    "tunix": {"path": "evalsets/tunix_eval_v1.jsonl", "format": "items", "primary": True},
    "gsm8k_test": {"path": "evalsets/gsm8k_test.jsonl", "format": "gsm8k"},
}


def write_gsm8k(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


@pytest.fixture(scope="module")
def repro(tmp_path_factory, fixed_date) -> Path:
    return two_set_repo(tmp_path_factory.mktemp("pipeline") / "repo")


def two_set_repo(dest: Path) -> Path:
    """A test repo with a GSM8K-format test file as a second eval set, after `dvc repro`."""
    repo = make_repo(dest, {**SMALL_PARAMS, "evaluate": {"sets": SETS}})
    write_gsm8k(repo / "evalsets/gsm8k_test.jsonl", GSM8K_TEST)
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "a second eval set"], repo)
    run(["dvc", "repro"], repo)
    return repo


def outs_of(repo: Path) -> list[Path]:
    return [repo / name for name in declared_outs(repo)]


def files_under(path: Path) -> dict[str, bytes]:
    if path.is_file():
        return {path.name: path.read_bytes()}
    return {p.relative_to(path).as_posix(): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def test_every_declared_output_exists(repro):
    for out in outs_of(repro):
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
    predictions = read_jsonl(repro / "data/predictions/tunix.jsonl", schema="prediction")
    assert [p["id"] for p in predictions] == [i["id"] for i in items]
    gsm8k = read_jsonl(repro / "data/predictions/gsm8k_test.jsonl", schema="prediction")
    assert [p["id"] for p in gsm8k] == ["core-001", "core-002", "core-003"]

    metrics = read_json(repro / "reports/metrics.json", schema="metrics")
    assert metrics == {**evalsets.read_metrics("tunix", repro), "primary_set": "tunix"}
    assert metrics["n_items"] == len(items)
    assert isinstance(metrics["primary_score"], float)
    assert evalsets.read_metrics("gsm8k_test", repro)["n_items"] == 3
    card = read_json(repro / "reports/sets/gsm8k_test/scorecard.json", schema="scorecard")
    assert card["eval_set"]["sha256"] == sha256_file(repro / "evalsets/gsm8k_test.jsonl")
    deco = read_json(repro / "data/decontamination.json", schema="decontamination")
    assert set(deco["sets"]) == {"tunix", "gsm8k_test"}

    run_dir = repro / "submission_runs/v1"
    run_manifest = read_json(run_dir / "run_manifest.json", schema="run_manifest")
    assert run_manifest["dataset"]["sha256"] == manifest["sha256"]
    assert set(run_manifest["eval_sets"]) == {"tunix", "gsm8k_test"}
    assert {"predict@tunix", "predict@gsm8k_test", "evaluate@gsm8k_test", "report"} <= set(run_manifest["dvc_lock"])
    summary = read_json(run_dir / "eval_summary.json", schema="eval_summary")
    assert summary["primary_score"] == metrics["primary_score"]
    assert set(summary["sets"]) == {"tunix", "gsm8k_test"}
    assert "loss" in (run_dir / "run_log.txt").read_text()


def test_submission_zip(repro):
    zips = list((repro / "submission").glob("tunix_rt_v1_*.zip"))
    assert len(zips) == 1
    with zipfile.ZipFile(zips[0]) as z:
        names = z.namelist()
        assert names == sorted(names)
        for required in (
            "params.yaml",
            "dvc.yaml",
            "dvc.lock",
            "submission_runs/v1/run_manifest.json",
            "submission_runs/v1/eval_summary.json",
            "data/train_manifest.json",
            "evalsets/tunix_eval_v1.jsonl",
            "evalsets/gsm8k_test.jsonl",
            "SUBMISSION_README.md",
        ):
            assert required in names
        assert {i.date_time for i in z.infolist()} == {(1980, 1, 1, 0, 0, 0)}


def test_second_repro_is_a_no_op(repro):
    out = run(["dvc", "repro"], repro).stdout
    assert "didn't change" in out or "up to date" in out
    assert "Running stage" not in out
    status = run(["dvc", "status", "-q"], repro, check=False)
    assert status.returncode == 0


def exp_show_metrics(repo: Path) -> dict[str, dict]:
    """The workspace row of `dvc exp show --json`: metrics file -> its numbers."""
    rows = json.loads(run(["dvc", "exp", "show", "--json"], repo).stdout)
    workspace = next(r for r in rows if r["rev"] == "workspace")
    return {path: m["data"] for path, m in workspace["data"]["metrics"].items()}


def test_every_sets_scores_are_in_exp_show(repro):
    metrics = exp_show_metrics(repro)
    for name in ("tunix", "gsm8k_test"):
        shown = metrics[f"reports/sets/{name}/metrics.json"][name]  # a column <set>.primary_score
        assert shown["primary_score"] == evalsets.read_metrics(name, repro)["primary_score"]
        assert isinstance(shown["primary_score"], float)
    assert (
        metrics["reports/metrics.json"]["primary_score"]
        == metrics["reports/sets/tunix/metrics.json"]["tunix"]["primary_score"]
    )
    # primary_score alone names one column, so sorting by it (the README, the sweeps) is not ambiguous
    table = run(
        [
            "dvc",
            "exp",
            "show",
            "--md",
            "--sort-by",
            "primary_score",
            "--drop",
            ".*",
            "--keep",
            "Experiment|primary_score|tunix.primary_score|gsm8k_test.primary_score",
        ],
        repro,
    ).stdout
    header = [c.strip() for c in table.splitlines()[0].strip("|").split("|")]
    assert sorted(header) == ["Experiment", "gsm8k_test.primary_score", "primary_score", "tunix.primary_score"], table


def test_a_third_eval_set_runs_only_its_own_predict_and_evaluate(repro, tmp_path):
    repo = tmp_path / "third"
    shutil.copytree(repro, repo, symlinks=True)
    write_gsm8k(repo / "evalsets/more.jsonl", GSM8K_TEST[:2])
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["evaluate"]["sets"]["more"] = {"path": "evalsets/more.jsonl", "format": "gsm8k"}
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    before = {
        out: files_under(repo / out) for out in ("data/train.jsonl", "data/model", "data/predictions/tunix.jsonl")
    }
    out = run(["dvc", "repro"], repo).stdout
    ran = sorted(line.split("'")[1] for line in out.splitlines() if line.startswith("Running stage"))
    # seed re-checks the data against the new set (nothing changes: tokenizer and train are skipped);
    # report, evidence and package read every set.
    assert ran == ["evaluate@more", "evidence", "judge@more", "package", "predict@more", "report", "seed"], out
    assert {o: files_under(repo / o) for o in before} == before
    assert "reports/sets/more/metrics.json" in exp_show_metrics(repo)


def test_two_clean_runs_give_identical_bytes(repro, tmp_path):
    again = two_set_repo(tmp_path / "again")
    telemetry = repro / "dvclive"  # tokens/s and timestamps: wall-clock by nature
    for out in outs_of(repro):
        if out == telemetry or telemetry in out.parents:
            continue
        twin = again / out.relative_to(repro)
        assert files_under(out) == files_under(twin), f"{out.relative_to(repro)} differs between runs"
