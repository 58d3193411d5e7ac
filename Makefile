# ftdfast: the two set-up commands for a fresh machine (see README.md).
#   make demo   venv + torch + ftdfast with its native extension, then the main job on a built-in dataset
#   make test   the same install, then the test suite
#   make bench  the same install, then the benchmark table (benchmarks/speed/compare.py)
# Override e.g. `make test TORCH=torch==2.13.0` (CPU-only torch: the extension builds without CUDA).

PYTHON ?= python3
VENV   ?= .venv
TORCH  ?= torch==2.14.1
TORCHVISION ?= torchvision==0.29.1
# The model zoo of the tests (tests/zoo): real architectures built from code, random weights, no downloads.
ZOO    ?= timm==1.0.31 transformers==5.24.0
# peft (LoRA tests) and the accelerate it imports, --no-deps: their requirements would move torch.
ZOO_NODEPS ?= peft==0.22.0 accelerate==1.16.0
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip

# Native build settings (torch's own variables); CUDA is used only if torch and nvcc allow it.
export CUDA_HOME ?= $(if $(wildcard /usr/local/cuda/bin/nvcc),/usr/local/cuda,)
export TORCH_CUDA_ARCH_LIST ?= 9.0
export MAX_JOBS ?= 2

NATIVE_SOURCES := $(wildcard csrc/*.cpp csrc/*/*.cpp csrc/*/*.cu csrc/*/*.h csrc/*/*.cuh csrc/include/ftdfast/*.h)

.PHONY: install demo test bench clean

$(VENV)/.deps: Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip "setuptools>=64" wheel ninja
	$(PIP) install -q "$(TORCH)" numpy tqdm scikit-learn matplotlib pytest hypothesis pytest-benchmark pot
	touch $@

# torchvision --no-deps (the release built for $(TORCH)), then timm/transformers, which find torch and torchvision
# already satisfied, so pip never replaces torch.
$(VENV)/.zoo: $(VENV)/.deps
	$(PIP) install -q --no-deps "$(TORCHVISION)"
	$(PIP) install -q $(ZOO)
	$(PIP) install -q --no-deps $(ZOO_NODEPS)
	$(PY) -c "import torch, torchvision, timm, transformers, peft; print('zoo deps: torch', torch.__version__, 'torchvision', torchvision.__version__, 'timm', timm.__version__, 'transformers', transformers.__version__, 'peft', peft.__version__)"
	touch $@

$(VENV)/.built: $(VENV)/.deps setup.py pyproject.toml $(NATIVE_SOURCES)
	$(PIP) install -q --no-build-isolation -e .
	$(PY) -c "import ftdfast.native._ext as e; assert e.HAS_NATIVE, e.LOAD_ERROR; print('ftdfast native extension: ok, CUDA kernels:', e.HAS_CUDA)"
	touch $@

install: $(VENV)/.built

demo: install
	$(VENV)/bin/ftdfast demo

test: install $(VENV)/.zoo
	$(PY) -m pytest tests -q

bench: install
	$(PY) -m benchmarks.speed.compare

clean:
	rm -rf build *.egg-info ftdfast/_C*.so $(VENV)/.built $(VENV)/.zoo
