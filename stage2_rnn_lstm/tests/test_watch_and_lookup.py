"""What a learner sees of a run (the whole-run bar's files: history.json, curves.png, TensorBoard events, progress.json
and the samples), the quick preset, --resume refusing other settings, and the newest-model lookup of evaluate.py,
generate.py and the notebook."""
import json

import pytest

from scripts.common import load_checkpoint
from scripts.testing import TypedLines, ctrl_c_after_steps
from stage2_rnn_lstm import evaluate, generate, train, train_classifier

TINY = ["--embed_dim", "16", "--hidden_dim", "16", "--batch_size", "4", "--seq_len", "16", "--num_threads", "1",
        "--warmup_steps", "2", "--limit", "2000"]      # 2000 training characters: 32 batches per epoch
BATCHES_PER_EPOCH = 32


def stage_dir(tmp_path):
    """A stand-in stage folder, laid out as train.py's defaults lay it out."""
    return tmp_path / "stage"


def lm_args(data, stage, *extra, run="lstm_char_torch", best="best_lstm_char.pt"):
    return ["--data_dir", data, "--out_dir", stage / "runs" / run, "--checkpoint", stage / "checkpoints" / best,
            *TINY, *extra]


def events(folder):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    return acc


def test_a_run_stopped_after_its_first_evaluation_can_be_watched(lm_data, tmp_path, cli, monkeypatch):
    """history.json, curves.png, TensorBoard events, progress.json and a sample exist after the first evaluation."""
    stage = stage_dir(tmp_path)
    restore = ctrl_c_after_steps(monkeypatch, BATCHES_PER_EPOCH + 3)
    code, out, err = cli(train.main, lm_args(lm_data, stage, "--epochs", "3"))
    restore()
    assert code == 130 and "--resume" in err
    run = stage / "runs" / "lstm_char_torch"
    history = json.loads((run / "history.json").read_text())
    assert [row["epoch"] for row in history] == [1] and "tokens_per_s" in history[0]
    assert (run / "curves.png").stat().st_size > 1000
    progress = json.loads((run / "progress.json").read_text())
    assert progress["state"] == "interrupted" and progress["step"] == BATCHES_PER_EPOCH + 3
    assert progress["total_steps"] == 3 * BATCHES_PER_EPOCH and progress["model"] == "lstm_char_torch"
    log = (run / "train.log").read_text()
    assert f"sample at step {BATCHES_PER_EPOCH}:\nROMEO:" in log and "tokens/s" in log
    acc = events(run)
    assert len(acc.Scalars("train/loss")) == BATCHES_PER_EPOCH + 3 and len(acc.Scalars("eval/val_loss")) == 1
    assert "sample/text_summary" in acc.Tags()["tensors"]

    # the run carries on to its end: one bar over the whole run, a sample at every evaluation, marked finished
    code, out, err = cli(train.main, lm_args(lm_data, stage, "--epochs", "3", "--resume"))
    assert code == 0, err
    assert len(json.loads((run / "history.json").read_text())) == 3
    assert json.loads((run / "progress.json").read_text())["state"] == "finished"
    assert (run / "train.log").read_text().count("ROMEO:") == 3
    assert len(events(run).Scalars("train/loss")) == 3 * BATCHES_PER_EPOCH


def test_the_sample_is_the_same_for_the_same_weights(lm_data, tmp_path, cli):
    """Fixed prompt and seed: two runs of one command print the same samples (and training RNG is untouched)."""
    logs = []
    for name in ("a", "b"):
        code, _, err = cli(train.main, lm_args(lm_data, tmp_path / name, "--epochs", "1"))
        assert code == 0, err
        log = (tmp_path / name / "runs" / "lstm_char_torch" / "train.log").read_text()
        logs.append(log[log.index("ROMEO:"):log.index("ROMEO:") + 200])
    assert logs[0] == logs[1]


def test_quick_preset_resolves_to_its_own_files():
    args = train.resolve_args(train.build_parser().parse_args(["--preset", "quick"]))
    quick = train.PRESETS["quick"]["char"]
    assert {key: getattr(args, key) for key in quick} == quick
    assert args.hidden_dim < train.DEFAULTS["char"]["hidden_dim"] and args.epochs < train.DEFAULTS["char"]["epochs"]
    assert args.checkpoint.endswith("checkpoints/best_lstm_char_quick.pt")
    assert args.out_dir.endswith("runs/lstm_char_torch_quick") and train.model_label(args) == "lstm_char_torch_quick"
    # a flag given on the command line wins over the preset
    args = train.resolve_args(train.build_parser().parse_args(["--preset", "quick", "--epochs", "1", "--impl",
                                                                "scratch"]))
    assert args.epochs == 1 and args.hidden_dim == quick["hidden_dim"]
    assert args.out_dir.endswith("lstm_char_scratch_quick")
    default = train.resolve_args(train.build_parser().parse_args([]))
    assert default.checkpoint.endswith("checkpoints/best_lstm_char.pt") and default.out_dir.endswith("lstm_char_torch")


def test_help_lists_both_presets_and_their_values(cli):
    code, out, _ = cli(train.main, ["--help"])
    out = " ".join(out.split())
    assert code == 0 and "--preset {default,quick}" in out and "(default: default)" in out
    assert "(default: char 7, word 6, --preset quick: 3)" in out
    assert "--preset quick: 256" in out


def test_quick_preset_is_for_the_char_model(cli):
    code, _, err = cli(train.main, ["--preset", "quick", "--vocab_type", "word"])
    assert code == 2 and "--preset quick trains a char model, not --vocab_type word" in err and err.count("\n") == 1


