"""The evidence and package stages on a small fixture repository in tmp_path."""

import hashlib
import io
import json
import os
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest
import yaml

from reasoning.answers import parse_completion
from stages import evaluate, evidence, package, paths, report
from stages.common import StageError

REPO = Path(__file__).resolve().parent.parent
COMMIT = "0123456789abcdef0123456789abcdef01234567"
LOCKED = (
    "seed",
    "tokenizer",
    "train",
    "grpo",
    "predict@tunix",
    "predict@gsm8k_test",
    "evaluate@tunix",
    "evaluate@gsm8k_test",
    "report",
    "evidence",
    "package",
)
GSM8K_TEST = [{"question": "Tom has 3 bags of 4 apples. How many apples?", "answer": "3*4 = <<3*4=12>>12\n#### 12"}]


def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def write_jsonl(path: Path, records) -> Path:
    return write(path, "".join(json.dumps(r) + "\n" for r in records))


def lock_entry(name: str, md5: str) -> dict:
    return {
        "cmd": f"python -m stages.{name}",
        "deps": [{"path": f"stages/{name}.py", "hash": "md5", "md5": "d" * 32, "size": 10}],
        "outs": [{"path": f"data/{name}", "hash": "md5", "md5": md5, "size": 20}],
    }


@pytest.fixture
def params():
    """The project's params with its synthetic set and a small GSM8K-format set of the test's own."""
    p = yaml.safe_load((REPO / "params.yaml").read_text())
    p["evaluate"]["sets"] = {
        "tunix": p["evaluate"]["sets"]["tunix"],
        "gsm8k_test": {"path": "evalsets/gsm8k_test.jsonl", "format": "gsm8k"},
    }
    return p


def write_predictions(root: Path, name: str, completions: dict) -> None:
    write_jsonl(
        root / paths.predictions(name),
        [
            {"id": k, "completion": c, **parse_completion(c), "n_tokens": 12, "truncated": False}
            for k, c in completions.items()
        ],
    )


@pytest.fixture
def root(tmp_path, params):
    """Everything the earlier stages would have left behind, in miniature."""
    root = tmp_path / "repo"
    write(root / "params.yaml", yaml.safe_dump(params, sort_keys=False))
    write(root / "dvc.yaml", yaml.safe_dump({"stages": {n: {"cmd": f"python -m stages.{n}"} for n in LOCKED}}))
    write(
        root / "dvc.lock",
        yaml.safe_dump(
            {"schema": "2.0", "stages": {n: lock_entry(n, f"{i:032x}") for i, n in enumerate(LOCKED)}}, sort_keys=False
        ),
    )
    write_jsonl(root / "data/train.jsonl", [{"id": f"t{i}", "prompt": "1+1?", "final_answer": "2"} for i in range(3)])
    write(root / "data/train_manifest.json", json.dumps({"n_records": 3, "source": "synthetic", "mix": {"a": 1}}))
    write(
        root / "data/decontamination.json",
        json.dumps(
            {
                "policy": "drop",
                "ngram": 13,
                "sets": {
                    name: {
                        "path": f"evalsets/{name}.jsonl",
                        "format": "items",
                        "sha256": "0" * 64,
                        "prompts": 2,
                        "redrawn": 1,
                        "dropped_exact": 0,
                        "dropped_ngram": 0,
                        "synthetic_ngram_shared": 0,
                    }
                    for name in ("tunix", "gsm8k_test")
                },
            }
        ),
    )
    write(root / "data/base/base.json", json.dumps({"preset": "tiny", "checkpoint": None}))
    write(root / "data/model/config.json", json.dumps({"hidden_size": 64, "num_hidden_layers": 2}))
    write(root / "data/model/model.safetensors", b"\x00weights")
    write(
        root / "data/model/training_info.json",
        json.dumps(
            {
                "preset": "tiny",
                "checkpoint": None,
                "n_params": 123456,
                "steps": 20,
                "tokens_per_step": 256,
                "final_loss": 0.5,
                "loss_history": [[10, 2.25], [20, 0.5]],
                "packing": {"examples": 3, "rows": 2, "fill": 0.75, "truncated": 0},
                "versions": {"jax": "0.4.35", "flax": "0.10.2", "optax": "0.2.4"},
                "devices": ["cpu:0"],
            }
        ),
    )
    shutil.copytree(root / "data/model", root / "data/policy")  # grpo.steps 0: the policy is the model
    items = [
        {
            "id": "core-001",
            "prompt": "6*7?",
            "expected_answer": "42",
            "section": "core",
            "category": "arithmetic",
            "difficulty": "easy",
            "answer_type": "number",
        },
        {
            "id": "edge-001",
            "prompt": "Is 4 even?",
            "expected_answer": "yes",
            "section": "edge_case",
            "category": "comparison",
            "difficulty": "hard",
            "answer_type": "bool",
        },
    ]
    write_jsonl(root / paths.EVALSET, items)
    completions = {
        "core-001": "<reasoning>6*7=42</reasoning><answer>42</answer>",
        "edge-001": "<reasoning>r</reasoning><answer>no</answer>",
    }
    write_predictions(root, "tunix", completions)
    write_jsonl(root / "evalsets/gsm8k_test.jsonl", GSM8K_TEST)
    write_predictions(root, "gsm8k_test", {"core-001": "<reasoning>3*4=12</reasoning><answer>12</answer>"})
    for name in ("tunix", "gsm8k_test"):
        evaluate.run(params, name, root)
    report.run(params, root)
    for name in ("__init__", "seed", "tokenizer", "evaluate"):
        write(root / f"stages/{name}.py", f"# {name}\n")
    write(root / "stages/token_cache.py", "HF_TOKEN = 'hf_secret'\n")
    write(root / "training/model.py", "# model\n")
    write(root / "schemas/eval_item.schema.json", "{}\n")
    write(root / "schemas/credentials.json", '{"key": "secret"}\n')
    write(root / "notebooks/tunix_rt.ipynb", '{"cells": []}\n')
    write(root / "README.md", "# tunix-rt\n")  # the docs are not packaged: editing them leaves the zip as it was
    write(root / "docs/index.md", "# tunix-rt\n")
    write(root / ".env", "KAGGLE_KEY=secret\n")
    return root


