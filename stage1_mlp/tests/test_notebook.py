"""visualize.ipynb runs top to bottom on a tiny finished run (so it never rots)."""
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from scripts.common import run_main
from stage1_mlp import evaluate, train

NOTEBOOK = Path(__file__).resolve().parents[1] / "visualize.ipynb"


def test_visualize_notebook_executes(tiny_data, tmp_path, monkeypatch):
    checkpoint = tmp_path / "ck" / "best_model.pt"
    small = ["--num_threads", "1", "--data_dir", str(tiny_data)]
    for main, argv in ((train.main, ["--out_dir", str(tmp_path / "run"), "--model_path", str(checkpoint),
                                     "--epochs", "2", "--buckets", "2000", "--embed_dim", "16", "--min_freq", "1",
                                     "--lr", "0.01", *small]),
                       (evaluate.main, ["--model_path", str(checkpoint), "--out_dir", str(tmp_path / "eval"),
                                        "--latency_samples", "5", *small])):
        with pytest.raises(SystemExit) as info:
            run_main(main, argv)
        assert info.value.code == 0
    monkeypatch.setenv("STAGE1_RUN_DIR", str(tmp_path / "run"))
    monkeypatch.setenv("STAGE1_EVAL_DIR", str(tmp_path / "eval"))
    monkeypatch.setenv("STAGE1_CHECKPOINT", str(checkpoint))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(notebook, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()
    outputs = "".join(o.get("text", "") for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs)
    assert "misclassified" in outputs and "(words sorted)" in outputs
