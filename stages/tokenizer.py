"""Stage `tokenizer`: the tokenizer the model trains and predicts with, in data/tokenizer/.

The tiny preset trains a byte-level BPE on the rendered training set; a Gemma
preset takes the tokenizer files of its base (data/base/, the base stage's) unchanged.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from stages import paths
from stages.common import StageError, atomic_path, load_params, read_checked_jsonl, run_stage
from training import chat
from training import tokenizer as bpe


def training_texts(records: list[dict]) -> list[str]:
    return [chat.render_prompt(r["prompt"]) + chat.render_completion(r["steps"], r["final_answer"]) for r in records]


def run(params: dict, root: Path = Path(".")) -> None:
    """Write `root`'s tokenizer: a BPE trained on its traces (tiny), or the checkpoint's own (Gemma)."""
    model, tok_params = params["model"], params["tokenizer"]
    with atomic_path(root / paths.TOKENIZER) as out:
        if model["preset"] == "tiny":
            records = read_checked_jsonl(root / paths.TRAIN, "trace", root / paths.TRAIN_MANIFEST)
            tok = bpe.train_bpe(training_texts(records), tok_params["vocab_size"], tok_params["min_frequency"])
            bpe.save_hf(tok, out)
            print(f"tokenizer: BPE with {tok.get_vocab_size()} tokens -> {paths.TOKENIZER}")
        else:
            source = root / paths.BASE
            if not (source / "tokenizer.json").is_file():
                raise StageError(f"{paths.BASE / 'tokenizer.json'}: missing (run the base stage)")
            out.mkdir()
            for name in bpe.TOKENIZER_FILES:
                if (source / name).is_file():
                    shutil.copyfile(source / name, out / name)
            print(f"tokenizer: copied from {paths.BASE} -> {paths.TOKENIZER}")


def main() -> None:
    run(load_params())


if __name__ == "__main__":
    run_stage(main)
