"""Stage `predict`: greedy generation over every eval item -> data/predictions.jsonl.

Items are batched in order of prompt length, so each batch shares a prompt
bucket; records are written back in eval-set order.
"""

from __future__ import annotations

import time
from pathlib import Path

import jax
from tqdm import tqdm

from reasoning.answers import parse_completion
from stages import paths
from stages.common import StageError, load_params, load_tokenizer, read_jsonl, run_stage, write_jsonl
from training import chat
from training import tokenizer as tokenizers_io
from training.hf_io import CheckpointError, load_pretrained, read_config
from training.sampler import Sampler, SamplingConfig


def stop_ids(tok) -> list[int]:
    """Token ids that end the model's turn: <end_of_turn>, and <eos> when the vocabulary has it."""
    return [tokenizers_io.token_id(tok, chat.END_OF_TURN)] + [i for i in [tok.token_to_id("<eos>")] if i is not None]


def predict(items: list[dict], model_dir: Path, batch_size: int, max_new_tokens: int, dtype: str) -> list[dict]:
    try:
        vocab_size = read_config(model_dir).vocab_size
    except CheckpointError as err:
        raise StageError(str(err)) from None
    tok = load_tokenizer(model_dir, hint="the model directory must hold the tokenizer it was trained with")
    if tok.get_vocab_size() > vocab_size:  # ids past the embedding would be silently clamped, not refused
        raise StageError(f"{model_dir / 'tokenizer.json'}: vocab_size: the tokenizer has {tok.get_vocab_size()} "
                         f"tokens, the model ({model_dir / 'config.json'}) only {vocab_size}")
    try:
        model = load_pretrained(model_dir, dtype=dtype, param_dtype=dtype)
    except CheckpointError as err:
        raise StageError(str(err)) from None
    sampler = Sampler(model, eos_ids=stop_ids(tok), pad_id=tok.token_to_id("<pad>") or 0)
    cfg = SamplingConfig(max_new_tokens=max_new_tokens)
    prompts = [tok.encode(chat.render_prompt(item["prompt"]), add_special_tokens=False).ids for item in items]
    order = sorted(range(len(items)), key=lambda i: (len(prompts[i]), i))
    results: dict[int, dict] = {}
    new_tokens, start = 0, time.perf_counter()
    with tqdm(total=len(items), desc="predict", unit="item", dynamic_ncols=True) as bar:
        for at in range(0, len(order), batch_size):
            idx = order[at : at + batch_size]
            gen = sampler([prompts[i] for i in idx], cfg)
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


def run(params: dict, root: Path = Path(".")) -> list[dict]:
    """Predict every item of `root`'s eval set with its model; write and return the predictions."""
    p = params["predict"]
    items = read_jsonl(root / paths.EVALSET, schema="eval_item")
    records = predict(items, root / paths.POLICY, p["batch_size"], p["max_new_tokens"], params["model"]["compute_dtype"])
    write_jsonl(root / paths.PREDICTIONS, records)
    n_trunc = sum(r["truncated"] for r in records)
    n_ok = sum(r["format_ok"] for r in records)
    print(f"predict: {len(records)} items on {jax.devices()[0].platform}, {n_ok} well-formed, {n_trunc} truncated -> {paths.PREDICTIONS}")
    return records


def main() -> None:
    run(load_params())


if __name__ == "__main__":
    run_stage(main)
