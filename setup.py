"""Build script for ftdfast and its native extension ``ftdfast._C``.

Metadata lives in pyproject.toml; this file only describes the extension.
Build in place against the installed torch with::

    pip install --no-build-isolation -e .

One extension, ``ftdfast._C``, is built from ``csrc/*.cpp`` and ``csrc/cpu/*.cpp``.
``csrc/cuda/*.cu`` and ``csrc/cuda/*.cpp`` are added (as a CUDAExtension,
with ``-DFTDFAST_WITH_CUDA``) when there are any, torch is a CUDA build and a
CUDA toolkit is found ($CUDA_HOME, else around the nvcc on PATH, else
/usr/local/cuda); otherwise the extension is a CppExtension.

Build options (environment variables):

    FTDFAST_CUDA=0|1        force CPU-only / force CUDA (default: auto-detect)
    FTDFAST_DEBUG=1         -O0 -g instead of -O3 -g0
    FTDFAST_OPENMP=0        do not compile with -fopenmp (at::parallel_for then
                            runs serially); default: on when torch uses OpenMP
    FTDFAST_LIMITED_API=0   do not build against the Python limited API (abi3)

torch's own variables apply too: CUDA_HOME, TORCH_CUDA_ARCH_LIST, MAX_JOBS.
"""

from __future__ import annotations

import glob
import os
import shutil
import sys

import torch
from setuptools import find_packages, setup


def _is_cuda_home(path: str | None) -> bool:
    return bool(path) and all(
        os.path.isfile(os.path.join(path, *parts)) for parts in (("bin", "nvcc"), ("include", "cuda_runtime.h"))
    )


def _locate_cuda_home() -> str | None:
    """The CUDA toolkit: $CUDA_HOME (or $CUDA_PATH) if set, else around the nvcc on PATH, else /usr/local/cuda.

    Needed because torch guesses CUDA_HOME as nvcc's grandparent folder, which
    is wrong when nvcc on PATH is a wrapper script (e.g. /usr/local/bin/nvcc).
    """
    explicit = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
    if explicit:
        return explicit if _is_cuda_home(explicit) else None
    nvcc = shutil.which("nvcc")
    candidates = [os.path.dirname(os.path.dirname(os.path.realpath(nvcc)))] if nvcc else []
    return next((home for home in candidates + ["/usr/local/cuda"] if _is_cuda_home(home)), None)


CUDA_TOOLKIT = _locate_cuda_home()
if CUDA_TOOLKIT and not os.environ.get("CUDA_HOME"):
    os.environ["CUDA_HOME"] = CUDA_TOOLKIT  # must precede importing torch.utils.cpp_extension

from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension  # noqa: E402

NAME = "ftdfast"
ROOT = os.path.dirname(os.path.abspath(__file__))
CSRC = "csrc"  # relative to ROOT, as setuptools wants extension sources
# Wheel tag for the Python limited API (abi3); matches requires-python in pyproject.toml.
LIMITED_API_TAG = "cp310"


def _env_flag(name: str) -> bool | None:
    """Parse an optional 0/1 environment variable; None when unset or empty."""
    value = os.environ.get(name, "").strip().lower()
    if value == "":
        return None
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    sys.exit(f"ftdfast setup: {name}={value!r} is not a boolean (use 0 or 1)")


def _torch_version() -> tuple[int, int]:
    major, minor = torch.__version__.split("+")[0].split(".")[:2]
    return int(major), int(minor)


def _sources(*patterns: str) -> list[str]:
    """Files under csrc/ matching the patterns, as sorted paths relative to ROOT."""
    return sorted(p for pattern in patterns for p in glob.glob(os.path.join(CSRC, pattern), root_dir=ROOT))


