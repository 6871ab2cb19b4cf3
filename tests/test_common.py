"""Shared stage plumbing: params validation with line numbers, JSONL errors, atomic outputs."""

import json

import pytest
import yaml

from stages.common import ROOT, StageError, atomic_path, load_params, read_jsonl, write_jsonl
from training import config as configs


def _params(tmp_path, mutate):
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    mutate(params)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def test_default_params_are_valid():
    params = load_params(path=ROOT / "params.yaml")
    assert params["model"]["preset"] == "tiny"


def test_default_tiny_shape_is_the_presets_default():
    """params.yaml and `configs.tiny()` (what the benchmarks build) describe the same model."""
    shape = load_params("model", path=ROOT / "params.yaml")["tiny"]
    assert configs.tiny(1024, **shape) == configs.tiny(1024)


@pytest.mark.parametrize(
    "mutate, field",
    [
        (lambda p: p["train"].update(learning_rat=0.1), "train"),
        (lambda p: p["train"].update(learning_rate=-1.0), "train.learning_rate"),
        (lambda p: p["train"].update(batch_size=0), "train.batch_size"),
        (lambda p: p["predict"].update(max_new_tokens=100_000), "predict.max_new_tokens"),
        (lambda p: p["model"].update(preset="gpt2"), "model.preset"),
        (lambda p: p["model"]["tiny"].update(width=512), "model.tiny"),
        (lambda p: p["model"]["tiny"].update(head_dim=0), "model.tiny.head_dim"),
        (lambda p: p.update(extra={}), "<record>"),
        (lambda p: p["train"].update(learning_rate=float("nan")), "train.learning_rate"),  # `.nan`
        (lambda p: p["train"].update(grad_clip=float("inf")), "train.grad_clip"),
        (lambda p: p["evaluate"].update(rel_tolerance=float("-inf")), "evaluate.rel_tolerance"),
    ],
)
def test_bad_params_name_file_line_and_field(tmp_path, mutate, field):
    path = _params(tmp_path, mutate)
    with pytest.raises(StageError) as err:
        load_params(path=path)
    message = str(err.value)
    assert message.startswith(f"{path}:")
    assert f": {field}: " in message
    line = int(message.split(":")[1])
    text_line = path.read_text().splitlines()[line - 1]
    leaf = field.split(".")[-1]
    if leaf != "<record>":
        assert leaf.split("_")[0] in text_line or "learning_rat" in text_line
    assert "\n" not in message


def test_read_jsonl_errors_name_line_and_field(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text('{"id": "a"}\n\n{"id": "b"\n')
    with pytest.raises(StageError, match=r"x.jsonl:3: malformed JSON"):
        read_jsonl(path)
    path.write_text('{"id": "a"}\n{"id": "a"}\n')
    with pytest.raises(StageError, match=r"x.jsonl:2: id: duplicate id 'a' \(first on line 1\)"):
        read_jsonl(path)
    path.write_bytes(b'{"id": "a"}\n{"id": "\xff"}\n')
    with pytest.raises(StageError, match=r"x.jsonl:2: not UTF-8"):
        read_jsonl(path)
    path.write_text("")
    with pytest.raises(StageError, match=r"x.jsonl: file is empty"):
        read_jsonl(path)
    with pytest.raises(StageError, match=r"missing.jsonl: file not found"):
        read_jsonl(tmp_path / "missing.jsonl")


def test_atomic_path_keeps_the_old_output_on_failure(tmp_path):
    out = tmp_path / "out.jsonl"
    write_jsonl(out, [{"id": 1}])
    before = out.read_bytes()
    with pytest.raises(RuntimeError):
        with atomic_path(out) as tmp:
            tmp.write_text("partial")
            raise RuntimeError("killed")
    assert out.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.jsonl"]  # no temporaries left


def test_atomic_path_replaces_directories_whole(tmp_path):
    out = tmp_path / "model"
    with atomic_path(out) as tmp:
        tmp.mkdir()
        (tmp / "a").write_text("1")
    with atomic_path(out) as tmp:
        tmp.mkdir()
        (tmp / "b").write_text("2")
    assert sorted(p.name for p in out.iterdir()) == ["b"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
    assert json.loads((out / "b").read_text()) == 2


def test_params_read_numbers_as_dvc_writes_them(tmp_path):
    """`dvc exp run -S grpo.learning_rate=5e-5` writes `5e-05` (no dot): still a number, not a string."""
    from pathlib import Path

    from stages.common import load_params

    text = (Path(__file__).resolve().parent.parent / "params.yaml").read_text()
    text = text.replace("learning_rate: 0.002", "learning_rate: 2e-03", 1)
    (tmp_path / "params.yaml").write_text(text)
    assert load_params("train", tmp_path / "params.yaml")["learning_rate"] == 0.002


def test_integers_written_as_floats_are_the_ints_they_mean(tmp_path):
    """`dvc exp run -S seed.size=24e3` writes `24000.0`: where the schema says integer, code gets the int
    (range() and splits take no float); a number param keeps its float."""

    def mutate(p):
        p["seed"]["size"] = 24e3
        p["seed"]["sources"] = [{"type": "gsm8k", "path": "trainsets/gsm8k/train.jsonl", "limit": 50.0}]
        p["grpo"]["lora"]["rank"] = 8.0
        p["train"]["mesh"]["data"] = 1.0

    params = load_params(path=_params(tmp_path, mutate))
    ints = [
        params["seed"]["size"],
        params["seed"]["sources"][0]["limit"],
        params["grpo"]["lora"]["rank"],
        params["train"]["mesh"]["data"],
    ]
    assert ints == [24000, 50, 8, 1] and all(type(v) is int for v in ints)
    assert type(params["grpo"]["temperature"]) is float and type(params["grpo"]["lora"]["alpha"]) is float


def test_an_integer_param_with_a_fraction_is_refused_on_its_line(tmp_path):
    path = _params(tmp_path, lambda p: p["seed"].update(size=24000.5))
    with pytest.raises(StageError, match=r"params.yaml:\d+: seed.size: 24000.5 is not of type 'integer'"):
        load_params(path=path)


def test_a_date_in_params_is_the_string_written(tmp_path):
    """YAML 1.1 reads `run_version: 2026-12-06` as a date, which no param is and JSON cannot write."""
    text = (ROOT / "params.yaml").read_text().replace("run_version: v1", "run_version: 2026-12-06", 1)
    (tmp_path / "params.yaml").write_text(text)
    assert load_params("base", tmp_path / "params.yaml")["run_version"] == "2026-12-06"
