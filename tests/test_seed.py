"""The seed stage: deterministic, learnable, correct traces; decontamination; GSM8K import."""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from decimal import Decimal
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from reasoning import scoring, tasks  # noqa: E402
from stages import seed  # noqa: E402
from stages.common import StageError, load_params, read_jsonl, schema_error, sha256_file  # noqa: E402

EVAL_SET = ROOT / "evalsets" / "tunix_eval_v1.jsonl"
MIX = {"arithmetic": 3, "word_problem": 4, "sequence": 1, "string": 1}

NUM = r"-?[0-9]+(?:\.[0-9]+)?"
COMPUTE = re.compile(rf"^({NUM}) ([-+×/]) ({NUM}) = ({NUM})$")
COMPARE = re.compile(rf"^({NUM}) ([<>]) ({NUM})$")
CANONICAL = re.compile(r"^-?(0|[1-9][0-9]*)(\.[0-9]*[1-9])?$")  # no leading zeros, no trailing decimal zeros


# ---------------------------------------------------------------- helpers


def check_compute(content: str) -> str:
    """Assert a compute step is one correct, learnable operation; return its result as written."""
    m = COMPUTE.match(content)
    assert m, f"not `a op b = c`: {content!r}"
    for text in (m[1], m[3], m[4]):
        assert CANONICAL.match(text), f"number not written plainly: {text!r} in {content!r}"
    a, op, b, c = Decimal(m[1]), m[2], Decimal(m[3]), Decimal(m[4])
    if op == "+":
        assert a + b == c, content
    elif op == "-":
        assert a - b == c, content
    elif op == "×":
        assert a * b == c, content
        assert min(abs(a), abs(b)) <= 12, f"multiplication without an operand <= 12: {content}"
    else:
        assert a == a.to_integral_value() and b == b.to_integral_value(), content
        assert 2 <= b <= 12 or b in (60, 100, 1000), f"divisor not allowed: {content}"
        assert b * c == a, f"inexact division: {content}"
        if b in (60, 1000):
            assert c <= 12, content
    return m[4]


def prompt_numbers(prompt: str) -> set[str]:
    return {n.replace(",", "") for n in re.findall(r"[0-9][0-9,]*(?:\.[0-9]+)?", prompt)}


def check_trace(rec: dict) -> None:
    """The step conventions: arithmetic right, numbers copied or computed, answer from the steps."""
    steps, prompt, answer = rec["steps"], rec["prompt"], rec["final_answer"]
    assert [s["i"] for s in steps] == list(range(1, len(steps) + 1))
    known = prompt_numbers(prompt) | {str(n) for n in range(1, 13)} | {"60", "100", "1000"}
    last_result = None
    spells = []
    relation = None
    for s in steps:
        kind, content = s["type"], s["content"]
        if kind == "compute":
            m = COMPUTE.match(content)
            last_result = check_compute(content)
            assert m[1] in known and m[3] in known, (
                f"operand neither in the prompt nor computed: {content!r} / {prompt!r}"
            )
            known.add(last_result)
        elif kind == "compare":
            m = COMPARE.match(content)
            assert m, content
            a, b = Decimal(m[1]), Decimal(m[3])
            assert (a > b) if m[2] == ">" else (a < b), content
            assert m[1] in known and m[3] in known, content
            relation = m[2]
        elif kind == "restate":
            assert set(re.findall(r"[0-9]+", content)) <= prompt_numbers(prompt), content
        elif kind == "spell":
            assert re.fullmatch(r"[a-z]( [a-z])*", content), content
            spells.append(content.split())
    last = steps[-1]
    if last["type"] == "conclude":
        assert answer == last["content"]
    else:
        assert last["type"] == "compute" and answer == last_result, rec
    generator = rec["meta"]["generator"]
    if generator == "string.reverse":
        assert spells[1] == spells[0][::-1] and answer == "".join(spells[1])
        assert "".join(spells[0]) in prompt
    elif generator == "string.count_letter":
        letter = spells[1][0]
        assert set(spells[1]) == {letter} and int(answer) == spells[0].count(letter) == len(spells[1])
    elif generator == "string.first_letters":
        words = prompt.rsplit(":", 1)[1].strip(" .").split(", ")
        assert answer == "".join(w[0] for w in words) == "".join(spells[0])
    elif generator == "comparison.yes_no":
        asks_less = " less than " in prompt
        assert answer == ("yes" if (relation == "<") == asks_less else "no"), rec
    elif generator == "comparison.who":
        first, second = [n for n in tasks.NAMES if re.search(rf"\b{n}\b", prompt)][:2]
        first, second = sorted((first, second), key=prompt.index)
        first_wins = (relation == ">") == ("more" in prompt.rsplit(".", 1)[-1])
        assert answer == (first if first_wins else second), rec
    elif generator == "arithmetic.fraction":
        numerator, den = map(int, answer.split("/"))
        assert den == max(int(d) for d in re.findall(r"/([0-9]+)", prompt))
        assert str(numerator) == last_result


