"""Stage `evidence`: record what was trained on what, with which code, and how it scored.

Writes submission_runs/<run_version>/{run_manifest.json, eval_summary.json,
run_log.txt} as one atomic directory swap. Everything is read from files the
earlier stages wrote (never from JAX), and nothing time-dependent is recorded,
so the same inputs give the same bytes.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path
from typing import Any

import yaml

from stages import evalfile, evalsets, paths
from stages.common import (
    StageError,
    atomic_path,
    dumps_json,
    load_params,
    read_json,
    run_stage,
    sha256_file,
    sha256_tree,
    validate,
)

LOCKED_STAGES = (
    "seed",
    "tokenizer",
    "train",
    "grpo",
)  # then predict@<set> and evaluate@<set> for every set, and report
# Training telemetry (tokens/s, timestamps) differs run to run: not part of what a run is.
TELEMETRY_PREFIX = "dvclive"
COMMAND = "dvc repro"
MANIFEST_FILE = "run_manifest.json"
SUMMARY_FILE = "eval_summary.json"
LOG_FILE = "run_log.txt"


# ---------------------------------------------------------------- inputs


def git_commit(root: Path) -> str:
    """`git rev-parse HEAD` in `root`; evidence without a commit is refused."""
    try:
        proc = subprocess.run(
            ["git", "rev-parse", "--verify", "HEAD"], cwd=root, capture_output=True, text=True, check=False
        )
    except FileNotFoundError:
        raise StageError(f"{root}: git: command not found (evidence records the commit)") from None
    if proc.returncode != 0:
        why = (proc.stderr.strip().splitlines() or ["failed"])[-1]
        raise StageError(f"{root.resolve()}: git rev-parse HEAD: {why} (evidence needs a git repository with a commit)")
    return proc.stdout.strip()


def read_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise StageError(f"{path}: file not found") from None
    except (UnicodeDecodeError, yaml.YAMLError) as err:
        raise StageError(f"{path}: not valid YAML: {' '.join(str(err).split())}") from None


def stage_commands(dvc_yaml: Any, path: Path) -> dict[str, Any]:
    """Each stage's cmd as written in dvc.yaml (a string or a list of strings)."""
    stages = dvc_yaml.get("stages") if isinstance(dvc_yaml, dict) else None
    if not isinstance(stages, dict) or not stages:
        raise StageError(f"{path}: stages: missing or empty")
    cmds = {}
    for name, stage in stages.items():
        cmd = stage.get("cmd") if isinstance(stage, dict) else None
        if cmd is None and isinstance(stage, dict) and isinstance(stage.get("do"), dict):
            cmd = stage["do"].get("cmd")  # foreach / matrix stages
        if cmd is None:
            raise StageError(f"{path}: stages.{name}.cmd: missing")
        cmds[str(name)] = cmd
    return cmds


def is_telemetry(path: Any) -> bool:
    return isinstance(path, str) and path.split("/", 1)[0] == TELEMETRY_PREFIX


def lock_entries(lock: Any, path: Path, stages: tuple[str, ...] = LOCKED_STAGES) -> dict[str, dict]:
    """path + md5 of every dep and out of `stages` as recorded in dvc.lock.

    dvc writes a stage's lock entry as soon as that stage completes, so during
    `dvc repro` the entries of every upstream stage are already there.
    """
    recorded = lock.get("stages") if isinstance(lock, dict) else None
    if not isinstance(recorded, dict):
        raise StageError(f"{path}: stages: missing (run the pipeline with dvc repro)")
    entries = {}
    for name in stages:
        entry = recorded.get(name)
        if not isinstance(entry, dict):
            raise StageError(f"{path}: stages.{name}: no lock entry (has the stage run?)")
        entries[name] = {}
        for kind in ("deps", "outs"):
            files = []
            for i, dep in enumerate(entry.get(kind) or []):
                if isinstance(dep, dict) and is_telemetry(dep.get("path")):
                    continue
                if not isinstance(dep, dict) or not dep.get("path") or not dep.get("md5"):
                    raise StageError(f"{path}: stages.{name}.{kind}[{i}]: path and md5 required")
                files.append({"path": str(dep["path"]), "md5": str(dep["md5"])})
            entries[name][kind] = sorted(files, key=lambda f: f["path"])
    return entries


