"""training/host_memory.py: a compiled program's temporaries stop costing a page fault per page each run."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from training.host_memory import glibc_malloc

ROOT = Path(__file__).resolve().parent.parent

# A program with ~130 MiB of temporaries: above glibc's mmap threshold, so by default XLA:CPU's buffer
# for them is mapped and unmapped on every run. Prints the minor page faults of each run.
PROGRAM = """
import json, resource, sys
sys.path.insert(0, {root!r})
if {reuse}:
    from training.host_memory import reuse_freed_memory
    assert reuse_freed_memory()
import jax, jax.numpy as jnp

def f(x):
    a = jnp.sin(x)
    return (jnp.cumsum(a, axis=0) * jnp.flip(a, 0)).sum()

x = jnp.ones((2048, 8192))
run = jax.jit(f).lower(x).compile()
faults = []
for _ in range({runs}):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    run(x).block_until_ready()
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps(faults))
"""


def faults_per_run(reuse: bool, runs: int) -> list[int]:
    code = PROGRAM.format(root=str(ROOT), reuse=reuse, runs=runs)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


@pytest.mark.skipif(not glibc_malloc(), reason="glibc malloc only (Linux)")
def test_most_runs_reuse_mapped_pages_for_their_temporaries():
    pages = 130 * 2**20 // 4096
    default = faults_per_run(reuse=False, runs=6)
    assert min(default) > pages // 2, default  # the premise: each run maps its temporaries afresh
    reused = faults_per_run(reuse=True, runs=24)
    # The heap grows over the first runs (a freed block is a little too small for the next aligned
    # request while a live allocation keeps it from merging) and then holds enough: most runs fault
    # on a few pages at most.
    assert statistics.median(reused) < pages // 20, reused


# Blocks freed in the middle of the heap: after one large block is freed, glibc by default takes blocks that
# large from the heap, and the small blocks kept between them keep the heap from shrinking.
RETAINED = """
import json, sys
sys.path.insert(0, {root!r})
if {give_back}:
    from training.host_memory import return_freed_memory
    assert return_freed_memory()
import numpy as np

def resident_mib():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20

before = resident_mib()
large = np.ones(2 * 2**20)  # 16 MiB, mapped on its own by default
del large
blocks, pins = [], []
for _ in range(24):
    blocks.append(np.ones(2**20))  # 8 MiB
    pins.append(np.ones(8192))  # and 64 KiB after it, kept
del blocks
print(json.dumps(resident_mib() - before))
"""


def retained_mib(give_back: bool) -> float:
    code = RETAINED.format(root=str(ROOT), give_back=give_back)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


@pytest.mark.skipif(not glibc_malloc(), reason="glibc malloc only (Linux)")
def test_a_worker_gives_freed_blocks_back_to_the_kernel():
    kept = retained_mib(give_back=False)
    assert kept > 100, kept  # the premise: by default the freed 192 MiB stay resident
    assert retained_mib(give_back=True) < 16


# Small blocks (under the mmap threshold `return_freed_memory` fixes) come from the heap; freed between
# blocks still in use, they stay resident until a trim.
SMALL_BLOCKS = """
import json, sys
sys.path.insert(0, {root!r})
from training.host_memory import return_freed_memory, trim_freed_memory
assert return_freed_memory()
import numpy as np

def resident_mib():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20

before = resident_mib()
blocks, pins = [], []
for _ in range(400):
    blocks.append(np.ones(2**16))  # 512 KiB
    pins.append(np.ones(512))  # and 4 KiB after it, kept
del blocks
kept = resident_mib() - before
trimmed = trim_freed_memory()
print(json.dumps([kept, resident_mib() - before, trimmed]))
"""


@pytest.mark.skipif(not glibc_malloc(), reason="glibc malloc only (Linux)")
def test_a_trim_gives_freed_small_blocks_back_to_the_kernel():
    code = SMALL_BLOCKS.format(root=str(ROOT))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    kept, after_trim, trimmed = json.loads(out.strip().splitlines()[-1])
    assert kept > 150, kept  # the premise: the freed 200 MiB stay resident
    assert trimmed and after_trim < 16, after_trim
