"""benchmarks.evidence.fuse_quality: its statistics against scipy, and a tiny end-to-end run writing the JSON."""
import importlib.util
import json
import math
from pathlib import Path

import pytest

# Loaded by path: a site-packages package named ``benchmarks`` can shadow the repository's.
_PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "evidence" / "fuse_quality.py"
_spec = importlib.util.spec_from_file_location("_fuse_quality_under_test", _PATH)
Q = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(Q)

RANKINGS = [  # (id, a, b)
    ("perfect", [0.1, 0.5, 0.9, 0.3], [1, 5, 9, 3]),
    ("reversed", [3, 2, 1, 0], [0.2, 0.4, 0.6, 0.8]),
    ("ties", [0.0, 0.0, 0.5, 0.5, 1.0], [0.91, 0.95, 0.95, 0.80, 0.99]),
    ("mixture-weights", [0.0, 0.0, 0.46, 0.0, 0.54, 0.0], [0.93, 0.72, 0.95, 0.91, 0.96, 0.83]),
]


@pytest.mark.parametrize("a,b", [r[1:] for r in RANKINGS], ids=[r[0] for r in RANKINGS])
def test_spearman_matches_scipy(a, b):
    stats = pytest.importorskip("scipy.stats")
    assert Q.spearman(a, b) == pytest.approx(stats.spearmanr(a, b).statistic, abs=1e-12)


def test_spearman_of_a_constant_is_nan():
    assert math.isnan(Q.spearman([1, 1, 1], [1, 2, 3]))


@pytest.mark.parametrize("truth,bar", [([0.9, 0.8, 0.7, 0.6], 0.9), ([0.5] * 8, 0.5),
                                       ([0.1, 0.9, 0.8, 0.7, 0.2, 0.3, 0.4, 0.5], 0.8), ([0.3, 0.2, 0.1], 0.3)])
def test_top_quartile_bar(truth, bar):
    assert Q.top_quartile(truth) == bar


def test_wilson_and_t_interval():
    lo, hi = Q.wilson(8, 8)
    assert hi == 1.0 and lo == pytest.approx(0.6756, abs=1e-3)      # the textbook value for 8/8
    lo, hi = Q.wilson(0, 10)
    assert lo == 0.0 and hi == pytest.approx(0.2775, abs=1e-3)
    m, half = Q.mean_interval([1.0, 2.0, 3.0])
    assert m == 2.0 and half == pytest.approx(4.303 * 1.0 / math.sqrt(3))
    assert Q.mean_interval([0.5]) == (0.5, None)


@pytest.mark.parametrize("weight_loss", ["mixture", "own"])
def test_tiny_run_writes_the_json(tmp_path, capsys, weight_loss):
    path = tmp_path / "q.json"
    assert Q.main(["--seeds", "2", "--candidates", "3", "--channels", "2", "--layers", "1", "--steps", "4",
                   "--rounds", "2", "--weight-loss", weight_loss, "--json", str(path)]) == 0
    out = json.loads(path.read_text())
    assert out["settings"]["weight_loss"] == weight_loss
    for key in ("top_quartile_rate", "chance", "spearman_mean", "seeds"):
        assert key in out
    assert out["seeds"] == 2 and len(out["records"]) == 2 and 1 / 3 <= out["chance"] <= 1
    r = out["records"][0]
    assert r["top_quartile"] == (r["pick_accuracy"] >= Q.top_quartile(r["standalone_accuracy"]))
    assert "FUSE selection quality: 2 seeds" in capsys.readouterr().out


class _Stop(Exception):
    pass


def test_quick_sets_defaults_that_options_override(monkeypatch):
    seen = {}

    def stop(seed, args, data):
        seen.update(vars(args))
        raise _Stop
    monkeypatch.setattr(Q, "run_seed", stop)
    monkeypatch.setattr(Q, "load_digits", lambda: None)
    with pytest.raises(_Stop):
        Q.main(["--quick", "--seeds", "1"])
    assert seen["seeds"] == 1 and seen["candidates"] == Q.QUICK["candidates"] and seen["layers"] == 1
