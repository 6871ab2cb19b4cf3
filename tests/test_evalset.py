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
            task.category,
            task.difficulty,
            task.answer_type,
        )


def test_eval_seed_differs_from_training_seed():
    import yaml

    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    assert make_evalset.EVAL_SEED != params["base"]["seed"]


# ---------------------------------------------------------------- eval sets from any file (format: file)

import os  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402

import yaml  # noqa: E402

from stages import evalsets  # noqa: E402
from stages.evaluate import score_predictions, summarize  # noqa: E402

BBH = ROOT / "evalsets" / "bbh_sample.jsonl"
QUIZ = [  # a user's multiple-choice and free-text file: its own field names
    {
        "qid": "q1",
        "question": "Capital of France?",
        "options": ["Paris", "Rome"],
        "gold": "A",
        "kind": "choice",
        "topic": "geo",
        "level": "easy",
    },
    {"qid": "q2", "question": "Is 7 prime?", "gold": "yes", "kind": "bool", "topic": "math", "level": "easy"},
    {
        "qid": "q3",
        "question": "Half of one, as a fraction?",
        "gold": "\\frac{1}{2}",
        "kind": "math",
        "topic": "math",
        "level": "hard",
    },
]
QUIZ_FIELDS = {
    "id": "qid",
    "prompt": "question",
    "answer": "gold",
    "choices": "options",
    "answer_type": "kind",
    "topic": "topic",
    "difficulty": "level",
}


def file_set(root: Path, rows: list[dict] | None = None, **spec) -> evalsets.EvalSet:
    """A `format: file` eval set `quiz` of `rows` under `root`, as configured() reads it."""
    (root / "evalsets").mkdir(exist_ok=True)
    (root / "evalsets/quiz.jsonl").write_text("".join(json.dumps(r) + "\n" for r in (QUIZ if rows is None else rows)))
    sets = {"quiz": {"path": "evalsets/quiz.jsonl", "format": "file", "primary": True, "fields": QUIZ_FIELDS, **spec}}
    return evalsets.named({"evaluate": {"sets": sets}}, "quiz", root)


def test_file_set_items_types_and_breakdowns(tmp_path):
    items = evalsets.load_items(file_set(tmp_path), tmp_path)
    assert [(i["id"], i["answer_type"], i["difficulty"], i["groups"]) for i in items] == [
        ("q1", "choice", "easy", {"topic": "geo"}),
        ("q2", "bool", "easy", {"topic": "math"}),
        ("q3", "math", "hard", {"topic": "math"}),
    ]
    assert items[0]["choices"] == ["Paris", "Rome"] and items[0]["expected_answer"] == "A"
    answers = [
        "<reasoning>r</reasoning><answer>Paris</answer>",
        "<reasoning>r</reasoning><answer>no</answer>",
        "<reasoning>r</reasoning><answer>0.5</answer>",
    ]
    preds = [{"id": i["id"], "completion": a, "n_tokens": 3, "truncated": False} for i, a in zip(items, answers)]
    scoring = {"rel_tolerance": 1e-6, "partial_within": 0.1}
    rows = score_predictions(items, preds, scoring, tmp_path / "q", tmp_path / "p")
    assert [r["correct"] for r in rows] == [True, False, True]
    metrics, card = summarize(
        rows, {"name": "quiz", "path": "evalsets/quiz.jsonl", "format": "file", "sha256": "0" * 64, "n_items": 3}
    )
    assert metrics["by"] == {"topic": {"geo": 1.0, "math": 0.5}}  # per-topic scores: columns of dvc exp show
    assert card["breakdowns"]["topic"]["math"]["n"] == 2
    assert card["breakdowns"]["difficulty"] == {
        "easy": {"n": 2, "accuracy": 0.5, "format_accuracy": 1.0, "partial_accuracy": 0.5},
        "hard": {"n": 1, "accuracy": 1.0, "format_accuracy": 1.0, "partial_accuracy": 1.0},
    }


