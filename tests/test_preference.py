"""The preference losses (training/preference.py) against TRL's own code and a hand-computed case; the trainer
on a tiny model (stored reference log-probs, LoRA's adapters-off reference, resume); the stage
(stages/preference.py: the pair rule, steps 0, bad inputs)."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import shutil
import subprocess
import sys
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import yaml
from flax import nnx

from stages.common import sha256_tree
from stages.preference import build_pairs, choose
from training import config as configs
from training import lora
from training.model import Gemma
from training.preference import (
    LOSSES,
    Objective,
    Pair,
    PreferenceConfig,
    log1mexp,
    pair_batch,
    preference_loss,
    reference_logps,
    train_preference,
)

# ---------------------------------------------------------------- the losses

RNG = np.random.default_rng(7)
B = 6
LOGP = -RNG.uniform(2.0, 40.0, size=(B, 2))  # summed log-probs: chosen, rejected
REF = LOGP + RNG.normal(0.0, 1.5, size=(B, 2))
N = RNG.integers(3, 30, size=(B, 2)).astype(np.float64)


def ours(loss: str, **kw) -> tuple[float, dict]:
    obj = Objective(loss=loss, **{"beta": 0.1, **kw})
    value, metrics = preference_loss(jnp.asarray(LOGP), jnp.asarray(REF), jnp.asarray(N), obj)
    return float(value), {k: float(v) for k, v in metrics.items()}


def torch_t(x):
    import torch

    return torch.tensor(np.asarray(x), dtype=torch.float64)


def trl_self(**kw):
    """What TRL's loss methods read of their trainer: its config fields and the accelerator's device."""
    fields = {"alpha": 0.0, "label_smoothing": 0.0, "simpo_gamma": 0.5, **kw}
    return types.SimpleNamespace(accelerator=types.SimpleNamespace(device="cpu"), **fields)


@pytest.fixture(scope="module")
def trl():
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    cpo = pytest.importorskip("trl.experimental.cpo.cpo_trainer")
    orpo = pytest.importorskip("trl.experimental.orpo.orpo_trainer")
    return types.SimpleNamespace(cpo=cpo.CPOTrainer, orpo=orpo.ORPOTrainer)


@pytest.mark.parametrize("eps", [0.0, 0.2])
def test_dpo_equals_trls_sigmoid_loss_with_label_smoothing(trl, eps):
    """TRL's CPO `sigmoid` loss is DPO's conservative sigmoid on the log-ratio margin it is given: fed the
    log-ratios to the reference, it is DPO with label smoothing."""
    losses, chosen, rejected = trl.cpo.cpo_loss(
        trl_self(beta=0.1, loss_type="sigmoid", label_smoothing=eps),
        torch_t(LOGP[:, 0] - REF[:, 0]),
        torch_t(LOGP[:, 1] - REF[:, 1]),
    )
    value, metrics = ours("dpo", label_smoothing=eps)
    assert value == pytest.approx(float(losses.mean()), abs=1e-5)
    assert metrics["reward_chosen"] == pytest.approx(float(chosen.mean()), abs=1e-5)
    assert metrics["reward_rejected"] == pytest.approx(float(rejected.mean()), abs=1e-5)


def test_ipo_equals_trls_on_per_token_log_ratios(trl):
    """TRL's DPOTrainer divides each IPO log-ratio by its completion's length, then (CPO's) squares the
    margin less 1/(2β)."""
    per_token = (LOGP - REF) / N
    losses, _, _ = trl.cpo.cpo_loss(
        trl_self(beta=0.1, loss_type="ipo"), torch_t(per_token[:, 0]), torch_t(per_token[:, 1])
    )
    assert ours("ipo")[0] == pytest.approx(float(losses.mean()), abs=1e-5)


def test_robust_equals_trls_dpo_trainer_formula():
    """TRL's DPOTrainer computes `robust` inline in `_compute_loss` (no function to call): its lines, here."""
    import torch.nn.functional as F

    eps, beta = 0.2, 0.1
    delta = torch_t((LOGP[:, 0] - REF[:, 0]) - (LOGP[:, 1] - REF[:, 1]))
    clean_loss_term = -(1 - eps) * F.logsigmoid(beta * delta)
    flipped_loss_term = -eps * F.logsigmoid(-beta * delta)
    per_sequence_loss = (clean_loss_term - flipped_loss_term) / (1 - 2 * eps)
    assert ours("robust", label_smoothing=eps)[0] == pytest.approx(float(per_sequence_loss.mean()), abs=1e-5)


@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_simpo_equals_trls_cpo_simpo_loss(trl, eps):
    """CPOConfig(loss_type="simpo", cpo_alpha=0) on length-averaged log-probs (CPO's `average_log_prob`)."""
    avg = LOGP / N
    losses, chosen, rejected = trl.cpo.cpo_loss(
        trl_self(beta=2.0, loss_type="simpo", simpo_gamma=0.5, label_smoothing=eps),
        torch_t(avg[:, 0]),
        torch_t(avg[:, 1]),
    )
    value, metrics = ours("simpo", beta=2.0, gamma=0.5, label_smoothing=eps)
    assert value == pytest.approx(float(losses.mean()), abs=1e-5)
    assert metrics["margin"] == pytest.approx(float((chosen - rejected).mean()), abs=1e-5)


def test_orpo_equals_trls_nll_less_the_odds_ratio_term(trl):
    """ORPOTrainer: loss = NLL(chosen) (cross-entropy over every chosen token) - mean(β·logσ(log-odds))."""
    avg = LOGP / N
    losses, chosen, rejected, _, _ = trl.orpo.odds_ratio_loss(
        trl_self(beta=0.1), torch_t(avg[:, 0]), torch_t(avg[:, 1])
    )
    nll = np.sum(-LOGP[:, 0]) / np.sum(N[:, 0])
    value, metrics = ours("orpo")
    assert value == pytest.approx(nll - float(losses.mean()), abs=1e-5)
    assert metrics["reward_chosen"] == pytest.approx(float(chosen.mean()), abs=1e-5)
    assert metrics["reward_rejected"] == pytest.approx(float(rejected.mean()), abs=1e-5)
    assert metrics["nll_chosen"] == pytest.approx(nll, abs=1e-6)


def test_log1mexp_is_stable_on_both_branches():
    x = np.array([-1e-8, -0.5, -0.7, -5.0, -50.0])
    got = np.asarray(log1mexp(jnp.asarray(x, jnp.float32)))
    np.testing.assert_allclose(got, np.log(-np.expm1(x)), rtol=1e-6, atol=1e-12)
    with np.errstate(divide="ignore"):  # what the naive form gives in float32
        assert np.isneginf(np.log(1.0 - np.exp(np.float32(-1e-8))))


def test_one_pair_by_hand():
    """β = 1, chosen log-ratio +1, rejected -1: Δ = 2, dpo = -log σ(2) = log(1 + e⁻²)."""
    logp, ref, n = jnp.array([[-3.0, -5.0]]), jnp.array([[-4.0, -4.0]]), jnp.array([[2.0, 4.0]])
    loss = lambda name, **kw: float(preference_loss(logp, ref, n, Objective(name, beta=1.0, **kw))[0])
    assert loss("dpo") == pytest.approx(math.log1p(math.exp(-2.0)), abs=1e-6)
    # ipo: per-token ratios +1/2 and -1/4: (0.75 - 0.5)² ; simpo: averages -1.5 and -1.25, γ 0.5: -logσ(-0.75)
    assert loss("ipo") == pytest.approx(0.0625, abs=1e-6)
    assert loss("simpo", gamma=0.5) == pytest.approx(math.log1p(math.exp(0.75)), abs=1e-6)
    # rft: the chosen NLL per token, 3 / 2; dpo + NLL weight 0.5 adds half of it
    assert loss("rft") == pytest.approx(1.5, abs=1e-6)
    assert loss("dpo", nll_weight=0.5) == pytest.approx(math.log1p(math.exp(-2.0)) + 0.75, abs=1e-6)


def test_an_unknown_loss_is_named():
    with pytest.raises(ValueError, match="unknown loss 'kto'"):
        preference_loss(jnp.asarray(LOGP), None, jnp.asarray(N), Objective("kto", beta=0.1))
    assert set(LOSSES) == {"dpo", "ipo", "robust", "simpo", "orpo", "rft"}


# ---------------------------------------------------------------- the trainer on a tiny model

VOCAB, EOS, PAD = 32, 1, 0


def tiny_model(seed: int = 0) -> Gemma:
    cfg = configs.tiny(
        VOCAB,
        hidden_size=32,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=16,
    )
    return Gemma(cfg, rngs=nnx.Rngs(params=seed))


# chosen: runs of 7s; rejected: runs of 9s (lengths differ, prompts differ)
PAIRS = [
    Pair(
        prompt=[2, 3 + i % 5, 4 + i % 3][: 2 + i % 2],
        completions=([7] * (3 + i % 4) + [EOS], [9] * (2 + i % 3) + [EOS]),
    )
    for i in range(8)
]


def config(**kw) -> PreferenceConfig:
    return PreferenceConfig(
        **{"steps": 4, "pairs_per_step": 4, "learning_rate": 3e-3, "loss": "dpo", "beta": 0.5, "seed": 0, **kw}
    )


_FORWARD: dict = {}


def direct_logps(model: Gemma, pairs, base: bool = False) -> np.ndarray:
    """Summed completion log-probs [pairs, k]: each prompt + completion as one right-padded row through the
    model's full forward pass (no cache), log-softmax of its logits at the completion's positions."""
    rows = [(list(p.prompt), list(c)) for p in pairs for c in p.completions]
    width = 16
    ids, seg = np.zeros((len(rows), width), np.int32), np.zeros((len(rows), width), np.int32)
    for i, (prompt, completion) in enumerate(rows):
        ids[i, : len(prompt) + len(completion)] = prompt + completion
        seg[i, : len(prompt) + len(completion)] = 1
    graphdef, state = nnx.split(model)
    if (graphdef, base) not in _FORWARD:

        def forward(state, ids, seg):
            with lora.adapters_off() if base else contextlib.nullcontext():
                logits, _ = nnx.merge(graphdef, state)(ids, jnp.arange(width)[None], seg)
            return jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)

        _FORWARD[graphdef, base] = jax.jit(forward)
    logp = np.asarray(_FORWARD[graphdef, base](state, ids, seg))
    out = [logp[i, np.arange(len(p), len(p) + len(c)) - 1, c].sum() for i, (p, c) in enumerate(rows)]
    return np.asarray(out, np.float64).reshape(len(pairs), -1)


