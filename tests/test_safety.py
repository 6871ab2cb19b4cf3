"""Safety: no secrets in the package, no reading outside the repository or under ~/, weights only from safetensors.

Runs the real stage CLIs on copies of the base project of tests/test_bad_inputs.py
(every stage's outputs present, nothing trained).
"""

from __future__ import annotations

import io
import json
import pickle
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.test_bad_inputs import (
    MODEL,
    PER_SET,
    RUN_DIR,
    assert_one_line_error,
    run_stage,
    set_param,
    snapshot,
    stage_env,
)

MARKER = "SECRET-MARKER-7f3a"  # inside every bait file: must never reach the zip


@pytest.fixture
def repo(shared_base, tmp_path) -> Path:
    dest = tmp_path / "repo"
    shutil.copytree(shared_base, dest, symlinks=True)
    return dest


@pytest.fixture
def home(tmp_path) -> Path:
    """A fake $HOME full of the credentials a user really has there."""
    home = tmp_path / "home"
    for rel in (
        ".netrc",
        ".env",
        ".kaggle/kaggle.json",
        ".cache/huggingface/token",
        ".ssh/id_rsa",
        ".config/gcloud/application_default_credentials.json",
        "gemma/tokenizer.json",
        "gemma/config.json",
    ):
        path = home / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"{MARKER} {rel}\n")
    return home


def the_zip(repo: Path) -> dict[str, bytes]:
    (path,) = (repo / "submission").glob("tunix_rt_v1_*.zip")
    with zipfile.ZipFile(io.BytesIO(path.read_bytes())) as zf:
        return {info.filename: zf.read(info) for info in zf.infolist()}


# ---------------------------------------------------------------- secrets


SECRETS = [
    f"{RUN_DIR}/.env",
    f"{RUN_DIR}/.env.production",
    f"{RUN_DIR}/id_rsa",
    f"{RUN_DIR}/id_ed25519",
    f"{RUN_DIR}/deploy.pem",
    f"{RUN_DIR}/server.key",
    f"{RUN_DIR}/credentials.json",
    f"{RUN_DIR}/hf_token.txt",
    f"{RUN_DIR}/kaggle.json",
    f"{RUN_DIR}/.netrc",
    "stages/secrets.py",
    "training/api_key.py",
    "schemas/aws_credentials.json",
    "notebooks/access_token.ipynb",
    ".env",
    ".git-credentials",
]


def test_package_never_includes_secrets(repo):
    for rel in SECRETS:
        (repo / rel).write_text(f"{MARKER} {rel}\n")
    (repo / "stages/helpers.py").symlink_to("../.env")  # an innocent name, a secret behind it
    (repo / f"{RUN_DIR}/tokenizer_config.json").write_text('{"ok": true}\n')  # tokenizer files are not token files
    proc = run_stage(repo, "package")
    assert proc.returncode == 0, proc.stderr
    entries = the_zip(repo)
    assert not set(SECRETS) & set(entries) and "stages/helpers.py" not in entries
    assert not [name for name, data in entries.items() if MARKER.encode() in data]
    assert f"{RUN_DIR}/tokenizer_config.json" in entries and f"{RUN_DIR}/run_manifest.json" in entries
    skipped = [line for line in proc.stderr.splitlines() if "looks like a secret" in line]
    for rel in SECRETS:
        if rel.startswith((RUN_DIR, "stages/", "training/", "schemas/", "notebooks/")):
            assert any(rel in line for line in skipped), f"{rel} not reported as skipped"


@pytest.mark.parametrize("link", ["notebooks/stolen.ipynb", f"{RUN_DIR}/notes.txt", "stages/util.py"])
def test_package_refuses_a_symlink_out_of_the_repository(repo, home, link):
    targets = {
        "notebooks/stolen.ipynb": home / ".kaggle/kaggle.json",
        f"{RUN_DIR}/notes.txt": home / ".netrc",
        "stages/util.py": Path("/etc/hostname"),
    }
    (repo / link).symlink_to(targets[link])
    before = snapshot(repo)
    proc = subprocess.run(
        [sys.executable, "-m", "stages.package"],
        cwd=repo,
        env=stage_env(HOME=str(home)),
        capture_output=True,
        text=True,
    )
    assert_one_line_error(proc, str(repo.resolve() / link), None, None, "resolves outside the repository")
    assert snapshot(repo) == before  # the previous zip is still there, untouched


