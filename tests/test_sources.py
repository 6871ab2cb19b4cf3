"""Bring your own data: file sources in every format, mixing by weight and limit, eval sets as params,
decontamination by exact prompt and 13-gram, and the one-line errors (stages/sources.py, evalsets.py,
decontam.py through the seed stage)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from stages import decontam, evalsets, seed, sources
from stages.common import StageError, read_jsonl, schema_error, sha256_file

ROOT = Path(__file__).resolve().parent.parent
EVAL_SET = ROOT / "evalsets" / "tunix_eval_v1.jsonl"
MIX = {"arithmetic": 3, "word_problem": 4, "sequence": 1, "string": 1}
TUNIX = {"path": "evalsets/tunix_eval_v1.jsonl", "format": "items", "primary": True}

ROWS = [
    {
        "question": "A baker bakes 12 rolls an hour for 3 hours. How many rolls?",
        "solution": "12 rolls an hour for 3 hours.\n12 × 3 = 36",
        "final": "36",
    },
    {
        "question": "Is a whale a fish?",
        "solution": "A whale breathes air.\nIt feeds its young milk.",
        "final": "no, a mammal",
    },
    {"question": "What is 7 + 8?", "solution": "7 + 8 = 15", "final": 15},  # a number, as CSV and Parquet give it
]
FIELDS = {"prompt": "question", "answer": "final", "reasoning": "solution"}
EXPECTED = [  # (prompt, steps, answer) every format must give
    (ROWS[0]["question"], ["12 rolls an hour for 3 hours.", "12 × 3 = 36"], "36"),
    (ROWS[1]["question"], ["A whale breathes air.", "It feeds its young milk."], "no, a mammal"),
    (ROWS[2]["question"], ["7 + 8 = 15"], "15"),
]

# GSM8K: a train file and a test file (the test file becomes an eval set).
GSM8K_TEST = [
    {
        "question": "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
        "How many clips did Natalia sell altogether in April and May?",
        "answer": "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nNatalia sold 48+24 = <<48+24=72>>72 clips altogether "
        "in April and May.\n#### 72",
    },
    {
        "question": "Weng earns $12 an hour for babysitting. Yesterday, she just did 50 minutes of babysitting. "
        "How much did she earn?",
        "answer": "Weng earns 12/60 = $<<12/60=0.2>>0.2 per minute.\nWorking 50 minutes, she earned 0.2 x 50 = "
        "$<<0.2*50=10>>10.\n#### 10",
    },
    {
        "question": "James writes a 3-page letter to 2 different friends twice a week. How many pages does he write a year?",
        "answer": "He writes each friend 3*2=<<3*2=6>>6 pages a week\nSo he writes 6*2=<<6*2=12>>12 pages every week\n"
        "That means he writes 12*52=<<12*52=624>>624 pages a year\n#### 1,624",
    },
]
# Shares "sold clips to 48 of her friends in april and then she sold half as many clips" (16 words) with test row 1.
PARAPHRASE = (
    "Last spring Maria sold clips to 48 of her friends in April, and then she sold half as many clips "
    "in June. How many did she sell?"
)
UNRELATED = (
    "A farmer has 17 sheep and buys 5 more at the market on Friday morning. How many sheep does the farmer have now?"
)
GSM8K_TRAIN = [
    {
        "question": PARAPHRASE,
        "answer": "In June she sold 48/2 = <<48/2=24>>24.\nIn all 48+24 = <<48+24=72>>72.\n#### 72",
    },
    {"question": UNRELATED, "answer": "He has 17+5 = <<17+5=22>>22 sheep.\n#### 22"},
]


def write_jsonl(path: Path, rows: list) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "".join((r if isinstance(r, str) else json.dumps(r, ensure_ascii=False)) + "\n" for r in rows), encoding="utf-8"
    )
    return path


def write_table(path: Path, rows: list[dict]) -> Path:
    """`rows` in the format of `path`'s suffix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = path.suffix.lstrip(".")
    if fmt == "jsonl":
        write_jsonl(path, rows)
    elif fmt == "json":
        path.write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
    elif fmt == "csv":
        import csv

        with path.open("w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    else:
        table = pa.Table.from_pylist([{k: (str(v) if k == "final" else v) for k, v in r.items()} for r in rows])
        if fmt == "parquet":
            pq.write_table(table, path)
        else:
            with pa.ipc.new_stream(str(path), table.schema) as writer:
                writer.write_table(table)
    return path


@pytest.fixture
def root(tmp_path) -> Path:
    """A repository as the seed stage sees it: the curated eval set, a trainsets/ folder."""
    (tmp_path / "evalsets").mkdir()
    shutil.copy(EVAL_SET, tmp_path / "evalsets" / EVAL_SET.name)
    (tmp_path / "trainsets").mkdir()
    return tmp_path


def params(srcs: list[dict], size: int = 100, sets: dict | None = None, **seed_extra) -> dict:
    return {
        "base": {"seed": 1234, "run_version": "v1"},
        "seed": {"sources": srcs, "size": size, "show_work": True, "mix": dict(MIX), **seed_extra},
        "evaluate": {"sets": sets if sets is not None else {"tunix": dict(TUNIX)}},
    }


def triples(records: list[dict]) -> list[tuple]:
    return [(r["prompt"], [s["content"] for s in r["steps"]], r["final_answer"]) for r in records]


# ---------------------------------------------------------------- every format


@pytest.mark.parametrize("fmt", ["jsonl", "json", "parquet", "csv", "arrow"])
def test_each_format_gives_the_same_traces(root, fmt):
    write_table(root / f"trainsets/mine.{fmt}", ROWS)
    manifest = seed.run(
        params([{"type": "file", "path": f"trainsets/mine.{fmt}", "fields": FIELDS}], show_work=False), root
    )
    records = read_jsonl(root / "data/train.jsonl", schema="trace")
    assert triples(records) == EXPECTED
    assert [r["id"] for r in records] == ["file-000001", "file-000002", "file-000003"]
    assert records[1]["meta"] == {
        "source": "file",
        "name": "mine",
        "path": f"trainsets/mine.{fmt}",
        "row": 2,
        "generator": "file",
        "category": "general",
        "difficulty": "easy",
        "seed": 1234,
    }
    assert manifest["sources"] == [
        {
            "name": "mine",
            "type": "file",
            "weight": 1.0,
            "limit": None,
            "records": 3,
            "path": f"trainsets/mine.{fmt}",
            "rows": 3,
            "dropped": 0,
            "sha256": sha256_file(root / f"trainsets/mine.{fmt}"),
        }
    ]
    assert manifest["counts"]["by_source"] == {"mine": 3} and manifest["counts"]["by_category"]["general"] == 3


def test_reasoning_as_a_list_of_steps_and_format_from_params(root):
    rows = [{"q": "What is 2 + 2?", "a": "4", "steps": ["Two and two.", "2 + 2 = 4"]}]
    write_table(root / "trainsets/steps.parquet", rows)
    shutil.move(root / "trainsets/steps.parquet", root / "trainsets/steps.data")  # a suffix that says nothing
    src = {
        "type": "file",
        "path": "trainsets/steps.data",
        "format": "parquet",
        "fields": {"prompt": "q", "answer": "a", "reasoning": "steps"},
    }
    seed.run(params([src]), root)
    (record,) = read_jsonl(root / "data/train.jsonl", schema="trace")
    # show_work (the default) works `2 + 2 = 4` column by column, as it does every compute step
    assert [s["content"] for s in record["steps"]] == ["Two and two.", "2 + 2: 2+2=4, so 4"]


def test_chat_messages(root):
    chat = [
        {
            "messages": [
                {"role": "system", "content": "Show your work."},
                {"role": "user", "content": "How many legs do 3 spiders have?"},
                {
                    "role": "assistant",
                    "content": "<reasoning>A spider has 8 legs.\n3 spiders: 3 × 8 = 24</reasoning><answer>24</answer>",
                },
            ]
        },
        {
            "messages": [
                {"role": "user", "content": "Spell cat backwards."},
                {"role": "assistant", "content": "<reasoning>c a t reversed</reasoning>\n<answer>tac</answer>"},
            ]
        },
    ]
    write_jsonl(root / "trainsets/chat.jsonl", chat)
    seed.run(
        params([{"type": "file", "path": "trainsets/chat.jsonl", "fields": {"messages": "messages"}}], show_work=False),
        root,
    )
    records = read_jsonl(root / "data/train.jsonl", schema="trace")
    assert triples(records) == [
        ("How many legs do 3 spiders have?", ["A spider has 8 legs.", "3 spiders: 3 × 8 = 24"], "24"),
        ("Spell cat backwards.", ["c a t reversed"], "tac"),
    ]


# ---------------------------------------------------------------- mixing


def test_apportion_by_weight_with_caps():
    inf = float("inf")
    assert sources.apportion(10, {"a": 1, "b": 1}, {"a": inf, "b": inf}) == {"a": 5, "b": 5}
    assert sources.apportion(10, {"a": 3, "b": 1}, {"a": inf, "b": 1}) == {"a": 9, "b": 1}  # b's share goes to a
    assert sources.apportion(10, {"a": 1, "b": 1, "c": 0}, {"a": 2, "b": 3, "c": inf}) == {"a": 2, "b": 3, "c": 0}
    assert sources.apportion(7, {"a": 1, "b": 1}, {"a": inf, "b": inf}) == {"a": 4, "b": 3}  # ties by order


def test_mixed_synthetic_and_file_sources_by_weight_and_limit(root):
    rows = [
        {"question": f"Row {k}: what is {k} + {k}?", "final": str(2 * k), "solution": f"{k} + {k} = {2 * k}"}
        for k in range(1, 13)
    ]
    write_table(root / "trainsets/mine.jsonl", rows)
    srcs = [
        {"type": "synthetic", "weight": 3},
        {"type": "file", "name": "capped", "path": "trainsets/mine.jsonl", "fields": FIELDS, "weight": 1, "limit": 4},
        {"type": "file", "name": "whole", "path": "trainsets/mine.jsonl", "fields": FIELDS, "weight": 1},
    ]
    manifest = seed.run(params(srcs, size=50), root)
    # shares 30 / 10 / 10; "capped" gives 4, its 6 go to the others by weight: 34.5 / 11.5 -> 35 / 11 (12 rows)
    assert manifest["counts"]["by_source"] == {"synthetic": 35, "capped": 4, "whole": 11}
    assert manifest["size"] == 50 and [s["records"] for s in manifest["sources"]] == [35, 4, 11]
    records = read_jsonl(root / "data/train.jsonl", schema="trace")
    by_name = {}
    for r in records:
        by_name.setdefault(r["meta"].get("name", r["meta"]["source"]), []).append(r)
    assert {k: len(v) for k, v in by_name.items()} == {"synthetic": 35, "capped": 4, "whole": 11}
    rows_taken = [r["meta"]["row"] for r in by_name["capped"]]
    assert len(set(rows_taken)) == 4 and rows_taken != [1, 2, 3, 4]  # a seeded sample, not the file's head
    synthetic, _ = seed.generate_dataset(35, MIX, 1234, [i["prompt"] for i in read_jsonl(EVAL_SET)])
    assert sorted(r["id"] for r in by_name["synthetic"]) == sorted(r["id"] for r in synthetic)  # the same draws
    assert [r["meta"]["source"] for r in records[:10]] != ["synthetic"] * 10  # sources interleaved, not stacked
    first = (root / "data/train.jsonl").read_bytes()
    seed.run(params(srcs, size=50), root)
    assert (root / "data/train.jsonl").read_bytes() == first  # same params, same bytes


def test_every_source_capped_gives_fewer_traces(root):
    write_table(root / "trainsets/mine.jsonl", ROWS)
    manifest = seed.run(
        params([{"type": "file", "path": "trainsets/mine.jsonl", "fields": FIELDS, "limit": 2}], size=100), root
    )
    assert manifest["size"] == 2 and manifest["requested"] == 100


# ---------------------------------------------------------------- eval sets and decontamination


def test_gsm8k_test_file_becomes_eval_items(root):
    write_jsonl(root / "evalsets/gsm8k_test.jsonl", GSM8K_TEST)
    spec = evalsets.EvalSet("gsm8k_test", Path("evalsets/gsm8k_test.jsonl"), "gsm8k", False)
    items = evalsets.load_items(spec, root)
    assert [(i["id"], i["expected_answer"], i["difficulty"], i["answer_type"]) for i in items] == [
        ("core-001", "72", "easy", "number"),
        ("core-002", "10", "easy", "number"),
        ("core-003", "1624", "medium", "number"),
    ]
    assert items[0]["prompt"] == GSM8K_TEST[0]["question"]
    assert all(schema_error(i, "eval_item") is None for i in items)


def test_gsm8k_in_parquet_as_hugging_face_ships_it(root):
    """GSM8K's Parquet files (the Hugging Face layout) as a train source and as an eval set."""
    write_table(root / "trainsets/train-00000-of-00001.parquet", GSM8K_TRAIN)
    write_table(root / "evalsets/test-00000-of-00001.parquet", GSM8K_TEST)
    write_jsonl(root / "evalsets/gsm8k_test.jsonl", GSM8K_TEST)
    as_parquet = evalsets.EvalSet("t", Path("evalsets/test-00000-of-00001.parquet"), "gsm8k", False)
    as_jsonl = evalsets.EvalSet("t", Path("evalsets/gsm8k_test.jsonl"), "gsm8k", False)
    assert evalsets.load_items(as_parquet, root) == evalsets.load_items(as_jsonl, root)
    seed.run(params([{"type": "gsm8k", "path": "trainsets/train-00000-of-00001.parquet"}]), root)
    records = read_jsonl(root / "data/train.jsonl", schema="trace")
    assert [(r["prompt"], r["final_answer"], r["meta"]["row"]) for r in records] == [
        (PARAPHRASE, "72", 1),
        (UNRELATED, "22", 2),
    ]  # only the tunix set here: the paraphrase is kept
    write_table(root / "trainsets/train-00000-of-00001.parquet", [GSM8K_TRAIN[0], {**GSM8K_TRAIN[1], "answer": "22"}])
    assert run_error(root, params([{"type": "gsm8k", "path": "trainsets/train-00000-of-00001.parquet"}])) == (
        "trainsets/train-00000-of-00001.parquet: row 2: answer: no final '#### <answer>' line"
    )


def test_paraphrase_sharing_a_13_gram_is_dropped_and_an_unrelated_prompt_kept(root):
    write_jsonl(root / "evalsets/gsm8k_test.jsonl", GSM8K_TEST)
    write_jsonl(root / "trainsets/gsm8k_train.jsonl", GSM8K_TRAIN)
    sets = {"tunix": dict(TUNIX), "gsm8k_test": {"path": "evalsets/gsm8k_test.jsonl", "format": "gsm8k"}}
    assert decontam.ngrams(PARAPHRASE) & decontam.ngrams(GSM8K_TEST[0]["question"])  # the fixture does share 13 words
    manifest = seed.run(params([{"type": "gsm8k", "path": "trainsets/gsm8k_train.jsonl"}], sets=sets), root)
    assert [r["prompt"] for r in read_jsonl(root / "data/train.jsonl")] == [UNRELATED]
    assert manifest["sources"][0]["dropped"] == 1 and manifest["decontamination"]["dropped"] == 1
    report = json.loads((root / "data/decontamination.json").read_text())
    assert report["sets"]["gsm8k_test"] == {
        "path": "evalsets/gsm8k_test.jsonl",
        "format": "gsm8k",
        "sha256": sha256_file(root / "evalsets/gsm8k_test.jsonl"),
        "prompts": 3,
        "redrawn": 0,
        "dropped_exact": 0,
        "dropped_ngram": 1,
        "synthetic_ngram_shared": 0,
    }
    assert report["sets"]["tunix"]["dropped_ngram"] == report["sets"]["tunix"]["dropped_exact"] == 0

    with pytest.raises(StageError) as err:
        seed.run(
            params([{"type": "gsm8k", "path": "trainsets/gsm8k_train.jsonl"}], sets=sets, decontamination="fail"), root
        )
    assert str(err.value) == (
        "trainsets/gsm8k_train.jsonl: row 1: prompt: shares the 13 words 'sold clips to 48 of her friends in april "
        "and then she sold' with eval item core-001 of eval set gsm8k_test (seed.decontamination: fail)"
    )


def test_synthetic_prompts_are_redrawn_against_every_set(root):
    """A synthetic prompt that equals a prompt of a second eval set is drawn again, counted for that set."""
    drawn, _ = seed.generate_dataset(20, MIX, 1234, [i["prompt"] for i in read_jsonl(EVAL_SET)])
    mine = [
        {
            "id": f"core-{k:03d}",
            "prompt": r["prompt"],
            "expected_answer": "1",
            "section": "core",
            "category": "arithmetic",
            "difficulty": "easy",
            "answer_type": "number",
        }
        for k, r in enumerate(drawn[:3], 1)
    ]
    write_jsonl(root / "evalsets/mine.jsonl", mine)
    sets = {"tunix": dict(TUNIX), "mine": {"path": "evalsets/mine.jsonl"}}
    seed.run(params([{"type": "synthetic"}], size=20, sets=sets), root)
    prompts = {r["prompt"] for r in read_jsonl(root / "data/train.jsonl")}
    assert not prompts & {m["prompt"] for m in mine}
    report = json.loads((root / "data/decontamination.json").read_text())
    assert report["sets"]["mine"]["redrawn"] >= 1


# ---------------------------------------------------------------- one-line errors


def run_error(root: Path, p: dict) -> str:
    with pytest.raises(StageError) as err:
        seed.run(p, root)
    text = str(err.value)
    assert "\n" not in text
    return text


def test_missing_file_and_unknown_format(root):
    src = {"type": "file", "path": "trainsets/nope.parquet", "fields": FIELDS}
    assert (
        run_error(root, params([src])) == "trainsets/nope.parquet: file not found (params.yaml: seed.sources[0].path)"
    )
    write_table(root / "trainsets/mine.jsonl", ROWS)
    shutil.copy(root / "trainsets/mine.jsonl", root / "trainsets/mine.xlsx")
    assert run_error(root, params([{**src, "path": "trainsets/mine.xlsx"}])) == (
        "params.yaml: seed.sources[0].format: trainsets/mine.xlsx: no known format for suffix '.xlsx'; "
        "one of jsonl, json, parquet, csv, arrow (set seed.sources[…].format)"
    )
    assert run_error(root, params([{**src, "path": "trainsets/mine.jsonl", "format": "excel"}])).startswith(
        "params.yaml: seed.sources[0].format: format 'excel'; one of jsonl"
    )
    (root / "trainsets/broken.jsonl").write_text('{"question": "Q?"}\n{"question": \n')
    assert run_error(root, params([{**src, "path": "trainsets/broken.jsonl"}])).startswith(
        "trainsets/broken.jsonl: cannot read as jsonl: "
    )


def test_mapping_that_names_a_missing_field(root):
    write_table(root / "trainsets/mine.csv", ROWS)
    src = {"type": "file", "path": "trainsets/mine.csv", "fields": {**FIELDS, "answer": "answer"}}
    assert run_error(root, params([src])) == (
        "params.yaml: seed.sources[0].fields.answer: 'answer' is not a field of "
        "trainsets/mine.csv (fields: question, solution, final)"
    )


def test_empty_answer_and_bad_reasoning_name_row_and_field(root):
    rows = [ROWS[0], {**ROWS[1], "final": "  "}]
    write_table(root / "trainsets/mine.jsonl", rows)
    src = {"type": "file", "path": "trainsets/mine.jsonl", "fields": FIELDS}
    assert run_error(root, params([src])) == "trainsets/mine.jsonl: row 2: final: empty"
    write_table(root / "trainsets/mine.jsonl", [ROWS[0], {**ROWS[1], "final": None}])
    assert run_error(root, params([src])) == "trainsets/mine.jsonl: row 2: final: empty"
    write_table(root / "trainsets/mine.jsonl", [ROWS[0], ROWS[1], {**ROWS[2], "solution": ["ok", {"x": 1}]}])
    assert run_error(root, params([src])) == "trainsets/mine.jsonl: row 3: solution[1]: expected text, got dict"


@pytest.mark.parametrize(
    ("messages", "message"),
    [
        ([{"role": "user", "content": "Q?"}], "row 2: messages: no assistant turn"),
        (
            [{"role": "assistant", "content": "<reasoning>r</reasoning><answer>1</answer>"}],
            "row 2: messages: no user turn",
        ),
        (
            [{"role": "user", "content": "Q?"}, {"role": "assistant", "content": "<answer>1</answer>"}],
            "row 2: messages[1].content: no <reasoning>…</reasoning> block (or it is empty)",
        ),
        (
            [
                {"role": "user", "content": "Q?"},
                {"role": "assistant", "content": "<reasoning>r</reasoning><answer> </answer>"},
            ],
            "row 2: messages[1].content: no <answer>…</answer> block (or it is empty)",
        ),
    ],
)
def test_chat_record_errors_name_row_and_field(root, messages, message):
    good = {
        "messages": [
            {"role": "user", "content": "Q?"},
            {"role": "assistant", "content": "<reasoning>r</reasoning><answer>1</answer>"},
        ]
    }
    write_jsonl(root / "trainsets/chat.jsonl", [good, {"messages": messages}])
    src = {"type": "file", "path": "trainsets/chat.jsonl", "fields": {"messages": "messages"}}
    assert run_error(root, params([src])) == f"trainsets/chat.jsonl: {message}"


def test_source_params_errors(root):
    write_table(root / "trainsets/mine.jsonl", ROWS)
    src = {"type": "file", "path": "trainsets/mine.jsonl", "fields": FIELDS}
    assert run_error(root, params([src, src])) == (
        "params.yaml: seed.sources[1].name: source name 'mine' used twice (also seed.sources[0]); "
        "give each source its own name"
    )
    assert run_error(root, params([{**src, "path": "mine.jsonl"}])).startswith(
        "params.yaml: seed.sources[0].path: 'mine.jsonl' is not under trainsets/"
    )
    assert run_error(root, params([{**src, "fields": {"prompt": "question"}}])).startswith(
        "params.yaml: seed.sources[0].fields: missing answer, reasoning"
    )
    assert run_error(root, params([{"type": "synthetic"}, {"type": "synthetic", "name": "again"}])) == (
        "params.yaml: seed.sources[1].type: only one synthetic source (seed.mix weights its families)"
    )


def test_eval_set_params_errors(root):
    assert run_error(root, params([{"type": "synthetic"}], sets={"tunix": {**TUNIX, "primary": False}})) == (
        "params.yaml: evaluate.sets: no set is marked primary: true"
    )
    two = {"tunix": dict(TUNIX), "again": dict(TUNIX)}
    assert run_error(root, params([{"type": "synthetic"}], sets=two)) == (
        "params.yaml: evaluate.sets: 2 sets are marked primary (tunix, again); mark one"
    )
    assert run_error(
        root, params([{"type": "synthetic"}], sets={"tunix": {**TUNIX, "path": "data/x.jsonl"}})
    ).startswith("params.yaml: evaluate.sets.tunix.path: 'data/x.jsonl' is not under evalsets/")
    assert run_error(
        root, params([{"type": "synthetic"}], sets={"tunix": {**TUNIX, "path": "evalsets/nope.jsonl"}})
    ) == ("evalsets/nope.jsonl: file not found (params.yaml: evaluate.sets.tunix.path)")


def test_eval_set_name_used_twice_names_its_line(root):
    text = (ROOT / "params.yaml").read_text()
    entry = "    tunix:\n      path: evalsets/tunix_eval_v1.jsonl\n"
    assert entry in text
    text = text.replace(entry, entry + "      format: items\n    tunix:\n      path: evalsets/tunix_eval_v1.jsonl\n", 1)
    (root / "params.yaml").write_text(text)
    lines = text.splitlines()
    first = lines.index("    tunix:") + 1
    second = lines.index("    tunix:", first) + 1
    with pytest.raises(StageError) as err:
        evalsets.configured({"evaluate": {"sets": {"tunix": dict(TUNIX)}}}, root)
    assert str(err.value) == f"params.yaml:{second}: evaluate.sets.tunix: set name used twice (first on line {first})"
