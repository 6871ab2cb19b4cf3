"""Bad input, stage by stage, through the real CLI (`python -m stages.<name>` in a copy of the project).

Every case breaks one input of a stage whose outputs already exist, runs the
stage, and checks the contract of DESIGN.md: a non-zero exit, exactly one line
on stderr, `error: <file>[:<line>]: <field>: …`, and nothing already produced is
lost (every file of the copy is byte-identical afterwards; no temporaries left).

The base copy is built once per test session (the `shared_base` fixture of
conftest.py; test_safety.py and test_faults.py copy it too), cheaply: seed,
tokenizer, evaluate, evidence and package run for real; the model is a freshly
initialised tiny model (no training), the predictions are written by hand and
dvc.lock is crafted (no `dvc repro`).
Train and predict cases all fail before anything is compiled.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from reasoning.answers import parse_completion
from tests.pipeline_utils import SMALL_PARAMS, env, make_repo

EVAL_SET = "evalsets/tunix_eval_v1.jsonl"
TRAIN = "data/train.jsonl"
PREDICTIONS = "data/predictions/tunix.jsonl"  # predict@tunix -> evaluate@tunix
SCORECARD = "reports/sets/tunix/scorecard.json"
GSM8K = "trainsets/gsm8k.jsonl"
PER_SET = ("predict", "evaluate")  # foreach stages: `python -m stages.<stage> <set>`
MODEL = "data/model"
POLICY = "data/policy"  # what predict reads: the grpo stage's copy of the model (grpo.steps 0)
RUN_DIR = "submission_runs/v1"
HUGE = 5 * 1024 * 1024  # a 5 MB string field

# Small and fast: no stage here trains or generates.
BASE_PARAMS = {
    "seed": {"size": 200},
    "tokenizer": {"vocab_size": 400},
    "train": {"steps": 4, "batch_size": 2, "seq_len": 128, "warmup_steps": 1, "log_every": 2, "save_every": 2},
    "predict": {"batch_size": 64, "max_new_tokens": 16},
    "evaluate": SMALL_PARAMS["evaluate"],
}

MAKE_MODEL = """
from pathlib import Path
import jax
from stages.common import load_params, write_json
from training import tokenizer as tokenizers_io
from training.factory import build_model
from training.hf_io import save_pretrained

params = load_params()
tok = tokenizers_io.load(Path("data/tokenizer"))
model = build_model(params["model"], tok.get_vocab_size(), params["base"]["seed"])
save_pretrained(model, Path("data/model"), tokenizer_dir=Path("data/tokenizer"))
write_json("data/model/training_info.json", {
    "preset": "tiny", "checkpoint": None, "n_params": model.config.num_params(), "steps": 4,
    "tokens_per_step": 256, "final_loss": 3.5, "loss_history": [[2, 4.0], [4, 3.5]],
    "packing": {"examples": 200, "rows": 100, "fill": 0.9, "truncated": 0},
    "versions": {"jax": jax.__version__}, "devices": [str(d) for d in jax.devices()],
})
"""


# ---------------------------------------------------------------- helpers


def stage_env(**extra: str) -> dict[str, str]:
    e = env()
    e["PYTHONDONTWRITEBYTECODE"] = "1"
    e["JAX_PLATFORMS"] = "cpu"
    e.update(extra)
    return e


def run_stage(repo: Path, stage: str, **kw) -> subprocess.CompletedProcess:
    """`python -m stages.<stage>` in `repo` (for the default eval set, tunix, when the stage runs per set)."""
    return subprocess.run(
        [sys.executable, "-m", f"stages.{stage}", *(["tunix"] if stage in PER_SET else [])],
        cwd=repo,
        env=stage_env(),
        capture_output=True,
        text=True,
        timeout=300,
        **kw,
    )


def run_python(repo: Path, code: str) -> None:
    proc = subprocess.run([sys.executable, "-c", code], cwd=repo, env=stage_env(), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]


def must_succeed(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"


def snapshot(repo: Path) -> dict[str, str]:
    """relative path -> sha256 of every file (and link target) in the copy, .git and caches aside."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(repo):
        dirnames[:] = [d for d in dirnames if d not in (".git", "__pycache__")]
        for name in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            path = Path(dirpath) / name
            rel = path.relative_to(repo).as_posix()
            if path.is_symlink():
                out[rel] = "link:" + os.readlink(path)
            else:
                out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
        for d in dirnames:
            out.setdefault(Path(dirpath, d).relative_to(repo).as_posix() + "/", "dir")
    return out


