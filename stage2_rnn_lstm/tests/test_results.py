"""The README's results tables are exactly what bench.py makes from the committed result files."""
import json
from pathlib import Path

from scripts.report import replace_block
from stage2_rnn_lstm import bench

RESULTS = Path(__file__).resolve().parents[1] / "results"


def test_readme_tables_are_generated_from_results():
    blocks = bench.readme_blocks()
    assert set(blocks) == {bench.STAGE_DIR / "README.md"}   # the top README's tables: scripts/course_report.py
    assert set(blocks[bench.STAGE_DIR / "README.md"]) == {"stage2_lm", "stage2_speed", "stage2_classify",
                                                          "stage2_samples", "stage2_overview"}
    for readme, named in blocks.items():
        text = readme.read_text(encoding="utf-8")
        for name, body in named.items():
            assert replace_block(text, name, body) == text, \
                f"{readme} [{name}]: run `python stage2_rnn_lstm/bench.py --tables_only`"


def test_results_meet_the_targets():
    """The committed benchmark: char val loss <= 1.55 within 20 min, PTB test perplexity <= 125 within 30 min."""
    char_train = json.loads((RESULTS / "lstm_char_train.json").read_text())
    char_eval = json.loads((RESULTS / "lstm_char_eval.json").read_text())
    assert char_eval["metrics"]["loss"] <= 1.55 and char_train["metrics"]["fit_seconds"] <= 20 * 60
    word_train = json.loads((RESULTS / "lstm_word_train.json").read_text())
    word_eval = json.loads((RESULTS / "lstm_word_eval.json").read_text())
    assert word_eval["split"] == "test" and word_eval["metrics"]["ppl"] <= 125
    assert word_train["metrics"]["fit_seconds"] <= 30 * 60