def test_file_set_in_other_table_formats(tmp_path):
    """Parquet (or CSV, JSON, Arrow) reads as seed's file source does; an error names the row."""
    import datasets

    rows = [{k: v for k, v in r.items() if k != "options"} for r in QUIZ[1:]]
    file_set(tmp_path)
    datasets.Dataset.from_list(rows).to_parquet(str(tmp_path / "evalsets/quiz.parquet"))
    sets = {
        "quiz": {
            "path": "evalsets/quiz.parquet",
            "format": "file",
            "primary": True,
            "fields": {k: v for k, v in QUIZ_FIELDS.items() if k != "choices"},
        }
    }
    before = dict(os.environ)
    items = evalsets.load_items(evalsets.named({"evaluate": {"sets": sets}}, "quiz", tmp_path), tmp_path)
    assert dict(os.environ) == before  # the offline switches and the throwaway HF_HOME are put back
    assert [i["id"] for i in items] == ["q2", "q3"]
    rows[1]["gold"] = ""
    datasets.Dataset.from_list(rows).to_parquet(str(tmp_path / "evalsets/quiz.parquet"))
    with pytest.raises(StageError, match=r"^evalsets/quiz.parquet: row 2: gold: empty$"):
        evalsets.load_items(evalsets.named({"evaluate": {"sets": sets}}, "quiz", tmp_path), tmp_path)


def _bad(rows_change, **spec):
    def rows():
        out = [dict(r) for r in QUIZ]
        rows_change(out)
        return out

    return rows, spec


BAD_FILE_SETS = {
    "choices missing the answer": (
        lambda r: r[0].update(gold="C"),
        {},
        r"quiz.jsonl:1: gold: expected answer 'C' is not one of the 2 choices",
    ),
    "answer not an option's text": (
        lambda r: r[0].update(gold="Berlin"),
        {},
        r"quiz.jsonl:1: gold: expected answer 'Berlin' is not one of the 2 choices",
    ),
    "choice without options": (
        lambda r: r[1].update(kind="choice"),
        {},
        r"quiz.jsonl:2: options: a choice answer needs its options",
    ),
    "duplicate id": (lambda r: r[2].update(qid="q1"), {}, r"quiz.jsonl:3: qid: duplicate id 'q1'"),
    "empty prompt": (lambda r: r[1].update(question="  "), {}, r"quiz.jsonl:2: question: empty$"),
    "missing prompt": (lambda r: r[1].pop("question"), {}, r"quiz.jsonl:2: question: missing or null$"),
    "unknown answer type in a row": (
        lambda r: r[1].update(kind="letter"),
        {},
        r"quiz.jsonl:2: kind: unknown answer type 'letter'",
    ),
    "answer not of its type": (
        lambda r: r[1].update(gold="maybe"),
        {},
        r"quiz.jsonl:2: gold: expected answer 'maybe' is not a yes/no answer",
    ),
    "mapping names a field the file lacks": (
        lambda r: None,
        {"fields": {**QUIZ_FIELDS, "task": "subject"}},
        r"evaluate.sets.quiz.fields.task: 'subject' is not a field of "
        r"evalsets/quiz.jsonl",
    ),
    "few_shot without exemplars": (lambda r: None, {"few_shot": 2}, r"evaluate.sets.quiz.few_shot: few_shot needs"),
}


@pytest.mark.parametrize("case", list(BAD_FILE_SETS))
def test_file_set_bad_input_is_one_line_naming_file_and_line(tmp_path, case):
    change, spec, message = BAD_FILE_SETS[case]
    rows = [dict(r) for r in QUIZ]
    change(rows)
    evalset = file_set(tmp_path, rows, **spec)
    with pytest.raises(StageError) as err:
        evalsets.load_items(evalset, tmp_path)
    assert re.search(message, str(err.value)), str(err.value)
    assert "\n" not in str(err.value)


def test_only_a_file_set_takes_fields():
    sets = {"tunix": {"path": "evalsets/tunix_eval_v1.jsonl", "primary": True, "few_shot": 3}}
    with pytest.raises(StageError, match="evaluate.sets.tunix.few_shot: only a set of format file takes few_shot"):
        evalsets.configured({"evaluate": {"sets": sets}}, ROOT)


