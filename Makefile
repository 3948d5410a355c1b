# my_llm: every target sets up what it needs. Run from the repository root.
#   make demo   create .venv, install requirements.txt, train and evaluate stage 1 on IMDb
#   make test   create .venv (with the test packages) and run the whole test suite
#   make bench  every stage's benchmark (stage 1 ~5 min, stage 2 ~50 min, stage 3 ~95 min, stage 4 ~45 min,
#               stage 5 ~50 min on 2 CPU cores); make bench-stage1 / ... / bench-stage5 for one. Results go to
#               stageN_*/results/, then scripts/course_report.py rebuilds the top README's tables. Stage 5's nanoGPT
#               comparison, GPU part and fine-tuning need flags (and a GPU): see stage5_gpt/README.md.
# Data: a local copy is read from $MY_LLM_DATA when set (e.g. export MY_LLM_DATA=../shared/data);
# otherwise the data sets are downloaded with Hugging Face `datasets`.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python

.PHONY: setup setup-dev demo test bench bench-stage1 bench-stage2 bench-stage3 bench-stage4 bench-stage5 report clean

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

clean:
	rm -rf stage1_mlp/runs stage1_mlp/checkpoints stage2_rnn_lstm/runs stage2_rnn_lstm/checkpoints \
		stage3_attention_seq2seq/runs stage3_attention_seq2seq/checkpoints \
		stage4_transformer/runs stage4_transformer/checkpoints stage5_gpt/runs stage5_gpt/checkpoints \
		stage5_gpt/data_cache .pytest_cache
