"""One sweep trial as a real DVC experiment, run in a private clone of the repo.

    clone      git clone <repo> at HEAD (detached) into the trial's folder, plus the
               repo's uncommitted changes to tracked files (what `dvc exp run` would
               include); `cache.dir` = the repo's DVC cache, so run-cache hits skip
               stages whose inputs did not change (seed, tokenizer) and outputs are
               hardlinked, not copied
    params     the trial's values written into the clone's params.yaml (comments kept)
    run        `dvc exp run [target] --name <name>`; the train loss is read from the
               clone's dvclive/metrics.json while it runs
    push       `dvc exp push origin <name> --no-cache`: the experiment's git ref goes to
               the repo (origin), its outputs are already in the shared cache

No Ray here: `sweeps.trial` glues this to Tune.
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
from pathlib import Path
from typing import Any

from stages import paths

LIVE_METRICS = paths.TRAIN_LIVE / "metrics.json"
LIVE_LOSS = paths.TRAIN_LIVE / "plots/metrics/train/loss.tsv"
REPORTS = paths.METRICS
TRAINING_INFO = paths.TRAINING_INFO


class TrialFailed(Exception):
    """A trial's pipeline or push failed; the message is the most telling line of its log."""


def git(args: list[str], cwd: Path) -> str:
    proc = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise TrialFailed(
            f"git {' '.join(args)}: {proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else proc.returncode}"
        )
    return proc.stdout


def dvc_command(*args: str) -> list[str]:
    """`dvc` of this interpreter (the one the stages' `python -m` resolves to)."""
    return [sys.executable, "-m", "dvc", *args]


def child_env(extra: dict[str, str | None] | None = None) -> dict[str, str]:
    """This interpreter's bin first on PATH (so `python -m stages.x` is this venv), analytics off."""
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env["DVC_NO_ANALYTICS"] = "1"
    for key, value in (extra or {}).items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def changed_files(repo: Path) -> list[str]:
    """Tracked paths whose workspace state differs from HEAD (modified, staged, deleted)."""
    out = git(["diff", "HEAD", "--name-only", "-z", "--no-renames"], repo)
    return [p for p in out.split("\0") if p]


def make_workspace(repo: Path, head: str, cache_dir: str, dest: Path) -> Path:
    """A clone of `repo` at `head` with the repo's uncommitted tracked changes and its DVC cache."""
    if dest.exists():
        shutil.rmtree(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    git(["clone", "--quiet", "--no-checkout", str(repo), str(dest)], repo)
    git(["checkout", "--quiet", "--detach", head], dest)
    for name in changed_files(repo):
        src, dst = repo / name, dest / name
        if src.is_file():
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)
        elif dst.exists() and not src.exists():
            dst.unlink()
    local = dest / ".dvc" / "config.local"
    local.write_text(f'[cache]\n    dir = {cache_dir}\n    type = "reflink,hardlink,copy"\n')
    return dest


def _yaml_float(representer, value: float):
    """Floats PyYAML (YAML 1.1, what the stages read) also reads as floats: `1.0e-05`, not `1e-05`."""
    if value != value:
        text = ".nan"
    elif value in (math.inf, -math.inf):
        text = ".inf" if value > 0 else "-.inf"
    else:
        text = repr(value).lower()
        mantissa, _, exponent = text.partition("e")
        if exponent and "." not in mantissa:
            text = f"{mantissa}.0e{exponent}"
    return representer.represent_scalar("tag:yaml.org,2002:float", text)


def write_params(path: Path, values: dict[str, Any]) -> None:
    """Set `section.key` values in params.yaml, keeping its comments and order.

    (`dvc exp run -S` would write 1e-05 for 0.00001, which the stages' YAML 1.1
    loader reads as a string.)
    """
    from ruamel.yaml import YAML

    yaml = YAML()
    yaml.preserve_quotes = True
    yaml.representer.add_representer(float, _yaml_float)
    yaml.representer.add_representer(type(None), lambda r, _: r.represent_scalar("tag:yaml.org,2002:null", "null"))
    doc = yaml.load(path.read_text(encoding="utf-8"))
    for dotted, value in values.items():
        node = doc
        parts = dotted.split(".")
        for part in parts[:-1]:
            node = node[part]
        node[parts[-1]] = value
    with path.open("w", encoding="utf-8") as fh:
        yaml.dump(doc, fh)


