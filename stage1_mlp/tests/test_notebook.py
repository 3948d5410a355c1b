"""visualize.ipynb runs top to bottom on a tiny finished run (so it never rots)."""
from pathlib import Path

from scripts.testing import execute_notebook
from stage1_mlp import evaluate, train

NOTEBOOK = Path(__file__).resolve().parents[1] / "visualize.ipynb"


def test_visualize_notebook_executes(tiny_data, tmp_path, monkeypatch, cli):
    checkpoint = tmp_path / "ck" / "best_model.pt"
    small = ["--num_threads", "1", "--data_dir", tiny_data]
    assert cli(train.main, ["--out_dir", tmp_path / "run", "--checkpoint", checkpoint, "--epochs", "2", "--buckets",
                            "2000", "--embed_dim", "16", "--min_freq", "1", "--lr", "0.01", *small])[0] == 0
    assert cli(evaluate.main, ["--checkpoint", checkpoint, "--out_dir", tmp_path / "eval", "--latency_samples", "5",
                               *small])[0] == 0
    text = execute_notebook(NOTEBOOK, {"STAGE1_RUN_DIR": tmp_path / "run", "STAGE1_EVAL_DIR": tmp_path / "eval",
                                       "STAGE1_CHECKPOINT": checkpoint}, monkeypatch)
    assert "misclassified" in text and "(words sorted)" in text
