"""Register rules for third-party module classes when (and only if) their library is imported.

ftdfast does not import timm, torchvision or transformers itself (importing transformers
alone takes seconds). A rule file for a class of such a library calls
:func:`when_imported` with the name of the module that defines the class and a callback
that registers the rule; the callback runs at once if that module is already imported,
otherwise right after Python executes it for the first time.
"""
from __future__ import annotations

import importlib.abc
import sys
import warnings
from typing import Callable, Dict, List, Union

Matcher = Union[str, Callable[[str], bool]]
_WATCHED: List[tuple] = []  # (matcher, callback)
_DONE: Dict[str, set] = {}  # module name -> ids of the callbacks already run on it


def _matches(matcher: Matcher, name: str) -> bool:
    return matcher == name if isinstance(matcher, str) else bool(matcher(name))


def _run(name: str, module) -> None:
    done = _DONE.setdefault(name, set())
    for matcher, callback in list(_WATCHED):
        if id(callback) in done or not _matches(matcher, name):
            continue
        done.add(id(callback))
        try:
            callback(module)
        except Exception as e:  # a library version we do not know: its modules use the fallback
            warnings.warn(f"ftdfast: could not register a Fisher rule for {name} ({type(e).__name__}: {e}); "
                          "its modules use the torch.func fallback", stacklevel=2)


class _Loader(importlib.abc.Loader):
    """The library's own loader, followed by the callbacks once the module has executed."""

    def __init__(self, inner):
        self._inner = inner

    def create_module(self, spec):
        return self._inner.create_module(spec)

    def exec_module(self, module):
        self._inner.exec_module(module)
        _DONE.pop(module.__name__, None)  # a (re)load defines new classes: register again
        _run(module.__name__, module)

    def __getattr__(self, name):  # get_source, get_code, is_package, ... as the library's loader
        return getattr(self._inner, name)


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path, target=None):
        if not any(_matches(m, fullname) for m, _ in _WATCHED):
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _Loader(spec.loader)
                return spec
        return None


_FINDER = _Finder()


def when_imported(matcher: Matcher, callback: Callable) -> None:
    """Call ``callback(module)`` for the module named ``matcher`` (or every module whose name it accepts)."""
    _WATCHED.append((matcher, callback))
    if _FINDER not in sys.meta_path:
        sys.meta_path.insert(0, _FINDER)
    for name, module in list(sys.modules.items()):
        if module is not None and _matches(matcher, name) and getattr(module, "__spec__", None) is not None \
                and not getattr(module.__spec__, "_initializing", False):
            _run(name, module)