def _project_copy(tmp_path: Path, sets: dict) -> Path:
    """params.yaml (the repository's, with `sets` as evaluate.sets) and evalsets/ in a fresh folder."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["evaluate"]["sets"] = sets
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    shutil.copytree(ROOT / "evalsets", tmp_path / "evalsets")
    return tmp_path


@pytest.mark.parametrize("change", ["answer_type: letter", "duplicate id"])
def test_bad_file_set_through_the_cli_exits_1_and_loses_nothing(tmp_path, change):
    sets = {
        "tunix": {"path": "evalsets/tunix_eval_v1.jsonl", "format": "items", "primary": True},
        "quiz": {"path": "evalsets/quiz.jsonl", "format": "file", "fields": QUIZ_FIELDS},
    }
    rows = [dict(r) for r in QUIZ]
    if change == "answer_type: letter":
        sets["quiz"]["answer_type"] = "letter"
        expected = r"^error: params.yaml:\d+: evaluate.sets.quiz.answer_type: 'letter' is not one of"
    else:
        rows[1]["qid"] = "q1"
        expected = r"^error: \S*evalsets/quiz.jsonl:2: qid: duplicate id 'q1'"
    root = _project_copy(tmp_path, sets)
    (root / "evalsets/quiz.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    kept = root / "reports/sets/quiz/metrics.json"
    kept.parent.mkdir(parents=True)
    kept.write_text('{"quiz": "the last good run"}\n')
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "stages.evaluate", "quiz"], cwd=root, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 1
    assert re.search(expected, proc.stderr) and proc.stderr.count("\n") == 1, proc.stderr
    assert kept.read_text() == '{"quiz": "the last good run"}\n'


# ---------------------------------------------------------------- the committed BIG-Bench Hard sample


@pytest.fixture(scope="module")
def bbh_set() -> evalsets.EvalSet:
    from stages.common import load_params

    return evalsets.named(load_params(path=ROOT / "params.yaml"), "bbh", ROOT)


def test_bbh_sample_covers_every_task_with_its_exemplars(bbh_set):
    rows = [json.loads(line) for line in BBH.read_text(encoding="utf-8").splitlines()]
    tasks_ = Counter(r["task"] for r in rows if not r["exemplar"])
    assert len(tasks_) == 27 and set(tasks_.values()) == {5}
    assert Counter(r["task"] for r in rows if r["exemplar"]) == dict.fromkeys(tasks_, 3)
    items = evalsets.load_items(bbh_set, ROOT)
    assert len(items) == 135 and len({i["id"] for i in items}) == 135
    assert (ROOT / "evalsets" / "LICENSE-BBH").read_text().startswith("MIT License")


def test_few_shot_puts_the_items_own_task_exemplars_first(bbh_set):
    from dataclasses import replace

    zero = evalsets.asked_items(bbh_set, ROOT)
    three = evalsets.asked_items(replace(bbh_set, few_shot=3), ROOT)
    assert [i["prompt"] for i in zero] == [i["prompt"] for i in evalsets.load_items(bbh_set, ROOT)]
    rows = [json.loads(line) for line in BBH.read_text(encoding="utf-8").splitlines()]
    for plain, shot in zip(zero, three, strict=True):
        task = plain["groups"]["task"]
        exemplars = [r for r in rows if r["exemplar"] and r["task"] == task]
        assert shot["prompt"].endswith("\n\n" + plain["prompt"])
        assert shot["prompt"].startswith(exemplars[0]["prompt"] + "\n<reasoning>" + exemplars[0]["reasoning"])
        assert shot["prompt"].count("<answer>") == 3
        assert all(e["prompt"] in shot["prompt"] for e in exemplars)
    with pytest.raises(
        StageError,
        match=r"evaluate.sets.bbh.few_shot: 4 exemplars asked, item bbh-\S+ of "
        r"evalsets/bbh_sample.jsonl has 3",
    ):
        evalsets.asked_items(replace(bbh_set, few_shot=4), ROOT)


def test_decontamination_covers_the_bbh_sample(bbh_set):
    """seed indexes every configured set's items; a BBH prompt, or 13 of its words, in training data is caught."""
    from stages import decontam

    items = evalsets.load_items(bbh_set, ROOT)
    index = decontam.EvalIndex({"bbh": items})
    item = next(i for i in items if i["groups"]["task"] == "causal_judgement")
    assert [(h.item, h.rule) for h in index.hits(item["prompt"].upper())] == [(item["id"], "exact")]
    words = decontam.words(item["prompt"])
    copied = "Consider this story. " + " ".join(words[40:53]) + " What happened next?"
    assert [(h.set, h.rule) for h in index.hits(copied)] == [("bbh", "ngram")]
    assert index.hits("A wholly unrelated question about apples and pears, with thirteen or more words in it.") == []


