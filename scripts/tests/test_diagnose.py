"""scripts/diagnose.py: one synthetic run folder per rule, written in the stages' real formats (history.json,
metrics.json, progress.json, run.lock, TensorBoard events), a healthy run of each stage's format, running and
interrupted runs, the list of runs, the command line, and the real runs of this checkout where they exist."""
import json
import math
import os
import socket
from pathlib import Path

import pytest

from scripts import diagnose, reference
from scripts.testing import one_error_line

ROOT = Path(__file__).resolve().parents[2]
GONE_PID = 2 ** 22 + 12345      # no such process (above the default pid_max)
HARDWARE = "Intel(R) Xeon(R) Processor, 2 cores, 1 torch threads"
MODELS = {"stage1_mlp": ("ngram_mlp_torch", "imdb"), "stage2_rnn_lstm": ("lstm_char_torch", "shakespeare"),
          "stage3_attention_seq2seq": ("bahdanau_scratch", "multi30k"),
          "stage4_transformer": ("transformer_scratch", "multi30k"), "stage5_gpt": ("gpt_char", "shakespeare")}


@pytest.fixture(autouse=True)
def repo(tmp_path, monkeypatch):
    """An empty course root for the references (stageN/reference/) and measured speeds (stageN/results/), so the
    synthetic runs are judged by what each test writes there, never by this checkout's files."""
    root = tmp_path / "repo"
    root.mkdir()
    monkeypatch.setattr(reference, "REPO_ROOT", root)
    return root


# ----------------------------------------------------------------------------- run folders in the real formats
def header(stage, command, **extra):
    model, dataset = MODELS[stage]
    return {"stage": stage, "model": model, "dataset": dataset, "device": "cpu", "hardware": HARDWARE,
            "torch": "2.13.0+cpu", "command": command, **extra}


def finish(folder, stage, command, metrics, state="finished", pid=None, step=100, total=100):
    """metrics.json (a finished run) and progress.json, as TrainingMonitor and write_metrics leave them."""
    if state == "finished":
        (folder / "metrics.json").write_text(json.dumps({**header(stage, command), "split": "val",
                                                         "metrics": metrics, "params": 1000,
                                                         "train_seconds": 60.0}))
    (folder / "progress.json").write_text(json.dumps({
        "format": "my_llm-progress-v1", **header(stage, command), "pid": pid or os.getpid(),
        "host": socket.gethostname(), "started": "2026-01-01T00:00:00", "state": state, "step": step,
        "total_steps": total, "running_loss": 1.0, "tokens_per_s": 1000.0}))
    return folder


def step_run(folder, losses, command="python stage5_gpt/train.py --max_steps 1000", val_gap=0.05, every=100,
             metrics=None, **kw):
    """A stage 5 run: history.json {"evals": [...], "curve": [[step, loss], ...]} with one loss per step."""
    folder.mkdir(parents=True)
    evals = []
    for step in range(every, len(losses) + 1, every):
        train = sum(losses[step - every:step]) / every
        evals.append({"step": step, "train_loss": train, "val_loss": train + val_gap, "lr": 1e-3,
                      "tokens_seen": step * 768})
    curve = [[step, loss] for step, loss in enumerate(losses, 1)]
    (folder / "history.json").write_text(json.dumps({"evals": evals, "curve": curve}))
    final = {"val_loss": evals[-1]["val_loss"] if evals else 0.0, "train_tokens_per_s": 5000.0}
    kw = {"step": len(losses), "total": len(losses), **kw}
    return finish(folder, "stage5_gpt", command, {**final, **(metrics or {})}, **kw)


def epoch_run(folder, train, val, stage="stage1_mlp", command="python stage1_mlp/train.py --epochs 6",
              metrics=None, events=None, **kw):
    """A stage 1-4 run: history.json is a list of per-epoch rows; `events` the loss at every step, written to
    TensorBoard event files as TrainingMonitor does."""
    folder.mkdir(parents=True)
    rows = [{"epoch": e, "steps": 100 * e, "train_loss": t, "val_loss": v, "val_acc": 0.8, "samples_per_s": 1000.0}
            for e, (t, v) in enumerate(zip(train, val), 1)]
    (folder / "history.json").write_text(json.dumps(rows))
    if events:
        from torch.utils.tensorboard import SummaryWriter

        with SummaryWriter(log_dir=str(folder)) as writer:
            for step, loss in enumerate(events, 1):
                writer.add_scalar("train/loss", loss, step)
    best = min(range(len(val)), key=val.__getitem__) + 1
    final = {"val_loss": min(val), "best_epoch": best, "train_samples_per_s": 1000.0, **(metrics or {})}
    return finish(folder, stage, command, final, **kw)