def assert_one_line_error(
    proc: subprocess.CompletedProcess, file: str, line: int | None, field: str | None, text: str | None
) -> str:
    """The stage failed with exactly `error: <file>[:<line>]: [<field>: ]…` on stderr; returns the message."""
    assert proc.returncode != 0, f"expected a failure, got exit 0\n{proc.stdout[-2000:]}"
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and proc.stderr.endswith("\n"), f"not one line:\n{proc.stderr[-3000:]}"
    assert lines[0].startswith("error: "), lines[0]
    message = lines[0][len("error: ") :]
    prefix = f"{file}:{line}: " if line is not None else f"{file}"
    assert message.startswith(prefix), f"{message!r} does not start with {prefix!r}"
    if line is None:
        rest = message[len(file) :]
        assert rest.startswith(":") or rest.startswith(" ") or rest.startswith("/"), message
    if field is not None:
        assert field in message[len(prefix) :], f"field {field!r} not named in {message!r}"
    if text is not None:
        assert text in message, f"{text!r} not in {message!r}"
    return message


# ---------------------------------------------------------------- input surgery


def read_lines(repo: Path, rel: str) -> list[str]:
    return (repo / rel).read_text(encoding="utf-8").splitlines()


def write_lines(repo: Path, rel: str, lines: list[str]) -> None:
    (repo / rel).write_text("\n".join(lines) + "\n", encoding="utf-8")


def edit_record(rel: str, lineno: int, change: Callable[[dict], None]) -> Callable[[Path], None]:
    """Rewrite one JSONL record (1-based line) through `change`."""

    def mutate(repo: Path) -> None:
        lines = read_lines(repo, rel)
        record = json.loads(lines[lineno - 1])
        change(record)
        lines[lineno - 1] = json.dumps(record)
        write_lines(repo, rel, lines)

    return mutate


def replace_line(rel: str, lineno: int, raw: bytes) -> Callable[[Path], None]:
    def mutate(repo: Path) -> None:
        lines = (repo / rel).read_bytes().split(b"\n")
        lines[lineno - 1] = raw
        (repo / rel).write_bytes(b"\n".join(lines))

    return mutate


def copy_line(rel: str, src: int, dst: int) -> Callable[[Path], None]:
    """Line `dst` becomes a copy of line `src` (a duplicate id on line `dst`)."""

    def mutate(repo: Path) -> None:
        lines = read_lines(repo, rel)
        lines[dst - 1] = lines[src - 1]
        write_lines(repo, rel, lines)

    return mutate


def set_param(dotted: str, value) -> Callable[[Path], None]:
    *parents, key = dotted.split(".")

    def mutate(repo: Path) -> None:
        params = yaml.safe_load((repo / "params.yaml").read_text())
        node = params
        for name in parents:
            node = node[name]
        node[key] = value
        (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    return mutate


def param_line(repo: Path, section: str, key: str | None = None) -> int:
    """1-based line of `section:` (or of `key:` inside it) in params.yaml."""
    current = None
    for n, text in enumerate((repo / "params.yaml").read_text().splitlines(), start=1):
        if text and not text.startswith(" "):
            current = text.split(":")[0]
            if current == section and key is None:
                return n
        elif current == section and text.strip().startswith(f"{key}:"):
            return n
    raise AssertionError(f"{section}.{key} not in params.yaml")


def write_file(rel: str, data: bytes | str) -> Callable[[Path], None]:
    def mutate(repo: Path) -> None:
        path = repo / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data if isinstance(data, bytes) else data.encode())

    return mutate


def remove(rel: str) -> Callable[[Path], None]:
    def mutate(repo: Path) -> None:
        path = repo / rel
        shutil.rmtree(path) if path.is_dir() else path.unlink()

    return mutate


def both(*mutations: Callable[[Path], None]) -> Callable[[Path], None]:
    def mutate(repo: Path) -> None:
        for m in mutations:
            m(repo)

    return mutate


def edit_json(rel: str, change: Callable[[dict], None]) -> Callable[[Path], None]:
    def mutate(repo: Path) -> None:
        doc = json.loads((repo / rel).read_text())
        change(doc)
        (repo / rel).write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")

    return mutate


GSM8K_GOOD = {
    "question": "Mia picks 48 apples on Monday and half as many on Tuesday. How many apples does she pick in all?",
    "answer": "On Tuesday she picks 48/2 = <<48/2=24>>24.\nIn all 48+24 = <<48+24=72>>72.\n#### 72",
}


def gsm8k(*rows: dict | str | bytes) -> Callable[[Path], None]:
    """Switch the seed stage to a GSM8K file whose lines are `rows` (dicts as JSON, bytes raw)."""
    raw = [r if isinstance(r, bytes) else (r if isinstance(r, str) else json.dumps(r)).encode() for r in rows]
    return both(
        set_param("seed.sources", [{"type": "gsm8k", "path": GSM8K}]),
        write_file(GSM8K, b"\n".join(raw) + (b"\n" if raw else b"")),
    )


def file_source(rows: list[dict], fields: dict) -> Callable[[Path], None]:
    """Switch the seed stage to a JSONL file source of `rows` read through the mapping `fields`."""
    return both(
        set_param("seed.sources", [{"type": "file", "path": "trainsets/mine.jsonl", "fields": fields}]),
        write_file("trainsets/mine.jsonl", "".join(json.dumps(r) + "\n" for r in rows)),
    )


