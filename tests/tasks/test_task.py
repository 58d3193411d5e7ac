import pytest
import torch

from ftdfast.tasks import RegressionTask, Task, TaskData, resolve_classes, task_from_dict

from .common import ids, make_data

DATA = make_data(train=[5, 3, 8, 2, 9], test=[4, 6, 2, 3, 1], classes=("ant", "bee", "cat", "dog_fish", "eel"))


def _check_labels(task, td, mapping, test=False):
    """Every built label equals mapping[original label] for the sample it came from."""
    y0 = (DATA.y_test if test else DATA.y_train)[ids(td.x_test if test else td.x_train, test)]
    y = td.y_test if test else td.y_train
    assert y.tolist() == [mapping(int(v)) for v in y0]


def test_full_task_keeps_every_sample_and_label():
    td = Task("full").build(DATA, seed=3)
    assert td.num_classes == 5 and td.loss == "cross_entropy" and td.output_shape == (5,)
    assert sorted(ids(td.x_train).tolist()) == list(range(27))
    assert sorted(ids(td.x_test, True).tolist()) == list(range(16))
    _check_labels(td.task, td, lambda v: v)
    _check_labels(td.task, td, lambda v: v, test=True)


def test_binary_balances_by_downsampling_negatives():
    td = Task("bee?", (1,), binary=True).build(DATA, seed=0)
    # train: 3 positives, 24 negatives -> 3 + 3; test: 6 positives, 10 negatives -> 6 + 6
    assert torch.bincount(td.y_train).tolist() == [3, 3]
    assert torch.bincount(td.y_test).tolist() == [6, 6]
    _check_labels(td.task, td, lambda v: int(v == 1))
    _check_labels(td.task, td, lambda v: int(v == 1), test=True)
    assert len(set(ids(td.x_train).tolist())) == 6


def test_binary_downsamples_positives_when_negatives_are_scarce():
    td = Task("most", (0, 1, 2, 4), binary=True).build(DATA, seed=0)
    # negatives are class 3 only: train 2, test 3
    assert torch.bincount(td.y_train).tolist() == [2, 2]
    assert torch.bincount(td.y_test).tolist() == [3, 3]
    _check_labels(td.task, td, lambda v: int(v != 3), test=True)


def test_other_keeps_listed_classes_and_downsamples_the_rest():
    td = Task("cat-ant-other", (2, 0), other=True).build(DATA, seed=1)
    # train: cat 8 -> 0, ant 5 -> 1, other min(8, 5) = 5 of 14; test: cat 2, ant 4, other min = 2 of 10
    assert td.num_classes == 3
    assert torch.bincount(td.y_train).tolist() == [8, 5, 5]
    assert torch.bincount(td.y_test).tolist() == [2, 4, 2]
    m = {2: 0, 0: 1}
    _check_labels(td.task, td, lambda v: m.get(v, 2))
    _check_labels(td.task, td, lambda v: m.get(v, 2), test=True)


def test_other_takes_all_of_a_small_rest():
    td = Task("o", (0, 1, 2, 4), other=True).build(DATA, seed=0)
    # train: smallest listed is bee (3); the rest is dog_fish (2) -> all 2
    assert torch.bincount(td.y_train, minlength=5).tolist() == [5, 3, 8, 9, 2]


def test_subset_relabels_in_list_order():
    td = Task("sub", ("eel", "bee")).build(DATA, seed=0)
    assert td.num_classes == 2
    assert torch.bincount(td.y_train).tolist() == [9, 3] and torch.bincount(td.y_test).tolist() == [1, 6]
    _check_labels(td.task, td, {4: 0, 1: 1}.__getitem__)


@pytest.mark.parametrize("task", [Task("f"), Task("b", (3,), binary=True), Task("o", (1, 2), other=True)],
                         ids=["full", "binary", "other"])
def test_deterministic_given_seed_and_varies_across_seeds(task):
    a, b = task.build(DATA, seed=5), task.build(DATA, seed=5)
    for name in ("x_train", "y_train", "x_test", "y_test"):
        assert torch.equal(getattr(a, name), getattr(b, name))
    assert a.fingerprint() == b.fingerprint()
    others = {task.build(DATA, seed=s).fingerprint() for s in range(6)}
    assert len(others) == 6


def test_names_resolve_like_indices():
    by_name = Task("n", ("bee", "Dog-Fish"), other=True).build(DATA, seed=2)
    by_index = Task("n", (1, 3), other=True).build(DATA, seed=2)
    assert torch.equal(by_name.y_train, by_index.y_train) and torch.equal(by_name.x_test, by_index.x_test)
    assert resolve_classes(["tench", 1], ["tench, Tinca tinca", "goldfish"]) == (0, 1)


