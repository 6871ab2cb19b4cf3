"""Keep freed host memory in the process, so XLA:CPU's per-step buffers land on pages already mapped.

XLA:CPU allocates a compiled program's temporaries afresh on every run from a worker thread, where
glibc malloc maps a block that large with mmap and unmaps it on free. Every step then takes a page
fault per 4 KiB page of its temporaries, the kernel zeroing each page before the program writes it.
With one malloc arena, no mmap for large blocks and no trimming, the freed block stays in the heap
and the next step reuses it (docs/results/2026-12-03-performance-log.md has what it bought).

That suits a stage, a process with one job. A process that runs one job after another (a test worker)
wants the opposite, `return_freed_memory`: what one job freed goes back to the kernel before the next,
and `trim_freed_memory` between jobs for the small blocks that setting cannot return.
"""

from __future__ import annotations

import ctypes
import sys

# glibc's mallopt(3) parameters
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_MMAP_MAX = -4
M_ARENA_MAX = -8


def glibc_malloc() -> bool:
    """Whether this process allocates with glibc malloc, the one allocator this module tunes."""
    # musl's mallopt is a no-op stub; macOS has no mallopt
    return sys.platform.startswith("linux") and hasattr(ctypes.CDLL(None), "gnu_get_libc_version")


def reuse_freed_memory() -> bool:
    """Configure glibc malloc to keep and reuse freed memory; True when it took effect.

    Call it before JAX first runs a program: threads that already have their own malloc arena keep
    using it. Elsewhere than glibc (macOS, musl) it does nothing and returns False. The cost: the
    process's resident memory stays at its peak instead of shrinking after large frees, so it is for a
    process with one job (a stage), never for one that runs many (a test worker).
    """
    if not glibc_malloc():
        return False
    libc = ctypes.CDLL(None)
    settings = ((M_ARENA_MAX, 1), (M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, -1))  # -1: never trim
    return all(libc.mallopt(param, value) == 1 for param, value in settings)


def return_freed_memory() -> bool:
    """Configure glibc malloc to hand large freed blocks back to the kernel; True when it took effect.

    By default glibc raises its mmap threshold to the size of each mapped block it frees (up to 32 MiB),
    after which blocks that large come from the heap, where a fragmented heap keeps them resident after
    they are freed. A fixed threshold maps each large block on its own and unmaps it on free. For a process
    that runs one job after another (a test worker), so that its resident memory follows the job at hand
    rather than the largest one before it; the cost is `reuse_freed_memory`'s page faults, run after run.
    """
    if not glibc_malloc():
        return False
    libc = ctypes.CDLL(None)
    settings = ((M_MMAP_THRESHOLD, 1 << 20), (M_TRIM_THRESHOLD, 16 << 20))  # fixed: no dynamic raise
    return all(libc.mallopt(param, value) == 1 for param, value in settings)


def trim_freed_memory() -> bool:
    """Hand the free pages inside malloc's heaps back to the kernel now (malloc_trim(3)); True when any went.

    `return_freed_memory` unmaps each large block as it is freed; the small ones (a compiled XLA program is
    many) stay in the heap between live blocks, resident, until a trim. For a process between two jobs
    (a test worker between two test modules). Elsewhere than glibc it does nothing and returns False.
    """
    return glibc_malloc() and ctypes.CDLL(None).malloc_trim(0) == 1
