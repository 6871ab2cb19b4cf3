"""Benchmarks, ours beside the engines a user would pick instead, in one run.

    python -m scripts.bench roof        # the machine alone: matmul roof and memory bandwidth
    python -m scripts.bench train       # SFT step beside PyTorch: tokens/s, GFLOP/s, matmul roof, MFU
    python -m scripts.bench train --checkpoint data/base --no-reference
                                        # on a gemma3-270m/1b checkpoint: ours beside Tunix's PeftTrainer
    python -m scripts.bench train --preset gemma2-2b --lora-rank 16 --batch 8 --seq 512 --remat --dtype bfloat16
                                        # full fine-tuning (float32 master weights, AdamW) beside LoRA
    python -m scripts.bench lora --checkpoint data/base
                                        # our LoRA step beside transformers + peft (same rank, targets, batch)
    python -m scripts.bench generate --checkpoint data/base
                                        # our sampler beside transformers `generate` and vLLM at batch 1, 16, 64
    python -m scripts.bench grpo --checkpoint data/base --baseline aceb6cd --to-budget
                                        # a LoRA GRPO step beside the same step of another commit's code

With `--checkpoint DIR` (a Hugging Face directory: config.json, model.safetensors) every side loads its
weights; without one, `--preset` gives the shape and the weights are random. `lora` and `generate` also
measure the machine in the same run and print each side's share of its bounds. Each side runs in its own
subprocess (peak memory is its own); timings are medians after a warm-up (compilation excluded).
`python -m scripts.bench SUBCOMMAND --help` lists a benchmark's flags.
"""

from __future__ import annotations

import argparse
import json
import sys

from scripts.bench import generate, grpo, lora, roof, train

BENCHMARKS = {"roof": roof, "train": train, "lora": lora, "generate": generate, "grpo": grpo}


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="python -m scripts.bench",
        description=__doc__.split("\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = top.add_subparsers(dest="benchmark", required=True)
    for name, module in BENCHMARKS.items():
        sub = commands.add_parser(name, help=module.__doc__.split("\n")[0], description=module.__doc__)
        module.add_arguments(sub)
        sub.add_argument(
            "--default-malloc",
            action="store_true",
            help="our side: leave glibc malloc as it is (training/host_memory.py not applied), for A/B",
        )
        sub.add_argument("--side", choices=sorted(module.SIDES), help=argparse.SUPPRESS)  # run one side, print JSON
        sub.add_argument("--code", help=argparse.SUPPRESS)  # another checkout whose packages that side imports
    return top


def run_one_side(args) -> None:
    """This process is one side: set up as the stages do, measure, print the figures as JSON."""
    if args.code:  # another checkout's packages, found before this one's (and before the editable install)
        sys.path.insert(0, args.code)
    if args.side.startswith("jax") and not args.default_malloc:
        from training.host_memory import reuse_freed_memory

        reuse_freed_memory()  # before JAX runs anything
    if args.side == "jax" and args.benchmark in ("generate", "grpo"):
        from training.cpu_tuning import configure_host_cpu

        configure_host_cpu(1 if getattr(args, "one_device", False) else 2)  # as predict and grpo do
    print(json.dumps(BENCHMARKS[args.benchmark].SIDES[args.side](args)))


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = parser().parse_args(argv)
    if args.side:
        run_one_side(args)
    else:
        BENCHMARKS[args.benchmark].main(args, argv)


if __name__ == "__main__":
    main()
