"""`train`: our SFT step beside PyTorch's (tokens/s, GFLOP/s in both FLOP conventions, the matmul roof,
MFU given the datasheet peak) and, with a gemma3-270m/1b `--checkpoint`, beside Tunix's PeftTrainer (step
time); with `--lora-rank`, full fine-tuning beside LoRA (memory and tokens/s)."""

from __future__ import annotations

import dataclasses
import resource
import statistics
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from scripts.bench.common import (
    add_model_arguments,
    add_repeats_argument,
    bench_train_config,
    fill_random,
    jax_device_name,
    jax_peak_device_mib,
    jax_train_step,
    median_seconds,
    model_config,
    model_name,
    peak_rss_mib,
    random_batch,
    run_side,
    table,
    torch_device,
    torch_model,
    torch_step_rate,
    train_flops_per_token,
    xla_memory_mib,
)

LEARNING_RATE = 1e-3  # every full fine-tuning side's, PyTorch's included


def add_arguments(parser) -> None:
    add_model_arguments(parser)
    add_repeats_argument(parser, 10)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--remat", action="store_true")
    parser.add_argument("--peak-tflops", type=float, help="the device's datasheet peak, for MFU (H100/H200 bf16: 989)")
    parser.add_argument("--no-reference", action="store_true", help="skip the PyTorch side")
    parser.add_argument("--no-tunix", action="store_true", help="skip the Tunix PeftTrainer side")
    parser.add_argument("--lora-rank", type=int, default=0, help="full fine-tuning beside LoRA of this rank")
    parser.add_argument(
        "--compile-only", action="store_true", help="--lora-rank: compile each side, report XLA's memory, run nothing"
    )
    parser.add_argument(
        "--full-compile-only",
        action="store_true",
        help="--lora-rank: compile the full side only (when it does not fit)",
    )


def jax_matmul_roof(dtype: str, repeats: int) -> float:
    import jax
    import jax.numpy as jnp

    best = 0.0
    # The model's own GEMM shapes on CPU; on an accelerator only large products reach its peak.
    on_cpu = jax.devices()[0].platform == "cpu"
    shapes = ((4096, 256, 1024), (4096, 1024, 256), (2048, 2048, 2048)) if on_cpu else ((8192, 8192, 8192),)
    for m, k, n in shapes:
        a = jnp.ones((m, k), dtype)
        b = jnp.ones((k, n), dtype)
        f = jax.jit(lambda x, y: x @ y)
        t = median_seconds(lambda f=f, a=a, b=b: f(a, b).block_until_ready(), repeats)
        best = max(best, 2 * m * k * n / t / 1e9)
    return best


def jax_train(args) -> dict:
    """Full fine-tuning (side `jax`) or LoRA (side `jax-lora`, with --lora-rank) on random weights."""
    import jax
    from flax import nnx

    from training import lora
    from training.hf_io import load_pretrained
    from training.model import Gemma

    cfg = model_config(args)
    rank = args.lora_rank if args.side == "jax-lora" else 0
    # Full fine-tuning keeps float32 master weights; LoRA freezes the base in the compute dtype.
    param_dtype = args.dtype if rank else "float32"
    compile_only = args.compile_only or (args.full_compile_only and not rank)

    def build():
        model = Gemma(cfg, rngs=nnx.Rngs(0), dtype=args.dtype, param_dtype=param_dtype, remat=args.remat)
        lora.add_adapters(model, lora.LoRASpec(rank=rank, alpha=float(2 * rank)), seed=0)
        return model

    if args.checkpoint and not compile_only:  # the real weights: the loss is comparable with Tunix's
        model = load_pretrained(Path(args.checkpoint), dtype=args.dtype, param_dtype=param_dtype, remat=args.remat)
        lora.add_adapters(model, lora.LoRASpec(rank=rank, alpha=float(2 * rank)), seed=0)
    else:
        model = nnx.eval_shape(build)
        if not compile_only:
            fill_random(model)
    graphdef, params, frozen = lora.split_trainable(model)
    compiled, one = jax_train_step(args, graphdef, params, frozen, LEARNING_RATE, compile_only)
    result = {
        "trainable_params": sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params)),
        **xla_memory_mib(compiled),
        "device": jax_device_name(),
        "mode": f"LoRA r={rank}" if rank else "full",
        "tokens_per_s": None,
        "peak_device_mib": None,
    }
    if not compile_only:
        first_loss = float(one()["loss"])  # the first step: on the initial weights, as Tunix's first is
        t = median_seconds(one, args.repeats, warmup=0 if args.lora_rank else 1)
        result |= {
            "tokens_per_s": args.batch * args.seq / t,
            "step_s": t,
            "first_loss": first_loss,
            "peak_device_mib": jax_peak_device_mib(),
        }
    if not args.lora_rank:
        result["roof_gflops"] = jax_matmul_roof(args.dtype, args.repeats)
    return result | {"peak_rss_mib": peak_rss_mib()}


