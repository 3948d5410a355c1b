"""Watching a run (one bar, TensorBoard, history refreshed at every evaluation), the quick preset, finding the
newest model without --checkpoint, and the benchmark's quick part, all on tiny data."""
import json
import os
import shutil
import signal
from pathlib import Path

import pytest

from scripts.common import load_checkpoint
from stage1_mlp import bench, evaluate, train
from stage1_mlp.tests.test_cli import SMALL, train_args

REVIEW = "A wonderful, superb and moving film!"


def test_quick_preset_fills_unset_flags_and_names_its_own_outputs():
    quick = train.parse_args(["--preset", "quick"])
    for key, value in train.PRESETS["quick"].items():
        assert getattr(quick, key) == value, key
    assert Path(quick.out_dir).name == "imdb_torch_quick" and Path(quick.checkpoint).name == "best_model_quick.pt"
    default = train.parse_args([])
    assert default.preset == "default" and default.epochs == 10 and default.ngrams == 3 and default.lr == 1e-3
    assert Path(default.out_dir).name == "imdb_torch" and Path(default.checkpoint).name == "best_model.pt"
    mixed = train.parse_args(["--preset", "quick", "--epochs", "5", "--impl", "scratch"])   # a given flag wins
    assert mixed.epochs == 5 and mixed.batch_size == 256 and Path(mixed.out_dir).name == "imdb_scratch_quick"
    text = " ".join(train.build_parser().format_help().split())   # as one line: argparse wraps at the terminal width
    assert "{default,quick}" in text and "default 10, quick 2" in text and "default 2,000,000, quick 500,000" in text


def test_bar_tensorboard_history_and_samples_of_a_run(tiny_data, tmp_path, cli):
    code, out, err = cli(train.main, train_args(tiny_data, tmp_path, "--epochs", "2", "--lr", "0.01",
                                                "--batch_size", "32"))
    assert code == 0, err
    run = tmp_path / "run"
    assert list(run.glob("events.out.tfevents.*")), "no TensorBoard event file"
    progress = json.loads((run / "progress.json").read_text())
    assert progress["state"] == "finished" and progress["step"] == progress["total_steps"] == 2 * 12  # 360 / 32
    assert progress["model"] == "ngram_mlp_torch" and progress["dataset"] == "imdb"
    assert len(json.loads((run / "history.json").read_text())) == 2 and (run / "curves.png").is_file()
    log = (run / "train.log").read_text()
    assert log.count("sample at step") == 2 and "The acting was not good, the story was bad." in log
    assert "samples/s" in log


