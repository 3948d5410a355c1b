"""visualize.ipynb runs top to bottom on a tiny finished run."""
from pathlib import Path

import pytest

from scripts.testing import execute_notebook
from stage2_rnn_lstm import train

NOTEBOOK = Path(__file__).resolve().parents[1] / "visualize.ipynb"


@pytest.mark.parametrize("impl", ["torch", "scratch"])
def test_visualize_notebook_executes(lm_data, tmp_path, monkeypatch, cli, impl):
    checkpoint = tmp_path / "ck" / "best.pt"
    assert cli(train.main, ["--data_dir", lm_data, "--out_dir", tmp_path / "run", "--checkpoint", checkpoint,
                            "--impl", impl, "--embed_dim", "8", "--hidden_dim", "16", "--batch_size", "4",
                            "--seq_len", "16", "--epochs", "1", "--num_threads", "1"])[0] == 0
    text = execute_notebook(NOTEBOOK, {"STAGE2_RUN_DIR": tmp_path / "run", "STAGE2_CHECKPOINT": checkpoint},
                            monkeypatch)
    assert "temperature 0.8" in text and "50 steps back" in text