def eval_set_twice(repo: Path) -> None:
    """params.yaml naming the eval set tunix twice (YAML itself would silently keep the second)."""
    text = (repo / "params.yaml").read_text()
    entry = "    tunix:\n"
    at = text.index(entry)
    (repo / "params.yaml").write_text(text[:at] + entry + "      path: evalsets/tunix_eval_v1.jsonl\n" + text[at:])


def set_line(name: str, occurrence: int) -> Callable[[Path], int]:
    """1-based line of the `occurrence`-th `name:` key under evaluate.sets."""

    def line(repo: Path) -> int:
        found = [n for n, t in enumerate((repo / "params.yaml").read_text().splitlines(), 1) if t == f"    {name}:"]
        return found[occurrence - 1]

    return line


def eval_prompt(repo: Path, index: int = 11) -> tuple[str, str]:
    item = json.loads(read_lines(repo, EVAL_SET)[index])
    return item["prompt"], item["id"]


def leak(repo: Path) -> None:
    prompt, _ = eval_prompt(repo)
    gsm8k(GSM8K_GOOD, {"question": prompt, "answer": "x = 1\n#### 1"})(repo)
    set_param("seed.decontamination", "fail")(repo)  # the default, drop, would drop it and go on


def bigger_tokenizer(repo: Path) -> None:
    """data/policy/tokenizer.json with 40 more tokens than the model's embedding has rows."""
    code = (
        "from tokenizers import Tokenizer\n"
        "tok = Tokenizer.from_file('data/policy/tokenizer.json')\n"
        "tok.add_tokens([f'extra_token_{i}' for i in range(40)])\n"
        "tok.save('data/policy/tokenizer.json')\n"
    )
    run_python(repo, code)


USER_REWARDS = """
def boom(prompt, completion, **fields):
    return 1 / 0


def not_a_number(prompt, completion, **fields):
    return float("nan")
"""


def user_reward(spec: str) -> Callable[[Path], None]:
    """RL on (two steps), with the user reward `spec` from my_rewards.py at the repository root."""
    return both(
        write_file("my_rewards.py", USER_REWARDS),
        set_param("grpo.steps", 2),
        set_param("grpo.user_rewards", {spec: 1.0}),
    )


def truncate(rel: str, keep: int) -> Callable[[Path], None]:
    def mutate(repo: Path) -> None:
        data = (repo / rel).read_bytes()
        (repo / rel).write_bytes(data[:keep])

    return mutate


def gemma_dir(rel: str, cut: int | None = None) -> Callable[[Path], None]:
    """A Hugging Face directory at `rel` with gemma3-270m's config.json, a tokenizer.json and a small
    model.safetensors (its last `cut` bytes cut off), and params naming it as the checkpoint."""

    def mutate(repo: Path) -> None:
        import numpy as np
        from safetensors.numpy import save_file

        from training.config import PRESET_SHAPES

        folder = repo / rel
        folder.mkdir(parents=True)
        (folder / "config.json").write_text(json.dumps(PRESET_SHAPES["gemma3-270m"]().to_hf()))
        shutil.copyfile(repo / "data/tokenizer/tokenizer.json", folder / "tokenizer.json")
        save_file(
            {"a": np.zeros((64, 64), np.float32), "b": np.ones(256, np.float32)}, str(folder / "model.safetensors")
        )
        if cut:
            truncate(f"{rel}/model.safetensors", (folder / "model.safetensors").stat().st_size - cut)(repo)
        set_param("model.preset", "gemma3-270m")(repo)

    return mutate


def checkpoint(rel: str) -> Callable[[Path], None]:
    return both(set_param("model.preset", "gemma3-270m"), set_param("model.checkpoint", rel))


def folder_link(link: str, target: str) -> Callable[[Path], None]:
    def mutate(repo: Path) -> None:
        (repo / link).symlink_to(os.path.relpath(repo / target, (repo / link).parent), target_is_directory=True)

    return mutate


def float_param(section: str, key: str, text: str) -> Callable[[Path], None]:
    """params.yaml with `section.key` written as `text`, as `dvc exp run -S` writes it (24e3 -> 24000.0)."""

    def mutate(repo: Path) -> None:
        lines = read_lines(repo, "params.yaml")
        at = param_line(repo, section, key) - 1
        indent = lines[at][: len(lines[at]) - len(lines[at].lstrip())]
        lines[at] = f"{indent}{key}: {text}"
        write_lines(repo, "params.yaml", lines)

    return mutate


# ---------------------------------------------------------------- the base copy


