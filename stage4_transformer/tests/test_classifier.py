"""The Transformer-encoder classifier on tiny IMDb / AG News files in the real formats."""
import json
import os
import signal

import torch

from stage4_transformer import train_classifier
from stage4_transformer.models.classifier import ClassifierConfig, TransformerClassifier


def test_padding_does_not_change_the_prediction():
    torch.manual_seed(0)
    config = ClassifierConfig(vocab_size=50, num_classes=2, d_model=16, n_heads=2, layers=1, d_ff=32)
    model = TransformerClassifier(config).eval()
    text = torch.tensor([[5, 6, 7, 8]])
    padded = torch.tensor([[5, 6, 7, 8, 0, 0, 0]])
    torch.testing.assert_close(model(text), model(padded))


def test_classifier_trains_scores_and_guards_resume(tiny_data, tmp_path, cli):
    argv = ["--data_dir", str(tiny_data), "--out_dir", str(tmp_path / "run"), "--checkpoint",
            str(tmp_path / "ck" / "clf.pt"), "--d_model", "32", "--layers", "1", "--d_ff", "64", "--epochs", "4",
            "--patience", "4", "--vocab_size", "300", "--lr", "3e-3", "--batch_size", "16", "--num_threads", "1"]
    code, _, err = cli(train_classifier.main, argv)
    assert code == 0, err
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["split"] == "test" and metrics["metrics"]["accuracy"] > 0.8
    assert {"macro_f1", "latency_ms_bs1", "val_accuracy", "train_tokens_per_s"} <= set(metrics["metrics"])
    code, _, err = cli(train_classifier.main, argv + ["--dataset", "ag_news", "--out_dir", str(tmp_path / "ag"),
                                                      "--checkpoint", str(tmp_path / "ck" / "ag.pt")])
    assert code == 0, err
    code, _, err = cli(train_classifier.main, argv + ["--epochs", "5", "--resume"])
    assert code == 0, err
    assert len(json.loads((tmp_path / "run" / "history.json").read_text())) == 5
    code, _, err = cli(train_classifier.main, argv + ["--d_model", "64", "--resume"])
    assert code == 2 and "--d_model 32 (now 64)" in err
    code, _, err = cli(train_classifier.main, argv + ["--n_heads", "5"])
    assert code == 2 and "divisible" in err


def test_classifier_ctrl_c_then_resume_is_exact(tiny_data, tmp_path, cli, monkeypatch):
    def argv(folder, *extra):
        return ["--data_dir", str(tiny_data), "--out_dir", str(folder / "run"), "--checkpoint", str(folder / "clf.pt"),
                "--d_model", "32", "--layers", "1", "--d_ff", "64", "--epochs", "2", "--patience", "2",
                "--vocab_size", "300", "--batch_size", "16", "--num_threads", "1", "--no-amp", *extra]
    assert cli(train_classifier.main, argv(tmp_path / "a"))[0] == 0
    uninterrupted = torch.load(tmp_path / "a" / "run" / "last.pt", weights_only=True)
    real_step, calls = torch.optim.AdamW.step, {"n": 0}

    def step_then_ctrl_c(self, *args, **kwargs):
        result = real_step(self, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 3:
            os.kill(os.getpid(), signal.SIGINT)
        return result
    monkeypatch.setattr(torch.optim.AdamW, "step", step_then_ctrl_c)
    code, _, err = cli(train_classifier.main, argv(tmp_path / "b"))
    assert code == 130 and "--resume" in err
    monkeypatch.setattr(torch.optim.AdamW, "step", real_step)
    assert cli(train_classifier.main, argv(tmp_path / "b", "--resume"))[0] == 0
    resumed = torch.load(tmp_path / "b" / "run" / "last.pt", weights_only=True)
    assert resumed["step"] == uninterrupted["step"] and resumed["args"]["amp"] is False
    for name, value in uninterrupted["model_state"].items():
        assert torch.equal(resumed["model_state"][name], value), name
