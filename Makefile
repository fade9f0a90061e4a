# make test       : create .venv if missing, install pinned deps, run pytest
# make reproduce  : same setup, then run every notebook headless (PROFILE=smoke|cpu|paper, DATA=..., ONLY=NN) into the
#                   git-ignored scratch set results/scratch/<profile>-<data>/; PUBLISH=1 (and REBUILD=1) write the
#                   committed set results/<profile>-<data>/ (see README, Outputs)
# make lab        : same setup, then JupyterLab on notebooks/ with .venv as the kernel; prints the URL
#                   (LAB_PORT=8888, LAB_IP=127.0.0.1, LAB_TOKEN= (random), LAB_BROWSER=no for headless use)
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
LAB_PORT ?= 8888
LAB_IP ?= 127.0.0.1
LAB_TOKEN ?=
LAB_BROWSER ?= yes

.PHONY: setup test reproduce bench lab clean-results

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

lab: setup
	$(VENV)/bin/micronet lab --port $(LAB_PORT) --ip $(LAB_IP) $(if $(LAB_TOKEN),--token $(LAB_TOKEN)) $(if $(filter no,$(LAB_BROWSER)),--no-browser)
