"""`generate`: greedy KV-cache decoding, new tokens/s at each batch size, ours beside transformers
`generate` and vLLM (float32 and bfloat16), with our share of the machine's compute and bandwidth bounds.

Every engine gets the same prompts (token ids), the same number of new tokens (end of sequence never
ends a row), greedy decoding, and times whole calls (prefill included): the median of --repeats after
an untimed call. vLLM runs in its own environment (`.venv-vllm`, see vllm_runner.py) and needs
--checkpoint (a Hugging Face directory it can load).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from scripts.bench import roof
from scripts.bench.common import (
    ROOT,
    add_model_arguments,
    add_repeats_argument,
    attended_spans,
    attention_flops,
    jax_device_name,
    matmul_params,
    median_seconds,
    model_config,
    model_name,
    peak_rss_mib,
    run_json,
    run_side,
    table,
    torch_device,
    torch_model,
)

VLLM_PYTHON = ROOT / ".venv-vllm" / "bin" / "python"
VLLM_RUNNER = Path(__file__).with_name("vllm_runner.py")
COMPARED_TOKENS = 8  # the first new tokens of the first row compared between engines


def add_arguments(parser) -> None:
    add_model_arguments(parser)
    add_repeats_argument(parser, 3)
    parser.add_argument("--batches", default="1,16,64", help="comma-separated batch sizes, each engine at each")
    parser.add_argument("--prompt", type=int, default=64, help="prompt tokens a row")
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--head-dtype", choices=["float32", "bfloat16"], help="our LM head's dtype (default: model's)")
    parser.add_argument("--one-device", action="store_true", help="ours decodes the batch in one program, for A/B")
    parser.add_argument("--no-reference", action="store_true", help="skip transformers `generate`")
    parser.add_argument(
        "--vllm-dtypes",
        help="vLLM's dtypes, comma-separated (default with --checkpoint: float32,bfloat16; '' skips vLLM)",
    )
    parser.add_argument("--no-roof", action="store_true", help="skip measuring the machine (no shares printed)")
    parser.add_argument("--peak-gbps", type=float, help="the device's memory bandwidth, for the streaming bound")


def batches(args) -> list[int]:
    return [int(b) for b in args.batches.split(",")]


def prompt_ids(args, cfg) -> list[list[int]]:
    """The widest batch's prompts: the beginning-of-sequence id, then random ids (never 0, the pad id); a
    batch of B takes the first B rows."""
    rows = np.random.default_rng(0).integers(1, cfg.vocab_size, (max(batches(args)), args.prompt))
    rows[:, 0] = cfg.bos_token_id
    return rows.tolist()


def decode_bytes_per_step(cfg, args, batch: int) -> float:
    """Bytes one decode step must read at least: every weight once, and each row's keys and values so far
    (at the run's mean length; sliding layers at most their window)."""
    itemsize = 2 if args.dtype == "bfloat16" else 4
    spans = attended_spans(cfg, args.prompt + args.new_tokens / 2)
    kv = 2 * cfg.num_key_value_heads * cfg.head_dim * sum(spans) * batch
    return (cfg.num_params() + kv) * itemsize


def flops_per_new_token(cfg, args) -> float:
    """The FLOPs a timed call does per new token: the decode step's (2N, the tied LM head included, and
    attention over the keys so far at the run's mean length) and a share of the prompt's prefill (timed
    with it: the layers' matmuls for every prompt token, the head for the last, causal attention)."""
    mean_length = args.prompt + args.new_tokens / 2
    decode = 2 * matmul_params(cfg) + sum(attention_flops(cfg, span) for span in attended_spans(cfg, mean_length))
    head = cfg.vocab_size * cfg.hidden_size
    causal = sum(attention_flops(cfg, span) * args.prompt / 2 for span in attended_spans(cfg, args.prompt))
    prefill = 2 * (matmul_params(cfg) - head) * args.prompt + 2 * head + causal
    return decode + prefill / args.new_tokens


def jax_generate(args) -> dict:
    from flax import nnx

    from training.model import Gemma
    from training.sampler import Sampler, SamplingConfig

    cfg = model_config(args)
    if args.checkpoint:
        from training.hf_io import load_pretrained

        model = load_pretrained(Path(args.checkpoint), dtype=args.dtype, param_dtype=args.dtype)
    else:
        model = Gemma(cfg, rngs=nnx.Rngs(0), dtype=args.dtype, param_dtype=args.dtype)
    extra = {"head_dtype": args.head_dtype} if args.head_dtype else {}
    sampler = Sampler(model, eos_ids=[cfg.vocab_size], pad_id=0, **extra)  # an id never sampled: full length
    sc = SamplingConfig(max_new_tokens=args.new_tokens)
    out, generated = {}, {}
    for batch in batches(args):
        prompts = prompt_ids(args, cfg)[:batch]

        def one(prompts=prompts):
            generated["last"] = sampler(prompts, sc)

        t = median_seconds(one, args.repeats, warmup=1)
        out[batch] = {
            "new_tokens_per_s": batch * args.new_tokens / t,
            "first_row_tokens": generated["last"].tokens[0, :COMPARED_TOKENS].tolist(),
        }
    device = jax_device_name() + (f" (rows split over {sampler.mesh.size})" if sampler.mesh is not None else "")
    return {"batches": out, "peak_rss_mib": peak_rss_mib(), "device": device}


def torch_generate(args) -> dict:
    model, torch = torch_model(args)
    device, device_name, sync = torch_device(torch, args)
    model.to(device, getattr(torch, args.dtype)).eval()
    out = {}
    for batch in batches(args):
        prompts = torch.tensor(prompt_ids(args, model_config(args))[:batch], device=device)

        def one(prompts=prompts):
            with torch.no_grad():
                generated = model.generate(
                    input_ids=prompts,
                    attention_mask=torch.ones_like(prompts),
                    max_new_tokens=args.new_tokens,
                    min_new_tokens=args.new_tokens,
                    do_sample=False,
                    use_cache=True,
                    pad_token_id=0,
                )
            assert generated.shape[1] == args.prompt + args.new_tokens
            sync()

        out[batch] = {"new_tokens_per_s": batch * args.new_tokens / median_seconds(one, args.repeats, warmup=1)}
    return {"batches": out, "peak_rss_mib": peak_rss_mib(), "device": device_name}


SIDES = {"jax": jax_generate, "torch": torch_generate}


def vllm_generate(args, dtype: str) -> dict:
    """vLLM at every batch in one process of `.venv-vllm` (one engine start a dtype)."""
    if not VLLM_PYTHON.is_file():
        raise SystemExit(f"bench: vLLM needs {VLLM_PYTHON} (make vllm-env), or --vllm-dtypes ''")
    request = {
        "model": str(Path(args.checkpoint).resolve()),
        "dtype": dtype,
        "prompts": prompt_ids(args, model_config(args)),
        "batches": batches(args),
        "new_tokens": args.new_tokens,
        "repeats": args.repeats,
    }
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    return run_json([str(VLLM_PYTHON), str(VLLM_RUNNER)], f"vLLM {dtype}", stdin=json.dumps(request), env=env)


def measure(args, argv: list[str]) -> dict[str, dict]:
    """Every engine's figures, each from one process over every batch: {"tunix-rt": {"batches": {batch:
    {"new_tokens_per_s", …}}, "peak_rss_mib", …}, "transformers": …, "vLLM float32": …}."""
    chosen = args.vllm_dtypes if args.vllm_dtypes is not None else "float32,bfloat16" * bool(args.checkpoint)
    vllm_dtypes = [d for d in chosen.split(",") if d]
    if vllm_dtypes and not args.checkpoint:
        raise SystemExit("bench: vLLM loads a Hugging Face directory: give --checkpoint, or --vllm-dtypes ''")
    engines = {"tunix-rt": run_side(argv, "jax")}
    if not args.no_reference:
        engines["transformers"] = run_side(argv, "torch")
    for dtype in vllm_dtypes:
        engines[f"vLLM {dtype}"] = vllm_generate(args, dtype)
    for figures in engines.values():  # JSON keys are strings
        figures["batches"] = {int(b): side for b, side in figures["batches"].items()}
    return engines


def print_table(args, machine: dict | None, engines: dict[str, dict]) -> None:
    cfg = model_config(args)
    ours = engines["tunix-rt"]["batches"]
    others = [name for name in engines if name != "tunix-rt"]
    rate = lambda name, batch: engines[name]["batches"][batch]["new_tokens_per_s"]
    head_dtype = f", LM head {args.head_dtype}" if args.head_dtype else ""
    print(
        f"generate benchmark ({model_name(args)}; greedy, prompt {args.prompt}, {args.new_tokens} new tokens, "
        f"new tokens/s, median of {args.repeats}; tunix-rt and transformers in {args.dtype}{head_dtype})\n"
    )
    head = ["batch", "tunix-rt"]
    for name in others:
        head += [name, f"tunix-rt / {name}"]
    rows = [(*head, *(["share of compute roof", "share of bandwidth"] if machine else []))]
    for batch in ours:
        row = [str(batch), f"{rate('tunix-rt', batch):.1f}"]
        for name in others:
            row += [f"{rate(name, batch):.1f}", f"{rate('tunix-rt', batch) / rate(name, batch):.2f}x"]
        if machine:
            gflops = flops_per_new_token(cfg, args) * rate("tunix-rt", batch) / 1e9
            gbps = decode_bytes_per_step(cfg, args, batch) * rate("tunix-rt", batch) / batch / 1e9
            row += [f"{gflops / roof.roof_gflops(machine, args.dtype):.1%}", f"{gbps / machine['bandwidth_gbps']:.1%}"]
        rows.append(tuple(row))
    print(table(rows))
    print("\npeak RSS: " + ", ".join(f"{name} {engines[name].get('peak_rss_mib', 0):.0f} MiB" for name in engines))
    if machine:
        print(
            f"machine in this run: matmul roof {roof.roof_gflops(machine, args.dtype):.1f} GFLOP/s ({args.dtype}, "
            f"best of JAX and PyTorch), memory bandwidth {machine['bandwidth_gbps']:.1f} GB/s; compute share: the "
            f"prompt's prefill and 2N + attention a new token, {flops_per_new_token(cfg, args) / 1e9:.3f} GFLOP a new "
            "token in all; bandwidth share: every weight and the keys and values read once a decode step"
        )
    for batch in ours if args.peak_gbps else ():
        bound = batch * args.peak_gbps * 1e9 / decode_bytes_per_step(cfg, args, batch)
        print(
            f"batch {batch}: share of the weight + KV streaming bound ({bound:,.0f} new tokens/s at "
            f"{args.peak_gbps:g} GB/s): {rate('tunix-rt', batch) / bound:.1%}"
        )
    first = ours[min(ours)]["first_row_tokens"]
    for name in (n for n in others if n.startswith("vLLM")):
        theirs = engines[name]["batches"][min(ours)]["first_row_tokens"][: len(first)]
        same = next((i for i, (a, b) in enumerate(zip(first, theirs)) if a != b), len(first))
        print(
            f"greedy tokens, first row at batch {min(ours)}: tunix-rt and {name} agree on the first {same} of "
            f"{len(first)} (tunix-rt {first}, {name} {theirs})"
        )


def main(args, argv: list[str]) -> None:
    machine = None if args.no_roof else roof.measure(args)
    print_table(args, machine, measure(args, argv))