def torch_train(args) -> dict:
    model, torch = torch_model(args)
    device, device_name, sync = torch_device(torch, args)
    model.to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE)
    return torch_step_rate(args, torch, model, list(model.parameters()), opt, device, device_name, sync)


def tunix_preset(cfg) -> str | None:
    """The Tunix preset (ours: gemma3-270m | gemma3-1b) whose shape `cfg` has, or None."""
    from training.config import shape_mismatch
    from training.tunix_launch import TUNIX_PRESETS

    return next((p for p in TUNIX_PRESETS if shape_mismatch(cfg, p) is None), None)


def tunix_skip_reason(args) -> str | None:
    """Why the Tunix side cannot run these arguments, in one line, or None when it can."""
    from training.tunix_launch import TUNIX_PRESETS, TunixUnavailable, check_available

    presets = " or ".join(TUNIX_PRESETS)
    if args.no_tunix:
        return "tunix side skipped (--no-tunix)"
    if not args.checkpoint:
        return f"tunix side skipped: PeftTrainer loads real weights, give --checkpoint (a {presets} directory)"
    if args.dtype != "float32":
        return f"tunix side skipped: the Tunix engine trains in float32 only, not --dtype {args.dtype}"
    if tunix_preset(model_config(args)) is None:
        return f"tunix side skipped: {args.checkpoint} is not a {presets} checkpoint (Tunix runs only those)"
    try:
        check_available()
    except TunixUnavailable as err:
        return f"tunix side skipped: {err}"
    return None


