"""The dpo and orpo losses (training/preference.py) against google-tunix 0.1.7's own DPOTrainer loss.

Tunix lives in its own environment (`.venv-tunix`, see tests/test_tunix_interop.py); tests/tunix_preference.py
runs there: a batch of pre-tokenised pairs (left-padded prompts with their masks, right-padded chosen and
rejected completions) goes through DPOTrainer's `_prepare_inputs` and `dpo_loss_fn` with "models" that
return fixed logits. Here our loss reads the same logits: the completion tokens' log-probs, summed.

dpo: Tunix's formula is ours (sigmoid on β·Δ, labels flipped at rate ε), so the losses must agree.

orpo: Tunix's definition differs from ours (TRL's, the paper's Eq. 4 and 7) in two places:
- its log-odds are of the *summed* log-probs of each completion, ours of their per-token average;
- its NLL is each chosen completion's per-token mean, averaged over pairs; ours is averaged over every
  chosen token of the batch (TRL's cross-entropy).
On pairs whose completions are one token each the two coincide, and the whole losses must agree; on the
general batch each of Tunix's two terms (`or_loss`, `sft_loss`) must equal ours on the quantity it reads.

`preference.engine: tunix` (stages/tunix_preference.py, training/tunix_dpo.py in .venv-tunix): its refusals
here; the run of the preference stage, as DVC runs it, for two dpo steps of the real google/gemma-3-270m
through Tunix's DPOTrainer and then through ours is in tests/test_tunix_engine.py, with the train engine's
270M runs, so that no two of them overlap.
"""

from __future__ import annotations

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import yaml
from tokenizers import Tokenizer

from stages import paths, tunix_preference
from stages.common import StageError, sha256_tree, write_jsonl
from tests.pipeline_utils import ROOT
from tests.test_tunix_interop import TUNIX_PYTHON, run_in_tunix
from training.preference import Objective, chosen_nll, orpo_loss, preference_loss

pytestmark = pytest.mark.skipif(
    not TUNIX_PYTHON.exists(), reason=f"no Tunix environment at {TUNIX_PYTHON} (make tunix-env)"
)
B, P, V = 4, 5, 13  # pairs, prompt width, vocabulary
TOL = 1e-5


def make_batch(rng: np.random.Generator, lengths: np.ndarray, width: int) -> dict[str, np.ndarray]:
    """Pairs with prompts of 2..P tokens (left-padded) and completions of `lengths` [B, 2] tokens
    (right-padded to `width`), and the policy's and reference's logits [2B, P + width, V]."""
    prompt_len = rng.integers(2, P + 1, size=B)
    prompt_mask = (np.arange(P)[None, :] >= P - prompt_len[:, None]).astype(np.int32)
    masks = [(np.arange(width)[None, :] < lengths[:, j, None]).astype(np.int32) for j in range(2)]
    ids = [rng.integers(1, V, size=(B, width)) * m for m in masks]  # 0: padding
    shape = (2 * B, P + width, V)
    logits = rng.normal(0.0, 2.0, size=shape).astype(np.float32)
    ref_logits = (logits + rng.normal(0.0, 0.7, size=shape)).astype(np.float32)
    return {
        "prompt_ids": (rng.integers(1, V, size=(B, P)) * prompt_mask).astype(np.int32),
        "prompt_mask": prompt_mask,
        "chosen_ids": ids[0].astype(np.int32),
        "chosen_mask": masks[0],
        "rejected_ids": ids[1].astype(np.int32),
        "rejected_mask": masks[1],
        "logits": logits,
        "ref_logits": ref_logits,
    }


def summed_logps(batch: dict[str, np.ndarray], key: str) -> tuple[jax.Array, jax.Array]:
    """(summed log-probs [B, 2], token counts [B, 2]): logits at position t score the token at t + 1."""
    width = batch["chosen_ids"].shape[1]
    targets = np.concatenate([batch["chosen_ids"], batch["rejected_ids"]])
    mask = np.concatenate([batch["chosen_mask"], batch["rejected_mask"]]).astype(np.float32)
    logits = jnp.asarray(batch[key])[:, P - 1 : P - 1 + width]
    token_logp = jnp.take_along_axis(jax.nn.log_softmax(logits, axis=-1), jnp.asarray(targets)[..., None], -1)[..., 0]
    logp = (token_logp * mask).sum(axis=1).reshape(2, B).T
    return logp, jnp.asarray(mask.sum(axis=1).reshape(2, B).T)


