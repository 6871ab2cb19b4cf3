"""Benchmarks, ours beside the transformers PyTorch reference, in one run.

    python scripts/bench.py train      # SFT step: tokens/s, GFLOP/s, matmul roof, peak memory
    python scripts/bench.py generate   # greedy KV-cache generation: new tokens/s
    python scripts/bench.py train --preset gemma2-2b --lora-rank 16 --batch 8 --seq 512 --remat --dtype bfloat16
                                       # full fine-tuning (float32 master weights, AdamW) beside LoRA
                                       # (base frozen in --dtype): memory and tokens/s
    python scripts/bench.py lora --checkpoint data/base --lora-rank 16 --batch 4 --seq 256
                                       # our LoRA step beside transformers + peft (same rank, targets, batch)
    python scripts/bench.py generate --checkpoint data/base --batches 1,16,64 --new-tokens 64
                                       # our sampler beside `generate` at each batch
    python scripts/bench.py grpo --checkpoint data/base --baseline aceb6cd --to-budget
                                       # a LoRA GRPO step on GSM8K prompts beside the same step of
                                       # another commit's code (rollouts and update, seconds a step)
    python scripts/bench.py roof       # the machine alone: matmul roof and memory bandwidth

With `--checkpoint DIR` (a Hugging Face directory: config.json, model.safetensors) both sides load its
weights; without one, `--preset` gives the shape and the weights are random. `lora` and `generate
--batches` also measure the machine in the same run (the best GEMM of JAX and PyTorch at the model's
shapes, and the memory bandwidth of a large reduction) and print each side's share of both bounds.

Each side runs in its own subprocess so peak memory (max RSS) is its own;
timings are medians over repeated steps after a warm-up (compilation excluded).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script: the project's packages are beside this folder
    sys.path.insert(0, str(ROOT))


def median_seconds(fn: Callable[[], object], repeats: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def jax_device_name() -> str:
    import jax

    device = jax.devices()[0]
    return str(device) if device.platform == "cpu" else device.device_kind


def jax_peak_device_mib() -> float | None:
    import jax

    stats = jax.devices()[0].memory_stats()  # None on CPU
    return stats["peak_bytes_in_use"] / 2**20 if stats and "peak_bytes_in_use" in stats else None


def model_config(args):
    from training import config as configs

    if getattr(args, "checkpoint", None):
        from training.hf_io import read_config

        return read_config(Path(args.checkpoint))
    if args.preset == "tiny":
        return configs.tiny(args.vocab)
    return configs.PRESET_SHAPES[args.preset]()


def matmul_params(cfg) -> int:
    """The parameters every token multiplies (the tied LM head included): all but the norms' weights."""
    return cfg.num_params() - cfg.num_hidden_layers * 6 * cfg.hidden_size


def train_flops_per_token(cfg, seq_len: int) -> dict[str, float]:
    """A training step's FLOPs per token in both conventions: 6N (N: the matmul parameters, the tied LM
    head included) and 6N + attention (QKᵀ and PV: causal at half, sliding layers at their window)."""
    attn = 0.0
    for kind in cfg.layer_types:
        span = min(seq_len, cfg.sliding_window or seq_len) if kind == "sliding_attention" else seq_len
        attn += 2 * 2 * cfg.num_attention_heads * cfg.head_dim * span * (0.5 if span == seq_len else 1.0)
    n = matmul_params(cfg)
    return {"6N": 6 * n, "6N + attention": 3 * (2 * n + attn)}


# ---------------------------------------------------------------- sides (each in its own process)


def decode_bytes_per_step(cfg, args) -> float:
    """Bytes one decode step must read at least: every weight once, and each row's keys and values so far
    (at the run's mean length; sliding layers at most their window)."""
    itemsize = 2 if args.dtype == "bfloat16" else 4
    mean_length = args.prompt + args.new_tokens / 2
    spans = [
        min(mean_length, cfg.sliding_window or mean_length) if kind == "sliding_attention" else mean_length
        for kind in cfg.layer_types
    ]
    kv = 2 * cfg.num_key_value_heads * cfg.head_dim * sum(spans) * args.batch
    return (cfg.num_params() + kv) * itemsize


def jax_matmul_roof(dtype: str) -> float:
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
        t = median_seconds(lambda f=f, a=a, b=b: f(a, b).block_until_ready(), 10)
        best = max(best, 2 * m * k * n / t / 1e9)
    return best


