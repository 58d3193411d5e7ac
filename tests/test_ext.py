"""ftdfast.native._ext: soft loading of the native extension and the errors it gives."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch

from ftdfast.native import _ext

needs_native = pytest.mark.skipif(not _ext.HAS_NATIVE, reason=f"native extension not built: {_ext.LOAD_ERROR}")


def test_flags_are_consistent():
    assert isinstance(_ext.HAS_NATIVE, bool) and isinstance(_ext.HAS_CUDA, bool)
    assert (_ext.LOAD_ERROR is None) == _ext.HAS_NATIVE
    assert not _ext.HAS_CUDA or _ext.HAS_NATIVE


def test_build_command_is_the_editable_install():
    assert "pip install --no-build-isolation -e ." in _ext.BUILD_COMMAND


def test_require_native_without_extension_names_what_error_and_command(monkeypatch):
    monkeypatch.setattr(_ext, "HAS_NATIVE", False)
    monkeypatch.setattr(_ext, "LOAD_ERROR", "ImportError: libfoo.so: cannot open shared object file")
    with pytest.raises(RuntimeError) as info:
        _ext.require_native("backend='native'")
    message = str(info.value)
    assert "backend='native'" in message
    assert "libfoo.so" in message
    assert _ext.BUILD_COMMAND in message


@needs_native
def test_require_native_with_extension_passes():
    _ext.require_native("anything")


@needs_native
def test_native_ops_registered():
    assert _ext.has_kernel("ftdfast::sq_grad_sum_linear", "cpu")
    assert _ext.has_kernel("ftdfast::sq_grad_sum_linear", torch.device("cpu"))
    assert not _ext.has_kernel("ftdfast::no_such_op", "cpu")
    assert _ext.HAS_CUDA == _ext.has_kernel("ftdfast::sq_grad_sum_linear", "cuda")


def test_import_without_extension_falls_back():
    """With ftdfast._C unimportable, `import ftdfast` works and ops use the reference."""
    code = textwrap.dedent(
        """
        import sys
        sys.modules["ftdfast._C"] = None  # makes `from ftdfast import _C` raise ImportError
        import torch, ftdfast
        from ftdfast.native import _ext, ops
        assert not _ext.HAS_NATIVE and not _ext.HAS_CUDA
        assert _ext.LOAD_ERROR.startswith("ModuleNotFoundError") and "ftdfast._C" in _ext.LOAD_ERROR
        a, g = torch.randn(3, 2, 4, dtype=torch.float64), torch.randn(3, 2, 5, dtype=torch.float64)
        expected = sum((g[k].T @ a[k]) ** 2 for k in range(3))
        torch.testing.assert_close(ops.sq_grad_sum_linear(a, g), expected)
        try:
            _ext.require_native("the test")
        except RuntimeError as exc:
            assert _ext.BUILD_COMMAND in str(exc) and "the test" in str(exc)
        else:
            raise AssertionError("require_native did not raise")
        print("ok")
        """
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("ok")
