"""The shared infrastructure: exit codes, checkpoints, RNG state, metrics files, data lookup."""
import json
import os
import random
import signal

import numpy as np
import pytest
import torch

from scripts import common
from scripts.common import (ArgParser, StopOnInterrupt, TrainingInterrupted, UserError, add_common_args,
                            checkpoint_header, find_local_data, get_device, load_checkpoint, rng_state, run_main,
                            save_checkpoint, set_rng_state, write_metrics)


def exit_of(main, capsys):
    with pytest.raises(SystemExit) as info:
        run_main(main, [])
    return info.value.code, capsys.readouterr().err


def test_run_main_turns_user_error_into_one_line_and_status_2(capsys):
    def main(argv):
        raise UserError("the file x.csv is missing; pass --data_dir")
    code, err = exit_of(main, capsys)
    assert code == 2
    assert err == "error: the file x.csv is missing; pass --data_dir\n"


def test_run_main_interrupt_exits_130(capsys):
    def main(argv):
        raise TrainingInterrupted("saved last.pt")
    code, err = exit_of(main, capsys)
    assert code == 130 and "saved last.pt" in err


def test_run_main_broken_pipe_is_quiet(capsys):
    def main(argv):
        raise BrokenPipeError
    code, err = exit_of(main, capsys)
    assert code == 1 and err == ""


def test_run_main_turns_an_os_error_into_one_line_naming_the_path(tmp_path, capsys):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)

    def main(argv):
        (folder / "train.log").write_text("x")
    try:
        code, err = exit_of(main, capsys)
    finally:
        folder.chmod(0o700)
    if os.geteuid() == 0:       # root writes anywhere: try a path below a file instead
        def main(argv):         # noqa: F811
            (tmp_path / "file").write_text("x")
            (tmp_path / "file" / "train.log").write_text("x")
        code, err = exit_of(main, capsys)
        assert "file/train.log: Not a directory" in err
    else:
        assert "ro/train.log: Permission denied" in err
    assert code == 2 and err.startswith("error: cannot use /") and err.count("\n") == 1

    def main(argv):
        raise OSError(28, "No space left on device")
    code, err = exit_of(main, capsys)
    assert code == 2 and err == "error: No space left on device (OSError); check the paths and the free disk space\n"


def test_argparser_bad_choice_is_one_line_with_status_2(capsys):
    parser = ArgParser(prog="train.py")
    parser.add_argument("--dataset", choices=["imdb", "ag_news"])
    add_common_args(parser)
    with pytest.raises(SystemExit) as info:
        parser.parse_args(["--dataset", "mnist"])
    err = capsys.readouterr().err
    assert info.value.code == 2
    assert err.count("\n") == 1 and "invalid choice: 'mnist'" in err and "--help" in err


def test_device_auto_is_cpu_here_and_missing_cuda_is_a_user_error():
    assert get_device("cpu").type == "cpu"
    if not torch.cuda.is_available():
        assert get_device("auto").type in ("cpu", "mps")
        with pytest.raises(UserError, match="no CUDA GPU"):
            get_device("cuda")


def test_checkpoint_round_trip_and_stage_check(tmp_path):
    path = tmp_path / "ck" / "model.pt"
    payload = {**checkpoint_header("stage1_mlp", "ngram_mlp"), "w": torch.arange(6.0), "config": {"a": 1}}
    save_checkpoint(path, payload)
    loaded = load_checkpoint(path, "stage1_mlp", ["ngram_mlp"])
    assert torch.equal(loaded["w"], payload["w"]) and loaded["config"] == {"a": 1}
    assert [p.name for p in path.parent.iterdir()] == ["model.pt"]  # no temporary file left behind
    with pytest.raises(UserError, match="made by stage1_mlp.*not by stage2_rnn_lstm"):
        load_checkpoint(path, "stage2_rnn_lstm")
    with pytest.raises(UserError, match="expects a .lstm. model"):
        load_checkpoint(path, "stage1_mlp", ["lstm"])


