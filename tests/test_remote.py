"""The shared cache round trip: run, `dvc push` to a remote, and a fresh clone gets everything back.

Repo A (small params) runs `dvc repro`, pushes its cache (and run-cache) to a
local-path remote, and commits dvc.lock with the git-tracked outputs (the
`cache: false` ones: reports/, dvclive/, submission_runs/). A fresh `git clone`
of A then `dvc pull`s the rest: `dvc status` is clean, `dvc repro` runs
nothing, and every declared output is byte for byte A's. This is what CI does
with a remote instead of retraining.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.pipeline_utils import declared_outs, make_repo, run

pytestmark = pytest.mark.slow


def files_under(path: Path) -> dict[str, bytes]:
    if path.is_file():
        return {path.name: path.read_bytes()}
    return {p.relative_to(path).as_posix(): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def git_files(repo: Path) -> list[str]:
    return run(["git", "ls-files"], repo).stdout.splitlines()


def test_push_clone_pull_is_up_to_date(tmp_path):
    a = make_repo(tmp_path / "a")
    run(["dvc", "repro"], a)
    remote = tmp_path / "remote"
    run(["dvc", "remote", "add", "-d", "local", str(remote)], a)
    run(["dvc", "push", "--run-cache"], a)
    run(["git", "add", "-A"], a)
    run(["git", "commit", "-qm", "pipeline run"], a)
    assert run(["git", "status", "--porcelain"], a).stdout == "", "repro left files neither committed nor ignored"

    # Cached outs went to the remote (and the run-cache with them); cache: false outs went to git.
    assert any((remote / "files").rglob("*")), "dvc push sent nothing"
    assert any((remote / "runs").rglob("*")), "dvc push --run-cache sent no run-cache entries"
    outs = declared_outs(a)
    tracked = git_files(a)
    assert "dvc.lock" in tracked
    for out, cached in outs.items():
        in_git = [f for f in tracked if f == out or f.startswith(out + "/")]
        if cached:
            assert not in_git, f"{out} is a cached out (pushed to the remote) but git tracks {in_git}"
        else:  # only git carries a `cache: false` out to a clone, and git carries no empty directory
            assert files_under(a / out), f"{out} is a `cache: false` out with no files: a clone cannot have it"
            assert in_git, f"{out} is a `cache: false` out: only git carries it to a clone, and git ignores it"

    # A fresh clone: what git carries is there already, the rest comes from the remote.
    b = tmp_path / "b"
    run(["git", "clone", "-q", str(a), str(b)], tmp_path)
    for out, cached in outs.items():
        if not cached:
            assert (b / out).exists(), f"{out} (cache: false) did not come with the clone"
    assert not (b / "data/model").exists()
    assert run(["dvc", "remote", "list"], b).stdout.split()[:1] == ["local"]
    run(["dvc", "pull"], b)

    status = run(["dvc", "status"], b)
    assert "up to date" in status.stdout, f"dvc status in the fresh clone after dvc pull:\n{status.stdout}"
    assert run(["dvc", "status", "-q"], b, check=False).returncode == 0
    repro = run(["dvc", "repro"], b).stdout
    assert "Running stage" not in repro, f"dvc repro in the pulled clone re-ran stages:\n{repro}"
    assert run(["git", "status", "--porcelain"], b).stdout == "", "dvc repro in the clone changed tracked files"

    for out in outs:
        assert files_under(b / out) == files_under(a / out), f"{out} differs between the clone and the original"
