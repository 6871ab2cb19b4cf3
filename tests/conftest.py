import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
# Tests see 8 virtual CPU devices (sharding tests need them; everything else uses the first).
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

from training.host_memory import reuse_freed_memory  # noqa: E402  (after sys.path: the project's package)

reuse_freed_memory()  # as the stages do: XLA:CPU's per-run buffers land on mapped pages

# Property-based tests (tests/test_properties.py): in CI (`CI` set) the same examples every run, so a
# red build is reproducible and never a roll of the dice; locally a fresh draw each run finds new cases.
# The deadline is per example (one input through every function a test covers), far above the bound
# each call is held to (test_properties.CALL_SECONDS): on a loaded machine only a hang trips it.
from hypothesis import settings  # noqa: E402

settings.register_profile("ci", derandomize=True, deadline=10_000, database=None, print_blob=True)
settings.register_profile("dev", deadline=10_000)
settings.load_profile("ci" if os.environ.get("CI") else "dev")


@pytest.fixture(scope="session")
def tiny_config():
    """The small Gemma 3 shape the model tests share: 2 layers (an 8-token window, then full attention),
    4 query and 2 KV heads of 8. A test that needs another shape `dataclasses.replace`s it."""
    from training.config import FULL, SLIDING, GemmaConfig

    return GemmaConfig(
        family=3, vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=8, layer_types=(SLIDING, FULL), query_pre_attn_scalar=8, sliding_window=8,
    )  # fmt: skip


@pytest.fixture(scope="session")
def shared_base(tmp_path_factory) -> Path:
    """One base repo per test session (see tests/test_bad_inputs.py), read-only: tests work on copies."""
    from tests.test_bad_inputs import build_base

    return build_base(tmp_path_factory.mktemp("base") / "base")