def test_resolution_errors():
    with pytest.raises(ValueError, match=r"'zebra' is not a class of this dataset; valid names: 'ant', 'bee'"):
        Task("z", ("zebra",)).build(DATA)
    with pytest.raises(ValueError, match=r"class index 5 is out of range: the data has 5 classes \(0..4\)"):
        Task("z", (5,), binary=True).build(DATA)
    with pytest.raises(ValueError, match=r"name the same class more than once: \['bee'\]"):
        Task("z", (1, "bee")).build(DATA)
    with pytest.raises(ValueError, match="matches several classes"):
        resolve_classes(["a b"], ["a_b", "A-B"])


@pytest.mark.parametrize("kwargs, match", [
    (dict(classes=()), "classes is empty; pass classes=None for the full task"),
    (dict(classes=(1, 2, 1)), "duplicate classes 1"),
    (dict(classes=(-1,)), "class index -1 is negative"),
    (dict(classes=(1,), binary=True, other=True), "binary and other exclude each other"),
    (dict(binary=True), "binary and other tasks need the listed classes"),
], ids=["empty", "duplicate", "negative", "binary-and-other", "binary-without-classes"])
def test_bad_task_definitions(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Task("bad", **kwargs)


def test_bad_class_types_and_name():
    with pytest.raises(TypeError, match="must be an int index or a str name"):
        Task("t", (True,))
    with pytest.raises(ValueError, match="non-empty name"):
        Task("")


def test_missing_classes_in_a_split_are_errors():
    data = make_data(train=[3, 2, 4], test=[2, 0, 3])
    with pytest.raises(ValueError, match=r"task 'b', test split of 'toy': 0 samples of the listed classes and 5"):
        Task("b", (1,), binary=True).build(data)
    with pytest.raises(ValueError, match=r"no samples of class\(es\) \['c1'\]"):
        Task("o", (0, 1), other=True).build(data)
    with pytest.raises(ValueError, match="no samples of the listed classes"):
        Task("s", (1,)).build(data)


def test_num_classes_dict_round_trip_and_key():
    tasks = [Task("a", (1, 2), binary=True), Task("b", ("x", 3), other=True), Task("c", (4,)), Task("d")]
    assert [t.num_classes for t in tasks[:3]] == [2, 3, 1]
    assert [t.kind for t in tasks] == ["binary", "other", "subset", "full"]
    with pytest.raises(ValueError, match="use num_classes_for"):
        tasks[3].num_classes
    assert tasks[3].num_classes_for(DATA) == 5
    for t in tasks + [RegressionTask("r", "blur")]:
        assert task_from_dict(t.to_dict()) == t
        assert task_from_dict(t.to_dict()).key() == t.key()
    assert len({t.key() for t in tasks}) == 4
    assert Task("a", [1, 2], binary=True) == tasks[0]    # lists become tuples
    with pytest.raises(ValueError, match="not a classification task"):
        Task.from_dict(RegressionTask("r", "blur").to_dict())


def test_task_data_fingerprint_includes_the_task():
    a = Task("x", (1,)).build(DATA, seed=0)
    b = Task("y", (1,)).build(DATA, seed=0)
    assert torch.equal(a.x_train, b.x_train) and a.fingerprint() != b.fingerprint()
    assert a.fingerprint() is a.fingerprint()


def test_task_data_validates():
    x, y = torch.zeros(3, 1, 2, 2), torch.tensor([0, 1, 1])
    with pytest.raises(ValueError, match=r"labels outside \[0, 1\)"):
        TaskData(Task("t"), x, y, x, y, num_classes=1, loss="cross_entropy")
    with pytest.raises(ValueError, match="x_test has 3 samples and y_test 2"):
        TaskData(Task("t"), x, y, x, y[:2], num_classes=2, loss="cross_entropy")
    with pytest.raises(ValueError, match="regression task data needs num_classes=None"):
        TaskData(Task("t"), x, y, x, y, num_classes=None, loss="cross_entropy")


def test_task_data_feeds_fisher_diagonal():
    from ftdfast import fisher_diagonal
    from ftdfast.data import load_digits
    from ftdfast.models import build_model
    data = load_digits()
    td = Task("digits:0", (0,), binary=True).build(data, seed=0)
    torch.manual_seed(0)
    model = build_model("small_cnn", in_channels=1, num_classes=td.num_classes, input_size=8).eval()
    f = fisher_diagonal(model, (td.x_test, td.y_test), loss=td.loss, max_samples=29, progress=False)
    g = fisher_diagonal(model, td.test, loss=td.loss, max_samples=29, progress=False, batch_size=7)
    assert f.num_samples == 29 and float(f.trace()) > 0
    # float32 model: per-batch sums differ in rounding only
    torch.testing.assert_close(f.flat(), g.flat(), rtol=1e-4, atol=1e-6 * float(f.flat().abs().max()))
