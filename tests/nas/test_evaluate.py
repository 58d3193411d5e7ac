"""summarize_runs: the table over several search seeds, from row files written by compare."""
import json
import math
import statistics

import pytest

from ftdfast.nas.evaluate import summarize_runs


def _row(folder, name, method, accs, searched=True, search=10.0, dist=None):
    folder.mkdir(exist_ok=True)
    (folder / f"row_{name}.json").write_text(json.dumps({
        "method": method, "genotype": {"num_nodes": 3} if searched else None, "test_accuracy_per_seed": accs,
        "test_accuracy": statistics.fmean(accs), "search_seconds": search if searched else None,
        "distance_seconds": dist}))


def test_table_over_search_seeds(tmp_path):
    a, b, c = tmp_path / "s0", tmp_path / "s1", tmp_path / "s2"
    for folder, accs, dist in ((a, [0.5, 0.6], 4.0), (b, [0.7, 0.8], 6.0), (c, [0.6, 0.6], 5.0)):
        _row(folder, "ta_nas", "TA-NAS (ours)", accs, dist=dist)
    _row(a, "hand_vgg16", "vgg16", [0.9, 0.8, 0.85], searched=False)
    table = summarize_runs([str(a), str(b), str(c)], title="t")
    ta = next(line for line in table.splitlines() if line.startswith("| TA-NAS"))
    values = [0.5, 0.6, 0.7, 0.8, 0.6, 0.6]
    units = [0.55, 0.75, 0.6]
    half = 4.303 * statistics.stdev(units) / math.sqrt(3)
    want = (f"| TA-NAS (ours) | 3 | 2 | {100 * statistics.fmean(values):.2f} ± {100 * statistics.stdev(values):.2f} | "
            f"{100 * (statistics.fmean(units) - half):.2f} to {100 * (statistics.fmean(units) + half):.2f} | 10 | 5 |")
    assert ta == want
    vgg = next(line for line in table.splitlines() if line.startswith("| vgg16"))
    assert vgg.startswith("| vgg16 | - | 3 | 85.00 ± 5.00 |")


def test_one_unit_gives_na(tmp_path):
    _row(tmp_path / "s0", "ta_nas", "TA-NAS (ours)", [0.5])
    line = summarize_runs([str(tmp_path / "s0")]).splitlines()[2]
    assert "50.00 ± n/a | n/a |" in line


def test_no_rows(tmp_path):
    with pytest.raises(ValueError, match="no row_"):
        summarize_runs([str(tmp_path)])


def test_paired_differences_by_search_seed(tmp_path):
    """TA-NAS minus FUSE per search seed: +0.10, +0.20, +0.15 -> ahead; minus random: +0.1, -0.1, 0 -> a tie."""
    for k, (ta, fu, rs) in enumerate(((0.6, 0.5, 0.5), (0.8, 0.6, 0.9), (0.7, 0.55, 0.7))):
        folder = tmp_path / f"s{k}"
        _row(folder, "ta_nas", "TA-NAS (ours)", [ta - 0.01, ta + 0.01])
        _row(folder, "fuse_general", "FUSE, general space", [fu, fu])
        _row(folder, "random_general", "Random search, general space", [rs])
    _row(tmp_path / "s0", "hand_vgg16", "vgg16", [0.9, 0.8], searched=False)
    lines = summarize_runs([str(tmp_path / f"s{k}") for k in range(3)]).splitlines()
    fuse = next(x for x in lines if x.startswith("- TA-NAS minus FUSE"))
    diffs = [0.10, 0.20, 0.15]
    half = 4.303 * statistics.stdev(diffs) / math.sqrt(3)
    assert fuse == (f"- TA-NAS minus FUSE, general space, paired by search seed: +15.00 points (95% interval "
                    f"{100 * (0.15 - half):+.2f} to {100 * (0.15 + half):+.2f}: TA-NAS ahead; TA-NAS higher in 3 of "
                    "3 seeds)")
    rand = next(x for x in lines if x.startswith("- TA-NAS minus Random"))
    assert "+0.00 points" in rand and "not separated, the interval holds 0" in rand and "higher in 1 of 3 seeds" in rand
    assert not any("vgg16, paired" in x for x in lines)       # hand-designed rows are not paired


def test_one_seed_pairs_without_interval(tmp_path):
    _row(tmp_path / "s0", "ta_nas", "TA-NAS (ours)", [0.5])
    _row(tmp_path / "s0", "fuse_general", "FUSE, general space", [0.4])
    assert "+10.00 points (one search seed: no interval; TA-NAS higher in 1 of 1 seeds)" in \
        summarize_runs([str(tmp_path / "s0")])
