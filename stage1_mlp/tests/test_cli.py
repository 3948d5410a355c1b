"""train.py and evaluate.py end to end on tiny data: smoke runs, resume, and every bad input."""
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from scripts.common import checkpoint_header, load_checkpoint, run_main, save_checkpoint
from stage1_mlp import evaluate, train

STAGE_DIR = Path(__file__).resolve().parents[1]
SMALL = ["--buckets", "2000", "--embed_dim", "16", "--hidden_dim", "16", "--num_threads", "1", "--min_freq", "1"]


def train_args(tiny_data, tmp_path, *extra):
    return ["--data_dir", str(tiny_data), "--out_dir", str(tmp_path / "run"),
            "--checkpoint", str(tmp_path / "ck" / "best_model.pt"), *SMALL, *extra]


@pytest.mark.parametrize("impl", ["torch", "scratch"])
def test_train_then_evaluate_smoke(tiny_data, tmp_path, cli, impl):
    code, out, err = cli(train.main, train_args(tiny_data, tmp_path, "--impl", impl, "--epochs", "3", "--lr", "0.01"))
    assert code == 0, err
    run_dir = tmp_path / "run"
    for name in ("metrics.json", "history.json", "curves.png", "train.log", "last.pt", "vocab.json"):
        assert (run_dir / name).is_file(), name
    assert (tmp_path / "ck" / "best_model.vocab.json").is_file()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["stage"] == "stage1_mlp" and metrics["model"] == f"ngram_mlp_{impl}"
    assert metrics["metrics"]["val_accuracy"] > 0.9  # the toy task is easy
    assert "samples/s" in (run_dir / "train.log").read_text()

    metrics_out = tmp_path / "m" / "eval.json"
    code, out, err = cli(evaluate.main, ["--checkpoint", str(tmp_path / "ck" / "best_model.pt"), "--data_dir",
                                         str(tiny_data), "--out_dir", str(tmp_path / "eval"), "--metrics_out",
                                         str(metrics_out), "--latency_samples", "20", "--num_threads", "1"])
    assert code == 0, err
    result = json.loads(metrics_out.read_text())
    assert result["split"] == "test" and result["metrics"]["accuracy"] > 0.9
    assert {"macro_f1", "per_class", "latency_ms_bs1", "throughput_samples_per_s"} <= set(result["metrics"])
    assert (tmp_path / "eval" / "confusion_matrix.png").is_file()
    assert "accuracy" in out and "ms/document" in out

    code, out, _ = cli(evaluate.main, ["--model_path", str(tmp_path / "ck" / "best_model.pt"),  # the original spelling
                                       "--text", "A wonderful, superb and moving film!"])
    model_line, prediction = out.split("\n", 1)
    assert code == 0 and model_line.startswith("model: ") and "best_model.pt (best checkpoint" in model_line
    assert prediction.startswith("positive") and "negative" in prediction


def test_ag_news_four_classes(tiny_data, tmp_path, cli):
    code, _, err = cli(train.main, train_args(tiny_data, tmp_path, "--dataset", "ag_news", "--epochs", "3",
                                              "--lr", "0.01"))
    assert code == 0, err
    code, out, _ = cli(evaluate.main, ["--checkpoint", str(tmp_path / "ck" / "best_model.pt"), "--data_dir",
                                       str(tiny_data), "--out_dir", str(tmp_path / "eval"),
                                       "--latency_samples", "5"])
    assert code == 0 and "Sci/Tech" in out


@pytest.fixture(scope="module")
def trained(tiny_data, tmp_path_factory):
    """One small trained checkpoint shared by the bad-input tests."""
    tmp = tmp_path_factory.mktemp("trained")
    with pytest.raises(SystemExit) as info:
        run_main(train.main, train_args(tiny_data, tmp, "--epochs", "1"))
    assert info.value.code == 0
    return tmp / "ck" / "best_model.pt"


def feed(monkeypatch, lines):
    """Type `lines` at the prompt, then end of input (Ctrl-D)."""
    monkeypatch.setattr("sys.stdin", io.StringIO("".join(line + "\n" for line in lines)))


def test_interactive_survives_empty_input_and_ends_on_eof(trained, monkeypatch, cli):
    feed(monkeypatch, ["", "   ", "...", "a brilliant superb film", "zzzz qqqq"])
    code, out, _ = cli(evaluate.main, ["--checkpoint", str(trained), "--interactive"])
    assert code == 0
    assert out.count("(empty line") == 2 and "no words to classify" in out
    assert "positive" in out and "only the model's prior" in out  # unknown words are said so


