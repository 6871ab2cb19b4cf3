"""The committed eval set: schema-valid, covering, reproducible, and its answers follow from the steps."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from collections import Counter
from decimal import Decimal
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from reasoning import tasks  # noqa: E402
from stages.common import StageError, read_jsonl, schema_error  # noqa: E402

EVAL_SET = ROOT / "evalsets" / "tunix_eval_v1.jsonl"
NUM = r"-?[0-9]+(?:\.[0-9]+)?"
COMPUTE = re.compile(rf"^({NUM}) ([-+×/]) ({NUM}) = ({NUM})$")


def _load_script():
    spec = importlib.util.spec_from_file_location("make_evalset", ROOT / "scripts" / "make_evalset.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


make_evalset = _load_script()


@pytest.fixture(scope="module")
def items() -> list[dict]:
    return read_jsonl(EVAL_SET, schema="eval_item")  # any schema violation fails here, naming the line


@pytest.fixture(scope="module")
def built() -> list[tuple[dict, tasks.Task]]:
    return make_evalset.build_items()


def test_every_line_validates_and_ids_run_in_order(items):
    assert len(items) >= 110
    for line in EVAL_SET.read_text(encoding="utf-8").splitlines():
        assert schema_error(json.loads(line), "eval_item") is None
    by_section = Counter(i["section"] for i in items)
    assert by_section == {"core": 60, "trace_sensitive": 25, "edge_case": 25}
    for section, prefix in (("core", "core"), ("trace_sensitive", "trace"), ("edge_case", "edge")):
        ids = [i["id"] for i in items if i["section"] == section]
        assert ids == [f"{prefix}-{n:03d}" for n in range(1, len(ids) + 1)]


def test_prompts_are_unique(items):
    prompts = [tasks.normalize_prompt(i["prompt"]) for i in items]
    assert len(set(prompts)) == len(prompts)


def test_schema_rejects_bad_items(items):
    good = dict(items[0])
    assert schema_error(good, "eval_item") is None
    for change in (
        {"section": "bonus"},
        {"id": "trace-001"},  # a core item needs a core id
        {"answer_type": "bool"},  # "306" is not yes/no
        {"expected_answer": " 12"},
        {"extra": 1},
    ):
        assert schema_error({**good, **change}, "eval_item") is not None, change
    assert schema_error({k: v for k, v in good.items() if k != "difficulty"}, "eval_item") is not None


def test_sections_cover_what_they_promise(items, built):
    core = [i for i in items if i["section"] == "core"]
    cats = Counter(i["category"] for i in core)
    assert cats["arithmetic"] >= 20
    for cat in ("rate", "percentage", "cost_per_item", "unit_conversion", "comparison", "sequence"):
        assert cats[cat] >= 5, cats
    steps_of = {item["id"]: task for item, task in built}
    multi = [i for i in core if sum(t in ("compute", "compare") for t, _ in steps_of[i["id"]].steps) >= 2]
    assert len(multi) >= 0.9 * len(core)  # almost all core items need two or more steps

    trace = [i for i in items if i["section"] == "trace_sensitive"]
    assert sum(i["category"] == "string" for i in trace) >= 8
    for i in trace:
        if i["category"] != "string":
            assert sum(t in ("compute", "compare") for t, _ in steps_of[i["id"]].steps) >= 3, i

    edge = [i for i in items if i["section"] == "edge_case"]
    answers = [i["expected_answer"] for i in edge]
    assert {"number", "fraction", "bool"} <= {i["answer_type"] for i in edge}
    assert any(re.fullmatch(r"-[0-9]+", a) for a in answers), "a negative result"
    assert any(re.fullmatch(r"[0-9]+\.[0-9]+", a) for a in answers), "a decimal"
    assert any(re.fullmatch(r"[0-9]+/[0-9]+", a) for a in answers), "a fraction"
    assert any(re.fullmatch(r"[0-9]{1,3}(,[0-9]{3})+", a) for a in answers), "a thousands separator"
    assert any(re.fullmatch(r"[0-9]+ [a-z]+", a) for a in answers), "a unit"
    assert {"yes", "no"} & set(answers), "a yes/no question"
    assert any("," in i["prompt"] and i["category"] == "arithmetic" for i in edge)
    assert all(i["answer_type"] == "fraction" for i in edge if "/" in i["expected_answer"])


def test_committed_file_is_what_the_script_generates(tmp_path, capsys):
    out = tmp_path / "eval.jsonl"
    make_evalset.main(["--out", str(out)])
    assert out.read_bytes() == EVAL_SET.read_bytes()
    make_evalset.main(["--check"])
    out.write_text(out.read_text().replace("core-001", "core-999", 1))
    with pytest.raises(StageError, match="differs from what scripts/make_evalset.py generates"):
        make_evalset.main(["--check", "--out", str(out)])


def _plain(expected: str, answer_type: str) -> str:
    """An expected answer as the steps write it: no thousands separators, no unit."""
    if answer_type == "number":
        return expected.split(" ")[0].replace(",", "")
    return expected


def test_expected_answers_are_what_the_steps_compute(items, built):
    assert [item for item, _ in built] == items
    for item, task in built:
        last = None
        for kind, content in task.steps:
            if kind != "compute":
                continue
            m = COMPUTE.match(content)
            assert m, content
            a, op, b, c = Decimal(m[1]), m[2], Decimal(m[3]), Decimal(m[4])
            assert {"+": a + b, "-": a - b, "×": a * b, "/": a / b}[op] == c, content
            if op == "×":
                assert min(abs(a), abs(b)) <= 12, content
            last = m[4]
        kind, content = task.steps[-1]
        assert task.answer == (content if kind == "conclude" else last), item
        assert _plain(item["expected_answer"], item["answer_type"]) == task.answer, item
        if item["answer_type"] == "number" and item["section"] != "edge_case":
            assert item["expected_answer"] == task.answer  # separators and units only in edge cases
        assert (item["category"], item["difficulty"], item["answer_type"]) == (
            task.category, task.difficulty, task.answer_type)


def test_eval_seed_differs_from_training_seed():
    import yaml

    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    assert make_evalset.EVAL_SEED != params["base"]["seed"]
