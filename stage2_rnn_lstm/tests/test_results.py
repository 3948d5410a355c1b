"""The README's results tables are exactly what bench.py makes from the committed result files."""
import json
from pathlib import Path

from scripts.common import REPO_ROOT
from scripts.report import replace_block
from stage2_rnn_lstm import bench

RESULTS = Path(__file__).resolve().parents[1] / "results"


def test_readme_tables_are_generated_from_results():
    stage_blocks = {"stage2_lm": bench.lm_table(), "stage2_speed": bench.speed_table(),
                    "stage2_classify": bench.classify_table(with_hardware=False),
                    "stage2_samples": bench.sample_block()}
    top_blocks = {"classification_imdb_lstm": bench.classify_table(with_hardware=True),
                  "language_models": bench.lm_table()}
    for readme, blocks in ((bench.STAGE_DIR / "README.md", stage_blocks), (REPO_ROOT / "README.md", top_blocks)):
        text = readme.read_text(encoding="utf-8")
        for name, body in blocks.items():
            assert replace_block(text, name, body) == text, f"{readme} [{name}]: run `python stage2_rnn_lstm/bench.py --tables_only`"


def test_results_meet_the_issue_floors():
    """The committed benchmark: char val loss <= 1.55 within 20 min, PTB test perplexity <= 125 within 30 min."""
    char_train = json.loads((RESULTS / "lstm_char_train.json").read_text())
    char_eval = json.loads((RESULTS / "lstm_char_eval.json").read_text())
    assert char_eval["metrics"]["loss"] <= 1.55 and char_train["metrics"]["fit_seconds"] <= 20 * 60
    word_train = json.loads((RESULTS / "lstm_word_train.json").read_text())
    word_eval = json.loads((RESULTS / "lstm_word_eval.json").read_text())
    assert word_eval["split"] == "test" and word_eval["metrics"]["ppl"] <= 125
    assert word_train["metrics"]["fit_seconds"] <= 30 * 60
