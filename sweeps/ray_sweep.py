"""Search hyperparameters with Ray Tune; every trial is a DVC experiment of this repo.

    python -m sweeps.ray_sweep --space sweeps/lr_warmup.yaml            # local Ray, 1 trial at a time
    python -m sweeps.ray_sweep --space sweeps/lr_warmup.yaml --num-samples 16 --max-concurrent 2
    python -m sweeps.ray_sweep --space sweeps/lr_warmup.yaml --address auto   # join a running cluster
    python -m sweeps.ray_sweep --space sweeps/lr_warmup.yaml --apply-best     # then `dvc exp apply` the best

Run it from the repo root. Each trial clones the repo at HEAD (plus uncommitted
changes to tracked files) into `.dvc/tmp/sweeps/<sweep>/<trial>/`, writes its
params, runs `dvc exp run report --name <sweep>-<nn>` there with the repo's
DVC cache, and pushes the experiment back: `dvc exp show` lists every completed
trial. With a `scheduler: {asha: ...}` in the space, trials whose train loss
falls behind are stopped early. At the end a table of all trials (completed,
stopped early, failed with their error line) and the best one; `--apply-best`
runs `dvc exp apply <best>`. Exit status 0 when at least one trial completed.

With `--address`, workers must see the repo at the same path (a shared
filesystem): trials clone from it and push to it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from sweeps import experiment
from sweeps.space import Space, SweepError, fmt, load_space, normalize, ray_param_space
from sweeps.trial import cleanup, exp_name, run_trial

CODE_ROOT = Path(__file__).resolve().parent.parent


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m sweeps.ray_sweep", description=__doc__.split("\n")[0])
    p.add_argument("--space", required=True, help="search space YAML (see sweeps/space.py)")
    p.add_argument("--num-samples", type=int, help="samples to draw (overrides search.num_samples; random search)")
    p.add_argument("--address", help="Ray cluster to join (e.g. auto or ray://host:10001); default: a local Ray")
    p.add_argument("--max-concurrent", type=int, default=1, help="trials at once (default 1)")
    p.add_argument(
        "--metric", default="primary_score", help="what picks the best: a key of reports/metrics.json or loss"
    )
    p.add_argument("--mode", choices=("max", "min"), help="default: min for loss, max otherwise")
    p.add_argument("--apply-best", action="store_true", help="dvc exp apply the best trial into the workspace")
    p.add_argument("--name", help="sweep name; experiments are <name>-00, <name>-01, ... (default sw-<time>)")
    p.add_argument(
        "--target",
        default="report",
        help="stage to reproduce up to (default report: every eval set scored, primary_score in reports/metrics.json; 'all' = whole pipeline)",
    )
    p.add_argument("--cpus-per-trial", type=float, default=1)
    p.add_argument(
        "--gpus-per-trial",
        type=float,
        default=0,
        help="GPUs Ray reserves per trial; 0 (default) leaves the machine's devices visible to every trial",
    )
    p.add_argument(
        "--keep-workspaces", action="store_true", help="keep each trial's clone (default: removed when it ends)"
    )
    args = p.parse_args(argv)
    if args.max_concurrent < 1:
        p.error("--max-concurrent must be at least 1")
    if args.num_samples is not None and args.num_samples < 1:
        p.error("--num-samples must be at least 1")
    return args


def repo_root() -> Path:
    try:
        top = subprocess.run(
            ["git", "rev-parse", "--show-toplevel"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (subprocess.CalledProcessError, FileNotFoundError):
        raise SweepError("not inside a git repository: run the sweep from the repo root") from None
    root = Path(top)
    if not (root / "dvc.yaml").is_file():
        raise SweepError(f"{root}: no dvc.yaml (run the sweep from the tunix-rt repo root)")
    return root


def git_out(args: list[str], cwd: Path) -> str:
    proc = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SweepError(f"git {' '.join(args)}: {proc.stderr.strip() or proc.returncode}")
    return proc.stdout.strip()


def existing_exp_names(repo: Path) -> set[str]:
    refs = git_out(["for-each-ref", "--format=%(refname)", "refs/exps/"], repo)
    return {ref.rsplit("/", 1)[-1] for ref in refs.splitlines() if ref.count("/") >= 4}


def dvc_cache_dir(repo: Path) -> str:
    proc = subprocess.run(
        experiment.dvc_command("cache", "dir"), cwd=repo, capture_output=True, text=True, env=experiment.child_env()
    )
    if proc.returncode != 0 or not proc.stdout.strip():
        raise SweepError(f"dvc cache dir: {(proc.stderr or proc.stdout).strip().splitlines()[-1:]}")
    return proc.stdout.strip().splitlines()[-1]


class Sweep:
    """What every part of a sweep needs to know, and the table at its end."""

    def __init__(self, args: argparse.Namespace, repo: Path, space: Space):
        self.args = args
        self.repo = repo
        self.space = space
        self.name = args.name or time.strftime("sw-%m%d-%H%M%S")
        self.workdir = repo / ".dvc" / "tmp" / "sweeps" / self.name
        self.mode = args.mode or ("min" if args.metric == "loss" else "max")
        self.ctx = {
            "sweep": self.name,
            "repo": str(repo),
            "head": git_out(["rev-parse", "HEAD"], repo),
            "cache_dir": dvc_cache_dir(repo),
            "workdir": str(self.workdir),
            "target": None if args.target in ("", "all") else args.target,
            "steps": space.steps,
            "keep_workspaces": args.keep_workspaces,
            "env_overrides": self._env_overrides(),
        }

    def _env_overrides(self) -> dict[str, str | None]:
        """Undo what Ray sets in a worker's environment that would change how the stages run."""
        if self.args.address:
            return {}
        overrides: dict[str, str | None] = {"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS")}
        if not self.args.gpus_per_trial:
            overrides["CUDA_VISIBLE_DEVICES"] = os.environ.get("CUDA_VISIBLE_DEVICES")
        return overrides

    # ------------------------------------------------------------ running

    def check(self) -> None:
        import re

        props = json.loads((self.repo / "schemas/metrics.schema.json").read_text())["properties"]
        metrics = ["loss", *(k for k, v in props.items() if v.get("type") not in ("object", "string"))]  # numbers only
        if self.args.metric not in metrics:
            raise SweepError(f"--metric {self.args.metric}: not a metric (one of {', '.join(metrics)})")

        if not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,40}", self.name):
            raise SweepError(f"--name {self.name!r}: use lowercase letters, digits and '-' (it names git refs)")
        taken = sorted(n for n in existing_exp_names(self.repo) if n.startswith(self.name + "-"))
        if taken:
            raise SweepError(f"sweep name {self.name!r} already used by experiment {taken[0]}: pick another --name")
        changed = experiment.changed_files(self.repo)
        if changed:
            shown = ", ".join(changed[:5]) + (", ..." if len(changed) > 5 else "")
            print(f"sweep: trials include {len(changed)} uncommitted change(s) of tracked files: {shown}")

    def run(self) -> list[dict]:
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no usage reports (no network)
        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # with verbose=0: no status tables; Progress prints
        import logging

        try:
            import ray
        except ModuleNotFoundError:
            raise SweepError(
                "Ray Tune is not installed: pip install 'ray[tune]' (the project's `sweep` extra)"
            ) from None
        from ray import tune
        from ray.tune.schedulers import ASHAScheduler
        from ray.tune.search import BasicVariantGenerator

        from sweeps.progress import Progress

        self.workdir.mkdir(parents=True, exist_ok=True)
        if self.args.address:
            ray.init(
                address=self.args.address,
                runtime_env={"env_vars": {"PYTHONPATH": str(CODE_ROOT)}},
                log_to_driver=False,
                logging_level=logging.ERROR,
            )
        else:
            os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(CODE_ROOT), os.environ.get("PYTHONPATH")]))
            cpus = max(1, math.ceil(self.args.max_concurrent * self.args.cpus_per_trial))
            ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
        for name in ("ray.tune", "ray.train", "ray.air"):  # a failed trial is reported once, in the table
            logging.getLogger(name).setLevel(logging.CRITICAL)
        try:
            scheduler = None
            if self.space.asha:
                scheduler = ASHAScheduler(
                    time_attr="step",
                    metric="loss",
                    mode="min",
                    grace_period=self.space.asha.grace_period,
                    reduction_factor=self.space.asha.reduction_factor,
                    max_t=self.space.asha.max_t,
                    stop_last_trials=False,  # a trial that trained to the end goes on to predict and evaluate
                )
            resources = {"cpu": self.args.cpus_per_trial, "gpu": self.args.gpus_per_trial}
            trainable = tune.with_resources(tune.with_parameters(run_trial, ctx=self.ctx), resources)
            tuner = tune.Tuner(
                trainable,
                param_space=ray_param_space(self.space),
                tune_config=tune.TuneConfig(
                    search_alg=BasicVariantGenerator(random_state=self.space.seed),
                    scheduler=scheduler,
                    num_samples=self.space.num_samples,
                    max_concurrent_trials=self.args.max_concurrent,
                    trial_dirname_creator=lambda t: exp_name(self.name, t.trial_id),
                ),
                run_config=tune.RunConfig(
                    name=self.name,
                    storage_path=str(self.workdir / "ray"),
                    verbose=0,
                    callbacks=[Progress(self.ctx, self.space.n_trials())],
                    failure_config=tune.FailureConfig(max_failures=0, fail_fast=False),
                ),
            )
            results = tuner.fit()
            return [self._record(r) for r in results]
        finally:
            ray.shutdown()
            for pgid_file in self.workdir.glob("*/pgid"):  # interrupted: nothing may outlive the sweep
                cleanup(self.ctx, pgid_file.parent.name)

    def _record(self, result) -> dict:
        name = Path(result.path).name
        tdir = self.workdir / name
        cleanup(self.ctx, name)
        metrics = dict(result.metrics or {})
        rec: dict[str, Any] = {
            "name": name,
            "params": {k: normalize(v) for k, v in (result.config or {}).items()},
            "step": metrics.get("step"),
            "loss": metrics.get("loss"),
            "log": str(tdir / "dvc.log"),
        }
        done = experiment.read_json(tdir / "result.json")
        if result.error is not None:
            rec["status"] = "failed"
            err_file = tdir / "error.txt"
            text = err_file.read_text().strip() if err_file.is_file() else str(result.error).strip()
            rec["error"] = text.splitlines()[-1] if text else type(result.error).__name__
        elif done and done.get("completed"):
            rec["status"] = "completed"
            for key, value in done.items():
                if key not in ("exp", "params", "completed"):
                    rec[key] = value
            rec["step"] = done.get("steps", rec["step"])
        else:
            rec["status"] = "stopped early"
        return rec

    # ------------------------------------------------------------ reporting

    def best(self, records: list[dict]) -> dict | None:
        done = [r for r in records if r["status"] == "completed"]
        if not done:
            return None
        sign = 1 if self.mode == "max" else -1

        def key(r: dict):
            value = r.get(self.args.metric)
            has = isinstance(value, (int, float)) and not math.isnan(value)
            loss = r.get("loss")
            return (has, sign * value if has else 0.0, -(loss if isinstance(loss, (int, float)) else math.inf))

        return max(done, key=key)

    def table(self, records: list[dict], best: dict | None) -> str:
        keys = self.space.keys()
        metric_cols = ["primary_score", "format_accuracy"]
        if self.args.metric not in metric_cols + ["loss"]:
            metric_cols.append(self.args.metric)
        header = ["trial", "status", *keys, "step", "loss", *metric_cols]
        rows = []
        for r in sorted(records, key=lambda r: r["name"]):
            mark = " (best)" if best is not None and r["name"] == best["name"] else ""
            dash = lambda v: "-" if v is None else fmt(v)
            rows.append(
                [
                    r["name"],
                    r["status"] + mark,
                    *(fmt(r["params"].get(k)) for k in keys),
                    dash(r.get("step")),
                    dash(r.get("loss")),
                    *(fmt(r.get(c)) if r["status"] == "completed" else "-" for c in metric_cols),
                ]
            )
        widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(header)]
        line = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"
        return "\n".join([line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *(line(r) for r in rows)])

    def report(self, records: list[dict]) -> dict | None:
        best = self.best(records)
        counts = {s: sum(r["status"] == s for r in records) for s in ("completed", "stopped early", "failed")}
        print(
            f"\nsweep {self.name}: {len(records)} trials, {counts['completed']} completed, "
            f"{counts['stopped early']} stopped early, {counts['failed']} failed\n"
        )
        print(self.table(records, best))
        failed = [r for r in records if r["status"] == "failed"]
        if failed:
            print("\nfailed trials:")
            for r in failed:
                params = ", ".join(f"{k}={fmt(v)}" for k, v in r["params"].items())
                print(f"  {r['name']} ({params}): {r['error']}  [log: {r['log']}]")
        if best is None:
            print("\nno trial completed: nothing to compare")
        else:
            value = best.get(self.args.metric)
            if isinstance(value, (int, float)):
                why = f"{self.args.metric} {fmt(value)}"
                tied = [r for r in records if r["status"] == "completed" and r.get(self.args.metric) == value]
                if len(tied) > 1 and self.args.metric != "loss":
                    why += f", tied with {len(tied) - 1} other(s); lowest final loss {fmt(best.get('loss'))}"
            else:
                why = f"{self.args.metric} is null for every completed trial; lowest final loss {fmt(best.get('loss'))}"
            params = " ".join(f"-S {k}={fmt(v)}" for k, v in best["params"].items())
            print(f"\nbest: {best['name']} ({why}): {params}")
            print(f"compare: {self.compare_command(isinstance(value, (int, float)))}")
            print(f"promote: dvc exp apply {best['name']}   (then commit params.yaml and dvc.lock)")
        summary = {
            "sweep": self.name,
            "space": str(self.space.path),
            "metric": self.args.metric,
            "mode": self.mode,
            "best": best["name"] if best else None,
            "trials": sorted(records, key=lambda r: r["name"]),
        }
        path = self.workdir / "summary.json"
        path.write_text(json.dumps(summary, indent=2) + "\n")
        print(f"summary: {path.relative_to(self.repo)}")
        return best

    def compare_command(self, metric_has_values: bool) -> str:
        """`dvc exp show` narrowed to the swept params and the scores, best first."""
        import re

        params = "|".join(f"(params\\.yaml:)?{re.escape(k)}" for k in self.space.keys())
        keep = f"Experiment|train\\.loss|primary_score|format_accuracy|{params}"
        if self.args.metric != "loss" and metric_has_values:
            sort = f"--sort-by {self.args.metric} --sort-order {'desc' if self.mode == 'max' else 'asc'}"
        else:
            sort = "--sort-by train.loss --sort-order asc"
        return f"dvc exp show --md --hide-workspace --drop '.*' --keep '{keep}' {sort}"

    def apply(self, best: dict) -> None:
        """`dvc exp apply <best>`: its params.yaml and dvc.lock into the workspace, its outputs from the cache.

        Outputs of stages after the sweep's target (evidence, package) were never
        built, so DVC cannot check them out; that is expected and reported, not an error.
        """
        print(f"\n$ dvc exp apply {best['name']}")
        proc = subprocess.run(
            experiment.dvc_command("exp", "apply", best["name"]),
            cwd=self.repo,
            env=experiment.child_env(),
            text=True,
            capture_output=True,
        )
        sys.stdout.write(proc.stdout)
        if proc.returncode == 0:
            return
        output = proc.stderr + proc.stdout
        missing = _checkout_failures(output)
        built = _locked_outs(self.repo / "dvc.lock")
        if missing and not any(m in built for m in missing):
            print(
                f"applied; not built by the sweep (it stopped at {self.args.target!r}): {', '.join(missing)}"
                " -- `dvc repro` builds them"
            )
            return
        lines = [ln for ln in output.strip().splitlines() if ln.strip()]
        raise SweepError(f"dvc exp apply {best['name']}: {lines[-1] if lines else proc.returncode}")