def jax_train(args) -> dict:
    import jax
    from flax import nnx

    from training import lora
    from training.model import Gemma
    from training.trainer import TrainConfig, make_optimizer, make_train_step

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
    tc = TrainConfig(steps=100, batch_size=args.batch, seq_len=args.seq, learning_rate=1e-3, warmup_steps=10)
    tx = make_optimizer(tc)
    opt_state = jax.eval_shape(tx.init, params) if compile_only else tx.init(params)
    batch = random_batch(args, cfg.vocab_size)
    compiled = make_train_step(graphdef, tx, tc).lower(params, opt_state, frozen, batch, np.int32(0)).compile()
    trainable = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params))
    result = {
        "trainable_params": trainable,
        **xla_memory_mib(compiled),
        "device": jax_device_name(),
        "mode": f"LoRA r={rank}" if rank else "full",
    }
    if compile_only:
        return result | {"tokens_per_s": None, "peak_rss_mib": peak_rss_mib(), "peak_device_mib": None}
    holder = {"p": params, "o": opt_state}

    def one():
        holder["p"], holder["o"], m = compiled(holder["p"], holder["o"], frozen, batch, np.int32(0))
        jax.block_until_ready(m["loss"])

    t = median_seconds(one, args.repeats, warmup=1 if args.lora_rank else 2)
    tokens = args.batch * args.seq
    if args.lora_rank:
        return result | {
            "tokens_per_s": tokens / t,
            "peak_rss_mib": peak_rss_mib(),
            "peak_device_mib": jax_peak_device_mib(),
        }
    return {
        "tokens_per_s": tokens / t,
        "peak_rss_mib": peak_rss_mib(),
        "peak_device_mib": jax_peak_device_mib(),
        "roof_gflops": jax_matmul_roof(args.dtype),
        "device": jax_device_name(),
    }


