"""Keep the memory a CPU training step frees for the next step, instead of handing it back to the kernel.

A training step allocates and frees the same large tensors (activations, gradients) every iteration. glibc's
default malloc returns freed memory at the top of its heap to the kernel (trim) and serves big blocks from fresh
``mmap`` calls, so the next step page-faults the same megabytes in again, zero-filled by the kernel: on the demo's
2-core machine that is 6-9 s of system time in a 2-epoch run, and a KD iteration 135 ms instead of 106 ms
(docs/benchmarks.md). This module raises two glibc ``mallopt`` settings so that freed memory stays in the heap:
the process keeps its peak footprint (which every iteration reaches again anyway) and faults it in once.

It is what ``MALLOC_MMAP_THRESHOLD_`` and ``MALLOC_TRIM_THRESHOLD_`` do from the environment, applied by kdplug's
tools at start-up. Nothing changes where it cannot apply (another C library, or the user's own allocator settings:
an ``LD_PRELOAD`` of jemalloc / tcmalloc, ``MALLOC_*_`` variables, ``GLIBC_TUNABLES``), and no value computed by
the program changes.
"""
import ctypes
import os
import platform
from typing import Optional

#: glibc's mallopt parameters (malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
#: Blocks up to this size come from the heap, not from their own mmap (glibc may refuse more than 32 MiB: then
#: 32 MiB); freed memory at the top of the heap is returned to the kernel only beyond ``TRIM_THRESHOLD``.
MMAP_THRESHOLD = 1 << 30
MMAP_THRESHOLD_FALLBACK = 32 << 20
TRIM_THRESHOLD = 2 ** 31 - 1  # mallopt takes a C int

USER_SETTINGS = ('MALLOC_MMAP_THRESHOLD_', 'MALLOC_TRIM_THRESHOLD_', 'MALLOC_TOP_PAD_', 'MALLOC_ARENA_MAX')


def user_allocator_setting(environ: Optional[dict] = None) -> Optional[str]:
    """The environment variable by which the user chose an allocator or its settings, or None."""
    environ = os.environ if environ is None else environ
    preload = environ.get('LD_PRELOAD', '')
    if any(name in preload for name in ('jemalloc', 'tcmalloc', 'mimalloc')):
        return 'LD_PRELOAD'
    if 'glibc.malloc' in environ.get('GLIBC_TUNABLES', ''):
        return 'GLIBC_TUNABLES'
    return next((name for name in USER_SETTINGS if name in environ), None)


def keep_freed_memory() -> str:
    """Apply the settings when the process runs glibc and the user set none; a sentence that says what happened."""
    chosen = user_allocator_setting()
    if chosen is not None:
        return f'malloc left as set by {chosen}'
    if platform.system() != 'Linux' or platform.libc_ver()[0] != 'glibc':
        return 'malloc left as it is (not glibc)'
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return 'malloc left as it is (no mallopt)'
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    # the mmap threshold first: setting either one freezes glibc's dynamic threshold, and a trim threshold alone
    # would leave every block over 128 KiB to its own mmap (twice slower than glibc's defaults on the demo)
    if mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) != 1 and mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_FALLBACK) != 1:
        return 'malloc left as it is (mallopt refused the mmap threshold)'
    mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    return 'malloc keeps freed memory for the next iteration (kdplug.engine.allocator)'