def falling(n, start=4.0, end=1.5, wiggle=0.02):
    """A healthy loss per step: fast at first, then slower, with a little batch noise."""
    return [end + (start - end) * math.exp(-5 * s / n) + wiggle * (-1) ** s for s in range(1, n + 1)]


def codes(result, level=None):
    return [f["code"] for f in result["findings"] if level is None or f["level"] == level]


def write_reference(root, stage, command, curves, x="epoch", length=(6, 6), final=None):
    """<root>/<stage>/reference/default.json in reference.py's format: curves {key: [[x, mean, min, max], ...]}."""
    model, dataset = MODELS[stage]
    ref = {"format": reference.FORMAT, "stage": stage, "name": "default", "model": model, "dataset": dataset,
           "command": command, "device": "cpu", "hardware": HARDWARE, "torch": "2.13.0+cpu", "seeds": [0, 1, 2],
           "length": {"x": x, "min": length[0], "max": length[1]},
           "curves": {key: {"x": x, "points": points} for key, points in curves.items()}, "final": final or {}}
    folder = root / stage / "reference"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "default.json").write_text(json.dumps(ref))


TRAIN = [0.60, 0.35, 0.25, 0.20, 0.17, 0.15]
VAL = [0.40, 0.32, 0.29, 0.27, 0.26, 0.255]


def band_of(values, spread=0.005):
    return [[e, v, v - spread, v + spread] for e, v in enumerate(values, 1)]


# ----------------------------------------------------------------------------- one test per rule
@pytest.mark.parametrize("stage", list(MODELS))
def test_a_healthy_run_of_every_stage_format_is_called_healthy(tmp_path, stage):
    if stage == "stage5_gpt":
        folder = step_run(tmp_path / stage / "runs" / "ok", falling(1000))
    else:
        folder = epoch_run(tmp_path / stage / "runs" / "ok", TRAIN, VAL, stage=stage,
                           command=f"python {stage}/train.py")
    result = diagnose.diagnose(folder)
    assert codes(result) == ["no_reference", "healthy"], result["findings"]
    assert result["status"] == "finished" and result["summary"] == "已完成；正常"
    assert result["id"] == f"{stage}/runs/ok" and result["command"].startswith(f"python {stage}/train.py")
    assert {"train_loss", "val_loss"} <= set(result["curves"]) and result["reference"] is None
    json.dumps(result, allow_nan=False)     # what a web server sends


def test_nan_loss_is_bad(tmp_path):
    losses = falling(1000)
    losses[600:] = [math.nan] * 400
    result = diagnose.diagnose(step_run(tmp_path / "nan", losses))
    assert codes(result, "bad") == ["nan"] and "第 601 步" in result["findings"][0]["message"]
    assert "--lr" in result["findings"][0]["message"] and result["summary"].startswith("已完成；有问题：损失出现 NaN")
    assert result["curves"]["train_loss_per_step"][-1][1] is None
    json.dumps(result, allow_nan=False)
    # a run stopped by the monitor at its first NaN leaves it only in train.log
    log_only = step_run(tmp_path / "log", falling(1000))
    (log_only / "train.log").write_text("2026-01-01 00:00:00 step   900  loss nan  lr 1.00e-03\n")
    assert "nan" in codes(diagnose.diagnose(log_only), "bad")


def test_diverging_loss_is_bad(tmp_path):
    losses = falling(1000)[:400] + [falling(1000)[399] + 2.0 * i / 600 for i in range(600)]
    result = diagnose.diagnose(step_run(tmp_path / "up", losses))
    assert "diverging" in codes(result, "bad") and "healthy" not in codes(result)


