"""Write a randomly initialised Hugging Face checkpoint of a preset's real shape.

    python scripts/make_random_checkpoint.py --preset gemma3-1b --out /tmp/g3-1b --check-load
    python scripts/make_random_checkpoint.py --preset gemma2-2b --layers 2 --vocab 4096 --out /tmp/g2-ci

The directory (config.json, generation_config.json, safetensors, tokenizer.json)
is what `model.checkpoint` expects, so the gemma presets, the loader's memory
and speed, and the exported format can be exercised without downloading
weights. The weights are random in our initialisers' distributions and go through
`save_pretrained`; host memory holds the model plus one shard (or the one file).
Without `--tokenizer`, a small byte-level BPE tokenizer is written with Gemma's
special tokens at Gemma's ids (`<pad>` 0, `<eos>` 1, `<bos>` 2, `<unk>` 3,
`<start_of_turn>`/`<end_of_turn>` at 105/106 for Gemma 3, 106/107 for Gemma 2).
`--check-load` then loads the directory back in a fresh process and prints the
load time and peak resident memory.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from training.config import FULL, PRESET_SHAPES, SLIDING, GemmaConfig, gemma3_layer_types  # noqa: E402

# Gemma's chat-turn token ids per family (the rest of the specials sit at 0..3 in both).
TURN_IDS = {2: (106, 107), 3: (105, 106)}
TOKENIZER_VOCAB = 1024  # the generated tokenizer's size (or the model's vocab, if smaller)
CORPUS = [
    "Think step by step inside <reasoning></reasoning>, then give only the final answer inside <answer></answer>.",
    "A train travels 120 km in 2 hours. What is its average speed? 120 / 2 = 60. The answer is 60 km/h.",
    "What is 15% of 240? 240 * 0.15 = 36. Next in the sequence 2, 4, 8, 16: each term doubles, so 32.",
    "Reverse the word 'gemma': a, m, m, e, g. Is 7 a prime number? Yes. 3/4 + 1/8 = 7/8.",
]


def preset_config(preset: str, layers: int | None, vocab: int | None) -> GemmaConfig:
    """The preset's published shape, optionally with fewer/more layers (same local:global pattern) or another vocab."""
    cfg = PRESET_SHAPES[preset]()
    if layers is not None:
        if cfg.family == 3:
            layer_types = gemma3_layer_types(layers)
        else:
            layer_types = tuple(SLIDING if (i + 1) % 2 else FULL for i in range(layers))
        cfg = cfg.replace(num_hidden_layers=layers, layer_types=layer_types)
    if vocab is not None:
        cfg = cfg.replace(vocab_size=vocab)
    return cfg


def write_tokenizer(directory: Path, cfg: GemmaConfig) -> None:
    """A small byte-level BPE with Gemma's special tokens at Gemma's ids (deterministic)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    start, end = TURN_IDS[cfg.family]
    specials = ["<pad>", "<eos>", "<bos>", "<unk>"]
    specials += [f"<unused{i}>" for i in range(start - len(specials))] + ["<start_of_turn>", "<end_of_turn>"]
    size = min(TOKENIZER_VOCAB, cfg.vocab_size)
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    if size < len(specials) + len(alphabet):
        raise SystemExit(f"--vocab {cfg.vocab_size}: a generated tokenizer needs >= {len(specials) + len(alphabet)}")
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=size, special_tokens=specials, initial_alphabet=alphabet, show_progress=False
    )
    tok.train_from_iterator(CORPUS * 4, trainer=trainer)
    assert tok.token_to_id("<end_of_turn>") == end and tok.get_vocab_size() <= cfg.vocab_size
    tok.save(str(directory / "tokenizer.json"))
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": "<bos>",
        "eos_token": "<eos>",
        "pad_token": "<pad>",
        "unk_token": "<unk>",
        "add_bos_token": True,
        "model_max_length": cfg.max_position_embeddings,
    }
    (directory / "tokenizer_config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def copy_tokenizer(directory: Path, path: Path, cfg: GemmaConfig) -> None:
    from tokenizers import Tokenizer

    try:
        size = Tokenizer.from_file(str(path)).get_vocab_size()
    except Exception as err:  # tokenizers raises a plain Exception for a bad file
        raise SystemExit(f"{path}: not a tokenizer.json ({err})") from None
    if size > cfg.vocab_size:
        raise SystemExit(f"{path}: {size} tokens, more than the model's vocab_size {cfg.vocab_size}")
    shutil.copyfile(path, directory / "tokenizer.json")


def peak_rss_gib() -> float:
    """This process's peak resident memory. VmHWM, not ru_maxrss: a child started by fork + exec
    inherits its parent's ru_maxrss, which would hide what loading alone costs."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2**20  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux (bytes on macOS)


