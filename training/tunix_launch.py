"""The main environment's side of the Tunix engine: write the exact batches, start training/tunix_engine.py in
the Tunix environment, read back its per-step rows. Imports nothing of Tunix (the main environment does not
depend on it); only numpy and the subprocess.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np

from training.peft_names import adapter_name

ROOT = Path(__file__).resolve().parent.parent
BATCH_KEYS = ("inputs", "targets", "weights", "positions", "segments")  # as training/tunix_engine.py reads them
# our preset -> Tunix's Gemma 3 ModelConfig constructor. gemma2-2b has one too (tunix.models.gemma), but its
# weights are not mapped back to Hugging Face names here (tunix_engine.hf_weights), so it is not offered.
TUNIX_PRESETS = {"gemma3-270m": "gemma3_270m", "gemma3-1b": "gemma3_1b_pt"}


class TunixUnavailable(RuntimeError):
    """No Tunix environment to run the engine in; the message says how to make one."""


def tunix_python() -> Path:
    """The Tunix environment's interpreter: $TUNIX_PYTHON, else .venv-tunix/bin/python of this checkout."""
    return Path(os.environ.get("TUNIX_PYTHON", ROOT / ".venv-tunix/bin/python"))


def check_available() -> Path:
    python = tunix_python()
    if not python.exists():
        raise TunixUnavailable(f"no Tunix environment at {python}: run `make tunix-env` (or set TUNIX_PYTHON)")
    return python


def write_batches(batch: Callable[[int], Mapping[str, np.ndarray]], steps: int, path: Path) -> None:
    """Steps 0..steps-1 of `batch` (e.g. `BatchStream.batch`), stacked [steps, rows, seq_len] per key."""
    rows = [batch(i) for i in range(steps)]
    np.savez(path, **{k: np.stack([r[k] for r in rows]) for k in BATCH_KEYS})


def read_rows(log: Path) -> list[dict]:
    """The runner's per-step rows, the last written for a step winning (a resumed run may repeat one)."""
    if not log.exists():
        return []
    by_step = {}
    for line in log.read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            by_step[row["step"]] = row
    return [by_step[s] for s in sorted(by_step)]


def start_engine(request: dict, workdir: Path, runner: str = "training.tunix_engine") -> tuple[subprocess.Popen, Path]:
    """Start `runner` (training/tunix_engine.py, or training/tunix_dpo.py) on `request` in the Tunix environment
    (its "log" defaults to workdir/tunix_log.jsonl); the process and the log. `finish_engine` waits for it."""
    python = check_available()
    workdir = workdir.resolve()  # the runner starts in the repository root, not in the stage's directory
    workdir.mkdir(parents=True, exist_ok=True)
    request = {"log": str(workdir / "tunix_log.jsonl"), **request}
    (workdir / "request.json").write_text(json.dumps(request))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "XLA_FLAGS")} | {"PYTHONPATH": str(ROOT)}
    with (workdir / "tunix_stderr.txt").open("w") as stderr:  # a file, not a pipe: a chatty runner never blocks
        proc = subprocess.Popen(
            [str(python), "-m", runner, str(workdir / "request.json")],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            env=env,
            cwd=ROOT,
        )
    return proc, Path(request["log"])


def finish_engine(proc: subprocess.Popen, log: Path, timeout: float | None = None) -> list[dict]:
    """Wait for the runner; its rows. A failure raises RuntimeError with the tail of its stderr."""
    try:
        code = proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise
    if code != 0:
        tail = (log.parent / "tunix_stderr.txt").read_text()[-3000:]
        raise RuntimeError(f"the Tunix engine failed (exit {code}):\n{tail}")
    return read_rows(log)


def load_export(export: Path, base: Path, **dtypes):
    """The runner's exported weights (request "export") as our Gemma: the base's config.json beside them and
    `hf_io.load_pretrained`, which checks every tensor's name and shape."""
    from training.hf_io import load_pretrained  # JAX: only the main environment's side reads it

    shutil.copyfile(base / "config.json", export / "config.json")
    return load_pretrained(export, **dtypes)


def load_adapters(model, export: Path) -> None:
    """The runner's trained adapters (request "lora": export/adapter_model.safetensors, PEFT's names and
    shapes) into `model`'s adapters, which must be the same set (a CheckpointError says what differs)."""
    import jax.numpy as jnp  # JAX: only the main environment's side reads it
    from safetensors.numpy import load_file

    from training import lora
    from training.hf_io import CheckpointError

    path = export / "adapter_model.safetensors"
    tensors = load_file(str(path))
    wanted = {name: value.shape for name, value in lora.peft_tensors(model).items()}
    got = {name: value.shape for name, value in tensors.items()}
    if got != wanted:
        diff = sorted(set(got) ^ set(wanted)) or [n for n in wanted if got[n] != wanted[n]]
        raise CheckpointError(f"{path}: the adapters are not the model's ({diff[0]} differs)")
    for (layer, target), adapter in lora.adapters(model).items():
        adapter.a.value = jnp.asarray(tensors[adapter_name(layer, target, "A")].T)
        adapter.b.value = jnp.asarray(tensors[adapter_name(layer, target, "B")].T)


def run_engine(request: dict, workdir: Path, timeout: float | None = None) -> list[dict]:
    """`start_engine` and `finish_engine`: the runner's rows once it has finished."""
    return finish_engine(*start_engine(request, workdir), timeout=timeout)