def test_a_pair_batch_holds_each_prompt_once_and_masks_each_completion():
    batch = pair_batch(PAIRS[:4], 16, PAD)
    assert batch["prompt_inputs"].shape == (4, 16) and batch["targets"].shape == (8, 32)
    np.testing.assert_array_equal(batch["mask"].sum(axis=1), [len(c) for p in PAIRS[:4] for c in p.completions])
    np.testing.assert_array_equal(batch["targets"][1, :3], PAIRS[0].completions[1])
    # each completion's positions continue its own prompt's, whatever the left padding
    np.testing.assert_array_equal(batch["positions"][:2, 0], [len(PAIRS[0].prompt)] * 2)


def test_dpo_steps_raise_the_margin_and_store_the_reference_once():
    model = tiny_model()
    start = direct_logps(model, PAIRS)
    result = train_preference(model, PAIRS, config(), pad_id=PAD)
    np.testing.assert_allclose(result.reference, start, atol=1e-5)  # the stored reference: the start model's
    after = direct_logps(model, PAIRS)
    assert np.mean(after[:, 0] - after[:, 1]) > np.mean(start[:, 0] - start[:, 1]) + 0.5
    rows = result.history
    assert rows[0]["pair_accuracy"] <= rows[-1]["pair_accuracy"] and rows[-1]["margin"] > rows[0]["margin"]
    assert {"reward_chosen", "reward_rejected", "logp_chosen", "logp_rejected", "length_chosen"} <= set(rows[0])


