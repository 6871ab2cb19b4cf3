"""Stage `package`: the submission zip, `submission/tunix_rt_<run_version>_<sha12>.zip`.

The zip is built in memory with sorted entries, fixed timestamps, fixed
permissions and a fixed compression level, so the same inputs give the same
bytes; sha12 is the start of the sha256 of those bytes. It refuses to package
missing or invalid evidence, never includes files that look like secrets, and
never reads a path that resolves outside the repository.
"""

from __future__ import annotations

import hashlib
import io
import sys
import zipfile
from pathlib import Path

import yaml

from stages import paths
from stages.common import StageError, atomic_path, load_params, read_json, run_stage
from stages.evidence import LOG_FILE, MANIFEST_FILE, SUMMARY_FILE, is_telemetry, read_yaml

PACKAGE_STAGE = "package"
REQUIRED = ("params.yaml", "dvc.yaml", paths.TRAIN_MANIFEST.as_posix(), paths.DECONTAMINATION.as_posix())
GLOBS = (
    "evalsets/*.jsonl",
    "evalsets/LICENSE-*",
    "evalsets/README.md",  # the sets travel with their licences
    "notebooks/*.ipynb",
    "stages/*.py",
    "reasoning/**/*.py",
    "training/*.py",
    "schemas/*.json",
)
README_NAME = "SUBMISSION_README.md"
ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # the earliest date a zip can hold
ZIP_LEVEL = 9

_SECRET_NAMES = {
    ".env",
    ".netrc",
    ".pypirc",
    ".npmrc",
    ".git-credentials",
    "kaggle.json",
    "id_rsa",
    "id_dsa",
    "id_ecdsa",
    "id_ed25519",
}
_SECRET_SUFFIXES = (".pem", ".key", ".p12", ".pfx", ".jks", ".keystore", ".crt")
_SECRET_WORDS = ("credential", "secret", "password", "passwd", "apikey", "api_key", "private_key")


def is_secret(name: str) -> bool:
    """True for file names that usually hold credentials (tokenizer files are fine, token files are not)."""
    name = name.lower()
    return (
        name in _SECRET_NAMES
        or name.startswith((".env.", "id_rsa", "id_dsa", "id_ecdsa", "id_ed25519"))
        or name.endswith(_SECRET_SUFFIXES)
        or any(word in name for word in _SECRET_WORDS)
        or "token" in name.replace("tokenizer", "")
    )


def inside(root: Path, rel: str) -> Path:
    """`root/rel` resolved, refusing anything (a symlink, a `..`) that leads outside `root` (resolved)."""
    path = root / rel
    resolved = path.resolve()
    if not resolved.is_relative_to(root):
        raise StageError(f"{path}: resolves outside the repository ({resolved}); refusing to package it")
    return resolved


def read_inside(root: Path, rel: str) -> bytes:
    """Bytes of `root/rel` (see `inside`)."""
    path, resolved = root / rel, inside(root, rel)
    try:
        return resolved.read_bytes()
    except FileNotFoundError:
        raise StageError(f"{path}: file not found") from None
    except OSError as err:
        raise StageError(f"{path}: cannot read: {err.strerror or err}") from None


def check_evidence(root: Path, run_version: str) -> tuple[dict, dict]:
    """(run_manifest, eval_summary) of the run, refused unless both are valid and the log exists."""
    run_dir = root / paths.SUBMISSION_RUNS / run_version
    manifest = read_json(run_dir / MANIFEST_FILE, "run_manifest")
    summary = read_json(run_dir / SUMMARY_FILE, "eval_summary")
    for path, doc in ((run_dir / MANIFEST_FILE, manifest), (run_dir / SUMMARY_FILE, summary)):
        if doc["run_version"] != run_version:
            raise StageError(f"{path}: run_version: {doc['run_version']!r}, params.yaml says {run_version!r}")
    log = run_dir / LOG_FILE
    if not log.is_file() or log.stat().st_size == 0:
        raise StageError(f"{log}: missing or empty (run the evidence stage)")
    return manifest, summary


def lock_without_package(root: Path) -> bytes:
    """dvc.lock minus the package stage's own entry (so the zip does not depend on the previous
    package run) and minus training telemetry outs."""
    lock = read_yaml(root / "dvc.lock")
    if not isinstance(lock, dict) or not isinstance(lock.get("stages"), dict):
        raise StageError(f"{root / 'dvc.lock'}: stages: missing")
    lock["stages"].pop(PACKAGE_STAGE, None)
    for entry in lock["stages"].values():  # wall-clock telemetry would make the zip differ run to run
        if isinstance(entry, dict) and isinstance(entry.get("outs"), list):
            entry["outs"] = [o for o in entry["outs"] if not (isinstance(o, dict) and is_telemetry(o.get("path")))]
    return yaml.safe_dump(lock, sort_keys=False, allow_unicode=True, default_flow_style=False).encode("utf-8")


def collect_files(root: Path, run_version: str) -> dict[str, bytes]:
    """zip entry name -> bytes for everything the submission holds, except the generated README."""
    root = root.resolve()
    names = list(REQUIRED)  # no README.md or docs/: a docs edit must not change the zip
    for pattern in (f"{paths.SUBMISSION_RUNS}/{run_version}/*", *GLOBS):
        names += [p.relative_to(root).as_posix() for p in root.glob(pattern) if p.is_file() or p.is_symlink()]
    files: dict[str, bytes] = {}
    for name in sorted(set(names)):
        target = inside(root, name)  # refuse an outside link before anything else
        if is_secret(Path(name).name) or is_secret(target.name):
            print(f"package: skipped {name} (looks like a secret)", file=sys.stderr)
            continue
        files[name] = read_inside(root, name)
    files["dvc.lock"] = lock_without_package(root)
    return files


