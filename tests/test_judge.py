"""The rubric judge without a server: parsing, scoring, the cache, the defences, the stage and evaluate's
hook, the GRPO reward part; the defences also with the real google/gemma-3-270m judging in-process.

The client against a real vLLM server is tests/test_vllm_judge.py.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import re
import threading
from pathlib import Path
from typing import ClassVar

import pytest
import yaml

from reasoning import judge as J
from reasoning.judge_client import OpenAIBackend
from reasoning.rewards import RewardError, RewardSet, Rollout
from stages import evaluate as evaluate_stage
from stages import judge as judge_stage
from stages import paths
from stages.common import StageError, read_jsonl, write_jsonl

ROOT = Path(__file__).resolve().parent.parent
OPEN_SET = ROOT / "evalsets" / "open_ended_v1.jsonl"
QUESTION = "Tom has 3 apples and buys 4 more. How many apples does he have?"
REAL = "<reasoning>Tom starts with 3 apples and buys 4 more, so 3 + 4 = 7 apples.</reasoning><answer>7</answer>"
# The replies a judge must never score above a real answer of the same item.
MASTER_KEYS = {
    "thought process": "<reasoning>Thought process:</reasoning><answer>Thought process:</answer>",
    "step by step": "<reasoning>Let's solve this problem step by step.</reasoning><answer>Let's solve this problem step by step.</answer>",
    "colon": "<reasoning>:</reasoning><answer>:</answer>",
    "solution": "<reasoning>Solution</reasoning><answer>解</answer>",
}
ADVERSARIAL = {
    **MASTER_KEYS,
    "empty answer": "<reasoning>Tom starts with 3 apples and buys 4 more.</reasoning><answer></answer>",
    "no tags": "",
    "copied question": f"<reasoning>{QUESTION}</reasoning><answer>{QUESTION}</answer>",
    "padding": "<reasoning>"
    + "I will now think about this very carefully. " * 12
    + "3 + 4 = 7</reasoning><answer>7</answer>",
}


class Scripted:
    """A backend that answers every prompt with `reply(prompt)` and counts what it was asked."""

    def __init__(self, reply, name: str = "scripted"):
        self.reply, self.prompts = reply, []
        self.identity = {"backend": "test", "model": name}

    def complete(self, prompts, max_tokens):
        self.prompts += list(prompts)
        return [self.reply(p) for p in prompts]


def all_yes() -> Scripted:
    """The worst judge: yes to every criterion of every rubric."""

    def reply(prompt: str) -> str:
        if not prompt.endswith("Verdicts:\n"):
            return " yes"
        n = len(re.findall(r"^\d+\. ", prompt.rsplit("Criteria:", 1)[1], re.MULTILINE))
        return "\n".join(f"{i}: yes" for i in range(1, n + 1))

    return Scripted(reply)


# ------------------------------------------------------------------ parsing


@pytest.mark.parametrize(
    "reply",
    [
        "1: yes\n2: no\n3: yes",
        "1: Yes\n2: NO\n3: yes.\n\nQuestion:\nsomething else 1: no",  # the model goes on to a next example
        "Here are my verdicts.\n1. yes\n2) no\n3 - yes",
        "**1**: yes\n**2**: no\n**3**: yes",
        "criterion 1: yes\ncriterion 2: no\ncriterion 3: yes\n",
    ],
)
def test_lines_parse_every_format_the_template_asks_for(reply):
    assert J.parse_lines(reply, 3) == ([True, False, True], None)


@pytest.mark.parametrize(
    ("reply", "why"),
    [
        ("", "no verdict"),
        ("The reply is good.", "no verdict"),
        ("1: yes\n2: no", "no verdict for criterion 3"),
        ("1: yes\n2: no\n2: yes\n3: no", "two verdicts for criterion 2"),
        ("1: yes\n2: no\n3: yes\n4: no", "a verdict for criterion 4, which the rubric does not have"),
        ("1: maybe\n2: no\n3: yes", "no verdict for criterion 1"),
        ("1: yes no\n2: no\n3: yes", "no verdict for criterion 1"),
    ],
)
def test_malformed_replies_are_failures_with_a_reason(reply, why):
    assert J.parse_lines(reply, 3) == (None, why)


@pytest.mark.parametrize(
    ("reply", "want"),
    [
        (" yes", (True, None)),
        ("No.", (False, None)),
        ("\n**Yes**\nbecause", (True, None)),
        (" yes or no", (None, "two verdicts")),
        (" maybe", (None, "no verdict")),
        ("", (None, "no verdict")),
        (" yesterday", (None, "no verdict")),
    ],
)
def test_word_verdicts(reply, want):
    assert J.parse_word(reply) == want


def test_a_failed_judgment_is_counted_never_read_as_yes_or_no():
    judge = J.Judge(Scripted(lambda p: "1: yes\n2: yes"))  # the default rubric has 4 criteria
    (j,) = judge.judge([J.Task(QUESTION, REAL)])
    assert j["score"] is None and j["verdicts"] is None and j["failure"] == "no verdict for criterion 3"
    assert judge.failed == 1
    totals = J.summary([j], [J.DEFAULT_RUBRIC])
    assert totals["score"] is None and totals["n_failed"] == 1


# ------------------------------------------------------------------ scoring


def test_rubric_score_weights_criteria_and_subtracts_pitfalls():
    rubric = J.parse_rubric(
        [
            {"criterion": "a", "weight": 3},
            {"criterion": "b", "weight": 1},
            {"criterion": "c", "weight": 2, "pitfall": True},
        ]
    )
    assert J.rubric_score(rubric, [True, True, False]) == 1.0
    assert J.rubric_score(rubric, [True, False, False]) == 0.75
    assert J.rubric_score(rubric, [True, False, True]) == 0.25  # (3 - 2) / 4
    assert J.rubric_score(rubric, [False, False, True]) == 0.0  # clipped
    with pytest.raises(ValueError):
        J.rubric_score(rubric, [True])


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ([{"criterion": "", "weight": 1}], "rubric[0].criterion"),
        ([{"criterion": "a", "weight": 0}], "rubric[0].weight"),
        ([{"criterion": "a", "weight": True}], "rubric[0].weight"),
        ([{"criterion": "a", "weight": 1, "pitfall": True}], "not a pitfall"),
        ([{"criterion": "a", "weight": 1, "pitfall": "yes"}], "rubric[0].pitfall"),
        (["a"], "rubric[0]: expected an object"),
        ([], "rubric: expected a non-empty list"),
        ("a", "rubric: expected a non-empty list"),
    ],
)
def test_bad_rubrics_are_one_line_errors(raw, message):
    with pytest.raises(J.JudgeError, match=message.replace("[", r"\[").replace("]", r"\]")):
        J.parse_rubric(raw)


def test_both_templates_score_the_same_verdicts():
    rubric = J.parse_rubric(
        [
            {"criterion": "Says 7.", "weight": 2},
            {"criterion": "Shows 3 + 4.", "weight": 1},
            {"criterion": "Gives a wrong sum.", "weight": 1, "pitfall": True},
        ]
    )
    verdict = {"Says 7.": " yes", "Shows 3 + 4.": " no", "Gives a wrong sum.": " no"}
    criterion = J.Judge(Scripted(lambda p: verdict[p.rsplit("Criterion: ", 1)[1].split("\n")[0]]), "criterion")
    lines = J.Judge(Scripted(lambda p: "1: yes\n2: no\n3: no"), "rubric-lines")
    a, b = (j.judge([J.Task(QUESTION, REAL, rubric)])[0] for j in (criterion, lines))
    assert a["score"] == b["score"] == pytest.approx(2 / 3, abs=1e-6)
    assert a["verdicts"] == b["verdicts"] == [True, False, False]
    assert len(criterion.backend.prompts) == 3 and len(lines.backend.prompts) == 1
    assert a["key"] != b["key"]  # the template is part of the judge's identity


def test_the_rendered_prompt_shows_question_reply_and_every_criterion():
    (prompt,) = J.render("rubric-lines", QUESTION, REAL, J.DEFAULT_RUBRIC)
    assert QUESTION in prompt and REAL in prompt and prompt.endswith("Verdicts:\n")
    for i, c in enumerate(J.DEFAULT_RUBRIC, start=1):
        assert f"{i}. {c.text}" in prompt
    with pytest.raises(J.JudgeError, match="judge.template"):
        J.render("likert", QUESTION, REAL, J.DEFAULT_RUBRIC)


# ------------------------------------------------------------------ cache


def test_the_cache_asks_nothing_twice_and_a_changed_rubric_or_judge_asks_again(tmp_path):
    backend = all_yes()
    cache = J.Cache(tmp_path / "cache")
    tasks = [J.Task(QUESTION, REAL), J.Task(QUESTION, REAL.replace("7 apples", "seven apples"))]
    first = J.Judge(backend, cache=cache).judge(tasks)
    assert len(backend.prompts) == 2
    again = J.Judge(backend, cache=J.Cache(tmp_path / "cache")).judge(tasks)  # a new process, the same folder
    assert len(backend.prompts) == 2 and again == first
    changed = J.parse_rubric([{"criterion": "The answer is 7.", "weight": 1}])
    J.Judge(backend, cache=cache).judge([J.Task(QUESTION, REAL, changed)])
    assert len(backend.prompts) == 3
    J.Judge(all_yes(), cache=cache).judge(tasks[:1])  # same name, same identity: cached
    other = Scripted(backend.reply, name="another-model")
    J.Judge(other, cache=cache).judge(tasks[:1])
    assert len(other.prompts) == 1
    files = sorted((tmp_path / "cache").rglob("*.json"))
    assert len(files) == 4 and all(f.stem == json.loads(f.read_text())["key"] for f in files)


def test_duplicates_in_one_batch_ask_once_and_a_foreign_cache_file_is_asked_again(tmp_path):
    backend = all_yes()
    judge = J.Judge(backend, cache=J.Cache(tmp_path))
    out = judge.judge([J.Task(QUESTION, REAL)] * 3)
    assert len(backend.prompts) == 1 and out[0] == out[1] == out[2]
    (file,) = tmp_path.rglob("*.json")
    file.write_text("{not json")
    J.Judge(backend, cache=J.Cache(tmp_path)).judge([J.Task(QUESTION, REAL)])
    assert len(backend.prompts) == 2 and json.loads(file.read_text())["score"] == out[0]["score"]


def test_a_completion_with_a_lone_surrogate_is_judged_cached_and_asked_once(tmp_path):
    # A model can write "\ud800" in JSON, which reads as a lone surrogate: no UTF-8 exists for it.
    reply = REAL.replace("7 apples", "7 apples\ud800")
    backend = all_yes()
    first = J.Judge(backend, cache=J.Cache(tmp_path)).judge([J.Task(QUESTION, reply)])
    again = J.Judge(backend, cache=J.Cache(tmp_path)).judge([J.Task(QUESTION, reply)])
    assert len(backend.prompts) == 1 and again == first
    # every other text keeps the key it had: sha256 of its canonical JSON as plain UTF-8
    doc = {
        "judge": {"m": 1},
        "rubric": J.rubric_json(J.DEFAULT_RUBRIC),
        "question": QUESTION,
        "completion": "é " + REAL,
    }
    plain = hashlib.sha256(json.dumps(doc, sort_keys=True, ensure_ascii=False).encode()).hexdigest()
    assert J.cache_key({"m": 1}, J.DEFAULT_RUBRIC, QUESTION, "é " + REAL) == plain


# ------------------------------------------------------------------ defences


@pytest.mark.parametrize("name", sorted(ADVERSARIAL))
def test_adversarial_replies_never_beat_a_real_answer_even_with_a_judge_that_says_yes_to_all(name):
    backend = all_yes()
    real, bad = J.Judge(backend).judge([J.Task(QUESTION, REAL), J.Task(QUESTION, ADVERSARIAL[name])])
    assert real["score"] > 0 and real["gate"] is None
    assert bad["score"] == 0.0 and bad["gate"] is not None
    assert len(backend.prompts) == 1  # the gated reply was never shown to the judge


def test_real_answers_pass_the_gates():
    for item in read_jsonl(OPEN_SET, "open_item"):
        assert J.gate(item["prompt"], REAL) is None
    short = "<reasoning>12 + 30 = 42</reasoning><answer>42</answer>"
    assert J.gate("What is 12 + 30?", short) is None


# ------------------------------------------------------------------ the open-ended set


def test_the_open_ended_set_has_40_items_over_six_domains_with_3_to_8_criteria():
    items = read_jsonl(OPEN_SET, "open_item")
    assert len(items) >= 40
    domains = {i["domain"] for i in items}
    assert domains == {"summarise", "science", "planning", "creative", "code", "math"}
    for item in items:
        rubric = J.parse_rubric(item["rubric"], item["id"])
        assert 3 <= len(rubric) <= 8
    assert len({i["prompt"] for i in items}) == len(items)


# ------------------------------------------------------------------ the stage, evaluate and GRPO


def _repo(tmp_path: Path, judge_set: bool, reply) -> tuple[Path, dict]:
    """A root with the gsm8k set, three predictions for it (right, master key, padded) and params."""
    root = tmp_path / "root"
    (root / "evalsets").mkdir(parents=True)
    rows = [json.loads(line) for line in (ROOT / "evalsets/gsm8k_test_sample.jsonl").read_text().splitlines()[:3]]
    write_jsonl(root / "evalsets/small.jsonl", rows)
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["evaluate"]["sets"] = {
        "small": {"path": "evalsets/small.jsonl", "format": "gsm8k", "primary": True, "judge": judge_set}
    }
    completions = [REAL, MASTER_KEYS["step by step"], ADVERSARIAL["padding"]]
    preds = [
        {
            "id": f"core-{k:03d}",
            "completion": c,
            "reasoning": None,
            "answer": None,
            "format_ok": True,
            "n_tokens": 10,
            "truncated": False,
        }
        for k, c in enumerate(completions, start=1)
    ]
    write_jsonl(root / paths.predictions("small"), preds)
    return root, params


def test_stage_writes_judgments_that_evaluate_reports_and_a_rerun_asks_nothing(tmp_path, monkeypatch):
    root, params = _repo(tmp_path, True, None)
    backend = all_yes()
    monkeypatch.setattr(
        judge_stage,
        "make_judge",
        lambda p, r: J.Judge(backend, p["judge"]["template"], J.Cache(r / p["judge"]["cache_dir"])),
    )
    records = judge_stage.run(params, "small", root)
    assert [r["gate"] for r in records] == [None, "master key", "padding"]
    assert len(backend.prompts) == 1
    judge_stage.run(params, "small", root)
    assert len(backend.prompts) == 1  # everything cached
    metrics, scorecard = evaluate_stage.evaluate(evaluate_stage.evalsets.named(params, "small", root), params, root)
    assert metrics["judge"] == {
        "score": pytest.approx(round(6 / 7 / 3, 6), abs=1e-6),
        "n_judged": 3,
        "n_failed": 0,
        "n_gated": 2,
    }
    assert scorecard["items"][1]["judge"]["gate"] == "master key"
    assert scorecard["judge"]["identity"] == {"backend": "test", "model": "scripted", "template": "rubric-lines"}
    assert [c["pass_rate"] for c in scorecard["judge"]["criteria"]] == [1.0, 1.0, 1.0, 1.0]


def test_a_set_that_does_not_ask_gets_an_empty_file_and_no_judge_metric(tmp_path, monkeypatch):
    root, params = _repo(tmp_path, False, None)
    monkeypatch.setattr(judge_stage, "make_judge", lambda p, r: pytest.fail("no judge may be loaded"))
    assert judge_stage.run(params, "small", root) == []
    assert (root / paths.judgments("small")).read_bytes() == b""
    metrics, scorecard = evaluate_stage.evaluate(evaluate_stage.evalsets.named(params, "small", root), params, root)
    assert "judge" not in metrics and "judge" not in scorecard
    params["evaluate"]["sets"]["small"]["judge"] = True  # asked, but judge@small has not run since
    with pytest.raises(StageError, match=r"data/judgments/small.jsonl: no judgments"):
        evaluate_stage.evaluate(evaluate_stage.evalsets.named(params, "small", root), params, root)


def test_a_refused_endpoint_stops_the_stage_with_one_line_and_leaves_the_old_judgments(tmp_path):
    root, params = _repo(tmp_path, True, None)
    out = root / paths.judgments("small")
    out.parent.mkdir(parents=True)
    out.write_text("the last good judgments\n")
    port = _free_port()
    params["judge"].update(backend="openai", base_url=f"http://127.0.0.1:{port}/v1", retries=1, timeout=2)
    with pytest.raises(StageError) as err:
        judge_stage.run(params, "small", root)
    message = str(err.value)
    assert message.startswith(f"judge http://127.0.0.1:{port}/v1/completions: cannot connect")
    assert "\n" not in message and "(2 of 2 tries)" in message
    assert out.read_text() == "the last good judgments\n"


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_grpo_reward_part_scores_with_the_judge_and_zero_for_failures():
    rollout = Rollout(QUESTION, REAL, {"id": "t-1", "final_answer": "7"}, 20, False, 64)
    weights = {"format": 0.0, "correctness": 1.0, "judge": 0.5}
    rewards = RewardSet(weights=weights, user={}, rel_tolerance=1e-6, partial_within=0.1, judge=J.Judge(all_yes()))
    total, parts = rewards.score(rollout)
    assert parts == {"correctness": 1.0, "judge": pytest.approx(6 / 7, abs=1e-6)} and total == pytest.approx(
        1 + 3 / 7, abs=1e-6
    )
    failing = J.Judge(Scripted(lambda p: "no idea"))
    rewards = RewardSet(weights=weights, user={}, rel_tolerance=1e-6, partial_within=0.1, judge=failing)
    assert rewards.score(rollout)[1]["judge"] == 0.0 and failing.failed == 1
    with pytest.raises(RewardError, match="no judge configured"):
        RewardSet(weights=weights, user={}, rel_tolerance=1e-6, partial_within=0.1).score(rollout)
    own = {"id": "t-2", "final_answer": "7", "rubric": [{"criterion": "Says 7.", "weight": 1}]}
    assert (
        RewardSet(weights=weights, user={}, rel_tolerance=1e-6, partial_within=0.1, judge=J.Judge(all_yes())).score(
            Rollout(QUESTION, REAL, own, 20, False, 64)
        )[1]["judge"]
        == 1.0
    )


# ------------------------------------------------------------------ the HTTP client, on a local stand-in


class _Handler(http.server.BaseHTTPRequestHandler):
    seen: ClassVar[list] = []
    status = 200

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).seen.append((dict(self.headers), body))
        if type(self).status != 200:
            self.send_error(type(self).status)
            return
        text = "1: yes\n2: yes\n3: yes\n4: no"
        reply = {"choices": [{"message": {"content": text}} if "messages" in body else {"text": text}]}
        data = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def stand_in():
    _Handler.seen, _Handler.status = [], 200
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


def test_the_client_sends_the_key_only_in_its_header_and_retries_server_errors(stand_in, monkeypatch, tmp_path):
    monkeypatch.setenv("JUDGE_TEST_KEY", "sk-never-written-4242")
    backend = OpenAIBackend(stand_in, "m", "chat", "JUDGE_TEST_KEY", concurrency=3, timeout=5, retries=2, backoff=0.01)
    cache = J.Cache(tmp_path / "cache")
    out = J.Judge(backend, cache=cache).judge([J.Task(QUESTION, REAL), J.Task(QUESTION, REAL + " ")])
    assert [j["verdicts"] for j in out] == [[True, True, True, False]] * 2
    assert all(h["Authorization"] == "Bearer sk-never-written-4242" for h, _ in _Handler.seen)
    assert all(b["messages"][0]["role"] == "user" and b["temperature"] == 0.0 for _, b in _Handler.seen)
    written = "".join(f.read_text() for f in (tmp_path / "cache").rglob("*.json")) + json.dumps(backend.identity)
    assert "sk-never" not in written and "JUDGE_TEST_KEY" not in written
    _Handler.status, _Handler.seen = 503, []
    with pytest.raises(J.JudgeError, match=r"/v1/chat/completions: HTTP 503 .*\(3 of 3 tries\)") as err:
        backend.complete(["x"], 4)
    assert len(_Handler.seen) == 3 and "sk-never" not in str(err.value)
    _Handler.status, _Handler.seen = 400, []
    with pytest.raises(J.JudgeError, match=r"HTTP 400 .*\(1 of 3 tries\)"):
        backend.complete(["x"], 4)
    monkeypatch.delenv("JUDGE_TEST_KEY")
    with pytest.raises(J.JudgeError, match="JUDGE_TEST_KEY .* is not set"):
        backend.complete(["x"], 4)


# ------------------------------------------------------------------ the real 270M as judge, in-process


@pytest.fixture(scope="module")
def gemma_judge(gemma270m):
    """google/gemma-3-270m (the `gemma` extra, as the base stage writes it: tests/conftest.py) as a local judge."""
    from stages.common import sha256_tree
    from training.judge_local import LocalBackend

    return LocalBackend(gemma270m[1], sha256_tree(gemma270m[1]), "float32", batch_size=8)


def test_the_real_judge_never_scores_adversarial_replies_above_a_real_answer(gemma_judge, tmp_path):
    judge = J.Judge(gemma_judge, cache=J.Cache(tmp_path))
    names = sorted(ADVERSARIAL)
    out = judge.judge([J.Task(QUESTION, REAL)] + [J.Task(QUESTION, ADVERSARIAL[n]) for n in names])
    real = out[0]["score"] if out[0]["score"] is not None else 0.0
    for name, j in zip(names, out[1:]):
        assert j["score"] == 0.0 and j["score"] <= real, name
    assert judge.asked == 1
    # greedy and cached: the same judgment again, asked of nobody
    again = J.Judge(gemma_judge, cache=J.Cache(tmp_path)).judge([J.Task(QUESTION, REAL)])
    assert again[0] == out[0]
    # deterministic: a fresh cache gets the same reply from the model
    fresh = J.Judge(gemma_judge).judge([J.Task(QUESTION, REAL)])
    assert fresh[0]["replies"] == out[0]["replies"]


def test_a_local_judge_without_a_checkpoint_is_a_one_line_params_error(tmp_path):
    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["judge"].update(backend="local", model="models/nope")
    with pytest.raises(
        StageError, match=r"^params.yaml:\d+: judge.model: 'models/nope' is not a Hugging Face directory"
    ):
        judge_stage.make_judge(params, tmp_path)


# ------------------------------------------------------------------ a judged set (answer_type: judged)

JUDGED_SPEC = {
    "path": "evalsets/open.jsonl",
    "format": "file",
    "answer_type": "judged",
    "judge": True,
    "fields": {"id": "id", "prompt": "prompt", "rubric": "rubric", "domain": "domain"},
}


def _judged_root(tmp_path: Path, spec: dict) -> tuple[Path, dict]:
    """A root with three open-ended items (three domains) as set `open`, a one-item primary set and
    params.yaml (so errors can name its lines)."""
    root = tmp_path / "root"
    (root / "evalsets").mkdir(parents=True)
    items = read_jsonl(OPEN_SET, "open_item")
    picked = [next(i for i in items if i["domain"] == d) for d in ("summarise", "science", "math")]
    write_jsonl(root / "evalsets/open.jsonl", picked)
    (root / "evalsets/small.jsonl").write_text((ROOT / "evalsets/gsm8k_test_sample.jsonl").read_text().split("\n")[0])
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["evaluate"]["sets"] = {
        "small": {"path": "evalsets/small.jsonl", "format": "gsm8k", "primary": True},
        "open": spec,
    }
    params["predict"].update(batch_size=4, max_new_tokens=8)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return root, params


def test_a_judged_set_is_predicted_judged_and_evaluated_with_the_judge_as_its_score(shared_base, tmp_path, monkeypatch):
    from stages import predict as predict_stage

    root, params = _judged_root(tmp_path, JUDGED_SPEC)
    (root / "data").mkdir()
    (root / paths.POLICY).symlink_to(shared_base / paths.POLICY)  # the tiny model of the base fixture
    # predict, then judge with the tiny model itself as an in-process judge (judge.backend local), then evaluate
    preds = predict_stage.run(params, "open", root)
    assert [p["id"] for p in preds] == ["oe-summarise-001", "oe-science-001", "oe-math-001"]
    params["judge"].update(backend="local", model=paths.POLICY.as_posix(), batch_size=4)
    records = judge_stage.run(params, "open", root)
    assert len(records) == 3 and all(r["judge"]["backend"] == "local" for r in records)
    metrics = evaluate_stage.run(params, "open", root)
    card = json.loads((root / paths.set_scorecard("open")).read_text())
    assert metrics["judge"]["n_judged"] == 3
    assert metrics["primary_score"] == metrics["judge"]["score"]  # the judge's score, not an accuracy
    assert metrics["partial_accuracy"] is None and set(metrics["by"]["domain"]) == {"summarise", "science", "math"}
    assert all(r["answer_type"] == "judged" and r["correct"] is None and r["expected"] is None for r in card["items"])

    # The same stages over real answers, with a judge that says yes to everything: each item's own rubric
    # scores it (its pitfalls count against), and those scores are the set's primary score, by domain too.
    items = read_jsonl(root / "evalsets/open.jsonl")
    answer = "<reasoning>I read the question and answer it in full, point by point.</reasoning><answer>{}</answer>"
    write_jsonl(
        root / paths.predictions("open"),
        [
            {**p, "completion": answer.format(f"A real reply to item {p['id']}."), "n_tokens": 20}
            for p in read_jsonl(root / paths.predictions("open"))
        ],
    )
    backend = all_yes()
    monkeypatch.setattr(judge_stage, "make_judge", lambda p, r: J.Judge(backend, p["judge"]["template"]))
    judge_stage.run(params, "open", root)
    assert len(backend.prompts) == 3
    metrics = evaluate_stage.run(params, "open", root)
    own = [J.rubric_score(J.parse_rubric(i["rubric"]), [True] * len(i["rubric"])) for i in items]
    assert all(0 < s < 1 for s in own)  # every rubric has a pitfall: yes to all is no full score
    assert metrics["primary_score"] == pytest.approx(sum(own) / 3, abs=1e-6)
    assert metrics["by"]["domain"]["math"] == pytest.approx(own[2], abs=1e-6)
    assert metrics["section"]["core"] == metrics["primary_score"]
    card = json.loads((root / paths.set_scorecard("open")).read_text())
    assert [r["judge"]["score"] for r in card["items"]] == pytest.approx(own, abs=1e-6)
    assert card["breakdowns"]["domain"]["science"]["judge_score"] == pytest.approx(own[1], abs=1e-6)


@pytest.mark.parametrize(
    ("change", "key", "message"),
    [
        ({"judge": False}, "answer_type", "a judged set needs the judge: add judge: true to evaluate.sets.open"),
        ({"primary": True}, "primary", "a judged set cannot be primary"),
        ({"fields": {"prompt": "prompt", "answer": "reference"}}, "fields.answer", "a judged set has no answer"),
    ],
)
def test_bad_judged_params_are_one_line_and_exit_1(tmp_path, change, key, message):
    import os
    import subprocess
    import sys

    spec = {**JUDGED_SPEC, **change}
    root, params = _judged_root(tmp_path, spec)
    if change.get("primary"):
        params["evaluate"]["sets"]["small"]["primary"] = False
        (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    proc = subprocess.run(
        [sys.executable, "-m", "stages.evaluate", "open"],
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 1, proc.stderr
    assert re.match(rf"^error: params.yaml:\d+: evaluate.sets.open.{re.escape(key)}: {re.escape(message)}", lines[0])
    assert not (root / "reports").exists()


def test_a_judged_set_reads_rows_with_and_without_a_rubric_and_names_a_bad_one(tmp_path):
    from stages import evalsets

    root, params = _judged_root(tmp_path, JUDGED_SPEC)
    lines = (root / "evalsets/open.jsonl").read_text().splitlines()
    row = json.loads(lines[1])
    del row["rubric"]
    lines[1] = json.dumps(row)
    (root / "evalsets/open.jsonl").write_text("\n".join(lines) + "\n")
    items = evalsets.load_items(evalsets.named(params, "open", root), root)
    assert "rubric" in items[0] and "rubric" not in items[1]  # judged with the default rubric
    assert items[0]["expected_answer"] is None and items[0]["groups"] == {"domain": "summarise"}
    row["rubric"] = [{"criterion": "Says so.", "weight": -1}]
    lines[1] = json.dumps(row)
    (root / "evalsets/open.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(StageError, match=r"evalsets/open.jsonl:2: rubric\[0\].weight: expected a number above 0"):
        evalsets.load_items(evalsets.named(params, "open", root), root)


def test_the_open_ended_entry_params_yaml_holds_commented_out_is_a_judged_set_of_42(tmp_path):
    """Uncommented as docs/judge.md says, the entry is valid params and the set loads every item."""
    from stages import evalsets
    from stages.common import load_params

    lines = (ROOT / "params.yaml").read_text().split("\n")
    at = next(k for k, line in enumerate(lines) if line.startswith("    # open_ended:"))
    end = next(k for k in range(at, len(lines)) if not lines[k].startswith("    #"))
    lines[at:end] = [re.sub(r"^    # ", "    ", line) for line in lines[at:end]]
    (tmp_path / "params.yaml").write_text("\n".join(lines))
    (tmp_path / "evalsets").mkdir()
    for spec in yaml.safe_load("\n".join(lines))["evaluate"]["sets"].values():
        (tmp_path / spec["path"]).symlink_to(ROOT / spec["path"])
    params = load_params(path=tmp_path / "params.yaml")
    assert params["evaluate"]["sets"]["open_ended"]["answer_type"] == "judged"
    items = evalsets.load_items(evalsets.named(params, "open_ended", tmp_path), tmp_path)
    assert len(items) == 42 and all(i["rubric"] and i["expected_answer"] is None for i in items)