def model_id(model_dir: Path) -> str:
    """Content id of the weights: sha256 over the names and hashes of the *.safetensors files."""
    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise StageError(f"{model_dir}: no *.safetensors weights found")
    digest = hashlib.sha256()
    for f in files:
        digest.update(f"{f.name}\0{sha256_file(f)}\n".encode())
    return "sha256:" + digest.hexdigest()


def rl_evidence(root: Path, params: dict) -> dict:
    """The RL run behind the policy: its params, its reward curve in brief, and the SFT model it started from.

    With `grpo.steps: 0` the policy is the SFT model itself (the grpo stage copied it).
    """
    policy = root / paths.POLICY
    if params["grpo"]["steps"] == 0:
        return {"steps": 0, "sft_model_sha256": sha256_tree(root / paths.MODEL), "policy_id": model_id(policy)}
    info = read_json(root / paths.GRPO_INFO, "grpo_info")
    return {
        "steps": info["steps"],
        "params": info["params"],
        "reward_curve": info["reward_curve"],
        "sft_model_sha256": info["sft_model"]["sha256"],
        "policy_id": model_id(policy),
    }


def preference_evidence(root: Path, params: dict) -> dict:
    """The preference stage behind the model RL started from: its loss, pairs and curve in brief.

    With `preference.steps: 0` that model is the SFT model itself (the preference stage copied it)."""
    if params["preference"]["steps"] == 0:
        return {"steps": 0}
    info = read_json(root / paths.PREFERENCE_INFO)
    return {
        "steps": info["steps"],
        "loss": info["params"]["loss"],
        "pairs": info["pairs"],
        "curve": info["curve"],
        "sft_model_sha256": info["sft_model"]["sha256"],
        "samples_sha256": info["samples"]["sha256"],
        "preferred_id": model_id(root / paths.PREFERRED),
    }


def count_lines(path: Path) -> int:
    try:
        with open(path, "rb") as f:
            return sum(1 for line in f if line.strip())
    except FileNotFoundError:
        raise StageError(f"{path}: file not found") from None


# ---------------------------------------------------------------- evidence


def locked_stages(sets: list[evalsets.EvalSet]) -> tuple[str, ...]:
    """The stages whose dvc.lock entries the evidence records (foreach stages as dvc names them)."""
    per_set = tuple(f"{stage}@{s.name}" for stage in ("predict", "evaluate") for s in sets)
    return (*LOCKED_STAGES, *per_set, "report")