def test_flat_loss_from_the_start_is_bad(tmp_path):
    result = diagnose.diagnose(step_run(tmp_path / "flat", [0.693 + 0.01 * (-1) ** s for s in range(1000)]))
    assert codes(result, "bad") == ["flat"] and "optimizer.step()" in result["findings"][0]["message"]
    # a per-epoch curve that stays put is flat too
    same = diagnose.diagnose(epoch_run(tmp_path / "epochs", [0.69] * 4, [0.69] * 4))
    assert codes(same, "bad") == ["flat"]
    # six steps (a smoke run) are too few to call anything flat: the warm-up may not be over
    short = diagnose.diagnose(step_run(tmp_path / "short", [0.693] * 6, every=3))
    assert codes(short) == ["no_reference", "too_short"]


def test_oscillating_loss_is_a_warning_also_from_tensorboard_events(tmp_path):
    # stage 1 keeps one history row per epoch: the loss at every step comes from its TensorBoard events
    n = 640
    steps = [0.3 + 0.4 * math.exp(-5 * s / n) + 0.25 * math.sin(2 * math.pi * s / 80) for s in range(1, n + 1)]
    result = diagnose.diagnose(epoch_run(tmp_path / "swing", TRAIN, VAL, events=steps))
    assert "oscillating" in codes(result, "warn") and "--batch_size" in " ".join(f["message"] for f in
                                                                                   result["findings"])
    assert len(result["curves"]["train_loss_per_step"]) == n and result["units"]["train_loss_per_step"] == "step"
    # the evaluated loss swinging is enough when there is no per-step loss
    val = [0.5, 0.3, 0.45, 0.28, 0.44, 0.27]
    assert "oscillating" in codes(diagnose.diagnose(epoch_run(tmp_path / "val", TRAIN, val)), "warn")


def test_overfitting_is_a_warning(tmp_path):
    result = diagnose.diagnose(epoch_run(tmp_path / "over", TRAIN, [0.35, 0.28, 0.27, 0.30, 0.33, 0.36]))
    assert codes(result, "warn") == ["overfitting"]
    message = result["findings"][0]["message"]
    assert "第 3 轮" in message and "dropout" in message and "weight decay" in message
    assert result["summary"] == "已完成；基本正常，但需要注意：过拟合"


def test_an_early_jump_says_the_learning_rate_is_too_high(tmp_path):
    losses = [2.0 + 1.5 * s / 100 for s in range(100)] + [1.2 + 2.3 * math.exp(-5 * s / 900) for s in range(900)]
    result = diagnose.diagnose(step_run(tmp_path / "jump", losses))
    assert codes(result, "warn") == ["lr_high"] and "warmup" in result["findings"][0]["message"]


def test_a_slow_straight_decline_says_the_learning_rate_is_too_low(tmp_path):
    result = diagnose.diagnose(step_run(tmp_path / "slow_lr", [3.0 - s / 1000 for s in range(1000)]))
    assert codes(result, "warn") == ["lr_low"] and "--lr 调大" in result["findings"][0]["message"]


def test_lr_far_from_the_reference_commands_with_a_worse_curve(tmp_path, repo):
    write_reference(repo, "stage1_mlp", "python stage1_mlp/train.py --lr 0.001",
                    {"train_loss": band_of(TRAIN), "val_loss": band_of(VAL)})
    worse = [v + 0.2 for v in VAL]
    result = diagnose.diagnose(epoch_run(tmp_path / "hot", TRAIN, worse,
                                         command="python stage1_mlp/train.py --lr 0.01 --seed 3"))
    assert codes(result, "warn") == ["lr_high"] and "10.0 倍" in result["findings"][0]["message"]
    assert result["reference"]["name"] == "default" and set(result["reference"]["bands"]) == {"train_loss", "val_loss"}
    x, low, mean, high = result["reference"]["bands"]["val_loss"][0]
    assert (x, mean) == (1, 0.4) and low < 0.395 and high > 0.405     # the band widened by its tolerance
    cold = diagnose.diagnose(epoch_run(tmp_path / "cold", TRAIN, worse,
                                       command="python stage1_mlp/train.py --lr 0.0001"))
    assert codes(cold, "warn") == ["lr_low"]


