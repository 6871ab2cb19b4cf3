"""Stage `grpo`: reinforcement learning with verifiable rewards on the SFT model -> data/policy/.

The model it starts from is the preference stage's (data/preferred: the SFT model itself when
`preference.steps` is 0); with `grpo.prompt_filter: pass_rate` its prompts are only those whose pass
rate in data/samples.jsonl lies strictly between 0 and 1.

Prompts are the training traces' (data/train.jsonl, already decontaminated
against the eval set) with their known final answers; rewards are
`reasoning.rewards` (weights in params `grpo.rewards`, user rewards in
`grpo.user_rewards`); the learner is `training.grpo`. `grpo.steps: 0` copies
the SFT model unchanged, so `predict` always reads the policy. Logs each step
with dvclive (dvclive/grpo/), checkpoints with orbax into
data/grpo_checkpoints/ (a persistent out: an interrupted `dvc repro`
resumes), and writes data/policy/grpo_info.json: the run's params, its reward
curve and the sha256 of the SFT model it started from.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import jax
import numpy as np

from reasoning.rewards import RewardError, RewardSet, Rollout
from stages import live, paths
from stages.common import (
    StageError,
    atomic_path,
    load_params,
    load_tokenizer,
    param_error,
    read_checked_jsonl,
    read_jsonl,
    run_stage,
    sha256_tree,
    validate,
    write_json,
)
from training import chat
from training import tokenizer as tokenizers_io
from training.cpu_tuning import configure_host_cpu
from training.grpo import GRPOConfig, GRPOResult, Prompt, grpo
from training.hf_io import CheckpointError, read_config, save_trained
from training.host_memory import reuse_freed_memory
from training.loop import MeshError, NonFiniteLoss, check_devices

LEARNER_KEYS = set(GRPOConfig.__dataclass_fields__) - {"seed", "mesh_data", "mesh_fsdp"}


def grpo_config(params: dict) -> GRPOConfig:
    """The learner's config: params `grpo`, the seed of `base`, the mesh of `train` (the same devices)."""
    p = params["grpo"]
    mesh = params["train"]["mesh"]
    return GRPOConfig(
        seed=params["base"]["seed"],
        mesh_data=mesh["data"],
        mesh_fsdp=mesh["fsdp"],
        **{k: v for k, v in p.items() if k in LEARNER_KEYS},
    )


def check_params(params: dict, root: Path, vocab_size: int) -> None:
    """Refuse, before anything is written, params with which RL cannot run or can learn nothing
    (the schema checks each value alone; these are about what they mean together, or for this model)."""
    p = params["grpo"]
    if not any(p["rewards"].values()) and not any(p["user_rewards"].values()):
        raise param_error(
            "grpo",
            "rewards",
            root=root,
            message=(
                "every weight is 0 and no grpo.user_rewards weighs anything: every rollout would score 0 and RL "
                "would learn nothing (give a reward a weight, or set grpo.steps: 0)"
            ),
        )
    if p["top_k"] == 1:
        raise param_error(
            "grpo",
            "top_k",
            root=root,
            message=(
                "1 is greedy decoding: every completion of a group would be the same and no group would have a "
                "signal (0 turns top-k off)"
            ),
        )
    if p["top_k"] > vocab_size:
        raise param_error(
            "grpo",
            "top_k",
            root=root,
            message=(
                f"{p['top_k']} is more than the {vocab_size} tokens of {paths.PREFERRED}'s vocabulary (0 turns top-k off)"
            ),
        )


