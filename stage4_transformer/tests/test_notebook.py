"""visualize.ipynb runs top to bottom on a tiny finished training run, with results/ laid out as bench.py leaves it."""
import json
import shutil

from scripts.testing import execute_notebook
from stage4_transformer import evaluate, train
from stage4_transformer.tests.test_train import TINY

NOTEBOOK = train.STAGE_DIR / "visualize.ipynb"


def test_visualize_notebook_executes(mt_data, tmp_path, monkeypatch, cli):
    results, checkpoint = tmp_path / "results", tmp_path / "ck" / "best.pt"
    results.mkdir()
    code, _, err = cli(train.main, ["--data_dir", mt_data, "--out_dir", tmp_path / "run", "--checkpoint", checkpoint,
                                    "--epochs", "4", *TINY])
    assert code == 0, err
    code, _, err = cli(evaluate.main, ["--checkpoint", checkpoint, "--data_dir", mt_data, "--out_dir",
                                       tmp_path / "eval", "--num_threads", "1"])
    assert code == 0, err
    shutil.copy(tmp_path / "run" / "metrics.json", results / "main_train.json")
    shutil.copy(tmp_path / "eval" / "metrics.json", results / "main_test.json")
    # no STAGE4_RUN: the notebook finds the run folder from the checkpoint's own --out_dir
    text = execute_notebook(NOTEBOOK, {"STAGE4_RESULTS": results, "STAGE4_CHECKPOINT": checkpoint,
                                       "MY_LLM_DATA": mt_data}, monkeypatch)
    assert f"model: {checkpoint} (best checkpoint; preset default, epoch" in text
    assert "best validation BLEU" in text and "fr: " in text and "every row sums to 1: True" in text
    assert "steps in all" in text and "average of epochs" in text
    assert "PE_p . PE_q depends only on |p - q|: True" in text
    bleu = json.loads((results / "main_test.json").read_text())["metrics"]["bleu_beam"]
    assert "stage 3: GRU + attention" in text and f"test BLEU (beam 5) {bleu:,.2f}" in text