def run_evidence(root, params):
    return evidence.run(params, root, commit=COMMIT)


# ---------------------------------------------------------------- evidence


def test_evidence_files(root, params):
    run_dir = run_evidence(root, params)
    assert sorted(p.name for p in run_dir.iterdir()) == ["eval_summary.json", "run_log.txt", "run_manifest.json"]
    manifest = json.loads((run_dir / "run_manifest.json").read_text())
    assert manifest["run_version"] == params["base"]["run_version"]
    assert manifest["model"]["n_params"] == 123456 and manifest["model"]["config"]["hidden_size"] == 64
    weights_sha = hashlib.sha256(b"\x00weights").hexdigest()
    expected_id = hashlib.sha256(f"model.safetensors\0{weights_sha}\n".encode()).hexdigest()
    assert manifest["model"]["id"] == "sha256:" + expected_id
    assert manifest["dataset"]["n_records"] == 3
    assert manifest["dataset"]["sha256"] == hashlib.sha256((root / "data/train.jsonl").read_bytes()).hexdigest()
    assert manifest["dataset"]["manifest"]["source"] == "synthetic"
    assert manifest["dataset"]["decontamination"]["sets"]["tunix"]["redrawn"] == 1
    assert manifest["primary_set"] == "tunix"
    assert manifest["eval_sets"] == {
        "tunix": {
            "path": "evalsets/tunix_eval_v1.jsonl",
            "format": "items",
            "n_items": 2,
            "primary": True,
            "sha256": hashlib.sha256((root / paths.EVALSET).read_bytes()).hexdigest(),
        },
        "gsm8k_test": {
            "path": "evalsets/gsm8k_test.jsonl",
            "format": "gsm8k",
            "n_items": 1,
            "primary": False,
            "sha256": hashlib.sha256((root / "evalsets/gsm8k_test.jsonl").read_bytes()).hexdigest(),
        },
    }
    assert manifest["params"] == params and manifest["command"] == "dvc repro"
    assert manifest["stages"]["train"] == "python -m stages.train"
    assert manifest["git"]["commit"] == COMMIT
    assert set(manifest["dvc_lock"]) == set(LOCKED) - {"evidence", "package"}
    assert manifest["dvc_lock"]["train"]["outs"] == [{"path": "data/train", "md5": f"{2:032x}"}]
    assert manifest["environment"]["versions"]["jax"] == "0.4.35"
    assert "tokens_per_second" not in json.dumps(manifest)
    summary = json.loads((run_dir / "eval_summary.json").read_text())
    assert summary["primary_score"] == 0.5 and summary["metrics"]["n_items"] == 2 and summary["primary_set"] == "tunix"
    assert {k: v["primary_score"] for k, v in summary["sets"].items()} == {"tunix": 0.5, "gsm8k_test": 1.0}
    assert summary["breakdowns"]["section"]["core"]["accuracy"] == 1.0
    log = (run_dir / "run_log.txt").read_text()
    assert "      10    2.250000" in log and "      20    0.500000" in log
    assert "primary_score: 0.5000" in log and "by section" in log and "edge_case" in log
    assert "gsm8k_test: evalsets/gsm8k_test.jsonl (gsm8k), 1 items, sha256 " in log and "primary_score 1.0000" in log
    assert "decontamination.tunix: " in log
    assert "judge's score" not in log  # every set here is checked by rule


