"""Stage `predict@<set>`: greedy generation over every item of one eval set -> data/predictions/<set>.jsonl.

    python -m stages.predict <set>      # a name from params evaluate.sets (dvc.yaml runs one per set)

Items are batched in order of prompt length, so each batch shares a prompt
bucket; records are written back in eval-set order.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import jax
from tqdm import tqdm

from reasoning.answers import parse_completion
from stages import evalsets, paths
from stages.common import StageError, load_params, load_tokenizer, run_stage, write_jsonl
from training import chat
from training import tokenizer as tokenizers_io
from training.cpu_tuning import configure_host_cpu
from training.hf_io import CheckpointError, load_pretrained, read_config
from training.host_memory import reuse_freed_memory
from training.sampler import Sampler, SamplingConfig


def predict(
    items: list[dict],
    model_dir: Path,
    batch_size: int,
    max_new_tokens: int,
    dtype: str,
    temperature: float = 0.0,
    seed: int = 0,
) -> list[dict]:
    """One prediction per item, in item order: greedy, or sampled at `temperature` (batch keys from `seed`)."""
    try:
        vocab_size = read_config(model_dir).vocab_size
    except CheckpointError as err:
        raise StageError(str(err)) from None
    tok = load_tokenizer(model_dir, hint="the model directory must hold the tokenizer it was trained with")
    if tok.get_vocab_size() > vocab_size:  # ids past the embedding would be silently clamped, not refused
        raise StageError(
            f"{model_dir / 'tokenizer.json'}: vocab_size: the tokenizer has {tok.get_vocab_size()} "
            f"tokens, the model ({model_dir / 'config.json'}) only {vocab_size}"
        )
    try:
        model = load_pretrained(model_dir, dtype=dtype, param_dtype=dtype)
    except CheckpointError as err:
        raise StageError(str(err)) from None
    sampler = Sampler(model, eos_ids=tokenizers_io.stop_ids(tok), pad_id=tok.token_to_id("<pad>") or 0)
    cfg = SamplingConfig(max_new_tokens=max_new_tokens, temperature=temperature)
    key = jax.random.key(seed)
    prompts = [tok.encode(chat.render_prompt(item["prompt"]), add_special_tokens=False).ids for item in items]
    order = sorted(range(len(items)), key=lambda i: (len(prompts[i]), i))
    results: dict[int, dict] = {}
    new_tokens, start = 0, time.perf_counter()
    with tqdm(total=len(items), desc="predict", unit="item", dynamic_ncols=True) as bar:
        for at in range(0, len(order), batch_size):
            idx = order[at : at + batch_size]
            gen = sampler([prompts[i] for i in idx], cfg, jax.random.fold_in(key, at))
            for row, i in enumerate(idx):
                n = int(gen.lengths[row])
                completion = tok.decode(gen.tokens[row, :n].tolist(), skip_special_tokens=False)
                results[i] = {
                    "id": items[i]["id"],
                    "completion": completion,
                    **parse_completion(completion),
                    "n_tokens": n,
                    "truncated": bool(gen.truncated[row]),
                }
                new_tokens += n
            bar.update(len(idx))
            bar.set_postfix(tok_s=f"{new_tokens / (time.perf_counter() - start):.0f}", refresh=False)
    return [results[i] for i in range(len(items))]


def run(params: dict, name: str, root: Path = Path(".")) -> list[dict]:
    """Predict every item of eval set `name` with `root`'s model; write and return the predictions."""
    p = params["predict"]
    evalset = evalsets.named(params, name, root)
    items = evalsets.asked_items(evalset, root)  # each prompt after the set's few-shot exemplars, if it has any
    model_dir = root / paths.POLICY
    records = predict(items, model_dir, p["batch_size"], p["max_new_tokens"], params["model"]["compute_dtype"])
    out = paths.predictions(name)
    write_jsonl(root / out, records)
    n_trunc = sum(r["truncated"] for r in records)
    n_ok = sum(r["format_ok"] for r in records)
    print(
        f"predict {name}: {len(records)} items on {jax.devices()[0].platform}, {n_ok} well-formed, {n_trunc} truncated -> {out}"
    )
    return records


def main() -> None:
    reuse_freed_memory()  # before JAX runs a program (training/host_memory.py)
    configure_host_cpu()  # XLA:CPU set up for decoding (training/cpu_tuning.py)
    run(load_params(), evalsets.main_argument(sys.argv, "predict"))


if __name__ == "__main__":
    run_stage(main)
