"""benchmarks/evidence/celltable.py: resumable units, the CSV table and its loader, the fair test's arithmetic."""
import argparse
import itertools
import json
import os
import statistics

import numpy as np
import pytest
import torch

from benchmarks.evidence import celltable as ct
from ftdfast.distance import DistanceMatrix
from ftdfast.nas import NB201Genotype, NB201Table

CELLS = [NB201Genotype.from_string(s) for s in ("|nor_conv_1x1~0|+|skip_connect~0|none~1|",
                                                "|avg_pool_3x3~0|+|nor_conv_3x3~0|skip_connect~1|")]


def _args(out, **kw):
    base = dict(out=str(out), train=24, val=8, test=8, size=8, epochs=2, channels=2, lr=1e-3, batch_size=8)
    return argparse.Namespace(**{**base, **kw})


@pytest.fixture
def splits():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(40, 1, 8, 8, generator=g)
    y = torch.arange(40) % 3
    return {"toy": ct.Split(x[:24], y[:24], x[24:32], y[24:32], x[32:], y[32:], 3)}


def test_cell_ids_are_the_op_indices():
    assert ct.cell_id(CELLS[0]) == "210" and ct.cell_id(CELLS[1]) == "431"
    assert len({ct.cell_id(g) for g in ct.SPACE.genotypes()}) == 125


def test_a_done_unit_is_skipped(tmp_path, splits):
    args = _args(tmp_path)
    done = ct.unit_path(args.out, "toy", CELLS[0], 0)
    os.makedirs(os.path.dirname(done))
    sentinel = {"task": "toy", "cell": str(CELLS[0]), "seed": 0, "val": [1.0], "test": [2.0],
                "settings": ct.settings_of(args)}
    with open(done, "w") as f:
        json.dump(sentinel, f)
    assert ct.run_units([("toy", g, 0) for g in CELLS], splits, args, "test") == 1
    with open(done) as f:
        assert json.load(f) == sentinel                        # untouched
    with open(ct.unit_path(args.out, "toy", CELLS[1], 0)) as f:
        rec = json.load(f)
    assert rec["cell"] == str(CELLS[1]) and len(rec["val"]) == len(rec["test"]) == 2
    assert all(0 <= a <= 100 for a in rec["val"] + rec["test"])
    assert ct.run_units([("toy", g, 0) for g in CELLS], splits, args, "test") == 0
    with pytest.raises(SystemExit, match="made with settings"):
        ct.run_units([("toy", CELLS[0], 0)], splits, _args(tmp_path, epochs=3), "test")


def test_an_interrupted_write_leaves_no_file(tmp_path, splits, monkeypatch):
    args = _args(tmp_path)

    def interrupted(src, dst):
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr("ftdfast.atomic.os.replace", interrupted)
        with pytest.raises(KeyboardInterrupt):
            ct.run_units([("toy", CELLS[0], 0)], splits, args, "test")
    folder = os.path.join(args.out, "toy")
    assert os.listdir(folder) == []                           # neither the unit nor a temporary file
    assert ct.run_units([("toy", CELLS[0], 0)], splits, args, "test") == 1   # the rerun trains it


def test_a_unit_is_a_function_of_its_seed(tmp_path, splits):
    args = _args(tmp_path)
    a, b = (ct.train_unit(splits["toy"], CELLS[1], 0, args, "toy") for _ in range(2))
    assert a["val"] == b["val"] and a["train_loss"] == b["train_loss"]


def _record(task, cell, seed, val, test):
    return {"task": task, "cell": str(cell), "seed": seed, "val": val, "test": test,
            "settings": {"epochs": len(val)}}


def test_csv_round_trip(tmp_path):
    recs = [_record("mnist10", CELLS[0], 0, [50.0, 70.0, 60.0], [40.0, 45.0, 55.0]),
            _record("mnist10", CELLS[1], 0, [80.0, 80.0, 75.0], [81.0, 82.0, 83.0]),
            _record("cifar10", CELLS[0], 0, [10.0, 20.0, 30.0], [11.0, 21.0, 31.0]),
            _record("cifar10", CELLS[1], 0, [30.0, 20.0, 10.0], [31.0, 21.0, 11.0]),
            _record("cifar10", CELLS[1], 1, [1.0, 2.0, 3.0], [4.0, 5.0, 6.0])]
    path = str(tmp_path / "t.csv")
    ct.write_csv(recs, path)
    with open(path) as f:
        lines = f.read().splitlines()
    assert lines[0] == "task,cell,seed,val_1,val_2,val_3,test_1,test_2,test_3,val,test,best_epoch"
    assert lines[1] == f"mnist10,{CELLS[0]},0,50.00,70.00,60.00,40.00,45.00,55.00,60.00,55.00,2"
    assert lines[2].endswith(",75.00,83.00,1")                # a tie at the top goes to the first epoch
    t = ct.load_table(path)
    assert ct.table_tasks(t) == ["mnist10", "cifar10"] and len(t) == 2
    assert t.accuracy(CELLS[1], "cifar10_val") == 10.0 and t.accuracy(CELLS[0], "mnist10_test") == 55.0
    assert ct.load_table(path, seed=1).values("cifar10_test") == [6.0]
    with pytest.raises(SystemExit, match="different settings"):
        ct.write_csv(recs + [{**recs[0], "settings": {"epochs": 2}}], path)
    ct.write_csv(recs[:3], path)
    with pytest.raises(SystemExit, match="lacks 1"):
        ct.load_table(path)


