import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
# Tests see 8 virtual CPU devices (sharding tests need them; everything else uses the first).
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")


@pytest.fixture(scope="session")
def shared_base(tmp_path_factory) -> Path:
    """One base repo per test session (see tests/test_bad_inputs.py), read-only: tests work on copies."""
    from tests.test_bad_inputs import build_base

    return build_base(tmp_path_factory.mktemp("base") / "base")