def _checkout_failures(output: str) -> list[str]:
    """Targets of DVC's 'Checkout failed for following targets:' message."""
    lines = output.splitlines()
    for i, line in enumerate(lines):
        if "Checkout failed for following targets" in line:
            out = []
            for target in lines[i + 1 :]:
                if not target.strip() or target.startswith(("Is your cache", "<http")):
                    break
                out.append(target.strip())
            return out
    return []


def _locked_outs(lock: Path) -> set[str]:
    import yaml

    try:
        data = yaml.safe_load(lock.read_text()) or {}
    except (OSError, yaml.YAMLError):
        return set()
    return {
        out["path"] for stage in (data.get("stages") or {}).values() for out in stage.get("outs", []) if "path" in out
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        repo = repo_root()
        space = load_space(Path(args.space), repo / "params.yaml")
        if args.num_samples is not None:
            if space.algorithm == "grid":
                raise SweepError(
                    f"{args.space}: --num-samples does not apply to algorithm grid (each combination runs once)"
                )
            space.num_samples = args.num_samples
        sweep = Sweep(args, repo, space)
        sweep.check()
        dims = "; ".join(f"{d.path}: {d.describe()}" for d in space.dims)
        asha = (
            (
                f", ASHA on train loss (grace {space.asha.grace_period}, reduction {space.asha.reduction_factor:g}, "
                f"max_t {space.asha.max_t} steps)"
            )
            if space.asha
            else ""
        )
        print(
            f"sweep {sweep.name}: {space.n_trials()} trials ({space.algorithm}{asha}), "
            f"{args.max_concurrent} at a time; {dims}"
        )
        records = sweep.run()
        best = sweep.report(records)
        if args.apply_best and best is not None:
            sweep.apply(best)
        return 0 if best is not None else 1
    except SweepError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
