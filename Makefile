# make test       : create .venv if missing, install pinned deps, run pytest
# make reproduce  : same setup, then run every notebook headless (PROFILE=smoke|cpu|paper, DATA=..., ONLY=NN) into the
#                   git-ignored scratch set results/scratch/<profile>-<data>/; PUBLISH=1 (and REBUILD=1) write the
#                   committed set results/<profile>-<data>/ (see README, Outputs)
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PROFILE ?= smoke
DATA ?=
ONLY ?=
PUBLISH ?=
REBUILD ?=
PYTEST_ARGS ?=

.PHONY: setup test reproduce bench clean-results

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -c constraints.txt -e ".[dev]"
	@touch $(STAMP)

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

reproduce: setup
	$(VENV)/bin/micronet reproduce --profile $(PROFILE) $(if $(DATA),--data $(DATA)) $(if $(ONLY),--only $(ONLY)) $(if $(PUBLISH),--publish) $(if $(REBUILD),--rebuild)

bench: setup
	$(VENV)/bin/micronet bench eval
	$(VENV)/bin/micronet bench augment
	$(VENV)/bin/micronet bench train

clean-results:  # the git-ignored scratch sets and staging folders; committed sets are kept
	rm -rf results/scratch results/.staging
