"""The Kaggle notebook: committed without outputs, and runnable top to bottom.

The run executes every cell with nbclient in a kernel on this interpreter (the
venv), against a temporary copy of the project on small params, with the
`parameters` cell overridden the way papermill does it (an injected cell right
after it), so a broken cell fails the suite.
"""

from __future__ import annotations

import json
import sys
import zipfile
from pathlib import Path

import nbformat
import pytest
import yaml

from tests.pipeline_utils import ROOT, env, make_repo, run

NOTEBOOK = "notebooks/kaggle_submission.ipynb"
sys.path.insert(0, str(ROOT / "scripts"))
import strip_notebook  # noqa: E402


def parameters_cell(nb: nbformat.NotebookNode) -> int:
    tagged = [i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, f"{NOTEBOOK}: {len(tagged)} cells tagged `parameters`, expected 1"
    return tagged[0]


def test_committed_notebook_is_stripped():
    nb = nbformat.read(ROOT / NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    assert strip_notebook.problems(nb) == [], f"{NOTEBOOK} has outputs: run scripts/strip_notebook.py {NOTEBOOK}"
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None


def test_parameters_cell_comes_first_and_names_every_knob():
    nb = nbformat.read(ROOT / NOTEBOOK, as_version=4)
    i = parameters_cell(nb)
    assert all(c.cell_type == "markdown" for c in nb.cells[:i]), "the parameters cell is the first code cell"
    names = {line.split("=")[0].strip() for line in nb.cells[i].source.splitlines() if "=" in line}
    assert {"REPO_DIR", "PRESET", "CHECKPOINT", "RUN_VERSION", "OVERRIDES"} <= names
    assert nb.metadata.kernelspec.name == "python3"


def test_strip_notebook_script(tmp_path):
    nb = nbformat.read(ROOT / NOTEBOOK, as_version=4)
    code = next(c for c in nb.cells if c.cell_type == "code")
    code.outputs = [nbformat.v4.new_output("stream", name="stdout", text="hi\n")]
    code.execution_count = 3
    path = tmp_path / "nb.ipynb"
    nbformat.write(nb, path)
    assert strip_notebook.main(["--check", str(path)]) == 1
    assert strip_notebook.main([str(path)]) == 0
    assert strip_notebook.main(["--check", str(path)]) == 0
    assert strip_notebook.problems(nbformat.read(path, as_version=4)) == []


def kernel_manager(spec_dir: Path):
    """A kernel manager whose `python3` kernel is this interpreter (the venv), whatever else is installed."""
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager

    kernel = spec_dir / "python3"
    kernel.mkdir(parents=True)
    (kernel / "kernel.json").write_text(
        json.dumps(
            {
                "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                "display_name": "tunix-rt venv",
                "language": "python",
            }
        )
    )
    ksm = KernelSpecManager(kernel_dirs=[str(spec_dir)], ensure_native_kernel=False)
    return KernelManager(kernel_name="python3", kernel_spec_manager=ksm)


def outputs_of(nb: nbformat.NotebookNode) -> tuple[str, list[str], int]:
    """(all stream text, all text/html payloads, number of PNG images) of an executed notebook."""
    text, htmls, images = [], [], 0
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.output_type == "stream":
                text.append(out.text)
            elif out.output_type in ("display_data", "execute_result"):
                htmls.append(out.data.get("text/html", ""))
                images += "image/png" in out.data
            elif out.output_type == "error":
                pytest.fail(f"{out.ename}: {out.evalue}")
    return "".join(text), htmls, images


@pytest.mark.slow
def test_notebook_runs_top_to_bottom(tmp_path):
    from nbclient import NotebookClient

    repo = make_repo(tmp_path / "repo")
    nb = nbformat.read(repo / NOTEBOOK, as_version=4)
    injected = nbformat.v4.new_code_cell(
        f"REPO_DIR = {str(repo)!r}\nPRESET = 'tiny'\nCHECKPOINT = None\nRUN_VERSION = 'nb1'\n"
        "OVERRIDES = {'train.steps': 8, 'grpo.steps': 0}\nN_SAMPLES = 4\n",
        metadata={"tags": ["injected-parameters"]},
    )
    nb.cells.insert(parameters_cell(nb) + 1, injected)

    client = NotebookClient(
        nb,
        km=kernel_manager(tmp_path / "kernels"),
        timeout=600,
        allow_errors=False,
        resources={"metadata": {"path": str(repo / "notebooks")}},
    )
    client.execute(env=env())  # the venv first on PATH, one CPU device, as the pipeline tests run
    text, htmls, images = outputs_of(nb)

    # The parameters reached params.yaml, and the pipeline ran on them.
    params = yaml.safe_load((repo / "params.yaml").read_text())
    assert params["base"]["run_version"] == "nb1" and params["train"]["steps"] == 8
    assert params["model"] == {**params["model"], "preset": "tiny", "checkpoint": None}
    assert "Running stage 'train'" in text and "Running stage 'package'" in text
    info = json.loads((repo / "data/model/training_info.json").read_text())
    assert info["steps"] == 8
    assert run(["dvc", "status", "-q"], repo, check=False).returncode == 0, "the notebook left the pipeline stale"

    # What it shows: scorecard tables, the loss curve, samples, where the model and the zip are.
    html = "\n".join(htmls)
    assert "primary_score" in html and "by section" in html and "by category" in html and "by difficulty" in html
    assert images >= 1, "no loss plot"
    assert "RL: grpo.steps is 0" in text  # the default: no reward curve beside the loss
    assert "sample predictions" in html and "core-001" in html
    zips = sorted((repo / "submission").glob("tunix_rt_nb1_*.zip"))
    assert len(zips) == 1 and zips[0].name in html and "model.safetensors" in html
    with zipfile.ZipFile(zips[0]) as z:
        assert "submission_runs/nb1/run_manifest.json" in z.namelist()
        assert NOTEBOOK in z.namelist()

    # Nothing written into the notebook's own folder (a package dep): no outputs saved, no checkpoints.
    assert run(["git", "status", "--porcelain", "--ignored", "notebooks"], repo).stdout == ""
