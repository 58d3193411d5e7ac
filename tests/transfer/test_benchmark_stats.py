"""The agreement statistics of benchmarks/evidence/transfer (Kendall, Spearman, top-1, regret) on hand-made rankings."""
import pytest

from benchmarks.evidence.transfer.compare import load_gain
from benchmarks.evidence.transfer.stats import agreement, bootstrap_mean, paired_bootstrap

GAIN = {"a": 3.0, "b": 1.0, "c": -2.0}

# (id, scores, lower_is_better, kendall, top1, regret, pick)
CASES = [
    ("same order, higher better", {"a": 0.9, "b": 0.5, "c": 0.1}, False, 1.0, 1.0, 0.0, "a"),
    ("same order, a distance", {"a": 0.1, "b": 0.5, "c": 0.9}, True, 1.0, 1.0, 0.0, "a"),
    ("reversed", {"a": 0.1, "b": 0.5, "c": 0.9}, False, -1.0, 0.0, 5.0, "c"),
    ("one swap", {"a": 0.5, "b": 0.9, "c": 0.1}, False, 1 / 3, 0.0, 2.0, "b"),
    ("all tied", {"a": 0.2, "b": 0.2, "c": 0.2}, False, 0.0, 1.0, 0.0, "a"),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_agreement_by_hand(case):
    _, scores, lower, tau, top1, regret, pick = case
    got = agreement(scores, GAIN, lower)
    assert got["kendall"] == pytest.approx(tau) and got["top1"] == top1
    assert got["regret"] == pytest.approx(regret) and got["pick"] == pick


def test_a_missing_score_is_an_error():
    with pytest.raises(ValueError, match=r"no score for sources \['c'\]"):
        agreement({"a": 1.0, "b": 0.0}, GAIN, False)


def test_bootstrap_mean_and_paired_difference():
    mean, lo, hi = bootstrap_mean([1.0, 2.0, 3.0, 4.0])
    assert mean == 2.5 and 1.0 <= lo <= mean <= hi <= 4.0
    assert bootstrap_mean([2.0, 2.0])[1:] == (2.0, 2.0)
    assert paired_bootstrap([3.0, 5.0], [1.0, 2.0])[0] == pytest.approx(2.5)
    with pytest.raises(ValueError, match="equal lengths"):
        paired_bootstrap([1.0], [1.0, 2.0])


def test_gain_is_paired_with_scratch_by_seed(tmp_path):
    rows = ["target,source,seed,n_train,n_test,acc_50,acc_300",
            "t,scratch,0,10,10,0.5,0.60", "t,scratch,1,10,10,0.5,0.70",
            "t,s,0,10,10,0.5,0.65", "t,s,1,10,10,0.5,0.70"]
    path = tmp_path / "gt.csv"
    path.write_text("\n".join(rows) + "\n")
    assert load_gain(str(path), "300") == {"t": {"s": pytest.approx(2.5)}}   # (5 + 0) / 2 points