# ------------------------------------------------------------------------------------------ the fair test
WEIGHTS = {   # a task's accuracy of a cell: the sum of its operations' weights (so the best cell is clear)
    "a": {"none": 0, "skip_connect": 1, "nor_conv_1x1": 5, "nor_conv_3x3": 2, "avg_pool_3x3": 0},
    "b": {"none": 0, "skip_connect": 1, "nor_conv_1x1": 4, "nor_conv_3x3": 1, "avg_pool_3x3": 0},
    "c": {"none": 0, "skip_connect": 0, "nor_conv_1x1": 0, "nor_conv_3x3": 3, "avg_pool_3x3": 5},
}


def _synthetic_table() -> NB201Table:
    cells = list(ct.SPACE.genotypes())
    values = {}
    for t, w in WEIGHTS.items():
        acc = [float(sum(w[op] for op in g.ops)) + 0.001 * k for k, g in enumerate(cells)]   # no ties
        values[f"{t}_val"] = acc
        values[f"{t}_test"] = [a + 1.0 for a in acc]
    return NB201Table(cells, values, source="synthetic")


def test_fair_test_by_hand():
    table = _synthetic_table()
    # best cells: a -> conv1x1 x3, b -> conv1x1 x3, c -> avg_pool x3; distances: a's closest is c, b's is a
    d = np.array([[0, 1, 3], [2, 0, 3], [1, 3, 0]], dtype=float)   # rows sources, columns targets
    dist = DistanceMatrix.from_per_seed(["a", "b", "c"], [d, d + 0.1])
    res = ct.fair_test(table, dist, [1, 125])
    assert res["dictionary"]["a"] == "|nor_conv_1x1~0|+|nor_conv_1x1~0|nor_conv_1x1~1|"
    one, full = res["by_n"]["1"]["targets"]["a"], res["by_n"]["125"]["targets"]["a"]
    assert one["choice"] == "c" and one["oracle"] == "b" and one["choice_per_distance_seed"] == ["c", "c"]
    # N = 1: a random cell of the space, its mean; the restricted space of one operation holds one cell
    conv1 = table.accuracy("|nor_conv_1x1~0|+|nor_conv_1x1~0|nor_conv_1x1~1|", "a_test")
    pool = table.accuracy("|avg_pool_3x3~0|+|avg_pool_3x3~0|avg_pool_3x3~1|", "a_test")
    assert one["payoff"] == {"b": pytest.approx(conv1), "c": pytest.approx(pool)}
    assert one["general"] == pytest.approx(statistics.fmean(table.values("a_test")))
    assert one["regret_distance"] == pytest.approx(conv1 - pool)
    assert one["regret_random"] == pytest.approx((conv1 - pool) / 2)
    # N = 125: the general space finds the table's best cell
    assert full["general"] == pytest.approx(max(table.values("a_test"))) and full["regret_general"] <= 0
    assert one["spearman_neg_distance_payoff"] == pytest.approx(-1.0)
    b = res["by_n"]["1"]["targets"]["b"]
    assert b["choice"] == "a" and b["regret_distance"] == 0


def test_permutation_p_against_enumeration():
    payoffs = [[1.0, 2.0, 3.0], [5.0, 1.0], [0.0, 4.0, 4.0, 2.0]]
    chosen = [3.0, 1.0, 4.0]
    observed = statistics.fmean(chosen)
    allp = [statistics.fmean(c) for c in itertools.product(*payoffs)]
    assert ct._permutation_p(payoffs, chosen) == pytest.approx(sum(p >= observed for p in allp) / len(allp))


def test_bootstrap_interval_covers_the_mean():
    v = [1.0, 2.0, 3.0, 10.0]
    lo, hi = ct._bootstrap(v)
    assert 1.0 <= lo < statistics.fmean(v) < hi <= 10.0
    assert ct._bootstrap([2.0, 2.0]) == (2.0, 2.0)


