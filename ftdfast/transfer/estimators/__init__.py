"""Transferability estimators: one file each, one signature, one registry.

``get(name, **options)`` builds one (e.g. ``get("ftd", head="probe").score(source, target, context)``);
``names()`` lists them. A new estimator: a file here defining an :class:`Estimator` subclass decorated
with :func:`register`, and one import line below.
"""
from .base import NEEDS, REGISTRY, Estimator, get, names, register  # noqa: F401
from . import ftd  # noqa: F401,E402  (the default estimator first)
from . import fisher_cosine  # noqa: F401,E402
from . import leep  # noqa: F401,E402
from . import logme  # noqa: F401,E402
from . import nce  # noqa: F401,E402
from . import hscore  # noqa: F401,E402
from . import task2vec  # noqa: F401,E402
from . import otdd  # noqa: F401,E402  (needs POT when it runs: pip install pot)

__all__ = ["Estimator", "register", "get", "names", "REGISTRY", "NEEDS"]
