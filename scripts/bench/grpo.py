"""`grpo`: wall seconds of LoRA GRPO steps on GSM8K training prompts with the `grpo` stage's rewards,
this code beside another commit's (`--baseline`)."""

from __future__ import annotations

import json
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import yaml

from scripts.bench.common import (
    ROOT,
    add_repeats_argument,
    jax_device_name,
    peak_rss_mib,
    run_side,
    table,
)


def add_arguments(parser) -> None:
    parser.add_argument(
        "--checkpoint", required=True, help="a Hugging Face directory with its tokenizer.json (e.g. data/base)"
    )
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    add_repeats_argument(parser, 3)
    parser.add_argument("--lora-rank", type=int, default=16)
    parser.add_argument("--prompts", type=int, default=2, help="prompts (groups) a step")
    parser.add_argument("--group", type=int, default=8, help="completions a prompt")
    parser.add_argument("--new-tokens", type=int, default=128, help="the most new tokens a completion")
    parser.add_argument(
        "--baseline",
        help="a git revision (one with stages.grpo.make_reward_fn) whose code runs the same steps beside this one",
    )
    parser.add_argument(
        "--to-budget",
        action="store_true",
        help="no completion ends before --new-tokens (the same work from any checkpoint)",
    )
    parser.add_argument(
        "--grpo-set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="a GRPOConfig field for this code's side (e.g. rollout_head_dtype=bfloat16)",
    )


def jax_grpo(args) -> dict:
    """Wall seconds of GRPO steps (LoRA on the checkpoint, GSM8K training prompts, the built-in rewards):
    the first step compiles and is left out, the median of the rest is reported."""
    from tokenizers import Tokenizer

    import training
    from stages.common import load_params
    from stages.grpo import make_reward_fn, reward_set
    from stages.gsm8k import parse_row
    from training import chat, lora
    from training import tokenizer as tokenizers_io
    from training.grpo import GRPOConfig, Prompt, grpo
    from training.hf_io import load_pretrained
    from training.lora import LoRASpec

    checkpoint = Path(args.checkpoint)
    model = load_pretrained(checkpoint, dtype=args.dtype, param_dtype=args.dtype)
    lora.add_adapters(model, LoRASpec(rank=args.lora_rank, alpha=float(2 * args.lora_rank)), seed=0)
    tok = Tokenizer.from_file(str(checkpoint / "tokenizer.json"))
    rows = [json.loads(line) for line in (ROOT / "trainsets/gsm8k/train.jsonl").read_text().splitlines()[:256]]
    records = [dict(zip(("prompt", "steps", "final_answer"), parse_row(row, "gsm8k"))) for row in rows]
    encoded = tok.encode_batch([chat.render_prompt(r["prompt"]) for r in records], add_special_tokens=False)
    prompts = [Prompt(e.ids, r["prompt"], r) for e, r in zip(encoded, records)]
    code = Path(training.__file__).parent.parent  # this checkout, or the baseline's
    params = load_params(path=code / "params.yaml")  # the reward weights that code's schema reads
    reward_fn = make_reward_fn(reward_set(params, code), tok, args.new_tokens)
    fields = dict(
        steps=1 + args.repeats,
        prompts_per_step=args.prompts,
        group_size=args.group,
        max_new_tokens=args.new_tokens,
        learning_rate=5e-5,
        dynamic_sampling=False,
        **{k: yaml.safe_load(v) for k, v in (item.split("=", 1) for item in args.grpo_set)},
    )
    stamps, logged = [time.perf_counter()], []

    def on_log(step, row):
        stamps.append(time.perf_counter())
        logged.append(row)

    # --to-budget: an id never sampled ends the rows, so every completion runs to the budget (the work of a
    # model that writes long, as the recipe's SFT model does, from any checkpoint)
    eos_ids = [model.config.vocab_size] if args.to_budget else tokenizers_io.stop_ids(tok)
    pad_id = tok.token_to_id("<pad>") or 0
    grpo(model, prompts, reward_fn, GRPOConfig(**fields), eos_ids=eos_ids, pad_id=pad_id, on_log=on_log)
    timed = logged[1:]
    median = statistics.median
    return {
        "step_s": median([b - a for a, b in zip(stamps[1:], stamps[2:])]),
        "rollout_tokens_per_s": median([r["rollout_tokens_per_second"] for r in timed]),
        "update_tokens_per_s": median([r["update_tokens_per_second"] for r in timed]),
        "completion_length": statistics.mean(r["completion_length"] for r in timed),
        "first_step_s": stamps[1] - stamps[0],
        "peak_rss_mib": peak_rss_mib(),
        "device": jax_device_name(),
        "code": str(code),
        "config": {**{k: v for k, v in fields.items() if k != "steps"}, "lora_rank": args.lora_rank},
    }


SIDES = {"jax": jax_grpo}


def baseline_tree(rev: str) -> Path:
    """A checkout of `rev` (a git worktree beside the temp files, made once) whose code a side can run."""
    sha = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", rev], capture_output=True, text=True, check=True
    ).stdout.strip()
    tree = Path(tempfile.gettempdir()) / f"tunix-rt-bench-{sha}"
    if not tree.exists():
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), sha], check=True, capture_output=True
        )
    return tree


def without_grpo_set(argv: list[str]) -> list[str]:
    """The command line less its `--grpo-set` fields (the levers of this code, which the baseline lacks)."""
    out, skip = [], False
    for a in argv:
        if skip or a.startswith("--grpo-set"):
            skip = a == "--grpo-set"
            continue
        out.append(a)
    return out


def print_table(args, sides: list[tuple[str, dict]]) -> None:
    c = sides[0][1]["config"]
    print(
        f"GRPO step benchmark ({args.checkpoint}; LoRA rank {c['lora_rank']}; {c['prompts_per_step']} prompts x "
        f"{c['group_size']} completions, at most {c['max_new_tokens']} new tokens; {args.dtype}; median of "
        f"{args.repeats} steps after a compiling one)\n"
    )
    head = ("code", "s a step", "rollout new tokens/s", "update tokens/s", "mean completion", "first step (s)")
    rows = [(*head, "peak RSS (MiB)")]
    for label, side in sides:
        rows.append(
            (
                label,
                f"{side['step_s']:.1f}",
                f"{side['rollout_tokens_per_s']:.1f}",
                f"{side['update_tokens_per_s']:.1f}",
                f"{side['completion_length']:.1f}",
                f"{side['first_step_s']:.1f}",
                f"{side['peak_rss_mib']:.0f}",
            )
        )
    print(table(rows))
    if len(sides) == 2:
        print(f"\nthis code over {sides[1][0]}: {sides[1][1]['step_s'] / sides[0][1]['step_s']:.2f}x a step")


def main(args, argv: list[str]) -> None:
    sides = [("this code", run_side(argv, "jax"))]
    if args.baseline:
        sides.append((args.baseline, run_side(without_grpo_set(argv), "jax", code=baseline_tree(args.baseline))))
    print_table(args, sides)