def test_the_log_says_whose_score_a_judged_set_has(root, params):
    run_dir = run_evidence(root, params)
    manifest = json.loads((run_dir / "run_manifest.json").read_text())
    summary = json.loads((run_dir / "eval_summary.json").read_text())
    manifest["params"]["evaluate"]["sets"]["gsm8k_test"]["answer_type"] = "judged"
    log = evidence.render_log(manifest, summary, [])
    assert "gsm8k_test: evalsets/gsm8k_test.jsonl (gsm8k), 1 items" in log
    assert "primary_score 1.0000 (the rubric judge's score: no rule checks these answers)" in log
    assert log.count("judge's score") == 1  # the tunix set is checked by rule


def test_evidence_is_deterministic(root, params):
    run_dir = run_evidence(root, params)
    first = {p.name: p.read_bytes() for p in run_dir.iterdir()}
    run_evidence(root, params)
    assert {p.name: p.read_bytes() for p in run_dir.iterdir()} == first
    assert not [p for p in run_dir.parent.iterdir() if p.name.startswith(".")]  # no temp dirs left


def test_evidence_refuses_null_primary_score(root, params):
    preds = evaluate.read_jsonl(root / paths.predictions("tunix"))
    nothing = dict(completion="", reasoning=None, answer=None, format_ok=False, n_tokens=0)  # not one token generated
    write_jsonl(root / paths.predictions("tunix"), [dict(p, **nothing) for p in preds])
    evaluate.run(params, "tunix", root)
    report.run(params, root)
    with pytest.raises(StageError, match=r"eval_summary\.json: primary_score: None is not of type 'number'"):
        run_evidence(root, params)
    assert not (root / paths.SUBMISSION_RUNS).exists()


def test_evidence_needs_every_lock_entry(root, params):
    lock = yaml.safe_load((root / "dvc.lock").read_text())
    del lock["stages"]["predict@gsm8k_test"]
    write(root / "dvc.lock", yaml.safe_dump(lock))
    with pytest.raises(StageError, match=r"dvc\.lock: stages\.predict@gsm8k_test: no lock entry"):
        run_evidence(root, params)


def test_evidence_refuses_reports_of_another_configuration(root, params):
    params["evaluate"]["sets"]["gsm8k_test"]["format"] = "items"  # params changed after evaluate ran
    with pytest.raises(
        StageError,
        match=r"reports/sets/gsm8k_test/scorecard\.json: eval_set: scored "
        r"evalsets/gsm8k_test\.jsonl \(gsm8k\), params say .* \(items\); run dvc repro",
    ):
        run_evidence(root, params)
    params["evaluate"]["sets"]["gsm8k_test"]["format"] = "gsm8k"
    params["evaluate"]["sets"]["tunix"]["primary"] = False
    params["evaluate"]["sets"]["gsm8k_test"]["primary"] = True
    with pytest.raises(StageError, match=r"reports/metrics\.json: primary_set: 'tunix', params say 'gsm8k_test'"):
        run_evidence(root, params)


