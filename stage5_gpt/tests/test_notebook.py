"""visualize.ipynb runs top to bottom on a tiny finished run laid out like bench.py's results/."""
import re
import shutil

from scripts.testing import execute_notebook
from stage5_gpt import train
from stage5_gpt.tests.conftest import tiny_args

NOTEBOOK = train.STAGE_DIR / "visualize.ipynb"


def test_visualize_notebook_executes(lm_data, tmp_path, monkeypatch, cli):
    results = tmp_path / "results"
    results.mkdir()
    code, _, err = cli(train.main, tiny_args(lm_data, tmp_path, "--max_steps", "20", "--eval_interval", "10"))
    assert code == 0, err
    shutil.copy(tmp_path / "run" / "history.json", results / "char_history.json")
    text = execute_notebook(NOTEBOOK, {"STAGE5_RESULTS": results, "STAGE5_CHECKPOINT": tmp_path / "best.pt",
                                       "MY_LLM_DATA": lm_data}, monkeypatch)
    assert "history from run/history.json" in text             # the checkpoint's own run folder
    assert "best validation loss" in text and "first 30 merges" in text and "decode(encode(x)) == x: True" in text
    assert "attention above the diagonal is zero: True" in text and "every row sums to 1: True" in text
    assert "=== temperature 1.0, top_p 0.9" in text
    assert text.count("same tokens: True") == 4
    assert "merged == unmerged: True" in text and "no fine-tuning results yet" in text
    assert "no continued-pretraining history yet" in text
    # section 9: int8 of one matrix and of the whole model, distillation's loss, the export read by transformers
    assert "at most half a step (<= 0.5): True" in text and "per-row scales more accurate: True" in text
    smaller = re.search(r"int8 \(ours\) size: [\d.]+ MB, ([\d.]+) times smaller", text)
    assert smaller and float(smaller.group(1)) > 1, text
    change = re.search(r"loss change ours: ([+-][\d.]+)%, PyTorch: ([+-][\d.]+)%", text)
    assert change and abs(float(change.group(1))) < 1 and abs(float(change.group(2))) < 5, text
    assert "distillation loss matches the formula: True" in text
    assert "equal after a transpose: True" in text and "tokenizer ids the same: True" in text
    assert "transformers greedy tokens == ours: True" in text and "load_gpt2, same weights: True" in text
    assert "no shipping results yet: run `python stage5_gpt/bench.py --parts quant distill export`" in text