def test_load_refuses_truncated_missing_and_foreign_files(tmp_path):
    path = tmp_path / "model.pt"
    save_checkpoint(path, {**checkpoint_header("stage1_mlp", "m"), "w": torch.randn(1000)})
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match="not a readable checkpoint"):
        load_checkpoint(path, "stage1_mlp")
    with pytest.raises(UserError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pt", "stage1_mlp")
    torch.save({"state_dict": {}}, tmp_path / "other.pt")
    with pytest.raises(UserError, match="not a my_llm checkpoint"):
        load_checkpoint(tmp_path / "other.pt", "stage1_mlp")


def test_crash_while_saving_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "model.pt"
    save_checkpoint(path, {**checkpoint_header("s", "m"), "version": 1})

    def broken_save(obj, f):
        f.write(b"half a file")
        raise KeyboardInterrupt
    monkeypatch.setattr(common.torch, "save", broken_save)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, {**checkpoint_header("s", "m"), "version": 2})
    monkeypatch.undo()
    assert load_checkpoint(path, "s")["version"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]


def test_rng_state_survives_a_weights_only_round_trip(tmp_path):
    common.set_seed(3)
    state = rng_state()
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    save_checkpoint(tmp_path / "r.pt", {**checkpoint_header("s", "m"), "rng": state})
    common.set_seed(99)
    set_rng_state(load_checkpoint(tmp_path / "r.pt", "s")["rng"])
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


def test_stop_on_interrupt_defers_the_first_ctrl_c():
    before = signal.getsignal(signal.SIGINT)  # SIG_IGN when the tests run in a background job (nohup ... &)
    with StopOnInterrupt() as stop:
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.requested
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is before


def test_data_lookup_order(tmp_path, monkeypatch):
    flag, env = tmp_path / "flag" / "imdb", tmp_path / "env" / "imdb"
    for folder in (flag, env):
        folder.mkdir(parents=True)
        (folder / "train.jsonl.gz").write_bytes(b"")
    monkeypatch.setenv("MY_LLM_DATA", str(tmp_path / "env"))
    assert find_local_data("imdb", ["train.jsonl.gz"], str(tmp_path / "flag")) == flag
    assert find_local_data("imdb", ["train.jsonl.gz"], None) == env
    assert find_local_data("imdb", ["train.jsonl.gz"], str(flag)) == flag  # the data set's own folder works too
    assert find_local_data("imdb", ["test.jsonl.gz"], None) is None
    with pytest.raises(UserError, match="is not a folder"):
        find_local_data("imdb", ["train.jsonl.gz"], str(tmp_path / "missing"))


def test_metrics_file_has_the_course_format(tmp_path):
    write_metrics(tmp_path / "metrics.json", stage="stage1_mlp", model="m", dataset="imdb", split="test",
                  metrics={"accuracy": 0.9}, params=10, seconds=1.23456, seconds_key="eval_seconds", device="cpu")
    data = json.loads((tmp_path / "metrics.json").read_text())
    assert {"stage", "model", "dataset", "split", "metrics", "params", "eval_seconds", "device", "torch",
            "command", "hardware"} <= set(data)
    assert data["eval_seconds"] == 1.235 and data["metrics"]["accuracy"] == 0.9


def test_a_metrics_file_never_replaces_a_file_that_is_not_json(tmp_path):
    """--metrics_out pointed at a checkpoint (or any non-JSON file) is refused before and at writing time."""
    ckpt = tmp_path / "model.pt"
    save_checkpoint(ckpt, {**checkpoint_header("stage1_mlp", "mlp"), "model_state": {}})
    before = ckpt.read_bytes()
    with pytest.raises(UserError, match="already exists and is not a JSON file"):
        common.check_json_out(ckpt, "--metrics_out")
    with pytest.raises(UserError, match="not a JSON file"):
        write_metrics(ckpt, stage="stage1_mlp", model="m", dataset="imdb", split="test", metrics={}, params=1,
                      seconds=1, seconds_key="eval_seconds", device="cpu")
    assert ckpt.read_bytes() == before
    earlier = tmp_path / "earlier.json"             # an earlier result is replaced, as a rerun expects
    earlier.write_text("{}")
    assert common.check_json_out(earlier, "--metrics_out") == earlier