def tunix_losses(batches: dict[str, dict], requests: list[tuple[str, dict]], workdir: Path) -> list[dict]:
    """Tunix's loss and aux metrics per (batch name, `dpo_loss_fn` keywords), all in one subprocess."""
    for name, batch in batches.items():
        np.savez(workdir / f"{name}.npz", **batch)
    (workdir / "request.json").write_text(json.dumps([{"batch": f"{b}.npz", "kwargs": kw} for b, kw in requests]))
    run_in_tunix("tests/tunix_preference.py", ["request.json", "out.json"], workdir, timeout=600)
    return json.loads((workdir / "out.json").read_text())


DPO_CASES = [dict(beta=0.1, label_smoothing=0.0), dict(beta=0.5, label_smoothing=0.2)]


@pytest.fixture(scope="module")
def general(tmp_path_factory):
    """A batch of completions of 1..6 tokens, one of one-token completions, and Tunix's losses on them (one
    subprocess: its start is most of the time)."""
    rng = np.random.default_rng(39)
    batch = make_batch(rng, rng.integers(1, 7, size=(B, 2)), width=6)
    one_token = make_batch(rng, np.ones((B, 2), np.int64), width=3)
    orpo = dict(algorithm="orpo", lambda_orpo=0.25, label_smoothing=0.0)
    requests = [("general", dict(algorithm="dpo", **case)) for case in DPO_CASES]
    requests += [("general", orpo), ("one_token", orpo)]
    got = tunix_losses({"general": batch, "one_token": one_token}, requests, tmp_path_factory.mktemp("tunix"))
    return batch, got[:-1], one_token, got[-1]


@pytest.mark.parametrize("case", range(len(DPO_CASES)))
def test_dpo_equals_tunix_dpo_loss(general, case):
    batch, got, _, _ = general
    logp, n = summed_logps(batch, "logits")
    ref, _ = summed_logps(batch, "ref_logits")
    value, metrics = preference_loss(logp, ref, n, Objective(loss="dpo", **DPO_CASES[case]))
    theirs = got[case]
    assert abs(float(value) - theirs["loss"]) <= TOL
    assert abs(float(metrics["reward_chosen"]) - theirs["rewards/chosen"]) <= TOL
    assert abs(float(metrics["reward_rejected"]) - theirs["rewards/rejected"]) <= TOL
    assert abs(float(metrics["margin"]) - theirs["rewards/margin"]) <= TOL
    assert float(metrics["pair_accuracy"]) == theirs["rewards/accuracy"]
    # summed log-probs of up to 6 tokens (≈ -20): float32 rounding, relative
    assert float(metrics["logp_chosen"]) == pytest.approx(theirs["log_probs/chosen"], rel=1e-6)
    assert float(metrics["logp_rejected"]) == pytest.approx(theirs["log_probs/rejected"], rel=1e-6)
    assert abs(float(value) - got[1 - case]["loss"]) > 1e-3  # the parameters reach Tunix's loss


def test_orpo_equals_tunix_orpo_loss_on_one_token_completions(general):
    """Where summed and averaged log-probs are the same (one token each), the whole losses agree: our β is
    Tunix's `lambda_orpo`, the odds-ratio term's weight; the NLL's weight is 1 on both sides."""
    _, _, batch, theirs = general
    logp, n = summed_logps(batch, "logits")
    assert np.all(np.asarray(n) == 1)
    value, metrics = preference_loss(logp, None, n, Objective(loss="orpo", beta=0.25))
    assert abs(float(value) - theirs["loss"]) <= TOL
    assert abs(float(metrics["nll_chosen"]) - theirs["sft_loss"]) <= TOL


def test_orpo_terms_equal_tunix_on_what_each_reads(general):
    """Tunix's odds-ratio term reads summed log-probs (ours reads averages) and its NLL averages each chosen
    completion's per-token mean over pairs (ours averages over the batch's chosen tokens): fed those
    quantities, our odds-ratio loss and NLL equal Tunix's `or_loss` and `sft_loss`."""
    batch, got, _, _ = general
    theirs = got[-1]
    logp, n = summed_logps(batch, "logits")
    assert len(set(np.asarray(n[:, 0]).tolist())) > 1  # the chosen lengths differ: the two NLLs differ
    or_loss = orpo_loss(logp, None, jnp.ones_like(n), Objective(loss="orpo", beta=1.0))
    assert abs(float(jnp.mean(or_loss)) - theirs["or_loss"]) <= TOL
    per_pair_nll = jnp.stack([chosen_nll(logp[i : i + 1], n[i : i + 1]) for i in range(B)])
    assert abs(float(jnp.mean(per_pair_nll)) - theirs["sft_loss"]) <= TOL
    value, _ = preference_loss(logp, None, n, Objective(loss="orpo", beta=0.25))
    assert abs(float(value) - theirs["loss"]) > 1e-3  # the definitions do differ on this batch


