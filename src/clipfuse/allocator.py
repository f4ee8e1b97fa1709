"""glibc's malloc told to keep large freed blocks for reuse: :func:`keep_freed_memory`.

glibc serves every allocation above its mmap threshold (128 KiB, adapting up to 32 MiB) with a
fresh ``mmap`` and returns it to the system on ``free``; the next tensor of that size faults
its pages in again, zero-filled by the kernel. A segmentation network allocates such tensors
afresh on every forward pass: the decoder's maps at 1/4 resolution and the logits at the input
size (150 x 512 x 512 in bf16 is 79 MB). With both thresholds raised to 1 GiB they come from
the heap and go back to it (what that saves, measured: docs/research/speed.md, "Allocator").
PyTorch's CPU performance guide gets the same effect by preloading jemalloc or tcmalloc; this
needs no other library.

The cost: up to 1 GiB of freed memory stays with the process instead of going back to the
system. The ``clipfuse`` command calls :func:`keep_freed_memory` at start (data-loading workers
inherit it); Python users may call it themselves. Nothing is changed where the user chose an
allocator or tuned this one (``LD_PRELOAD``, ``GLIBC_TUNABLES`` naming malloc,
``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_``), where ``CLIPFUSE_MALLOC=system``
asks for glibc's defaults, and outside glibc (macOS, Windows, musl), whose allocators differ.
"""

import ctypes
import ctypes.util
import os
import platform

from clipfuse.errors import announce

THRESHOLD_BYTES = 1 << 30
M_TRIM_THRESHOLD = -1  # glibc's mallopt parameter numbers (malloc.h)
M_MMAP_THRESHOLD = -3
OPT_OUT = "CLIPFUSE_MALLOC"
# Variables by which a user chooses or tunes the allocator (besides GLIBC_TUNABLES naming malloc)
USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "LD_PRELOAD")


def on_glibc() -> bool:
    """Whether this process runs on Linux with glibc, the allocator tuned here."""
    return platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"


def _user_choice() -> str | None:
    """The environment variable by which the user chose or tuned the allocator, if any."""
    if os.environ.get(OPT_OUT, "").lower() == "system":
        return OPT_OUT
    if "malloc" in os.environ.get("GLIBC_TUNABLES", ""):
        return "GLIBC_TUNABLES"
    for name in USER_SETTINGS:
        if os.environ.get(name):
            return name
    return None


def keep_freed_memory() -> str:
    """Raise glibc's mmap and trim thresholds to :data:`THRESHOLD_BYTES`; what was done, in
    words (``"kept"``, or why nothing was; a refusal by glibc is also announced on stderr)."""
    choice = _user_choice()
    if choice is not None:
        return f"left as {choice} chose"
    if not on_glibc():
        return "not glibc"
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    if not (
        libc.mallopt(M_MMAP_THRESHOLD, THRESHOLD_BYTES)
        and libc.mallopt(M_TRIM_THRESHOLD, THRESHOLD_BYTES)
    ):
        announce(
            "glibc refused the allocator thresholds (mallopt): freed tensors go back to the system"
        )
        return "refused by mallopt"
    return "kept"
