"""visualize.ipynb runs top to bottom on tiny finished runs laid out like bench.py's results/."""
import json
import shutil
from pathlib import Path

from scripts.testing import execute_notebook
from stage3_attention_seq2seq import evaluate, train

NOTEBOOK = Path(__file__).resolve().parents[1] / "visualize.ipynb"
TINY = ["--embed_dim", "32", "--hidden_dim", "32", "--attention_dim", "16", "--batch_size", "32",
        "--num_threads", "1", "--warmup_steps", "5", "--lr", "0.01"]


def test_visualize_notebook_executes(mt_data, tmp_path, monkeypatch, cli):
    results = tmp_path / "results"
    results.mkdir()
    for kind, epochs in (("bahdanau", "4"), ("none", "1")):
        checkpoint = tmp_path / "ck" / f"{kind}.pt"
        code, _, err = cli(train.main, ["--data_dir", mt_data, "--out_dir", tmp_path / kind, "--checkpoint",
                                        checkpoint, "--attention_type", kind, "--epochs", epochs, *TINY])
        assert code == 0, err
        code, _, err = cli(evaluate.main, ["--checkpoint", checkpoint, "--data_dir", mt_data,
                                           "--out_dir", tmp_path / kind / "eval", "--num_threads", "1"])
        assert code == 0, err
        shutil.copy(tmp_path / kind / "eval" / "metrics.json", results / f"compare_{kind}_test.json")
        shutil.copy(tmp_path / kind / "eval" / "translations.txt", results / f"compare_{kind}_translations.txt")
    text = execute_notebook(NOTEBOOK, {"STAGE3_RESULTS": results, "STAGE3_CHECKPOINT": tmp_path / "ck" / "bahdanau.pt",
                                       "MY_LLM_DATA": mt_data}, monkeypatch)
    assert "best validation BLEU" in text and "fr: " in text
    assert "bahdanau       BLEU beam" in text and "sentences per bucket" in text
    bleu = json.loads((results / "compare_bahdanau_test.json").read_text())["metrics"]["bleu_beam"]
    assert f"{bleu:6.2f}" in text
