# petvision. `make help` lists the targets.
# The first two are the README's quick start: `make run` and `make test` on a fresh clone.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# make install GPU=1: TensorFlow with CUDA instead of the CPU wheel. BACKEND=jax: Keras on JAX
# (KERAS_BACKEND=jax for every target below), with CUDA under GPU=1: `make install GPU=1 BACKEND=jax`.
GPU ?=
BACKEND ?=
# JAX's CUDA build: cuda12 (NVIDIA driver 525 or newer) or cuda13 (driver 580 or newer).
JAX_CUDA ?= cuda12
ifneq ($(filter-out jax tensorflow,$(BACKEND)),)
$(error BACKEND=$(BACKEND): jax, or tensorflow (the default))
endif
ON_JAX := $(filter jax,$(BACKEND))
ifneq ($(ON_JAX),)
export KERAS_BACKEND := jax
endif
FLAVOUR := $(if $(GPU),gpu,cpu)$(if $(ON_JAX),-jax)
# Two installs, each stamped: what `make run` needs (requirements-run.lock, cut from the lock), and
# the whole lock on top of it (tests, lint, bench): a newcomer's `make run` skips the test tools.
RUN_STAMP := $(VENV)/.installed-run-$(FLAVOUR)
STAMP := $(VENV)/.installed-$(FLAVOUR)
# Stage commands in dvc.yaml call `python`: make it the venv's.
export PATH := $(abspath $(BIN)):$(PATH)
export TF_CPP_MIN_LOG_LEVEL ?= 2
# Stage logs appear as they happen, also when the output is a pipe (CI, dvc queue logs).
export PYTHONUNBUFFERED ?= 1
PYTEST_ARGS ?=
# The suite in PYTEST_WORKERS processes (pytest-xdist), each test file in one of them: most tests
# start a stage, dvc or a server and keep one core busy. The files go out in collection order,
# which tests/conftest.py makes the slowest first. PYTEST_WORKERS=0: one process.
PYTEST_WORKERS ?= 2
XDIST := $(if $(filter 0,$(PYTEST_WORKERS)),,-n $(PYTEST_WORKERS) --dist loadfile --no-loadscope-reorder)
MLFLOW_PORT ?= 5000

.PHONY: help install install-run run lint quality-gate test test-fast params lock bench mlflow-ui clean-venv

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-11s %s\n", $$1, $$2}'

# uv (pinned in the lock) installs the ~200 pinned wheels: it downloads them in parallel and links
# them from its cache, where pip took 3 minutes on a 2-core CPU. The project itself is built in
# isolation: venvs of Python 3.12+ hold no setuptools. --compile-bytecode writes every module's
# .pyc at install time: uv does not by default, and where PYTHONDONTWRITEBYTECODE is set (as on
# this project's CI machines) every process would compile TensorFlow, Keras and MLflow from
# source again, about 10 s of CPU per stage, dvc or mlflow process.
UV_PIN := $(shell grep -m1 '^uv==' requirements.lock)
COMPILE_BYTECODE ?= --compile-bytecode
UV := $(BIN)/uv pip install --quiet $(COMPILE_BYTECODE) --python $(BIN)/python

# GPU=1 asks for TensorFlow with CUDA instead of tensorflow-cpu, the rest held to the lock's pins.
# tensorflow-cpu is another build of the same `tensorflow` package: installed beside it, it would
# overwrite files of the CUDA build, so its pin is left out of what is installed.
# BACKEND=jax adds JAX at the lock's version, the one the tests run (the run lock has none), with
# GPU=1 JAX's CUDA plugin and CUDA libraries; tensorflow-cpu stays (KERAS_BACKEND picks Keras's
# backend, and TensorFlow remains the default one).
JAX_PIN := $(shell grep -m1 '^jax==' requirements.lock | cut -d= -f3)
TF_CUDA := $(if $(ON_JAX),,$(GPU))
EXTRA_PINS := $(if $(ON_JAX),-c requirements.lock "jax$(if $(GPU),[$(JAX_CUDA)])==$(JAX_PIN)",$(if \
	$(GPU),-c requirements.lock "tensorflow[and-cuda]==2.21.0"))
WITHOUT_TF_CPU := grep -v -i -E '^tensorflow[-_]cpu=='
RUN_REQS := $(if $(TF_CUDA),$(VENV)/requirements-run-gpu.lock,requirements-run.lock)
ALL_REQS := $(if $(TF_CUDA),$(VENV)/requirements-gpu.lock,requirements.lock)

$(VENV)/requirements-run-gpu.lock: requirements-run.lock
	mkdir -p $(VENV) && $(WITHOUT_TF_CPU) $< > $@

