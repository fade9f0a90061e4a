# make test       : create .venv if missing, install pinned deps, run pytest
# make reproduce  : same setup, then run every notebook headless (PROFILE=smoke|cpu|paper, DATA=..., ONLY=NN)
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PROFILE ?= smoke
DATA ?=
ONLY ?=
PYTEST_ARGS ?=

.PHONY: setup test reproduce bench clean-results

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -c constraints.txt -e ".[dev,cluster]"
	@touch $(STAMP)

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

reproduce: setup
	$(VENV)/bin/micronet reproduce --profile $(PROFILE) $(if $(DATA),--data $(DATA)) $(if $(ONLY),--only $(ONLY))

bench: setup
	$(VENV)/bin/micronet bench eval
	$(VENV)/bin/micronet bench augment
	$(VENV)/bin/micronet bench train