def test_package_refuses_a_linked_folder_out_of_the_repository(repo, tmp_path):
    outside = tmp_path / "outside_notebooks"
    shutil.copytree(repo / "notebooks", outside)
    shutil.rmtree(repo / "notebooks")
    (repo / "notebooks").symlink_to(outside)
    proc = run_stage(repo, "package")
    assert proc.returncode == 1 and "resolves outside the repository" in proc.stderr
    assert len(proc.stderr.splitlines()) == 1


# ---------------------------------------------------------------- never ~/

AUDITED = r"""
import os, runpy, sys
home = os.path.abspath(os.environ["HOME"])
report = os.open(os.environ["AUDIT_REPORT"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
EVENTS = {"open", "os.listdir", "os.scandir", "os.walk", "glob.glob", "os.chdir", "shutil.copyfile",
          "shutil.copytree", "os.rename", "os.remove", "os.rmdir", "os.mkdir"}

def hook(event, args):
    if event not in EVENTS or not args or isinstance(args[0], int) or args[0] is None:
        return
    try:
        path = os.fsdecode(args[0])
    except TypeError:
        return
    if path.startswith("~") or os.path.abspath(path) == home or os.path.abspath(path).startswith(home + os.sep):
        os.write(report, f"{event} {path}\n".encode())

sys.addaudithook(hook)
module = sys.argv[1]
sys.argv = [module, *sys.argv[2:]]
runpy.run_module(module, run_name="__main__", alter_sys=True)
"""


