"""Faults: SIGKILL part-way through a stage, then recover; a diverging loss stops training cleanly.

The kill tests run the real `dvc repro` in a temporary git repo (tests/pipeline_utils.py),
kill its whole process group once the stage is under way (a temporary output
or a checkpoint has appeared; polled, never a blind sleep), and check that the
next `dvc repro` finishes, `dvc status` is clean and no temporary was taken
for an output. The key acceptance test: training killed after a checkpoint
resumes from it and ends with a model bit-identical to an uninterrupted run.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from stages.common import read_json, read_jsonl, remove_stale_temporaries, sha256_file, write_jsonl
from tests.pipeline_utils import env, make_repo, run

# Tiny everywhere: the point is the recovery, not the model.
FAULT_PARAMS = {
    "seed": {"size": 200},
    "tokenizer": {"vocab_size": 400},
    "train": {"steps": 8, "batch_size": 2, "seq_len": 128, "warmup_steps": 2, "log_every": 2, "save_every": 2},
    "predict": {"batch_size": 128, "max_new_tokens": 8},
}


def start(args: list[str], repo: Path, log: Path) -> subprocess.Popen:
    """`args` in `repo`, in a new process group, output to `log` (never a pipe nobody reads)."""
    with open(log, "wb") as out:
        return subprocess.Popen(args, cwd=repo, env=env(), stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def kill_when(proc: subprocess.Popen, ready: Callable[[], bool], log: Path, timeout: float = 300) -> float:
    """Poll `ready()`; once true, SIGKILL the whole process group. Returns when it fired (seconds)."""
    t0 = time.monotonic()
    while not ready():
        if proc.poll() is not None:
            pytest.fail(f"finished (exit {proc.returncode}) before the kill point:\n{log.read_text()[-3000:]}")
        if time.monotonic() - t0 > timeout:
            os.killpg(proc.pid, signal.SIGKILL)
            pytest.fail(f"kill point not reached in {timeout}s:\n{log.read_text()[-3000:]}")
        time.sleep(0.005)
    fired = time.monotonic() - t0
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    deadline = time.monotonic() + 10  # the stage process (dvc's child) goes with the group
    while time.monotonic() < deadline:
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    return fired


def temporaries(repo: Path) -> list[str]:
    """`*.tmp` files or folders anywhere outside .git/.dvc (what atomic writes leave when killed)."""
    found = []
    for path in repo.rglob("*"):
        rel = path.relative_to(repo)
        if rel.parts[0] in (".git", ".dvc"):
            continue
        if path.name.endswith(".tmp") or "orbax-checkpoint-tmp" in path.name:
            found.append(rel.as_posix())
    return sorted(found)


def files_under(path: Path) -> dict[str, bytes]:
    return {p.relative_to(path).as_posix(): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def status_is_clean(repo: Path, *targets: str) -> None:
    proc = run(["dvc", "status", "-q", *targets], repo, check=False)
    assert proc.returncode == 0, f"dvc status not clean:\n{run(['dvc', 'status', *targets], repo, check=False).stdout}"


# ---------------------------------------------------------------- kill during training


def checkpoint_steps(repo: Path) -> list[int]:
    ckpt = repo / "data/checkpoints"
    return sorted(int(p.name) for p in ckpt.iterdir() if p.name.isdigit()) if ckpt.is_dir() else []


# LoRA: only the adapters are checkpointed (the base is rebuilt); dropout masks follow (seed, step).
LORA = {
    "rank": 4,
    "alpha": 8.0,
    "dropout": 0.1,
    "targets": ["q_proj", "v_proj", "o_proj", "up_proj", "down_proj"],
    "rslora": False,
}


@pytest.mark.slow
@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_killed_training_resumes_from_its_checkpoint_bit_identical(tmp_path, lora):
    repo = make_repo(tmp_path / "repo", {**FAULT_PARAMS, "model": {"lora": LORA}} if lora else FAULT_PARAMS)
    run(["dvc", "repro", "tokenizer"], repo)

    # The reference: the same params, trained without interruption.
    run([sys.executable, "-m", "stages.train"], repo)
    reference = files_under(repo / "data/model")
    reference_info = json.loads(reference["training_info.json"])
    assert reference_info["steps"] == 8
    assert ("adapter/adapter_model.safetensors" in reference) == lora == ("lora" in reference_info)
    for name in ("data/model", "dvclive"):
        subprocess.run(["rm", "-rf", str(repo / name)], check=True)
    assert checkpoint_steps(repo) == []  # a finished run leaves nothing to resume

    # `dvc repro train` killed once training has written a checkpoint.
    log = tmp_path / "killed.log"
    proc = start(["dvc", "repro", "train"], repo, log)
    kill_when(proc, lambda: bool(checkpoint_steps(repo)), log)
    saved = checkpoint_steps(repo)
    assert saved and max(saved) < 8
    assert not (repo / "data/model").exists()  # nothing half-written where the model goes
    assert "Running stage 'train'" in log.read_text()
    # A save cut short leaves orbax's temporary folder; it must never be taken for a checkpoint.
    partial = repo / "data/checkpoints" / f"{max(saved) + 2}.orbax-checkpoint-tmp-1234567890"
    partial.mkdir()
    (partial / "garbage").write_bytes(b"\x00" * 64)

    # The next repro resumes from the checkpoint and is clean. (Not the whole pipeline: 8 steps
    # of training score nothing, and evidence rightly refuses a run that scored nothing.)
    out = run(["dvc", "repro", "train"], repo).stdout
    assert f"train: resumed from the checkpoint of step {max(saved)}" in out
    status_is_clean(repo, "train")

    resumed = files_under(repo / "data/model")
    assert resumed["model.safetensors"] == reference["model.safetensors"], "resumed weights differ from a clean run"
    assert resumed == reference  # config, tokenizer and training_info (loss curve included) too

    # dvclive shows the whole curve, each step once: the killed run's rows grew beside its checkpoints
    # (stages/live.py; dvc deletes the dvclive outs before re-running the stage), those logged after the
    # checkpoint it resumed from were dropped, and the resumed run logged the rest.
    live = json.loads((repo / "dvclive/metrics.json").read_text())
    assert live["step"] == 8
    tsv = (repo / "dvclive/plots/metrics/train/loss.tsv").read_text().splitlines()
    logged = [int(float(line.split("\t")[0])) for line in tsv[1:] if line.strip()]
    assert logged == [2, 4, 6, 8], tsv
    assert not (repo / "data/.checkpoints.curves").exists()  # the work folder goes with the checkpoints
    assert [s for s, _ in json.loads(resumed["training_info.json"])["loss_history"]] == [2, 4, 6, 8]

    assert checkpoint_steps(repo) == [] and temporaries(repo) == []


# ---------------------------------------------------------------- kill while an output is written


@pytest.mark.slow
def test_killed_seed_leaves_no_partial_output_and_repro_recovers(tmp_path):
    params = {**FAULT_PARAMS, "seed": {"size": 40000}}
    repo = make_repo(tmp_path / "repo", params)
    data = repo / "data"
    log = tmp_path / "killed.log"
    proc = start(["dvc", "repro", "seed"], repo, log)
    # Under way: the temporary of data/train.jsonl exists (the generator is done, the write has begun).
    kill_when(proc, lambda: data.is_dir() and any(p.name.startswith(".train.jsonl.") for p in data.iterdir()), log)
    left = temporaries(repo)
    assert not (data / "train_manifest.json").exists()
    assert all(name.startswith("data/.train.jsonl.") for name in left), left

    out = run(["dvc", "repro", "seed"], repo).stdout
    assert "Running stage 'seed'" in out
    status_is_clean(repo, "seed")
    assert temporaries(repo) == []  # the killed run's temporary is cleared, never promoted
    manifest = read_json(data / "train_manifest.json", schema="train_manifest")
    assert manifest["size"] == 40000 and manifest["sha256"] == sha256_file(data / "train.jsonl")


def test_stale_temporaries_are_removed_not_promoted(tmp_path):
    """What a SIGKILL leaves (a temporary sibling) is cleared by the next write and never becomes the output."""
    out = tmp_path / "data/train.jsonl"
    stale = tmp_path / "data/.train.jsonl.k1ll3d00.tmp"
    stale.mkdir(parents=True)
    (stale / "train.jsonl").write_text('{"id": "partial"')
    unrelated = [tmp_path / "data/.train.jsonl.keep", tmp_path / "data/.other.jsonl.k1ll3d00.tmp"]
    for path in unrelated:
        path.mkdir()
    write_jsonl(out, [{"id": "a"}, {"id": "b"}])
    assert [r["id"] for r in read_jsonl(out)] == ["a", "b"]
    assert not stale.exists()
    assert all(path.exists() for path in unrelated)  # only this output's own temporaries
    assert remove_stale_temporaries(out) == []


def test_stage_cli_clears_a_killed_runs_temporary(tmp_path):
    repo = make_repo(tmp_path / "repo", FAULT_PARAMS)
    stale = repo / "data/.train.jsonl.abcd1234.tmp"
    stale.mkdir(parents=True)
    (stale / "train.jsonl").write_text("half a line")
    proc = subprocess.run([sys.executable, "-m", "stages.seed"], cwd=repo, env=env(), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert temporaries(repo) == []
    assert len(read_jsonl(repo / "data/train.jsonl", schema="trace")) == 200


# ---------------------------------------------------------------- a diverging loss


class PoisonedStream:
    """A BatchStream whose batches turn NaN from step `poison_at` (0-based) on."""

    def __init__(self, stream, poison_at: int):
        self.stream, self.poison_at = stream, poison_at

    def batch(self, step: int) -> dict[str, np.ndarray]:
        batch = self.stream.batch(step)
        if step >= self.poison_at:
            batch = dict(batch, weights=np.full_like(batch["weights"], np.nan))
        return batch


def small_training(cfg):
    from flax import nnx

    from training.data import BatchStream, Example, pack
    from training.model import Gemma

    rng = np.random.default_rng(0)
    examples = [Example(rng.integers(4, 64, 14).astype(np.int32), np.arange(14) >= 4) for _ in range(16)]
    rows = pack(examples, 16)
    return Gemma(cfg, rngs=nnx.Rngs(params=0)), BatchStream(rows, 2, seed=0)


@pytest.mark.parametrize("log_every", [1, 3], ids=["caught-at-a-log-step", "caught-at-a-save-step"])
def test_non_finite_loss_stops_with_a_clear_error_and_keeps_the_last_good_checkpoint(tmp_path, log_every, tiny_config):
    import orbax.checkpoint as ocp

    from training.trainer import NonFiniteLoss, TrainConfig, train

    model, stream = small_training(tiny_config)
    cfg = TrainConfig(
        steps=8, batch_size=2, seq_len=16, learning_rate=1e-3, warmup_steps=0, log_every=log_every, save_every=2
    )
    ckpt = tmp_path / "checkpoints"
    # Steps 1-3 are good (a checkpoint at 2); from step 4 the loss is NaN. With log_every=3 step 4
    # is a save step but not a log step: the divergence must be caught there, not checkpointed.
    with pytest.raises(NonFiniteLoss, match=r"loss is nan .*at step 4; the last good checkpoint is kept in") as err:
        train(model, PoisonedStream(stream, poison_at=3), cfg, checkpoint_dir=ckpt)
    assert str(ckpt) in str(err.value) and "\n" not in str(err.value)

    manager = ocp.CheckpointManager(ckpt.absolute())
    assert list(manager.all_steps()) == [2]
    restored = manager.restore(2)
    leaves = [np.asarray(x) for x in __import__("jax").tree.leaves(restored)]
    assert leaves and all(np.isfinite(x).all() for x in leaves if np.issubdtype(x.dtype, np.floating))
    manager.close()

    if log_every == 1:
        return  # one resume is enough (compiling the step again costs seconds)
    # The kept checkpoint is a good place to resume from (a save before the first log step included).
    model, stream = small_training(tiny_config)
    result = train(model, stream, cfg, checkpoint_dir=ckpt)
    assert result.resumed_from == 2 and math.isfinite(result.final_loss)
    assert [s for s, _ in result.loss_history] == [s for s in range(1, 9) if s % log_every == 0 or s == 8]


def test_train_stage_reports_divergence_as_one_line(shared_base, tmp_path, monkeypatch, capsys):
    """The stage turns NonFiniteLoss into `error: data/train.jsonl: training diverged: …`; the model is kept."""
    from stages import common
    from stages import train as train_stage
    from training.trainer import NonFiniteLoss

    def diverge(*args, **kwargs):
        raise NonFiniteLoss("loss is nan at step 4; the last good checkpoint is kept in data/checkpoints")

    repo = tmp_path / "repo"
    shutil.copytree(shared_base, repo, symlinks=True)  # seed and tokenizer outputs, and a model to lose
    model_before = files_under(repo / "data/model")
    monkeypatch.chdir(repo)
    monkeypatch.setattr(train_stage, "train", diverge)
    with pytest.raises(SystemExit) as exit_:
        common.run_stage(train_stage.main)
    assert exit_.value.code == 1
    err = capsys.readouterr().err.splitlines()
    # (In-process, stderr may also hold other threads' log lines; the CLI's one-line contract is
    # checked on real subprocesses in test_bad_inputs.py.)
    assert [line for line in err if line.startswith("error")] == [
        "error: data/train.jsonl: training diverged: loss is nan at step 4; "
        "the last good checkpoint is kept in data/checkpoints"
    ], err
    assert files_under(repo / "data/model") == model_before and temporaries(repo) == []


# ---------------------------------------------------------------- all outputs or none (issue 38)
# A stage that fails leaves every output as the last good run left it: it replaces none of them before
# it has computed all of them. evaluate's two reports: tests/test_evaluate.py.


def test_atomic_paths_replace_every_output_or_none(tmp_path):
    from stages.common import atomic_paths

    folder, file = tmp_path / "out" / "curves", tmp_path / "out" / "metrics.json"
    (folder / "plots").mkdir(parents=True)
    (folder / "plots" / "a.tsv").write_text("step\ta\n1\t0.5\n")
    file.write_text('{"old": true}\n')
    before = {**files_under(tmp_path / "out")}

    with pytest.raises(RuntimeError, match="the last computation failed"):
        with atomic_paths(folder, file) as (new_folder, new_file):
            new_folder.mkdir()
            (new_folder / "b.tsv").write_text("step\tb\n")
            raise RuntimeError("the last computation failed")  # after the first output was written
    assert files_under(tmp_path / "out") == before and temporaries(tmp_path) == []

    with pytest.raises(RuntimeError, match="nothing was written for .*metrics.json"):
        with atomic_paths(folder, file) as (new_folder, new_file):
            new_folder.mkdir()  # the second output never written
    assert files_under(tmp_path / "out") == before and temporaries(tmp_path) == []

    with atomic_paths(folder, file) as (new_folder, new_file):
        new_folder.mkdir()
        (new_folder / "b.tsv").write_text("step\tb\n")
        new_file.write_text("{}\n")
    assert files_under(tmp_path / "out") == {"curves/b.tsv": b"step\tb\n", "metrics.json": b"{}\n"}
    assert temporaries(tmp_path) == []


def tsv_steps(path: Path) -> list[int]:
    return [int(float(line.split("\t")[0])) for line in path.read_text().splitlines()[1:] if line.strip()]


def test_failed_run_leaves_the_curves_as_they_were_and_its_resume_logs_each_step_once(tmp_path):
    from stages import live

    curves, checkpoints = tmp_path / "dvclive", tmp_path / "data" / "checkpoints"
    (curves / "grpo" / "plots").mkdir(parents=True)  # train's folder holds grpo's: never touched by train
    (curves / "grpo" / "metrics.json").write_text('{"steps": 0}\n')
    (curves / "plots" / "metrics").mkdir(parents=True)
    (curves / "plots" / "metrics" / "loss.tsv").write_text("step\tloss\n1\t9.0\n")
    (curves / "metrics.json").write_text('{"loss": 9.0, "step": 1}\n')
    last_good = files_under(curves)

    # A run logs steps 1-3, has checkpointed step 2, then fails.
    with pytest.raises(RuntimeError, match="diverged"):
        with live.curves(curves, checkpoints) as on_log:
            for step in (1, 2, 3):
                on_log(step, {"loss": float(10 - step)})
                if step == 2:
                    (checkpoints / "2").mkdir(parents=True)  # as orbax names a checkpoint
            raise RuntimeError("diverged")
    assert files_under(curves) == last_good
    assert tsv_steps(live.work_folder(checkpoints) / "plots" / "metrics" / "loss.tsv") == [1, 2, 3]

    # The resumed run starts after step 2: step 3 is logged again, once.
    with live.curves(curves, checkpoints) as on_log:
        for step in (3, 4):
            on_log(step, {"loss": float(10 - step)})
    assert tsv_steps(curves / "plots" / "metrics" / "loss.tsv") == [1, 2, 3, 4]
    assert json.loads((curves / "metrics.json").read_text())["step"] == 4
    assert files_under(curves / "grpo") == {"metrics.json": b'{"steps": 0}\n'}
    assert not live.work_folder(checkpoints).exists() and temporaries(tmp_path) == []

    # A fresh run (no checkpoints) starts its curves afresh, and a failure keeps the finished run's.
    shutil.rmtree(checkpoints)
    finished = files_under(curves)
    with pytest.raises(RuntimeError):
        with live.curves(curves, checkpoints) as on_log:
            on_log(1, {"loss": 1.0})
            raise RuntimeError("killed")
    assert files_under(curves) == finished


def test_failed_grpo_stage_leaves_its_curves_and_policy_as_they_were(shared_base, tmp_path, monkeypatch):
    """Item 11: a grpo run that failed part-way had already overwritten dvclive/grpo/."""
    import yaml

    from stages import grpo as grpo_stage
    from stages.common import StageError, load_params

    repo = tmp_path / "repo"
    shutil.copytree(shared_base, repo, symlinks=True)  # the last good run: grpo.steps 0's curves and policy
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["grpo"].update(steps=2, prompts_per_step=2, group_size=4, max_new_tokens=8)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    before = {name: files_under(repo / name) for name in ("dvclive", "data/policy")}

    def logs_then_diverges(*args, on_log, **kwargs):
        from training.loop import NonFiniteLoss

        on_log(1, {"step": 1, "reward_mean": 0.25})
        on_log(2, {"step": 2, "reward_mean": 0.5})
        raise NonFiniteLoss("loss is nan at step 3; the last good checkpoint is kept in data/grpo_checkpoints")

    monkeypatch.chdir(repo)
    monkeypatch.setattr(grpo_stage, "grpo", logs_then_diverges)
    with pytest.raises(StageError, match="RL diverged: loss is nan at step 3"):
        grpo_stage.run(load_params())
    assert {name: files_under(repo / name) for name in before} == before and temporaries(repo) == []
    work = repo / "data" / ".grpo_checkpoints.curves"  # where the failed run's curves went
    assert tsv_steps(work / "plots" / "metrics" / "reward_mean.tsv") == [1, 2]