def test_report_of_the_synthetic_table():
    table = _synthetic_table()
    rep = ct.report(table, "synthetic")
    conv1 = "|nor_conv_1x1~0|+|nor_conv_1x1~0|nor_conv_1x1~1|"
    assert rep["best"]["a"]["cell"] == rep["best"]["b"]["cell"] == conv1 and rep["best"]["a"]["ops"] == ["nor_conv_1x1"]
    assert rep["best"]["c"]["cell"] == "|avg_pool_3x3~0|+|avg_pool_3x3~0|avg_pool_3x3~1|"
    assert rep["distinct_best_cells"] == 2 == rep["distinct_best_op_sets"]
    assert rep["best_cell_ranks"]["a"] == {"a": 1, "b": 1, "c": pytest.approx(1 + sum(
        v > table.accuracy(conv1, "c_val") for v in table.values("c_val")))}
    assert rep["spearman_val_test_within_task"]["a"] == {"all": pytest.approx(1.0), "top25": pytest.approx(1.0)}
    stats = pytest.importorskip("scipy.stats")
    rho = stats.spearmanr(table.values("a_test"), table.values("c_test")).statistic
    assert rep["spearman_test_all_cells"]["a|c"] == pytest.approx(rho)


def test_seed_noise_by_hand(tmp_path):
    cells = list(ct.SPACE.genotypes())[:3]
    seeds = {0: ([90.0, 80.0, 70.0], [50.0, 60.0, 70.0]), 1: ([85.0, 80.0, 90.0], [52.0, 57.0, 70.0])}
    recs = [_record("mnist10", g, s, [seeds[s][0][k]], [seeds[s][1][k]]) for s in seeds for k, g in enumerate(cells)]
    path = str(tmp_path / "t.csv")
    ct.write_csv(recs, path)
    noise = ct.seed_noise(path)["mnist10"]
    assert noise["cells"] == 3 and noise["mean_abs_test_diff"] == pytest.approx((2 + 3 + 0) / 3)
    # ranks (3, 2, 1) against (2, 1, 3): 1 - 6 * (1 + 1 + 4) / (3 * 8) = -0.5
    assert noise["spearman_val_seed0_seed1"] == pytest.approx(-0.5)
    assert noise["spearman_test_seed0_seed1"] == pytest.approx(1.0)
    assert noise["seed0_best_is_best_by_mean"] and noise["best_by_mean"] == str(cells[0])


def test_tanas_space_is_the_closest_tasks_best_cell():
    table = _synthetic_table()
    d = np.array([[0, 1, 3], [2, 0, 3], [1, 3, 0]], dtype=float)   # a's closest is c, b's is a, c's is a
    dist = DistanceMatrix.from_per_seed(["a", "b", "c"], [d, d + 0.1])
    closest, space = ct.tanas_space(table, dist, "a")
    assert closest == "c" and space.ops == ("avg_pool_3x3",) and space.size() == 1
    closest, space = ct.tanas_space(table, dist, "b")
    assert closest == "a" and space.ops == ("nor_conv_1x1",)


SEARCH_RECORDS = [  # (target, seed, method, pick, gain, percentile, steps, cpu)
    ("a", 0, "paper", 80.0, 5.0, 90.0, 500, 2.0), ("a", 0, "random search", 70.0, 1.0, 50.0, 512, 1.0),
    ("a", 1, "paper", 75.0, -1.0, 60.0, 500, 2.0), ("a", 1, "random search", 76.0, 2.0, 70.0, 512, 1.0),
    ("b", 0, "paper", 90.0, 3.0, 95.0, 500, 2.0), ("b", 0, "random search", 85.0, 0.0, 80.0, 512, 1.0),
    ("b", 1, "paper", 60.0, 0.0, 10.0, 500, 2.0),  # random search did not finish (b, 1): the unit is left out
]


def test_search_summary_pairs_by_target_and_seed():
    from scipy import stats
    recs = [dict(target=t, seed=s, method=m, pick=p, gain=g, percentile=q, weight_steps=w, cpu_seconds=c)
            for t, s, m, p, g, q, w, c in SEARCH_RECORDS]
    out = ct.search_summary(recs)
    assert out["units"] == 3 and out["targets"] == ["a", "b"] and list(out["methods"]) == ["paper", "random search"]
    diff = [10.0, -1.0, 5.0]
    half = stats.t.ppf(0.975, 2) * statistics.stdev(diff) / np.sqrt(3)
    got = out["methods"]["paper"]["minus_random_search"]
    assert got["mean"] == pytest.approx(statistics.fmean(diff)) and got["n"] == 3
    assert got["ci95"] == pytest.approx([statistics.fmean(diff) - half, statistics.fmean(diff) + half])
    assert out["methods"]["paper"]["pick"]["mean"] == pytest.approx(statistics.fmean([80.0, 75.0, 90.0]))
    assert out["methods"]["random search"]["cpu_seconds"] == 3.0
    assert "minus_random_search" not in out["methods"]["random search"]
    assert "| paper | 81.67 |" in ct.search_markdown(out)
