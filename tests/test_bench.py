"""The benchmarks a user runs from the README (`python -m scripts.bench SUBCOMMAND`): every side runs,
at the smallest shapes that still exercise it, and the table names them."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from scripts.bench.generate import VLLM_PYTHON
from training import config as configs

ROOT = Path(__file__).resolve().parent.parent
# The tiny preset at one layer and a small vocabulary: every side's compile and step take a fraction of
# the default's (compiling dominates these tests).
TINY = ("--vocab", "256", "--layers", "1")


def run_bench(*args: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "scripts.bench", *args, "--repeats", "1"],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def test_generate_bench_prints_each_engine_the_ratios_both_shares_and_the_streaming_bound():
    shape = (*TINY, "--batches", "1,2", "--prompt", "8", "--new-tokens", "4")
    out = run_bench("generate", *shape, "--peak-gbps", "20")
    for batch in (1, 2):
        assert re.search(rf"\| {batch} +\| \d+\.\d +\| \d+\.\d +\| \d+\.\d\dx +\| \d+\.\d% +\| \d+\.\d% +\|", out), out
    assert re.search(r"peak RSS: tunix-rt \d+ MiB, transformers \d+ MiB", out), out
    assert re.search(r"memory bandwidth \d+\.\d GB/s", out)
    # the compute share counts the timed prefill beside the new tokens
    assert re.search(r"\d\.\d{3} GFLOP a new token in all", out), out
    # 2 rows at 20 GB/s over the float32 weights + the keys and values of 10 tokens a row on average (every
    # layer's window is longer): bytes a decode step, independently of the bench's own formula
    cfg = configs.tiny(256, num_hidden_layers=1)
    kv = 2 * cfg.num_key_value_heads * cfg.head_dim * 10 * cfg.num_hidden_layers * 2
    bound = 2 * 20e9 / ((cfg.num_params() + kv) * 4)
    assert re.search(
        rf"batch 2: share of the weight \+ KV streaming bound \({bound:,.0f} new tokens/s at 20 GB/s\)", out
    )


def test_train_bench_prints_gflops_in_both_conventions_roof_mfu_and_ratio():
    out = run_bench("train", *TINY, "--batch", "2", "--seq", "32", "--peak-tflops", "1")
    ours = re.search(r"\| tunix-rt \(JAX\) +\| \d+ +\| (\d+\.\d) +\| (\d+\.\d)", out)
    assert ours and float(ours.group(2)) > float(ours.group(1))  # attention counted on top of 6N
    assert re.search(r"\| transformers \(PyTorch\) +\| \d+", out)
    assert re.search(r"\| matmul roof \(JAX\) +\| +\| \d+\.\d", out)
    assert re.search(r"fraction of the matmul roof: \d+\.\d% \(6N\), \d+\.\d% \(6N \+ attention\)", out)
    assert re.search(
        r"MFU \(against the 1 TFLOP/s datasheet peak\): \d+\.\d% \(6N\), \d+\.\d% \(6N \+ attention\)", out
    )
    assert "tunix side skipped: PeftTrainer loads real weights, give --checkpoint" in out


def test_train_bench_tunix_side_runs_only_a_float32_gemma3_270m_or_1b_checkpoint(tmp_path, monkeypatch):
    from scripts.bench.__main__ import parser
    from scripts.bench.train import tunix_preset, tunix_skip_reason

    assert tunix_preset(configs.gemma3_270m()) == "gemma3-270m"
    assert tunix_preset(configs.gemma3_1b()) == "gemma3-1b"
    assert tunix_preset(configs.gemma2_2b()) is None
    for name, cfg in (("tiny", configs.tiny(256)), ("270m", configs.gemma3_270m())):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text(json.dumps(cfg.to_hf()))
    reason = lambda *argv: tunix_skip_reason(parser().parse_args(["train", *argv]))
    real = ("--checkpoint", str(tmp_path / "270m"))
    assert "give --checkpoint" in reason()
    assert "not a gemma3-270m or gemma3-1b checkpoint" in reason("--checkpoint", str(tmp_path / "tiny"))
    assert "float32 only, not --dtype bfloat16" in reason(*real, "--dtype", "bfloat16")
    assert reason(*real, "--no-tunix") == "tunix side skipped (--no-tunix)"
    monkeypatch.setenv("TUNIX_PYTHON", str(tmp_path / "absent"))
    assert "no Tunix environment" in reason(*real)
    monkeypatch.setenv("TUNIX_PYTHON", sys.executable)
    assert reason(*real) is None


def test_train_bench_puts_lora_beside_full_fine_tuning():
    out = run_bench("train", *TINY, "--lora-rank", "4", "--batch", "2", "--seq", "32", "--full-compile-only")
    full = re.search(r"\| full +\| 0\.46M +\| \d+ +\| \d+ +\| (\d+) +\| not run \(compiled only\) +\| not run", out)
    lora = re.search(r"\| LoRA r=4 +\| 0\.01M +\| \d+ +\| \d+ +\| (\d+) +\| \d+ +\| \d+\.\d", out)
    assert full and lora, out
    assert int(lora.group(1)) < int(full.group(1))  # no optimizer state or gradients for the base


def test_lora_bench_puts_peft_beside_ours_with_the_share_of_the_roof():
    out = run_bench("lora", *TINY, "--lora-rank", "4", "--batch", "2", "--seq", "32")
    assert re.search(r"\| tunix-rt \(JAX\) +\| \d+\.\d +\| \d+\.\d +\| \d+\.\d% +\| \d+", out), out
    assert re.search(r"\| transformers \+ peft \(PyTorch\) +\| \d+\.\d +\| \d+\.\d +\| \d+\.\d% +\| \d+", out), out
    assert re.search(r"matmul roof \(float32, best of JAX and PyTorch in this run\): \d+\.\d GFLOP/s", out)
    assert re.search(r"speed-up over transformers \+ peft: \d+\.\d\dx", out)
    # Tunix's PeftTrainer + qwix LoRA row needs a real gemma3 checkpoint: on the tiny shape it says why not
    assert "tunix side skipped: PeftTrainer loads real weights, give --checkpoint" in out, out


def test_bench_roof_measures_the_machine_alone():
    out = run_bench("roof", *TINY)
    assert re.search(
        r"matmul roof: \d+\.\d GFLOP/s float32, \d+\.\d bfloat16 .*; memory bandwidth \d+\.\d GB/s", out
    ), out


def test_grpo_bench_times_steps_with_the_grpo_stages_rewards(tmp_path):
    """A one-layer Gemma 3 of the 270M's width with random weights and a small tokenizer: a compiling step
    and a timed one of 1 prompt x 2 completions, 4 new tokens each."""
    subprocess.run(
        [
            sys.executable,
            "scripts/make_random_checkpoint.py",
            "--preset",
            "gemma3-270m",
            "--layers",
            "1",
            "--vocab",
            "1024",
            "--dtype",
            "float32",
            "--out",
            str(tmp_path / "model"),
        ],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    out = run_bench(
        "grpo",
        "--checkpoint",
        str(tmp_path / "model"),
        "--lora-rank",
        "2",
        "--prompts",
        "1",
        "--group",
        "2",
        "--new-tokens",
        "4",
        "--to-budget",
    )
    row = re.search(r"\| this code +\| \d+\.\d +\| \d+\.\d +\| \d+\.\d +\| (\d+\.\d) +\| \d+\.\d +\| \d+ +\|", out)
    assert row and float(row.group(1)) == 4.0, out  # --to-budget: every completion runs to its 4 tokens
    assert "1 prompts x 2 completions, at most 4 new tokens" in out


@pytest.mark.skipif(not VLLM_PYTHON.is_file() and not os.environ.get("CI"), reason="needs .venv-vllm (make vllm-env)")
def test_generate_bench_puts_vllm_beside_ours_on_the_real_270m_with_the_same_greedy_tokens(gemma270m):
    out = run_bench(
        "generate",
        "--checkpoint",
        str(gemma270m[1]),
        "--batches",
        "1",
        "--prompt",
        "8",
        "--new-tokens",
        "4",
        "--no-reference",
        "--no-roof",
        "--vllm-dtypes",
        "float32",
    )
    assert re.search(r"\| 1 +\| \d+\.\d +\| \d+\.\d +\| \d+\.\d\dx +\|", out), out
    # both float32 and greedy: the same argmax each step, unless two logits tie within rounding
    agree = re.search(r"tunix-rt and vLLM float32 agree on the first (\d) of 4", out)
    assert agree and int(agree.group(1)) >= 3, out


def test_gpu_check_dry_run_runs_every_step_tiny_and_writes_its_figures(tmp_path):
    out = tmp_path / "check.json"
    proc = subprocess.run(
        [sys.executable, "scripts/gpu_check.py", "--dry-run", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    steps = json.loads(out.read_text())["steps"]
    assert proc.returncode == 0 and all(step["ok"] for step in steps.values()), steps
    assert list(steps) == ["sft", "lora", "generate", "grpo", "tests"]
    mfu = steps["sft"]["mfu"]
    assert mfu["6N + attention"] > mfu["6N"] > 0
    assert steps["lora"]["tokens_per_s"] > 0
    assert sorted(steps["generate"]["batches"]) == ["1", "2"]
    assert steps["grpo"]["completion_length"] == 4.0  # --to-budget
    assert "tests collected" in steps["tests"]["summary"][0]
