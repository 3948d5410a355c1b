# my_llm: every target sets up what it needs. Run from the repository root.
#   make demo   create .venv, install requirements.txt, train and evaluate stage 1 on IMDb
#   make test   create .venv (with the test packages) and run the whole test suite
#   make bench  stage 1 benchmark: both implementations on IMDb, results into stage1_mlp/results/
# Data: a local copy is read from $MY_LLM_DATA when set (e.g. export MY_LLM_DATA=../shared/data);
# otherwise the data sets are downloaded with Hugging Face `datasets`.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python

.PHONY: setup setup-dev demo test bench clean

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed requirements-dev.txt
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

setup: $(VENV)/.installed

setup-dev: $(VENV)/.installed-dev

demo: setup
	$(PY) stage1_mlp/train.py --dataset imdb
	$(PY) stage1_mlp/evaluate.py --model_path stage1_mlp/checkpoints/best_model.pt
	$(PY) stage1_mlp/evaluate.py --model_path stage1_mlp/checkpoints/best_model.pt \
		--text "One of the best films I have seen this year: moving, funny and beautifully acted."

test: setup-dev
	$(PY) -m pytest -q

bench: setup
	$(PY) stage1_mlp/bench.py

clean:
	rm -rf stage1_mlp/runs stage1_mlp/checkpoints .pytest_cache
