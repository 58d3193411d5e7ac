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
