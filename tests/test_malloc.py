"""glibc's malloc keeping freed memory (malloc.py), and training turning it on where it should."""
import subprocess
import sys
import textwrap

import pytest

from qwen_audio_mt import malloc, train

# In a child: the setting is process-wide and cannot be unset. mallinfo2's hblkhd counts the
# bytes in mmapped blocks: a 40 MB tensor (the tiny default's embedding gradient) is one unless
# the thresholds were raised.
PROBE = textwrap.dedent("""
    import ctypes, sys, torch
    from qwen_audio_mt.malloc import keep_freed_memory
    class Info(ctypes.Structure):
        _fields_ = [(n, ctypes.c_size_t) for n in
                    "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]
    libc = ctypes.CDLL(None)
    libc.mallinfo2.restype = Info
    on = sys.argv[1] == "1" and keep_freed_memory()
    before = libc.mallinfo2().hblkhd
    grad = torch.zeros(51904, 192)
    print(int(on), libc.mallinfo2().hblkhd - before)
""")


def probe(keep: bool) -> tuple[int, int]:
    out = subprocess.run([sys.executable, "-c", PROBE, str(int(keep))], capture_output=True, text=True, check=True)
    on, mapped = out.stdout.split()
    return int(on), int(mapped)


@pytest.mark.skipif(sys.platform != "linux", reason="glibc's malloc")
def test_large_tensors_come_from_the_heap_once_set():
    on, mapped = probe(keep=False)   # glibc as it comes: the tensor is its own mmap, unmapped when freed
    assert on == 0 and mapped >= 51904 * 192 * 4
    assert probe(keep=True) == (1, 0)


@pytest.mark.parametrize("raw, called", [
    ({"trainer": {"accelerator": "cpu"}}, True),                                 # the default
    ({"trainer": {"accelerator": "cpu"}, "malloc_keep_freed": False}, False),
    ({"trainer": {"accelerator": "cuda"}}, False),                               # the host's malloc is not the step's
])
def test_training_sets_it_on_cpu_unless_turned_off(monkeypatch, raw, called):
    calls = []
    monkeypatch.setattr(malloc, "keep_freed_memory", lambda: calls.append(1) or True)
    monkeypatch.setattr("torch.set_num_threads", lambda n: None)
    train.set_cpu_runtime({"cpu_threads": 1, **raw})
    assert bool(calls) == called