def submission_readme(manifest: dict, summary: dict, names: list[str]) -> str:
    """What is inside, how it scored and how to reproduce it."""
    m, metrics = manifest["model"], summary["metrics"]
    within = 100 * manifest["params"]["evaluate"]["partial_within"]
    fmt = lambda x: "-" if x is None else f"{x:.4f}"  # noqa: E731
    lines = [
        f"# tunix-rt submission {manifest['run_version']}",
        "",
        "A small Gemma-family model fine-tuned to answer as",
        "`<reasoning>…</reasoning><answer>…</answer>`, with the pipeline that built it",
        "and the evidence of what it was trained on and how it scored.",
        "",
        "## Scores",
        "",
        f"- primary_score (answer accuracy on the primary eval set, {summary['primary_set']}): "
        f"**{fmt(summary['primary_score'])}** over {metrics['n_items']} eval items",
        f"- format accuracy: {fmt(metrics['format_accuracy'])}",
        f"- partial accuracy (within {within:g}%): {fmt(metrics['partial_accuracy'])}",
        f"- truncated: {fmt(metrics['truncated_rate'])}",
        "",
        "| section | n | accuracy | format | partial |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for name, s in sorted(summary["breakdowns"]["section"].items()):
        lines.append(
            f"| {name} | {s['n']} | {fmt(s['accuracy'])} | {fmt(s['format_accuracy'])} | {fmt(s['partial_accuracy'])} |"
        )
    lines += [
        "",
        "Every eval set (`evaluate.sets`):",
        "",
        "| eval set | file | items | primary_score | format | sha256 |",
        "| --- | --- | ---: | ---: | ---: | --- |",
    ]
    for name, e in manifest["eval_sets"].items():
        s = summary["sets"][name]
        lines.append(
            f"| {name}{' (primary)' if e['primary'] else ''} | `{e['path']}` | {e['n_items']} "
            f"| {fmt(s['primary_score'])} | {fmt(s['format_accuracy'])} | `{e['sha256']}` |"
        )
    lines += [
        "",
        "## Run",
        "",
        f"- model: preset `{m['preset']}`, {m['n_params']:,} parameters, weights `{m['id']}`",
        f"- checkpoint: {m['checkpoint'] or 'none (trained from scratch)'}",
        f"- dataset: `{manifest['dataset']['path']}`, {manifest['dataset']['n_records']} records, "
        f"sha256 `{manifest['dataset']['sha256']}`",
        f"- git commit: `{manifest['git']['commit']}`",
        "",
        "## Reproduce",
        "",
        "```",
        f"git checkout {manifest['git']['commit']}",
        f"{manifest['command']}",
        "```",
        "",
        "`params.yaml` holds every knob; `dvc.lock` the hashes of every input and output;",
        f"`{paths.SUBMISSION_RUNS}/{manifest['run_version']}/` the run manifest, scores and training log.",
        "",
        "## Contents",
        "",
    ]
    lines += [f"- `{name}`" for name in sorted(names)]
    return "\n".join(lines) + "\n"


def build_zip(files: dict[str, bytes]) -> bytes:
    """Deterministic zip bytes: sorted entries, fixed date, permissions and compression."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=ZIP_LEVEL) as zf:
        for name in sorted(files):
            info = zipfile.ZipInfo(name, date_time=ZIP_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.create_system = 3  # unix, whatever the host
            info.external_attr = 0o100644 << 16  # regular file, rw-r--r--
            zf.writestr(info, files[name], compresslevel=ZIP_LEVEL)
    return buf.getvalue()


def zip_name(run_version: str, data: bytes) -> str:
    return f"tunix_rt_{run_version}_{hashlib.sha256(data).hexdigest()[:12]}.zip"


def write_package(out_dir: Path, name: str, data: bytes) -> Path:
    """Replace `out_dir` whole with a folder holding only the zip."""
    try:
        with atomic_path(out_dir) as tmp:
            tmp.mkdir()
            (tmp / name).write_bytes(data)
    except OSError as err:
        raise StageError(f"{out_dir}: cannot write the submission: {err.strerror or err}") from None
    return out_dir / name


def build_package(root: Path, run_version: str) -> tuple[str, bytes]:
    """(zip file name, zip bytes) for the run; refuses invalid evidence."""
    manifest, summary = check_evidence(root, run_version)
    files = collect_files(root, run_version)
    files[README_NAME] = submission_readme(manifest, summary, [*files, README_NAME]).encode("utf-8")
    data = build_zip(files)
    return zip_name(run_version, data), data


def run(params: dict, root: Path = Path("."), out_dir: Path | None = None) -> Path:
    """The whole stage under `root`; returns the zip's path."""
    name, data = build_package(root, params["base"]["run_version"])
    return write_package(out_dir if out_dir is not None else root / paths.SUBMISSION, name, data)


def main() -> None:
    path = run(load_params())
    print(f"submission written to {path}")


if __name__ == "__main__":
    run_stage(main)
