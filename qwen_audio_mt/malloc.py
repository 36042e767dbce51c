"""glibc's malloc, told to keep freed memory for reuse (`malloc_keep_freed`, on by default on CPU).

glibc serves an allocation above its mmap threshold (128 KiB, rising to at most 32 MiB as such
blocks are freed) with a fresh mmap and unmaps it on free, so the next allocation of that size
page-faults every page in again, zero-filled by the kernel. A training step allocates and frees
the same large tensors every step (the tiny default's 40 MB embedding gradients, the [tokens,
vocab] logits and their softmax, activations), so on CPU it pays for page faults beside its
arithmetic: a new 40 MB zero tensor took 13.4 ms against 4.3 ms with this setting, an 8 MB one
1.0 against 0.1 ms; a whole training step of the tiny default, 56.0 against 61.7 samples/s
(bench/bench_train.py, 2 cores).

Raising the mmap and trim thresholds (mallopt M_MMAP_THRESHOLD, M_TRIM_THRESHOLD) to 1 GiB
keeps freed blocks in the heap for the next step. The cost: the process's resident memory stays
at its peak instead of shrinking between steps. Forked loader workers inherit the setting. The
usual advice for PyTorch on CPU is a caching allocator (jemalloc or tcmalloc through LD_PRELOAD);
this needs nothing installed and no environment set before the process starts. Other C
libraries (musl, macOS) are left alone.
"""
from __future__ import annotations

import ctypes
import platform

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3   # glibc's <malloc.h> parameter numbers
THRESHOLD = 1 << 30   # 1 GiB: above any tensor a CPU step frees and allocates again


def keep_freed_memory() -> bool:
    """Set glibc's thresholds (module docs); False where the C library is not glibc or refuses."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(None)
    return bool(libc.mallopt(M_MMAP_THRESHOLD, THRESHOLD)) and bool(libc.mallopt(M_TRIM_THRESHOLD, THRESHOLD))
