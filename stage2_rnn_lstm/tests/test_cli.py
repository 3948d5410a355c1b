"""train.py, evaluate.py, generate.py and train_classifier.py end to end on tiny data, and every bad input."""
import json
import os
import signal

import pytest
import torch

from scripts.common import checkpoint_header, load_checkpoint, run_main, save_checkpoint
from scripts.testing import TypedLines
from stage2_rnn_lstm import evaluate, generate, train, train_classifier

TINY = ["--embed_dim", "16", "--hidden_dim", "16", "--batch_size", "4", "--seq_len", "16", "--num_threads", "1",
        "--warmup_steps", "2"]


def lm_args(data, tmp_path, *extra):
    return ["--data_dir", str(data), "--out_dir", str(tmp_path / "run"), "--checkpoint",
            str(tmp_path / "ck" / "best.pt"), *TINY, *extra]


@pytest.fixture(scope="module")
def char_model(lm_data, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("char")
    with pytest.raises(SystemExit) as info:
        run_main(train.main, lm_args(lm_data, tmp, "--epochs", "2", "--lr", "0.01"))
    assert info.value.code == 0
    return tmp / "ck" / "best.pt"


@pytest.mark.parametrize("model_type, impl, vocab_type", [
    ("lstm", "scratch", "char"), ("gru", "torch", "char"), ("rnn", "scratch", "word"), ("lstm", "torch", "word")])
def test_train_evaluate_smoke(lm_data, tmp_path, cli, model_type, impl, vocab_type):
    code, out, err = cli(train.main, lm_args(lm_data, tmp_path, "--model_type", model_type, "--impl", impl,
                                             "--vocab_type", vocab_type, "--epochs", "2", "--lr", "0.01"))
    assert code == 0, err
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert history[-1]["val_loss"] < history[0]["val_loss"] + 0.5 and "tokens_per_s" in history[0]
    assert (tmp_path / "ck" / f"{vocab_type}_vocabulary.json").is_file()
    assert "tokens/s" in (tmp_path / "run" / "train.log").read_text()
    code, out, err = cli(evaluate.main, ["--checkpoint", str(tmp_path / "ck" / "best.pt"), "--data_dir", str(lm_data),
                                         "--out_dir", str(tmp_path / "eval"), "--num_threads", "1"])
    assert code == 0, err
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["split"] == ("test" if vocab_type == "word" else "valid")
    assert metrics["metrics"]["ppl"] > 1


def test_char_model_learns_the_tiny_text(char_model, cli):
    code, out, _ = cli(generate.main, ["--checkpoint", str(char_model), "--prompt", "First", "--max_new_tokens", "40",
                                       "--temperature", "0"])
    assert code == 0 and out.startswith("First") and len(out) >= 40
    # the same seed gives the same sample; --model_path and --length are the same options as --checkpoint and
    # --max_new_tokens
    again = cli(generate.main, ["--checkpoint", str(char_model), "--prompt", "First", "--max_new_tokens", "40",
                                "--temperature", "0.9", "--seed", "3"])[1]
    assert again == cli(generate.main, ["--model_path", str(char_model), "--prompt", "First", "--length", "40",
                                        "--temperature", "0.9", "--seed", "3"])[1]


def test_evaluate_takes_model_path(char_model, lm_data, tmp_path, cli):
    code, out, err = cli(evaluate.main, ["--model_path", str(char_model), "--data_dir", str(lm_data),
                                         "--out_dir", str(tmp_path / "eval"), "--num_threads", "1"])
    assert code == 0, err
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["checkpoint"] == str(char_model)


def test_interactive_session(char_model, monkeypatch, cli):
    lines = ["", ":temp 0.5", ":top_k x", ":top_p 2", ":length 10", ":settings", "Speak ñ", ":bogus",
                  ":temperature 0", ":max_new_tokens 12", ":n 0", ":seed 7", ":k 5", ":p 0.9", ":beam 3", ":t",
                  ":help", ":quit", "never read"]
    monkeypatch.setattr("sys.stdin", TypedLines(lines))
    code, out, _ = cli(generate.main, ["--checkpoint", str(char_model), "--interactive"])
    assert code == 0
    assert "(empty line" in out and "temperature = 0.5" in out and "max_new_tokens = 10" in out
    assert "(:top_k kept 0:" in out and "(:top_p kept 1.0: top_p must be a number in (0, 1]" in out
    assert "not in the vocabulary" in out and "'ñ'" in out and "unknown command :bogus" in out
    assert "temperature = 0.0" in out and "max_new_tokens = 12" in out and "(:max_new_tokens kept 12:" in out
    assert "seed = 7" in out and "top_k = 5" in out and "top_p = 0.9" in out
    assert "(:beam does not apply here" in out and "temperature = 0.0  (:temperature VALUE sets it)" in out
    assert ":max_new_tokens VALUE" in out and ":quit" in out     # the help text


def test_interactive_settings_change_the_sample(char_model, monkeypatch, cli):
    """:temperature 0 with :max_new_tokens 5 gives the same text as the flags do."""
    monkeypatch.setattr("sys.stdin", TypedLines([":temperature 0", ":max_new_tokens 5", "First", ":q"]))
    out = cli(generate.main, ["--checkpoint", str(char_model), "--interactive"])[1]
    expected = cli(generate.main, ["--checkpoint", str(char_model), "--prompt", "First", "--temperature", "0",
                                   "--max_new_tokens", "5"])[1]
    assert expected in out


def test_interactive_ends_on_ctrl_d_and_survives_ctrl_c(char_model, monkeypatch, cli):
    monkeypatch.setattr("sys.stdin", TypedLines([KeyboardInterrupt, "Sp", EOFError]))
    code, out, _ = cli(generate.main, ["--checkpoint", str(char_model), "--interactive", "--max_new_tokens", "5"])
    assert code == 0 and "Sp" in out


@pytest.mark.parametrize("argv, message", [
    (["--prompt", ""], "--prompt is empty"),
    (["--temperature", "-1"], "--temperature must be 0 (greedy) or a number in [0.01, 100]"),
    (["--temperature", "nan"], "--temperature must be 0 (greedy) or a number in [0.01, 100]"),
    (["--top_p", "0"], "--top_p must be a number in (0, 1]"),
    (["--top_k", "-2"], "--top_k must be an integer in [0, "),
    (["--max_new_tokens", "0"], "--max_new_tokens must be an integer in [1, "),
    (["--length", "0"], "--max_new_tokens must be an integer in [1, "),
    (["--seed", "-1"], "--seed: must be an integer in [0, "),
    (["--interactive", "1"], "unrecognized arguments: 1"),
])
def test_generate_bad_settings(char_model, cli, argv, message):
    code, _, err = cli(generate.main, ["--checkpoint", str(char_model), *argv])
    assert code == 2 and message in err and err.count("\n") == 1


def test_vocabulary_that_does_not_match_the_checkpoint(char_model, tmp_path, cli):
    other = tmp_path / "other_vocab.json"
    other.write_text(json.dumps({"format": "stage2-vocabulary-v1", "kind": "char", "itos": ["<unk>", "a", "b"]}))
    code, _, err = cli(generate.main, ["--checkpoint", str(char_model), "--vocab", str(other)])
    assert code == 2 and "does not match" in err and err.count("\n") == 1
    code, _, err = cli(generate.main, ["--checkpoint", str(char_model), "--vocab",
                                       str(char_model.parent / "char_vocabulary.json"), "--max_new_tokens", "3"])
    assert code == 0, err


def test_wrong_and_broken_checkpoints(char_model, tmp_path, cli):
    stage1 = tmp_path / "stage1.pt"
    save_checkpoint(stage1, {**checkpoint_header("stage1_mlp", "ngram_mlp"), "model_state": {}})
    code, _, err = cli(generate.main, ["--checkpoint", str(stage1)])
    assert code == 2 and "made by stage1_mlp" in err
    cut = tmp_path / "cut.pt"
    cut.write_bytes(char_model.read_bytes()[:5000])
    code, _, err = cli(evaluate.main, ["--checkpoint", str(cut)])
    assert code == 2 and "not a readable checkpoint" in err and err.count("\n") == 1


@pytest.mark.parametrize("argv, message", [
    (["--model_type", "transformer"], "invalid choice: 'transformer'"),
    (["--dataset", "ptb", "--vocab_type", "char"], "--dataset ptb goes with --vocab_type word"),
    (["--tie_weights", "--embed_dim", "8"], "--tie_weights needs --embed_dim == --hidden_dim"),
    (["--vocab_type", "word", "--embed_dim", "8"], "--tie_weights needs --embed_dim == --hidden_dim"),
    (["--tie_weights", "1"], "unrecognized arguments: 1"),
    (["--dropout", "1"], "--dropout: must be a number in [0, 1)"),
])
def test_train_bad_flags(cli, argv, message):
    code, _, err = cli(train.main, argv)
    assert code == 2 and message in err and err.count("\n") == 1


def test_tie_weights_on_and_off(lm_data, tmp_path, cli):
    """Word models tie the decoder to the embedding unless --no-tie_weights; --tie_weights ties a char model."""
    tiny = ["--epochs", "1", "--max_steps", "2"]
    sizes = {}
    runs = {"word": ["--vocab_type", "word"], "word_untied": ["--vocab_type", "word", "--no-tie_weights"],
            "char": [], "char_tied": ["--tie_weights"]}
    for name, extra in runs.items():
        code, _, err = cli(train.main, lm_args(lm_data, tmp_path / name, *tiny, *extra))
        assert code == 0, err
        ckpt = load_checkpoint(tmp_path / name / "ck" / "best.pt", "stage2_rnn_lstm")
        metrics = json.loads((tmp_path / name / "run" / "metrics.json").read_text())
        sizes[name] = (ckpt["config"]["tie_weights"], metrics["params"])
    assert sizes["word"][0] is True and sizes["word_untied"][0] is False
    assert sizes["char"][0] is False and sizes["char_tied"][0] is True
    vocab = len(json.loads((tmp_path / "word" / "ck" / "word_vocabulary.json").read_text())["itos"])
    assert sizes["word_untied"][1] - sizes["word"][1] == vocab * 16      # one V x H matrix fewer when tied


def test_help_shows_defaults_and_groups(cli):
    code, out, _ = cli(train.main, ["--help"])
    assert code == 0
    out = " ".join(out.split())                                  # whatever the terminal's width
    assert "--tie_weights, --no-tie_weights" in out and "--checkpoint CHECKPOINT, --model_path CHECKPOINT" in out
    assert "--resume " in out and "--no-resume" not in out and "(default: 100)" in out
    for group in ("model:", "training:", "output and resume:", "data and hardware:"):
        assert group in out
    assert out.index("--epochs") < out.index("model:")          # what a learner changes comes first
    out = " ".join(cli(generate.main, ["--help"])[1].split())
    assert "--max_new_tokens MAX_NEW_TOKENS, --length MAX_NEW_TOKENS" in out and "seed for sampling" in out


def test_resume_of_another_dataset_is_refused(char_model, lm_data, tmp_path, cli):
    code, _, err = cli(train.main, ["--data_dir", lm_data, "--out_dir", char_model.parent.parent / "run",
                                    "--vocab_type", "word", "--resume"])
    assert code == 2 and "was trained on shakespeare, not ptb" in err and err.count("\n") == 1


def test_missing_data(tmp_path, monkeypatch, cli):
    monkeypatch.delenv("MY_LLM_DATA", raising=False)
    (tmp_path / "empty").mkdir()
    code, _, err = cli(train.main, ["--data_dir", str(tmp_path / "empty"), "--out_dir", str(tmp_path / "r")])
    assert code == 2 and "lacks input.txt of tiny_shakespeare" in err and err.count("\n") == 1


def test_ctrl_c_mid_epoch_then_resume_is_exact(lm_data, tmp_path, cli, monkeypatch):
    """The loss curve and the weights after Ctrl-C + --resume equal those of an uninterrupted run."""
    common = ["--epochs", "2", "--impl", "scratch", "--model_type", "lstm", "--dropout", "0.2"]
    code, _, err = cli(train.main, lm_args(lm_data, tmp_path / "a", *common))
    assert code == 0, err
    uninterrupted = load_checkpoint(tmp_path / "a" / "run" / "last.pt", "stage2_rnn_lstm")

    real_step = torch.optim.AdamW.step
    calls = {"n": 0}

    def step_then_ctrl_c(self, *args, **kwargs):
        result = real_step(self, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 20:
            os.kill(os.getpid(), signal.SIGINT)
        return result
    monkeypatch.setattr(torch.optim.AdamW, "step", step_then_ctrl_c)
    code, _, err = cli(train.main, lm_args(lm_data, tmp_path / "b", *common))
    assert code == 130 and "--resume" in err
    monkeypatch.setattr(torch.optim.AdamW, "step", real_step)
    saved = load_checkpoint(tmp_path / "b" / "run" / "last.pt", "stage2_rnn_lstm")
    assert saved["global_step"] == 20 and saved["hidden"] is not None

    code, _, err = cli(train.main, lm_args(lm_data, tmp_path / "b", *common, "--resume"))
    assert code == 0, err
    resumed = load_checkpoint(tmp_path / "b" / "run" / "last.pt", "stage2_rnn_lstm")
    for name, value in uninterrupted["model_state"].items():
        assert torch.equal(resumed["model_state"][name], value), name
    drop = ("tokens_per_s", "elapsed_s")
    assert [{k: v for k, v in r.items() if k not in drop} for r in uninterrupted["history"]] == \
        [{k: v for k, v in r.items() if k not in drop} for r in resumed["history"]]


def test_classifier_smoke_and_resume_guard(tiny_data, tmp_path, cli):
    argv = ["--data_dir", str(tiny_data), "--out_dir", str(tmp_path / "run"), "--checkpoint",
            str(tmp_path / "ck" / "clf.pt"), "--embed_dim", "16", "--hidden_dim", "16", "--epochs", "3",
            "--patience", "3", "--num_threads", "1", "--lr", "0.01", "--batch_size", "16"]
    code, _, err = cli(train_classifier.main, argv + ["--impl", "scratch"])
    assert code == 0, err
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["split"] == "test" and metrics["metrics"]["accuracy"] > 0.8
    assert {"macro_f1", "latency_ms_bs1", "val_accuracy"} <= set(metrics["metrics"])
    assert (tmp_path / "ck" / "clf.vocab.json").is_file()
    code, _, err = cli(train_classifier.main, argv + ["--dataset", "ag_news", "--out_dir", str(tmp_path / "ag"),
                                                      "--checkpoint", str(tmp_path / "ck" / "ag.pt")])
    assert code == 0, err
    code, _, err = cli(train_classifier.main, argv + ["--out_dir", str(tmp_path / "none"), "--resume"])
    assert code == 2 and "no resumable checkpoint" in err
    # a finished run can train for more epochs; another model shape or data set is refused
    code, _, err = cli(train_classifier.main, argv + ["--impl", "scratch", "--epochs", "4", "--hidden_dim", "32",
                                                      "--resume"])
    assert code == 2 and "--hidden_dim 16 (now 32)" in err and err.count("\n") == 1
    code, _, err = cli(train_classifier.main, argv + ["--impl", "scratch", "--epochs", "4", "--resume"])
    assert code == 0, err
    assert len(json.loads((tmp_path / "run" / "history.json").read_text())) == 4
    code, _, err = cli(train_classifier.main, argv + ["--dataset", "ag_news", "--resume"])
    assert code == 2 and "was trained on imdb, not ag_news" in err
