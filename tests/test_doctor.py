"""ftdfast doctor: the bug-report text (ftdfast.doctor) and its CLI subcommand."""
import pytest
import torch

import ftdfast
from ftdfast import doctor
from ftdfast.native import _ext, selfcheck
from ftdfast.native.reference import SPECS
from ftdfast.cli import main

needs_native = pytest.mark.skipif(not _ext.HAS_NATIVE, reason=f"native extension not built: {_ext.LOAD_ERROR}")
SECTIONS = ["versions", "native extension ftdfast._C", "devices", "self-check", "environment"]


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    for name in [selfcheck.SELFCHECK_ENV, selfcheck.CUDA_NATIVE_ENV]:
        monkeypatch.delenv(name, raising=False)
    selfcheck.reset()
    yield
    selfcheck.reset()


def _lines_of(text, op, device, dtype):
    return [ln for ln in text.splitlines() if ln.split()[:3] == [op, device, dtype]]


def test_doctor_prints_every_section_and_exits_0(capsys, monkeypatch):
    monkeypatch.setenv("FTDFAST_WORKSPACE_MB", "64")
    assert main(["doctor"]) == 0
    text = capsys.readouterr().out
    for i, title in enumerate(SECTIONS):
        assert title in text, title
        if i:
            assert text.index(SECTIONS[i - 1]) < text.index(title)
    assert f"ftdfast   {ftdfast.__version__}" in text and torch.__version__ in text
    assert f"CUDA {torch.version.cuda or 'none: a CPU build'}" in text
    assert "FTDFAST_WORKSPACE_MB=64" in text
    assert "could not be gathered" not in text
    assert selfcheck.results() == []  # the report checks, but decides nothing for the process


@needs_native
def test_doctor_checks_every_op_and_dtype_on_the_cpu():
    text = doctor.report()
    assert _ext.LIBRARY_PATH in text and ("CUDA kernels  yes" in text) == _ext.HAS_CUDA
    for op in SPECS:
        for dtype in ("float32", "float64"):
            (line,) = _lines_of(text, op.split("::")[1], "cpu", dtype)
            assert line.split()[3] == "ok" and "max error" in line and "tolerance" in line


@needs_native
def test_doctor_shows_a_failing_kernel(monkeypatch):
    real = torch.ops.ftdfast.fisher_distance
    monkeypatch.setattr(torch.ops.ftdfast, "fisher_distance", lambda a, b: real(a, b) + 0.5)
    text = doctor.report()
    for dtype in ("float32", "float64"):
        (line,) = _lines_of(text, "fisher_distance", "cpu", dtype)
        assert line.split()[3] == "FAIL" and "max error 5.00e-01" in line
    (line,) = _lines_of(text, "fisher_distance_matrix", "cpu", "float64")
    assert line.split()[3] == "ok"


def test_doctor_without_the_extension_gives_the_load_error(monkeypatch):
    monkeypatch.setattr(_ext, "HAS_NATIVE", False)
    monkeypatch.setattr(_ext, "HAS_CUDA", False)
    monkeypatch.setattr(_ext, "LOAD_ERROR", "ImportError: libc10.so: cannot open shared object file")
    text = doctor.report()
    assert "ImportError: libc10.so: cannot open shared object file" in text
    assert _ext.BUILD_COMMAND in text
    assert "nothing to check: the native extension is not loaded" in text


@needs_native
def test_doctor_reports_the_environment_switches(monkeypatch):
    monkeypatch.setenv(selfcheck.SELFCHECK_ENV, "0")
    monkeypatch.setenv(selfcheck.CUDA_NATIVE_ENV, "0")
    text = doctor.report()
    assert f"{selfcheck.SELFCHECK_ENV}=0" in text and f"{selfcheck.CUDA_NATIVE_ENV}=0" in text
    assert "use the native kernels without this check" in text
    (line,) = _lines_of(text, "sq_grad_sum_linear", "cpu", "float32")
    assert line.split()[3] == "ok"  # the report runs the CPU check anyway


def test_a_broken_section_does_not_stop_the_report(monkeypatch):
    monkeypatch.setenv(selfcheck.CUDA_NATIVE_ENV, "maybe")
    text = doctor.report()
    assert "checks: could not be gathered: ValueError: FTDFAST_CUDA_NATIVE='maybe' is not a boolean" in text
    assert "environment" in text and "FTDFAST_CUDA_NATIVE=maybe" in text


def test_doctor_runs_when_the_extension_cannot_load():
    """The real failure: ftdfast._C unimportable; `ftdfast doctor` still reports, with the import error."""
    import subprocess
    import sys
    code = ("import sys; sys.modules['ftdfast._C'] = None\n"
            "from ftdfast.cli import main\n"
            "raise SystemExit(main(['doctor']))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "not loaded" in result.stdout and "ModuleNotFoundError" in result.stdout and "ftdfast._C" in result.stdout
    assert "nothing to check: the native extension is not loaded" in result.stdout
    assert "could not be gathered" not in result.stdout
