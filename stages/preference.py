"""Stage `preference`: preference optimisation (or rejection-sampling fine-tuning) of the SFT model on its own
scored samples -> data/preferred/.

Pairs come from data/samples.jsonl (the `samples` stage) by the rule `preference.pairs`:
`highest_vs_lowest` (the completion with the highest reward against the one with the lowest; a prompt
whose rewards all tie gives none) or `right_vs_wrong` (the right completion with the highest reward
against the wrong one with the lowest; a prompt with no right or no wrong completion gives none). The
greedy completion is a candidate when the samples hold one (`samples.include_greedy`). `rft` trains on
the best right completion of each prompt alone. The learner is `training.preference` on the shared loop
(mesh, orbax checkpoints in data/preference_checkpoints/, the non-finite stop, progress), with dvclive
curves in dvclive/preference/. With LoRA (`preference.lora`, or `model.lora` when that is null) the
reference is the SFT model with the adapters off. `preference.steps: 0` copies the SFT model unchanged,
so `grpo` always reads data/preferred. `preference.engine: tunix` trains dpo or orpo with Tunix's own
`DPOTrainer` instead (stages/tunix_preference.py), on the same pairs, with the same outputs.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

import jax
import numpy as np

from stages import live, paths, tunix_preference
from stages.common import (
    StageError,
    atomic_path,
    load_params,
    load_tokenizer,
    param_error,
    read_jsonl,
    run_stage,
    sha256_file,
    sha256_tree,
    write_json,
)
from training import chat
from training.hf_io import save_trained
from training.host_memory import reuse_freed_memory
from training.loop import MeshError, NonFiniteLoss, check_devices
from training.preference import Pair, PreferenceConfig, train_preference

LEARNER_KEYS = set(PreferenceConfig.__dataclass_fields__) - {"seed", "mesh_data", "mesh_fsdp"}


def preference_config(params: dict) -> PreferenceConfig:
    """The learner's config: params `preference`, the seed of `base`, the mesh of `train`."""
    mesh = params["train"]["mesh"]
    return PreferenceConfig(
        seed=params["base"]["seed"],
        mesh_data=mesh["data"],
        mesh_fsdp=mesh["fsdp"],
        **{k: v for k, v in params["preference"].items() if k in LEARNER_KEYS},
    )


# ---------------------------------------------------------------- pairs


def choose(completions: Sequence[dict], rule: str, loss: str) -> tuple[dict, ...] | None:
    """The (chosen, rejected) completions of one prompt by `rule` ((chosen,) for rft); None when there is none.

    Among equal rewards the completion that comes first in the file wins, so the pair is a pure function of
    the file."""
    by_reward = sorted(completions, key=lambda c: -c["reward"])  # stable: file order among ties
    right = [c for c in by_reward if c["correct"]]
    if loss == "rft":
        return (right[0],) if right else None
    if rule == "right_vs_wrong":
        wrong = [c for c in by_reward if not c["correct"]]
        if not right or not wrong:
            return None
        chosen, rejected = right[0], wrong[-1]
    else:  # highest_vs_lowest
        chosen, rejected = by_reward[0], by_reward[-1]
        if chosen["reward"] == rejected["reward"]:
            return None  # a tie says nothing about which is better
    if chosen["tokens"] == rejected["tokens"]:
        return None
    return chosen, rejected


def read_samples(root: Path, model_sha: str) -> list[dict]:
    """data/samples.jsonl, checked to be the SFT model's (a StageError naming the file otherwise)."""
    path = root / paths.SAMPLES
    if path.is_file() and not path.read_bytes().strip():
        raise StageError(f"{paths.SAMPLES}: no samples (samples.prompts is 0): preference training needs some")
    records = read_jsonl(path, schema="samples")
    for lineno, record in enumerate(records, start=1):
        if record["model_sha256"] != model_sha:
            raise StageError(
                f"{paths.SAMPLES}:{lineno}: model_sha256: made by another model "
                f"({record['model_sha256'][:12]}…, {paths.MODEL} is {model_sha[:12]}…): "
                f"run the samples stage again"
            )
    return records


def build_pairs(records: Sequence[dict], rule: str, loss: str) -> list[tuple[dict, tuple[dict, ...]]]:
    """(record, completions) of every prompt that gives a pair, in file order."""
    out = []
    for record in records:
        chosen = choose(record["completions"], rule, loss)
        if chosen is not None:
            out.append((record, chosen))
    return out


# ---------------------------------------------------------------- the stage


def last_row_summary(history: list[dict]) -> dict:
    """The first and last logged rows' loss, margin and pair accuracy (those present)."""
    keys = ("loss", "margin", "pair_accuracy", "logp_chosen", "logp_rejected", "nll_chosen")
    pick = lambda row: {k: row[k] for k in keys if k in row}
    return {"first": pick(history[0]), "last": pick(history[-1])} if history else {}