def reward_set(params: dict, root: Path) -> RewardSet:
    """The weighted rewards of params `grpo`; user reward modules are found from the repository root."""
    p = params["grpo"]
    judge = None
    if p["rewards"].get("judge"):
        from stages.judge import make_judge  # the judge's backend only when its reward counts

        judge = make_judge(params, root)
    try:
        return RewardSet(
            weights=p["rewards"],
            user=p["user_rewards"],
            rel_tolerance=params["evaluate"]["rel_tolerance"],
            partial_within=params["evaluate"]["partial_within"],
            overlength_buffer=p["overlength_buffer"],
            search_path=[root],
            working_credit=p.get("working_credit", "share"),
            judge=judge,
        )
    except RewardError as err:
        raise param_error("grpo", "user_rewards", message=err, root=root) from None


def check_rewards(rewards: RewardSet, record: dict, max_tokens: int, root: Path) -> None:
    """Score a record's own target completion once, so a reward that raises or returns NaN stops the
    stage before anything is written."""
    completion = chat.render_completion(record["steps"], record["final_answer"]).removesuffix(chat.END_OF_TURN)
    try:
        rewards.score(Rollout(record["prompt"], completion, record, 0, False, max_tokens))
    except RewardError as err:
        raise param_error("grpo", "user_rewards", message=err, root=root) from None


def filter_prompts(params: dict, records: list[dict], root: Path) -> list[dict]:
    """The training records RL draws prompts from: all of them, or with `grpo.prompt_filter: pass_rate` those
    whose pass rate in data/samples.jsonl lies strictly between 0 and 1 (their groups carry signal from the
    first step; a prompt never sampled is left out). Prints the share kept."""
    if params["grpo"].get("prompt_filter", "none") == "none":
        return records
    path = root / paths.SAMPLES
    samples = read_jsonl(path, schema="samples") if path.is_file() and path.read_bytes().strip() else []
    mixed = {s["id"] for s in samples if 0.0 < s["pass_rate"] < 1.0}
    kept = [r for r in records if r["id"] in mixed]
    if not kept:
        raise param_error(
            "grpo",
            "prompt_filter",
            root=root,
            message=(
                f"pass_rate: none of the {len(samples)} prompts in {paths.SAMPLES} has a pass rate strictly between "
                f"0 and 1 (sample more: samples.prompts, samples.completions)"
            ),
        )
    print(
        f"grpo: prompt_filter pass_rate kept {len(kept)} of {len(samples)} sampled prompts "
        f"({len(kept) / len(samples):.0%}) of {len(records)} training prompts"
    )
    return kept