# ---------------------------------------------------------------- preference.engine: tunix

ENGINE_ATOL = 1e-4
QUESTIONS = [  # (prompt, right answer, wrong answer): short completions, so a 270M step takes seconds
    ("What is 3 + 4?", "3 + 4 = 7", "7", "8"),
    ("What is 6 times 7?", "6 × 7 = 42", "42", "36"),
    ("Half of 10?", "10 / 2 = 5", "5", "4"),
    ("What is 9 - 2?", "9 - 2 = 7", "7", "11"),
]


def engine_params(engine: str, **preference) -> dict:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["model"].update(preset="gemma3-270m", checkpoint="models/gemma-3-270m")
    params["preference"].update(engine=engine, **preference)
    return params


def samples(tok: Tokenizer, model_sha: str) -> list[dict]:
    """Samples as the samples stage writes them: a right and a wrong completion per prompt, each ending in its
    end of turn."""

    def completion(text: str, right: bool) -> dict:
        ids = tok.encode(text + "<end_of_turn>", add_special_tokens=False).ids
        return {
            "text": text + "<end_of_turn>",
            "tokens": ids,
            "n_tokens": len(ids) - 1,
            "truncated": False,
            "reward": float(right),
            "parts": {"correctness": float(right)},
            "correct": right,
            "greedy": False,
        }

    return [
        {
            "id": f"q{i}",
            "prompt": prompt,
            "model_sha256": model_sha,
            "pass_rate": 0.5,
            "completions": [
                completion(f"<reasoning>{step.split('=')[0]}= {wrong}</reasoning><answer>{wrong}</answer>", False),
                completion(f"<reasoning>{step}</reasoning><answer>{right}</answer>", True),
            ],
        }
        for i, (prompt, step, right, wrong) in enumerate(QUESTIONS)
    ]


def preference_repo(root: Path, base: Path, params: dict) -> Path:
    """What the preference stage reads: data/model/ (the 270M's files linked, as an SFT model), its samples,
    params.yaml."""
    model = root / paths.MODEL
    model.mkdir(parents=True)
    for file in base.iterdir():
        (model / file.name).symlink_to(file)
    (model / paths.TRAINING_INFO.name).write_text("{}\n")
    tok = Tokenizer.from_file(str(model / "tokenizer.json"))
    write_jsonl(root / paths.SAMPLES, samples(tok, sha256_tree(model)))
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return root


def engine_line() -> int:
    """The line of params.yaml's `engine:` in its `preference:` section."""
    lines = (ROOT / "params.yaml").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("preference:"))
    return next(i for i in range(start, len(lines)) if lines[i].startswith("  engine:")) + 1


@pytest.mark.parametrize(
    ("change", "says"),
    [
        (
            {"model": {"preset": "tiny"}},
            "tunix runs only the presets with a Tunix ModelConfig (gemma3-270m, gemma3-1b)",
        ),
        ({"preference": {"loss": "ipo"}}, "tunix runs preference.loss dpo or orpo, not ipo"),
        ({"preference": {"lora": {"rank": 4}}}, "tunix does not run LoRA (preference.lora, or model.lora"),
        ({"model": {"lora": {"rank": 4}}}, "tunix does not run LoRA (preference.lora, or model.lora"),
        ({"preference": {"nll_weight": 0.1}}, "tunix does not run preference.nll_weight > 0 with dpo"),
        ({"train": {"mesh": {"data": 2, "fsdp": 1}}}, "tunix does not run a mesh of more than one device"),
    ],
)
def test_the_tunix_engine_refuses_in_one_line_naming_the_param(change, says):
    params = engine_params("tunix")
    for section, values in change.items():
        for key, value in values.items():
            params[section][key] = {**(params[section][key] or {}), **value} if isinstance(value, dict) else value
    with pytest.raises(StageError) as err:
        tunix_preference.check(params, ROOT)
    line = str(err.value)
    assert "\n" not in line and line.startswith(f"params.yaml:{engine_line()}: preference.engine: {says}"), line
    tunix_preference.check(engine_params("tunix", loss="orpo", nll_weight=0.1), ROOT)  # orpo reads no nll_weight


def test_without_the_tunix_environment_the_preference_engine_says_how_to_make_it(monkeypatch, tmp_path):
    monkeypatch.setenv("TUNIX_PYTHON", str(tmp_path / "nowhere/bin/python"))
    with pytest.raises(StageError, match=r"preference\.engine: no Tunix environment at .*nowhere.*make tunix-env"):
        tunix_preference.check(engine_params("tunix"), ROOT)
