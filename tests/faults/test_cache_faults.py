"""The cache under process faults that already behave (kept covered): a writer killed with SIGKILL
mid-write, and two processes writing the same key at once. A reader always sees a complete entry
(the old or the new one), never a part, and no warning about damage.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import warnings

import torch

from ftdfast.cache import Cache

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Writes ever new versions of one entry (4 MB each) until killed; value v is a tensor filled with v.
WRITER = textwrap.dedent("""
    import sys, torch
    from ftdfast.cache import Cache
    cache, tag = Cache(sys.argv[1]), float(sys.argv[2])
    v = 0
    while True:
        v += 1
        cache.save("fisher", "k", {"v": torch.full((500_000,), tag + v, dtype=torch.float64), "tag": tag})
        if len(sys.argv) > 3 and v >= int(sys.argv[3]):
            break
""")


def start_writer(root, tag, count=None):
    args = [sys.executable, "-c", WRITER, str(root), str(tag)] + ([str(count)] if count else [])
    return subprocess.Popen(args, cwd=ROOT, env=dict(os.environ, OMP_NUM_THREADS="1"))


def entry_is_complete(cache) -> dict:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a "damaged" warning would fail here
        obj = cache.load("fisher", "k")
    assert obj is not None
    assert torch.all(obj["v"] == obj["v"][0]) and obj["v"].numel() == 500_000
    return obj


def test_a_writer_killed_mid_write_leaves_a_complete_entry(tmp_path, delay_s=0.5):
    proc = start_writer(tmp_path, 0.0)
    try:
        path = Cache(tmp_path).path("fisher", "k")
        deadline = time.monotonic() + 60
        while not os.path.exists(path):
            assert time.monotonic() < deadline and proc.poll() is None, "the writer never wrote an entry"
            time.sleep(0.02)
        time.sleep(delay_s)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    entry_is_complete(Cache(tmp_path))
    leftovers = [n for n in os.listdir(os.path.dirname(path)) if n != "k.pt"]
    assert all(n.endswith(".tmp") for n in leftovers), leftovers  # at most the killed write's temporary file


def test_two_processes_writing_one_key_agree_on_a_complete_entry(tmp_path):
    procs = [start_writer(tmp_path, tag, count=5) for tag in (1000.0, 2000.0)]
    for p in procs:
        assert p.wait(timeout=120) == 0
    obj = entry_is_complete(Cache(tmp_path))
    assert obj["tag"] in (1000.0, 2000.0) and float(obj["v"][0]) == obj["tag"] + 5
