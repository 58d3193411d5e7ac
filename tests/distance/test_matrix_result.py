"""DistanceMatrix: statistics, closest source, Markdown, JSON files, figures and the MDS atlas."""
import json
import math
import os
import sys

import numpy as np
import pytest

from ftdfast.distance import DistanceMatrix, classical_mds

TASKS = ["zero", "one", "two|3", "four"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def random_matrix(seed=0, S=3, K=4, nan_cells=()):
    rng = np.random.default_rng(seed)
    per_seed = rng.uniform(0.05, 0.95, size=(S, K, K))
    for idx in nan_cells:
        per_seed[idx] = np.nan
    return per_seed


def cell_stats(values):
    """Mean and std of one cell by hand: ddof=1 over the present values, NaN std for one value (undefined)."""
    present = [v for v in values if not math.isnan(v)]
    if not present:
        return math.nan, math.nan
    m = sum(present) / len(present)
    if len(present) == 1:
        return m, math.nan
    return m, math.sqrt(sum((v - m) ** 2 for v in present) / (len(present) - 1))


def test_stats_match_a_cell_by_cell_computation():
    per_seed = random_matrix(1, nan_cells=[(0, 1, 2), (1, 1, 2), (2, 1, 2), (0, 3, 0), (2, 0, 3), (1, 0, 3)])
    m = DistanceMatrix(TASKS, per_seed, {"seeds": [0, 1, 2], "arch": "lenet", "method": "fisher"})
    assert m.per_seed.dtype == np.float64 and m.per_seed.shape == (3, 4, 4)
    for a in range(4):
        for b in range(4):
            mean, std = cell_stats(per_seed[:, a, b])
            np.testing.assert_allclose([m.mean[a, b], m.std[a, b]], [mean, std], rtol=1e-13, atol=0, equal_nan=True)
    assert math.isnan(m.mean[1, 2]) and math.isnan(m.std[1, 2])  # all seeds missing
    assert math.isnan(m.std[0, 3]) and m.mean[0, 3] == per_seed[0, 0, 3]  # one seed left: std undefined
    # and with NumPy's nan-aware functions where every cell has 3 values
    full = random_matrix(2)
    m = DistanceMatrix(TASKS, full)
    np.testing.assert_allclose(m.mean, np.mean(full, axis=0), rtol=1e-14)
    np.testing.assert_allclose(m.std, np.std(full, axis=0, ddof=1), rtol=1e-13)


def test_single_seed_has_no_std_and_read_only_arrays(tmp_path):
    one = random_matrix(3, S=1)
    m = DistanceMatrix.from_per_seed(TASKS, one[0], {"seeds": [7]})
    assert m.num_seeds == 1 and m.num_tasks == 4
    np.testing.assert_array_equal(m.mean, one[0])
    assert np.isnan(m.std).all()
    text = m.to_markdown()
    assert "± 0.000" not in text and f"{one[0, 1, 0]:.3f} ± n/a" in text and "One seed" in text
    m.save(tmp_path / "one.json")
    payload = json.loads((tmp_path / "one.json").read_text())
    assert all(v is None for row in payload["std"] for v in row)
    c = m.closest("zero")
    assert c.separated is None and math.isnan(c.gap_in_std) and c.wins == 1 and c.seeds == 1
    assert payload["closest"]["zero"]["separated"] is None and payload["closest"]["zero"]["gap_in_pooled_std"] is None
    with pytest.raises(ValueError):
        m.per_seed[0, 0, 0] = 1.0
    with pytest.raises(ValueError):
        m.mean[0, 0] = 1.0


def test_from_per_seed_lists():
    per_seed = random_matrix(4, S=3)
    np.testing.assert_array_equal(DistanceMatrix.from_per_seed(TASKS, list(per_seed)).per_seed, per_seed)
    with pytest.raises(ValueError, match="per_seed is empty"):
        DistanceMatrix.from_per_seed(TASKS, [])
    with pytest.raises(ValueError, match="of one shape"):
        DistanceMatrix.from_per_seed(TASKS, [np.zeros((4, 4)), np.zeros((3, 3))])


def test_constructor_validation():
    good = random_matrix(5, S=2)
    with pytest.raises(ValueError, match=r"shape \(S, K, K\) = \(S, 3, 3\).*got \[2, 4, 4\]"):
        DistanceMatrix(TASKS[:3], good)
    with pytest.raises(ValueError, match="unique; repeated: \\['one'\\]"):
        DistanceMatrix(["zero", "one", "one", "four"], good)
    with pytest.raises(ValueError, match="non-empty strings"):
        DistanceMatrix(["zero", "", "two", "four"], good)
    bad = good.copy()
    bad[1, 2, 0] = np.inf
    with pytest.raises(ValueError, match=r"per_seed\[1\] from 'two\|3' to 'zero' is infinite"):
        DistanceMatrix(TASKS, bad)
    with pytest.raises(ValueError, match="one seed per matrix of per_seed \\(2\\)"):
        DistanceMatrix(TASKS, good, {"seeds": [0, 1, 2]})


def test_closest_excludes_the_target_and_skips_missing():
    mean = np.array([[0.0, 0.2, 0.9, 0.5],
                     [0.3, 0.0, 0.1, 0.5],
                     [0.4, 0.6, 0.0, 0.2],
                     [0.1, 0.6, np.nan, 0.0]])
    m = DistanceMatrix(TASKS, mean[None])
    assert m.closest("zero") == "four"   # column 0: 0.3, 0.4, 0.1 (self 0.0 excluded)
    assert m.closest("one") == "zero"    # column 1: 0.2, 0.6, 0.6
    assert m.closest("two|3") == "one"   # column 2: 0.9, 0.1, NaN skipped
    assert m.closest("four") == "two|3"  # column 3: 0.5, 0.5, 0.2
    assert m.closest_table() == {"zero": "four", "one": "zero", "two|3": "one", "four": "two|3"}
    with pytest.raises(ValueError, match="unknown task 'five'"):
        m.closest("five")
    ties = DistanceMatrix(["a", "b", "c"], np.full((1, 3, 3), 0.5))
    assert ties.closest("c") == "a"  # first in task order
    missing = np.full((1, 3, 3), np.nan)
    missing[0, 0, 1] = 0.4
    gaps = DistanceMatrix(["a", "b", "c"], missing)
    assert gaps.closest_table() == {"a": None, "b": "a", "c": None}
    with pytest.raises(ValueError, match="no source task has a distance to 'c' \\(all are missing\\)"):
        gaps.closest("c")
    with pytest.raises(ValueError, match="only task"):
        DistanceMatrix(["a"], np.zeros((1, 1, 1))).closest("a")


def test_markdown_table():
    per_seed = np.array([[[0.0, 0.25], [0.5, np.nan]], [[0.0, 0.35], [0.7, np.nan]]])
    m = DistanceMatrix(["a", "b|c"], per_seed)
    lines = m.to_markdown().splitlines()
    assert len(lines) == 6 and lines[4] == "" and lines[5].startswith("Mean ± std over 2 seeds")
    assert lines[0] == "| source \\ target | a | b\\|c |"
    assert lines[1] == "|---|---:|---:|"
    sd_ab = np.std([0.25, 0.35], ddof=1)
    assert lines[2] == f"| a | 0.000 ± 0.000 | **0.300 ± {sd_ab:.3f}** |"
    assert lines[3] == f"| b\\|c | **0.600 ± {np.std([0.5, 0.7], ddof=1):.3f}** | n/a |"
    assert "0.30000 ± " in m.to_markdown(precision=5)


def separation_matrix():
    """Target t (column 0): s1 wins in every seed by ~0.1 (separated); s2 is 0.001 behind s1 on average
    but wins one seed of three (a tie within noise)."""
    col = np.array([[0.0, 0.20, 0.23, 0.45],
                    [0.0, 0.22, 0.20, 0.52],
                    [0.0, 0.21, 0.23, 0.47]])
    per_seed = np.zeros((3, 4, 4))
    per_seed[:, :, 0] = col
    per_seed[:, :, 1:] = 0.5
    for s in range(3):
        np.fill_diagonal(per_seed[s], 0.0)
    return DistanceMatrix(["t", "s1", "s2", "s3"], per_seed)


def test_closest_reports_the_gap_in_pooled_std_wins_and_ties():
    m = separation_matrix()
    c = m.closest("t")
    assert c == "s1" and c.runner_up == "s2"
    d1, d2 = np.array([0.20, 0.22, 0.21]), np.array([0.23, 0.20, 0.23])
    pooled = math.sqrt((d1.std(ddof=1) ** 2 + d2.std(ddof=1) ** 2) / 2)
    assert c.gap == pytest.approx(d2.mean() - d1.mean()) and c.pooled_std == pytest.approx(pooled)
    assert c.gap_in_std == pytest.approx((d2.mean() - d1.mean()) / pooled)
    assert c.wins == 2 and c.seeds == 3
    # paired 95% interval of s2 - s1 = (0.03, -0.02, 0.02) includes 0: a tie; s3 is separated
    assert c.separated is False and c.ties == ["s2"]
    table = m.to_markdown().splitlines()
    assert table[2].split(" | ")[0] == "| t" and "**0.210 ±" in table[3] and "≈ 0.220 ±" in table[4]
    assert table[5].split(" | ")[1].startswith("0.480")  # column t: s3 is separated from s1 (no mark)
    rows = m.closest_markdown().splitlines()
    assert rows[2].startswith("| t | s1 | 0.210 ± ") and rows[2].endswith(f"| {c.gap_in_std:.2f} | 2/3 | no (tie) |")


def test_a_clear_win_is_separated():
    per_seed = np.zeros((4, 3, 3))
    per_seed[:, 1, 0] = [0.10, 0.12, 0.11, 0.10]
    per_seed[:, 2, 0] = [0.30, 0.33, 0.29, 0.31]
    m = DistanceMatrix(["t", "near", "far"], per_seed)
    c = m.closest("t")
    assert c == "near" and c.separated is True and c.ties == [] and c.wins == 4 and c.gap_in_std > 10


def test_json_round_trip(tmp_path):
    per_seed = random_matrix(6, nan_cells=[(1, 2, 3)])
    meta = {"arch": "small_cnn", "method": "fisher", "seeds": [0, 1, 2], "config": {"epochs": 2, "lr": 1e-3}}
    m = DistanceMatrix(TASKS, per_seed, meta)
    path = tmp_path / "sub" / "dist.json"
    m.save(path)
    assert os.listdir(path.parent) == ["dist.json"]  # no temporary file left behind
    payload = json.loads(path.read_text(), parse_constant=lambda c: pytest.fail(f"non-strict JSON constant {c}"))
    assert payload["format"] == "ftdfast.DistanceMatrix" and payload["version"] == 1
    assert payload["per_seed"][1][2][3] is None
    back = DistanceMatrix.load(path)
    assert back.tasks == TASKS and back.meta == meta
    np.testing.assert_array_equal(back.per_seed, m.per_seed)  # NaN == NaN here
    np.testing.assert_array_equal(back.mean, m.mean)
    np.testing.assert_array_equal(back.std, m.std)
    m.save(path)  # overwrite in place
    assert DistanceMatrix.load(str(path)).tasks == TASKS


def test_save_refuses_meta_that_is_not_json(tmp_path):
    m = DistanceMatrix(TASKS, random_matrix(7, S=1), {"model": object()})
    with pytest.raises(ValueError, match="meta must be JSON-serializable"):
        m.save(tmp_path / "x.json")
    assert not os.listdir(tmp_path)


@pytest.mark.parametrize("content, message", [
    ('{"format": "ftdfast.DistanceMatrix", "version": 1, "tasks": ["a"', r"is not valid JSON \(.* at line 1"),
    ('[1, 2, 3]', "is not a DistanceMatrix file"),
    ('{"format": "ftdfast.DistanceMatrix", "version": 99, "tasks": [], "per_seed": [], "meta": {}}',
     "format version 99; this ftdfast reads up to 1: upgrade ftdfast"),
    ('{"format": "ftdfast.DistanceMatrix", "version": 1, "tasks": ["a", "b"], "meta": {}}',
     r"lacks the field\(s\) \['per_seed'\]"),
    ('{"format": "ftdfast.DistanceMatrix", "version": 1, "tasks": ["a", "b"], "per_seed": [[[0, 1], [1, 0]], '
     '[[0, 1]]], "meta": {}}', "'per_seed' must be S nested K x K lists"),
    ('{"format": "ftdfast.DistanceMatrix", "version": 1, "tasks": ["a", "b", "c"], "per_seed": [[[0, 1], '
     '[1, 0]]], "meta": {}}', r"shape \(S, K, K\) = \(S, 3, 3\).*got \[1, 2, 2\]"),
    ('{"format": "ftdfast.DistanceMatrix", "version": 1, "tasks": ["a", 2], "per_seed": [], "meta": {}}',
     "'tasks' must be a list of strings"),
    ('{"format": "ftdfast.DistanceMatrix", "version": 1, "tasks": ["a"], "per_seed": [[["x"]]], "meta": {}}',
     "'per_seed' must be"),
])
def test_load_malformed_files(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=message) as info:
        DistanceMatrix.load(path)
    assert str(path) in str(info.value)


def test_load_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no DistanceMatrix file at .*nowhere.json"):
        DistanceMatrix.load(tmp_path / "nowhere.json")


def test_heatmaps_and_atlas_are_pngs(tmp_path):
    pytest.importorskip("matplotlib")  # an optional dependency: only the figures need it
    m = DistanceMatrix(TASKS, random_matrix(8, nan_cells=[(0, 1, 1), (1, 1, 1), (2, 1, 1)]),
                       {"arch": "lenet", "method": "fisher"})
    paths = m.plot_heatmaps(tmp_path / "figs" / "lenet")
    assert paths == [str(tmp_path / "figs" / "lenet_mean.png"), str(tmp_path / "figs" / "lenet_std.png")]
    atlas = m.plot_atlas(tmp_path / "atlas.png")
    for p in paths + [atlas]:
        with open(p, "rb") as f:
            assert f.read(8) == PNG_MAGIC
        assert os.path.getsize(p) > 1000
    assert sorted(os.listdir(tmp_path / "figs")) == ["lenet_mean.png", "lenet_std.png"]


def test_plots_without_matplotlib_say_how_to_install(tmp_path, monkeypatch):
    for name in ("matplotlib", "matplotlib.figure", "matplotlib.backends", "matplotlib.backends.backend_agg"):
        monkeypatch.setitem(sys.modules, name, None)
    m = DistanceMatrix(TASKS, random_matrix(9, S=1))
    with pytest.raises(ImportError, match="pip install matplotlib"):
        m.plot_heatmaps(tmp_path / "x")
    with pytest.raises(ImportError, match="pip install matplotlib"):
        m.plot_atlas(tmp_path / "a.png")


def pairwise(X):
    return np.sqrt(((X[:, None, :] - X[None, :, :]) ** 2).sum(-1))


def test_mds_recovers_a_planar_configuration():
    rng = np.random.default_rng(10)
    points = rng.normal(size=(7, 2)) * [3.0, 0.5] + [10.0, -4.0]
    D = pairwise(points)
    # an antisymmetric perturbation vanishes in the symmetrized mean; the diagonal is ignored
    noise = rng.normal(size=(7, 7)) * 0.05
    per_seed = np.stack([D + noise - noise.T, D - noise + noise.T])
    per_seed[:, np.arange(7), np.arange(7)] = 0.3
    m = DistanceMatrix([f"t{k}" for k in range(7)], per_seed)
    np.testing.assert_allclose(m.symmetrized(), D, atol=1e-12)
    X = m.mds_coordinates()
    assert X.shape == (7, 2)
    np.testing.assert_allclose(pairwise(X), D, atol=1e-9)
    np.testing.assert_allclose(X.mean(axis=0), 0.0, atol=1e-9)  # centered
    # 1-D: the main axis; more dims than tasks: zero columns
    assert m.mds_coordinates(1).shape == (7, 1)
    X9 = classical_mds(D, dim=9)
    assert X9.shape == (7, 9) and np.allclose(X9[:, 7:], 0.0)
    np.testing.assert_allclose(pairwise(X9), D, atol=1e-9)


def test_mds_errors():
    with pytest.raises(ValueError, match="symmetric"):
        classical_mds(np.array([[0.0, 1.0], [2.0, 0.0]]))
    with pytest.raises(ValueError, match="square"):
        classical_mds(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="dim must be a positive integer"):
        classical_mds(np.zeros((2, 2)), dim=0)
    per_seed = np.full((1, 3, 3), 0.5)
    per_seed[0, 0, 2] = per_seed[0, 2, 0] = np.nan
    with pytest.raises(ValueError, match="'a' - 'c' is missing in both directions"):
        DistanceMatrix(["a", "b", "c"], per_seed).mds_coordinates()
    per_seed[0, 2, 0] = 0.4  # one direction is enough: it is used for the pair
    m = DistanceMatrix(["a", "b", "c"], per_seed)
    assert m.symmetrized()[0, 2] == m.symmetrized()[2, 0] == 0.4
    assert m.mds_coordinates().shape == (3, 2)


def test_repr_and_index():
    m = DistanceMatrix(TASKS, random_matrix(11, S=2), {"arch": "lenet", "method": "fisher"})
    assert repr(m) == "DistanceMatrix(4 tasks, 2 seeds, arch='lenet', method='fisher')"
    assert m.index("four") == 3