def test_with_lora_the_reference_is_the_model_with_its_adapters_off():
    """Adapters on a model whose B is not zero: the reference is the base, not the adapted model."""
    model = tiny_model()
    lora.add_adapters(model, lora.LoRASpec(rank=4, alpha=8.0), seed=0)
    for adapter in lora.adapters(model).values():  # B away from zero: adapters on and off now differ
        adapter.b[...] = jax.random.normal(jax.random.key(1), adapter.b[...].shape) * 0.5
    cfg = config()
    stored = reference_logps(model, PAIRS, cfg, PAD)
    np.testing.assert_allclose(stored, direct_logps(model, PAIRS, base=True), atol=1e-5)
    assert np.max(np.abs(stored - direct_logps(model, PAIRS))) > 1e-3


@pytest.mark.parametrize("loss", ["simpo", "rft"])  # orpo's step is simpo's but for the loss (checked above)
def test_the_reference_free_losses_train_and_store_no_reference(loss):
    pairs = PAIRS if loss != "rft" else [dataclasses.replace(p, completions=p.completions[:1]) for p in PAIRS]
    model = tiny_model()
    before = direct_logps(model, pairs)
    result = train_preference(
        model, pairs, config(steps=4, loss=loss, beta=2.0 if loss == "simpo" else 0.1), pad_id=PAD
    )
    assert result.reference is None
    assert np.mean(direct_logps(model, pairs)[:, 0]) > np.mean(before[:, 0])  # chosen became likelier


