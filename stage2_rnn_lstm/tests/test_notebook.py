"""visualize.ipynb runs top to bottom on a tiny finished run."""
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from scripts.common import run_main
from stage2_rnn_lstm import train

NOTEBOOK = Path(__file__).resolve().parents[1] / "visualize.ipynb"


@pytest.mark.parametrize("impl", ["torch", "scratch"])
def test_visualize_notebook_executes(lm_data, tmp_path, monkeypatch, impl):
    checkpoint = tmp_path / "ck" / "best.pt"
    argv = ["--data_dir", str(lm_data), "--out_dir", str(tmp_path / "run"), "--checkpoint", str(checkpoint),
            "--impl", impl, "--embed_dim", "8", "--hidden_dim", "16", "--batch_size", "4", "--seq_len", "16",
            "--epochs", "1", "--num_threads", "1"]
    with pytest.raises(SystemExit) as info:
        run_main(train.main, argv)
    assert info.value.code == 0
    monkeypatch.setenv("STAGE2_RUN_DIR", str(tmp_path / "run"))
    monkeypatch.setenv("STAGE2_CHECKPOINT", str(checkpoint))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(notebook, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()
    text = "".join(o.get("text", "") for c in notebook.cells if c.cell_type == "code" for o in c.outputs)
    assert "temperature 0.8" in text and "50 steps back" in text
