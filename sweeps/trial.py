"""The Ray Tune trainable: one trial = one DVC experiment (see `sweeps.experiment`).

While `dvc exp run` trains, every new `train/loss` that dvclive logs is
reported as `{"loss", "step"}`; an ASHA decision to stop arrives as SystemExit
from `tune.report`, and the `finally` stops the experiment's process group.
A finished experiment is pushed to the repo, then reported once more with its
scores and `completed: True` (without `step`, so no scheduler acts on it).
A failure raises TrialFailed with the log's most telling line; Tune records it
and the sweep goes on.

Files per trial, in `<workdir>/<name>/`: `repo/` (the clone, removed when the
trial ends unless kept), `dvc.log`, `pgid` (while running), `result.json`
(completed) or `error.txt` (failed).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from sweeps import experiment
from sweeps.space import normalize

POLL_S = 0.5


def exp_name(sweep: str, trial_id: str) -> str:
    """`<sweep>-<nn>` from Tune's trial id `<experiment>_<counter>`."""
    counter = trial_id.rsplit("_", 1)[-1]
    return f"{sweep}-{int(counter):02d}" if counter.isdigit() else f"{sweep}-{trial_id}"


def trial_dir(ctx: dict, name: str) -> Path:
    return Path(ctx["workdir"]) / name


def cleanup(ctx: dict, name: str) -> None:
    """Stop a trial's experiment if it still runs, and drop its clone (unless kept). Idempotent."""
    tdir = trial_dir(ctx, name)
    pgid_file = tdir / "pgid"
    try:
        pgid = int(pgid_file.read_text())
    except (OSError, ValueError):
        pgid = None
    if pgid:
        if experiment.stop_group(pgid):
            experiment.note(tdir / "dvc.log", f"sweep: cleanup (pid {os.getpid()}) stopped process group {pgid}")
        pgid_file.unlink(missing_ok=True)
    if not ctx.get("keep_workspaces"):
        shutil.rmtree(tdir / "repo", ignore_errors=True)


def run_trial(config: dict[str, Any], ctx: dict) -> None:
    from ray import tune

    name = exp_name(ctx["sweep"], tune.get_context().get_trial_id())
    tdir = trial_dir(ctx, name)
    tdir.mkdir(parents=True, exist_ok=True)
    log = tdir / "dvc.log"
    values = {key: normalize(value) for key, value in config.items()}
    total_steps = int(values.get("train.steps", ctx["steps"]))
    env = experiment.child_env(ctx.get("env_overrides"))
    proc = None
    try:
        workspace = experiment.make_workspace(Path(ctx["repo"]), ctx["head"], ctx["cache_dir"], tdir / "repo")
        experiment.write_params(workspace / "params.yaml", values)
        proc = experiment.start_experiment(workspace, name, ctx.get("target"), log, env)
        (tdir / "pgid").write_text(str(proc.pid))
        last_step: int | None = None
        while proc.poll() is None:
            time.sleep(POLL_S)
            for step, loss in experiment.live_history(workspace):
                if (last_step is None or step > last_step) and step < total_steps:
                    last_step = step
                    tune.report({"step": step, "loss": loss})
        if proc.returncode != 0:
            raise experiment.TrialFailed(experiment.last_error_line(log))
        metrics = experiment.final_metrics(workspace)
        experiment.push(workspace, name, log, env)
        result = {"exp": name, "params": values, "completed": True, **metrics}
        (tdir / "result.json").write_text(json.dumps(result, indent=2) + "\n")
        tune.report({k: v for k, v in result.items() if k != "params"})
    except experiment.TrialFailed as err:
        (tdir / "error.txt").write_text(str(err) + "\n")
        raise
    except Exception as err:  # anything else (a clone that failed, a bug): recorded the same way
        (tdir / "error.txt").write_text(f"{type(err).__name__}: {err}\n")
        raise
    except BaseException:  # SystemExit: the scheduler stopped this trial
        experiment.note(log, "sweep: trial stopped by the scheduler")
        raise
    finally:
        if proc is not None and proc.poll() is None:
            experiment.note(log, f"sweep: stopping dvc exp run (process group {proc.pid})")
            experiment.stop_group(proc.pid)
        cleanup(ctx, name)