def n_ops(rec_or_task) -> int:
    steps = rec_or_task["steps"] if isinstance(rec_or_task, dict) else [{"type": t} for t, _ in rec_or_task.steps]
    return sum(s["type"] in ("compute", "compare") for s in steps)


def make_root(tmp_path: Path) -> Path:
    """A working directory holding the eval sets, as the stage sees the repo."""
    shutil.copytree(EVAL_SET.parent, tmp_path / "evalsets", dirs_exist_ok=True)
    return tmp_path


EVAL_SETS = {"tunix": {"path": "evalsets/tunix_eval_v1.jsonl", "format": "items", "primary": True}}


def params(seed_value: int = 1234, **overrides) -> dict:
    """Seed params; `source`/`gsm8k_path` overrides use the keys from before seed.sources (still read)."""
    cfg = {"sources": [{"type": "synthetic"}], "size": 400, "show_work": True, "mix": dict(MIX)}
    if "source" in overrides or "gsm8k_path" in overrides:
        cfg.pop("sources")
    cfg.update(overrides)
    return {
        "base": {"seed": seed_value, "run_version": "v1"},
        "seed": cfg,
        "evaluate": {"sets": json.loads(json.dumps(EVAL_SETS))},
    }


def eval_items() -> list[dict]:
    return read_jsonl(EVAL_SET, schema="eval_item")


@pytest.fixture(scope="module")
def dataset() -> tuple[list[dict], int]:
    return seed.generate_dataset(3000, MIX, 1234, [item["prompt"] for item in eval_items()])


# ---------------------------------------------------------------- synthetic data


def test_same_seed_same_bytes_and_another_seed_other_bytes(tmp_path):
    a, b, c = (make_root(tmp_path / name) for name in "abc")
    seed.run(params(1234), a)
    seed.run(params(1234), b)
    seed.run(params(99), c)
    for name in ("train.jsonl", "train_manifest.json"):
        assert (a / "data" / name).read_bytes() == (b / "data" / name).read_bytes()
    assert (a / "data/train.jsonl").read_bytes() != (c / "data/train.jsonl").read_bytes()
    assert "time" not in (a / "data/train_manifest.json").read_text()


def test_manifest_describes_the_file(tmp_path):
    root = make_root(tmp_path)
    manifest = seed.run(params(size=900), root)
    on_disk = json.loads((root / "data/train_manifest.json").read_text())
    assert on_disk == manifest
    assert schema_error(on_disk, "train_manifest") is None
    records = read_jsonl(root / "data/train.jsonl", schema="trace")
    assert on_disk["sha256"] == sha256_file(root / "data/train.jsonl")
    assert on_disk["size"] == len(records) == on_disk["requested"] == 900
    assert on_disk["seed"] == 1234 and on_disk["mix"] == MIX
    _, skipped = seed.generate_dataset(900, MIX, 1234, [i["prompt"] for i in eval_items()])
    assert on_disk["sources"] == [
        {"name": "synthetic", "type": "synthetic", "weight": 1.0, "limit": None, "records": 900, "redrawn": skipped}
    ]
    counts = on_disk["counts"]
    assert counts["by_category"] == {c: sum(r["meta"]["category"] == c for r in records) for c in tasks.CATEGORIES}
    assert counts["by_difficulty"] == {
        d: sum(r["meta"]["difficulty"] == d for r in records) for d in tasks.DIFFICULTIES
    }
    assert counts["by_generator"] == dict(Counter(r["meta"]["generator"] for r in records))
    assert counts["by_source"] == {"synthetic": 900}
    assert on_disk["decontamination"] == {
        "policy": "drop",
        "ngram": 13,
        "redrawn": skipped,
        "dropped": 0,
        "report": "data/decontamination.json",
    }
    report = json.loads((root / "data/decontamination.json").read_text())
    assert schema_error(report, "decontamination") is None
    tunix = report["sets"]["tunix"]
    assert tunix["path"] == "evalsets/tunix_eval_v1.jsonl" and tunix["sha256"] == sha256_file(EVAL_SET)
    assert tunix["prompts"] == len(eval_items()) >= 110
    assert tunix["redrawn"] == skipped and tunix["dropped_exact"] == tunix["dropped_ngram"] == 0
    assert tunix["synthetic_ngram_shared"] > 0  # template text, kept (stages/decontam.py says why)


