# The README's commands: `make demo`, `make test`, `make bench`, `make sanitize`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
STAMP := $(VENV)/.vocabshrink-installed
SAN_VENV := .venv-sanitize
PYTEST_ARGS ?=

.PHONY: install test test-fast bench demo sanitize clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

# Rebuilt when the build inputs change; Python sources are live (editable install).
$(STAMP): $(BIN)/python pyproject.toml CMakeLists.txt $(wildcard csrc/*)
	@# An unpinned torch would pull several GB of CUDA wheels: pin the CPU build first.
	$(BIN)/python -c "import torch" 2>/dev/null || $(PIP) install -q torch==2.13.0
	$(PIP) install -q "scikit-build-core>=0.10" "pybind11>=2.12" cmake ninja
	$(PIP) install -q --no-build-isolation -e ".[test,demo]"
	touch $@

# Bytecode for the package, as a wheel install would have it: the editable install leaves the sources
# to be compiled at every import, and PYTHONDONTWRITEBYTECODE (set on CI) keeps Python from caching them.
BYTECODE := $(VENV)/.bytecode
$(BYTECODE): $(STAMP) $(wildcard python/vocabshrink/*.py)
	$(BIN)/python -m compileall -q python/vocabshrink
	touch $@

install: $(STAMP) $(BYTECODE)

test: install
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

# The tests not marked slow (no end-to-end demo, no training runs on real models): under a minute.
test-fast: install
	$(BIN)/python -m pytest -q -m "not slow" $(PYTEST_ARGS)

bench: install
	for f in benchmarks/bench_*.py; do echo "== $$f"; $(BIN)/python $$f || exit 1; done

demo: install
	$(BIN)/vocabshrink demo

# The core's tests against an AddressSanitizer + UBSan build of the extension,
# in a venv of its own (no torch: the core tests need only numpy).
sanitize:
	test -x $(SAN_VENV)/bin/python || $(PYTHON) -m venv $(SAN_VENV)
	$(SAN_VENV)/bin/python -m pip install -q --upgrade pip
	$(SAN_VENV)/bin/python -m pip install -q "scikit-build-core>=0.10" "pybind11>=2.12" cmake ninja numpy tokenizers pytest hypothesis
	$(SAN_VENV)/bin/python -m pip install -q --no-build-isolation --no-deps --force-reinstall \
	  -C cmake.define.VOCABSHRINK_SANITIZE=ON -C cmake.build-type=Debug -C build-dir=build-sanitize .
	cd tests && LD_PRELOAD="$$(gcc -print-file-name=libasan.so) $$(gcc -print-file-name=libubsan.so)" \
	  ASAN_OPTIONS=detect_leaks=0 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
	  ../$(SAN_VENV)/bin/python -m pytest -q -p no:cacheprovider test_core.py

clean:
	rm -rf build build-sanitize $(VENV) $(SAN_VENV) .pytest_cache