def build_base(dest: Path) -> Path:
    """A project copy in which every stage has produced its outputs (see the module docstring)."""
    repo = make_repo(dest, BASE_PARAMS)
    must_succeed(run_stage(repo, "base"))
    must_succeed(run_stage(repo, "seed"))
    must_succeed(run_stage(repo, "tokenizer"))
    run_python(repo, MAKE_MODEL)
    must_succeed(run_stage(repo, "samples"))  # samples.prompts 0: an empty file
    must_succeed(run_stage(repo, "preference"))  # preference.steps 0: data/preferred is the model
    must_succeed(run_stage(repo, "grpo"))  # grpo.steps 0: the policy is the model
    items = [json.loads(line) for line in read_lines(repo, EVAL_SET)]
    predictions = []
    for i, item in enumerate(items):
        answer = item["expected_answer"] if i % 2 == 0 else "0"
        completion = f"<reasoning>step {i}</reasoning><answer>{answer}</answer>"
        predictions.append(
            {
                "id": item["id"],
                "completion": completion,
                **parse_completion(completion),
                "n_tokens": 8 + i % 5,
                "truncated": False,
            }
        )
    (repo / PREDICTIONS).parent.mkdir(parents=True)
    write_lines(repo, PREDICTIONS, [json.dumps(p, sort_keys=True) for p in predictions])
    must_succeed(run_stage(repo, "evaluate"))
    must_succeed(run_stage(repo, "report"))
    lock = {"schema": "2.0", "stages": {}}
    for i, name in enumerate(("seed", "tokenizer", "train", "grpo", "predict@tunix", "evaluate@tunix", "report")):
        lock["stages"][name] = {
            "cmd": f"python -m stages.{name.split('@')[0]}",
            "deps": [{"path": f"stages/{name.split('@')[0]}.py", "hash": "md5", "md5": f"{i:032x}", "size": 1}],
            "outs": [{"path": f"out/{name}", "hash": "md5", "md5": f"{i + 16:032x}", "size": 1}],
        }
    (repo / "dvc.lock").write_text(yaml.safe_dump(lock, sort_keys=False))
    must_succeed(run_stage(repo, "evidence"))
    must_succeed(run_stage(repo, "package"))
    assert len(list((repo / "submission").glob("*.zip"))) == 1
    return repo


@pytest.fixture
def repo(shared_base, tmp_path) -> Path:
    """A private copy of the base for one case."""
    dest = tmp_path / "repo"
    shutil.copytree(shared_base, dest, symlinks=True)
    return dest


# ---------------------------------------------------------------- the matrix


@dataclass(frozen=True)
class Case:
    id: str
    stage: str
    mutate: Callable[[Path], None]
    file: str
    line: int | Callable[[Path], int] | None
    field: str | None
    text: str | None = None


def pline(section: str, key: str | None = None) -> Callable[[Path], int]:
    return lambda repo: param_line(repo, section, key)


def pkeys(*keys) -> Callable[[Path], int]:
    """The line of the deepest node of params.yaml on the path `keys` (where a nested key's error points)."""
    from stages.common import yaml_line

    return lambda repo: yaml_line((repo / "params.yaml").read_text(), list(keys))


