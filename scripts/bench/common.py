"""What every benchmark shares: timing, memory, the model's shape and FLOPs, tables, and running a side.

Each side (ours, a reference engine) runs in its own subprocess, so its peak memory (max RSS) is its own;
it prints its figures as one JSON line, which `run_side` reads back.
"""

from __future__ import annotations

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

ROOT = Path(__file__).resolve().parents[2]
PRESETS = ["tiny", "gemma3-270m", "gemma3-1b", "gemma2-2b"]


def add_model_arguments(parser, *, dtype: bool = True) -> None:
    """The flags that name the model (and the machine's threads) for every benchmark."""
    parser.add_argument("--preset", default="tiny", choices=PRESETS)
    parser.add_argument(
        "--checkpoint",
        help="a Hugging Face model directory: every side loads its weights (its config.json gives the shape, "
        "--preset is then unused)",
    )
    parser.add_argument("--vocab", type=int, default=1024, help="tiny preset vocabulary")
    parser.add_argument("--layers", type=int, default=4, help="tiny preset layers")
    if dtype:
        parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)), help="PyTorch's threads")


def add_repeats_argument(parser, default: int) -> None:
    parser.add_argument("--repeats", type=int, default=default, help=f"timed repeats (default {default})")


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

    if args.checkpoint:
        from training.hf_io import read_config

        return read_config(Path(args.checkpoint))
    if args.preset == "tiny":
        return configs.tiny(args.vocab, num_hidden_layers=args.layers)
    return configs.PRESET_SHAPES[args.preset]()


def model_name(args) -> str:
    return args.checkpoint or f"{args.preset}, random weights"


def matmul_params(cfg) -> int:
    """The parameters every token multiplies (the tied LM head included): all but the norms' weights."""
    return cfg.num_params() - cfg.num_hidden_layers * 6 * cfg.hidden_size


def attended_spans(cfg, length: float) -> list[float]:
    """Per layer, how many keys a query at `length` reads: all of them, or a sliding layer's window."""
    from training.config import SLIDING

    window = cfg.sliding_window or length
    return [min(length, window) if kind == SLIDING else length for kind in cfg.layer_types]


def attention_flops(cfg, span: float) -> float:
    """QKᵀ and PV of one query over `span` keys, all heads."""
    return 2 * 2 * cfg.num_attention_heads * cfg.head_dim * span


def train_flops_per_token(cfg, seq_len: int) -> dict[str, float]:
    """A training step's FLOPs per token in both conventions: 6N (N: the matmul parameters, the tied LM
    head included) and 6N + attention (QKᵀ and PV: causal at half, sliding layers at their window)."""
    attn = sum(attention_flops(cfg, span) * (0.5 if span == seq_len else 1.0) for span in attended_spans(cfg, seq_len))
    n = matmul_params(cfg)
    return {"6N": 6 * n, "6N + attention": 3 * (2 * n + attn)}


def fill_random(model) -> None:
    """Random weights (adapters included) for an abstract model, each tensor drawn by a small compiled
    program: host memory holds the weights plus one tensor's draw, where one program for the whole init
    holds every draw at once (and eagerly a 2B model takes minutes). One program a distinct shape and
    dtype: the layers share theirs, so a model compiles a handful, not one a tensor."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    leaves, treedef = jax.tree.flatten(nnx.state(model, nnx.Param))
    key = jax.random.key(0)
    draw = jax.jit(lambda k, s, d: (0.02 * jax.random.normal(k, s, jnp.float32)).astype(d), static_argnums=(1, 2))
    filled = [draw(jax.random.fold_in(key, i), leaf.shape, leaf.dtype) for i, leaf in enumerate(leaves)]
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


def bench_train_config(args, learning_rate: float):
    """The SFT config (optimizer, schedule, batch shape) every side that steps through `training.loop`'s
    optimizer builds: ours, and Tunix's PeftTrainer given the same fields."""
    from training.trainer import TrainConfig

    return TrainConfig(steps=100, batch_size=args.batch, seq_len=args.seq, learning_rate=learning_rate, warmup_steps=10)


def jax_train_step(args, graphdef, params, frozen, learning_rate: float, compile_only: bool = False):
    """Our compiled training step on a random batch and what runs it once, waiting for its loss and returning
    its metrics (with `compile_only`, abstract params: the step is compiled, not run)."""
    import jax

    from training.trainer import make_optimizer, make_train_step

    tc = bench_train_config(args, learning_rate)
    tx = make_optimizer(tc)
    opt_state = jax.eval_shape(tx.init, params) if compile_only else tx.init(params)
    batch = random_batch(args, model_config(args).vocab_size)
    compiled = make_train_step(graphdef, tx, tc).lower(params, opt_state, frozen, batch, np.int32(0)).compile()
    holder = {"p": params, "o": opt_state}

    def one():
        holder["p"], holder["o"], m = compiled(holder["p"], holder["o"], frozen, batch, np.int32(0))
        jax.block_until_ready(m["loss"])
        return m

    return compiled, one


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


def torch_step_rate(args, torch, model, trainable, opt, device, device_name, sync, warmup: int = 2) -> dict:
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

    t = median_seconds(one, args.repeats, warmup=warmup)
    return {
        "tokens_per_s": args.batch * args.seq / t,
        "peak_rss_mib": peak_rss_mib(),
        "peak_device_mib": torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else None,
        "device": device_name,
    }


def table(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |" for r in rows]
    lines.insert(1, "| " + " | ".join("-" * w for w in widths) + " |")
    return "\n".join(lines)


def run_side(argv: list[str], side: str, code: Path | None = None, timeout: float | None = None) -> dict:
    """One side in a subprocess (`argv` begins with the subcommand); with `code`, that checkout's packages
    are imported instead of this one's."""
    extra = ["--code", str(code)] if code else []
    return run_json([sys.executable, "-m", "scripts.bench", *argv, "--side", side, *extra], side, timeout=timeout)


def run_json(
    cmd: list[str], what: str, stdin: str | None = None, env: dict | None = None, timeout: float | None = None
) -> dict:
    """Run `cmd` from the repository root and read the figures it printed as a line of JSON."""
    proc = subprocess.run(
        cmd, input=stdin, capture_output=True, text=True, check=False, cwd=ROOT, env=env, timeout=timeout
    )
    if proc.returncode != 0:
        # an engine's child process may die first: its error can lie far above the parent's traceback
        causes = [line for line in proc.stderr.splitlines() if "Error" in line][:5]
        raise SystemExit(f"bench: the {what} side failed:\n{proc.stderr[-3000:]}\nfirst errors:\n" + "\n".join(causes))
    # the last JSON line: an engine may log to stdout after the figures (vLLM does, shutting down)
    return json.loads([line for line in proc.stdout.splitlines() if line.startswith("{")][-1])
