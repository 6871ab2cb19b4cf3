"""`train`: our SFT step beside PyTorch's (tokens/s, GFLOP/s in both FLOP conventions, the matmul roof,
MFU given the datasheet peak); with `--lora-rank`, full fine-tuning beside LoRA (memory and tokens/s)."""

from __future__ import annotations

import numpy as np

from scripts.bench.common import (
    add_model_arguments,
    add_repeats_argument,
    fill_random,
    jax_device_name,
    jax_peak_device_mib,
    jax_train_step,
    median_seconds,
    model_config,
    peak_rss_mib,
    run_side,
    table,
    torch_device,
    torch_model,
    torch_step_rate,
    train_flops_per_token,
    xla_memory_mib,
)


def add_arguments(parser) -> None:
    add_model_arguments(parser)
    add_repeats_argument(parser, 10)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--remat", action="store_true")
    parser.add_argument("--peak-tflops", type=float, help="the device's datasheet peak, for MFU (H100/H200 bf16: 989)")
    parser.add_argument("--no-reference", action="store_true", help="skip the PyTorch side")
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

    model = nnx.eval_shape(build)
    if not compile_only:
        fill_random(model)
    graphdef, params, frozen = lora.split_trainable(model)
    compiled, one = jax_train_step(args, graphdef, params, frozen, 1e-3, compile_only)
    result = {
        "trainable_params": sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params)),
        **xla_memory_mib(compiled),
        "device": jax_device_name(),
        "mode": f"LoRA r={rank}" if rank else "full",
        "tokens_per_s": None,
        "peak_device_mib": None,
    }
    if not compile_only:
        t = median_seconds(one, args.repeats, warmup=1 if args.lora_rank else 2)
        result |= {"tokens_per_s": args.batch * args.seq / t, "peak_device_mib": jax_peak_device_mib()}
    if not args.lora_rank:
        result["roof_gflops"] = jax_matmul_roof(args.dtype, args.repeats)
    return result | {"peak_rss_mib": peak_rss_mib()}


def torch_train(args) -> dict:
    model, torch = torch_model(args)
    device, device_name, sync = torch_device(torch, args)
    model.to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    return torch_step_rate(args, torch, model, list(model.parameters()), opt, device, device_name, sync)


SIDES = {"jax": jax_train, "jax-lora": jax_train, "torch": torch_train}


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
    print(f"train benchmark ({args.preset}, batch {args.batch}, seq {args.seq}, {args.dtype})\n")
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


def main(args, argv: list[str]) -> None:
    if args.lora_rank:
        print_lora_table(args, run_side(argv, "jax"), run_side(argv, "jax-lora"))
        return
    ours = run_side(argv, "jax")
    print_train_table(args, ours, None if args.no_reference else run_side(argv, "torch"))
