"""`lora`: our LoRA step beside other engines' (same rank, targets, batch), with each one's share of the
machine's matmul roof measured in the same run.

An engine is a side (a function in its own process returning its figures) and a row label in ENGINES. With a
gemma3-270m/1b `--checkpoint` in float32, Tunix's PeftTrainer with qwix LoRA (training/tunix_engine.py in
.venv-tunix, started as scripts/bench/train.py starts its full fine-tuning) is a row too.
"""

from __future__ import annotations

from pathlib import Path

from scripts.bench import roof
from scripts.bench.common import (
    add_model_arguments,
    add_repeats_argument,
    fill_random,
    jax_device_name,
    jax_train_step,
    median_seconds,
    model_config,
    model_name,
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
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--lora-rank", type=int, default=16)
    parser.add_argument("--remat", action="store_true")
    parser.add_argument(
        "--base-dtype", choices=["float32", "bfloat16"], help="the frozen base's dtype on our side (default: --dtype)"
    )
    parser.add_argument("--no-reference", action="store_true", help="ours alone (no other engine)")
    parser.add_argument("--no-tunix", action="store_true", help="skip the Tunix PeftTrainer + qwix LoRA side")


def lora_flops_per_token(cfg, seq_len: int, rank: int, targets: tuple[str, ...]) -> float:
    """A LoRA step's FLOPs per token: the forward pass (2N + attention), the backward pass to the
    activations only (2N + attention twice: the frozen base and table get no weight gradient), and the
    adapters' own 6 · r · (in + out) each."""
    from training.lora import projection_shapes

    full = train_flops_per_token(cfg, seq_len)
    attention = (full["6N + attention"] - full["6N"]) / 3
    n = full["6N"] / 6
    shapes = projection_shapes(cfg)
    adapters = cfg.num_hidden_layers * sum(rank * sum(shapes[t]) for t in targets)
    return 4 * n + 3 * attention + 6 * adapters


def jax_lora(args) -> dict:
    from flax import nnx

    from training import lora
    from training.hf_io import load_pretrained
    from training.model import Gemma

    cfg = model_config(args)
    base_dtype = args.base_dtype or args.dtype
    if args.checkpoint:
        model = load_pretrained(Path(args.checkpoint), dtype=args.dtype, param_dtype=base_dtype, remat=args.remat)
    else:
        model = nnx.eval_shape(
            lambda: Gemma(cfg, rngs=nnx.Rngs(0), dtype=args.dtype, param_dtype=base_dtype, remat=args.remat)
        )
        fill_random(model)
    lora.add_adapters(model, lora.LoRASpec(rank=args.lora_rank, alpha=float(2 * args.lora_rank)), seed=0)
    graphdef, params, frozen = lora.split_trainable(model)
    del model
    compiled, one = jax_train_step(args, graphdef, params, frozen, 1e-4)
    return {
        "tokens_per_s": args.batch * args.seq / median_seconds(one, args.repeats, warmup=1),
        "peak_rss_mib": peak_rss_mib(),
        "device": jax_device_name(),
        "xla_peak_mib": xla_memory_mib(compiled)["xla_peak_mib"],
    }


def torch_lora(args) -> dict:
    from peft import LoraConfig, get_peft_model

    from training.lora import TARGETS

    model, torch = torch_model(args)
    device, device_name, sync = torch_device(torch, args)
    spec = LoraConfig(
        r=args.lora_rank,
        lora_alpha=2 * args.lora_rank,
        lora_dropout=0.0,
        target_modules=list(TARGETS),
        bias="none",
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(model.to(device), spec)
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=1e-4, betas=(0.9, 0.98))
    return torch_step_rate(args, torch, model, trainable, opt, device, device_name, sync, warmup=1)


def tunix_lora(args) -> dict:
    """Tunix's PeftTrainer with qwix LoRA of our rank, alpha and targets on our batch and optimizer (its
    tokens/s: the median step after the compiling first). qwix draws its own initial adapters here: a step's
    time does not depend on their values."""
    from scripts.bench.train import tunix_train
    from training.lora import TARGETS

    spec = {"rank": args.lora_rank, "alpha": float(2 * args.lora_rank), "targets": list(TARGETS), "rslora": False}
    return tunix_train(args, lora=spec)


SIDES = {"jax": jax_lora, "torch": torch_lora, "tunix": tunix_lora}
OURS = ("tunix-rt (JAX)", "jax")
ENGINES = [("transformers + peft (PyTorch)", "torch")]  # the references, each a side, printed in this order
TUNIX = ("Tunix PeftTrainer + qwix LoRA", "tunix")  # a reference too, where it can run these arguments


def measure(args, argv: list[str]) -> list[tuple[str, dict]]:
    """(label, figures) of ours and, unless --no-reference, of every reference engine (Tunix's where
    `tunix_skip_reason` has none, else the reason is printed)."""
    from scripts.bench.train import tunix_skip_reason

    engines = [OURS] + ([] if args.no_reference else ENGINES)
    reason = None if args.no_reference else tunix_skip_reason(args)
    if reason:
        print(reason)
    elif not args.no_reference:
        engines.append(TUNIX)
    return [(label, run_side(argv, side)) for label, side in engines]


def print_table(args, machine: dict, sides: list[tuple[str, dict]]) -> None:
    from training.lora import TARGETS

    flops = lora_flops_per_token(model_config(args), args.seq, args.lora_rank, TARGETS)
    roof_gflops = roof.roof_gflops(machine, args.dtype)
    print(
        f"LoRA benchmark ({model_name(args)}; rank {args.lora_rank}, alpha {2 * args.lora_rank}, every projection; "
        f"batch {args.batch} x {args.seq}; compute {args.dtype}, frozen base {args.base_dtype or args.dtype})\n"
    )
    rows = [("", "tokens/s", "GFLOP/s", "share of the matmul roof", "peak RSS (MiB)", "device")]
    for label, side in sides:
        g = flops * side["tokens_per_s"] / 1e9
        rows.append(
            (
                label,
                f"{side['tokens_per_s']:.1f}",
                f"{g:.1f}",
                f"{g / roof_gflops:.1%}",
                f"{side['peak_rss_mib']:.0f}",
                side["device"],
            )
        )
    print(table(rows))
    print(
        f"\nmatmul roof ({args.dtype}, best of JAX and PyTorch in this run): {roof_gflops:.1f} GFLOP/s; "
        f"{flops / 1e9:.2f} GFLOP a token (4N + 3 x attention + 6 x adapters)"
    )
    ours = sides[0][1]
    for label, side in sides[1:]:
        print(f"speed-up over {label.split(' (')[0]}: {ours['tokens_per_s'] / side['tokens_per_s']:.2f}x")


def main(args, argv: list[str]) -> None:
    machine = roof.measure(args)
    print_table(args, machine, measure(args, argv))
