"""Helpers for tests that run the real pipeline: a copy of the project in a temporary git repo."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent

# Small enough for CI (a minute or two a repro), large enough that every stage does real work.
SMALL_PARAMS = {
    "seed": {"size": 600},
    "tokenizer": {"vocab_size": 400},
    "train": {"steps": 12, "batch_size": 4, "seq_len": 256, "warmup_steps": 2, "log_every": 4, "save_every": 4},
    "predict": {"batch_size": 64, "max_new_tokens": 24},
    # The synthetic set only: GSM8K's 250 problems would add a predict and evaluate to every repro.
    "evaluate": {"sets": {"tunix": {"path": "evalsets/tunix_eval_v1.jsonl", "format": "items", "primary": True}}},
}


def env() -> dict[str, str]:
    """The test's interpreter first on PATH, so `python -m stages.x` and `dvc` resolve to this venv."""
    bin_dir = str(Path(sys.executable).parent)
    e = dict(os.environ, PATH=bin_dir + os.pathsep + os.environ.get("PATH", ""))
    e.pop("XLA_FLAGS", None)  # stages run on the one real CPU device
    e["DVC_NO_ANALYTICS"] = "1"
    e["GIT_AUTHOR_NAME"] = e["GIT_COMMITTER_NAME"] = "tunix-rt tests"
    e["GIT_AUTHOR_EMAIL"] = e["GIT_COMMITTER_EMAIL"] = "tests@tunix-rt.invalid"
    return e


def run_stage_process(root: Path, stage: str) -> float:
    """`python -m stages.<stage>` in `root`, as DVC runs it; its wall time. A process of its own: a 270M
    fine-tune frees its memory on exit, so two run one after the other never hold theirs at once."""
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", f"stages.{stage}"],
        cwd=root,
        env=env() | {"PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return time.perf_counter() - started


def run(args: list[str], cwd: Path, check: bool = True, **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(args, cwd=cwd, env=env(), capture_output=True, text=True, **kw)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(args)} exited {proc.returncode}\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


def project_files() -> list[str]:
    """Tracked and not-ignored files of the working tree (what a commit of it would hold)."""
    out = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    return [f for f in out.splitlines() if (ROOT / f).is_file()]


def set_params(path: Path, changes: dict) -> None:
    params = yaml.safe_load(path.read_text())
    for section, values in changes.items():
        params[section].update(values)
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def declared_outs(repo: Path) -> dict[str, bool]:
    """Every out, metric and plot of dvc.yaml -> whether DVC caches it; templated paths resolved
    (`${base.run_version}`, and a foreach stage's `${key}` for each eval set of params)."""
    dvc_yaml = yaml.safe_load((repo / "dvc.yaml").read_text())
    params = yaml.safe_load((repo / "params.yaml").read_text())
    outs = {}
    for stage in dvc_yaml["stages"].values():
        body = stage.get("do", stage)
        keys = list(params["evaluate"]["sets"]) if "do" in stage else [None]
        for key in keys:
            for kind in ("outs", "metrics", "plots"):
                for out in body.get(kind, []):
                    name, opts = next(iter(out.items())) if isinstance(out, dict) else (out, {})
                    name = name.replace("${base.run_version}", params["base"]["run_version"])
                    outs[name if key is None else name.replace("${key}", key)] = (opts or {}).get("cache", True)
    return outs


def make_repo(dest: Path, params: dict | None = SMALL_PARAMS) -> Path:
    """A fresh git repo holding the project (without dvc.lock or outputs), params changed, committed."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in project_files():
        if name == "dvc.lock" or name.startswith(("submission_runs/", "reports/", "dvclive/")):
            continue
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, target)
    if params:
        set_params(dest / "params.yaml", params)
    run(["git", "init", "-q", "-b", "main"], dest)
    run(["git", "add", "-A"], dest)
    run(["git", "commit", "-qm", "test repo"], dest)
    return dest


def run_folder(tmp_path_factory, worker_id: str) -> Path:
    """The folder every pytest-xdist worker of this run shares (the basetemp without workers)."""
    run_root = tmp_path_factory.getbasetemp()
    return run_root if worker_id == "master" else run_root.parent


def memory_heavy(tmp_path_factory, worker_id: str):
    """A lock across workers for the memory-heavy test modules (tests/conftest.py; a whole-270M fine-tune
    takes about 9 GB): holding it, no two of them run at once beside everything else the workers hold (two
    at once have run a 24 GiB machine out of memory). `make test` schedules them on one worker anyway; the
    lock keeps it so under any other schedule."""
    from filelock import FileLock

    return FileLock(f"{run_folder(tmp_path_factory, worker_id) / 'memory-heavy'}.lock")
