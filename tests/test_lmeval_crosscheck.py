"""Our scoring against EleutherAI's lm-evaluation-harness on the same replies, item by item.

The replies are fixed model-like completions (no model runs): each goes through lm-eval's own filter
pipelines and metric for our task YAMLs (evalsets/lmeval/, loaded by its TaskManager in .venv-lmeval:
scripts/lmeval_filters.py) and through reasoning.answers + reasoning.scoring. strict-match must agree
on at least 98 % of them, and each difference, on either filter, must be the one its reply was
written to show (scripts/lmeval_crosscheck.py lists the categories). Without .venv-lmeval the module
is skipped, except in CI, where a missing environment is a failure.
"""

from __future__ import annotations

import json
import os

import pytest

from scripts import lmeval_crosscheck as crosscheck
from stages import gsm8k
from tests.pipeline_utils import ROOT

pytestmark = pytest.mark.skipif(
    not crosscheck.LMEVAL_PYTHON.is_file() and not os.environ.get("CI"),
    reason="lm-eval's environment is not built (make lmeval-env)",
)
GSM8K = "tunix_gsm8k_sample"
BBH = "tunix_bbh_boolean_expressions"

# (doc_id, reply, expected category on strict-match, on flexible-extract; None where the verdicts agree).
# GSM8K docs 0 (18 dollars), 1 (70000) and 2 (540 meters) of evalsets/gsm8k_test_sample.jsonl.
GSM8K_CASES = [
    (0, "<reasoning>16 - 3 - 4 = 9 eggs. 9 * 2 = 18.</reasoning><answer>18</answer>", None, None),
    (0, "<reasoning>16 - 3 - 4 = 9 eggs.</reasoning><answer>$18</answer>", None, None),
    (0, "<reasoning>16 - 3 - 4 = 9, 9 * 2 = 18</reasoning><answer>18.</answer>", None, None),
    (0, "<reasoning>16 - 3 = 13, 13 * 2 = 26</reasoning><answer>26</answer>", None, None),
    (0, "<reasoning>She loses 16 - 3 - 4 = 9.</reasoning><answer>-18</answer>", None, None),
    (
        1,
        "<reasoning>80,000 + 50,000 = 130,000; 200,000 - 130,000 = 70,000</reasoning><answer>70,000</answer>",
        None,
        None,
    ),
    (1, "<reasoning>Profit is 200000 - 130000.</reasoning><answer>$70,000</answer>", None, None),
    (1, "<reasoning>150% of 80,000 is 120,000.</reasoning><answer>1,2,0</answer>", None, None),
    # the right value written as a decimal: we compare values, lm-eval strings
    (0, "<reasoning>9 * 2.00 = 18.00</reasoning><answer>18.00</answer>", "reading", "reading"),
    # a unit word inside the block: we read 18, strict-match's pattern reads nothing; the last number is 18
    (0, "<reasoning>9 eggs at $2 each</reasoning><answer>18 dollars</answer>", "pattern", None),
    # the tag missing: ours has nothing to score; the last number is right
    (0, "16 - 3 - 4 = 9 eggs are sold. 9 * 2 = 18. The answer is 18.", None, "format-only"),
    (2, "He runs 3 * 3 = 9 sprints of 60 meters: 9 * 60 = 540 meters a week.", None, "format-only"),
    (1, "<reasoning>200,000 - 130,000 = 70,000</reasoning><answer>70,000", None, "format-only"),
    # a number after the block: the last number is not the answer
    (2, "<reasoning>3 * 3 = 9 sprints, 9 * 60 = 540</reasoning><answer>540</answer> (9 sprints)", None, "elsewhere"),
    (2, "<reasoning>9 * 60 = 540</reasoning><answer>540 meters</answer>", "pattern", None),
    (1, "<reasoning>profit 70000</reasoning><answer>70000</answer>\n\nQ: 12 eggs", None, "elsewhere"),
    ("all", "", None, None),  # an empty reply, on every doc
]
# BBH boolean_expressions: the five scored items of evalsets/bbh_sample.jsonl, in file order.
BBH_CASES = [
    # yes for True: we read its meaning, lm-eval compares the word; the last True of the reasoning is right
    (0, "<reasoning>not False or True = True</reasoning><answer>Yes</answer>", "reading", None),
    (3, "<reasoning>Z = False or False or False = False</reasoning><answer>False</answer>\nSo Z is False.", None, None),
    # a True after the block
    (3, "<reasoning>all False</reasoning><answer>False</answer> (not True is False, so True)", None, "elsewhere"),
    (1, "not False is True, so the whole expression is True.", None, "format-only"),
    (2, "<reasoning>not not True = True; not True = False</reasoning><answer>FALSE</answer>", None, None),
]


