"""The GPU figures in one command: every benchmark that a GPU changes, and the tests that run on one.

    python scripts/gpu_check.py --out gpu_check.json              # on a machine with one NVIDIA GPU (< 8 minutes)
    python scripts/gpu_check.py --dry-run --out /tmp/check.json   # the same steps, tiny, on this CPU

Steps (each a side of `python -m scripts.bench`, in its own process, its figures kept as JSON):
Gemma 3 1B SFT in bfloat16 (tokens/s, MFU against the datasheet peak), LoRA rank 16 on the same shape,
greedy generation at batch 1, 16 and 64, and GRPO steps on a random-weight checkpoint of the 1B shape
written by scripts/make_random_checkpoint.py (no weights are downloaded); then the model, sampler and
LoRA tests on the GPU. A step that fails or runs past its time is recorded as such and the rest go on; the
JSON is written after every step, so a cut run keeps what it measured.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script: the project's packages are beside this folder
    sys.path.insert(0, str(ROOT))

from scripts.bench.common import model_config, run_side, train_flops_per_token  # noqa: E402

BUDGET_S = 450  # every step's time limit is cut to what is left of it: the whole check ends within 8 minutes
GPU_TESTS = ["tests/test_model.py", "tests/test_sampler.py", "tests/test_lora.py"]
H100_BF16_TFLOPS = 989  # dense bfloat16 datasheet peak of an H100 / H200 SXM


def shapes(dry_run: bool) -> dict:
    """The model and step shapes: Gemma 3 1B on the GPU, the tiny preset (and a one-layer 270M-wide
    checkpoint for GRPO) on a CPU dry run."""
    if dry_run:
        model = ["--preset", "tiny", "--vocab", "256", "--layers", "1"]
        return {
            "model": model,
            "checkpoint": ["--preset", "gemma3-270m", "--layers", "1", "--vocab", "1024", "--dtype", "float32"],
            "train": [*model, "--batch", "2", "--seq", "32", "--repeats", "1"],
            "lora": [*model, "--batch", "2", "--seq", "32", "--lora-rank", "4", "--repeats", "1"],
            "generate": [*model, "--batches", "1,2", "--prompt", "8", "--new-tokens", "4", "--repeats", "1"],
            "grpo": ["--prompts", "1", "--group", "2", "--new-tokens", "4", "--lora-rank", "2", "--repeats", "1"],
            "dtype": "float32",
            "timeout_s": 240,
        }
    model = ["--preset", "gemma3-1b"]
    return {
        "model": model,
        "checkpoint": ["--preset", "gemma3-1b", "--dtype", "bfloat16"],
        "train": [*model, "--batch", "16", "--seq", "256", "--repeats", "5"],
        "lora": [*model, "--batch", "16", "--seq", "256", "--lora-rank", "16", "--repeats", "5"],
        "generate": [*model, "--batches", "1,16,64", "--prompt", "64", "--new-tokens", "64", "--repeats", "3"],
        "grpo": ["--prompts", "4", "--group", "8", "--new-tokens", "128", "--lora-rank", "16", "--repeats", "2"],
        "dtype": "bfloat16",
        "timeout_s": 150,
    }


def train_figures(args: argparse.Namespace, side: dict, seq: int, peak_tflops: float) -> dict:
    """tokens/s with MFU in both FLOP conventions (6N, and 6N + attention)."""
    flops = train_flops_per_token(model_config(args), seq)
    mfu = {k: v * side["tokens_per_s"] / (peak_tflops * 1e12) for k, v in flops.items()}
    return side | {"mfu": mfu, "peak_tflops": peak_tflops}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("gpu_check.json"))
    parser.add_argument("--dry-run", action="store_true", help="every step tiny, on whatever device JAX has")
    parser.add_argument("--peak-tflops", type=float, default=H100_BF16_TFLOPS, help="the GPU's bf16 dense peak")
    opts = parser.parse_args(argv)
    s = shapes(opts.dry_run)
    dtype = ["--dtype", s["dtype"]]
    report: dict = {"dry_run": opts.dry_run, "host": platform.node(), "steps": {}}
    deadline = time.monotonic() + (4 * BUDGET_S if opts.dry_run else BUDGET_S)
    limit = lambda: max(5.0, min(s["timeout_s"], deadline - time.monotonic()))  # seconds the next side may take

    def step(name: str, fn) -> None:
        start = time.perf_counter()
        try:
            report["steps"][name] = {"ok": True, **fn()}
        except (SystemExit, subprocess.SubprocessError, OSError, ValueError) as err:
            report["steps"][name] = {"ok": False, "error": str(err)[-2000:]}
        report["steps"][name]["wall_s"] = time.perf_counter() - start
        opts.out.write_text(json.dumps(report, indent=2) + "\n")
        print(f"gpu_check: {name}: {'ok' if report['steps'][name]['ok'] else 'FAILED'}", flush=True)

    def sft() -> dict:
        args = argparse.Namespace(preset=s["model"][1], vocab=256, layers=1, checkpoint=None)
        side = run_side(["train", *s["train"], *dtype], "jax", timeout=limit())
        return train_figures(args, side, int(s["train"][s["train"].index("--seq") + 1]), opts.peak_tflops)

    step("sft", sft)
    step("lora", lambda: run_side(["lora", *s["lora"], *dtype], "jax", timeout=limit()))
    step("generate", lambda: run_side(["generate", *s["generate"], *dtype], "jax", timeout=limit()))
    with tempfile.TemporaryDirectory() as tmp:
        model = Path(tmp) / "model"

        def grpo() -> dict:
            cmd = [sys.executable, "scripts/make_random_checkpoint.py", *s["checkpoint"], "--out", str(model)]
            subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, timeout=limit())
            argv = ["grpo", "--checkpoint", str(model), "--to-budget", *s["grpo"], *dtype]
            return run_side(argv, "jax", timeout=limit())

        step("grpo", grpo)

    def tests() -> dict:
        # On the dry run the tests are listed, not run: CI runs them on the CPU already.
        cmd = [sys.executable, "-m", "pytest", "-q", *GPU_TESTS, *(["--collect-only"] if opts.dry_run else [])]
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=max(30.0, limit()))
        return {"ok": proc.returncode == 0, "summary": proc.stdout.strip().splitlines()[-1:]}

    step("tests", tests)
    failed = [name for name, figures in report["steps"].items() if not figures["ok"]]
    print(f"gpu_check: {opts.out}" + (f"; failed: {', '.join(failed)}" if failed else ""))
    if failed:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