def test_history_is_written_at_the_first_evaluation_of_a_run_stopped_early(tiny_data, tmp_path, cli, monkeypatch):
    """Ctrl-C in epoch 2: history.json and curves.png already hold epoch 1; progress.json says interrupted;
    a resumed run continues the same bar (its total and its step)."""
    real_step, calls = train.train_step, {"n": 0}

    def step_then_ctrl_c(*args, **kwargs):
        loss = real_step(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 12 + 3:   # 12 steps per epoch
            os.kill(os.getpid(), signal.SIGINT)
        return loss
    monkeypatch.setattr(train, "train_step", step_then_ctrl_c)
    argv = train_args(tiny_data, tmp_path, "--epochs", "3", "--patience", "5", "--batch_size", "32")
    assert cli(train.main, argv)[0] == 130
    run = tmp_path / "run"
    assert [row["epoch"] for row in json.loads((run / "history.json").read_text())] == [1]
    assert (run / "curves.png").is_file() and list(run.glob("events.out.tfevents.*"))
    progress = json.loads((run / "progress.json").read_text())
    assert progress["state"] == "interrupted" and progress["step"] == 15 and progress["total_steps"] == 36

    monkeypatch.setattr(train, "train_step", real_step)
    assert cli(train.main, [*argv, "--resume"])[0] == 0
    progress = json.loads((run / "progress.json").read_text())
    assert progress["state"] == "finished" and progress["step"] == 36
    assert len(json.loads((run / "history.json").read_text())) == 3


@pytest.fixture()
def stage_copy(tmp_path, monkeypatch):
    """An empty stage folder for the newest-model lookup of evaluate.py."""
    monkeypatch.setattr(evaluate, "STAGE_DIR", tmp_path / "stage")
    return tmp_path / "stage"


def test_evaluate_without_checkpoint_loads_the_newest_model(tiny_data, tmp_path, stage_copy, cli):
    code, _, err = cli(evaluate.main, ["--text", REVIEW])
    assert code == 2 and "no trained model" in err and "--preset quick" in err

    # only a run's last.pt (a run stopped before its first best checkpoint was kept, or a best file deleted)
    assert cli(train.main, train_args(tiny_data, tmp_path, "--epochs", "1", "--lr", "0.01"))[0] == 0
    (stage_copy / "runs" / "imdb_torch").mkdir(parents=True)
    shutil.copy(tmp_path / "run" / "last.pt", stage_copy / "runs" / "imdb_torch" / "last.pt")
    code, out, err = cli(evaluate.main, ["--text", REVIEW])
    assert code == 0, err
    first, prediction = out.splitlines()[0], out.splitlines()[1]
    assert first.startswith("model: ") and "imdb_torch/last.pt (the latest state of a run; " in first
    assert "epoch 1 of 1" in first
    assert prediction.split()[0] in ("positive", "negative") and "%" in prediction

    # a best checkpoint is preferred, and says its epoch and validation accuracy
    (stage_copy / "checkpoints").mkdir()
    shutil.copy(tmp_path / "ck" / "best_model.pt", stage_copy / "checkpoints" / "best_model_quick.pt")
    code, out, _ = cli(evaluate.main, ["--text", REVIEW])
    assert code == 0 and "best_model_quick.pt (best checkpoint; " in out and "epoch 1 of 1" in out
    assert "val acc" in out.splitlines()[0] and out.splitlines()[1].split()[0] in ("positive", "negative")

    code, _, err = cli(evaluate.main, ["--checkpoint", str(tmp_path / "missing.pt"), "--text", REVIEW])
    assert code == 2 and "does not exist" in err and "best_model_quick.pt" in err and err.count("\n") == 1


def test_a_quick_model_is_evaluated_into_its_own_folder(tiny_data, tmp_path, stage_copy, cli):
    assert cli(train.main, train_args(tiny_data, tmp_path, "--preset", "quick", "--epochs", "1"))[0] == 0
    saved = load_checkpoint(tmp_path / "ck" / "best_model.pt", "stage1_mlp")
    assert saved["args"]["preset"] == "quick" and saved["args"]["batch_size"] == 256
    code, out, err = cli(evaluate.main, ["--checkpoint", str(tmp_path / "ck" / "best_model.pt"), "--data_dir",
                                         str(tiny_data), "--latency_samples", "5", "--num_threads", "1"])
    assert code == 0, err
    assert "preset quick" in out.splitlines()[0]
    assert (stage_copy / "runs" / "eval_imdb_quick" / "metrics.json").is_file()


def test_bench_quick_part_and_overview_on_tiny_data(tiny_data, tmp_path):
    results = tmp_path / "results"
    tiny = [*SMALL, "--lr", "0.01", "--epochs", "3", "--batch_size", "32"]
    summary = bench.run_quick(["--data_dir", str(tiny_data), "--num_threads", "1"], train_flags=tiny, results=results,
                              outputs=tmp_path)
    saved = json.loads((results / "quick.json").read_text())
    assert saved == summary and saved["command"] == "python stage1_mlp/train.py --preset quick"
    assert saved["test_accuracy"] > 0.8 and saved["seconds"] > 0 and "--preset quick" in saved["commands"][0]
    assert "metrics" not in saved   # not a metrics file: the course's classification table must not list it twice
    overview = bench.overview(results)
    quick, default, gpu = overview["rows"]
    assert quick["run"] == "quick" and quick["score"].startswith("test accuracy ") and quick["minutes"] >= 0
    assert default["minutes"] is None and default["score"] == "not measured" and gpu["run"] == "gpu"
    table = bench.overview_table(overview)
    assert "`python stage1_mlp/train.py --preset quick`" in table and "not measured" in table
