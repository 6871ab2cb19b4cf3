"""The benchmarks a user runs from the README: both sides run and the table names them."""

import re
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "scripts" / "bench.py"


def run_bench(*args: str) -> str:
    proc = subprocess.run(
        [sys.executable, str(BENCH), *args, "--repeats", "1"], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def test_generate_bench_prints_both_sides_the_ratio_and_the_streaming_bound():
    out = run_bench("generate", "--batch", "2", "--prompt", "8", "--new-tokens", "4", "--peak-gbps", "20")
    assert re.search(r"\| tunix-rt \(JAX\) +\| \d+", out)
    assert re.search(r"\| transformers generate \(PyTorch\) +\| \d+", out)
    assert re.search(r"speed-up over PyTorch: \d+\.\d\dx", out)
    # 2 rows at 20 GB/s over 1.84M float32 weights + the keys and values of 10 tokens a row, on average
    assert re.search(r"streaming bound \(5,375 new tokens/s at 20 GB/s\): \d+\.\d%", out), out


def test_train_bench_prints_gflops_in_both_conventions_roof_mfu_and_ratio():
    out = run_bench("train", "--batch", "2", "--seq", "32", "--peak-tflops", "1")
    ours = re.search(r"\| tunix-rt \(JAX\) +\| \d+ +\| (\d+\.\d) +\| (\d+\.\d)", out)
    assert ours and float(ours.group(2)) > float(ours.group(1))  # attention counted on top of 6N
    assert re.search(r"\| transformers \(PyTorch\) +\| \d+", out)
    assert re.search(r"\| matmul roof \(JAX\) +\| +\| \d+\.\d", out)
    assert re.search(r"fraction of the matmul roof: \d+\.\d% \(6N\), \d+\.\d% \(6N \+ attention\)", out)
    assert re.search(
        r"MFU \(against the 1 TFLOP/s datasheet peak\): \d+\.\d% \(6N\), \d+\.\d% \(6N \+ attention\)", out
    )


def test_train_bench_puts_lora_beside_full_fine_tuning():
    out = run_bench("train", "--lora-rank", "4", "--batch", "2", "--seq", "32", "--full-compile-only")
    full = re.search(r"\| full +\| 1\.84M +\| \d+ +\| \d+ +\| (\d+) +\| not run \(compiled only\) +\| not run", out)
    lora = re.search(r"\| LoRA r=4 +\| 0\.05M +\| \d+ +\| \d+ +\| (\d+) +\| \d+ +\| \d+\.\d", out)
    assert full and lora, out
    assert int(lora.group(1)) < int(full.group(1))  # no optimizer state or gradients for the base


def test_lora_bench_puts_peft_beside_ours_with_the_share_of_the_roof():
    out = run_bench("lora", "--lora-rank", "4", "--batch", "2", "--seq", "32")
    assert re.search(r"\| tunix-rt \(JAX\) +\| \d+\.\d +\| \d+\.\d +\| \d+\.\d% +\| \d+", out), out
    assert re.search(r"\| transformers \+ peft \(PyTorch\) +\| \d+\.\d +\| \d+\.\d +\| \d+\.\d% +\| \d+", out), out
    assert re.search(r"matmul roof \(float32, best of JAX and PyTorch in this run\): \d+\.\d GFLOP/s", out)
    assert re.search(r"speed-up over transformers \+ peft: \d+\.\d\dx", out)


def test_generate_bench_by_batch_prints_each_ratio_and_both_shares():
    out = run_bench("generate", "--batches", "1,2", "--prompt", "8", "--new-tokens", "4")
    for batch in (1, 2):
        assert re.search(
            rf"\| {batch} +\| \d+\.\d +\| \d+\.\d +\| \d+\.\d\dx +\| \d+\.\d% +\| \d+\.\d% +\| \d+ +\| \d+ +\|", out
        ), out
    assert re.search(r"memory bandwidth \d+\.\d GB/s", out)
    # the compute share counts the timed prefill beside the new tokens
    assert re.search(r"\d\.\d{3} GFLOP a new token in all", out), out


def test_bench_roof_measures_the_machine_alone():
    out = run_bench("roof")
    assert re.search(
        r"matmul roof: \d+\.\d GFLOP/s float32, \d+\.\d bfloat16 .*; memory bandwidth \d+\.\d GB/s", out
    ), out