def tunix_train(args, lora: dict | None = None) -> dict:
    """Tunix's PeftTrainer (training/tunix_engine.py in .venv-tunix) on our batch and optimizer: the first
    step (compiling) and `--repeats` more, each on the same random batch as ours; its median step after the
    first. With `lora` (the runner's request "lora"), qwix LoRA of that spec (scripts/bench/lora.py)."""
    from training.tunix_launch import run_engine, tunix_python, write_batches

    cfg = model_config(args)
    steps = args.repeats + 1
    batch = random_batch(args, cfg.vocab_size)
    loop = dataclasses.asdict(bench_train_config(args, LEARNING_RATE)) | {"steps": steps}
    with tempfile.TemporaryDirectory(prefix="bench-tunix-") as tmp:
        work = Path(tmp)
        write_batches(lambda _: batch, steps, work / "batches.npz")
        request = {
            "model_dir": str(Path(args.checkpoint).resolve()),
            "preset": tunix_preset(cfg),
            "loop": loop,
            "batches": str(work / "batches.npz"),
        }
        if lora:
            request["lora"] = lora
        rows = run_engine(request, work)
    if len(rows) != steps:
        raise SystemExit(f"bench: the Tunix engine logged {len(rows)} steps of {steps}")
    tokens = args.batch * args.seq
    step = statistics.median(tokens / r["tokens_per_second"] for r in rows[1:])
    device = subprocess.run(
        [
            str(tunix_python()),
            "-c",
            "import jax; d = jax.devices()[0]; print(d if d.platform == 'cpu' else d.device_kind)",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    return {
        "tokens_per_s": tokens / step,
        "step_s": step,
        "first_loss": rows[0]["loss"],
        # the largest waited-for child: the runner, the only process this side starts before measuring
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
        "device": f"{device} (.venv-tunix)",
    }


SIDES = {"jax": jax_train, "jax-lora": jax_train, "torch": torch_train, "tunix": tunix_train}


def print_lora_table(args, full: dict, lora: dict) -> None:
    """Full fine-tuning beside LoRA: what each trains, XLA's compiled peak, and what a run measured."""
    on_device = (lora["peak_device_mib"] or full["peak_device_mib"]) is not None
    print(
        f"train benchmark, full fine-tuning vs LoRA ({args.preset}, batch {args.batch}, seq {args.seq}, "
        f"compute {args.dtype}, remat {'on' if args.remat else 'off'}; full: float32 master weights + AdamW, "
        f"LoRA: base frozen in {args.dtype}, adapters float32 + AdamW)\n"
    )
    head = (
        "",
        "trainable params",
        "XLA: arguments (MiB)",
        "XLA: temporaries (MiB)",
        "XLA compiled peak (MiB)",
        "peak RSS (MiB)",
    )
    rows = [head + (("peak device memory (MiB)",) if on_device else ()) + ("tokens/s", "device")]
    for side in (full, lora):
        ran = side["tokens_per_s"] is not None
        memory = (f"{side['peak_device_mib']:.0f}" if ran else "not run",) if on_device else ()
        rows.append(
            (
                side["mode"],
                f"{side['trainable_params'] / 1e6:.2f}M",
                f"{side['xla_arguments_mib']:.0f}",
                f"{side['xla_temp_mib']:.0f}",
                f"{side['xla_peak_mib']:.0f}",
                f"{side['peak_rss_mib']:.0f}" if ran else "not run (compiled only)",
                *memory,
                f"{side['tokens_per_s']:.1f}" if ran else "not run",
                side["device"],
            )
        )
    print(table(rows))
    print(
        "\nXLA compiled peak: the compiled step's arguments (params, optimizer state, frozen base, batch) + "
        "temporaries + outputs not written over donated arguments, from XLA's memory_analysis() on this backend."
    )


def print_train_table(args, ours: dict, ref: dict | None) -> None:
    """Tokens/s and GFLOP/s in both FLOP conventions, the fraction of the matmul roof and, given the
    datasheet peak, MFU."""
    flops = train_flops_per_token(model_config(args), args.seq)
    gflops = lambda side, kind: flops[kind] * side["tokens_per_s"] / 1e9
    on_device = ours["peak_device_mib"] is not None
    print(f"train benchmark ({model_name(args)}, batch {args.batch}, seq {args.seq}, {args.dtype})\n")
    head = ("", "tokens/s", "GFLOP/s (6N)", "GFLOP/s (6N + attention)", "peak RSS (MiB)")
    rows = [head + (("peak device memory (MiB)",) if on_device else ()) + ("device",)]
    for name, side in (("tunix-rt (JAX)", ours), ("transformers (PyTorch)", ref)):
        if side:
            memory = (f"{side['peak_device_mib']:.0f}",) if on_device else ()
            rows.append(
                (
                    name,
                    f"{side['tokens_per_s']:.0f}",
                    *(f"{gflops(side, k):.1f}" for k in flops),
                    f"{side['peak_rss_mib']:.0f}",
                    *memory,
                    side["device"],
                )
            )
    rows.append(("matmul roof (JAX)", "", f"{ours['roof_gflops']:.1f}", "", "", *([""] if on_device else []), ""))
    print(table(rows))
    both = lambda peak_gflops: ", ".join(f"{gflops(ours, k) / peak_gflops:.1%} ({k})" for k in flops)
    print(f"\nfraction of the matmul roof: {both(ours['roof_gflops'])}")
    if args.peak_tflops:
        print(f"MFU (against the {args.peak_tflops:g} TFLOP/s datasheet peak): {both(args.peak_tflops * 1e3)}")
    if ref:
        print(f"speed-up over PyTorch: {ours['tokens_per_s'] / ref['tokens_per_s']:.2f}x")


def print_tunix_table(args, ours: dict, tunix: dict) -> None:
    """Full fine-tuning step time, ours beside Tunix's PeftTrainer, and the ratio."""
    print(
        f"\nfull fine-tuning, ours beside Tunix's PeftTrainer ({model_name(args)}; batch {args.batch} x {args.seq}; "
        f"float32; AdamW, the same optax objects; step time: ours the median of {args.repeats} after 2 warm-up "
        f"steps, Tunix's the median of its {args.repeats} steps after the first)\n"
    )
    rows = [("", "step (s)", "tokens/s", "first-step loss", "peak RSS (MiB)", "device")]
    for label, side in (("tunix-rt (JAX)", ours), ("Tunix PeftTrainer", tunix)):
        rows.append(
            (
                label,
                f"{side['step_s']:.3f}",
                f"{side['tokens_per_s']:.0f}",
                f"{side['first_loss']:.6f}",
                f"{side['peak_rss_mib']:.0f}",
                side["device"],
            )
        )
    print(table(rows))
    print(f"\nTunix's step time / ours: {tunix['step_s'] / ours['step_s']:.2f}x")


def main(args, argv: list[str]) -> None:
    if args.lora_rank:
        print_lora_table(args, run_side(argv, "jax"), run_side(argv, "jax-lora"))
        return
    ours = run_side(argv, "jax")
    print_train_table(args, ours, None if args.no_reference else run_side(argv, "torch"))
    reason = tunix_skip_reason(args)
    if reason:
        print(f"\n{reason}")
    else:
        print_tunix_table(args, ours, run_side(argv, "tunix"))