def audited(repo: Path, stage: str, home: Path, report: Path, module: str | None = None) -> subprocess.CompletedProcess:
    """The stage under an audit hook that records every file operation under $HOME or on a `~` path."""
    e = stage_env(HOME=str(home), AUDIT_REPORT=str(report))
    args = ["tunix"] if stage in PER_SET else []  # a per-eval-set stage runs for the default set
    return subprocess.run(
        [sys.executable, "-c", AUDITED, module or f"stages.{stage}", *args],
        cwd=repo,
        env=e,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_audit_sees_a_read_under_home(repo, home, tmp_path):
    """The control: a module that does read ~/.netrc is caught (so a clean report below means something)."""
    (repo / "probe_home.py").write_text(
        "import os\nopen(os.path.expanduser('~/.netrc')).read()\nos.listdir('~')\nprint('read')\n"
    )
    report = tmp_path / "audit.txt"
    proc = audited(repo, "", home, report, module="probe_home")
    assert proc.returncode != 0 and "read" not in proc.stdout  # os.listdir('~') has no such folder here
    assert report.read_text().splitlines() == [f"open {home}/.netrc", "os.listdir ~"]


def test_stages_never_touch_the_home_directory(repo, home, tmp_path):
    report = tmp_path / "audit.txt"
    for stage in ("seed", "tokenizer", "evaluate", "report", "evidence", "package"):
        proc = audited(repo, stage, home, report)
        assert proc.returncode == 0, f"{stage}: {proc.stderr[-2000:]}"
    assert not report.exists() or report.read_text() == "", report.read_text()


def test_a_file_source_is_read_offline_without_touching_home(repo, home, tmp_path):
    """Hugging Face datasets reads a local Parquet file: no hub, no ~/.cache/huggingface, no token files."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    (repo / "trainsets").mkdir(exist_ok=True)
    rows = [{"q": f"What is {k} + 1?", "a": str(k + 1), "r": f"{k} + 1 = {k + 1}"} for k in range(5)]
    pq.write_table(pa.Table.from_pylist(rows), repo / "trainsets/mine.parquet")
    set_param(
        "seed.sources",
        [
            {"type": "synthetic"},
            {
                "type": "file",
                "path": "trainsets/mine.parquet",
                "fields": {"prompt": "q", "answer": "a", "reasoning": "r"},
            },
        ],
    )(repo)
    report = tmp_path / "audit.txt"
    proc = audited(repo, "seed", home, report)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert not report.exists() or report.read_text() == "", report.read_text()
    assert json.loads((repo / "data/train_manifest.json").read_text())["counts"]["by_source"]["mine"] == 5
    assert not any(MARKER.encode() in data for data in the_zip(repo).values())


def test_a_home_relative_checkpoint_is_not_expanded(repo, home, tmp_path):
    """`model.checkpoint: ~/gemma` is not read from $HOME (which holds a bait tokenizer there)."""
    set_param("model.preset", "gemma3-1b")(repo)
    set_param("model.checkpoint", "~/gemma")(repo)
    before = snapshot(repo)
    report = tmp_path / "audit.txt"
    proc = audited(repo, "base", home, report)
    assert_one_line_error(proc, "params.yaml", None, "model.checkpoint", "~/gemma is outside models/")
    assert not report.exists() or report.read_text() == "", report.read_text()
    assert snapshot(repo) == before


# ---------------------------------------------------------------- weights only from safetensors


class _Exploit:
    """Unpickling this creates the marker file: proof that a pickle was loaded."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def plant_pickle(directory: Path, marker: Path) -> None:
    (directory / "pytorch_model.bin").write_bytes(pickle.dumps({"model.embed_tokens.weight": _Exploit(marker)}))


@pytest.mark.parametrize("stage, model_dir", [("predict", "data/policy"), ("grpo", "data/preferred")])
def test_a_pytorch_bin_model_is_refused(repo, tmp_path, stage, model_dir):
    marker = tmp_path / "unpickled"
    (repo / model_dir / "model.safetensors").unlink()
    plant_pickle(repo / model_dir, marker)
    if stage == "grpo":
        set_param("grpo.steps", 2)(repo)  # RL on: the SFT model is loaded (steps 0 only copies its files)
    before = snapshot(repo)
    proc = run_stage(repo, stage)
    message = assert_one_line_error(proc, model_dir, None, None, "model.safetensors")
    assert "pytorch_model.bin" not in message or "safetensors" in message
    assert not marker.exists(), "a pickle was unpickled"
    assert snapshot(repo) == before


def test_the_base_stage_refuses_a_pytorch_bin_checkpoint(repo, tmp_path):
    from training.config import gemma3_1b

    marker = tmp_path / "unpickled"
    ckpt = repo / "models/gemma-3-1b"
    ckpt.mkdir(parents=True)
    (ckpt / "config.json").write_text(json.dumps(gemma3_1b().to_hf()))  # the preset's own shape
    shutil.copyfile(repo / MODEL / "tokenizer.json", ckpt / "tokenizer.json")
    plant_pickle(ckpt, marker)
    set_param("model.preset", "gemma3-1b")(repo)
    set_param("model.checkpoint", "models/gemma-3-1b")(repo)
    before = snapshot(repo)
    proc = run_stage(repo, "base")
    assert_one_line_error(proc, "models/gemma-3-1b", None, None, "model.safetensors")
    assert not marker.exists(), "a pickle was unpickled"
    assert snapshot(repo) == before


def test_an_index_pointing_at_a_pickle_is_refused(shared_base, tmp_path):
    """A sharded index whose shard is a pickle: refused as unreadable safetensors, never unpickled."""
    from safetensors import safe_open

    from training.hf_io import CheckpointError, load_pretrained

    base_model = shared_base / MODEL
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    shutil.copyfile(base_model / "config.json", ckpt / "config.json")
    with safe_open(str(base_model / "model.safetensors"), "np") as f:
        names = list(f.keys())
    marker = tmp_path / "unpickled"
    plant_pickle(ckpt, marker)
    index = {"metadata": {}, "weight_map": dict.fromkeys(names, "pytorch_model.bin")}
    (ckpt / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match=r"pytorch_model\.bin: unreadable safetensors"):
        load_pretrained(ckpt)
    assert not marker.exists(), "a pickle was unpickled"