class Crash(Exception):
    pass


def test_a_crashed_run_resumes_bit_identical(tmp_path):
    cfg = config(save_every=1)
    clean = train_preference(tiny_model(), PAIRS, cfg, pad_id=PAD, checkpoint_dir=tmp_path / "clean")

    def crash(step, row):
        if step == 3:
            raise Crash

    with pytest.raises(Crash):
        train_preference(tiny_model(), PAIRS, cfg, pad_id=PAD, checkpoint_dir=tmp_path / "run", on_log=crash)
    resumed = train_preference(tiny_model(), PAIRS, cfg, pad_id=PAD, checkpoint_dir=tmp_path / "run")
    assert resumed.resumed_from == 2
    same = jax.tree.map(lambda x, y: np.array_equal(np.asarray(x), np.asarray(y)), clean.params, resumed.params)
    assert all(jax.tree.leaves(same))
    assert resumed.history == clean.history


# ---------------------------------------------------------------- the pair rule


def completion(reward: float, correct: bool, tokens=(5,), greedy: bool = False) -> dict:
    return {"reward": reward, "correct": correct, "tokens": list(tokens), "greedy": greedy}


def test_highest_vs_lowest_drops_ties_and_keeps_file_order_among_equals():
    a, b, c = completion(1.0, True, (5,)), completion(0.2, False, (6,)), completion(1.0, True, (7,))
    assert choose([b, a, c], "highest_vs_lowest", "dpo") == (a, b)  # the first of the equal best
    assert choose([completion(0.5, False, (5,)), completion(0.5, True, (6,))], "highest_vs_lowest", "dpo") is None
    same = completion(1.0, True, (5,))
    assert choose([same, completion(0.0, False, (5,))], "highest_vs_lowest", "dpo") is None  # the same tokens


def test_right_vs_wrong_puts_the_best_right_over_the_worst_wrong():
    right_low, right_high = completion(0.6, True, (5,)), completion(0.9, True, (6,))
    wrong_high, wrong_low = completion(0.7, False, (7,)), completion(-1.0, False, (8,))
    assert choose([wrong_high, right_low, wrong_low, right_high], "right_vs_wrong", "dpo") == (right_high, wrong_low)
    # a wrong completion with a higher reward than every right one is still the rejected side's candidate
    assert choose([wrong_high, right_low], "right_vs_wrong", "dpo") == (right_low, wrong_high)
    assert choose([right_low, right_high], "right_vs_wrong", "dpo") is None  # nothing wrong: no pair
    assert choose([wrong_high, wrong_low], "right_vs_wrong", "dpo") is None  # nothing right: no pair


def test_the_greedy_candidate_is_chosen_when_it_is_the_best():
    greedy = completion(1.0, True, (9,), greedy=True)
    assert (
        choose([completion(0.0, False, (5,)), completion(0.1, False, (6,)), greedy], "right_vs_wrong", "dpo")[0]
        is greedy
    )
    assert choose([completion(0.0, False, (5,)), greedy], "highest_vs_lowest", "rft") == (greedy,)


def test_rft_takes_the_best_right_completion_alone():
    records = [
        {"completions": [completion(0.3, True, (5,)), completion(0.8, True, (6,))]},
        {"completions": [completion(0.3, False, (5,))]},
    ]
    pairs = build_pairs(records, "right_vs_wrong", "rft")
    assert [(r is records[0], cs) for r, cs in pairs] == [(True, (records[0]["completions"][1],))]


# ---------------------------------------------------------------- the stage

SAMPLES = "data/samples.jsonl"