def test_mix_weights_are_respected(dataset):
    records, _ = dataset
    families = Counter(tasks.FAMILY_OF_CATEGORY[r["meta"]["category"]] for r in records)
    total = sum(MIX.values())
    for family, weight in MIX.items():
        assert abs(families[family] - 3000 * weight / total) <= 1, families
    word = Counter(
        r["meta"]["category"] for r in records if tasks.FAMILY_OF_CATEGORY[r["meta"]["category"]] == "word_problem"
    )
    assert set(word) == {"rate", "percentage", "cost_per_item", "unit_conversion", "comparison"}
    assert min(word.values()) > 0.12 * families["word_problem"]  # each of five categories gets its share
    difficulties = Counter(r["meta"]["difficulty"] for r in records)
    assert all(difficulties[d] > 300 for d in tasks.DIFFICULTIES), difficulties

    only = seed.build_dataset(200, {"arithmetic": 1, "string": 0}, 5)
    assert {r["meta"]["category"] for r in only} == {"arithmetic"}
    with pytest.raises(StageError, match=r"seed\.mix: every weight is 0"):
        seed.build_dataset(10, {"arithmetic": 0}, 5)


def test_every_trace_validates_and_ids_are_unique(dataset):
    records, _ = dataset
    for rec in records:
        err = schema_error(rec, "trace")
        assert err is None, (rec["id"], err.message)
    assert len({r["id"] for r in records}) == len(records)
    assert all(r["id"].startswith(r["meta"]["category"] + "-") for r in records)


def test_every_step_is_correct_and_mechanical(dataset):
    records, _ = dataset
    for rec in records:
        check_trace(rec)
        assert len(rec["prompt"].split()) < 40, rec["prompt"]


def test_show_work_covers_signed_and_decimal_sums_and_close_comparisons(dataset):
    records, _ = dataset
    for rec in records:
        worked = seed.with_work(rec)  # raises if any working disagrees with its step
        for plain, step in zip(rec["steps"], worked["steps"]):
            text = plain["content"]
            signed_or_decimal = rec["meta"]["generator"] in ("arithmetic.decimal", "arithmetic.negative")
            sum_or_difference = plain["type"] == "compute" and (" + " in text or " - " in text)
            close = plain["type"] == "compare" and len(text.split()[0]) == len(text.split()[2]) > 1
            if (signed_or_decimal and sum_or_difference) or close:
                assert step["content"].endswith(f"so {text.split(' = ')[-1]}"), step


def test_trace_regenerates_from_its_meta_seed(dataset):
    records, _ = dataset
    for rec in records[:200]:
        family = tasks.FAMILY_OF_CATEGORY[rec["meta"]["category"]]
        task = tasks.sample_task(family, random.Random(rec["meta"]["seed"]))
        assert task.trace(rec["id"], rec["meta"]["seed"]) == rec


@pytest.mark.parametrize("name", sorted(tasks.GENERATORS))
def test_each_generator_at_each_difficulty(name):
    """Every generator keeps the conventions; difficulty follows the number of operations."""
    gen = tasks.GENERATORS[name]
    for difficulty in gen.difficulties:
        for i in range(150):
            task = tasks.generate(name, difficulty, random.Random(i))
            rec = task.trace(f"{task.category}-000001", i)
            assert schema_error(rec, "trace") is None, rec
            check_trace(rec)
            assert (task.category, task.difficulty, task.generator) == (gen.category, difficulty, name)
            assert task.answer_type in scoring.ANSWER_TYPES
            if task.category == "string":
                continue  # difficulty is word length / letter count / word count
            ops = n_ops(task)
            if difficulty == "easy":
                assert ops == 1, (name, task.steps)
            elif difficulty == "medium":
                assert ops == 2, (name, task.steps)
            elif name == "sequence.arithmetic":
                assert ops >= 3 or min(int(n) for n in prompt_numbers(task.prompt)) >= 100, task.prompt
            else:
                assert ops >= 3, (name, task.steps)