$(VENV)/requirements-gpu.lock: requirements.lock
	mkdir -p $(VENV) && $(WITHOUT_TF_CPU) $< > $@

$(RUN_STAMP): pyproject.toml requirements-run.lock $(if $(TF_CUDA),$(RUN_REQS))
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check "$(UV_PIN)"
	$(UV) $(EXTRA_PINS) -r $(RUN_REQS)
	$(UV) --no-deps -e .
	rm -f $(VENV)/.installed-*
	touch $@

$(STAMP): $(RUN_STAMP) requirements.lock $(if $(TF_CUDA),$(ALL_REQS))
	$(UV) $(EXTRA_PINS) -r $(ALL_REQS)
	touch $@

install: $(STAMP) ## create .venv with all the pinned dependencies, test tools included (GPU=1 for CUDA, BACKEND=jax)

install-run: $(RUN_STAMP) ## create .venv with only what `make run` needs (GPU=1 for CUDA, BACKEND=jax)

# make run EXPERIMENT=tiny: another preset of conf/experiment/ as a DVC experiment (dvc exp run -S
# composes params.yaml from it); `make run EXPERIMENT=quick` goes back to the default's results.
EXPERIMENT ?=
run: install-run ## run the pipeline on the default configuration (dvc repro); EXPERIMENT=tiny for a one-minute run
	$(if $(EXPERIMENT),$(BIN)/dvc exp run -S experiment=$(EXPERIMENT),$(BIN)/dvc repro)

# One command, stopping at the first check that fails: `make lint` runs it, and `make test` runs it
# beside the suite (not through $(MAKE): a recipe line that names it runs even under `make -n`).
# Its last part checks what the code's structure promises, read from the source in seconds: the
# import layering of docs/architecture.md, no private names across modules, dvc.yaml's deps, no
# function over 60 lines or 8 parameters.
LINT := $(BIN)/ruff check src tests bench scripts \
	&& $(BIN)/ruff format --check src tests bench scripts \
	&& $(BIN)/mypy \
	&& $(BIN)/python -m pytest -q -p no:cacheprovider tests/test_layering.py tests/test_dvc_deps.py tests/test_function_size.py

lint: install ## ruff (lint, format check), mypy, the import layering, dvc.yaml's deps, function sizes
	$(LINT)

# The lint runs beside the suite, not before it: half a minute of one core while the suite starts
# and collects, instead of half a minute in which the other core waits. Its output follows the
# suite's, and a lint failure fails the target as a test failure does.
test: install ## lint and the whole test suite (slow tests included), side by side
	@( $(LINT) ) > $(VENV)/lint.log 2>&1 & lint=$$!; \
	$(BIN)/python -m pytest $(XDIST) $(PYTEST_ARGS); tests=$$?; \
	wait $$lint; linted=$$?; \
	echo "--- make lint (run beside the suite) ---"; cat $(VENV)/lint.log; \
	if [ $$linted -ne 0 ]; then echo "make lint failed (above)"; fi; \
	[ $$tests -eq 0 ] && [ $$linted -eq 0 ]

quality-gate: install ## only the quality checks: train the quick recipe once, check its bars (make test includes them)
	$(BIN)/python -m pytest -m quality $(PYTEST_ARGS)

test-fast: install ## run the tests not marked slow
	$(BIN)/python -m pytest -m "not slow" $(XDIST) $(PYTEST_ARGS)

params: install-run ## recompose params.yaml from conf/ (what dvc exp run -S does)
	$(BIN)/python scripts/compose_params.py

lock: ## re-resolve the pinned versions in pyproject.toml into requirements.lock and requirements-run.lock
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	.lock-venv/bin/pip install --quiet -e ".[cpu,test]"
	{ echo "# The whole dependency tree, pinned (CPU machines; made on Python 3.11, installs on 3.11-3.13). Rebuild with: make lock"; \
	  .lock-venv/bin/pip freeze --exclude-editable | grep -vi '^petvision'; } > requirements.lock
	.lock-venv/bin/python scripts/runtime_lock.py requirements.lock > requirements-run.lock
	rm -rf .lock-venv

bench: install ## measure the project against the book's way (writes docs/benchmarks.md)
	$(BIN)/python bench/run_all.py

mlflow-ui: install-run ## the MLflow UI on the project's store at http://127.0.0.1:5000 (MLFLOW_PORT=... to move it)
	@echo "runs table of an experiment: http://127.0.0.1:$(MLFLOW_PORT)/#/experiments/<id>/runs?workflowType=machine_learning"
	$(BIN)/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlflow.db --default-artifact-root $(CURDIR)/mlruns --host 127.0.0.1 --port $(MLFLOW_PORT)

clean-venv: ## remove .venv
	rm -rf $(VENV)
