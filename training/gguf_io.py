"""A GGUF file of a Gemma 1/2/3 model (what llama.cpp and Ollama users hold) as a Hugging Face directory.

transformers reads the file with the `gguf` package: it maps llama.cpp's tensor
names back to Hugging Face's, undoes llama.cpp's storage conventions (Gemma's
RMSNorm weights are stored with their +1), dequantises to float32 and rebuilds
the tokenizer from the file's metadata. What it returns keeps a
`quantization_config` its own `save_pretrained` refuses, so this module writes
the directory itself: config.json from our GemmaConfig (no quantisation left),
the float32 tensors in sorted order (same file, same bytes), tokenizer.json.

Needs the `gemma` extra (gguf, transformers and torch); the rest of the
pipeline does not import it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

from training import chat
from training.config import GemmaConfig
from training.hf_io import CheckpointError

SUFFIX = ".gguf"


def gguf_config(path: Path) -> GemmaConfig:
    """The model config a GGUF file's metadata describes, read without its tensors (a second or so)."""
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    try:
        parsed = load_gguf_checkpoint(str(path), return_tensors=False)
    except Exception as err:  # gguf raises ValueError/KeyError/struct.error on a foreign or damaged file
        raise CheckpointError(f"{path}: not a readable GGUF model ({err})") from None
    hf = dict(parsed["config"])
    hf.pop("quantization_config", None)
    model_type = hf.get("model_type", "")
    # transformers names Gemma 3's text model "gemma3"; the text-only architecture is what we run.
    hf.setdefault(
        "architectures",
        [
            {"gemma": "GemmaForCausalLM", "gemma2": "Gemma2ForCausalLM", "gemma3": "Gemma3ForCausalLM"}.get(
                model_type, model_type
            )
        ],
    )
    try:
        return GemmaConfig.from_hf(hf)
    except (KeyError, ValueError, TypeError) as err:
        raise CheckpointError(f"{path}: {err}") from None


def convert(path: Path, out: Path, cfg: GemmaConfig | None = None) -> GemmaConfig:
    """Write `out` (config.json, model.safetensors, tokenizer files) from the GGUF file `path`;
    `cfg`, when the caller has already read it with `gguf_config`, saves parsing the metadata again."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(path)
    cfg = cfg or gguf_config(path)
    folder, name = str(path.parent), path.name
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    tensors = {
        key: value.detach().numpy().astype(np.float32, copy=False)
        for key, value in sorted(model.state_dict().items())
        if key != "lm_head.weight"  # tied to the embedding (config checks tie_word_embeddings)
    }
    del model
    out.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    del tensors
    (out / "config.json").write_text(json.dumps(cfg.to_hf(), indent=2, sort_keys=True) + "\n")
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    tok.backend_tokenizer.save(str(out / "tokenizer.json"))
    config = {
        "tokenizer_class": "GemmaTokenizer",
        "bos_token": chat.BOS,
        "eos_token": chat.END_OF_TURN,
        "pad_token": "<pad>",
        "unk_token": "<unk>",
        "add_bos_token": True,
        "model_max_length": cfg.max_position_embeddings,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    return cfg