def test_generation_is_deterministic_and_uses_no_global_rng():
    random.seed(1)
    a = seed.build_dataset(300, MIX, 42)
    random.seed(2)
    b = seed.build_dataset(300, MIX, 42)
    assert a == b
    assert a != seed.build_dataset(300, MIX, 43)


def test_default_params_generate_quickly(tmp_path):
    p = load_params(path=ROOT / "params.yaml")
    start = time.process_time()
    records, _ = seed.generate_dataset(
        p["seed"]["size"], p["seed"]["mix"], p["base"]["seed"], [i["prompt"] for i in eval_items()]
    )
    elapsed = time.process_time() - start
    assert len(records) == p["seed"]["size"]
    assert elapsed < 3.0, f"generating {len(records)} traces took {elapsed:.2f} s of CPU"


# ---------------------------------------------------------------- decontamination


def test_generated_prompts_equal_to_eval_prompts_are_skipped():
    plain, skipped = seed.generate_dataset(300, MIX, 7, [])
    assert skipped == 0
    taken = [r["prompt"] for r in plain[:5]]
    disguised = ["  " + p.upper().replace(" ", "   ") + " " for p in taken]  # case and spacing do not hide a prompt
    records, skipped = seed.generate_dataset(300, MIX, 7, disguised)
    assert len(records) == 300
    assert skipped >= 1  # the first banned prompt is met; after a redraw the stream differs
    normalized = {tasks.normalize_prompt(r["prompt"]) for r in records}
    assert not normalized & {tasks.normalize_prompt(p) for p in taken}


def test_no_training_prompt_equals_an_eval_prompt(dataset):
    records, skipped = dataset
    evals = {tasks.normalize_prompt(i["prompt"]) for i in eval_items()}
    assert not {tasks.normalize_prompt(r["prompt"]) for r in records} & evals
    assert skipped > 0  # the string tasks of the eval set are drawn by the training generators too


def test_leak_check_names_line_and_eval_item():
    evals = eval_items()
    index = {tasks.normalize_prompt(i["prompt"]): i["id"] for i in evals}
    records = [{"prompt": "What is 1 + 1?"}, {"prompt": evals[11]["prompt"].upper()}]
    with pytest.raises(StageError) as err:
        seed.check_no_leaks(records, index)
    assert str(err.value) == f"data/train.jsonl:2: prompt: equals eval item {evals[11]['id']} (leaked eval prompt)"


# ---------------------------------------------------------------- GSM8K

GSM8K_LINES = [
    {
        "question": "Mia picks 48 apples on Monday and half as many on Tuesday. How many apples does she pick in all?",
        "answer": "On Tuesday Mia picks 48/2 = <<48/2=24>>24 apples.\nIn all she picks 48+24 = <<48+24=72>>72 apples.\n#### 72",
    },
    {
        "question": "A school has 3 buses with 400 seats each. How many seats are there?",
        "answer": "The buses have 3*400 = <<3*400=1200>>1200 seats.\n#### 1,200",
    },
    {
        "question": "Leo had 20 dollars and spent 5. Then he spent 3 more. How much is left?",
        "answer": "After the first purchase: 20-5 = <<20-5=15>>15.\n\nAfter the second: 15-3 = <<15-3=12>>12.\n"
        "He has 12 dollars.\nCheck: 12 is less than 20.\nSo the answer is 12.\n#### 12",
    },
]


