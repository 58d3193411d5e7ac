"""``benchmarks/speed/bench_fuse.py``'s command line: ``--device`` (a clear error without a GPU, the device in the JSON)."""
import importlib.util
import json
from pathlib import Path

import pytest
import torch

# Loaded by path: a site-packages package named ``benchmarks`` can shadow the repository's.
_PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "speed" / "bench_fuse.py"
_spec = importlib.util.spec_from_file_location("_bench_fuse_under_test", _PATH)
bench_fuse = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench_fuse)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU is available here")
def test_device_cuda_without_gpu_fails_with_a_clear_message(tmp_path, capsys):
    out = tmp_path / "fuse.json"
    with pytest.raises(SystemExit) as exc:
        bench_fuse.main(["--device", "cuda", "--quick", "--out", str(out)])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "--device cuda: no CUDA GPU is available" in err and "torch.cuda.is_available() is False" in err
    assert not out.exists()


def test_device_cpu_quick_writes_the_device_into_the_json(tmp_path, capsys):
    out = tmp_path / "fuse.json"
    rc = bench_fuse.main(["--device", "cpu", "--quick", "--candidates", "2", "--layers", "1", "--repeats", "1",
                          "--out", str(out)])
    assert rc == 0
    assert "device cpu, 1 thread(s), median CPU time of 1 interleaved repeats" in capsys.readouterr().out
    d = json.loads(out.read_text())
    assert d["device"] == "cpu" and d["device_name"] is None and d["config"]["device"] == "cpu"
    assert d["clock"] == "CPU time" and d["config"]["repeats"] == 1 and d["config"]["size"] == 8
    e = d["scenarios"]["restricted"]
    assert e["check_ok"] and e["auto_fuses"] == [[0, 1]]
    assert all(e["timing"][ph]["ratio"] > 0 for ph in ("w", "alpha"))