def random_model(cfg: GemmaConfig, dtype: str, seed: int):
    """Our model with random weights, filled one tensor at a time from numpy.

    The distributions are our initialisers' (embedding N(0, 1/hidden), kernels
    N(0, 1/fan_in), norm weights 0, i.e. scale 1). Running the initialisers
    themselves on CPU is slow for the 1B shape and their random-bit temporaries
    peak at ~3 copies of the weights; filling the abstract model peaks at one
    copy plus the largest tensor.
    """
    import jax
    import jax.numpy as jnp
    import ml_dtypes
    import numpy as np
    from flax import nnx

    from training.model import Gemma

    np_dtype = np.dtype(ml_dtypes.bfloat16) if dtype == "bfloat16" else np.dtype(dtype)
    rng = np.random.default_rng(seed)
    model = nnx.eval_shape(lambda: Gemma(cfg, rngs=nnx.Rngs(0), dtype=dtype, param_dtype=dtype))

    def fill(path, leaf):
        name = jax.tree_util.keystr(path)
        if "kernel" in name:
            std = leaf.shape[0] ** -0.5
        elif "embed_tokens" in name:
            std = cfg.hidden_size**-0.5
        else:
            return jnp.zeros(leaf.shape, leaf.dtype)  # RMSNorm weights: scale (1 + 0)
        out = np.empty(leaf.shape, np_dtype)
        rows = max(1, 2**24 // leaf.shape[-1])  # ~64 MiB of float32 at a time
        for i in range(0, leaf.shape[0], rows):
            out[i : i + rows] = rng.standard_normal(out[i : i + rows].shape, np.float32) * std
        return jnp.asarray(out)

    nnx.update(model, jax.tree_util.tree_map_with_path(fill, nnx.state(model, nnx.Param)))
    return model


def write(args: argparse.Namespace) -> None:
    from training.hf_io import save_pretrained

    cfg = preset_config(args.preset, args.layers, args.vocab)
    out = Path(args.out)
    if out.exists() and any(out.iterdir()):
        raise SystemExit(f"{out}: exists and is not empty")
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        start = time.perf_counter()
        model = random_model(cfg, args.dtype, args.seed)  # in the export dtype: no float32 detour
        init_s = time.perf_counter() - start
        shard = args.max_shard_mb * 2**20 if args.max_shard_mb else None
        save_pretrained(model, tmp, dtype=args.dtype, max_shard_bytes=shard)
        del model
        if args.tokenizer:
            copy_tokenizer(tmp, Path(args.tokenizer), cfg)
        else:
            write_tokenizer(tmp, cfg)
        out.mkdir(parents=True, exist_ok=True)
        out.rmdir()
        tmp.rename(out)  # all or nothing
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    size = sum(p.stat().st_size for p in out.glob("*.safetensors")) / 2**30
    print(
        f"wrote {out}: {args.preset} shape, {cfg.num_hidden_layers} layers, vocab {cfg.vocab_size}, "
        f"{cfg.num_params() / 1e6:.1f}M params, {args.dtype}, {size:.2f} GiB of safetensors "
        f"(init {init_s:.1f}s, total {time.perf_counter() - start:.1f}s, peak RSS {peak_rss_gib():.2f} GiB)"
    )


def check_load(directory: Path, dtype: str) -> dict:
    """Load in this (fresh) process and measure: seconds, peak RSS before and after."""
    import jax

    from training.hf_io import load_pretrained

    jax.numpy.zeros(1).block_until_ready()  # backend up before the clock starts
    before = peak_rss_gib()
    start = time.perf_counter()
    model = load_pretrained(directory, dtype=dtype, param_dtype=dtype)
    jax.block_until_ready(jax.tree.leaves(model))
    return {
        "load_s": round(time.perf_counter() - start, 2),
        "rss_before_gib": round(before, 3),
        "peak_rss_gib": round(peak_rss_gib(), 3),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=sorted(PRESET_SHAPES), required=True)
    parser.add_argument("--out", required=True, help="directory to create (must not exist or be empty)")
    parser.add_argument("--layers", type=int, help="number of layers (default: the preset's)")
    parser.add_argument("--vocab", type=int, help="vocabulary size (default: the preset's)")
    parser.add_argument("--dtype", choices=["bfloat16", "float32"], default="bfloat16")
    parser.add_argument("--tokenizer", help="a tokenizer.json to copy in (default: write a small BPE one)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-shard-mb", type=int, default=0, help="shard the weights (default: one file)")
    parser.add_argument("--check-load", action="store_true", help="load it back in a fresh process and report")
    parser.add_argument("--load-only", action="store_true", help=argparse.SUPPRESS)  # the --check-load child
    args = parser.parse_args(argv)
    if args.load_only:
        print(json.dumps(check_load(Path(args.out), args.dtype)))
        return
    write(args)
    if args.check_load:
        child = [sys.executable, __file__, "--preset", args.preset, "--out", args.out, "--dtype", args.dtype]
        result = subprocess.run([*child, "--load-only"], capture_output=True, text=True)
        if result.returncode:
            raise SystemExit(f"loading {args.out} failed:\n{result.stderr.strip()}")
        stats = json.loads(result.stdout.strip().splitlines()[-1])
        print(
            f"loaded {args.out} with load_pretrained in {stats['load_s']}s; peak RSS {stats['peak_rss_gib']} GiB "
            f"({stats['rss_before_gib']} GiB before loading)"
        )


if __name__ == "__main__":
    main()