def test_interactive_commands(trained, monkeypatch, cli):
    """The course's REPL commands: help, settings, the classifier's :features, sampling settings refused, quit."""
    feed(monkeypatch, [":help", ":settings", ":features not a brilliant zzzz film", ":features", ":temperature 0.5",
                       ":bogus", ":q", "a brilliant film"])
    code, out, _ = cli(evaluate.main, ["--checkpoint", str(trained), "--interactive"])
    assert code == 0
    assert ":features" in out and ":quit" in out and "(no settings)" in out
    assert "distinct features" in out and "zzzz(<unk>)" in out and "e.g. :features" in out
    assert ":temperature does not apply here" in out and "unknown command :bogus" in out
    assert out.count("positive") == 1  # the banner names the classes; nothing was classified after :q


@pytest.mark.parametrize("argv, message", [
    (["--text", ""], "--text is empty"),
    (["--text", "... -- ;;"], "no words to classify"),
])
def test_evaluate_bad_text(trained, cli, argv, message):
    code, _, err = cli(evaluate.main, ["--checkpoint", str(trained), *argv])
    assert code == 2 and message in err and err.count("\n") == 1


def test_unknown_dataset_flag(cli):
    code, _, err = cli(train.main, ["--dataset", "mnist"])
    assert code == 2 and "invalid choice: 'mnist'" in err and err.count("\n") == 1


def test_no_data_and_no_network(tmp_path, monkeypatch, cli):
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv("MY_LLM_DATA", str(tmp_path / "empty"))
    code, _, err = cli(train.main, ["--out_dir", str(tmp_path / "run"), "--checkpoint", str(tmp_path / "ck.pt")])
    assert code == 2 and err.count("\n") == 1
    assert "no local copy of imdb (train.jsonl.gz)" in err and "MY_LLM_DATA" in err