def _use_cuda(cuda_sources: list[str]) -> bool:
    """Decide CUDA vs CPU-only, honouring FTDFAST_CUDA; exit with a reason if forced and impossible."""
    forced = _env_flag("FTDFAST_CUDA")
    if forced is False:
        return False
    problems = []
    if not torch.version.cuda:
        problems.append(f"torch {torch.__version__} is not a CUDA build")
    if CUDA_TOOLKIT is None:
        explicit = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
        where = f"CUDA_HOME={explicit!r} lacks them" if explicit else "none found"
        problems.append(f"no CUDA toolkit with bin/nvcc and include/cuda_runtime.h ({where}; set CUDA_HOME)")
    if forced:
        if problems:
            sys.exit("ftdfast setup: FTDFAST_CUDA=1 but CUDA cannot be built: " + "; ".join(problems))
        if not cuda_sources:
            print("ftdfast setup: FTDFAST_CUDA=1 but csrc/cuda has no sources; linking CUDA anyway")
        return True
    if problems:
        print("ftdfast setup: building CPU-only: " + "; ".join(problems))
        return False
    if not cuda_sources:
        print("ftdfast setup: no sources in csrc/cuda; building CPU-only")
        return False
    return True


def _cuda_library_header_flags() -> list[str]:
    """-isystem flags for cuBLAS/cuSPARSE headers when the toolkit lacks them.

    ATen's CUDA headers include them; a minimal toolkit (nvcc + runtime) does
    not ship them, but the nvidia-* wheels that CUDA torch depends on do.
    -isystem dirs are searched after the toolkit's -I, so its headers win.
    """
    if CUDA_TOOLKIT is None or os.path.isfile(os.path.join(CUDA_TOOLKIT, "include", "cusparse.h")):
        return []
    try:
        import nvidia  # namespace package of the nvidia-* wheels
    except ImportError:
        return []
    dirs = sorted({os.path.dirname(h) for base in nvidia.__path__ for h in glob.glob(os.path.join(base, "*", "include", "cusparse.h"))})
    return [flag for d in dirs for flag in ("-isystem", d)]


def _openmp_flags() -> list[str]:
    """-fopenmp so at::parallel_for (header-inline OpenMP) really runs in parallel."""
    wanted = _env_flag("FTDFAST_OPENMP")
    if wanted is None:
        wanted = sys.platform.startswith("linux") and "OpenMP" in torch.__config__.parallel_info()
    return ["-fopenmp"] if wanted else []


def _limited_api() -> bool:
    """Build against the Python limited API (abi3) when torch supports it (>= 2.6)."""
    return _env_flag("FTDFAST_LIMITED_API") is not False and _torch_version() >= (2, 6)


def get_extensions(limited_api: bool) -> list:
    """The single extension ftdfast._C (CppExtension, or CUDAExtension when CUDA is used)."""
    debug = bool(_env_flag("FTDFAST_DEBUG"))

    sources = _sources("*.cpp", "cpu/*.cpp")
    cuda_sources = _sources("cuda/*.cu", "cuda/*.cpp")
    use_cuda = _use_cuda(cuda_sources)

    opt = ["-O0", "-g"] if debug else ["-O3", "-g0"]
    openmp = _openmp_flags()
    cxx = opt + openmp
    nvcc = ["-O0", "-g", "-G"] if debug else ["-O3"]
    if use_cuda:
        cuda_flags = ["-DFTDFAST_WITH_CUDA"] + _cuda_library_header_flags()
        cxx += cuda_flags
        nvcc += cuda_flags
        sources += cuda_sources

    extension = CUDAExtension if use_cuda else CppExtension
    # With py_limited_api, BuildExtension also defines Py_LIMITED_API.
    kwargs = {"py_limited_api": True} if limited_api else {}
    return [
        extension(
            f"{NAME}._C",
            sources,
            include_dirs=[os.path.join(ROOT, CSRC, "include")],
            depends=_sources("include/ftdfast/*.h"),
            extra_compile_args={"cxx": cxx, "nvcc": nvcc} if use_cuda else {"cxx": cxx},
            extra_link_args=(["-g"] if debug else []) + openmp,
            **kwargs,
        )
    ]


LIMITED_API = _limited_api()

setup(
    packages=find_packages(include=[NAME, f"{NAME}.*"], exclude=["tests", "tests.*", "benchmarks", "benchmarks.*"]),
    ext_modules=get_extensions(LIMITED_API),
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
    options={"bdist_wheel": {"py_limited_api": LIMITED_API_TAG}} if LIMITED_API else {},
)
