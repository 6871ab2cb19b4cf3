"""The preference stage's `tunix` engine (`preference.engine: tunix`): Tunix's own `DPOTrainer` trains the
SFT model, in the Tunix environment, on the pairs our engine would train on, and the stage writes what it
writes for our engine.

The stage builds the pairs as always (stages/preference.py) and writes every step's batch, pre-tokenised with
our template: the pairs of each step are the ones our engine's seeded order draws, each prompt rendered by
the chat template (its one `<bos>`) and left-padded, each completion the sampled token ids (their
`<end_of_turn>` kept) right-padded. The runner (training/tunix_dpo.py, in .venv-tunix) trains Tunix's Gemma
from data/model/ with the same optimizer, checkpoints through Tunix's Orbax manager into
data/preference_checkpoints/ (a rerun after a kill resumes there), appends a row per step to a log the stage
follows into dvclive, and exports the trained weights under Hugging Face names, read back into our model.
docs/preference.md says what each engine runs.
"""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from flax import nnx

from stages import paths
from stages.common import StageError, param_error
from stages.live import learner_lora
from stages.tunix_runner import follow, work_folder
from training.grpo import PromptStream
from training.hf_io import CheckpointError
from training.loop import LoopConfig
from training.lora import LoRASpec
from training.model import Gemma
from training.preference import Pair, PreferenceConfig, PreferenceResult, prompt_width
from training.sampler import bucket_length, left_pad, right_pad
from training.tunix_launch import (
    TUNIX_PRESETS,
    TunixUnavailable,
    check_available,
    load_export,
    start_engine,
)

LOSSES = ("dpo", "orpo")  # what DPOTrainer runs (its `algorithm`)
RUNNER = "training.tunix_dpo"


def check(params: dict, root: Path) -> None:
    """Refuse, in one line naming the param, what the Tunix engine does not run; before any work."""
    pref, preset = params["preference"], params["model"]["preset"]
    refuse = lambda message: param_error("preference", "engine", message=message, root=root)
    if preset not in TUNIX_PRESETS:
        raise refuse(
            f"tunix runs only the presets with a Tunix ModelConfig ({', '.join(TUNIX_PRESETS)}), "
            f"not model.preset {preset}: set preference.engine: ours"
        )
    if pref["loss"] not in LOSSES:
        raise refuse(
            f"tunix runs preference.loss {' or '.join(LOSSES)}, not {pref['loss']}: set preference.engine: ours"
        )
    mesh, (_, lora_spec) = params["train"]["mesh"], learner_lora(params, "preference")
    reasons = {
        "LoRA (preference.lora, or model.lora when that is null, rank > 0)": lora_spec.rank > 0,
        "preference.nll_weight > 0 with dpo": pref["loss"] == "dpo" and pref["nll_weight"] > 0,
        "a mesh of more than one device (train.mesh)": mesh["data"] * mesh["fsdp"] > 1,
    }
    for what, asked in reasons.items():
        if asked:
            raise refuse(f"tunix does not run {what}: set preference.engine: ours")
    try:
        check_available()
    except TunixUnavailable as err:
        raise refuse(err) from None


def step_inputs(pairs: Sequence[Pair], cfg: PreferenceConfig, pad_id: int) -> dict[str, np.ndarray]:
    """Every step's batch as Tunix's `TrainingInput` reads it, stacked [steps, pairs_per_step, width]: the
    pairs our engine's step draws (the same seeded order), prompts left-padded to our engine's prompt width,
    completions right-padded to one width for the run (one compilation)."""
    width = prompt_width(pairs)
    completion_width = bucket_length(max(len(c) for p in pairs for c in p.completions), minimum=32)
    order = PromptStream(list(range(len(pairs))), cfg.seed)
    out: dict[str, list[np.ndarray]] = {}
    for step in range(cfg.steps):
        chosen = [pairs[i] for i in order.take(step * cfg.pairs_per_step, cfg.pairs_per_step)]
        ids, _, mask = left_pad([p.prompt for p in chosen], width, pad_id)
        arrays = {"prompt_ids": ids, "prompt_mask": mask}
        for j, name in enumerate(("chosen", "rejected")):
            ids, mask = right_pad([p.completions[j] for p in chosen], completion_width, pad_id)
            arrays |= {f"{name}_ids": ids, f"{name}_mask": mask}
        for key, value in arrays.items():
            out.setdefault(key, []).append(value)
    return {key: np.stack(values) for key, values in out.items()}


def train(
    params: dict,
    cfg: PreferenceConfig,
    pairs: Sequence[Pair],
    root: Path,
    *,
    pad_id: int,
    on_log: Callable[[int, dict], None],
    progress: Callable[[int], object],
) -> tuple[Gemma, LoRASpec, PreferenceResult]:
    """Train with Tunix's DPOTrainer; the trained model (ours, read from its export), its (rank-0) LoRA spec
    and the run's result as our learner returns it (no stored reference: Tunix recomputes it each step)."""
    model_dir, checkpoints = root / paths.MODEL, root / paths.PREFERENCE_CHECKPOINTS
    work, start, log = work_folder(checkpoints)
    np.savez(work / "batches.npz", **step_inputs(pairs, cfg, pad_id))
    request = {
        "model_dir": str(model_dir.resolve()),
        "preset": params["model"]["preset"],
        "loop": {k: v for k, v in dataclasses.asdict(cfg).items() if k in LoopConfig.__dataclass_fields__},
        "algorithm": cfg.loss,
        "beta": cfg.beta,
        "lambda_orpo": cfg.beta,  # our orpo's β is the odds-ratio term's weight, Tunix's λ
        # ours reads ε in dpo only (of these two); Tunix would also smooth orpo's odds-ratio term
        "label_smoothing": cfg.label_smoothing if cfg.loss == "dpo" else 0.0,
        "batches": str(work / "batches.npz"),
        "export": str(work / "export"),
        "log": str(log),
    }
    if cfg.save_every:
        request |= {"checkpoint_dir": str(checkpoints.resolve()), "save_every": cfg.save_every}
    rows = follow(*start_engine(request, work, RUNNER), cfg, start, on_log, progress, "preference.engine")
    history = [
        {**row, "step": float(row["step"])}
        for row in rows
        if row["step"] % cfg.log_every == 0 or row["step"] == cfg.steps
    ]
    if not history or history[-1]["step"] != cfg.steps:
        raise StageError(f"preference.engine tunix: the runner stopped before step {cfg.steps}")
    dtypes = {"dtype": params["model"]["compute_dtype"], "param_dtype": params["model"]["param_dtype"]}
    try:
        model = load_export(work / "export", model_dir, **dtypes)
    except CheckpointError as err:
        raise StageError(f"preference.engine tunix: {err}") from None
    shutil.rmtree(work)
    state = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    return model, learner_lora(params, "preference")[1], PreferenceResult(state, history, start, None)