def stage_repo(shared_base, dest, **preference_params):
    """A copy of the bad-inputs base (a random tiny model) with `preference` params set and its outputs removed."""
    shutil.copytree(shared_base, dest, symlinks=True)
    params = yaml.safe_load((dest / "params.yaml").read_text())
    params["preference"].update(preference_params)
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for name in ("data/preferred", "dvclive/preference", "data/preference_checkpoints"):
        shutil.rmtree(dest / name, ignore_errors=True)
    return dest


def write_samples(repo, n: int = 4, model_sha: str | None = None) -> None:
    """Samples as the samples stage writes them: per prompt one right and one wrong completion of a few tokens."""
    from stages.common import read_jsonl, write_jsonl

    sha = model_sha or sha256_tree(repo / "data/model")
    records = []
    for r in read_jsonl(repo / "data/train.jsonl")[:n]:
        done = lambda ids, reward, right: {
            "text": "x",
            "tokens": ids,
            "n_tokens": len(ids) - 1,
            "truncated": False,
            "reward": reward,
            "parts": {"correctness": float(right)},
            "correct": right,
            "greedy": False,
        }
        records.append(
            {
                "id": r["id"],
                "prompt": r["prompt"],
                "model_sha256": sha,
                "pass_rate": 0.5,
                "completions": [done([10, 11, 12, 3], 1.0, True), done([20, 21, 3], 0.0, False)],
            }
        )
    write_jsonl(repo / SAMPLES, records)


def run_preference(repo) -> subprocess.CompletedProcess:
    from tests.test_bad_inputs import stage_env

    return subprocess.run(
        [sys.executable, "-m", "stages.preference"],
        cwd=repo,
        env=stage_env(),
        capture_output=True,
        check=False,
        text=True,
        timeout=600,
    )


