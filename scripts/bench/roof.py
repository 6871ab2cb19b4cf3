"""`roof`: the machine alone, its best GEMM rate and its memory bandwidth (also measured by `lora` and
`generate`, whose tables give each side's share of both)."""

from __future__ import annotations

from scripts.bench.common import add_model_arguments, add_repeats_argument, median_seconds, model_config, run_side


def add_arguments(parser) -> None:
    add_model_arguments(parser, dtype=False)
    add_repeats_argument(parser, 5)


def machine_roof(args) -> dict:
    """The machine measured in this run: the best GEMM rate (JAX's and PyTorch's, float32 and bfloat16,
    at the model's shapes) and the memory bandwidth of a 256 MiB float32 reduction (far past the last-level
    cache) on every thread."""
    import jax
    import jax.numpy as jnp
    import torch

    torch.set_num_threads(args.threads)
    cfg = model_config(args)
    d, f = cfg.hidden_size, cfg.intermediate_size
    shapes = ((1024, d, f), (1024, f, d), (64, d, min(cfg.vocab_size, 65536)))
    out = {}
    for dtype in ("float32", "bfloat16"):
        best = 0.0
        for m, k, n in shapes:
            a, b = jnp.ones((m, k), dtype), jnp.ones((k, n), dtype)
            mm = jax.jit(lambda x, y: x @ y)
            seconds = median_seconds(lambda mm=mm, a=a, b=b: mm(a, b).block_until_ready(), args.repeats)
            best = max(best, 2 * m * k * n / seconds / 1e9)
            ta, tb = torch.ones((m, k), dtype=getattr(torch, dtype)), torch.ones((k, n), dtype=getattr(torch, dtype))
            best = max(best, 2 * m * k * n / median_seconds(lambda ta=ta, tb=tb: ta @ tb, args.repeats) / 1e9)
        out[f"roof_gflops_{dtype}"] = best
    big = torch.ones(2**26, dtype=torch.float32)
    out["bandwidth_gbps"] = big.numel() * 4 / median_seconds(lambda: big.sum(), args.repeats) / 1e9
    return out


SIDES = {"jax": machine_roof}


def measure(args) -> dict:
    """The roof in its own process, for the model of `args` (another benchmark's)."""
    argv = ["roof", "--preset", args.preset, "--vocab", str(args.vocab), "--layers", str(args.layers)]
    argv += ["--threads", str(args.threads)]
    argv += ["--checkpoint", args.checkpoint] if args.checkpoint else []
    return run_side([*argv, "--repeats", str(min(args.repeats, 5))], "jax")


def roof_gflops(roof: dict, dtype: str) -> float:
    """The roof a side computing in `dtype` can reach (bfloat16 may also run at the float32 rate)."""
    return max(roof["roof_gflops_float32"], roof["roof_gflops_bfloat16"] if dtype == "bfloat16" else 0)


def main(args, argv: list[str]) -> None:
    roof = run_side(argv, "jax")
    print(
        f"matmul roof: {roof['roof_gflops_float32']:.1f} GFLOP/s float32, {roof['roof_gflops_bfloat16']:.1f} "
        f"bfloat16 (best of JAX and PyTorch); memory bandwidth {roof['bandwidth_gbps']:.1f} GB/s"
    )
