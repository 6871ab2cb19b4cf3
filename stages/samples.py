"""Stage `samples`: the SFT model's own completions of its training prompts, scored -> data/samples.jsonl.

For each of the first `samples.prompts` training prompts (data/train.jsonl, in file order) the SFT model
(data/model) samples `samples.completions` completions with our sampler (training/sampler.py; keys from
`base.seed`), and with `samples.include_greedy` its greedy one too. Each completion is scored by the
reward parts `grpo` uses (its weights and user rewards: `stages.grpo.reward_set`) and checked for
correctness as evaluate checks it; a prompt's pass rate is the share of its sampled completions that are
right (the greedy one not counted). The file feeds the preference stage's pairs and `grpo.prompt_filter`.
Every record names the sha256 of the model that made it, so a stage reading it can tell a stale file.
`samples.prompts: 0` writes an empty file and loads nothing.
"""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np

from reasoning.rewards import RewardError, RewardSet, Rollout, correctness_reward
from stages import grpo as grpo_stage
from stages import paths
from stages.common import (
    StageError,
    load_params,
    load_tokenizer,
    param_error,
    read_checked_jsonl,
    run_stage,
    sha256_tree,
    write_jsonl,
)
from training import chat
from training import tokenizer as tokenizers_io
from training.cpu_tuning import configure_host_cpu
from training.hf_io import CheckpointError, load_pretrained
from training.host_memory import reuse_freed_memory
from training.sampler import Sampler, SamplingConfig


def completion_record(tok, tokens: np.ndarray, n: int, truncated: bool) -> dict:
    """A completion's text (up to its end of turn) and its token ids, the end of turn included when it ended."""
    kept = tokens[: n if truncated else n + 1]
    return {
        "text": tok.decode(tokens[:n].tolist(), skip_special_tokens=False),
        "tokens": [int(t) for t in kept],
        "n_tokens": int(n),
        "truncated": bool(truncated),
    }


def score(record: dict, completion: dict, rewards: RewardSet, evaluate: dict, max_tokens: int) -> dict:
    """The completion with its reward, each part's value and whether it is right."""
    rollout = Rollout(
        record["prompt"], completion["text"], record, completion["n_tokens"], completion["truncated"], max_tokens
    )
    total, parts = rewards.score(rollout)
    right = correctness_reward(rollout, evaluate["rel_tolerance"], evaluate["partial_within"]) == 1.0
    return {**completion, "reward": float(total), "parts": {k: float(v) for k, v in parts.items()}, "correct": right}


def pass_rate(completions: list[dict]) -> float:
    """The share of the sampled completions (not the greedy one) that are right."""
    sampled = [c for c in completions if not c["greedy"]]
    return sum(c["correct"] for c in sampled) / len(sampled) if sampled else 0.0


def sample_records(params: dict, root: Path) -> list[dict]:
    """Every prompt's scored completions, in training-file order."""
    p = params["samples"]
    rewards = grpo_stage.reward_set(params, root)
    records = read_checked_jsonl(root / paths.TRAIN, "trace", root / paths.TRAIN_MANIFEST)[: p["prompts"]]
    model_dir = root / paths.MODEL
    tok = load_tokenizer(model_dir, hint="the model directory must hold the tokenizer it was trained with")
    try:
        model = load_pretrained(model_dir, dtype=params["model"]["compute_dtype"])
    except CheckpointError as err:
        raise StageError(str(err)) from None
    model_sha = sha256_tree(model_dir)
    sampler = Sampler(model, eos_ids=tokenizers_io.stop_ids(tok), pad_id=tok.token_to_id("<pad>") or 0)
    sampling = SamplingConfig(p["max_new_tokens"], p["temperature"], p["top_k"], p["top_p"])
    greedy = SamplingConfig(p["max_new_tokens"])
    key, k, chunk = jax.random.key(params["base"]["seed"]), p["completions"], p["prompts_per_batch"]
    out = []
    print(
        f"samples: {k} completions{' + the greedy one' if p['include_greedy'] else ''} of {len(records)} "
        f"training prompts (≤ {p['max_new_tokens']} tokens, temperature {p['temperature']})"
    )
    for start in range(0, len(records), chunk):
        batch = records[start : start + chunk]
        prompts = tok.encode_batch([chat.render_prompt(r["prompt"]) for r in batch], add_special_tokens=False)
        ids = [e.ids for e in prompts]
        gen = sampler(ids, sampling, jax.random.fold_in(key, start // chunk), repeats=k)
        best = sampler(ids, greedy) if p["include_greedy"] else None
        for i, record in enumerate(batch):
            rows = [(gen, i * k + j, False) for j in range(k)] + ([(best, i, True)] if best is not None else [])
            completions = []
            for g, row, is_greedy in rows:
                c = completion_record(tok, g.tokens[row], int(g.lengths[row]), bool(g.truncated[row]))
                try:
                    completions.append(
                        {**score(record, c, rewards, params["evaluate"], p["max_new_tokens"]), "greedy": is_greedy}
                    )
                except RewardError as err:
                    raise param_error("grpo", "user_rewards", message=err, root=root) from None
            out.append(
                {
                    "id": record["id"],
                    "prompt": record["prompt"],
                    "model_sha256": model_sha,
                    "pass_rate": pass_rate(completions),
                    "completions": completions,
                }
            )
    return out


def run(params: dict, root: Path = Path(".")) -> list[dict]:
    """Write `root`'s data/samples.jsonl (empty when `samples.prompts` is 0); return its records."""
    records = sample_records(params, root) if params["samples"]["prompts"] else []
    write_jsonl(root / paths.SAMPLES, records)
    if records:
        rates = np.asarray([r["pass_rate"] for r in records])
        print(
            f"samples: mean pass rate {rates.mean():.3f}; {np.mean((rates > 0) & (rates < 1)):.0%} of prompts "
            f"between 0 and 1 -> {paths.SAMPLES}"
        )
    else:
        print(f"samples: samples.prompts is 0: {paths.SAMPLES} is empty")
    return records


def main() -> None:
    reuse_freed_memory()  # before JAX runs a program (training/host_memory.py)
    configure_host_cpu()  # XLA:CPU set up for decoding (training/cpu_tuning.py)
    run(load_params())


if __name__ == "__main__":
    run_stage(main)