def build_evidence(root: Path, params: dict, commit: str) -> tuple[dict, dict, str]:
    """(run_manifest, eval_summary, run_log text), validated against their schemas."""
    run_version = params["base"]["run_version"]
    info = read_json(root / paths.TRAINING_INFO, "training_info")
    metrics = read_json(root / paths.METRICS, "metrics")
    sets = evalsets.configured(params, root)
    primary = next(s for s in sets if s.primary)
    if metrics.get("primary_set") != primary.name:
        raise StageError(
            f"{paths.METRICS}: primary_set: {metrics.get('primary_set')!r}, params say {primary.name!r}; run dvc repro"
        )
    set_metrics = {s.name: evalsets.read_metrics(s.name, root) for s in sets}
    scorecards = {s.name: read_json(root / paths.set_scorecard(s.name), "scorecard") for s in sets}
    for s in sets:  # the reports must be of the set as configured now
        about = scorecards[s.name]["eval_set"]
        if (about["name"], about["path"], about["format"]) != (s.name, s.path.as_posix(), s.format):
            raise StageError(
                f"{paths.set_scorecard(s.name)}: eval_set: scored {about['path']} ({about['format']}), "
                f"params say {s.path.as_posix()} ({s.format}); run dvc repro"
            )
    manifest = {
        "run_version": run_version,
        "model": {
            "preset": params["model"]["preset"],
            "checkpoint": params["model"]["checkpoint"],
            "base": read_json(root / paths.BASE_INFO),
            "id": model_id(root / paths.MODEL),
            "n_params": info["n_params"],
            "config": read_json(root / paths.MODEL / "config.json"),
        },
        "dataset": {
            "path": paths.TRAIN.as_posix(),
            "sha256": _sha256(root / paths.TRAIN),
            "n_records": count_lines(root / paths.TRAIN),
            "manifest": read_json(root / paths.TRAIN_MANIFEST),
            "decontamination": read_json(root / paths.DECONTAMINATION, "decontamination"),
        },
        "eval_sets": {
            s.name: {key: scorecards[s.name]["eval_set"][key] for key in ("path", "format", "sha256", "n_items")}
            | {"primary": s.primary}
            for s in sets
        },
        "primary_set": primary.name,
        "params": params,
        "command": COMMAND,
        "stages": stage_commands(read_yaml(root / "dvc.yaml"), root / "dvc.yaml"),
        "git": {"commit": commit},
        "dvc_lock": lock_entries(read_yaml(root / "dvc.lock"), root / "dvc.lock", locked_stages(sets)),
        "environment": {"versions": info["versions"], "devices": info["devices"]},
        "training": {
            "steps": info["steps"],
            "final_loss": info["final_loss"],
            "n_logged": len(info["loss_history"]),
        },
        "rl": rl_evidence(root, params),
        "preference": preference_evidence(root, params),
    }
    summary = {
        "run_version": run_version,
        "primary_set": primary.name,
        "primary_score": metrics["primary_score"],
        "metrics": metrics,
        "breakdowns": scorecards[primary.name]["breakdowns"],
        "sets": set_metrics,
    }
    run_dir = root / paths.SUBMISSION_RUNS / run_version
    validate(manifest, "run_manifest", str(run_dir / MANIFEST_FILE))
    validate(summary, "eval_summary", str(run_dir / SUMMARY_FILE))
    return manifest, summary, render_log(manifest, summary, info["loss_history"])


def _sha256(path: Path) -> str:
    try:
        return sha256_file(path)
    except FileNotFoundError:
        raise StageError(f"{path}: file not found") from None


def _fmt(x: Any, spec: str = ".4f") -> str:
    return "-" if x is None else format(x, spec)


def working_line(metrics: dict) -> str:
    """One line of a set's working scores (reasoning/working.py), as evaluate wrote them."""
    w = metrics.get("working")
    if w is None:
        return "working: not scored"
    return (
        f"working: {w['n_claims'] - w['n_false_claims']} of {w['n_claims']} claims hold "
        f"(claim_accuracy {_fmt(w['claim_accuracy'])}), checkable_share {_fmt(w['checkable_share'])}, "
        f"consistency {_fmt(w['consistency'])}, right answer over false working {w['right_over_false']}, "
        f"wrong answer over true working {w['wrong_over_true']}"
    )


