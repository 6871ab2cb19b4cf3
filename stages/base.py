"""Stage `base`: the weights fine-tuning starts from, as a tracked input, in data/base/.

The tiny preset starts from nothing: data/base/ holds only base.json. A Gemma
preset reads `model.checkpoint`, a local Hugging Face directory or a GGUF file
of a Gemma 1/2/3 model, checks that it is the preset's model (architecture and
shape), and writes it as a Hugging Face directory (GGUF dequantised to float32)
with base.json recording the source files' sha256. Tokenizer and train read
data/base/, so a different base re-runs what follows it, and the evidence
records which base it was.

DVC tracks `models/`, so the checkpoint lives there: a file, or a link to one
(`ln -s /kaggle/input/…/model.gguf models/`); a Hugging Face directory as a
folder of files or links. A link to a folder is refused: DVC does not follow
one, so weights changed behind it would never re-run the pipeline. Weights are
checked readable (every safetensors header and tensor byte range) before the copy.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from safetensors import safe_open

from stages import paths
from stages.common import (
    StageError,
    atomic_path,
    load_params,
    param_error,
    params_where,
    run_stage,
    sha256_file,
    shorten,
    write_json,
)
from training.config import shape_mismatch
from training.hf_io import WEIGHT_FILES, CheckpointError, read_config
from training.tokenizer import TOKENIZER_FILES

BASE_FILE = "base.json"


def checkpoint_path(model: dict, root: Path) -> Path:
    """The checkpoint `model.checkpoint` names, which must lie inside models/ (one line otherwise).

    The path is normalised first (`models/../../elsewhere` is outside), and no folder on the way to it
    may be a link: DVC hashes what it finds in models/ to decide what re-runs, and it does not follow
    a link to a folder, so the weights behind one could change and nothing would re-run."""
    named = model.get("checkpoint")
    if not named:
        raise param_error(
            "model",
            "checkpoint",
            root=root,
            message=f"preset {model['preset']} needs a Hugging Face directory or a GGUF file",
        )
    models = Path(os.path.abspath(root / paths.MODELS))
    absolute = Path(os.path.abspath(root / named))  # lexically, `..` included: the links are checked below
    if models not in absolute.parents:
        raise param_error(
            "model",
            "checkpoint",
            root=root,
            message=(
                f"{named} is outside {paths.MODELS}/, the folder DVC tracks for base weights "
                f"(link it there: ln -s {absolute} {paths.MODELS}/)"
            ),
        )
    path = root / paths.MODELS / absolute.relative_to(models)
    linked = _linked_folder(root, path)
    if linked is not None:
        raise param_error(
            "model",
            "checkpoint",
            root=root,
            message=(
                f"{linked.relative_to(root)} is a link to a folder, which DVC does not follow (weights changed behind it "
                f"would never re-run the pipeline): replace it with a folder of the checkpoint's files, copied or each "
                f"linked (stages.base.link_into_models links them)"
            ),
        )
    if not path.exists():
        where = params_where("model", "checkpoint", root=root)
        raise StageError(f"{named}: not found ({where}: model.checkpoint, a Hugging Face directory or a .gguf file)")
    return path


def _linked_folder(root: Path, path: Path) -> Path | None:
    """The first of models/ and the folders from it down to `path` (itself included) that is a link to a folder."""
    relative = path.relative_to(root / paths.MODELS)
    for depth in range(len(relative.parts) + 1):
        step = root / paths.MODELS / Path(*relative.parts[:depth])
        if step.is_symlink() and step.is_dir():
            return step
    return None


def link_into_models(source: Path, root: Path = Path(".")) -> Path:
    """Link a checkpoint from elsewhere (a Kaggle input) into models/; return the path to name in
    `model.checkpoint`. A GGUF file is linked as it is, a Hugging Face directory file by file (a link
    to the folder DVC would not follow; checkpoint_path refuses one)."""
    source = Path(source).expanduser().absolute()
    target = root / paths.MODELS / source.name
    files = [source] if source.is_file() else source_files(source)
    if not files:
        raise StageError(f"{source}: not a Hugging Face directory or a .gguf file")
    if target.is_symlink():  # an earlier link to the folder itself: its files would be linked onto themselves
        target.unlink()
    if source.is_dir():
        target.mkdir(parents=True, exist_ok=True)
    for file in files:
        link = target if source.is_file() else target / file.name
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(file)
    return paths.MODELS / source.name


def source_files(path: Path) -> list[Path]:
    """The files of a checkpoint that make the model: the GGUF file, or config, weights and tokenizer."""
    if path.is_file():
        return [path]
    names = ["config.json", *WEIGHT_FILES, *TOKENIZER_FILES]
    return sorted([path / n for n in names if (path / n).is_file()] + list(path.glob("model-*-of-*.safetensors")))


def write_base(model: dict, source: Path, out: Path) -> str:
    """Write `source` into `out` as a Hugging Face directory; return its format."""
    from training import gguf_io  # the gemma extra: imported only for a GGUF base

    if source.is_file():
        if source.suffix != gguf_io.SUFFIX:
            raise StageError(f"{model['checkpoint']}: expected a Hugging Face directory or a {gguf_io.SUFFIX} file")
        cfg = gguf_io.gguf_config(source)
        _check_shape(cfg, model, source)
        gguf_io.convert(source, out, cfg)
        return "gguf"
    _check_shape(read_config(source), model, source / "config.json")
    if not (source / "tokenizer.json").is_file():
        raise StageError(f"{source / 'tokenizer.json'}: missing (model.checkpoint must hold the tokenizer)")
    if not any((source / name).is_file() for name in WEIGHT_FILES):
        # Weights come only from safetensors: a pytorch_model.bin is a pickle, never loaded.
        raise StageError(f"{source}: no {' or '.join(WEIGHT_FILES)} (weights are read from safetensors only)")
    check_weights(source)
    out.mkdir()
    for file in source_files(source):
        shutil.copyfile(file, out / file.name)
    return "huggingface"


def check_weights(directory: Path) -> None:
    """Every safetensors file of a Hugging Face directory is readable: each shard its index lists is
    there, and each file's header parses with every tensor's bytes inside the file (safetensors checks
    that on opening), so a file cut short is one line here, not a base that fails in train."""
    index = directory / WEIGHT_FILES[1]
    files = {f for f in source_files(directory) if f.suffix == ".safetensors"}
    if index.is_file():
        try:
            shards = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, AttributeError) as err:
            raise StageError(f"{index}: not a safetensors index ({shorten(repr(err))})") from None
        missing = [name for name in shards if not (directory / name).is_file()]
        if missing:
            raise StageError(f"{directory / missing[0]}: missing (a shard {index.name} lists)")
        files |= {directory / name for name in shards}
    for file in sorted(files):
        try:
            with safe_open(str(file), "np") as handle:
                handle.keys()
        except Exception as err:  # safetensors raises its own SafetensorError (and OSError for an unreadable file)
            raise StageError(f"{file}: unreadable safetensors ({shorten(str(err))})") from None


def _check_shape(cfg, model: dict, where: Path) -> None:
    mismatch = shape_mismatch(cfg, model["preset"])
    if mismatch:
        raise StageError(f"{where}: {mismatch} (model.preset {model['preset']})")


def run(params: dict, root: Path = Path(".")) -> dict:
    model = params["model"]
    info: dict = {"preset": model["preset"], "checkpoint": model.get("checkpoint")}
    with atomic_path(root / paths.BASE) as out:
        if model["preset"] == "tiny":
            out.mkdir()
            info["checkpoint"] = None
        else:
            source = checkpoint_path(model, root)
            files = source_files(source)
            try:
                info["format"] = write_base(model, source, out)
            except CheckpointError as err:
                raise StageError(str(err)) from None
            info["files"] = {
                f.relative_to(source).as_posix() if source.is_dir() else f.name: sha256_file(f) for f in files
            }
            info["num_parameters"] = read_config(out).num_params()
        write_json(out / BASE_FILE, info)
    what = "none (trained from scratch)" if info["checkpoint"] is None else f"{info['checkpoint']} ({info['format']})"
    print(f"base: {what} -> {paths.BASE}")
    return info


def main() -> None:
    run(load_params())


if __name__ == "__main__":
    run_stage(main)