@pytest.mark.parametrize(
    ("edit", "field", "message"),
    [
        (lambda i: i.pop("versions"), "versions", "'versions' is a required property"),
        (lambda i: i.update(steps=0), "steps", "0 is less than the minimum of 1"),
        (lambda i: i["loss_history"].append([30, "low"]), r"loss_history\[2\]\[1\]", "'low' is not of type 'number'"),
        (lambda i: i.update(tokens_per_second=1.0), "<record>|tokens_per_second", "Additional properties"),
    ],
)
def test_evidence_checks_training_info(root, params, edit, field, message):
    """data/model/training_info.json is read against schemas/training_info.schema.json: errors name the file
    and the field."""
    info = json.loads((root / paths.TRAINING_INFO).read_text())
    edit(info)
    write(root / paths.TRAINING_INFO, json.dumps(info))
    with pytest.raises(StageError, match=rf"data/model/training_info\.json: ({field}): {message}"):
        run_evidence(root, params)


def test_git_commit(tmp_path, monkeypatch):
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    repo = tmp_path / "g"
    repo.mkdir()
    with pytest.raises(StageError, match="git rev-parse HEAD"):
        evidence.git_commit(repo)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    subprocess.run([*git, "commit", "-q", "--allow-empty", "-m", "x"], cwd=repo, check=True)
    assert len(evidence.git_commit(repo)) == 40


# ---------------------------------------------------------------- package


def zip_entries(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        return {info.filename: zf.read(info) for info in zf.infolist()}


def test_package_contents(root, params):
    run_evidence(root, params)
    rv = params["base"]["run_version"]
    path = package.run(params, root)
    data = path.read_bytes()
    assert path.name == f"tunix_rt_{rv}_{hashlib.sha256(data).hexdigest()[:12]}.zip"
    assert [p.name for p in path.parent.iterdir()] == [path.name]
    entries = zip_entries(data)
    assert sorted(entries) == [
        "SUBMISSION_README.md",
        "data/decontamination.json",
        "data/train_manifest.json",
        "dvc.lock",
        "dvc.yaml",
        "evalsets/gsm8k_test.jsonl",
        "evalsets/tunix_eval_v1.jsonl",
        "notebooks/tunix_rt.ipynb",
        "params.yaml",
        "schemas/eval_item.schema.json",
        "stages/__init__.py",
        "stages/evaluate.py",
        "stages/seed.py",
        "stages/tokenizer.py",
        f"submission_runs/{rv}/eval_summary.json",
        f"submission_runs/{rv}/run_log.txt",
        f"submission_runs/{rv}/run_manifest.json",
        "training/model.py",
    ]
    assert not any(b"secret" in v for v in entries.values())
    lock = yaml.safe_load(entries["dvc.lock"])
    assert "package" not in lock["stages"] and "evidence" in lock["stages"]
    readme = entries["SUBMISSION_README.md"].decode()
    assert "primary_score (answer accuracy on the primary eval set, tunix): **0.5000**" in readme
    assert COMMIT in readme and "dvc repro" in readme
    sha = hashlib.sha256((root / "evalsets/gsm8k_test.jsonl").read_bytes()).hexdigest()
    assert f"| gsm8k_test | `evalsets/gsm8k_test.jsonl` | 1 | 1.0000 | 1.0000 | `{sha}` |" in readme
    assert "| tunix (primary) | `evalsets/tunix_eval_v1.jsonl` | 2 | 0.5000 |" in readme
    assert "- `stages/tokenizer.py`" in readme
    with zipfile.ZipFile(path) as zf:
        for info in zf.infolist():
            assert info.date_time == (1980, 1, 1, 0, 0, 0)
            assert info.external_attr >> 16 == 0o100644
            assert info.compress_type == zipfile.ZIP_DEFLATED


def test_package_is_deterministic(root, params):
    run_evidence(root, params)
    first = package.run(params, root)
    first_bytes = first.read_bytes()
    # A different package entry in dvc.lock (the previous package run) must not change the zip.
    lock = yaml.safe_load((root / "dvc.lock").read_text())
    lock["stages"]["package"]["outs"][0]["md5"] = "f" * 32
    write(root / "dvc.lock", yaml.safe_dump(lock, sort_keys=False))
    os.utime(root / "params.yaml", (0, 0))  # mtimes must not matter either
    second = package.run(params, root)
    assert second == first and second.read_bytes() == first_bytes


def test_package_refuses_invalid_evidence(root, params):
    run_dir = run_evidence(root, params)
    summary = json.loads((run_dir / "eval_summary.json").read_text())
    write(run_dir / "eval_summary.json", json.dumps(dict(summary, primary_score=None)))
    with pytest.raises(StageError, match=r"eval_summary\.json: primary_score: None is not of type 'number'"):
        package.run(params, root)
    assert not (root / paths.SUBMISSION).exists()


def test_package_refuses_missing_evidence(root, params):
    with pytest.raises(StageError, match=r"run_manifest\.json: file not found"):
        package.run(params, root)


def test_package_refuses_symlink_outside(root, params, tmp_path):
    run_evidence(root, params)
    outside = write(tmp_path / "outside.py", "print('not ours')\n")
    (root / "stages/evil.py").symlink_to(outside)
    with pytest.raises(StageError, match=r"stages/evil\.py: resolves outside the repository"):
        package.run(params, root)


def test_symlink_inside_is_followed(root, params):
    run_evidence(root, params)
    (root / "training/alias.py").symlink_to(root / "training/model.py")
    data = package.run(params, root).read_bytes()
    assert zip_entries(data)["training/alias.py"] == b"# model\n"


def test_unwritable_target_is_one_line_error(root, params):
    run_evidence(root, params)
    blocker = write(root / "not_a_dir", "x")
    with pytest.raises(StageError, match=r"not_a_dir/submission: cannot write the submission") as err:
        package.run(params, root, out_dir=blocker / "submission")
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    "name, secret",
    [
        (".env", True),
        (".env.local", True),
        ("id_rsa", True),
        ("server.pem", True),
        ("aws_credentials.json", True),
        ("kaggle.json", True),
        ("hf_token.txt", True),
        ("token_cache.py", True),
        ("client_secret.json", True),
        ("tokenizer.py", False),
        ("tokenizer.json", False),
        ("model.py", False),
        ("params.yaml", False),
    ],
)
def test_is_secret(name, secret):
    assert package.is_secret(name) is secret