def test_far_outside_the_band_of_the_same_command_is_bad_inside_is_healthy(tmp_path, repo):
    write_reference(repo, "stage1_mlp", "python stage1_mlp/train.py",
                    {"train_loss": band_of(TRAIN), "val_loss": band_of(VAL)})
    inside = diagnose.diagnose(epoch_run(tmp_path / "in", TRAIN, VAL, command="python stage1_mlp/train.py --seed 4 "
                                         "--num_threads 1 --out_dir x"))
    assert codes(inside) == ["healthy"] and "参考范围之内" in inside["findings"][0]["message"]
    outside = diagnose.diagnose(epoch_run(tmp_path / "out", TRAIN, [v + 0.3 for v in VAL],
                                          command="python stage1_mlp/train.py"))
    assert codes(outside, "bad") == ["outside_band"] and "0.555" in outside["findings"][0]["message"]
    other = diagnose.diagnose(epoch_run(tmp_path / "other", TRAIN, VAL,
                                        command="python stage1_mlp/train.py --epochs 6"))
    assert "reference_differs" in codes(other, "ok") and other["reference"] is not None


def test_slower_than_the_course_measured_for_the_same_command(tmp_path, repo):
    results = repo / "stage1_mlp" / "results"
    results.mkdir(parents=True)
    (results / "quick.json").write_text(json.dumps({"command": "python stage1_mlp/train.py --preset quick",
                                                    "train_samples_per_s": 6000.0, "hardware": HARDWARE}))
    command = "python stage1_mlp/train.py --preset quick --num_threads 1"
    result = diagnose.diagnose(epoch_run(tmp_path / "slow", TRAIN, VAL, command=command))
    assert codes(result, "warn") == ["slow"] and "stage1_mlp/results/quick.json" in result["findings"][0]["message"]
    assert "healthy" in codes(result)       # a slow run's loss can still be healthy
    fast = epoch_run(tmp_path / "fast", TRAIN, VAL, command=command, metrics={"train_samples_per_s": 4000.0})
    assert "slow" not in codes(diagnose.diagnose(fast))


# ----------------------------------------------------------------------------- running and interrupted runs
def test_a_running_run_holds_its_lock(tmp_path):
    # `--resume` takes the lock at once; progress.json still says "interrupted" until its data is loaded
    folder = step_run(tmp_path / "stage5_gpt" / "runs" / "live", falling(300), state="interrupted", total=1000)
    # a live process (this one's parent) holds the lock; one left by this process itself is stale, as RunLock has it
    (folder / "run.lock").write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname()}))
    assert diagnose.diagnose(folder)["status"] == "interrupted"
    (folder / "run.lock").write_text(json.dumps({"pid": os.getppid(), "host": socket.gethostname(),
                                                 "command": "python stage5_gpt/train.py", "started": "now"}))
    result = diagnose.diagnose(folder)
    assert result["status"] == "running" and codes(result)[0] == "running"
    assert "第 300 步，共 1,000 步" in result["findings"][0]["message"] and result["summary"].startswith("训练中；")
    # the lock of a process that is gone (and a progress.json it never closed) is an interrupted run
    (folder / "run.lock").write_text(json.dumps({"pid": GONE_PID, "host": socket.gethostname()}))
    finish(folder, "stage5_gpt", "python stage5_gpt/train.py", {}, state="running", pid=GONE_PID, step=300,
           total=1000)
    assert diagnose.diagnose(folder)["status"] == "interrupted"


def test_an_interrupted_run_says_resume_and_one_before_its_first_evaluation_still_shows_its_loss(tmp_path):
    folder = epoch_run(tmp_path / "stop", TRAIN[:3], VAL[:3], state="interrupted", step=300, total=600)
    (folder / "last.pt").write_bytes(b"")
    result = diagnose.diagnose(folder)
    assert result["status"] == "interrupted" and "--resume" in result["findings"][0]["message"]
    assert result["summary"] == "未完成（中断）；正常"

    early = tmp_path / "early"
    early.mkdir()
    finish(early, "stage2_rnn_lstm", "python stage2_rnn_lstm/train.py", {}, state="interrupted", step=40, total=900)
    (early / "last.pt").write_bytes(b"")
    assert codes(diagnose.diagnose(early)) == ["interrupted", "too_early"]
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(log_dir=str(early)) as writer:
        for step, loss in enumerate(falling(40), 1):
            writer.add_scalar("train/loss", loss, step)
    shown = diagnose.diagnose(early)
    assert len(shown["curves"]["train_loss_per_step"]) == 40 and shown["reference"] is None