@pytest.mark.parametrize("changed, message", [
    (["--model_type", "gru"], "--model_type lstm (now gru)"),
    (["--hidden_dim", "32"], "--hidden_dim 16 (now 32)"),
    (["--impl", "scratch"], "--impl torch (now scratch)"),
    (["--preset", "quick"], "--embed_dim 16 (now 64)"),        # the preset's values count as given
    (["--epochs", "3"], "--epochs 2 (now 3)"),
])
def test_resume_refuses_other_model_settings(lm_data, tmp_path, cli, monkeypatch, changed, message):
    """--resume with other settings would train the old model under the new model's name: refused, nothing lost."""
    stage = stage_dir(tmp_path)
    restore = ctrl_c_after_steps(monkeypatch, 5)
    assert cli(train.main, lm_args(lm_data, stage, "--epochs", "2"))[0] == 130
    restore()
    last = stage / "runs" / "lstm_char_torch" / "last.pt"
    before = last.read_bytes()
    argv = lm_args(lm_data, stage, "--epochs", "2", "--resume")
    flag = changed[0]
    if flag in argv:            # replace the value the first run was given
        argv[argv.index(flag) + 1] = changed[1]
    else:
        argv += changed
    if flag == "--preset":      # the preset fills only what is not given: leave its shape unset
        i = argv.index("--embed_dim")
        del argv[i:i + 2]
    code, _, err = cli(train.main, argv)
    assert code == 2 and message in err and err.count("\n") == 1 and "--resume" in err
    assert last.read_bytes() == before
    assert not (stage / "runs" / "lstm_char_torch" / "history.json").exists()


def test_lookup_loads_a_stopped_runs_last_pt_then_the_best_model(lm_data, tmp_path, cli, monkeypatch):
    """Without --checkpoint, generate.py (one-shot and --interactive) and evaluate.py load the newest model:
    a run's last.pt when that is all there is (stopped before its first evaluation), then the best checkpoint."""
    stage = stage_dir(tmp_path)
    monkeypatch.setattr(evaluate, "STAGE_DIR", stage)
    code, _, err = cli(generate.main, ["--prompt", "First"])
    assert code == 2 and "no trained model in" in err and "train.py --preset quick" in err

    restore = ctrl_c_after_steps(monkeypatch, 5)
    assert cli(train.main, lm_args(lm_data, stage, "--epochs", "2"))[0] == 130
    restore()
    assert not (stage / "checkpoints" / "best_lstm_char.pt").exists()
    monkeypatch.setattr("sys.stdin", TypedLines(["First", ":quit"]))
    code, out, err = cli(generate.main, ["--interactive", "--max_new_tokens", "5", "--num_threads", "1"])
    assert code == 0, err
    assert "model: " in out and "last.pt (the latest state of a run; preset default, epoch 0 of 2, step 5)" in out
    code, out, err = cli(generate.main, ["--prompt", "First", "--max_new_tokens", "5"])
    assert code == 0 and out.startswith("First") and "last.pt (the latest state of a run" in err
    code, out, err = cli(evaluate.main, ["--data_dir", lm_data, "--out_dir", tmp_path / "eval", "--num_threads", "1"])
    assert code == 0, err
    assert "last.pt (the latest state of a run" in out
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["checkpoint"].endswith("last.pt")

    # a quick run finishes: its best checkpoint is found (the classifier's checkpoints never are)
    (stage / "checkpoints" / "best_classifier_imdb.pt").write_bytes(b"not a language model")
    code, _, err = cli(train.main, lm_args(lm_data, stage, "--preset", "quick", "--epochs", "1", "--dropout", "0",
                                           run="lstm_char_torch_quick", best="best_lstm_char_quick.pt"))
    assert code == 0, err
    code, out, err = cli(evaluate.main, ["--data_dir", lm_data, "--out_dir", tmp_path / "eval", "--num_threads", "1"])
    assert code == 0, err
    assert "best_lstm_char_quick.pt (best checkpoint; preset quick, epoch 1 of 1" in out
    # a --checkpoint that is not there names the newest model there is
    code, _, err = cli(generate.main, ["--checkpoint", tmp_path / "nope.pt"])
    assert code == 2 and "does not exist" in err and "best_lstm_char_quick.pt" in err and err.count("\n") == 1


def test_classifier_run_can_be_watched_and_refuses_other_settings_on_resume(tiny_data, tmp_path, cli):
    argv = ["--data_dir", str(tiny_data), "--out_dir", str(tmp_path / "run"), "--checkpoint",
            str(tmp_path / "ck" / "clf.pt"), "--embed_dim", "16", "--hidden_dim", "16", "--epochs", "2",
            "--patience", "3", "--num_threads", "1", "--lr", "0.01", "--batch_size", "16"]
    code, _, err = cli(train_classifier.main, argv)
    assert code == 0, err
    run = tmp_path / "run"
    assert len(json.loads((run / "history.json").read_text())) == 2 and (run / "curves.png").is_file()
    progress = json.loads((run / "progress.json").read_text())
    assert progress["state"] == "finished" and progress["step"] == progress["total_steps"] > 0
    assert progress["model"] == json.loads((run / "metrics.json").read_text())["model"] == "lstm_classifier_torch"
    assert len(events(run).Scalars("eval/val_acc")) == 2
    code, _, err = cli(train_classifier.main, argv + ["--model_type", "gru", "--resume"])
    assert code == 2 and "--model_type lstm (now gru)" in err and err.count("\n") == 1
    assert load_checkpoint(run / "last.pt", "stage2_rnn_lstm")["config"]["model_type"] == "lstm"
