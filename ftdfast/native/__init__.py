"""The native ops, mirroring ``csrc/``: what Python needs to call, check and test ``torch.ops.ftdfast.*``.

- :mod:`._ext`: soft loading of the extension ``ftdfast._C`` (``HAS_NATIVE``, ``HAS_CUDA``, ``require_native``).
- :mod:`.ops`: the public functions: the native kernel when it is built and trusted, else the reference.
- :mod:`.reference`: the pure-PyTorch reference of each op (the fallback and the test oracle).
- :mod:`.selfcheck`: the first-use check of each (op, device, dtype) against its reference.

Index letters: n sample, t position, i in (features), o out (features).
"""
