"""Sweeps: the DVC queue grid, a Ray Tune sweep whose trials are DVC experiments, space validation.

The two end-to-end tests run the real pipeline (up to `report`) on params
small enough for a 2-core CI machine: a handful of train steps and 8 generated
tokens per eval item. At that size no answer is right (primary_score 0.0), but
every score is a number and lands in `dvc exp show`.
"""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from sweeps import experiment
from sweeps.space import SweepError, load_space, normalize
from sweeps.trial import exp_name
from tests.pipeline_utils import ROOT, SMALL_PARAMS, env, make_repo, run

# Smaller than SMALL_PARAMS: many pipeline runs per test. 16 steps, loss logged every 2.
TINY = copy.deepcopy(SMALL_PARAMS)
TINY["seed"].update(size=300)
TINY["tokenizer"].update(vocab_size=300)
TINY["train"].update(steps=16, batch_size=2, seq_len=128, warmup_steps=2, log_every=2, save_every=100)
TINY["predict"].update(batch_size=128, max_new_tokens=8)

QUEUE_TINY = copy.deepcopy(TINY)
QUEUE_TINY["train"].update(steps=8)

RUN_CACHE_HIT = "Stage 'seed' is cached - skipping run"


def exp_show(repo: Path) -> dict[str, dict]:
    """`dvc exp show --json` as {experiment name: its first rev's data} for the HEAD baseline."""
    data = json.loads(run(["dvc", "exp", "show", "--json"], repo).stdout)
    out = {}
    for baseline in data:
        for exp in baseline.get("experiments") or []:
            out[exp["name"]] = exp["revs"][0]
    return out


def lr_of(rev: dict) -> float:
    return rev["data"]["params"]["params.yaml"]["data"]["train"]["learning_rate"]


def report_metrics(rev: dict) -> dict:
    return rev["data"]["metrics"]["reports/metrics.json"]["data"]


def train_loss(rev: dict) -> float:
    return rev["data"]["metrics"]["dvclive/metrics.json"]["data"]["train"]["loss"]


# ---------------------------------------------------------------- (a) the plain DVC way: a queued grid


def queue_status(repo: Path) -> tuple[dict[str, str], int]:
    """({experiment name: status}, active workers) from `dvc queue status`."""
    out = run(["dvc", "queue", "status"], repo).stdout
    status = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 4 and parts[-1] in ("Queued", "Running", "Success", "Failed"):
            status[parts[1]] = parts[-1]
    workers = re.search(r"Worker status: (\d+) active", out)
    return status, int(workers.group(1)) if workers else 0