def test_evidence_records_the_rl_run(root, params):
    manifest = json.loads((run_evidence(root, params) / "run_manifest.json").read_text())
    from stages.common import sha256_tree

    assert manifest["rl"]["steps"] == 0 and manifest["rl"]["sft_model_sha256"] == sha256_tree(root / "data/model")
    params["grpo"]["steps"] = 5
    curve = {
        "first": 0.5,
        "last": 1.25,
        "first_tenth_mean": 0.5,
        "last_tenth_mean": 1.25,
        "zero_variance_share_mean": 0.4,
    }
    write(root / "data/policy/model.safetensors", b"\x00other weights")
    info = {
        "steps": 5,
        "params": params["grpo"],
        "reward_curve": curve,
        "history": [{"step": 5.0, "reward_mean": 1.25}],
        "sft_model": {"path": "data/model", "sha256": "ab" * 32},
    }
    write(root / paths.GRPO_INFO, json.dumps({**info, "reward_curve": {**curve, "last": None}}))
    with pytest.raises(
        StageError, match=r"data/policy/grpo_info\.json: reward_curve\.last: None is not of type 'number'"
    ):
        run_evidence(root, params)
    write(root / paths.GRPO_INFO, json.dumps(info))
    run_dir = run_evidence(root, params)
    rl = json.loads((run_dir / "run_manifest.json").read_text())["rl"]
    assert rl["steps"] == 5 and rl["reward_curve"] == curve and rl["sft_model_sha256"] == "ab" * 32
    assert rl["params"]["steps"] == 5 and rl["policy_id"] != manifest["rl"]["policy_id"]
    log = (run_dir / "run_log.txt").read_text()
    assert "== reinforcement learning (grpo)" in log and "last 1.2500" in log
