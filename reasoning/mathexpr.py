"""Math answers (`\\frac{1}{2}`, `0.5`, `x^2+1`, `[1, 2)`) compared by Hugging Face math-verify.

math-verify bounds its own time with `signal.alarm`, which works only in the
main thread, and sympy can spend unbounded time on some model text
(`9^9^9^9`). So it runs with its timeouts disabled in one worker process
(`python -m reasoning.mathexpr`, started on first use and kept), and every
comparison waits at most `TIMEOUT_S` for the worker's reply: past that the
worker is killed (a fresh one serves the next call) and the answer counts as
wrong. This works from any thread; the lock keeps one question in flight.
The gold answer is parsed first and passed first, as math-verify's authors advise.
"""

from __future__ import annotations

import atexit
import json
import os
import select
import subprocess
import sys
import threading
from pathlib import Path

TIMEOUT_S = 5.0  # math-verify's own default per comparison
START_TIMEOUT_S = 120.0  # importing sympy on a loaded machine
ROOT = Path(__file__).resolve().parent.parent
READY = "ready"
WORKER = [sys.executable, "-m", "reasoning.mathexpr"]  # the command that serves comparisons (_serve)

_lock = threading.Lock()
_worker: subprocess.Popen | None = None


class MathVerifyUnavailable(RuntimeError):
    """The worker process could not be started (math-verify missing or broken): not the answer's fault."""


def _start() -> subprocess.Popen:
    global _worker
    if _worker is not None and _worker.poll() is None:
        return _worker
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    worker = subprocess.Popen(
        WORKER, cwd=ROOT, env=env, text=True, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    )
    line = _reply(worker, START_TIMEOUT_S)
    if line != READY:
        _kill(worker)
        raise MathVerifyUnavailable(
            "reasoning.mathexpr: the math-verify worker did not start "
            "(is math-verify installed? pip install -r requirements.lock)"
        )
    _worker = worker
    return worker


def _reply(worker: subprocess.Popen, timeout: float) -> str | None:
    """The worker's next line, or None when it says nothing within `timeout` seconds or has died."""
    if not select.select([worker.stdout], [], [], timeout)[0]:
        return None
    line = worker.stdout.readline()
    return line.strip() if line else None


def _kill(worker: subprocess.Popen | None) -> None:
    if worker is not None and worker.poll() is None:
        worker.kill()
        worker.wait()


@atexit.register
def stop() -> None:
    """Stop the worker (it is started again on the next comparison)."""
    global _worker
    _kill(_worker)
    _worker = None


def compare(expected: str, predicted: str, timeout: float = TIMEOUT_S) -> tuple[bool, bool]:
    """(the expected answer reads as math, `predicted` is equivalent to it); (x, False) on timeout."""
    with _lock:
        worker = _start()
        try:
            worker.stdin.write(json.dumps([expected, predicted]) + "\n")
            worker.stdin.flush()
        except BrokenPipeError:
            stop()
            return True, False
        line = _reply(worker, timeout)
        try:
            reply = json.loads(line) if line is not None else None
        except json.JSONDecodeError:
            reply = None
        if not isinstance(reply, dict):  # too slow, died on this text, or garbled: wrong, and a fresh worker
            stop()
            return True, False
        return bool(reply.get("gold")), bool(reply.get("equal"))


def equivalent(predicted: str | None, expected: str) -> bool:
    """`predicted` is the same mathematical object as `expected`; ValueError when `expected` is not math."""
    gold_ok, equal = compare(expected, predicted or "")  # an empty prediction still has the gold checked
    if not gold_ok:
        raise ValueError(f"expected answer {expected!r} is not a math expression math-verify can read")
    return equal


# ---------------------------------------------------------------- the worker


def _parse(parse, text: str) -> list:
    """math-verify's reading of `text`. Text without math delimiters is read as one inline-math span
    first: math-verify's plain-text reading takes the first number it meets (`1+x^2` -> 1,
    `\\sqrt 2` -> 2), so it is only the fallback."""
    delimited = any(mark in text for mark in ("$", "\\(", "\\[", "\\boxed"))
    for candidate in (text,) if delimited else (f"${text}$", text):
        try:
            found = parse(candidate, parsing_timeout=None)
        except Exception:  # math-verify and sympy raise anything on odd text
            found = []
        if found:
            return found
    return []


def _serve() -> None:
    import logging

    from math_verify import parse, verify

    logging.getLogger("math_verify").setLevel(logging.ERROR)  # its "timeout disabled" warning: we bound time here
    replies, sys.stdout = sys.stdout, sys.stderr  # whatever a library prints cannot garble a reply
    print(READY, file=replies, flush=True)
    for line in sys.stdin:
        expected, predicted = json.loads(line)
        gold = _parse(parse, expected)
        equal = False
        if gold:
            pred = _parse(parse, predicted)
            try:
                equal = bool(pred) and bool(verify(gold, pred, timeout_seconds=None))
            except Exception:
                equal = False
        print(json.dumps({"gold": bool(gold), "equal": equal}), file=replies, flush=True)


if __name__ == "__main__":
    _serve()
