"""Both train engines' loss curves on the same batches: `ours` and `tunix` (Tunix's PeftTrainer), step by step.

    python scripts/engine_curves.py --base /path/to/gemma-3-270m-hf --steps 30 [--lora-rank 8]

For each engine the train stage runs, as DVC runs it, in a repository of its own under a temporary folder:
the same synthetic traces (the seed stage's generators), the same tokenizer and base weights, the same
params but `train.engine`. The stage writes its curve to dvclive; this prints both curves side by side,
the absolute difference at every step, its largest value and the wall time of each engine's stage. One
engine at a time: a 270M fine-tune's memory is freed before the other starts.

    python scripts/engine_curves.py --base DIR --steps 6 --save-every 2 --kill-at 3

also checks the `tunix` engine's resume: a third run whose stage and runner are killed together (SIGKILL to
the process group, as a lost machine would be) once the runner has logged step `--kill-at`, then run again
to the end; its `data/model/model.safetensors` must be byte for byte the uninterrupted run's.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from stages import paths  # noqa: E402
from stages.seed import build_dataset  # noqa: E402

ENGINES = ("tunix", "ours")
LOSS_CURVE = paths.TRAIN_LIVE / "plots" / "metrics" / "train" / "loss.tsv"


def engine_params(args, engine: str) -> dict:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["model"].update(preset=args.preset, checkpoint="models/base")
    params["model"]["lora"]["rank"] = args.lora_rank
    params["train"].update(
        engine=engine,
        steps=args.steps,
        batch_size=args.batch,
        seq_len=args.seq,
        learning_rate=args.learning_rate,
        warmup_steps=max(args.steps // 10, 1),
        schedule="cosine",
        log_every=1,
        save_every=args.save_every,  # 0: checkpoints are seconds of writing a step and say nothing about a curve
    )
    return params


def make_repo(root: Path, base: Path, traces: list[dict], params: dict) -> Path:
    (root / paths.TOKENIZER).mkdir(parents=True)
    (root / paths.TRAIN).write_text("".join(json.dumps(r) + "\n" for r in traces))
    (root / paths.TOKENIZER / "tokenizer.json").symlink_to(base / "tokenizer.json")
    (root / paths.BASE).symlink_to(base)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return root


def run_stage(root: Path) -> float:
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "stages.train"], cwd=root, env=os.environ | {"PYTHONPATH": str(ROOT)}, text=True
    )
    if proc.returncode:
        raise SystemExit(f"{root}: the train stage failed (exit {proc.returncode})")
    return time.perf_counter() - started


def run_killed_then_resumed(root: Path, kill_at: int) -> None:
    """The stage killed with its runner once the runner's log reaches step `kill_at`, then run to the end."""
    log = root / paths.CHECKPOINTS.parent / f".{paths.CHECKPOINTS.name}.tunix" / "tunix_log.jsonl"
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "stages.train"], cwd=root, env=env, start_new_session=True)
    while proc.poll() is None:
        steps = [json.loads(line)["step"] for line in log.read_text().splitlines()] if log.exists() else []
        if steps and max(steps) >= kill_at:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            print(f"killed at step {max(steps)}; running the stage again")
            break
        time.sleep(0.5)
    else:
        raise SystemExit(f"{root}: the stage ended before step {kill_at} (exit {proc.returncode})")
    run_stage(root)


def read_curve(root: Path) -> dict[int, float]:
    with (root / LOSS_CURVE).open() as f:
        return {int(r["step"]): float(r["loss"]) for r in csv.DictReader(f, delimiter="\t")}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=Path, required=True, help="the base model as a Hugging Face directory")
    parser.add_argument("--preset", default="gemma3-270m", choices=["gemma3-270m", "gemma3-1b"])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--learning-rate", type=float, default=1e-5)
    parser.add_argument("--lora-rank", type=int, default=0, help="0: full fine-tuning")
    parser.add_argument("--traces", type=int, default=400, help="synthetic training traces")
    parser.add_argument("--save-every", type=int, default=0, help="train.save_every (0: no checkpoints)")
    parser.add_argument("--kill-at", type=int, help="also run tunix killed at this step and resumed (--save-every)")
    args = parser.parse_args(argv)
    if args.kill_at and not 0 < args.save_every <= args.kill_at < args.steps:
        parser.error("--kill-at needs 0 < --save-every <= --kill-at < --steps (a checkpoint to resume from)")
    base = args.base.resolve()
    traces = build_dataset(args.traces, {"arithmetic": 3, "word_problem": 4, "sequence": 1, "string": 1}, seed=0)
    curves, seconds = {}, {}
    with tempfile.TemporaryDirectory(prefix="engine-curves-") as tmp:
        for engine in ENGINES:
            root = make_repo(Path(tmp) / engine, base, traces, engine_params(args, engine))
            seconds[engine] = run_stage(root)
            curves[engine] = read_curve(root)
        if args.kill_at:
            resumed = make_repo(Path(tmp) / "tunix-resumed", base, traces, engine_params(args, "tunix"))
            run_killed_then_resumed(resumed, args.kill_at)
            weights = [(r / paths.MODEL / "model.safetensors").read_bytes() for r in (resumed, Path(tmp) / "tunix")]
            print(
                f"tunix killed at step {args.kill_at} and resumed: data/model/model.safetensors "
                f"{'byte for byte the uninterrupted run' if weights[0] == weights[1] else 'DIFFERS from the uninterrupted run'}"
            )
    steps = sorted(set(curves["ours"]) & set(curves["tunix"]))
    if not steps:
        raise SystemExit("no step logged by both engines")
    print("| step | ours | tunix | abs. difference |\n| --- | --- | --- | --- |")
    for s in steps:
        a, b = curves["ours"][s], curves["tunix"][s]
        print(f"| {s} | {a:.6f} | {b:.6f} | {abs(a - b):.2e} |")
    worst = max(abs(curves["ours"][s] - curves["tunix"][s]) for s in steps)
    print(
        f"\nlargest abs. difference over {len(steps)} steps: {worst:.2e}; first step: "
        f"{abs(curves['ours'][steps[0]] - curves['tunix'][steps[0]]):.2e}; "
        f"stage wall time: ours {seconds['ours']:.0f} s, tunix {seconds['tunix']:.0f} s"
    )


if __name__ == "__main__":
    main()
