"""The registry: every estimator is reachable by name, with one signature; errors name the choices."""
import pytest

from ftdfast.transfer import estimators
from ftdfast.transfer.estimators import NEEDS, Estimator, get, names, register

EXPECTED = ("ftd", "fisher_cosine", "leep", "logme", "nce", "hscore", "task2vec", "otdd")


def test_every_estimator_is_registered_with_its_direction_and_needs():
    assert names() == EXPECTED
    lower = {n for n in names() if get(n).lower_is_better}
    assert lower == {"ftd", "fisher_cosine", "task2vec", "otdd"}
    for n in names():
        est = get(n)
        assert est.name == n and est.label == n and set(est.needs) <= set(NEEDS) and est.needs


def test_unknown_names_and_options_are_refused_with_the_choices():
    with pytest.raises(ValueError, match="unknown transferability estimator 'kl'; known: ftd, fisher_cosine, leep"):
        get("kl")
    with pytest.raises(ValueError, match=r"head='last' is not one of \('source', 'probe'\)"):
        get("ftd", head="last")
    with pytest.raises(ValueError, match="fisher='true' is not one of"):
        get("fisher_cosine", fisher="true")
    with pytest.raises(TypeError, match="takes no options"):
        get("leep", on="test")


def test_label_names_the_options_that_differ_from_the_defaults():
    assert get("ftd", head="probe", fisher="empirical", on="test").label == "ftd[head=probe,fisher=empirical]"


def test_a_new_estimator_is_one_class_and_one_registration():
    @register
    class Constant(Estimator):
        name = "constant_for_test"
        needs = frozenset({"outputs"})

        def score(self, source, target, context):
            return 1.0

    try:
        assert get("constant_for_test").score(None, None, None) == 1.0
        with pytest.raises(ValueError, match="already registered"):
            register(Constant)
    finally:
        del estimators.REGISTRY["constant_for_test"]
