"""Our merged LoRA export loads in google-tunix's own Gemma 2 and Gemma 3 safetensors loaders with our logits.

google-tunix 0.1.7 pins safetensors < 0.8 (and pulls older transformers and
tokenizers than our lock), so it lives in its own environment, `.venv-tunix`
(`make tunix-env`, built by `.ci/run`; pinned in requirements-tunix.lock).
This test exports from the project's venv and runs tests/tunix_logits.py there.
Set TUNIX_PYTHON to use another interpreter; without one the test is skipped.

Configs follow Tunix's layouts: Gemma 3 cycles five sliding layers and one
global (GEMMA3_ATTENTION_PATTERN); both scale queries by 1/√head_dim. The window
(8) is shorter than the sequence (28), every weight is random and the adapters'
A and B are both non-zero before they are folded in.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tests.test_lora import randomize_adapters
from tests.test_parity import ATOL, SHAPE, our_logits, random_gemma
from training import lora
from training.config import FULL, SLIDING, GemmaConfig
from training.hf_io import save_pretrained
from training.lora import TARGETS, LoRASpec
from training.tunix_launch import tunix_python

ROOT = Path(__file__).resolve().parent.parent
TUNIX_PYTHON = tunix_python()
pytestmark = pytest.mark.skipif(
    not TUNIX_PYTHON.exists(), reason=f"no Tunix environment at {TUNIX_PYTHON} (make tunix-env)"
)
T = 28


def config(family: int) -> GemmaConfig:
    if family == 3:
        layer_types = (SLIDING,) * 5 + (FULL,)
        extra = dict(rope_theta=1e6, rope_local_base_freq=1e4, final_logit_softcapping=None)
    else:
        layer_types = (SLIDING, FULL) * 2
        extra = dict(rope_theta=1e4, attn_logit_softcapping=5.0, final_logit_softcapping=5.0)
    return GemmaConfig(
        family=family,
        **SHAPE,
        num_hidden_layers=len(layer_types),
        layer_types=layer_types,
        query_pre_attn_scalar=SHAPE["head_dim"],
        sliding_window=8,
        **extra,
    )


def tunix_config(cfg: GemmaConfig) -> dict:
    fields = dict(
        num_layers=cfg.num_hidden_layers,
        num_embed=cfg.vocab_size,
        embed_dim=cfg.hidden_size,
        hidden_dim=cfg.intermediate_size,
        num_heads=cfg.num_attention_heads,
        head_dim=cfg.head_dim,
        num_kv_heads=cfg.num_key_value_heads,
        sliding_window_size=cfg.sliding_window,
    )
    if cfg.family == 3:
        return fields | dict(local_base_frequency=10_000, global_base_frequency=1_000_000)
    return fields | dict(
        final_logit_softcap=cfg.final_logit_softcapping,
        attn_logits_soft_cap=cfg.attn_logit_softcapping,
        use_post_attn_norm=True,
        use_post_ffw_norm=True,
        attention_types=["local" if t == SLIDING else "global" for t in cfg.layer_types],
    )


@pytest.mark.parametrize("family", [2, 3])
def test_merged_lora_export_loads_in_tunix_with_our_logits(family, tmp_path):
    cfg = config(family)
    ours = random_gemma(cfg, seed=family)
    lora.add_adapters(ours, LoRASpec(rank=4, alpha=8.0, targets=TARGETS), seed=0)
    randomize_adapters(ours, seed=family)
    tokens = np.random.default_rng(family).integers(0, cfg.vocab_size, (2, T))
    positions = np.tile(np.arange(T), (2, 1))
    segments = np.ones((2, T), np.int64)
    want = our_logits(ours, tokens, positions, segments)
    assert np.abs(want).max() > 3.0  # far from uniform: a wrong feature shows

    lora.merge_adapters(ours)
    save_pretrained(ours, tmp_path / "model")
    request = {"dir": str(tmp_path / "model"), "family": family, "config": tunix_config(cfg), "tokens": tokens.tolist()}
    got = tunix_logits(request, tmp_path)
    assert got.shape == want.shape
    assert float(np.abs(got - want).max()) <= ATOL


def tunix_logits(request: dict, workdir: Path) -> np.ndarray:
    """The logits tests/tunix_logits.py computes for `request` in the Tunix environment."""
    (workdir / "request.json").write_text(json.dumps(request))
    run_in_tunix("tests/tunix_logits.py", ["request.json", "out.npy"], workdir)
    return np.load(workdir / "out.npy")


def run_in_tunix(script: str, args: list[str], workdir: Path, timeout: int = 900) -> None:
    """Run a script of this repository with the Tunix environment's interpreter, in `workdir`, on the CPU."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "XLA_FLAGS")} | {"JAX_PLATFORMS": "cpu"}
    proc = subprocess.run(
        [str(TUNIX_PYTHON), str(ROOT / script), *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=workdir,
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
