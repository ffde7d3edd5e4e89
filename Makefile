# The two commands a new user needs: `make demo` and `make test`. Both are idempotent.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
KENLM_DIR := .cache/kenlm
INSTALLED := $(VENV)/.installed

CLIENTS := .cache/clients
NODE := .cache/node

.PHONY: demo test coverage setup test-tools system lint lock bench docker-test clean

DEMO_ARCHIVE := data/sources/it.tar.gz

# The whole pipeline on the bundled sample corpus with env_files/demo.env, starting from the committed demo
# model (samples/demo-model, made by tools/train_demo_model.sh); then the test figures and three held-out
# clips through the exported it-it.zip. A second `make demo` finds every step up to date and only
# transcribes again. It refuses a data/sources/it.tar.gz that is not the sample, rather than train on it.
demo: setup
	@mkdir -p $(dir $(DEMO_ARCHIVE))
	@test -e $(DEMO_ARCHIVE) || cp -p samples/it-sample.tar.gz $(DEMO_ARCHIVE)
	@cmp -s samples/it-sample.tar.gz $(DEMO_ARCHIVE) || { echo "$(DEMO_ARCHIVE) is not the bundled sample:" \
	  "make demo runs on samples/it-sample.tar.gz only; move it away, or run dsita run yourself"; exit 1; }
	DATA_DIR=data $(VENV)/bin/dsita --env-file env_files/demo.env run
	$(PY) tools/demo_transcribe.py data

# Two xdist workers: on 2 cores about 0.7 of one process's wall time, not half, as each worker builds the
# session's fixtures again (BENCHMARKS.md, "The test suite's wall time").
test: setup test-tools
	$(VENV)/bin/ruff check src tests benchmarks tools
	$(VENV)/bin/mypy
	$(VENV)/bin/pytest -q -n 2 --durations=15

# Line coverage of src/dsita by the suite's own process(es); the `dsita` programs the tests start are not
# counted (BENCHMARKS.md, "The test suite: issue 12's tests against its 218 s, and line coverage").
coverage: setup test-tools
	$(VENV)/bin/pytest -q -n 2 --cov=dsita --cov-report=term-missing:skip-covered

setup: system $(INSTALLED) $(VENV)/bin/lmplz

# Test tools only, never runtime dependencies: the original DeepSpeech and Coqui STT clients in throw-away
# venvs of the pyenv interpreters (3.9, 3.10), and playwright-core for the `dsita serve` page test.
test-tools: $(INSTALLED)
	bash tools/setup_clients.sh $(CLIENTS)
	bash tools/setup_node.sh $(NODE)

system:
	@bash tools/setup_system.sh

# torch goes in first and pinned: a plain `torch` requirement would pull several GB of CUDA packages.
$(INSTALLED): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
	  || { echo "Python 3.11 or newer is needed (PYTHON=$(PYTHON))"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

$(KENLM_DIR)/bin/lmplz: tools/build_kenlm.sh | $(INSTALLED)
	bash tools/build_kenlm.sh $(KENLM_DIR) $(PY)

# Beside the venv's python, where dsita looks for them first (KENLM_BIN empty), wherever it is started from.
$(VENV)/bin/lmplz: $(KENLM_DIR)/bin/lmplz
	cp $(KENLM_DIR)/bin/lmplz $(KENLM_DIR)/bin/build_binary $(KENLM_DIR)/bin/filter $(VENV)/bin/

lint: setup
	$(VENV)/bin/ruff check src tests benchmarks tools
	$(VENV)/bin/ruff format --check src tests benchmarks tools
	$(VENV)/bin/mypy
	$(VENV)/bin/hadolint Dockerfile

# The Docker image installs these exact versions: regenerate after changing the dependencies.
lock: setup
	$(PY) tools/lock_requirements.py requirements.lock

bench: setup
	$(PY) benchmarks/import_speed.py

# The image's release check, as root, with podman and buildah (no Docker daemon needed): builds the CPU image
# from a local Debian base, runs fast_dev.env through its ENTRYPOINT as uid 999 with DATA_DIR at /mnt, checks
# the release files, transcribes a clip inside it. Not part of `make test` (see the README for its time).
docker-test:
	bash tools/docker_test.sh

clean:
	rm -rf $(VENV) .cache data