def write_gsm8k(path: Path, rows: list, blank_after_first: bool = True) -> Path:
    lines = [r if isinstance(r, str) else json.dumps(r) for r in rows]
    if blank_after_first:
        lines.insert(1, "")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_gsm8k_import(tmp_path):
    path = write_gsm8k(tmp_path / "gsm8k.jsonl", GSM8K_LINES)
    records = seed.import_gsm8k(path, seed=1234)
    assert [r["id"] for r in records] == ["gsm8k-000001", "gsm8k-000002", "gsm8k-000003"]
    first = records[0]
    assert first["prompt"] == GSM8K_LINES[0]["question"]
    assert first["steps"] == [
        {"i": 1, "type": "compute", "content": "On Tuesday Mia picks 48/2 = 24 apples."},
        {"i": 2, "type": "compute", "content": "In all she picks 48+24 = 72 apples."},
    ]
    assert first["final_answer"] == "72"
    assert first["meta"] == {
        "source": "gsm8k",
        "name": "gsm8k",
        "path": str(path),
        "row": 1,
        "generator": "gsm8k",
        "category": "arithmetic",
        "difficulty": "easy",
        "seed": 1234,
    }
    assert records[1]["final_answer"] == "1200"  # thousands separator stripped
    assert len(records[2]["steps"]) == 5 and records[2]["meta"]["difficulty"] == "hard"
    for rec in records:
        assert schema_error(rec, "trace") is None
        assert all("<<" not in s["content"] for s in rec["steps"])


GOOD = GSM8K_LINES[0]


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"question": "Q?", "answer": "2+2 = <<2+2=4>>4 apples."}, "answer: no final '#### <answer>' line"),
        ({"answer": "x\n#### 4"}, "question: missing"),
        ({"question": "Q?"}, "answer: missing"),
        ({"question": "   ", "answer": "x\n#### 4"}, "question: expected a non-empty string"),
        ({"question": "Q?", "answer": 4}, "answer: expected a non-empty string"),
        ({"question": "Q?", "answer": "2+2=4\n#### four"}, "answer: final answer 'four' is not a number"),
        ({"question": "Q?", "answer": "#### 4"}, "answer: no working lines before '#### 4'"),
        ({"question": "Q?", "answer": "2+2 = <<2+2=4 apples\n#### 4"}, "answer: unbalanced '<<…>>'"),
        ('{"question": "Q?", "answer": ', "malformed JSON"),
    ],
)
def test_gsm8k_errors_name_file_line_and_field(tmp_path, bad, message):
    path = write_gsm8k(tmp_path / "gsm8k.jsonl", [GOOD, bad])  # a blank line 2, the bad record on line 3
    with pytest.raises(StageError) as err:
        seed.import_gsm8k(path)
    text = str(err.value)
    assert text.startswith(f"{path}:3: ") and message in text and "\n" not in text


def test_gsm8k_source_end_to_end(tmp_path):
    root = make_root(tmp_path)
    (root / "trainsets").mkdir()
    write_gsm8k(root / "trainsets/gsm8k.jsonl", GSM8K_LINES)
    for cfg in (
        {"source": "gsm8k", "gsm8k_path": "trainsets/gsm8k.jsonl"},  # the keys from before seed.sources
        {"sources": [{"type": "gsm8k", "path": "trainsets/gsm8k.jsonl"}]},
    ):
        manifest = seed.run(params(**cfg), root)
        assert manifest["size"] == 3 and manifest["requested"] == 400  # the file has 3 rows: all of them
        assert manifest["counts"]["by_generator"] == {"gsm8k": 3} and manifest["counts"]["by_source"] == {"gsm8k": 3}
        assert manifest["sources"] == [
            {
                "name": "gsm8k",
                "type": "gsm8k",
                "weight": 1.0,
                "limit": None,
                "records": 3,
                "path": "trainsets/gsm8k.jsonl",
                "rows": 3,
                "dropped": 0,
                "sha256": sha256_file(root / "trainsets/gsm8k.jsonl"),
            }
        ]
        assert manifest["decontamination"]["redrawn"] == manifest["decontamination"]["dropped"] == 0
        assert schema_error(manifest, "train_manifest") is None
        records = read_jsonl(root / "data/train.jsonl", schema="trace")
        assert [r["id"] for r in records] == ["gsm8k-000001", "gsm8k-000002", "gsm8k-000003"]
        assert [r["meta"]["row"] for r in records] == [1, 2, 3]


def leaky_gsm8k(root: Path) -> dict:
    """A GSM8K train file whose second record is an eval prompt in other case and spacing."""
    leaked = eval_items()[11]
    rows = [GSM8K_LINES[0], {"question": "  " + leaked["prompt"].lower(), "answer": "x = 1\n#### 1"}]
    (root / "trainsets").mkdir(exist_ok=True)
    write_gsm8k(root / "trainsets/gsm8k.jsonl", rows, blank_after_first=False)
    return leaked