CASES = [
    # ---- params.yaml (every stage validates it whole; each case goes to the stage that uses the knob)
    Case(
        "params-unknown-key",
        "seed",
        set_param("seed.colour", "blue"),
        "params.yaml",
        pline("seed"),
        "seed",
        "'colour' was unexpected",
    ),
    Case(
        "params-malformed-yaml",
        "evaluate",
        write_file("params.yaml", "base:\n  seed: 1\n  run_version: [v1\n"),
        "params.yaml",
        4,
        None,
        "not valid YAML",
    ),
    Case(
        "params-negative-learning-rate",
        "train",
        set_param("train.learning_rate", -1.0),
        "params.yaml",
        pline("train", "learning_rate"),
        "train.learning_rate",
        "-1.0 is less than or equal to",
    ),
    Case(
        "params-batch-size-0",
        "train",
        set_param("train.batch_size", 0),
        "params.yaml",
        pline("train", "batch_size"),
        "train.batch_size",
        "0 is less than the minimum of 1",
    ),
    Case(
        "params-batch-not-a-multiple-of-grad-accum",
        "train",
        both(set_param("train.batch_size", 6), set_param("train.grad_accum", 4)),
        "params.yaml",
        pline("train", "batch_size"),
        "train.batch_size",
        "a batch of 6 is not a multiple of",
    ),
    Case(
        "params-tiny-shape-impossible",
        "train",
        set_param("model.tiny.num_key_value_heads", 3),
        "params.yaml",
        pline("model", "tiny"),
        "model.tiny",
        "must be a multiple of num_key_value_heads",
    ),
    Case(
        "params-max-new-tokens-above-guard",
        "predict",
        set_param("predict.max_new_tokens", 100_000),
        "params.yaml",
        pline("predict", "max_new_tokens"),
        "predict.max_new_tokens",
        "greater than the maximum",
    ),
    Case(
        "params-wrong-type",
        "evaluate",
        set_param("evaluate.rel_tolerance", "tiny"),
        "params.yaml",
        pline("evaluate", "rel_tolerance"),
        "evaluate.rel_tolerance",
        "is not of type 'number'",
    ),
    # ---- seed: the GSM8K source file and the eval set it decontaminates against
    Case(
        "gsm8k-answer-without-final-line",
        "seed",
        gsm8k(GSM8K_GOOD, {"question": "What is 2 + 2?", "answer": "2+2 = <<2+2=4>>4"}),
        GSM8K,
        2,
        "answer",
        "no final '#### <answer>' line",
    ),
    Case("gsm8k-leaked-eval-prompt", "seed", leak, GSM8K, None, "row 2: prompt", "(leaked eval prompt)"),
    Case(
        "gsm8k-malformed-json",
        "seed",
        gsm8k(GSM8K_GOOD, GSM8K_GOOD, '{"question": "Q?", "answer": '),
        GSM8K,
        3,
        None,
        "malformed JSON",
    ),
    Case(
        "gsm8k-non-utf8",
        "seed",
        gsm8k(GSM8K_GOOD, b'{"question": "caf\xe9?", "answer": "1+1=2\\n#### 2"}'),
        GSM8K,
        2,
        None,
        "not UTF-8",
    ),
    Case(
        "gsm8k-huge-line",
        "seed",
        gsm8k(GSM8K_GOOD, {"question": "x" * HUGE, "answer": "1+1=2\n#### 2"}),
        GSM8K,
        2,
        "question",
        "MB",
    ),
    Case("gsm8k-empty-file", "seed", gsm8k(), GSM8K, None, None, "file is empty"),
    Case("gsm8k-file-missing", "seed", both(gsm8k(GSM8K_GOOD), remove(GSM8K)), GSM8K, None, None, "file not found"),
    # ---- seed: a file source and the eval sets of params
    Case(
        "file-mapping-names-a-missing-field",
        "seed",
        file_source([{"q": "Q?", "a": "1", "r": "r"}], {"prompt": "q", "answer": "answer", "reasoning": "r"}),
        "params.yaml",
        pkeys("seed", "sources", 0, "fields", "answer"),
        "seed.sources[0].fields.answer",
        "'answer' is not a field of trainsets/mine.jsonl",
    ),
    Case(
        "file-unknown-format",
        "seed",
        both(
            file_source([{"q": "Q?"}], {"messages": "q"}),
            set_param("seed.sources", [{"type": "file", "path": "trainsets/mine.xlsx", "fields": {"messages": "m"}}]),
            write_file("trainsets/mine.xlsx", "x"),
        ),
        "params.yaml",
        pkeys("seed", "sources", 0, "format"),
        "seed.sources[0].format",
        "no known format for suffix '.xlsx'",
    ),
    Case(
        "file-chat-without-assistant-turn",
        "seed",
        file_source([{"messages": [{"role": "user", "content": "Q?"}]}], {"messages": "messages"}),
        "trainsets/mine.jsonl",
        None,
        "row 1: messages",
        "no assistant turn",
    ),
    Case(
        "file-empty-answer",
        "seed",
        file_source([{"q": "Q?", "a": " ", "r": "r"}], {"prompt": "q", "answer": "a", "reasoning": "r"}),
        "trainsets/mine.jsonl",
        None,
        "row 1: a",
        "empty",
    ),
    Case(
        "eval-set-name-used-twice",
        "seed",
        eval_set_twice,
        "params.yaml",
        set_line("tunix", 2),
        "evaluate.sets.tunix",
        "set name used twice",
    ),
    Case(
        "eval-set-no-primary",
        "evaluate",
        set_param("evaluate.sets.tunix.primary", False),
        "params.yaml",
        pline("evaluate", "sets"),
        "evaluate.sets",
        "no set is marked primary: true",
    ),
    Case("evalset-duplicate-id", "seed", copy_line(EVAL_SET, 3, 7), EVAL_SET, 7, "id", "duplicate id"),
    # ---- tokenizer: data/train.jsonl
    Case(
        "train-jsonl-malformed-json",
        "tokenizer",
        replace_line(TRAIN, 5, b'{"id": "arithmetic-000005", "prompt"'),
        TRAIN,
        5,
        None,
        "malformed JSON",
    ),
    Case(
        "train-jsonl-huge-prompt",
        "tokenizer",
        edit_record(TRAIN, 4, lambda r: r.update(prompt="9 + " * (HUGE // 4))),
        TRAIN,
        4,
        "prompt",
        "MB",
    ),
    Case(
        "train-jsonl-missing-field",
        "tokenizer",
        edit_record(TRAIN, 3, lambda r: r.pop("final_answer")),
        TRAIN,
        3,
        "final_answer",
        "'final_answer' is a required property",
    ),
    Case("train-jsonl-duplicate-id", "tokenizer", copy_line(TRAIN, 2, 9), TRAIN, 9, "id", "duplicate id"),
    # ---- train: data/train.jsonl, data/tokenizer, model.checkpoint
    Case(
        "train-jsonl-wrong-type",
        "train",
        edit_record(TRAIN, 7, lambda r: r.update(steps="add them")),
        TRAIN,
        7,
        "steps",
        "is not of type 'array'",
    ),
    Case(
        "train-tokenizer-missing",
        "train",
        remove("data/tokenizer/tokenizer.json"),
        "data/tokenizer/tokenizer.json",
        None,
        None,
        "missing (run the tokenizer stage)",
    ),
    # ---- base: model.checkpoint
    Case(
        "base-checkpoint-missing",
        "base",
        both(set_param("model.preset", "gemma3-1b"), set_param("model.checkpoint", "models/gemma-3-1b")),
        "models/gemma-3-1b",
        None,
        None,
        "not found",
    ),
    Case(
        "base-checkpoint-outside-models",
        "base",
        both(set_param("model.preset", "gemma3-1b"), set_param("model.checkpoint", "checkpoints/gemma-3-1b")),
        "params.yaml",
        pline("model", "checkpoint"),
        "model.checkpoint",
        "outside models/",
    ),
    Case(
        "base-checkpoint-not-a-model",
        "base",
        both(set_param("model.preset", "gemma3-1b"), set_param("model.checkpoint", "models/README.md")),
        "models/README.md",
        None,
        None,
        "expected a Hugging Face directory or a .gguf file",
    ),
    Case(
        "base-checkpoint-escapes-models",
        "base",
        checkpoint("models/../../elsewhere/gemma-3-270m"),
        "params.yaml",
        pline("model", "checkpoint"),
        "model.checkpoint",
        "outside models/",
    ),
    Case(
        "base-checkpoint-escapes-to-a-folder-that-exists",
        "base",
        both(gemma_dir("checkpoints/gemma-3-270m"), checkpoint("models/../checkpoints/gemma-3-270m")),
        "params.yaml",
        pline("model", "checkpoint"),
        "model.checkpoint",
        "outside models/",
    ),
    Case(
        "base-checkpoint-link-to-a-folder",
        "base",
        both(
            gemma_dir("checkpoints/gemma-3-270m"),
            folder_link("models/gemma-3-270m", "checkpoints/gemma-3-270m"),
            checkpoint("models/gemma-3-270m"),
        ),
        "params.yaml",
        pline("model", "checkpoint"),
        "model.checkpoint",
        "models/gemma-3-270m is a link to a folder, which DVC does not follow",
    ),
    Case(
        "base-checkpoint-inside-a-linked-folder",
        "base",
        both(
            gemma_dir("checkpoints/hub/gemma-3-270m"),
            folder_link("models/hub", "checkpoints/hub"),
            checkpoint("models/hub/gemma-3-270m"),
        ),
        "params.yaml",
        pline("model", "checkpoint"),
        "model.checkpoint",
        "models/hub is a link to a folder",
    ),
    Case(
        "base-safetensors-truncated",
        "base",
        both(gemma_dir("models/gemma-3-270m", cut=100), checkpoint("models/gemma-3-270m")),
        "models/gemma-3-270m/model.safetensors",
        None,
        None,
        "unreadable safetensors",
    ),
    Case(
        "base-safetensors-shard-missing",
        "base",
        both(
            gemma_dir("models/gemma-3-270m"),
            checkpoint("models/gemma-3-270m"),
            write_file(
                "models/gemma-3-270m/model.safetensors.index.json",
                json.dumps({"weight_map": {"a": "model.safetensors", "b": "model-00002-of-00002.safetensors"}}),
            ),
        ),
        "models/gemma-3-270m/model-00002-of-00002.safetensors",
        None,
        None,
        "missing",
    ),
    # ---- predict: data/policy
    Case("model-dir-missing", "predict", remove(POLICY), POLICY, None, None, "model directory not found"),
    Case(
        "model-config-missing",
        "predict",
        remove(f"{POLICY}/config.json"),
        f"{POLICY}/config.json",
        None,
        None,
        "missing",
    ),
    Case(
        "model-safetensors-missing",
        "predict",
        remove(f"{POLICY}/model.safetensors"),
        POLICY,
        None,
        None,
        "model.safetensors",
    ),
    Case(
        "model-safetensors-truncated",
        "predict",
        truncate(f"{POLICY}/model.safetensors", 3000),
        f"{POLICY}/model.safetensors",
        None,
        None,
        "safetensors",
    ),
    Case(
        "model-tokenizer-corrupt",
        "predict",
        write_file(f"{POLICY}/tokenizer.json", '{"version": "1.0", "model"'),
        f"{POLICY}/tokenizer.json",
        None,
        None,
        "not a valid tokenizer",
    ),
    Case(
        "tokenizer-model-vocab-mismatch",
        "predict",
        bigger_tokenizer,
        f"{POLICY}/tokenizer.json",
        None,
        "vocab_size",
        "440",
    ),
    # ---- grpo: user rewards (each fails before the model is loaded)
    Case(
        "grpo-reward-module-unknown",
        "grpo",
        user_reward("no_such_module:fn"),
        "params.yaml",
        pline("grpo", "user_rewards"),
        "grpo.user_rewards",
        "cannot import no_such_module",
    ),
    Case(
        "grpo-reward-raises",
        "grpo",
        user_reward("my_rewards:boom"),
        "params.yaml",
        pline("grpo", "user_rewards"),
        "grpo.user_rewards",
        "my_rewards:boom raised ZeroDivisionError",
    ),
    Case(
        "grpo-reward-nan",
        "grpo",
        user_reward("my_rewards:not_a_number"),
        "params.yaml",
        pline("grpo", "user_rewards"),
        "grpo.user_rewards",
        "my_rewards:not_a_number returned nan",
    ),
    Case(
        "grpo-group-of-one",
        "grpo",
        set_param("grpo.group_size", 1),
        "params.yaml",
        pline("grpo", "group_size"),
        "grpo.group_size",
        "less than the minimum of 2",
    ),
    Case(
        "grpo-every-reward-weight-0",
        "grpo",
        both(
            set_param("grpo.steps", 2),
            set_param("grpo.rewards", {"format": 0, "correctness": 0.0, "partial": 0, "overlength": 0, "working": 0}),
        ),
        "params.yaml",
        pline("grpo", "rewards"),
        "grpo.rewards",
        "RL would learn nothing",
    ),
    Case(
        "grpo-top-k-above-the-vocabulary",
        "grpo",
        both(set_param("grpo.steps", 2), set_param("grpo.top_k", 5000)),
        "params.yaml",
        pline("grpo", "top_k"),
        "grpo.top_k",
        "5000 is more than the 400 tokens",
    ),
    Case(
        "grpo-top-k-1-is-greedy",
        "grpo",
        both(set_param("grpo.steps", 2), set_param("grpo.top_k", 1)),
        "params.yaml",
        pline("grpo", "top_k"),
        "grpo.top_k",
        "greedy",
    ),
    # ---- integers as `dvc exp run -S` writes them: an integral float is the int, any other refused
    Case(
        "params-integer-written-as-a-fraction",
        "seed",
        float_param("seed", "size", "24000.5"),
        "params.yaml",
        pline("seed", "size"),
        "seed.size",
        "is not of type 'integer'",
    ),
    # ---- evaluate: the eval set and data/predictions/<set>.jsonl
    Case(
        "evalset-unknown-section",
        "evaluate",
        edit_record(EVAL_SET, 3, lambda r: r.update(section="bonus")),
        EVAL_SET,
        3,
        "section",
        "'bonus' is not one of",
    ),
    Case("evalset-empty", "evaluate", write_file(EVAL_SET, ""), EVAL_SET, None, None, "file is empty"),
    Case(
        "predictions-missing-an-id",
        "evaluate",
        lambda repo: write_lines(repo, PREDICTIONS, read_lines(repo, PREDICTIONS)[1:]),
        PREDICTIONS,
        None,
        "id",
        "no prediction for eval item 'core-001'",
    ),
    Case(
        "predictions-unknown-id",
        "evaluate",
        edit_record(PREDICTIONS, 2, lambda r: r.update(id="core-999")),
        PREDICTIONS,
        2,
        "id",
        "'core-999' is not an item of",
    ),
    Case(
        "predictions-wrong-type",
        "evaluate",
        edit_record(PREDICTIONS, 4, lambda r: r.update(n_tokens="12")),
        PREDICTIONS,
        4,
        "n_tokens",
        "is not of type 'integer'",
    ),
    Case(
        "predictions-missing-field",
        "evaluate",
        edit_record(PREDICTIONS, 2, lambda r: r.pop("completion")),
        PREDICTIONS,
        2,
        "completion",
        "'completion' is a required property",
    ),
    Case("predictions-duplicate-id", "evaluate", copy_line(PREDICTIONS, 5, 6), PREDICTIONS, 6, "id", "duplicate id"),
    Case(
        "predictions-non-utf8",
        "evaluate",
        replace_line(PREDICTIONS, 3, b'{"id": "core-003", "completion": "\xff\xfe"}'),
        PREDICTIONS,
        3,
        None,
        "not UTF-8",
    ),
    Case(
        "predictions-huge-completion",
        "evaluate",
        edit_record(PREDICTIONS, 5, lambda r: r.update(completion="<reasoning>" + "a" * HUGE)),
        PREDICTIONS,
        5,
        "completion",
        "MB",
    ),
    Case("predictions-empty", "evaluate", write_file(PREDICTIONS, b""), PREDICTIONS, None, None, "file is empty"),
    # ---- evidence: reports, training info, dvc.lock
    Case(
        "evidence-null-primary-score",
        "evidence",
        edit_json("reports/metrics.json", lambda m: m.update(primary_score=None)),
        f"{RUN_DIR}/eval_summary.json",
        None,
        "primary_score",
        "None is not of type 'number'",
    ),
    Case(
        "evidence-training-info-missing-field",
        "evidence",
        edit_json(f"{MODEL}/training_info.json", lambda i: i.pop("final_loss")),
        f"{MODEL}/training_info.json",
        None,
        "final_loss",
        "'final_loss' is a required property",
    ),
    Case(
        "evidence-lock-missing-stage",
        "evidence",
        lambda repo: (repo / "dvc.lock").write_text(
            yaml.safe_dump(
                {
                    "schema": "2.0",
                    "stages": {
                        k: v
                        for k, v in yaml.safe_load((repo / "dvc.lock").read_text())["stages"].items()
                        if k != "train"
                    },
                }
            )
        ),
        "dvc.lock",
        None,
        "stages.train",
        "no lock entry",
    ),
    Case("evidence-scorecard-malformed", "evidence", truncate(SCORECARD, 200), SCORECARD, None, None, "malformed JSON"),
    Case(
        "evidence-weights-missing",
        "evidence",
        remove(f"{MODEL}/model.safetensors"),
        MODEL,
        None,
        None,
        "no *.safetensors",
    ),
    # ---- package: the evidence and the target
    Case(
        "package-evidence-with-null",
        "package",
        edit_json(f"{RUN_DIR}/run_manifest.json", lambda m: m["model"].update(id=None)),
        f"{RUN_DIR}/run_manifest.json",
        None,
        "model.id",
        "None is not of type 'string'",
    ),
    Case(
        "package-summary-null-score",
        "package",
        edit_json(f"{RUN_DIR}/eval_summary.json", lambda s: s.update(primary_score=None)),
        f"{RUN_DIR}/eval_summary.json",
        None,
        "primary_score",
        "None is not of type 'number'",
    ),
    Case(
        "package-log-missing",
        "package",
        remove(f"{RUN_DIR}/run_log.txt"),
        f"{RUN_DIR}/run_log.txt",
        None,
        None,
        "missing or empty",
    ),
    Case(
        "package-target-is-a-file",
        "package",
        both(remove("submission"), write_file("submission", "not a folder\n")),
        "submission",
        None,
        None,
        "cannot write the submission",
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_one_line_error_and_loses_nothing(case: Case, repo: Path):
    case.mutate(repo)
    before = snapshot(repo)
    proc = run_stage(repo, case.stage)
    line = case.line(repo) if callable(case.line) else case.line
    message = assert_one_line_error(proc, case.file, line, case.field, case.text)
    print(f"{case.id}: error: {message}")  # shown with -s / -rP
    after = snapshot(repo)
    assert after == before, f"files changed: {sorted(set(after.items()) ^ set(before.items()))[:10]}"


def test_the_matrix_covers_every_stage():
    assert len(CASES) >= 25
    assert {c.stage for c in CASES} == {
        "base",
        "seed",
        "tokenizer",
        "train",
        "grpo",
        "predict",
        "evaluate",
        "evidence",
        "package",
    }
    # (report only copies the primary set's metrics: its inputs are evaluate's own outputs)


def test_base_outputs_are_complete(shared_base: Path):
    """The base really holds every stage's outputs (so 'nothing produced is lost' means something)."""
    for rel in (
        TRAIN,
        "data/train_manifest.json",
        "data/tokenizer/tokenizer.json",
        f"{MODEL}/model.safetensors",
        PREDICTIONS,
        "reports/metrics.json",
        SCORECARD,
        f"{RUN_DIR}/run_manifest.json",
    ):
        assert (shared_base / rel).is_file(), rel
    assert len(list((shared_base / "submission").glob("tunix_rt_v1_*.zip"))) == 1


# ---------------------------------------------------------------- what the checks above must still let through


def test_an_integer_written_as_a_float_runs_as_the_int(repo: Path):
    """`dvc exp run -S seed.size=2e2` writes `200.0`: the seed stage runs it as 200, byte for byte."""
    before = snapshot(repo)
    float_param("seed", "size", "200.0")(repo)
    must_succeed(run_stage(repo, "seed"))
    after = snapshot(repo)
    assert {k: v for k, v in after.items() if k != "params.yaml"} == {
        k: v for k, v in before.items() if k != "params.yaml"
    }


def test_a_checkpoint_linked_file_by_file_is_a_base(repo: Path, tmp_path: Path):
    """What the notebook does (stages.base.link_into_models) passes every check and makes data/base/, and
    it replaces a link to the folder, which the base stage refuses, by a folder of links."""
    from stages import base
    from stages.common import StageError, read_json, sha256_file

    gemma_dir("kaggle/gemma-3-270m")(repo)  # a Kaggle input, outside models/
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["model"]["checkpoint"] = "models/gemma-3-270m"
    folder_link("models/gemma-3-270m", "kaggle/gemma-3-270m")(repo)
    with pytest.raises(StageError, match="models/gemma-3-270m is a link to a folder"):
        base.checkpoint_path(params["model"], repo)
    assert base.link_into_models(repo / "kaggle/gemma-3-270m", repo).as_posix() == "models/gemma-3-270m"
    linked = repo / "models/gemma-3-270m"
    assert linked.is_dir() and not linked.is_symlink() and all(p.is_symlink() for p in linked.iterdir())
    shutil.rmtree(repo / "data/base")
    info = base.run(params, repo)
    assert info["files"]["model.safetensors"] == sha256_file(repo / "kaggle/gemma-3-270m/model.safetensors")
    assert read_json(repo / "data/base/base.json") == info
    assert sorted(p.name for p in (repo / "data/base").iterdir()) == [
        "base.json",
        "config.json",
        "model.safetensors",
        "tokenizer.json",
    ]
