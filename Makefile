# my_llm: every target sets up what it needs. Run from the repository root.
#   make setup  .venv with requirements.txt and the course itself (editable install)
#   make demo   set up, then train stage 1's quick preset on IMDb and classify one review
#   make quick  set up, then every stage's quick preset in turn (a few minutes each on 2 CPU cores), each followed by
#               one try of the model it trained: a review classified, Shakespeare written, sentences translated
#   make play   set up, then serve the playground (every stage's trained models in the browser) on 127.0.0.1:8000
#   make test   set up (with the test packages), lint with ruff, run every test
#   make lint   ruff over the whole repository
#   make bench  every stage's benchmark (hours on 2 CPU cores); make bench-stage1 ... bench-stage5 for one;
#               results go to stageN_*/results/, then scripts/course_report.py rebuilds the top README's tables;
#               make bench-playground times the playground against generate.py (about 2 minutes)
# Data: a local copy is read from --data_dir or $MY_LLM_DATA (e.g. export MY_LLM_DATA=$PWD/../shared/data);
# otherwise the data sets are downloaded with Hugging Face `datasets`.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
MIN_PYTHON := 3.11

.PHONY: setup setup-dev check-python demo quick quick-stage1 quick-stage2 quick-stage3 quick-stage4 quick-stage5 \
	test lint bench bench-stage1 bench-stage2 bench-stage3 bench-stage4 \
	bench-stage5 bench-playground play report clean

# Refuse a Python older than MIN_PYTHON before anything is built, and rebuild a .venv made by another Python.
check-python:
	@$(PYTHON) -c 'import sys; v = tuple(map(int, "$(MIN_PYTHON)".split("."))); sys.exit(0 if sys.version_info[:2] >= v else 1)' \
		|| { echo "error: my_llm needs Python $(MIN_PYTHON) or newer; $(PYTHON) is $$($(PYTHON) -V 2>&1). Run make PYTHON=python3.11 (or newer)" >&2; exit 2; }
	@want=$$($(PYTHON) -c 'import sys; print(sys.version.split()[0])'); \
	if [ -x $(PY) ] && [ "$$($(PY) -c 'import sys; print(sys.version.split()[0])' 2>/dev/null)" != "$$want" ]; then \
		echo "$(VENV) was made by another Python; rebuilding it with $(PYTHON) ($$want)"; rm -rf $(VENV); fi

$(VENV)/.installed: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed pyproject.toml
	$(PY) -m pip install --quiet -e ".[test]"
	touch $@

setup: check-python
	@$(MAKE) --no-print-directory $(VENV)/.installed

setup-dev: check-python
	@$(MAKE) --no-print-directory $(VENV)/.installed-dev

REVIEW := "One of the best films I have seen this year: moving, funny and beautifully acted."
SENTENCE1 := "A man is riding a bicycle down the street."
SENTENCE2 := "Two dogs are playing in the snow."

demo: setup
	$(PY) stage1_mlp/train.py --preset quick
	$(PY) stage1_mlp/evaluate.py --text $(REVIEW)

# each quick-stageN trains that stage's quick preset, then tries the model it wrote (found without --checkpoint)
quick: quick-stage1 quick-stage2 quick-stage3 quick-stage4 quick-stage5

quick-stage1: setup
	$(PY) stage1_mlp/train.py --preset quick
	$(PY) stage1_mlp/evaluate.py --text $(REVIEW)

quick-stage2: setup
	$(PY) stage2_rnn_lstm/train.py --preset quick
	$(PY) stage2_rnn_lstm/generate.py --prompt "ROMEO:" --max_new_tokens 300 --seed 1

quick-stage3: setup
	$(PY) stage3_attention_seq2seq/train.py --preset quick
	$(PY) stage3_attention_seq2seq/translate.py $(SENTENCE1)
	$(PY) stage3_attention_seq2seq/translate.py $(SENTENCE2)

quick-stage4: setup
	$(PY) stage4_transformer/train.py --preset quick
	$(PY) stage4_transformer/translate.py $(SENTENCE1)
	$(PY) stage4_transformer/translate.py $(SENTENCE2)

quick-stage5: setup
	$(PY) stage5_gpt/train.py --preset quick
	$(PY) stage5_gpt/generate.py --prompt "ROMEO:" --max_new_tokens 300 --seed 1

play: setup
	$(PY) -m scripts.playground

lint: setup-dev
	$(VENV)/bin/ruff check .

test: lint
	$(PY) -m pytest -q

bench: bench-stage1 bench-stage2 bench-stage3 bench-stage4 bench-stage5
	$(MAKE) report

report: setup
	$(PY) scripts/course_report.py

bench-stage1: setup
	$(PY) stage1_mlp/bench.py

bench-stage2: setup
	$(PY) stage2_rnn_lstm/bench.py

bench-stage3: setup
	$(PY) stage3_attention_seq2seq/bench.py

bench-stage4: setup
	$(PY) stage4_transformer/bench.py

bench-stage5: setup
	$(PY) stage5_gpt/bench.py --parts baby char kv bpe gutenberg

bench-playground: setup-dev
	$(PY) scripts/playground/bench.py

clean:
	rm -rf stage1_mlp/runs stage1_mlp/checkpoints stage2_rnn_lstm/runs stage2_rnn_lstm/checkpoints \
		stage3_attention_seq2seq/runs stage3_attention_seq2seq/checkpoints \
		stage4_transformer/runs stage4_transformer/checkpoints stage5_gpt/runs stage5_gpt/checkpoints \
		stage5_gpt/data_cache .pytest_cache