def files_under(path):
    return {p.relative_to(path).as_posix(): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def test_zero_steps_pass_the_sft_model_through_unchanged(shared_base, tmp_path):
    repo = stage_repo(shared_base, tmp_path / "repo", steps=0)
    proc = run_preference(repo)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert files_under(repo / "data/preferred") == files_under(repo / "data/model")
    assert json.loads((repo / "dvclive/preference/metrics.json").read_text()) == {"steps": 0}


PREF_LORA = {"rank": 4, "alpha": 8.0, "dropout": 0.0, "targets": ["q_proj", "v_proj"], "rslora": False}


def test_dpo_with_lora_trains_and_records_its_pairs(shared_base, tmp_path):
    repo = stage_repo(
        shared_base, tmp_path / "repo", steps=2, pairs_per_step=2, learning_rate=1e-2, lora=PREF_LORA, nll_weight=0.5
    )
    write_samples(repo)
    proc = run_preference(repo)
    assert proc.returncode == 0, proc.stderr[-3000:]
    info = json.loads((repo / "data/preferred/preference_info.json").read_text())
    assert info["steps"] == 2 and info["pairs"]["count"] == 4 and len(info["history"]) == 2
    assert {"margin", "pair_accuracy", "reward_chosen", "logp_rejected", "length_chosen"} <= set(info["history"][0])
    assert info["sft_model"]["sha256"] == sha256_tree(repo / "data/model")
    adapter = json.loads((repo / "data/preferred/adapter/adapter_config.json").read_text())
    assert adapter["r"] == 4 and adapter["base_model_name_or_path"] == "data/model"
    assert (repo / "data/preferred/model.safetensors").read_bytes() != (
        repo / "data/model/model.safetensors"
    ).read_bytes()
    metrics = json.loads((repo / "dvclive/preference/metrics.json").read_text())
    assert {"margin", "pair_accuracy", "reward_chosen", "reward_rejected"} <= set(metrics)
    assert list((repo / "data/preference_checkpoints").iterdir()) == []  # a finished run leaves nothing to resume


@pytest.mark.parametrize("case", ["another-model", "no-pair", "no-samples", "unknown-loss", "negative-beta"])
def test_bad_input_is_one_line_and_loses_nothing(shared_base, tmp_path, case):
    from stages.common import yaml_line
    from tests.test_bad_inputs import assert_one_line_error, set_param, snapshot

    repo = stage_repo(shared_base, tmp_path / "repo", steps=2, pairs_per_step=2)
    write_samples(repo, model_sha="ab" * 32 if case == "another-model" else None)
    (repo / "data/preferred").mkdir(parents=True)
    (repo / "data/preferred/model.safetensors").write_bytes(b"an earlier run's output")
    if case == "no-pair":
        set_param("preference.pairs", "highest_vs_lowest")(repo)
        text = (repo / SAMPLES).read_text().replace('"reward": 0.0', '"reward": 1.0')
        (repo / SAMPLES).write_text(text)  # every reward ties
    if case == "no-samples":
        (repo / SAMPLES).write_text("")
    if case == "unknown-loss":
        set_param("preference.loss", "kto")(repo)
    if case == "negative-beta":
        set_param("preference.beta", -0.1)(repo)
    before = snapshot(repo)
    proc = run_preference(repo)
    params_text = (repo / "params.yaml").read_text()
    expected = {
        "another-model": (SAMPLES, 1, "model_sha256", "made by another model"),
        "no-pair": (SAMPLES, None, None, "no prompt gives a pair by preference.pairs 'highest_vs_lowest'"),
        "no-samples": (SAMPLES, None, None, "no samples"),
        "unknown-loss": ("params.yaml", yaml_line(params_text, ["preference", "loss"]), "preference.loss", "kto"),
        "negative-beta": ("params.yaml", yaml_line(params_text, ["preference", "beta"]), "preference.beta", "-0.1"),
    }[case]
    assert_one_line_error(proc, *expected)
    assert snapshot(repo) == before


# ---------------------------------------------------------------- grpo's prompts by pass rate


def test_grpo_prompt_filter_keeps_prompts_with_a_pass_rate_strictly_between_0_and_1(tmp_path, capsys):
    from stages.common import StageError, write_jsonl
    from stages.grpo import filter_prompts

    records = [{"id": f"t{i}", "prompt": f"q{i}"} for i in range(5)]
    done = {
        "text": "x",
        "tokens": [3],
        "n_tokens": 0,
        "truncated": False,
        "reward": 0.0,
        "parts": {},
        "correct": False,
        "greedy": False,
    }
    rates = {"t0": 0.0, "t1": 0.5, "t2": 1.0, "t3": 0.25}  # t4 never sampled
    write_jsonl(
        tmp_path / SAMPLES,
        [
            {"id": i, "prompt": "q", "model_sha256": "ab" * 32, "pass_rate": r, "completions": [done]}
            for i, r in rates.items()
        ],
    )
    params = lambda how: {"grpo": {"prompt_filter": how}}
    assert filter_prompts(params("none"), records, tmp_path) == records
    assert [r["id"] for r in filter_prompts(params("pass_rate"), records, tmp_path)] == ["t1", "t3"]
    assert "kept 2 of 4 sampled prompts (50%)" in capsys.readouterr().out
    write_jsonl(tmp_path / SAMPLES, [])
    with pytest.raises(StageError, match="grpo.prompt_filter: pass_rate: none of the 0 prompts"):
        filter_prompts(params("pass_rate"), records, tmp_path)


KILL_PARAMS = dict(steps=6, save_every=1, pairs_per_step=2, learning_rate=1e-3, loss="dpo", nll_weight=0.1)


@pytest.mark.slow
def test_killed_preference_resumes_bit_identical(shared_base, tmp_path):
    from tests.test_faults import kill_when, start

    reference = stage_repo(shared_base, tmp_path / "reference", **KILL_PARAMS)
    write_samples(reference)
    proc = run_preference(reference)
    assert proc.returncode == 0, proc.stderr[-3000:]

    repo = stage_repo(shared_base, tmp_path / "repo", **KILL_PARAMS)
    write_samples(repo)
    ckpt = repo / "data/preference_checkpoints"
    saved = lambda: sorted(int(p.name) for p in ckpt.iterdir() if p.name.isdigit()) if ckpt.is_dir() else []
    log = tmp_path / "killed.log"
    killed = start([sys.executable, "-m", "stages.preference"], repo, log)
    kill_when(killed, lambda: bool(saved()), log)
    assert saved() and max(saved()) < 6 and not (repo / "data/preferred").exists()

    proc = run_preference(repo)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "preference: resumed from the checkpoint of step" in proc.stdout
    assert files_under(repo / "data/preferred") == files_under(reference / "data/preferred")  # weights and curve
    assert saved() == []