def gsm8k_docs() -> list[dict]:
    lines = (ROOT / "evalsets" / "gsm8k_test_sample.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def bbh_docs() -> list[dict]:
    lines = (ROOT / "evalsets" / "bbh_sample.jsonl").read_text(encoding="utf-8").splitlines()
    rows = [json.loads(line) for line in lines if line.strip()]
    return [r for r in rows if r["task"] == "boolean_expressions" and not r["exemplar"]]


def gsm8k_replies(docs: list[dict]) -> list[tuple[int, str]]:
    """Every doc answered in our format from its own worked solution: right, right with a comma and
    a currency sign, and wrong by one; plus the hand-written cases."""
    replies = []
    for i, doc in enumerate(docs):
        _, steps, final = gsm8k.parse_row(doc, f"doc {i}")
        reasoning = "\n".join(steps)
        value = float(final) if "." in final else int(final)
        replies += [
            (i, f"<reasoning>{reasoning}</reasoning><answer>{final}</answer>"),
            (i, f"<reasoning>{reasoning}</reasoning>\n<answer>${value:,}</answer>"),
            (i, f"<reasoning>{reasoning}</reasoning><answer>{value + 1}</answer>"),
        ]
    return replies + hand_written(GSM8K_CASES, len(docs))


def bbh_replies(docs: list[dict]) -> list[tuple[int, str]]:
    replies = []
    for i, doc in enumerate(docs):
        wrong = "False" if doc["answer"] == "True" else "True"
        for answer in (doc["answer"], doc["answer"].lower(), f" {doc['answer']}. ", wrong, wrong.upper()):
            replies.append((i, f"<reasoning>Evaluate inside the brackets first.</reasoning><answer>{answer}</answer>"))
    return replies + hand_written(BBH_CASES, len(docs))


def hand_written(cases: list[tuple], n_docs: int) -> list[tuple[int, str]]:
    out = []
    for doc_id, reply, *_ in cases:
        out += [(i, reply) for i in range(n_docs)] if doc_id == "all" else [(doc_id, reply)]
    return out


@pytest.fixture(scope="module")
def report() -> dict:
    samples = crosscheck.harness_verdicts({GSM8K: gsm8k_replies(gsm8k_docs()), BBH: bbh_replies(bbh_docs())})
    return crosscheck.compare(samples, crosscheck.tolerance())


def test_the_harness_read_our_files(report):
    """lm-eval loaded both committed sets offline, all their items, under both filters."""
    gsm8k = report["tasks"][GSM8K]
    assert set(gsm8k) == {"strict-match", "flexible-extract"}
    assert gsm8k["strict-match"]["n"] == 3 * len(gsm8k_docs()) + len(GSM8K_CASES) - 1 + len(gsm8k_docs())
    assert report["tasks"][BBH]["flexible-extract"]["n"] == 5 * len(bbh_docs()) + len(BBH_CASES)
    # lm-eval's target of every item is the answer we score against
    assert not [
        e["other_targets"] for filters in report["tasks"].values() for e in filters.values() if e["other_targets"]
    ]
    # the templated right answers are right on both sides, the wrong ones wrong
    assert gsm8k["strict-match"]["lmeval_correct"] >= 2 * len(gsm8k_docs())


def test_strict_match_agrees_on_at_least_98_percent(report):
    overall = report["overall"][crosscheck.STRICT]
    assert overall["n"] == sum(filters[crosscheck.STRICT]["n"] for filters in report["tasks"].values())
    assert overall["agreement"] >= crosscheck.GOAL, crosscheck.markdown(report)
    assert crosscheck.meets_goal(report)
    # the lenient reading differs wherever the tag is missing or a number follows the answer
    assert report["overall"]["flexible-extract"]["agreement"] < 1


@pytest.mark.parametrize("task,cases", [(GSM8K, GSM8K_CASES), (BBH, BBH_CASES)])
@pytest.mark.parametrize("filter_name", ["strict-match", "flexible-extract"])
def test_every_difference_is_the_documented_one(report, task, cases, filter_name):
    """Each reply differs exactly where it was written to, in its category; the rest agree."""
    expected = {(c[0], c[1]): c[2 if filter_name == crosscheck.STRICT else 3] for c in cases if c[0] != "all"}
    found = {(d["doc_id"], d["response"]): d["category"] for d in report["tasks"][task][filter_name]["differences"]}
    assert set(found.values()) <= set(crosscheck.CATEGORIES)
    assert found == {key: cat for key, cat in expected.items() if cat is not None}, crosscheck.markdown(report)


def test_categories_of_a_difference():
    assert crosscheck.category(None, "18") == "format-only"
    assert crosscheck.category("18 dollars", crosscheck.INVALID) == "pattern"
    assert crosscheck.category("18.00", "18.00") == "reading"
    assert crosscheck.category("$1,250", "1250") == "reading"
    assert crosscheck.category("540", "9") == "elsewhere"


def test_a_folder_that_is_no_model_is_one_line_and_exit_1(tmp_path, capsys):
    assert crosscheck.main([str(tmp_path), "--output", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err.strip()
    assert err == f"error: {tmp_path}: not a Hugging Face model directory (no config.json)"
    assert not (tmp_path / "out").exists()


def test_missing_logged_samples_name_the_folder(tmp_path):
    with pytest.raises(crosscheck.StageError, match=r"no samples_tunix_gsm8k_sample_\*\.jsonl"):
        crosscheck.logged_samples(tmp_path, [GSM8K])
