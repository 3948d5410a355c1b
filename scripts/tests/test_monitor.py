"""scripts/monitor.py (what a learner watches while a run trains) and the newest-model lookup of scripts/common.py:
real TensorBoard event files, history/curves rewritten at every evaluation, progress.json through a run's life."""
import json
import os
import time

import pytest
import torch

from scripts.common import TrainingInterrupted, UserError, describe_model, find_model, newest_model, save_checkpoint
from scripts.monitor import TrainingMonitor, read_progress


def events(folder):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    return acc


def monitor(tmp_path, **kw):
    args = dict(stage="stage2_rnn_lstm", model="lstm_char_torch", dataset="shakespeare", device="cpu",
                total_steps=6, unit="tokens", title="test run")
    return TrainingMonitor(tmp_path / "run", **{**args, **kw})


def test_a_run_leaves_events_history_curves_and_progress(tmp_path):
    history = []
    with monitor(tmp_path) as mon:
        progress = json.loads((tmp_path / "run" / "progress.json").read_text())
        assert progress["state"] == "running" and progress["pid"] == os.getpid() and progress["total_steps"] == 6
        for step in range(1, 7):
            mon.step(3.0 - 0.1 * step, items=100, epoch=f"{(step - 1) // 3 + 1}/2", lr=1e-3)
            if step % 3 == 0:
                with mon.evaluating():
                    time.sleep(0.05)
                    history.append({"epoch": step // 3, "train_loss": 2.8, "val_loss": 2.9 - step / 10})
                mon.evaluated(history[-1], history, panels=[["train_loss", "val_loss"]], sample="ROMEO:\n  hi")
                # rewritten at every evaluation, not only at the end
                assert json.loads((tmp_path / "run" / "history.json").read_text()) == history
                assert (tmp_path / "run" / "curves.png").stat().st_size > 1000
    assert mon.throughput > 0 and mon.running_loss < 3.0
    progress = json.loads((tmp_path / "run" / "progress.json").read_text())
    assert progress["state"] == "finished" and progress["step"] == 6
    acc = events(tmp_path / "run")
    assert [e.step for e in acc.Scalars("train/loss")] == [1, 2, 3, 4, 5, 6]
    assert [round(e.value, 4) for e in acc.Scalars("eval/val_loss")] == [2.6, 2.3]
    assert len(acc.Scalars("train/lr")) == 6 and "sample/text_summary" in acc.Tags()["tensors"]


def test_evaluation_time_is_left_out_of_the_throughput(tmp_path):
    with monitor(tmp_path, tensorboard=False) as mon:
        mon.step(1.0, items=1000)
        with mon.evaluating():
            time.sleep(0.3)
        mon.step(1.0, items=1000)
    assert mon._seconds < 0.2


@pytest.mark.parametrize("exc, state", [(KeyboardInterrupt, "interrupted"), (SystemExit(130), "interrupted"),
                                        (TrainingInterrupted("saved last.pt"), "interrupted"),
                                        (RuntimeError("boom"), "failed")])
def test_progress_says_how_a_run_ended(tmp_path, exc, state):
    with pytest.raises(BaseException):
        with monitor(tmp_path, tensorboard=False) as mon:
            mon.step(1.0)
            raise exc
    assert read_progress(tmp_path / "run")["state"] == state


def test_a_running_run_whose_process_is_gone_reads_as_stopped(tmp_path):
    mon = monitor(tmp_path, tensorboard=False)
    path = tmp_path / "run" / "progress.json"
    assert read_progress(tmp_path / "run")["state"] == "running"
    data = json.loads(path.read_text())
    path.write_text(json.dumps({**data, "pid": 2 ** 22 + 4321}))      # above Linux's pid_max: no such process
    assert read_progress(tmp_path / "run")["state"] == "stopped"
    mon.close()


def test_a_disabled_monitor_writes_nothing(tmp_path):
    with monitor(tmp_path, enabled=False) as mon:
        mon.step(1.0, items=10)
        mon.evaluated({"val_loss": 1.0}, [{"epoch": 1, "val_loss": 1.0}], panels=[["val_loss"]], sample="x")
    assert not (tmp_path / "run").exists()


def test_a_resumed_run_drops_the_events_past_its_checkpoint(tmp_path):
    with monitor(tmp_path) as mon:
        for _ in range(5):
            mon.step(2.0)
    with monitor(tmp_path, done_steps=3) as mon:      # last.pt was saved at step 3; steps 4-5 are redone
        for _ in range(3):
            mon.step(1.0)
    values = {e.step: e.value for e in events(tmp_path / "run").Scalars("train/loss")}
    assert values == {1: 2.0, 2: 2.0, 3: 2.0, 4: 1.0, 5: 1.0, 6: 1.0}


def touch_checkpoint(path, age, **fields):
    save_checkpoint(path, {"format": "my_llm-checkpoint-v1", **fields})
    stamp = time.time() - age
    os.utime(path, (stamp, stamp))
    return path


def test_the_newest_model_is_a_best_checkpoint_else_the_newest_last_pt(tmp_path):
    best, runs = ["checkpoints/best_*.pt"], ["runs/*/last.pt"]
    assert newest_model(tmp_path, best, runs) is None
    with pytest.raises(UserError, match="no trained model in .*; train one first: python train.py --preset quick"):
        find_model(None, tmp_path, best, runs, "python train.py --preset quick")
    old_run = touch_checkpoint(tmp_path / "runs" / "a" / "last.pt", 50)
    new_run = touch_checkpoint(tmp_path / "runs" / "b" / "last.pt", 10)
    assert find_model(None, tmp_path, best, runs, "") == new_run != old_run
    old_best = touch_checkpoint(tmp_path / "checkpoints" / "best_x.pt", 100)     # older than the runs: still first
    assert find_model(None, tmp_path, best, runs, "") == old_best
    quick = touch_checkpoint(tmp_path / "checkpoints" / "best_x_quick.pt", 40)
    assert find_model(None, tmp_path, best, runs, "") == quick
    assert find_model(str(old_best), tmp_path, best, runs, "") == old_best      # --checkpoint wins
    with pytest.raises(UserError, match="best_y.pt does not exist; the newest model of this stage is .*best_x_quick"):
        find_model(str(tmp_path / "checkpoints" / "best_y.pt"), tmp_path, best, runs, "")


def test_the_loaded_model_is_described(tmp_path):
    ckpt = {"epoch": 3, "best_val_loss": 1.51234, "args": {"epochs": 7, "preset": "quick"}}
    line = describe_model(tmp_path / "checkpoints" / "best.pt", ckpt)
    assert line.endswith("(best checkpoint; preset quick, epoch 3 of 7, val loss 1.512)")
    line = describe_model(tmp_path / "runs" / "r" / "last.pt", {"step": 1250, "args": {"max_steps": 4000}})
    assert line.endswith("(the latest state of a run; step 1,250 of 4,000)")
    assert describe_model(tmp_path / "m.pt", {}).endswith("m.pt (best checkpoint)")
    assert torch.tensor(1)      # torch is importable alongside tensorboard


def test_a_fresh_run_in_a_used_folder_starts_a_clean_event_file(tmp_path):
    with monitor(tmp_path) as mon:
        for _ in range(4):
            mon.step(2.0)
    with monitor(tmp_path) as mon:                   # no --resume: a new run from step 0
        mon.step(1.0)
    assert len(list((tmp_path / "run").glob("events.out.tfevents.*"))) == 1
    assert {e.step: e.value for e in events(tmp_path / "run").Scalars("train/loss")} == {1: 1.0}