def render_log(manifest: dict, summary: dict, loss_history: list) -> str:
    """A human-readable account of the run; deterministic (no clocks, no wall times)."""
    m, d, t = manifest["model"], manifest["dataset"], manifest["training"]
    metrics = summary["metrics"]
    out = [
        f"tunix-rt run {manifest['run_version']}",
        f"git commit: {manifest['git']['commit']}",
        f"command: {manifest['command']}",
        "",
        "== model",
        f"preset: {m['preset']}",
        f"checkpoint: {m['checkpoint'] or 'none (trained from scratch)'}",
        f"id: {m['id']}",
        f"parameters: {m['n_params']:,}",
        "versions: " + ", ".join(f"{k} {v}" for k, v in sorted(manifest["environment"]["versions"].items())),
        "devices: "
        + ", ".join(
            d_ if isinstance(d_, str) else json.dumps(d_, sort_keys=True) for d_ in manifest["environment"]["devices"]
        ),
        "",
        "== dataset",
        f"path: {d['path']}",
        f"records: {d['n_records']}",
        f"sha256: {d['sha256']}",
    ]
    for key, value in sorted(d["manifest"].items()) if isinstance(d["manifest"], dict) else []:
        shown = value if isinstance(value, (str, int, float)) else json.dumps(value, sort_keys=True, ensure_ascii=False)
        out.append(f"manifest.{key}: {shown}")
    for name, caught in sorted(d["decontamination"]["sets"].items()):
        out.append(f"decontamination.{name}: " + json.dumps(caught, sort_keys=True, ensure_ascii=False))
    out += ["", "== eval sets"]
    for name, e in manifest["eval_sets"].items():
        score = _fmt(summary["sets"][name]["primary_score"])
        if manifest["params"]["evaluate"]["sets"][name].get("answer_type") == evalfile.JUDGED:
            score += " (the rubric judge's score: no rule checks these answers)"
        out.append(
            f"{name}{' (primary)' if e['primary'] else ''}: {e['path']} ({e['format']}), {e['n_items']} items, "
            f"sha256 {e['sha256']}, primary_score {score}"
        )
        out.append(f"  {working_line(summary['sets'][name])}")
    out += [
        "",
        "== training",
        f"steps: {t['steps']}",
        f"final loss: {t['final_loss']:.6f}",
        f"{'step':>8}  {'loss':>10}",
    ]
    out += [f"{step:>8d}  {loss:>10.6f}" for step, loss in loss_history]
    rl = manifest["rl"]
    out += [
        "",
        "== reinforcement learning (grpo)",
        f"steps: {rl['steps']}",
        f"started from: {rl['sft_model_sha256']}",
        f"policy id: {rl['policy_id']}",
    ]
    if rl["steps"]:
        out.append("reward: " + ", ".join(f"{k} {_fmt(v)}" for k, v in sorted(rl["reward_curve"].items())))
    out += [
        "",
        f"== evaluation of the primary set, {manifest['primary_set']}",
        f"primary_score: {_fmt(metrics['primary_score'])}",
        f"format_accuracy: {_fmt(metrics['format_accuracy'])}",
        f"partial_accuracy: {_fmt(metrics['partial_accuracy'])}",
        f"items: {metrics['n_items']} (answer found in {metrics['n_scored']})",
        f"truncated_rate: {_fmt(metrics['truncated_rate'])}",
        "trace tokens: mean {mean:.1f}, median {median:.1f}, max {max}".format(**metrics["trace_tokens"]),
        working_line(metrics),
    ]
    for group, rows in sorted(summary["breakdowns"].items()):
        out += ["", f"by {group}", f"  {'name':<24} {'n':>5} {'accuracy':>9} {'format':>9} {'partial':>9}"]
        for name, s in sorted(rows.items()):
            out.append(
                f"  {name:<24} {s['n']:>5} {_fmt(s['accuracy']):>9} "
                f"{_fmt(s['format_accuracy']):>9} {_fmt(s['partial_accuracy']):>9}"
            )
    return "\n".join(out) + "\n"


def write_evidence(run_dir: Path, manifest: dict, summary: dict, log: str) -> None:
    """The three files, swapped in as one directory: readers never see a mix of runs."""
    try:
        with atomic_path(run_dir) as tmp:
            tmp.mkdir()
            (tmp / MANIFEST_FILE).write_text(dumps_json(manifest), encoding="utf-8")
            (tmp / SUMMARY_FILE).write_text(dumps_json(summary), encoding="utf-8")
            (tmp / LOG_FILE).write_text(log, encoding="utf-8")
    except OSError as err:
        raise StageError(f"{run_dir}: cannot write evidence: {err.strerror or err}") from None


def run(params: dict, root: Path = Path("."), commit: str | None = None) -> Path:
    """The whole stage under `root`; returns the run folder."""
    commit = commit if commit is not None else git_commit(root)
    manifest, summary, log = build_evidence(root, params, commit)
    run_dir = root / paths.SUBMISSION_RUNS / params["base"]["run_version"]
    write_evidence(run_dir, manifest, summary, log)
    return run_dir


def main() -> None:
    run_dir = run(load_params())
    print(f"evidence written to {run_dir}/")


if __name__ == "__main__":
    run_stage(main)
