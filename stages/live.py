"""What the training stages (`train`, `preference`, `grpo`) share around their loop: dvclive curves that
resume with the orbax checkpoints, the progress bar, clearing the checkpoints once the run is done, and for
the stages after SFT, loading the model they improve and passing it through at `steps: 0`.

A run's curves grow in a work folder beside its checkpoints and replace the stage's curves only when
the run has finished: a run that fails (a diverged loss, a bad param found late, a kill) leaves the
last good curves as they were, and the work folder, kept with the checkpoints, resumes with them."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

from tqdm import tqdm

from dvclive import Live
from stages.common import StageError, atomic_paths, param_error, write_json
from training import lora
from training.hf_io import CheckpointError, load_pretrained
from training.lora import LoRAError, LoRASpec
from training.model import Gemma

OnLog = Callable[[int, dict[str, float]], None]
DVCLIVE_WRITES = ("metrics.json", "plots")  # what dvclive writes into its folder (as this stage runs it)


def resuming(checkpoints: Path) -> bool:
    """An interrupted run left checkpoints behind: the run resumes, and so do its curves."""
    return checkpoints.exists() and any(checkpoints.iterdir())


def work_folder(checkpoints: Path) -> Path:
    """Where a run's curves grow until it finishes: beside the checkpoints it resumes from."""
    return checkpoints.parent / f".{checkpoints.name}.curves"


@contextlib.contextmanager
def curves(directory: Path, checkpoints: Path, prefix: str = "") -> Iterator[OnLog]:
    """Yield `on_log(step, metrics)`, which logs every metric (named `prefix + name`) to dvclive; when
    the block ends without an error, what dvclive wrote replaces those entries of `directory` together
    (train's `dvclive/` also holds grpo's folder, which stays as it is)."""
    work = work_folder(checkpoints)
    resume = resuming(checkpoints)
    if not resume:
        shutil.rmtree(work, ignore_errors=True)
    elif not work.exists():  # a run interrupted before its curves grew apart resumes on the stage's own
        work.mkdir(parents=True)
        for name in DVCLIVE_WRITES:
            if (directory / name).is_dir():
                shutil.copytree(directory / name, work / name)
            elif (directory / name).is_file():
                shutil.copyfile(directory / name, work / name)
    if resume:
        forget_after(work, resume_step(checkpoints))
    with Live(str(work), resume=resume, save_dvc_exp=False, dvcyaml=None) as live:

        def on_log(step: int, metrics: dict[str, float]) -> None:
            live.step = step
            for name, value in metrics.items():
                if name != "step":
                    live.log_metric(prefix + name, value)
            live.make_summary()

        yield on_log
    commit(work, directory)


def resume_step(checkpoints: Path) -> int:
    """The step of the latest checkpoint (orbax names each folder by its step), where the run resumes."""
    return max((int(p.name) for p in checkpoints.iterdir() if p.name.isdigit()), default=0)


def forget_after(work: Path, step: int) -> None:
    """Drop the rows logged after `step`: a killed run logs past its last checkpoint, and the resumed
    run logs those steps again (dvclive appends, so each would be there twice)."""
    for tsv in sorted((work / "plots").rglob("*.tsv")):
        header, *rows = tsv.read_text(encoding="utf-8").splitlines(keepends=True) or [""]
        kept = [row for row in rows if _step_of(row) is not None and _step_of(row) <= step]
        if len(kept) < len(rows):
            tsv.write_text(header + "".join(kept), encoding="utf-8")


def _step_of(row: str) -> float | None:
    try:
        return float(row.split("\t", 1)[0])  # dvclive's first column is the step
    except ValueError:
        return None


def commit(work: Path, directory: Path) -> None:
    """Every entry of `work` replaces its namesake in `directory`, all together (atomic_paths); then
    `work` goes. Copied, not moved: the checkpoints' folder and the curves' may be on other disks."""
    names = sorted(p.name for p in work.iterdir())
    with atomic_paths(*(directory / name for name in names)) as targets:
        for name, target in zip(names, targets):
            source = work / name
            if source.is_dir():
                shutil.copytree(source, target)
            else:
                shutil.copyfile(source, target)
    shutil.rmtree(work)


def progress(total: int, desc: str) -> Callable[[int], tqdm]:
    """The bar a training loop opens at its start step."""
    return lambda start: tqdm(total=total, initial=start, desc=desc, unit="step", dynamic_ncols=True)


def finished(checkpoints: Path) -> None:
    """The run is done: nothing to resume (the folder stays, empty, as the persistent out DVC expects)."""
    shutil.rmtree(checkpoints, ignore_errors=True)
    shutil.rmtree(work_folder(checkpoints), ignore_errors=True)
    checkpoints.mkdir(parents=True, exist_ok=True)


def learner_lora(params: dict, section: str) -> tuple[str, LoRASpec]:
    """The adapters a stage after SFT puts on its model: (the section they come from, their spec);
    `<section>.lora`, or `model.lora` when that is null."""
    lora_section = "model" if params[section].get("lora") is None else section
    return lora_section, LoRASpec.from_params(params[lora_section].get("lora"))


def load_learner(params: dict, section: str, model_dir: Path, root: Path) -> tuple[Gemma, LoRASpec]:
    """The model a stage after SFT improves; with a LoRA rank above 0 (`learner_lora`), fresh adapters on
    it, held in the compute dtype: the model is their frozen base, and so the reference, with no second copy."""
    model_params = params["model"]
    lora_section, spec = learner_lora(params, section)
    param_dtype = model_params["compute_dtype"] if spec.rank else model_params["param_dtype"]
    try:
        model = load_pretrained(model_dir, dtype=model_params["compute_dtype"], param_dtype=param_dtype)
        lora.add_adapters(model, spec, params["base"]["seed"])
    except CheckpointError as err:
        raise StageError(str(err)) from None
    except LoRAError as err:
        raise param_error(lora_section, "lora", err.key, message=err, root=root) from None
    return model, spec


def pass_through(source: Path, out: Path, curves_dir: Path, checkpoints: Path, curve: str) -> None:
    """A stage at `steps: 0`: `out` is `source` byte for byte, and its curves (written with it: both or
    neither) hold one curve with a header and no rows: no step ran, and git carries the folder to a clone
    (an empty one it cannot)."""
    with atomic_paths(out, curves_dir) as (model, curves):
        shutil.copytree(source, model)
        (curves / "plots" / "metrics").mkdir(parents=True)
        (curves / "plots" / "metrics" / f"{curve}.tsv").write_text(f"step\t{curve}\n", encoding="utf-8")
        write_json(curves / "metrics.json", {"steps": 0})
    checkpoints.mkdir(parents=True, exist_ok=True)