def test_leaked_gsm8k_prompt_is_dropped_and_counted(tmp_path):
    root = make_root(tmp_path)
    leaky_gsm8k(root)
    manifest = seed.run(params(sources=[{"type": "gsm8k", "path": "trainsets/gsm8k.jsonl"}]), root)
    assert manifest["size"] == 1 and manifest["sources"][0]["dropped"] == 1
    assert manifest["decontamination"]["dropped"] == 1
    report = json.loads((root / "data/decontamination.json").read_text())
    assert report["sets"]["tunix"]["dropped_exact"] == 1 and report["sets"]["tunix"]["dropped_ngram"] == 0
    assert [r["prompt"] for r in read_jsonl(root / "data/train.jsonl")] == [GSM8K_LINES[0]["question"]]


def test_leaked_gsm8k_prompt_fails_loudly_under_fail_and_writes_nothing(tmp_path):
    root = make_root(tmp_path)
    leaked = leaky_gsm8k(root)
    (root / "data").mkdir()
    (root / "data/train.jsonl").write_text("previous output\n")
    with pytest.raises(StageError) as err:
        seed.run(params(sources=[{"type": "gsm8k", "path": "trainsets/gsm8k.jsonl"}], decontamination="fail"), root)
    assert str(err.value) == (
        f"trainsets/gsm8k.jsonl: row 2: prompt: equals eval item {leaked['id']} of eval set "
        "tunix (leaked eval prompt) (seed.decontamination: fail)"
    )
    assert (root / "data/train.jsonl").read_text() == "previous output\n"  # nothing produced is lost
    assert not (root / "data/train_manifest.json").exists()
    assert sorted(p.name for p in (root / "data").iterdir()) == ["train.jsonl"]  # no temp files left


def test_gsm8k_source_needs_a_path_under_trainsets(tmp_path):
    root = make_root(tmp_path)
    with pytest.raises(StageError, match=r"seed\.gsm8k_path: required when seed\.source is gsm8k"):
        seed.run(params(source="gsm8k"), root)
    with pytest.raises(StageError, match=r"seed\.gsm8k_path: 'gsm8k\.jsonl' is not under trainsets/"):
        seed.run(params(source="gsm8k", gsm8k_path="gsm8k.jsonl"), root)
    with pytest.raises(StageError, match=r"^trainsets/nope\.jsonl: file not found \(params\.yaml: seed\.gsm8k_path\)$"):
        seed.run(params(source="gsm8k", gsm8k_path="trainsets/nope.jsonl"), root)
    with pytest.raises(
        StageError, match=r"^trainsets/nope\.jsonl: file not found \(params\.yaml: seed\.sources\[0\]\.path\)$"
    ):
        seed.run(params(sources=[{"type": "gsm8k", "path": "trainsets/nope.jsonl"}]), root)


def test_cli_reports_one_line_and_exit_1(tmp_path):
    root = make_root(tmp_path)
    text = (ROOT / "params.yaml").read_text()
    old = next(line for line in text.splitlines() if line.strip().startswith("- type: synthetic"))
    text = text.replace(old, "    - type: gsm8k\n      path: trainsets/bad.jsonl")
    (root / "params.yaml").write_text(text)
    (root / "trainsets").mkdir()
    write_gsm8k(root / "trainsets/bad.jsonl", [{"question": "Q?", "answer": "1+1=2"}], blank_after_first=False)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "stages.seed"], cwd=root, env=env, capture_output=True, text=True)
    assert proc.returncode == 1
    assert proc.stderr == "error: trainsets/bad.jsonl:1: answer: no final '#### <answer>' line\n"
    assert not (root / "data").exists()


def test_legacy_keys_beside_sources_name_their_line(tmp_path):
    root = make_root(tmp_path)
    text = (ROOT / "params.yaml").read_text().replace("  size: 24000", "  source: synthetic\n  size: 24000")
    (root / "params.yaml").write_text(text)
    line = text.splitlines().index("  source: synthetic") + 1
    with pytest.raises(StageError) as err:
        seed.run(load_params(path=root / "params.yaml"), root)
    assert str(err.value).startswith(f"params.yaml:{line}: seed.source: replaced by seed.sources; remove it")
