"""The judge's in-process backend: a Gemma checkpoint (an HF directory) run with our sampler, greedy.

No server: the judge model loads beside whatever else runs in the process.
Prompts are batched in order of length so a batch shares a prompt bucket, and
the text is tokenised as it is rendered (with <bos>): the judge templates are
plain text, which a base model continues as well as an instruction-tuned one.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from reasoning.judge import JudgeError
from training import chat
from training import tokenizer as tokenizers_io
from training.hf_io import CheckpointError, load_pretrained
from training.sampler import Sampler, SamplingConfig


class LocalBackend:
    """`complete(prompts)` with the checkpoint in `model_dir`. `fingerprint`: the checkpoint's content
    hash, part of `identity` so a changed checkpoint asks again."""

    def __init__(self, model_dir: str | Path, fingerprint: str, dtype: str = "float32", batch_size: int = 16):
        self.model_dir = Path(model_dir)
        self.batch_size = max(1, batch_size)
        try:
            self.tok = tokenizers_io.load(self.model_dir)
        except Exception as err:  # noqa: BLE001 - tokenizers raises a bare Exception for a corrupt file
            raise JudgeError(f"judge {self.model_dir / 'tokenizer.json'}: not a valid tokenizer ({err})") from None
        try:
            model = load_pretrained(self.model_dir, dtype=dtype, param_dtype=dtype)
        except CheckpointError as err:
            raise JudgeError(f"judge {self.model_dir}: {err}") from None
        self.sampler = Sampler(
            model, eos_ids=tokenizers_io.stop_ids(self.tok), pad_id=self.tok.token_to_id("<pad>") or 0
        )
        self.identity = {"backend": "local", "model": self.model_dir.as_posix(), "sha256": fingerprint, "dtype": dtype}

    def complete(self, prompts: Sequence[str], max_tokens: int) -> list[str]:
        ids = [self.tok.encode(chat.BOS + p, add_special_tokens=False).ids for p in prompts]
        order = sorted(range(len(ids)), key=lambda i: (len(ids[i]), i))
        cfg = SamplingConfig(max_new_tokens=max_tokens)
        out: dict[int, str] = {}
        for at in range(0, len(order), self.batch_size):
            idx = order[at : at + self.batch_size]
            gen = self.sampler([ids[i] for i in idx], cfg)
            for row, i in enumerate(idx):
                out[i] = self.tok.decode(gen.tokens[row, : int(gen.lengths[row])].tolist(), skip_special_tokens=True)
        return [out[i] for i in range(len(prompts))]