def start_worker(repo: Path) -> None:
    # The worker is a daemon that inherits stdout: captured pipes would block until it exits.
    subprocess.run(
        ["dvc", "queue", "start", "-j", "1"],
        cwd=repo,
        env=env(),
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


@pytest.mark.slow
def test_queued_grid_runs_three_experiments(tmp_path):
    started = time.monotonic()
    repo = make_repo(tmp_path / "repo", QUEUE_TINY)
    out = run(["dvc", "exp", "run", "--queue", "report", "-S", "train.learning_rate=0.001,0.002,0.004"], repo).stdout
    assert out.count("Queued experiment") == 3

    start_worker(repo)
    restarts, deadline = 0, time.monotonic() + 600
    try:
        while True:
            time.sleep(5)
            status, workers = queue_status(repo)
            pending = [n for n, s in status.items() if s in ("Queued", "Running")]
            if not pending:
                break
            assert time.monotonic() < deadline, f"queue did not finish: {status}"
            if workers == 0 and "Running" not in status.values():
                # DVC's celery worker can die on a broker race and leave tasks queued (treeverse/dvc#10398)
                restarts += 1
                assert restarts <= 3, f"queue worker keeps dying: {status}"
                start_worker(repo)
    finally:
        run(["dvc", "queue", "stop"], repo, check=False)
    assert sorted(status.values()) == ["Success"] * 3, status

    exps = exp_show(repo)
    assert len(exps) == 3
    assert sorted(lr_of(rev) for rev in exps.values()) == [0.001, 0.002, 0.004]
    for rev in exps.values():
        metrics = report_metrics(rev)
        assert isinstance(metrics["primary_score"], float) and isinstance(metrics["format_accuracy"], float)
        assert metrics["n_items"] == 110
        assert train_loss(rev) > 0
        assert rev["data"]["params"]["params.yaml"]["data"]["train"]["steps"] == 8

    # seed and tokenizer ran once: the other experiments got them from the run-cache
    logs = {name: run(["dvc", "queue", "logs", name], repo).stdout for name in exps}
    assert sum("Running stage 'seed'" in log for log in logs.values()) == 1, logs
    assert sum(RUN_CACHE_HIT in log for log in logs.values()) == 2

    md = run(["dvc", "exp", "show", "--md", "--only-changed"], repo).stdout
    assert md.startswith("| Experiment") and all(name in md for name in exps) and "learning_rate" in md
    print(f"queued grid: {time.monotonic() - started:.0f}s")


# ---------------------------------------------------------------- (b) Ray Tune: trials are DVC experiments

SWEEP_SPACE = """\
# 2 learning rates x 2 presets. lr 0.5 is terrible (train loss 30 at step 2 against 4.5):
# ASHA stops it at its first rung. gemma presets have no checkpoint here: those trials fail.
search: {algorithm: grid}
scheduler:
  asha: {grace_period: 2, reduction_factor: 2}
train.learning_rate: {grid: [0.01, 0.5]}
model.preset: {grid: [tiny, gemma3-1b]}
"""


def processes_under(path: Path) -> list[str]:
    """Live processes whose working directory is inside `path`."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cwd = os.readlink(proc / "cwd")
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if cwd.startswith(str(path)):
            found.append(f"{proc.name} {cmd}")
    return found


@pytest.mark.slow
def test_ray_sweep_trials_become_dvc_experiments(tmp_path):
    pytest.importorskip("ray.tune")
    started = time.monotonic()
    repo = make_repo(tmp_path / "repo", TINY)
    space = tmp_path / "space.yaml"
    space.write_text(SWEEP_SPACE)
    proc = run(
        [
            sys.executable,
            "-m",
            "sweeps.ray_sweep",
            "--space",
            str(space),
            "--name",
            "t4",
            "--max-concurrent",
            "1",
            "--apply-best",
        ],
        repo,
        timeout=900,
    )
    out = proc.stdout
    summary = json.loads((repo / ".dvc/tmp/sweeps/t4/summary.json").read_text())
    trials = {(t["params"]["train.learning_rate"], t["params"]["model.preset"]): t for t in summary["trials"]}
    assert len(trials) == 4, out

    good, bad = trials[(0.01, "tiny")], trials[(0.5, "tiny")]
    assert good["status"] == "completed" and good["steps"] == 16 and good["loss"] > 0
    assert bad["status"] == "stopped early" and bad["step"] < 16, out  # ASHA, on the streamed train loss
    for preset_trial in (trials[(0.01, "gemma3-1b")], trials[(0.5, "gemma3-1b")]):
        assert preset_trial["status"] == "failed"
        assert preset_trial["error"].startswith("error: params.yaml:") and "model.checkpoint" in preset_trial["error"]
    assert summary["best"] == good["name"]

    # the final table and the failures, as the user sees them
    assert re.search(rf"\| {good['name']} +\| completed \(best\) +\| 0\.01 +\| tiny", out), out
    assert re.search(rf"\| {bad['name']} +\| stopped early", out)
    assert "failed trials:" in out and "needs a Hugging Face directory or a GGUF file" in out
    assert f"dvc exp apply {good['name']}" in out

    # completed trials, and only those, are experiments of the repo, with their params and metrics
    exps = exp_show(repo)
    assert set(exps) == {good["name"]}
    rev = exps[good["name"]]
    assert lr_of(rev) == 0.01 and rev["data"]["params"]["params.yaml"]["data"]["model"]["preset"] == "tiny"
    metrics = report_metrics(rev)
    assert isinstance(good["primary_score"], float) and metrics["primary_score"] == good["primary_score"]
    assert metrics["format_accuracy"] == good["format_accuracy"]
    assert train_loss(rev) == pytest.approx(good["loss"], rel=1e-4)

    # trials after the first got seed from the shared run-cache
    logs = {t["name"]: Path(t["log"]).read_text() for t in summary["trials"]}
    assert "Running stage 'seed'" in logs[good["name"]]
    assert RUN_CACHE_HIT in logs[bad["name"]]

    # --apply-best: `dvc exp apply` put the best trial's params, lock and outputs into the workspace
    applied = yaml.safe_load((repo / "params.yaml").read_text())
    assert applied["train"]["learning_rate"] == 0.01
    assert (repo / "data/model/model.safetensors").is_file()
    assert "train" in yaml.safe_load((repo / "dvc.lock").read_text())["stages"]

    # nothing left running or lying around
    sweep_dir = repo / ".dvc/tmp/sweeps/t4"
    assert processes_under(sweep_dir) == []
    assert not any((sweep_dir / t["name"] / "repo").exists() for t in summary["trials"])
    print(f"ray sweep: {time.monotonic() - started:.0f}s")


# ---------------------------------------------------------------- (c) validation: one line, before anything runs


def sweep_cli(space: Path) -> subprocess.CompletedProcess:
    return run([sys.executable, "-m", "sweeps.ray_sweep", "--space", str(space)], ROOT, check=False)


def test_unknown_param_path_is_one_line_naming_file_and_key(tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text(
        "search: {algorithm: random, num_samples: 2}\ntrain.learning_rate: {choice: [0.01]}\n"
        "train.learnin_rate: {loguniform: [1e-4, 1e-2]}\n"
    )
    proc = sweep_cli(space)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"error: {space}:3: train.learnin_rate: not a param in params.yaml")


def test_empty_space_is_an_error(tmp_path):
    space = tmp_path / "space.yaml"
    for text in ("", "# nothing yet\n", "search: {algorithm: grid}\nscheduler: {asha: {grace_period: 2}}\n"):
        space.write_text(text)
        proc = sweep_cli(space)
        assert proc.returncode == 1
        assert (
            proc.stderr.strip() == f"error: {space}: empty search space: no param to search "
            "(add e.g. `train.learning_rate: {loguniform: [1.0e-4, 1.0e-2]}`)"
        )


def test_bad_options_are_one_line_errors(tmp_path):
    proc = run(
        [sys.executable, "-m", "sweeps.ray_sweep", "--space", "sweeps/lr_warmup.yaml", "--metric", "acc"],
        ROOT,
        check=False,
    )
    assert proc.returncode == 1
    assert proc.stderr.startswith("error: --metric acc: not a metric (one of loss, primary_score, format_accuracy")
    space = tmp_path / "space.yaml"
    space.write_text("search: {algorithm: grid}\ntrain.learning_rate: {grid: [0.001, 0.002]}\n")
    proc = run(
        [sys.executable, "-m", "sweeps.ray_sweep", "--space", str(space), "--num-samples", "3"], ROOT, check=False
    )
    assert proc.returncode == 1 and "--num-samples does not apply to algorithm grid" in proc.stderr


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("train: {choice: [1]}\n", ":1: train: is a section of params.yaml, not a param"),
        ("model.preset: [tiny]\n", ":1: model.preset: expected exactly one of {choice"),
        (
            "train.learning_rate: {choice: [0.01, 5]}\n",
            ":1: train.learning_rate.choice[1]: 5 is greater than the maximum of 1",
        ),
        (
            "train.learning_rate: {uniform: [0.1, 0.01]}\n",
            ":1: train.learning_rate.uniform: low 0.1 must be less than high 0.01",
        ),
        ("train.learning_rate: {loguniform: [0, 0.01]}\n", "loguniform: low 0 must be positive"),
        ("train.warmup_steps: {uniform: [0.5, 10]}\n", "integer param: bounds must be integers"),
        (
            "search: {algorithm: grid}\ntrain.learning_rate: {uniform: [0.001, 0.01]}\n",
            ":2: train.learning_rate: algorithm grid needs a finite list of values, not uniform",
        ),
        (
            "search: {algorithm: bayes}\ntrain.steps: {choice: [8]}\n",
            ":1: search.algorithm: 'bayes' is not one of random, grid",
        ),
        (
            "train.steps: {choice: [8, 16]}\nscheduler:\n  asha: {grace_period: 32}\n",
            ":3: scheduler.asha.grace_period: 32 is more than max_t 16",
        ),
        ("train.steps: {choice: [8]}\nscheduler: {hyperband: {}}\n", ":2: scheduler: expected {asha:"),
    ],
)
def test_space_errors_name_file_line_and_key(tmp_path, text, message):
    space = tmp_path / "space.yaml"
    space.write_text(text)
    with pytest.raises(SweepError) as err:
        load_space(space, ROOT / "params.yaml")
    assert str(err.value).startswith(str(space)) and message in str(err.value), str(err.value)
    assert "\n" not in str(err.value)


def test_example_space_and_its_ray_domains():
    space = load_space(ROOT / "sweeps/lr_warmup.yaml", ROOT / "params.yaml")
    assert space.keys() == ["train.learning_rate", "train.warmup_steps"]
    assert space.algorithm == "random" and space.num_samples == 8 and space.seed == 0
    steps = yaml.safe_load((ROOT / "params.yaml").read_text())["train"]["steps"]
    assert space.asha is not None and space.asha.max_t == space.steps == steps
    pytest.importorskip("ray")
    from ray import tune

    from sweeps.space import ray_param_space

    domains = ray_param_space(space)
    assert isinstance(domains["train.learning_rate"], tune.search.sample.Float)
    assert isinstance(domains["train.warmup_steps"], tune.search.sample.Categorical)


def test_integer_ranges_sample_integers_and_asha_defaults(tmp_path):
    space_file = tmp_path / "space.yaml"
    space_file.write_text(
        "train.warmup_steps: {uniform: [0, 40]}\ntrain.steps: {choice: [100, 300]}\n"
        "scheduler: {asha: {grace_period: 10}}\n"
    )
    space = load_space(space_file, ROOT / "params.yaml")
    assert space.dims[0].integer and (space.dims[0].low, space.dims[0].high) == (0, 40)
    assert space.asha.max_t == 300 and space.asha.reduction_factor == 2
    pytest.importorskip("ray")
    from ray import tune

    from sweeps.space import ray_param_space

    assert isinstance(ray_param_space(space)["train.warmup_steps"], tune.search.sample.Integer)


# ---------------------------------------------------------------- trial plumbing


def test_write_params_keeps_comments_and_writes_floats_the_stages_read(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text((ROOT / "params.yaml").read_text())
    experiment.write_params(params, {"train.learning_rate": 1e-05, "train.warmup_steps": 7, "model.checkpoint": None})
    text = params.read_text()
    assert "learning_rate: 1.0e-05" in text  # `dvc exp run -S` would write 1e-05: a string to PyYAML
    loaded = yaml.safe_load(text)
    assert loaded["train"]["learning_rate"] == 1e-05 and loaded["train"]["warmup_steps"] == 7
    before, after = (ROOT / "params.yaml").read_text().splitlines(), text.splitlines()
    changed = [(a, b) for a, b in zip(before, after) if a != b]
    assert len(before) == len(after) and len(changed) == 2, changed  # comments, order, `null`s kept


def test_names_values_and_error_lines(tmp_path):
    assert exp_name("lr", "3f2a1_00007") == "lr-07"
    assert normalize(0.0012345678) == 0.001235 and normalize(3) == 3 and normalize("tiny") == "tiny"
    log = tmp_path / "dvc.log"
    log.write_text(
        "Running stage 'train':\rtrain: 10%\r\nerror: data/train.jsonl:3: prompt: bad\n"
        "ERROR: failed to reproduce 'train': failed to run: python -m stages.train, exited with 1\n"
    )
    assert experiment.last_error_line(log) == "error: data/train.jsonl:3: prompt: bad"
    log.write_text("predict:   0%|   | 0/110 [00:00<?, ?item/s]ERROR: failed to reproduce 'predict'\n")
    assert experiment.last_error_line(log) == "ERROR: failed to reproduce 'predict'"
