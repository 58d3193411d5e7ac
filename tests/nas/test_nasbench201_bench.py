"""benchmarks.evidence.nasbench201 end to end on a synthetic table and a tiny CIFAR-shaped archive: the weight-loss study
pairs its two FUSE variants on the same pools, and the diagnosis ranks every pick inside its own pool."""
import importlib.util
import itertools
import json
from pathlib import Path

import numpy as np
import pytest

from ftdfast.nas import NB201_OPS, NB201Genotype

# Loaded by path: a site-packages package named ``benchmarks`` can shadow the repository's.
_PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "evidence" / "nasbench201.py"
_spec = importlib.util.spec_from_file_location("benchmarks.evidence.nasbench201", _PATH)
B = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(B)

TINY = ["--train", "40", "--test", "20", "--size", "8", "--iterations", "1", "--candidates", "3", "--rounds", "2",
        "--w-steps", "2", "--channels", "2", "--batch-size", "8"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Every one of the 15,625 cells with a made-up accuracy (distinct, so ranks have no ties) and 10-class
    32x32 RGB images."""
    root = tmp_path_factory.mktemp("nb201")
    table = root / "table.csv"
    lines = ["index,cell,cifar10_val,cifar10_test,imagenet16_val"]
    for i, ops in enumerate(itertools.product(NB201_OPS, repeat=6)):
        made_up = [(i * k) % 15625 / 200 for k in (7919, 104729, 31)]
        lines.append(f"{i},{NB201Genotype(tuple(ops)).to_string()}," + ",".join(f"{a:.3f}" for a in made_up))
    table.write_text("\n".join(lines) + "\n")
    rng = np.random.default_rng(0)
    cifar = root / "c.npz"
    np.savez(cifar, x_train=rng.integers(0, 256, (60, 32, 32, 3), dtype=np.uint8),
             y_train=np.arange(60, dtype=np.uint8) % 10, x_test=rng.integers(0, 256, (30, 32, 32, 3), dtype=np.uint8),
             y_test=np.arange(30, dtype=np.uint8) % 10, classes=np.array([str(k) for k in range(10)]))
    return str(table), str(cifar)


def test_weight_loss_study_pairs_the_two_fuse_variants(files, tmp_path):
    table, cifar = files
    out = tmp_path / "s.json"
    assert B.main(["search", "--weight-loss-study", "--seeds", "2", "--table", table, "--cifar", cifar,
                   "--json", str(out)] + TINY) == 0
    rec = json.loads(out.read_text())["records"]
    assert {r["method"] for r in rec} == {"FUSE, general space", "FUSE, own losses, general space",
                                          "random search, general space"}
    # one pool of 3 with the same seed: the own-loss variant weighs the very candidates the mixture variant weighs
    assert B.SAME_POOLS["FUSE, own losses, general space"] == "FUSE, general space"


def test_diagnose_ranks_each_pick_in_its_pool(files, tmp_path):
    table, cifar = files
    out = tmp_path / "d.json"
    assert B.main(["diagnose", "--seeds", "1", "--alpha-steps", "20", "--few-alpha-steps", "2", "--table", table,
                   "--cifar", cifar, "--json", str(out)] + TINY) == 0
    t = B.load_nasbench201(table)
    records = json.loads(out.read_text())["records"]
    fuse = [r for r in records if r["method"] != "random search"]
    assert len(fuse) == 3 and {r["cells"][0] for r in fuse} == {fuse[0]["cells"][0]}   # the same pool, 3 variants
    for r in records:
        accs = [t.accuracy(NB201Genotype.from_string(c), "cifar10_test") for c in r["cells"]]
        assert 1 <= r["rank"] <= len(accs) and r["pool_best"] == max(accs)
        assert r["rank"] == 1 + sum(a > r["pick"] for a in accs) and r["chance_rank"] == (len(accs) + 1) / 2
    own = next(r for r in fuse if r["method"] == "FUSE, own losses")
    assert len(own["softmax_history"]) == 3           # every round runs under weight_loss="own"


def test_schedules_pairs_every_method_and_resumes(files, tmp_path, capsys):
    table, cifar = files
    out = tmp_path / "sched.json"
    args = ["schedules", "--seeds", "2", "--table", table, "--cifar", cifar, "--json", str(out)] + TINY
    assert B.main(args) == 0
    result = json.loads(out.read_text())
    rec = {(r["seed"], r["method"]): r for r in result["records"]}
    assert set(rec) == {(s, m) for s in (0, 1) for m in B.SCHEDULE_METHODS} and result["seeds"] == 2
    t = B.load_nasbench201(table)
    for s in (0, 1):
        random = rec[(s, "random search")]
        halving = rec[(s, "halving")]
        # one search seed per seed: halving weighs random search's pool, within random search's weight steps
        assert halving["pool"] == random["pool"] == 3 and halving["pool_mean"] == random["pool_mean"]
        for m in B.SCHEDULE_METHODS:
            r = rec[(s, m)]
            assert 0 < r["weight_steps"] <= random["weight_steps"]
            assert r["pick"] == t.accuracy(NB201Genotype.from_string(r["cell"]), "cifar10_test")
            assert r["gain"] == pytest.approx(r["pick"] - r["pool_mean"])
    diffs = [rec[(s, "paper")]["pick"] - rec[(s, "random search")]["pick"] for s in (0, 1)]
    assert result["summary"]["paper"]["minus_random_search"]["mean"] == pytest.approx(sum(diffs) / 2)
    assert "minus_random_search" not in result["summary"]["random search"]
    capsys.readouterr()
    assert B.main(args) == 0                              # everything done: resumes and runs nothing
    assert "seed 0" not in capsys.readouterr().out
    assert json.loads(out.read_text())["records"] == result["records"]