def read_json(path: Path) -> dict | None:
    """A JSON file that another process may be writing: None while missing or partial."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def live_history(workspace: Path) -> list[tuple[int, float]]:
    """Every (step, train loss) dvclive has logged so far: its plots TSV, complete lines only.

    (metrics.json holds only the latest step, and polling it can miss the step
    an ASHA rung is at.)
    """
    try:
        text = (workspace / LIVE_LOSS).read_text(encoding="utf-8")
    except OSError:
        progress = live_progress(workspace)
        return [progress] if progress else []
    rows = []
    for line in text.split("\n")[1:-1]:  # header; the last piece is partial or empty
        try:
            step, loss = line.split("\t")[:2]
            rows.append((int(step), float(loss)))
        except ValueError:
            continue
    return rows


def live_progress(workspace: Path) -> tuple[int, float] | None:
    """(step, train loss) last logged by the train stage, or None."""
    data = read_json(workspace / LIVE_METRICS)
    if not data:
        return None
    try:
        return int(data["step"]), float(data["train"]["loss"])
    except (KeyError, TypeError, ValueError):
        return None


def last_error_line(log: Path) -> str:
    """The stage's own `error: ...` line if there is one, else DVC's `ERROR: ...`, else the last line."""
    try:
        text = log.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "(no log)"
    lines = [ln.strip() for ln in text.replace("\r", "\n").splitlines() if ln.strip()]
    for prefix in ("error:", "ERROR:"):
        # a progress bar without a newline may precede the message on its line
        hits = [
            ln[ln.index(prefix) :] for ln in lines if prefix in ln and (prefix == "ERROR:" or ln.startswith(prefix))
        ]
        if hits:
            return hits[-1]
    return lines[-1] if lines else "(empty log)"


def note(log: Path, text: str) -> None:
    """Append one line to a trial's log."""
    with log.open("a", encoding="utf-8") as fh:
        fh.write(f"\n{text}\n")


def start_experiment(
    workspace: Path, name: str, target: str | None, log: Path, env: dict[str, str]
) -> subprocess.Popen:
    """`dvc exp run` in its own process group (so stopping it stops the stages it started)."""
    cmd = dvc_command("exp", "run", *([target] if target else []), "--name", name)
    fh = log.open("ab")
    fh.write(("$ " + " ".join(cmd[2:]) + "\n").encode())
    fh.flush()
    try:
        return subprocess.Popen(
            cmd, cwd=workspace, env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True
        )
    finally:
        fh.close()


def stop_group(pgid: int, grace_s: float = 5.0) -> bool:
    """SIGTERM a process group, SIGKILL what is left after `grace_s`. False when there was none."""
    try:
        os.killpg(pgid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        return False
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return True
        time.sleep(0.1)
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    return True


def final_metrics(workspace: Path) -> dict[str, Any]:
    """reports/metrics.json's top-level scores (null kept) and the final train loss."""
    out: dict[str, Any] = {}
    reports = read_json(workspace / REPORTS) or {}
    for key, value in reports.items():
        if value is None or isinstance(value, (int, float)) and not isinstance(value, bool):
            out[key] = value
    info = read_json(workspace / TRAINING_INFO) or {}
    if "final_loss" in info:
        out["loss"] = float(info["final_loss"])
        out["steps"] = int(info.get("steps", 0))
    else:
        progress = live_progress(workspace)
        if progress:
            out["steps"], out["loss"] = progress
    return out


def push(workspace: Path, name: str, log: Path, env: dict[str, str]) -> None:
    """`dvc exp push origin <name> --no-cache`: the git ref to the repo; the cache is already shared."""
    cmd = dvc_command("exp", "push", "origin", name, "--no-cache")
    with log.open("ab") as fh:
        fh.write(("$ " + " ".join(cmd[2:]) + "\n").encode())
        fh.flush()
        rc = subprocess.run(cmd, cwd=workspace, env=env, stdout=fh, stderr=subprocess.STDOUT).returncode
    if rc != 0:
        raise TrialFailed(f"dvc exp push origin {name}: {last_error_line(log)}")