def curve_summary(history: list[dict]) -> dict:
    """The reward curve in a few numbers: first and last step, and the means of its first and last tenth."""
    if not history:
        return {}
    rewards = [row["reward_mean"] for row in history]
    tenth = max(1, len(rewards) // 10)
    return {
        "first": rewards[0],
        "last": rewards[-1],
        "first_tenth_mean": float(np.mean(rewards[:tenth])),
        "last_tenth_mean": float(np.mean(rewards[-tenth:])),
        "zero_variance_share_mean": float(np.mean([row["zero_variance_share"] for row in history])),
    }


def make_reward_fn(rewards: RewardSet, tok, max_new_tokens: int):
    """The learner's reward function: a completion's tokens decoded (special tokens kept, as the format
    rewards read them) and scored by `rewards` with its prompt's record."""

    def reward_fn(prompt: Prompt, tokens: np.ndarray, n: int, truncated: bool) -> tuple[float, dict]:
        completion = tok.decode(tokens.tolist(), skip_special_tokens=False)
        return rewards.score(Rollout(prompt.text, completion, prompt.record, n, truncated, max_new_tokens))

    return reward_fn


def run(params: dict, root: Path = Path(".")) -> GRPOResult | None:
    """RL on `root`'s SFT model with its training prompts; write the policy's HF directory and dvclive curves."""
    cfg = grpo_config(params)
    if cfg.steps == 0:
        live.pass_through(
            root / paths.PREFERRED,
            root / paths.POLICY,
            root / paths.GRPO_LIVE,
            root / paths.GRPO_CHECKPOINTS,
            curve="reward_mean",
        )
        print(f"grpo: steps 0, {paths.PREFERRED} passed through unchanged -> {paths.POLICY}")
        return None
    model_dir = root / paths.PREFERRED
    try:
        check_params(params, root, read_config(model_dir).vocab_size)
    except CheckpointError as err:
        raise StageError(str(err)) from None
    try:
        check_devices(cfg)
    except MeshError as err:
        if err.key == "mesh":
            raise param_error("train", "mesh", message=err, root=root) from None
        raise param_error("grpo", "prompts_per_step", message=f"with grpo.group_size, {err}", root=root) from None
    rewards = reward_set(params, root)
    records = filter_prompts(params, read_checked_jsonl(root / paths.TRAIN, "trace", root / paths.TRAIN_MANIFEST), root)
    check_rewards(rewards, records[0], cfg.max_new_tokens, root)
    tok = load_tokenizer(model_dir, hint="the model directory must hold the tokenizer it was trained with")
    model, spec = live.load_learner(params, "grpo", model_dir, root)
    encoded = tok.encode_batch([chat.render_prompt(r["prompt"]) for r in records], add_special_tokens=False)
    prompts = [Prompt(e.ids, r["prompt"], r) for e, r in zip(encoded, records)]

    print(
        f"grpo: {cfg.steps} steps of {cfg.prompts_per_step} prompts × {cfg.group_size} completions "
        f"(≤ {cfg.max_new_tokens} tokens) from {len(prompts)} training prompts; rewards {', '.join(rewards.parts)}; "
        f"on {jax.device_count()} {jax.devices()[0].platform} device(s)"
    )
    checkpoints = root / paths.GRPO_CHECKPOINTS
    with live.curves(root / paths.GRPO_LIVE, checkpoints) as on_log:
        progress = live.progress(cfg.steps, "grpo")
        try:
            result = grpo(
                model,
                prompts,
                make_reward_fn(rewards, tok, cfg.max_new_tokens),
                cfg,
                eos_ids=tokenizers_io.stop_ids(tok),
                pad_id=tok.token_to_id("<pad>") or 0,
                checkpoint_dir=checkpoints,
                on_log=on_log,
                progress=progress,
            )
        except NonFiniteLoss as err:
            raise StageError(f"{paths.POLICY}: RL diverged: {err}") from None
        except RewardError as err:
            raise param_error("grpo", "user_rewards", message=err, root=root) from None

        # Inside the curves' block: they replace the last good ones only once the policy is written too.
        info = {
            "sft_model": {"path": paths.PREFERRED.as_posix(), "sha256": sha256_tree(model_dir)},
            "params": params["grpo"],
            "steps": cfg.steps,
            "reward_curve": curve_summary(result.history),
            # the curve without its wall-clock columns: same params, same bytes
            "history": [{k: v for k, v in row.items() if "per_second" not in k} for row in result.history],
        }
        with atomic_path(root / paths.POLICY) as out:
            save_trained(model, spec, out, model_dir, base_model=paths.PREFERRED.as_posix())
            shutil.copyfile(model_dir / paths.TRAINING_INFO.name, out / paths.TRAINING_INFO.name)
            validate(info, "grpo_info", str(paths.GRPO_INFO))  # what evidence will read, checked where it is made
            write_json(out / paths.GRPO_INFO.name, info)
    live.finished(checkpoints)
    if result.resumed_from:
        print(f"grpo: resumed from the checkpoint of step {result.resumed_from} in {paths.GRPO_CHECKPOINTS}")
    curve = info["reward_curve"]
    print(f"grpo: mean reward {curve['first']:.3f} -> {curve['last']:.3f} -> {paths.POLICY}")
    return result


def main() -> None:
    reuse_freed_memory()  # before JAX runs a program (training/host_memory.py)
    configure_host_cpu()  # XLA:CPU set up for decoding (training/cpu_tuning.py)
    run(load_params())


if __name__ == "__main__":
    run_stage(main)
