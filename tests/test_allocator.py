"""glibc keeps large freed blocks for reuse once clipfuse tunes it (clipfuse.allocator)."""

import subprocess
import sys

import pytest

from clipfuse import allocator
from clipfuse.cli import main

# In a fresh interpreter: how many bytes a 64 MB allocation adds to glibc's mmapped blocks
# (mallinfo2's hblkhd), before and after keep_freed_memory().
MMAPPED_BYTES = """
import ctypes, ctypes.util
from clipfuse.allocator import keep_freed_memory

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]

libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.mallinfo2.restype = MallInfo2

def mmapped_by_one_allocation():
    before = libc.mallinfo2().hblkhd
    block = bytearray(64 << 20)
    return libc.mallinfo2().hblkhd - before

print(mmapped_by_one_allocation(), keep_freed_memory(), mmapped_by_one_allocation())
"""


@pytest.mark.skipif(not allocator.on_glibc(), reason="the allocator tuning applies to glibc only")
def test_large_blocks_come_from_the_heap_once_tuned(monkeypatch):
    for name in (allocator.OPT_OUT, "GLIBC_TUNABLES", *allocator.USER_SETTINGS):
        monkeypatch.delenv(name, raising=False)
    result = subprocess.run(
        [sys.executable, "-c", MMAPPED_BYTES], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    before, outcome, after = result.stdout.split()
    assert int(before) >= 64 << 20  # glibc's default: a fresh mmap for every large block
    assert outcome == "kept"
    assert int(after) == 0


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("CLIPFUSE_MALLOC", "system"),
        ("GLIBC_TUNABLES", "glibc.malloc.mmap_threshold=65536"),
        ("MALLOC_TRIM_THRESHOLD_", "1000000"),
        ("LD_PRELOAD", "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"),
    ],
)
def test_the_users_own_allocator_choice_is_left_alone(monkeypatch, variable, value):
    monkeypatch.setenv(variable, value)
    monkeypatch.setattr(allocator.ctypes, "CDLL", lambda *_: pytest.fail("mallopt was called"))
    assert allocator.keep_freed_memory() == f"left as {variable} chose"


def test_the_command_tunes_the_allocator_first(monkeypatch, tmp_path, capsys):
    calls = []
    monkeypatch.setattr("clipfuse.cli.keep_freed_memory", lambda: calls.append("tuned"))
    assert main(["eval", "--model", str(tmp_path / "missing.ckpt")]) != 0
    assert calls == ["tuned"]
    assert "missing.ckpt" in capsys.readouterr().err
