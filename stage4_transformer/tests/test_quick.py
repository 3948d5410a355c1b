"""--preset quick, the watchable run (one bar, TensorBoard, history at every epoch, a sample translation), and the
newest-model lookup of evaluate.py, translate.py and the notebook."""
import json

import pytest
import torch

from scripts.common import load_checkpoint
from stage4_transformer import evaluate, train, train_classifier, translate, translator
from stage4_transformer.tests.test_train import TINY


def resolved(*argv):
    return train.resolve_args(train.build_parser().parse_args(list(argv)))


def test_quick_preset_fills_the_unset_flags_and_writes_its_own_files():
    quick, default = resolved("--preset", "quick"), resolved()
    for key, value in train.PRESETS["quick"].items():
        if key != "epochs":
            assert getattr(quick, key) == value, key
    for key, value in train.PRESETS["default"].items():
        if key != "epochs":
            assert getattr(default, key) == value, key
    assert quick.checkpoint.endswith("checkpoints/best_transformer_quick.pt")
    assert quick.out_dir.endswith("runs/transformer_scratch_multi30k_quick")
    assert default.checkpoint.endswith("checkpoints/best_transformer.pt")
    assert default.out_dir.endswith("runs/transformer_scratch_multi30k")
    # flags given win over the preset; --layers sets both depths
    mine = resolved("--preset", "quick", "--lr", "1e-3", "--layers", "3", "--d_model", "128")
    assert (mine.lr, mine.encoder_layers, mine.decoder_layers, mine.d_model) == (1e-3, 3, 3, 128)
    assert train.default_epochs(torch.device("cpu"), False, "quick") == train.PRESETS["quick"]["epochs"][0]


def test_quick_preset_is_smaller_and_shorter_than_the_default():
    quick, default = train.PRESETS["quick"], train.PRESETS["default"]
    assert quick["epochs"] < default["epochs"] and quick["max_len"] < default["max_len"]
    assert quick["encoder_layers"] + quick["decoder_layers"] < default["encoder_layers"] + default["decoder_layers"]


def test_a_run_is_watchable_while_it_trains(mt_data, tmp_path, cli):
    """Stopped by --max_steps in its second epoch: the first epoch's history, curves, sample and events are there."""
    run = tmp_path / "run"
    argv = ["--data_dir", mt_data, "--out_dir", run, "--checkpoint", tmp_path / "ck" / "best.pt", *TINY,
            "--epochs", "3", "--average_last", "0", "--limit", "200", "--val_limit", "10"]
    code, _, err = cli(train.main, [*argv, "--epochs", "1"])
    assert code == 0, err
    steps_per_epoch = load_checkpoint(run / "last.pt", train.STAGE)["history"][0]["steps"]
    code, _, err = cli(train.main, [*argv, "--out_dir", tmp_path / "stopped", "--max_steps", steps_per_epoch + 1])
    assert code == 0, err
    history = json.loads((tmp_path / "stopped" / "history.json").read_text())
    assert [r["epoch"] for r in history] == [1, 2]           # the epoch --max_steps cut short is validated too
    assert (tmp_path / "stopped" / "curves.png").stat().st_size > 1000
    assert list((tmp_path / "stopped").glob("events.out.tfevents.*"))
    log = (tmp_path / "stopped" / "train.log").read_text()
    assert f"en: {train.SAMPLE_SENTENCE}" in log and "fr: " in log and "target tokens/s" in log
    progress = json.loads((tmp_path / "stopped" / "progress.json").read_text())
    assert progress["state"] == "finished" and progress["model"] == "transformer_scratch"
    assert progress["total_steps"] == steps_per_epoch + 1 == progress["step"]
    metrics = json.loads((run / "metrics.json").read_text())
    assert (metrics["model"], metrics["dataset"]) == (progress["model"], progress["dataset"])


def test_classifier_run_is_watchable(tiny_data, tmp_path, cli):
    argv = ["--data_dir", tiny_data, "--out_dir", tmp_path / "run", "--checkpoint", tmp_path / "clf.pt",
            "--d_model", "32", "--layers", "1", "--d_ff", "64", "--epochs", "2", "--patience", "2",
            "--vocab_size", "300", "--batch_size", "16", "--num_threads", "1"]
    code, _, err = cli(train_classifier.main, argv)
    assert code == 0, err
    assert len(json.loads((tmp_path / "run" / "history.json").read_text())) == 2
    assert (tmp_path / "run" / "curves.png").is_file() and list((tmp_path / "run").glob("events.out.tfevents.*"))
    progress = json.loads((tmp_path / "run" / "progress.json").read_text())
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert progress["state"] == "finished" and progress["step"] == progress["total_steps"] > 0
    assert (progress["model"], progress["dataset"]) == (metrics["model"], metrics["dataset"])


@pytest.fixture
def stage_dir(tmp_path, monkeypatch):
    """An empty stage folder for the lookup (train.py's default paths are inside the real one)."""
    monkeypatch.setattr(translator, "STAGE_DIR", tmp_path / "stage")
    monkeypatch.chdir(tmp_path)
    return tmp_path / "stage"


def test_programs_load_the_newest_model_without_checkpoint(mt_data, stage_dir, tmp_path, cli):
    for program, argv in ((evaluate, ["--data_dir", mt_data]), (translate, ["A dog is running."])):
        code, _, err = cli(program.main, argv)
        assert code == 2 and "no trained model" in err and "--preset quick" in err, err
    # a run with its best checkpoint elsewhere: its last.pt is the only model the lookup can find
    run = stage_dir / "runs" / "transformer_scratch_multi30k"
    argv = ["--data_dir", mt_data, "--out_dir", run, "--checkpoint", tmp_path / "elsewhere" / "best.pt", *TINY,
            "--epochs", "2", "--limit", "200", "--val_limit", "10"]
    assert cli(train.main, argv)[0] == 0
    code, out, err = cli(evaluate.main, ["--data_dir", mt_data, "--limit", "5", "--beam_size", "2",
                                         "--out_dir", tmp_path / "eval", "--num_threads", "1"])
    assert code == 0, err
    assert ("model: stage/runs/transformer_scratch_multi30k/last.pt (the latest state of a run; preset default, "
            "epoch 2 of 2") in out
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["checkpoint"] == str(run / "last.pt")
    code, out, err = cli(translate.main, ["A dog is running.", "--num_threads", "1"])
    assert code == 0 and out.strip() and "model: stage/runs/transformer_scratch_multi30k/last.pt" in err, err
    # a best checkpoint, written later, wins over any run's last.pt; a missing --checkpoint names it
    quick = stage_dir / "checkpoints" / "best_transformer_quick.pt"
    argv = ["--data_dir", mt_data, "--out_dir", tmp_path / "quick", "--checkpoint", quick, *TINY, "--epochs", "1",
            "--limit", "200", "--val_limit", "10", "--preset", "quick"]
    assert cli(train.main, argv)[0] == 0
    code, out, err = cli(translate.main, ["A dog is running.", "--num_threads", "1"])
    assert code == 0 and "model: stage/checkpoints/best_transformer_quick.pt (best checkpoint; preset quick, " \
                          "epoch 1 of 1, val loss" in err and "val BLEU" in err, err
    code, _, err = cli(evaluate.main, ["--checkpoint", tmp_path / "nope.pt"])
    assert code == 2 and "the newest model of this stage is stage/checkpoints/best_transformer_quick.pt" in err