def fill_random(model) -> None:
    """Random weights (adapters included) for an abstract model, each tensor drawn by its own small compiled
    program: host memory holds the weights plus one tensor's draw, where one program for the whole init
    holds every draw at once (and eagerly a 2B model takes minutes)."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    leaves, treedef = jax.tree.flatten(nnx.state(model, nnx.Param))
    key = jax.random.key(0)
    filled = []
    for i, leaf in enumerate(leaves):
        draw = jax.jit(lambda k, s=leaf.shape, d=leaf.dtype: (0.02 * jax.random.normal(k, s, jnp.float32)).astype(d))
        filled.append(draw(jax.random.fold_in(key, i)))
    nnx.update(model, jax.tree.unflatten(treedef, filled))


def xla_memory_mib(compiled) -> dict[str, float]:
    """XLA's memory analysis of a compiled program: its arguments, its temporaries and their sum with the
    outputs not written over donated arguments (the program's peak as XLA assigns its buffers).

    (`peak_memory_in_bytes` is not used: XLA:CPU reports the arguments alone there.)
    """
    stats = compiled.memory_analysis()
    fresh_outputs = stats.output_size_in_bytes - stats.alias_size_in_bytes
    total = stats.argument_size_in_bytes + fresh_outputs + stats.temp_size_in_bytes
    mib = lambda n: n / 2**20
    return {
        "xla_peak_mib": mib(total),
        "xla_arguments_mib": mib(stats.argument_size_in_bytes),
        "xla_temp_mib": mib(stats.temp_size_in_bytes),
    }


def random_batch(args, vocab: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    shape = (args.batch, args.seq)
    return {
        "inputs": rng.integers(0, vocab, shape, dtype=np.int32),
        "targets": rng.integers(0, vocab, shape, dtype=np.int32),
        "weights": np.ones(shape, np.float32),
        "positions": np.tile(np.arange(args.seq, dtype=np.int32), (args.batch, 1)),
        "segments": np.ones(shape, np.int32),
    }


def torch_model(args):
    import torch
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    torch.manual_seed(0)
    if args.checkpoint:
        model = Gemma3ForCausalLM.from_pretrained(args.checkpoint, dtype=torch.float32, attn_implementation="sdpa")
        return model, torch
    hf = model_config(args).to_hf()
    hf.pop("architectures"), hf.pop("model_type")
    config = Gemma3TextConfig(**hf)
    config._attn_implementation = "sdpa"
    return Gemma3ForCausalLM(config), torch


def torch_device(torch, args) -> tuple[str, str, Callable[[], None]]:
    """The reference runs where ours does: CUDA when there is one, else the CPU's threads.

    Returns the device, its name for the table, and what waits for its queued work.
    """
    if torch.cuda.is_available():
        return "cuda", torch.cuda.get_device_name(), torch.cuda.synchronize
    torch.set_num_threads(args.threads)
    return "cpu", f"cpu ({args.threads} threads)", lambda: None


def torch_train(args) -> dict:
    model, torch = torch_model(args)
    device, device_name, sync = torch_device(torch, args)
    model.to(device).train()
    return torch_step_rate(
        args,
        torch,
        model,
        list(model.parameters()),
        torch.optim.AdamW(model.parameters(), lr=1e-3),
        device,
        device_name,
        sync,
    )


def torch_step_rate(args, torch, model, trainable, opt, device, device_name, sync, warmup: int | None = None) -> dict:
    """Median tokens/s of a PyTorch training step (forward, cross-entropy, backward, clip, AdamW) on a random
    batch; float32 master weights, bfloat16 compute under autocast when asked, as our side does."""
    batch = random_batch(args, model.config.vocab_size)
    inputs = torch.from_numpy(batch["inputs"]).long().to(device)
    labels = torch.from_numpy(batch["targets"]).long().to(device)
    autocast = torch.autocast(device, torch.bfloat16, enabled=args.dtype == "bfloat16")

    def one():
        with autocast:
            out = model(input_ids=inputs)
        loss = torch.nn.functional.cross_entropy(out.logits.flatten(0, 1).float(), labels.flatten())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync()

    t = median_seconds(one, args.repeats) if warmup is None else median_seconds(one, args.repeats, warmup=warmup)
    return {
        "tokens_per_s": args.batch * args.seq / t,
        "peak_rss_mib": peak_rss_mib(),
        "peak_device_mib": torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else None,
        "device": device_name,
    }


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
    prompts = np.random.default_rng(0).integers(1, cfg.vocab_size, (args.batch, args.prompt)).tolist()
    sc = SamplingConfig(max_new_tokens=args.new_tokens)
    t = median_seconds(lambda: sampler(prompts, sc), args.repeats, warmup=1)
    device = jax_device_name() + (f" (rows split over {sampler.mesh.size})" if sampler.mesh is not None else "")
    return {"new_tokens_per_s": args.batch * args.new_tokens / t, "peak_rss_mib": peak_rss_mib(), "device": device}


def torch_generate(args) -> dict:
    model, torch = torch_model(args)
    device, device_name, sync = torch_device(torch, args)
    model.to(device, getattr(torch, args.dtype)).eval()
    prompts = torch.from_numpy(np.random.default_rng(0).integers(1, model.config.vocab_size, (args.batch, args.prompt)))
    prompts = prompts.to(device)

    def one():
        with torch.no_grad():
            out = model.generate(
                input_ids=prompts,
                attention_mask=torch.ones_like(prompts),
                max_new_tokens=args.new_tokens,
                min_new_tokens=args.new_tokens,
                do_sample=False,
                use_cache=True,
                pad_token_id=0,
            )
        assert out.shape[1] == args.prompt + args.new_tokens
        sync()

    t = median_seconds(one, args.repeats, warmup=1)
    return {"new_tokens_per_s": args.batch * args.new_tokens / t, "peak_rss_mib": peak_rss_mib(), "device": device_name}


# ---------------------------------------------------------------- the real shape: LoRA beside peft, the sampler by batch


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


def decode_flops_per_token(cfg, args) -> float:
    """One new token's FLOPs: 2N (every matmul weight once, the tied LM head included) and attention
    over the keys so far at the run's mean length (sliding layers at most their window)."""
    mean_length = args.prompt + args.new_tokens / 2
    spans = [
        min(mean_length, cfg.sliding_window or mean_length) if kind == "sliding_attention" else mean_length
        for kind in cfg.layer_types
    ]
    return 2 * matmul_params(cfg) + 4 * cfg.num_attention_heads * cfg.head_dim * sum(spans)


def prefill_flops_per_row(cfg, args) -> float:
    """A prompt's FLOPs before its first new token: every layer's matmuls for each prompt token (2 × the
    matmul weights less the tied head, which reads the last position only) and causal attention."""
    head = cfg.vocab_size * cfg.hidden_size
    layers = matmul_params(cfg) - head
    spans = [
        min(args.prompt, cfg.sliding_window or args.prompt) if kind == "sliding_attention" else args.prompt
        for kind in cfg.layer_types
    ]
    return (
        2 * layers * args.prompt
        + 2 * head
        + sum(4 * cfg.num_attention_heads * cfg.head_dim * span * args.prompt / 2 for span in spans)
    )


def generate_flops_per_new_token(cfg, args) -> float:
    """The FLOPs a timed `generate` call does, per new token: the decode step's and a share of the prompt's
    prefill (timed with it, so counted with it)."""
    return decode_flops_per_token(cfg, args) + prefill_flops_per_row(cfg, args) / args.new_tokens


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
            best = max(
                best, 2 * m * k * n / median_seconds(lambda mm=mm, a=a, b=b: mm(a, b).block_until_ready(), 5) / 1e9
            )
            ta, tb = torch.ones((m, k), dtype=getattr(torch, dtype)), torch.ones((k, n), dtype=getattr(torch, dtype))
            best = max(best, 2 * m * k * n / median_seconds(lambda ta=ta, tb=tb: ta @ tb, 5) / 1e9)
        out[f"roof_gflops_{dtype}"] = best
    big = torch.ones(2**26, dtype=torch.float32)
    out["bandwidth_gbps"] = big.numel() * 4 / median_seconds(lambda: big.sum(), 5) / 1e9
    return out


def jax_lora(args) -> dict:
    import jax
    from flax import nnx

    from training import lora
    from training.hf_io import load_pretrained
    from training.model import Gemma
    from training.trainer import TrainConfig, make_optimizer, make_train_step

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
    tc = TrainConfig(steps=100, batch_size=args.batch, seq_len=args.seq, learning_rate=1e-4, warmup_steps=10)
    tx = make_optimizer(tc)
    opt_state = tx.init(params)
    batch = random_batch(args, cfg.vocab_size)
    compiled = make_train_step(graphdef, tx, tc).lower(params, opt_state, frozen, batch, np.int32(0)).compile()
    holder = {"p": params, "o": opt_state}

    def one():
        holder["p"], holder["o"], m = compiled(holder["p"], holder["o"], frozen, batch, np.int32(0))
        jax.block_until_ready(m["loss"])

    t = median_seconds(one, args.repeats, warmup=1)
    return {
        "tokens_per_s": args.batch * args.seq / t,
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


def print_lora_vs_peft(args, roof: dict, ours: dict, ref: dict | None) -> None:
    from training.lora import TARGETS

    cfg = model_config(args)
    flops = lora_flops_per_token(cfg, args.seq, args.lora_rank, TARGETS)
    roof_gflops = max(roof["roof_gflops_float32"], roof["roof_gflops_bfloat16"] if args.dtype == "bfloat16" else 0)
    name = args.checkpoint or f"{args.preset}, random weights"
    print(
        f"LoRA benchmark ({name}; rank {args.lora_rank}, alpha {2 * args.lora_rank}, every projection; batch "
        f"{args.batch} x {args.seq}; compute {args.dtype}, frozen base {args.base_dtype or args.dtype})\n"
    )
    rows = [("", "tokens/s", "GFLOP/s", "share of the matmul roof", "peak RSS (MiB)", "device")]
    for label, side in (("tunix-rt (JAX)", ours), ("transformers + peft (PyTorch)", ref)):
        if side:
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
    if ref:
        print(f"speed-up over transformers + peft: {ours['tokens_per_s'] / ref['tokens_per_s']:.2f}x")


def print_generate_by_batch(args, roof: dict, results: list[tuple[int, dict, dict | None]]) -> None:
    cfg = model_config(args)
    roof_gflops = max(roof["roof_gflops_float32"], roof["roof_gflops_bfloat16"] if args.dtype == "bfloat16" else 0)
    name = args.checkpoint or f"{args.preset}, random weights"
    print(
        f"generate benchmark ({name}; greedy, prompt {args.prompt}, {args.new_tokens} new tokens, {args.dtype}"
        f"{', LM head ' + args.head_dtype if args.head_dtype else ''})\n"
    )
    rows = [
        (
            "batch",
            "tunix-rt new tokens/s",
            "transformers new tokens/s",
            "ratio",
            "share of compute roof",
            "share of bandwidth",
            "tunix-rt peak RSS (MiB)",
            "transformers peak RSS (MiB)",
        )
    ]
    for batch, ours, ref in results:
        args.batch = batch
        flop_share = generate_flops_per_new_token(cfg, args) * ours["new_tokens_per_s"] / 1e9 / roof_gflops
        byte_share = decode_bytes_per_step(cfg, args) * ours["new_tokens_per_s"] / batch / 1e9 / roof["bandwidth_gbps"]
        rows.append(
            (
                str(batch),
                f"{ours['new_tokens_per_s']:.1f}",
                f"{ref['new_tokens_per_s']:.1f}" if ref else "",
                f"{ours['new_tokens_per_s'] / ref['new_tokens_per_s']:.2f}x" if ref else "",
                f"{flop_share:.1%}",
                f"{byte_share:.1%}",
                f"{ours['peak_rss_mib']:.0f}",
                f"{ref['peak_rss_mib']:.0f}" if ref else "",
            )
        )
    print(table(rows))
    print(
        f"\nmachine in this run: matmul roof {roof_gflops:.1f} GFLOP/s ({args.dtype}, best of JAX and PyTorch), "
        f"memory bandwidth {roof['bandwidth_gbps']:.1f} GB/s; compute share: the prompt's prefill and 2N + attention "
        f"a new token, {generate_flops_per_new_token(cfg, args) / 1e9:.3f} GFLOP a new token in all; "
        f"bandwidth share: every weight and the keys and values read once a decode step"
    )


# ---------------------------------------------------------------- a GRPO step, this code beside another commit's


def jax_grpo(args) -> dict:
    """Wall seconds of GRPO steps (LoRA rank 16 on the checkpoint, GSM8K training prompts, the built-in
    rewards): the first step compiles and is left out, the median of the rest is reported."""
    from tokenizers import Tokenizer

    import training
    from stages.common import load_params
    from stages.grpo import reward_set
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
    rewards = reward_set(params, code)
    from reasoning.rewards import Rollout

    def reward_fn(prompt, tokens, n, truncated):
        text = tok.decode(tokens.tolist(), skip_special_tokens=False)
        return rewards.score(Rollout(prompt.text, text, prompt.record, n, truncated, args.new_tokens))

    fields = dict(
        steps=1 + args.repeats,
        prompts_per_step=args.prompts,
        group_size=args.group,
        max_new_tokens=args.new_tokens,
        learning_rate=5e-5,
        dynamic_sampling=False,
        **args.grpo_set,
    )
    cfg = GRPOConfig(**fields)
    stamps, rows_logged = [time.perf_counter()], []

    def on_log(step, row):
        stamps.append(time.perf_counter())
        rows_logged.append(row)

    # --to-budget: an id never sampled ends the rows, so every completion runs to the budget (the work of a
    # model that writes long, as the recipe's SFT model does, from any checkpoint)
    eos_ids = [model.config.vocab_size] if args.to_budget else tokenizers_io.stop_ids(tok)
    grpo(model, prompts, reward_fn, cfg, eos_ids=eos_ids, pad_id=tok.token_to_id("<pad>") or 0, on_log=on_log)
    timed = rows_logged[1:]
    median = lambda xs: statistics.median(xs)
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


def baseline_tree(rev: str) -> Path:
    """A checkout of `rev` (a git worktree beside the temp files, made once) whose code a side can run."""
    import tempfile

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


def print_grpo(args, sides: list[tuple[str, dict]]) -> None:
    c = sides[0][1]["config"]
    print(
        f"GRPO step benchmark ({args.checkpoint}; LoRA rank {c['lora_rank']}; {c['prompts_per_step']} prompts x "
        f"{c['group_size']} completions, at most {c['max_new_tokens']} new tokens; {args.dtype}; median of "
        f"{args.repeats} steps after a compiling one)\n"
    )
    rows = [
        (
            "code",
            "s a step",
            "rollout new tokens/s",
            "update tokens/s",
            "mean completion",
            "first step (s)",
            "peak RSS (MiB)",
        )
    ]
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


SIDES = {
    ("roof", "jax"): machine_roof,
    ("lora", "jax"): jax_lora,
    ("lora", "torch"): torch_lora,
    ("train", "jax"): jax_train,
    ("train", "jax-lora"): jax_train,
    ("train", "torch"): torch_train,
    ("generate", "jax"): jax_generate,
    ("generate", "torch"): torch_generate,
    ("grpo", "jax"): jax_grpo,
}


# ---------------------------------------------------------------- driver


def run_side(argv: list[str], side: str, code: Path | None = None) -> dict:
    """One side in a subprocess; with `code`, that checkout's packages are imported instead of this one's."""
    extra = ["--code", str(code)] if code else []
    proc = subprocess.run(
        [sys.executable, __file__, *argv, "--side", side, *extra], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise SystemExit(f"bench: the {side} side failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def as_roof(argv: list[str], what: str) -> list[str]:
    """The same command line with its benchmark replaced by `roof` (the machine's measurement)."""
    i = argv.index(what)
    return [*argv[:i], "roof", *argv[i + 1 :]]


def table(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |" for r in rows]
    lines.insert(1, "| " + " | ".join("-" * w for w in widths) + " |")
    return "\n".join(lines)


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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python scripts/bench.py", description=__doc__.split("\n")[0])
    parser.add_argument("what", choices=["train", "generate", "lora", "roof", "grpo"])
    parser.add_argument("--preset", default="tiny", choices=["tiny", "gemma3-270m", "gemma3-1b", "gemma2-2b"])
    parser.add_argument(
        "--checkpoint",
        help="a Hugging Face model directory: both sides load its weights (its "
        "config.json gives the shape, --preset is then unused)",
    )
    parser.add_argument("--batches", help="generate: comma-separated batch sizes, each side at each (e.g. 1,16,64)")
    parser.add_argument(
        "--base-dtype",
        choices=["float32", "bfloat16"],
        help="lora: the frozen base's dtype on our side (default: --dtype)",
    )
    parser.add_argument(
        "--head-dtype",
        choices=["float32", "bfloat16"],
        help="generate: our sampler's LM head dtype (default: the model's)",
    )
    parser.add_argument("--vocab", type=int, default=1024, help="tiny preset vocabulary")
    parser.add_argument("--batch", type=int)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--prompt", type=int, default=64)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--remat", action="store_true")
    parser.add_argument("--repeats", type=int, help="timed repeats (default 10; grpo: 3 steps)")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument(
        "--peak-tflops", type=float, help="the device's datasheet peak, for MFU (H100/H200 bf16 dense: 989)"
    )
    parser.add_argument(
        "--peak-gbps", type=float, help="generate: the device's memory bandwidth, for the streaming bound (H200: 4800)"
    )
    parser.add_argument("--no-reference", action="store_true", help="skip the PyTorch side (e.g. on a GPU host)")
    parser.add_argument(
        "--lora-rank",
        type=int,
        default=0,
        help="train: full fine-tuning beside LoRA of this rank; lora: the rank (default 16)",
    )
    parser.add_argument(
        "--compile-only",
        action="store_true",
        help="--lora-rank: compile each side and report XLA's memory analysis, run nothing",
    )
    parser.add_argument(
        "--full-compile-only",
        action="store_true",
        help="--lora-rank: the full fine-tuning side is compiled, not run (when it does not fit)",
    )
    parser.add_argument(
        "--default-malloc",
        action="store_true",
        help="our side: leave glibc malloc as it is (training/host_memory.py not applied), for A/B",
    )
    parser.add_argument(
        "--one-device",
        action="store_true",
        help="generate: our side decodes the batch in one program (one host device), for A/B",
    )
    parser.add_argument("--prompts", type=int, default=2, help="grpo: prompts (groups) a step")
    parser.add_argument("--group", type=int, default=8, help="grpo: completions a prompt")
    parser.add_argument(
        "--baseline",
        help="grpo: a git revision (one with training/cpu_tuning.py) whose code runs the same steps beside this one",
    )
    parser.add_argument(
        "--to-budget",
        action="store_true",
        help="grpo: no completion ends before --new-tokens (the same work from any checkpoint)",
    )
    parser.add_argument(
        "--grpo-set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="grpo: a GRPOConfig field for this code's side (e.g. rollout_head_dtype=bfloat16)",
    )
    parser.add_argument("--side", choices=["jax", "jax-lora", "torch"], help=argparse.SUPPRESS)
    parser.add_argument("--code", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.grpo_set = {k: yaml.safe_load(v) for k, v in (item.split("=", 1) for item in args.grpo_set)}
    if args.repeats is None:
        args.repeats = 3 if args.what == "grpo" else 10
    if args.batch is None:
        args.batch = {"train": 16, "lora": 4}.get(args.what, 32)
    if args.what in ("lora", "grpo") and not args.lora_rank:  # in every process: a side's too
        args.lora_rank = 16
    if args.side:
        if args.code:  # another checkout's packages, found before this one's (and before the editable install)
            sys.path.insert(0, args.code)
        if args.side.startswith("jax") and not args.default_malloc:
            from training.host_memory import reuse_freed_memory

            reuse_freed_memory()  # as the stages do, before JAX runs anything
        if args.side == "jax" and args.what in ("generate", "grpo"):
            from training.cpu_tuning import configure_host_cpu

            configure_host_cpu(1 if args.one_device else 2)  # as predict and grpo do
        print(json.dumps(SIDES[(args.what, args.side)](args)))
        return

    raw = sys.argv[1:] if argv is None else argv
    if args.what == "roof":
        roof = run_side(raw, "jax")
        print(
            f"matmul roof: {roof['roof_gflops_float32']:.1f} GFLOP/s float32, {roof['roof_gflops_bfloat16']:.1f} "
            f"bfloat16 (best of JAX and PyTorch); memory bandwidth {roof['bandwidth_gbps']:.1f} GB/s"
        )
        return
    if args.what == "grpo":
        if not args.checkpoint:
            raise SystemExit("bench: grpo needs --checkpoint (a Hugging Face directory with its tokenizer.json)")
        sides = [("this code", run_side(raw, "jax"))]
        if args.baseline:
            sides.append((args.baseline, run_side(without_grpo_set(raw), "jax", code=baseline_tree(args.baseline))))
        print_grpo(args, sides)
        return
    if args.what == "lora":
        roof = run_side(as_roof(raw, args.what), "jax")
        ours = run_side(raw, "jax")
        ref = None if args.no_reference else run_side(raw, "torch")
        print_lora_vs_peft(args, roof, ours, ref)
        return
    if args.what == "generate" and args.batches:
        roof = run_side(as_roof(raw, args.what), "jax")
        results = []
        for batch in (int(b) for b in args.batches.split(",")):
            one = [*raw, "--batch", str(batch)]
            ref = None if args.no_reference else run_side(one, "torch")
            results.append((batch, run_side(one, "jax"), ref))
        print_generate_by_batch(args, roof, results)
        return
    if args.lora_rank:
        if args.what != "train":
            raise SystemExit("bench: --lora-rank goes with train")
        print_lora_table(args, run_side(raw, "jax"), run_side(raw, "jax-lora"))
        return
    ours = run_side(raw, "jax")
    ref = None if args.no_reference else run_side(raw, "torch")
    shape = f"{args.preset}, batch {args.batch}, " + (
        f"seq {args.seq}, {args.dtype}"
        if args.what == "train"
        else f"prompt {args.prompt}, {args.new_tokens} new tokens"
    )
    print(f"{args.what} benchmark ({shape})\n")
    if args.what == "train":
        print_train_table(args, ours, ref)
    else:
        rows = [("", "new tokens/s", "peak RSS (MiB)", "device")]
        rows.append(
            ("tunix-rt (JAX)", f"{ours['new_tokens_per_s']:.0f}", f"{ours['peak_rss_mib']:.0f}", ours["device"])
        )
        if ref:
            rows.append(
                (
                    "transformers generate (PyTorch)",
                    f"{ref['new_tokens_per_s']:.0f}",
                    f"{ref['peak_rss_mib']:.0f}",
                    ref["device"],
                )
            )
        print(table(rows))
        if ref:
            print(f"\nspeed-up over PyTorch: {ours['new_tokens_per_s'] / ref['new_tokens_per_s']:.2f}x")
        if args.peak_gbps:
            bound = args.batch * args.peak_gbps * 1e9 / decode_bytes_per_step(model_config(args), args)
            print(
                f"share of the weight + KV streaming bound ({bound:,.0f} new tokens/s at {args.peak_gbps:g} GB/s): "
                f"{ours['new_tokens_per_s'] / bound:.1%}"
            )


if __name__ == "__main__":
    main()