def run(params: dict, root: Path = Path(".")):
    """Preference training of `root`'s SFT model on its samples; write data/preferred and dvclive curves."""
    cfg = preference_config(params)
    if cfg.steps == 0:
        live.pass_through(
            root / paths.MODEL,
            root / paths.PREFERRED,
            root / paths.PREFERENCE_LIVE,
            root / paths.PREFERENCE_CHECKPOINTS,
            curve="loss",
        )
        print(f"preference: steps 0, {paths.MODEL} passed through unchanged -> {paths.PREFERRED}")
        return None
    tunix = params["preference"]["engine"] == "tunix"  # Tunix's DPOTrainer in .venv-tunix
    if tunix:
        tunix_preference.check(params, root)
    try:
        check_devices(cfg)
    except MeshError as err:
        if err.key == "mesh":
            raise param_error("train", "mesh", message=err, root=root) from None
        raise param_error("preference", "pairs_per_step", message=err, root=root) from None
    model_dir = root / paths.MODEL
    model_sha = sha256_tree(model_dir)
    rule = params["preference"]["pairs"]
    chosen = build_pairs(read_samples(root, model_sha), rule, cfg.loss)
    if not chosen:
        what = "a right completion" if cfg.loss == "rft" else f"a pair by preference.pairs {rule!r}"
        raise StageError(
            f"{paths.SAMPLES}: no prompt gives {what} (ties dropped): sample more "
            f"(samples.prompts, samples.completions) or change the rule"
        )
    tok = load_tokenizer(model_dir, hint="the model directory must hold the tokenizer it was trained with")
    if not tunix:
        model, spec = live.load_learner(params, "preference", model_dir, root)
    encoded = tok.encode_batch([chat.render_prompt(r["prompt"]) for r, _ in chosen], add_special_tokens=False)
    pairs = [Pair(e.ids, tuple(tuple(c["tokens"]) for c in cs)) for e, (_, cs) in zip(encoded, chosen)]
    source = "a right completion" if cfg.loss == "rft" else f"a pair ({rule})"
    print(
        f"preference: {cfg.steps} steps of {cfg.pairs_per_step} pairs, loss {cfg.loss}, from {len(pairs)} "
        f"prompts with {source}; on {jax.device_count()} {jax.devices()[0].platform} device(s)"
    )
    checkpoints = root / paths.PREFERENCE_CHECKPOINTS
    with live.curves(root / paths.PREFERENCE_LIVE, checkpoints) as on_log:
        pad_id, progress = tok.token_to_id("<pad>") or 0, live.progress(cfg.steps, "preference")
        try:
            if tunix:
                model, spec, result = tunix_preference.train(
                    params, cfg, pairs, root, pad_id=pad_id, on_log=on_log, progress=progress
                )
            else:
                result = train_preference(
                    model, pairs, cfg, pad_id=pad_id, checkpoint_dir=checkpoints, on_log=on_log, progress=progress
                )
        except NonFiniteLoss as err:
            raise StageError(f"{paths.PREFERRED}: preference training diverged: {err}") from None

        # Inside the curves' block: they replace the last good ones only once the model is written too.
        rewards = lambda i: [float(cs[i]["reward"]) for _, cs in chosen] if len(chosen[0][1]) > i else []
        info = {
            "sft_model": {"path": paths.MODEL.as_posix(), "sha256": model_sha},
            "samples": {"path": paths.SAMPLES.as_posix(), "sha256": sha256_file(root / paths.SAMPLES)},
            "params": params["preference"],
            "steps": cfg.steps,
            "pairs": {
                "count": len(pairs),
                "rule": rule,
                "chosen_reward_mean": float(np.mean(rewards(0))),
                **({"rejected_reward_mean": float(np.mean(rewards(1)))} if rewards(1) else {}),
            },
            "reference_logps_mean": None if result.reference is None else np.mean(result.reference, axis=0).tolist(),
            "curve": last_row_summary(result.history),
            "history": result.history,
        }
        with atomic_path(root / paths.PREFERRED) as out:
            save_trained(model, spec, out, model_dir, base_model=paths.MODEL.as_posix())
            shutil.copyfile(model_dir / paths.TRAINING_INFO.name, out / paths.TRAINING_INFO.name)
            write_json(out / paths.PREFERENCE_INFO.name, info)
    live.finished(checkpoints)
    if result.resumed_from:
        print(
            f"preference: resumed from the checkpoint of step {result.resumed_from} in {paths.PREFERENCE_CHECKPOINTS}"
        )
    last = info["curve"]["last"]
    print(f"preference: loss {info['curve']['first']['loss']:.4f} -> {last['loss']:.4f} -> {paths.PREFERRED}")
    return result


def main() -> None:
    reuse_freed_memory()  # before JAX runs a program (training/host_memory.py)
    run(load_params())


if __name__ == "__main__":
    run_stage(main)