def test_aqua_sample_is_multiple_choice_with_its_options_in_the_prompt():
    from dataclasses import replace

    from stages.common import load_params

    aqua = evalsets.named(load_params(path=ROOT / "params.yaml"), "aqua", ROOT)
    items = evalsets.load_items(aqua, ROOT)
    assert len(items) == 50 and {i["answer_type"] for i in items} == {"choice"}
    for item in items:
        assert len(item["choices"]) == 5 and item["expected_answer"] in "ABCDE"
        listed = "\n".join(f"({letter}) {text}" for letter, text in zip("ABCDE", item["choices"]))
        assert item["prompt"].endswith("\nOptions:\n" + listed)
    assert (ROOT / "evalsets" / "LICENSE-AQUA").read_text().startswith("Copyright 2017 Google Inc.")
    shots = evalsets.asked_items(replace(aqua, few_shot=3), ROOT)
    assert all(s["prompt"].count("<reasoning>") == 3 for s in shots)


def test_bbh_script_parses_options_exemplars_and_leaves_out_answers_that_are_no_option(tmp_path):
    """scripts/bbh_sample.py on a two-task miniature of the upstream layout (bbh/*.json, cot-prompts/*.txt)."""
    spec = importlib.util.spec_from_file_location("bbh_sample", ROOT / "scripts" / "bbh_sample.py")
    bbh_sample = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bbh_sample)
    (tmp_path / "bbh").mkdir()
    (tmp_path / "cot-prompts").mkdir()
    mc = [{"input": f"Pick {k}.\nOptions:\n(A) red\n(B) blue", "target": "(B)" if k % 2 else "(A)"} for k in range(6)]
    mc.append({"input": "Pick.\nOptions:\n(A) red\n(B) blue", "target": "green"})  # upstream slips: left out
    (tmp_path / "bbh/colours.json").write_text(json.dumps({"canary": "c", "examples": mc}))
    (tmp_path / "bbh/web_of_lies.json").write_text(
        json.dumps(
            {"canary": "c", "examples": [{"input": f"Does {k} tell the truth?", "target": "Yes"} for k in range(5)]}
        )
    )
    shots = "".join(
        f"Q: Pick {k}.\nOptions:\n(A) red\n(B) blue\nA: Let's think step by step.\nStep {k}. So the answer is (A).\n\n"
        for k in range(3)
    )
    (tmp_path / "cot-prompts/colours.txt").write_text("canary\n-----\nPick a colour.\n\n" + shots.rstrip())
    (tmp_path / "cot-prompts/web_of_lies.txt").write_text(
        "canary\n-----\nLies.\n\n"
        + "\n\n".join(
            f"Q: Does {k} lie?\nA: Let's think step by step. Think {k}. So the answer is No." for k in range(3)
        )
    )
    rows = bbh_sample.build(tmp_path, per_task=5)
    assert rows == bbh_sample.build(tmp_path, per_task=5)  # the same upstream, the same rows
    colours = [r for r in rows if r["task"] == "colours" and not r["exemplar"]]
    assert len(colours) == 5 and all(r["answer"] != "green" for r in colours)
    assert all(r["choices"] == ["red", "blue"] and r["answer_type"] == "choice" for r in colours)
    shot = next(r for r in rows if r["id"] == "bbh-colours-shot2")
    assert (shot["prompt"], shot["reasoning"], shot["answer"]) == (
        "Pick 1.\nOptions:\n(A) red\n(B) blue",
        "Step 1.",
        "(A)",
    )
    lies = [r for r in rows if r["task"] == "web_of_lies"]
    assert {(r["answer_type"], "choices" in r) for r in lies} == {("bool", False)} and len(lies) == 8
    assert [r["answer"] for r in lies if r["exemplar"]] == ["No", "No", "No"]