def test_a_failed_run_is_a_warning(tmp_path):
    folder = step_run(tmp_path / "failed", falling(500), state="failed")
    assert codes(diagnose.diagnose(folder), "warn") == ["failed"]


def test_list_runs_finds_every_run_with_its_status(tmp_path):
    root = tmp_path / "course"
    step_run(root / "stage5_gpt" / "runs" / "done", falling(200))
    step_run(root / "stage5_gpt" / "runs" / "bench" / "base", falling(200), state="interrupted")
    live = epoch_run(root / "stage1_mlp" / "runs" / "live", TRAIN[:2], VAL[:2], state="running", pid=os.getppid())
    (live / "run.lock").write_text(json.dumps({"pid": os.getppid(), "host": socket.gethostname()}))
    (root / "stage1_mlp" / "runs" / "eval_only").mkdir()            # evaluate.py's folder: not a training run
    (root / "stage1_mlp" / "runs" / "eval_only" / "metrics.json").write_text("{}")
    (root / "stage1_mlp" / "runs" / "empty").mkdir()
    runs = diagnose.list_runs(root)
    assert [(r["id"], r["stage"], r["name"], r["status"]) for r in runs] == [
        ("stage1_mlp/runs/live", "stage1_mlp", "live", "running"),
        ("stage5_gpt/runs/bench/base", "stage5_gpt", "bench/base", "interrupted"),
        ("stage5_gpt/runs/done", "stage5_gpt", "done", "finished")]
    assert runs[2]["command"] == "python stage5_gpt/train.py --max_steps 1000"
    assert all(isinstance(r["modified"], float) for r in runs) and diagnose.list_runs(tmp_path / "none") == []


# ----------------------------------------------------------------------------- command line
def test_cli_text_and_json(tmp_path, cli):
    folder = epoch_run(tmp_path / "over", TRAIN, [0.35, 0.28, 0.27, 0.30, 0.33, 0.36])
    code, out, err = cli(diagnose.main, [folder])
    assert code == 0 and not err
    assert "[注意] 过拟合" in out and out.rstrip().endswith("结论：已完成；基本正常，但需要注意：过拟合")
    code, out, err = cli(diagnose.main, [folder, "--json"])
    assert code == 0 and json.loads(out)["findings"][0]["code"] == "overfitting"


@pytest.mark.parametrize("make, needle", [
    (lambda p: p / "missing", "is not a folder"),
    (lambda p: p, "is not a training run"),
    (lambda p: (p / "progress.json").write_text("{") and p, "is not valid JSON"),
    (lambda p: (p / "history.json").write_text("[]") and p, "neither metrics.json"),
])
def test_cli_bad_paths_are_one_line(tmp_path, cli, make, needle):
    target = tmp_path / "x"
    target.mkdir()
    code, out, err = cli(diagnose.main, [make(target)])
    one_error_line(code, err, needle)


# ----------------------------------------------------------------------------- real runs
def test_a_real_healthy_run(monkeypatch, tmp_path):
    """The course's own default char run (its history and metrics are committed in stage5_gpt/results/) is
    healthy and inside the reference band of the same command."""
    monkeypatch.setattr(reference, "REPO_ROOT", ROOT)
    results = ROOT / "stage5_gpt" / "results"
    (tmp_path / "history.json").write_bytes((results / "char_history.json").read_bytes())
    (tmp_path / "metrics.json").write_bytes((results / "char_train.json").read_bytes())
    result = diagnose.diagnose(tmp_path)
    assert result["status"] == "finished"
    assert "healthy" in codes(result) and not codes(result, "bad"), result["findings"]
    assert result["reference"]["name"] == "default" and "参考范围之内" in " ".join(f["message"] for f in
                                                                               result["findings"])
    json.dumps(result, allow_nan=False)