def test_checkpoint_of_another_stage_and_truncated_checkpoint(trained, tmp_path, cli):
    other = tmp_path / "other.pt"
    save_checkpoint(other, {**checkpoint_header("stage2_rnn_lstm", "lstm"), "model_state": {}})
    code, _, err = cli(evaluate.main, ["--checkpoint", str(other), "--text", "good"])
    assert code == 2 and "made by stage2_rnn_lstm" in err and err.count("\n") == 1

    cut = tmp_path / "cut.pt"
    data = trained.read_bytes()
    cut.write_bytes(data[: len(data) // 3])
    code, _, err = cli(evaluate.main, ["--checkpoint", str(cut), "--text", "good"])
    assert code == 2 and "not a readable checkpoint" in err and err.count("\n") == 1

    code, _, err = cli(evaluate.main, ["--checkpoint", str(tmp_path / "none.pt"), "--text", "good"])
    assert code == 2 and "does not exist" in err


def test_resume_without_a_checkpoint_is_a_user_error(tmp_path, tiny_data, cli):
    code, _, err = cli(train.main, train_args(tiny_data, tmp_path, "--resume"))
    assert code == 2 and "no resumable checkpoint" in err


def test_resume_refuses_other_flags_and_keeps_the_run(tmp_path, tiny_data, cli):
    """--resume with another --impl, --lr or --dataset is refused in one line; last.pt is left as it was."""
    assert cli(train.main, train_args(tiny_data, tmp_path, "--epochs", "1"))[0] == 0
    last = tmp_path / "run" / "last.pt"
    before = last.read_bytes()
    for extra, message in [(["--impl", "scratch"], "--impl torch (now scratch)"), (["--lr", "0.5"], "--lr 0.001"),
                           (["--dataset", "ag_news"], "trained on imdb, not ag_news")]:
        code, _, err = cli(train.main, train_args(tiny_data, tmp_path, "--epochs", "2", "--resume", *extra))
        assert code == 2 and message in err and err.count("\n") == 1, err
    assert last.read_bytes() == before
    assert cli(train.main, train_args(tiny_data, tmp_path, "--epochs", "2", "--resume"))[0] == 0  # same flags: fine


def test_resume_of_a_run_that_reached_max_steps_trains_nothing_more(tmp_path, tiny_data, cli):
    """Resuming a run that stopped at --max_steps (before its last epoch) adds no step and no history row."""
    args = train_args(tiny_data, tmp_path, "--epochs", "2", "--max_steps", "3")
    assert cli(train.main, args)[0] == 0
    history = (tmp_path / "run" / "history.json").read_text()
    assert cli(train.main, [*args, "--resume"])[0] == 0
    assert (tmp_path / "run" / "history.json").read_text() == history
    assert [row["steps"] for row in json.loads(history)] == [3]


def test_model_path_is_the_checkpoint_option():
    """`--model_path`, the original course's spelling, is the same option as `--checkpoint`."""
    for parser in (train.build_parser(), evaluate.build_parser()):
        assert parser.parse_args(["--model_path", "a.pt"]).checkpoint == "a.pt"
        assert parser.parse_args(["--checkpoint", "b.pt"]).checkpoint == "b.pt"


@pytest.mark.parametrize("program", ["train", "evaluate", "bench"])
def test_help_runs_from_the_repo_root_the_stage_folder_and_as_a_module(program):
    """Nothing edits the import path: the three ways of starting a program all find the course's packages."""
    root = STAGE_DIR.parent
    for argv, cwd in [([f"stage1_mlp/{program}.py"], root), ([f"{program}.py"], STAGE_DIR),
                      (["-m", f"stage1_mlp.{program}"], root)]:
        done = subprocess.run([sys.executable, *argv, "--help"], cwd=cwd, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0 and "(default:" in done.stdout, (argv, done.stderr)
        for word in ("round", "issue", "floor", "session"):
            assert word not in done.stdout.lower(), (argv, word)


def test_ctrl_c_mid_epoch_then_resume_gives_the_same_model(tiny_data, tmp_path, cli, monkeypatch):
    """Interrupt at step 5 of epoch 2, resume, and land on bit-identical weights and history."""
    common = ["--epochs", "3", "--patience", "5", "--batch_size", "32", "--impl", "scratch", "--dropout", "0.3"]
    code, _, err = cli(train.main, train_args(tiny_data, tmp_path / "a", *common))
    assert code == 0, err
    uninterrupted = load_checkpoint(tmp_path / "a" / "run" / "last.pt", "stage1_mlp")

    real_step, calls = train.train_step, {"n": 0}
    steps_per_epoch = -(-360 // 32)  # 400 documents, 10% held out for validation

    def step_then_ctrl_c(*args, **kwargs):
        loss = real_step(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] == steps_per_epoch + 5:
            os.kill(os.getpid(), signal.SIGINT)  # a real Ctrl-C, delivered in the middle of epoch 2
        return loss
    monkeypatch.setattr(train, "train_step", step_then_ctrl_c)
    code, _, err = cli(train.main, train_args(tiny_data, tmp_path / "b", *common))
    assert code == 130 and "--resume" in err
    saved = load_checkpoint(tmp_path / "b" / "run" / "last.pt", "stage1_mlp")
    assert saved["epoch"] == 1 and saved["step_in_epoch"] == 5
    assert (tmp_path / "b" / "ck" / "best_model.pt").is_file()  # epoch 1's best model is not lost

    monkeypatch.setattr(train, "train_step", real_step)
    code, _, err = cli(train.main, train_args(tiny_data, tmp_path / "b", *common, "--resume"))
    assert code == 0, err
    resumed = load_checkpoint(tmp_path / "b" / "run" / "last.pt", "stage1_mlp")
    for name, value in uninterrupted["model_state"].items():
        assert torch.equal(resumed["model_state"][name], value), name
    strip = [{k: v for k, v in row.items() if k not in ("samples_per_s", "epoch_seconds")}
             for row in uninterrupted["history"]]
    assert strip == [{k: v for k, v in row.items() if k not in ("samples_per_s", "epoch_seconds")}
                     for row in resumed["history"]]


def test_real_sigint_to_the_process_saves_and_exits_130(tiny_data, tmp_path):
    """The shell's Ctrl-C: a SIGINT to a running `python train.py`, from outside."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    argv = [sys.executable, str(STAGE_DIR / "train.py"), *train_args(tiny_data, tmp_path, "--epochs", "1000",
                                                                     "--patience", "1000")]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.time() + 120
    for line in proc.stdout:  # wait until the first epoch is done
        if line.startswith("epoch") or time.time() > deadline:
            break
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted: saved" in err and "Traceback" not in err
    saved = load_checkpoint(tmp_path / "run" / "last.pt", "stage1_mlp")
    assert saved["epoch"] >= 1 and "optimizer_state" in saved