def test_data_dir_is_never_swapped_for_the_environment(tmp_path, monkeypatch):
    """A --data_dir that lacks a file does not fall back to $MY_LLM_DATA: the user named that folder."""
    flag, env = tmp_path / "flag" / "imdb", tmp_path / "env" / "imdb"
    flag.mkdir(parents=True)
    env.mkdir(parents=True)
    (env / "train.jsonl.gz").write_bytes(b"")
    monkeypatch.setenv("MY_LLM_DATA", str(tmp_path / "env"))
    with pytest.raises(UserError, match="lacks train.jsonl.gz of imdb") as error:
        find_local_data("imdb", ["train.jsonl.gz"], str(tmp_path / "flag"))
    assert str(flag) in str(error.value) and str(env) not in str(error.value)
    with pytest.raises(UserError, match=r"flag/ptb lacks ptb.train.txt.gz of ptb"):    # no ptb/ there at all
        find_local_data("ptb", ["ptb.train.txt.gz"], str(tmp_path / "flag"))


def test_relative_data_paths_work_from_another_folder(tmp_path, monkeypatch):
    """`export MY_LLM_DATA=../shared/data` typed in the repo root still works after `cd stage1_mlp`; a relative
    --data_dir is relative to where the command is typed; errors show absolute paths."""
    data = tmp_path / "repo_root_sibling" / "imdb"
    data.mkdir(parents=True)
    (data / "train.jsonl.gz").write_bytes(b"")
    monkeypatch.setattr(common, "REPO_ROOT", tmp_path / "repo")
    (tmp_path / "repo" / "stage1_mlp").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "repo" / "stage1_mlp")
    monkeypatch.setenv("MY_LLM_DATA", "../../repo_root_sibling")   # relative to the repo root
    assert find_local_data("imdb", ["train.jsonl.gz"], None) == data
    monkeypatch.setenv("MY_LLM_DATA", "../nowhere")                 # a folder in neither place: absolute paths shown
    error = str(common.missing_data_error("imdb", ["train.jsonl.gz"], None, "offline"))
    assert str(tmp_path / "repo" / "nowhere" / "imdb") in error
    monkeypatch.delenv("MY_LLM_DATA")
    assert find_local_data("imdb", ["train.jsonl.gz"], "../../repo_root_sibling") == data  # against the cwd
    assert "(nowhere: no --data_dir" in str(common.missing_data_error("imdb", ["x"], None, "offline"))


def test_refuse_common_flags_names_what_does_not_apply():
    import argparse

    from scripts.common import UserError, refuse_common_flags
    quiet = argparse.Namespace(data_dir=None, seed=0, device="auto")
    refuse_common_flags(quiet, "x.py")                         # nothing typed: nothing refused
    refuse_common_flags(argparse.Namespace(data_dir=None, seed=0, device="cpu"), "x.py")
    with pytest.raises(UserError, match=r"^--seed does not apply: x\.py"):
        refuse_common_flags(argparse.Namespace(data_dir=None, seed=3, device="auto"), "x.py")
    with pytest.raises(UserError, match=r"^--data_dir, --device do not apply"):
        refuse_common_flags(argparse.Namespace(data_dir="d", seed=0, device="cuda"), "x.py")


@pytest.mark.parametrize("kind", ["random", "truncated", "empty"])
def test_an_unreadable_checkpoint_is_said_in_plain_words(tmp_path, kind):
    good = tmp_path / "good.pt"
    save_checkpoint(good, {**checkpoint_header("stage1_mlp", "mlp"), "model_state": {"w": torch.zeros(1000)}})
    data = {"random": os.urandom(3000), "truncated": good.read_bytes()[:2000], "empty": b""}[kind]
    bad = tmp_path / "bad.pt"
    bad.write_bytes(data)
    with pytest.raises(UserError) as error:
        load_checkpoint(bad, "stage1_mlp")
    message = str(error.value)
    assert "is not a readable checkpoint" in message and ("not a PyTorch" in message or "truncated" in message)
    assert "\n" not in message and "file an issue" not in message and "weights_only" not in message
