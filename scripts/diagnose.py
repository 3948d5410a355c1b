"""Is my loss normal? A diagnosis of one training run, in plain words, with what to try.

    python scripts/diagnose.py stage5_gpt/runs/gpt_shakespeare_char_quick
    python scripts/diagnose.py stage1_mlp/runs/imdb_torch --json

Reads a run folder of any stage, the way scripts/reference.py reads it: finished, interrupted (it has a last.pt or a
history but did not finish) or still running (a live process holds its run.lock, see scripts/training.py). Where
history.json has one point per epoch, the loss at every step comes from the run's TensorBoard events. Then it checks
the curves, and says for each problem what it means and what to try:

- the loss became NaN or infinite;
- it diverged: rose again far above its minimum;
- it stayed flat from the start: nothing was learnt;
- it swung up and down again and again;
- overfitting: the validation loss rose while the training loss fell;
- the learning rate looks too high (an early jump of the loss) or too low (a slow, straight decline), or the run's
  --lr is far from the reference command's;
- it left the course's reference band for the same command (stageN/reference/*.json, with reference.py's tolerance);
- it trained much slower than the course measured for the same command (stageN/results/*.json).

A healthy run is told so. The thresholds are named constants below, each with the reason for its value. The
playground serves the same diagnosis (`diagnose()`) and the list of runs (`list_runs()`).
"""
from __future__ import annotations

import json
import math
import os
import re
import socket
from pathlib import Path
from typing import Any, Sequence

from scripts import reference
from scripts.common import ArgParser, UserError, inside, read_json, read_text, run_main
from scripts.monitor import process_alive, read_progress
from scripts.reference import PER_STEP, STAGES, Check, Curve, Run
from scripts.training import RunLock

# ----------------------------------------------------------------------------- how the curves are read
MIN_STEP_POINTS = 30    # fewer losses per step than this (a run just started): judge the per-epoch curve instead
SMOOTH = 0.05           # the per-step loss is averaged over 5% of the run's steps (at least MIN_WINDOW) before its
#                         shape is judged: one batch's loss is noise (a classifier's swings by +-50% from batch to
#                         batch), the average over a few dozen batches is the trend
SHORT_SMOOTH = 0.02     # a shorter window where the first steps matter (the start value, an early jump)
MIN_WINDOW = 5
MAX_CURVE_POINTS = 1000  # a longer curve is sent as the means of bins of steps (a page draws 1000 points at once)

# ----------------------------------------------------------------------------- the rules
# Each threshold is set far from what the course's own healthy runs show (stageN/runs/*, measured when this was
# written): a rule must not fire on them, and must fire on a run that is clearly broken.
FLAT_DROP = 0.05        # the loss fell less than 5% below its start: nothing was learnt. Healthy runs fall 50% (a
#                         fine-tuned classifier, which starts near its answer) to 90% (a language model from scratch)
DIVERGE_RISE = 0.10     # diverging: the loss ends >10% above its minimum ...
DIVERGE_GIVEBACK = 0.25  # ... having given back >25% of what it had learnt. Healthy runs end within 6% of their
#                          (smoothed) minimum and give back at most 3%; a rise that small is noise
OSC_SWING = 0.30        # a swing: the smoothed loss rises by 30% of all it has learnt, then falls again ...
OSC_RISES = 3           # ... 3 times or more in the per-step loss (healthy runs: at most 1, in a fine-tuned
#                         classifier with noisy batches) ...
OSC_EVAL_RISES = 2      # ... or twice in the evaluated loss, averaged over many batches (one rise is overfitting)
OVERFIT_RISE = 0.05     # the validation loss ends >5% above its minimum while the training loss still falls. Stage 4's
#                         default run ends 2% above (label smoothing: its BLEU still rises), stage 1's default 15% above
#                         (it overfits after epoch 2; early stopping keeps that epoch's model)
EARLY = 0.20            # "early": the first 20% of the steps
LR_HIGH_JUMP = 0.25     # within them the loss rises >25% above its start: the first updates were too large.
#                         Healthy runs rise at most 3% there (a fine-tuned classifier's noisy first batches)
LR_LOW_HALF = 0.55      # by the middle of the run less than 55% of the whole fall is done: a slow, straight decline.
#                         Healthy runs have done 69% (a fine-tuned classifier) to 94% by then
LR_FACTOR = 3.0         # --lr 3x above or below the reference command's: the course's learning-rate sweeps move in
#                         steps of 2x, and a factor of 3 already changes a curve beyond the band's tolerance
SLOW_RATIO = 0.5        # under half the course's tokens (samples) per second for the same command: more than the
#                         run-to-run noise of a shared machine, and than one torch thread against two
MIN_SHAPE_EVALS = 4     # the shape rules on a per-epoch curve need this many points (2 or 3 epochs show no shape)

LEVELS = ("bad", "warn", "ok")
TITLES = {"nan": "损失出现 NaN/无穷大", "failed": "训练出错中止", "diverging": "损失发散", "flat": "损失不下降",
          "oscillating": "损失剧烈摆动", "overfitting": "过拟合", "lr_high": "学习率可能太大",
          "lr_low": "学习率可能太小", "lr_changed": "学习率与参考不同", "outside_band": "超出参考范围",
          "slow": "训练速度慢"}
NOT_LOSS = ("slow", "failed")     # findings about the run, not its loss: the loss can still be called healthy
STATUS_WORDS = {"finished": "已完成", "interrupted": "未完成（中断）", "running": "训练中"}
MARKERS = ("history.json", "progress.json", "last.pt", RunLock.NAME)   # files that make a folder a run folder
THROUGHPUT = re.compile(r"^(?:train_)?([a-z_]*?)_per_s$")   # train_tokens_per_s, samples_per_s, tgt_tokens_per_s ...
UNIT_WORDS = {"tokens": "tokens/s", "tgt_tokens": "目标语 tokens/s", "samples": "样本/s", "examples": "样本/s"}


def finding(level: str, code: str, message: str) -> dict[str, str]:
    return {"level": level, "code": code, "message": message}


# ----------------------------------------------------------------------------- runs and their state
def live_lock(folder: Path) -> dict[str, Any] | None:
    """The holder of the folder's run.lock when that process still runs (RunLock's rule: a lock from another machine
    cannot be checked and counts as held; one whose process is gone is stale, and so is one of this very process,
    left by a training it ran in-process and finished, as the playground's tests do)."""
    holder = RunLock(folder).holder()
    if holder is None:
        return None
    if holder.get("host") != socket.gethostname():
        return holder
    return holder if holder.get("pid") != os.getpid() and process_alive(holder.get("pid")) else None


def run_status(folder: Path, progress: dict[str, Any] | None) -> str:
    """"running" (a live process holds the run), "finished" (reference.run_state's rule), else "interrupted": stopped
    by Ctrl-C, killed or failed, with what it saved (last.pt, history) left to resume."""
    if live_lock(folder) is not None or (progress is not None and progress.get("state") == "running"):
        return "running"
    return "finished" if reference.run_state(folder, progress) == "finished" else "interrupted"


def is_run_folder(folder: Path) -> bool:
    return any((folder / name).is_file() for name in MARKERS)


def run_id(folder: Path) -> str | None:
    """"<stage>/runs/<name>" for a folder under a stage's runs/ folder, else None."""
    parts = Path(folder).resolve().parts
    for i in range(len(parts) - 2, 0, -1):
        if parts[i] == "runs" and parts[i - 1].startswith("stage"):
            return "/".join(parts[i - 1:])
    return None


def header_of(folder: Path, progress: dict[str, Any] | None) -> dict[str, Any]:
    """What the run says about itself (metrics.json of a finished run, else progress.json, else its lock), or {}."""
    if reference.run_state(folder, progress) == "finished" and (folder / "metrics.json").is_file():
        try:
            data = read_json(folder / "metrics.json", "run metrics")
        except UserError:
            data = None
        if isinstance(data, dict):
            return data
    if progress is not None:
        return progress
    return RunLock(folder).holder() or {}


def modified(folder: Path) -> float:
    times = [(folder / name).stat().st_mtime for name in (*MARKERS, "metrics.json", "train.log")
             if (folder / name).is_file()]
    return max(times, default=folder.stat().st_mtime)


def list_runs(root: str | Path) -> list[dict[str, Any]]:
    """Every run folder under root/stage*/runs/ (two levels deep: a bench's runs sit in a folder of their own), in
    the order of their ids: {"id", "stage", "name", "status", "command", "modified"}."""
    root = Path(root)
    out = []
    for runs in sorted(root.glob("stage*/runs")):
        folders = [f for f in sorted(runs.iterdir()) if f.is_dir()]
        while folders:
            folder = folders.pop(0)
            if not inside(root, folder):     # a link out of the course: a server never reads it
                continue
            if not is_run_folder(folder):
                if folder.parent == runs:       # a bench's folder of runs: look one level down
                    folders += [f for f in sorted(folder.iterdir()) if f.is_dir()]
                continue
            try:
                progress = read_progress(folder)
            except UserError:           # an unreadable progress.json: the run is still listed; diagnose says why
                progress = None
            command = header_of(folder, progress).get("command")
            out.append({"id": folder.relative_to(root).as_posix(), "stage": runs.parent.name,
                        "name": folder.relative_to(runs).as_posix(), "status": run_status(folder, progress),
                        "command": command if isinstance(command, str) else None, "modified": modified(folder)})
    return sorted(out, key=lambda r: r["id"])


# ----------------------------------------------------------------------------- curves
def events_loss(folder: Path) -> Curve:
    """The training loss at every step from the run's TensorBoard events ("train/loss", which every stage's
    TrainingMonitor writes), {} when there are none."""
    if not any(folder.glob("events.out.tfevents.*")):
        return {}
    try:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: PLC0415

        events = EventAccumulator(str(folder), size_guidance={"scalars": 0})
        events.Reload()
        if "train/loss" not in events.Tags().get("scalars", []):
            return {}
        return {float(e.step): float(e.value) for e in events.Scalars("train/loss")}
    except Exception:   # noqa: BLE001 - a half-written or foreign event file: the per-epoch curve still serves
        return {}


def points_of(curve: Curve) -> list[tuple[float, float]]:
    return sorted(curve.items())


def finite(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    return [(x, y) for x, y in points if math.isfinite(y)]


def smooth(points: Sequence[tuple[float, float]], fraction: float) -> list[tuple[float, float]]:
    """Trailing moving average over `fraction` of the points (at least MIN_WINDOW), at each window's last x."""
    width = max(MIN_WINDOW, round(fraction * len(points)))
    if len(points) < width:
        return list(points)
    values = [y for _, y in points]
    total, out = sum(values[:width - 1]), []
    for i in range(width - 1, len(values)):
        total += values[i]
        out.append((points[i][0], total / width))
        total -= values[i - width + 1]
    return out


def rises(values: Sequence[float], swing: float) -> int:
    """How many times the values rise by more than `swing` above their lowest point since the last fall (a zigzag
    with a fixed step): a falling curve has none, one that overfits or diverges one, one that swings several."""
    count, low, high, rising = 0, values[0], values[0], False
    for value in values[1:]:
        if not rising:
            low = min(low, value)
            if value > low + swing:
                count, rising, high = count + 1, True, value
        else:
            high = max(high, value)
            if value < high - swing:
                rising, low = False, value
    return count


def display_curve(curve: Curve) -> list[list[float | None]]:
    """[[x, y], ...] for the page: at most MAX_CURVE_POINTS (means of bins of steps), null where y is not finite."""
    if len(curve) > MAX_CURVE_POINTS:
        curve = reference.bin_curve(curve, math.ceil(max(curve) / MAX_CURVE_POINTS))
    return [[reference.rounded(float(x)), reference.rounded(y) if math.isfinite(y) else None]
            for x, y in sorted(curve.items())]


def where(x: float, unit: str) -> str:
    number = f"{int(x):,}" if float(x).is_integer() else f"{x:g}"
    return f"第 {number} 轮" if unit == "epoch" else f"第 {number} 步"


def name_of(key: str) -> str:
    return {"train_loss": "训练损失", "val_loss": "验证损失", PER_STEP: "每步训练损失", "val_acc": "验证准确率",
            "val_bleu": "验证 BLEU"}.get(key, key)


# ----------------------------------------------------------------------------- the rules on the curves' shape
class Curves:
    """The series a diagnosis looks at: the training loss (per step when there are enough steps, else per
    evaluation) and the evaluated losses."""

    def __init__(self, curves: dict[str, Curve], units: dict[str, str]) -> None:
        self.all, self.units = curves, units
        per_step = points_of(curves.get(PER_STEP, {}))
        if len(finite(per_step)) >= MIN_STEP_POINTS:
            self.train, self.unit, self.per_step = finite(per_step), units.get(PER_STEP, "step"), True
        else:
            self.train = finite(points_of(curves.get("train_loss", {})))
            self.unit, self.per_step = units.get("train_loss", "epoch"), False
            if self.unit == "step" and self.train and self.train[-1][0] < MIN_STEP_POINTS:
                self.train = []     # a few steps in: too early to judge a shape (the warm-up may not be over)
        self.enough = self.per_step or len(self.train) >= MIN_SHAPE_EVALS

    def trend(self) -> list[tuple[float, float]]:
        return smooth(self.train, SMOOTH) if self.per_step else self.train

    def start(self) -> float:
        return (smooth(self.train, SHORT_SMOOTH) if self.per_step else self.train)[0][1]


def nan_rule(curves: dict[str, Curve], units: dict[str, str], header: dict[str, Any], log: str) -> list[dict]:
    """A loss that is NaN or infinite anywhere: in a curve, in the final metrics, or in a loss line of train.log."""
    first = None
    for key in sorted((k for k in curves if "loss" in k), key=lambda k: (k != PER_STEP, k)):
        bad = [x for x, y in sorted(curves[key].items()) if not math.isfinite(y)]
        if bad:
            first = (bad[0], key, units.get(key, "step"))
            break
    metrics = header.get("metrics") if isinstance(header.get("metrics"), dict) else {}
    bad_final = [k for k, v in metrics.items() if "loss" in k and isinstance(v, float) and not math.isfinite(v)]
    in_log = re.search(r"\bloss\s+(nan|-?inf)\b", log, re.IGNORECASE)
    if first is None and not bad_final and not in_log:
        return []
    at = f"（{name_of(first[1])}，{where(first[0], first[2])}）" if first else ""
    return [finding("bad", "nan", f"损失变成了 NaN 或无穷大{at}：训练发散了，之后学到的东西都不可信。可以试：把 --lr "
                    "调小到原来的 1/3～1/10；加长预热（warmup）；确认数据里没有空样本或异常值；如果用了半精度"
                    "（bf16/fp16），先用 float32 跑一次对比。")]


def diverging_rule(c: Curves) -> list[dict]:
    if len(c.train) < 2:
        return []
    trend = c.trend()
    start, last = c.start(), trend[-1][1]
    low_x, low = min(trend, key=lambda p: p[1])
    learnt = start - low
    gave_back = (last - low) / learnt if learnt > 0 else math.inf
    if not (last > low * (1 + DIVERGE_RISE) + 1e-12 and gave_back > DIVERGE_GIVEBACK):
        return []
    return [finding("bad", "diverging", f"训练损失先降后升：最低 {low:.3f}（{where(low_x, c.unit)}），最后回升到 "
                    f"{last:.3f}。模型被过大的更新“推”出了好的区域，通常是学习率太大。可以试：--lr 减半或更小；"
                    "加长预热（warmup）；确认梯度裁剪（grad clip）打开着。")]


def flat_rule(c: Curves) -> list[dict]:
    if len(c.train) < 2:
        return []
    start, low = c.start(), min(y for _, y in c.trend())
    drop = (start - low) / abs(start) if start else 0.0
    if drop >= FLAT_DROP:
        return []
    return [finding("bad", "flat", f"训练损失几乎没有下降：从 {start:.3f} 到最低 {low:.3f}，只降了 "
                    f"{100 * max(drop, 0):.1f}%，模型没有在学习。可能是学习率太小（试着把 --lr 调大 3～10 倍），也可能"
                    "是代码有问题：标签和输入没对齐、忘了 optimizer.step()、参数被冻结。先用很少的数据（--limit）训练，"
                    "看训练损失能不能降到接近 0。")]


def oscillating_rule(c: Curves) -> list[dict]:
    count, what = 0, ""
    if c.per_step:
        trend = [y for _, y in c.trend()]
        learnt = c.start() - min(trend)
        if learnt > 0:
            count, what = rises(trend, OSC_SWING * learnt), "每步训练损失（平滑后）"
        count = count if count >= OSC_RISES else 0
    val = [y for _, y in finite(points_of(c.all.get("val_loss", {})))]
    if not count and len(val) >= MIN_SHAPE_EVALS and val[0] > min(val):
        val_rises = rises(val, OSC_SWING * (val[0] - min(val)))
        if val_rises >= OSC_EVAL_RISES:
            count, what = val_rises, "验证损失"
    if not count:
        return []
    return [finding("warn", "oscillating", f"{what}上下大幅摆动：{count} 次明显回升后又降下来。学习率可能太大，"
                    "或批次太小、梯度噪声大。可以试：--lr 减半；调大 --batch_size；加长预热（warmup）。")]


def overfitting_rule(c: Curves, header: dict[str, Any]) -> list[dict]:
    val = finite(points_of(c.all.get("val_loss", {})))
    train = dict(finite(points_of(c.all.get("train_loss", {}))))
    if len(val) < 3:
        return []
    best_x, best = min(val, key=lambda p: p[1])
    last_x, last = val[-1]
    if not (last > best * (1 + OVERFIT_RISE) and best_x in train and last_x in train and train[last_x] < train[best_x]):
        return []
    unit = c.units.get("val_loss", "epoch")
    metrics = header.get("metrics") if isinstance(header.get("metrics"), dict) else {}
    kept = next((metrics[k] for k in ("best_epoch", "best_step") if isinstance(metrics.get(k), int)), None)
    keep = (f"训练程序按验证指标保存了最好的一次（{where(kept, 'epoch' if 'best_epoch' in metrics else 'step')}），"
            "保存的模型不受影响；但再往后训练只是在背训练集。") if kept is not None else ""
    return [finding("warn", "overfitting", f"过拟合：验证损失在{where(best_x, unit)}最低（{best:.3f}），之后升到 "
                    f"{last:.3f}（+{100 * (last / best - 1):.0f}%），而训练损失还在下降（{train[best_x]:.3f} → "
                    f"{train[last_x]:.3f}）：模型在背训练集，对没见过的数据反而变差。{keep}可以试：减少 --epochs（或用"
                    "早停）；加大 dropout；加 weight decay；用更多训练数据。")]


def lr_shape_rules(c: Curves) -> list[dict]:
    if not c.enough or len(c.train) < 2:
        return []
    out = []
    early = smooth(c.train, SHORT_SMOOTH) if c.per_step else c.train
    early = early[:max(1, math.ceil(EARLY * len(early)))]
    start, top = early[0][1], max(y for _, y in early)
    if start > 0 and top > start * (1 + LR_HIGH_JUMP):
        out.append(finding("warn", "lr_high", f"训练一开始损失就往上冲：前 {EARLY:.0%} 的训练里最高到 {top:.3f}，"
                           f"比起点 {start:.3f} 高 {100 * (top / start - 1):.0f}%。第一批更新迈得太大了。可以试："
                           "--lr 调小；加长预热（warmup），让学习率从小慢慢升上去。"))
    trend = c.trend()
    first, low = trend[0][1], min(y for _, y in trend)
    middle = next(y for x, y in trend if x >= (trend[0][0] + trend[-1][0]) / 2)
    if first > low and (first - low) / abs(first) >= FLAT_DROP and (first - middle) / (first - low) < LR_LOW_HALF:
        out.append(finding("warn", "lr_low", f"损失在稳步下降，但很慢、几乎是一条直线：到训练一半时只完成了全部"
                           f"降幅的 {100 * (first - middle) / (first - low):.0f}%（正常的曲线先快后慢，一半时已完成"
                           "七成以上）。学习率可能太小，或训练步数不够。可以试：--lr 调大 2～3 倍，或加大 --epochs / "
                           "--max_steps。"))
    return out


# ----------------------------------------------------------------------------- against the course's reference
def number(text: str | None) -> float | None:
    try:
        value = float(text) if text is not None else None
    except ValueError:
        return None
    return value if value is not None and math.isfinite(value) and value > 0 else None


def without(command: str, flags: Sequence[str]) -> str:
    """A recipe (reference.recipe) without the given flags and their values: what else the command decides."""
    words, kept, skip = reference.words_of(reference.recipe(command)), [], False
    for word in words:
        if skip:
            skip = False
        elif word.split("=", 1)[0] in flags:
            skip = "=" not in word
        else:
            kept.append(word)
    return " ".join(kept)


LR_FLAGS = ("--lr", "--min_lr")


def worse(key: str, check: Check) -> bool:
    """Outside the allowed band on the bad side: above it for a loss, below it for accuracy or BLEU."""
    return check.value > check.allowed[1] if "loss" in key else check.value < check.allowed[0]


def better(key: str, check: Check) -> bool:
    return check.value < check.allowed[0] if "loss" in key else check.value > check.allowed[1]


def band_findings(run: Run, ref: dict[str, Any], same: bool, lr_note: str) -> list[dict]:
    """The run's curves (and a finished run's final metrics) against the band: 'bad' when the latest point of a
    curve is worse than the band allows, 'warn' when earlier points were; a run better than the band is told so."""
    results = {key: reference.curve_checks(run, ref, key, reference.REL_TOL) for key in ref["curves"]}
    finals = reference.final_checks(run, ref, reference.REL_TOL) if run.finished else []
    shortened = run.last_x() < ref["length"]["min"]
    finals = [] if shortened else finals
    worst = [(key, checks[-1]) for key, checks in results.items() if checks and worse(key, checks[-1])]
    worst += [(check.key, check) for check in finals if worse(check.key, check)]
    earlier = [(key, next(c for c in checks if worse(key, c))) for key, checks in results.items()
               if checks and any(worse(key, c) for c in checks) and not worse(key, checks[-1])]
    above = [(key, checks[-1]) for key, checks in results.items() if checks and better(key, checks[-1])]
    code, level = ("outside_band", "bad") if same else ("lr_changed", "warn")
    if worst:
        key, check = worst[0]
        what = f"最终的 {check.key}" if check.x is None else f"{name_of(key)}在{where(check.x, check.unit)}"
        side = "高于" if "loss" in key else "低于"
        bound = check.allowed[1] if "loss" in key else check.allowed[0]
        advice = (lr_note + "先换回参考的学习率跑一次对比。") if lr_note else (
            "同一条命令的正常结果不会差这么多，通常是设置、数据或代码和参考不同：对照一下命令的参数、数据是否完整"
            "（--limit）、设备和精度；改过模型代码的话，先跑一遍测试。")
        return [finding(level, code, f"{what}是 {check.value:.3f}，{side}课程参考范围（同一命令几个随机种子的结果，"
                        f"放宽后允许到 {bound:.3f}）。{advice}")]
    out = []
    if earlier:
        key, check = earlier[0]
        out.append(finding("warn", code, f"{name_of(key)}在{where(check.x, check.unit)}是 {check.value:.3f}，超出了课程"
                           "参考范围，但后来回到了范围之内：起步比参考慢，最终结果正常。" + lr_note))
    elif above:
        key, check = above[0]
        out.append(finding("ok", "better_than_band", f"{name_of(key)}比课程参考范围还要好（{check.value:.3f}）："
                           "可能用了更快的硬件、更多的训练或不同的精度，这不是问题。"))
    elif lr_note:
        out.append(finding("ok", "lr_changed", lr_note + "但曲线仍在课程参考范围之内。"))
    return out


def lr_note(run_lr: float | None, ref_lr: float | None) -> tuple[str, str | None]:
    """(what to say about the run's --lr against the reference's, the code of a finding it makes on its own)."""
    if run_lr is None:
        return "", None
    if ref_lr is None:
        return f"你把 --lr 设成了 {run_lr:g}（参考命令用默认学习率）。", None
    ratio = run_lr / ref_lr
    if ratio >= LR_FACTOR:
        return f"你的 --lr {run_lr:g} 是参考命令（{ref_lr:g}）的 {ratio:.1f} 倍，学习率可能太大。", "lr_high"
    if ratio <= 1 / LR_FACTOR:
        return f"你的 --lr {run_lr:g} 只有参考命令（{ref_lr:g}）的 1/{1 / ratio:.1f}，学习率可能太小。", "lr_low"
    return f"你的 --lr {run_lr:g} 与参考命令的 {ref_lr:g} 不同。", None


def reference_part(run: Run) -> tuple[dict[str, Any] | None, list[dict]]:
    """The reference band to draw (any reference of the run's stage and data set, reference.find_reference's
    choice), and the findings it supports: judged only for the same command, or one that differs only in --lr."""
    try:
        path = reference.find_reference(run)
        ref = reference.load_reference(path)
    except UserError:
        return None, [finding("ok", "no_reference", "课程没有这个数据集的参考曲线，只根据曲线本身的形状判断。")]
    bands = {}
    for key, entry in ref["curves"].items():
        rows = []
        for x, mean, low, high in entry["points"]:
            lo, hi = reference.allowance(low, high, mean)
            rows.append(reference.rounded([float(x), lo, mean, hi]))
        bands[key] = rows
    shown = {"name": path.stem, "bands": bands, "command": ref.get("command"), "hardware": ref.get("hardware"),
             "x": {key: entry.get("x", "x") for key, entry in ref["curves"].items()},
             "bin": {key: entry["bin"] for key, entry in ref["curves"].items() if "bin" in entry}}
    mine, theirs = reference.recipe(run.command), str(ref.get("command", ""))
    if mine == theirs:
        return shown, band_findings(run, ref, True, "")
    if without(mine, LR_FLAGS) == without(theirs, LR_FLAGS):
        note, code = lr_note(number(reference.flag_of(mine, "--lr")), number(reference.flag_of(theirs, "--lr")))
        found = band_findings(run, ref, False, note)
        if code and not any(f["level"] != "ok" for f in found):
            found = [finding("warn", code, note + "对照参考范围，曲线暂时还正常；如果之后变差，先换回参考的学习率。")]
        elif code:
            found = [{**f, "code": code} if f["code"] == "lr_changed" else f for f in found]
        return shown, found
    return shown, [finding("ok", "reference_differs", f"课程的参考曲线来自另一条命令（`{theirs}`），参数不同结果"
                           "就不同，图上的参考范围只供对照，不据此判断。")]


# ----------------------------------------------------------------------------- speed
def throughputs(values: dict[str, Any], prefix: bool) -> dict[str, float]:
    """{unit: per second} from keys such as train_tokens_per_s (metrics.json, results) or tokens_per_s (progress)."""
    out = {}
    for key, value in values.items():
        found = THROUGHPUT.match(key)
        if found and (key.startswith("train_") or not prefix) and reference.is_number(value) and value > 0:
            out[found.group(1)] = float(value)
    return out


def device_kind(record: dict[str, Any]) -> str:
    device = str(record.get("device") or "")
    if device:
        return device.split(":")[0]
    return "cuda" if "NVIDIA" in str(record.get("hardware", "")) else "cpu"


def course_speed(stage: str, command: str, kind: str) -> list[tuple[str, float, str, str]]:
    """(unit, per second, hardware, file) the course measured for this command on this kind of device: from
    <stage>/results/*.json, a metrics file or a bench's summary (quick.json), whose command has the same recipe."""
    out = []
    for path in sorted((reference.REPO_ROOT / stage / "results").glob("*.json")):
        try:
            data = read_json(path, "results file")
        except UserError:
            continue
        if not isinstance(data, dict) or not isinstance(data.get("command"), str):
            continue
        if reference.recipe(data["command"]) != command or device_kind(data) != kind:
            continue
        values = data["metrics"] if isinstance(data.get("metrics"), dict) else data
        for unit, value in throughputs(values, prefix=True).items():
            out.append((unit, value, str(data.get("hardware", "?")), path.relative_to(reference.REPO_ROOT).as_posix()))
    return out


def speed_rule(header: dict[str, Any], history: Any) -> list[dict]:
    metrics = header.get("metrics") if isinstance(header.get("metrics"), dict) else {}
    mine = throughputs(metrics, prefix=True) or throughputs(header, prefix=False)
    if not mine and isinstance(history, list) and history and isinstance(history[-1], dict):
        mine = throughputs(history[-1], prefix=False)
    if not mine or not header.get("stage") or not header.get("command"):
        return []
    measured = course_speed(str(header["stage"]), reference.recipe(str(header["command"])), device_kind(header))
    pairs = [(unit, mine[unit], value, hardware, source) for unit, value, hardware, source in measured if unit in mine]
    if not pairs:
        return []
    same_hw = [p for p in pairs if p[3] == header.get("hardware")]
    unit, value, ref_value, hardware, source = (same_hw or pairs)[0]
    if value >= SLOW_RATIO * ref_value:
        return []
    word = UNIT_WORDS.get(unit, f"{unit}/s")
    machine = ("参考是在同样的硬件上测的。" if hardware == header.get("hardware") else
               f"参考在 {hardware} 上测得，你的是 {header.get('hardware', '?')}。")
    return [finding("warn", "slow", f"训练速度 {value:,.0f} {word}，只有课程实测（{source}）{ref_value:,.0f} {word} "
                    f"的 {100 * value / ref_value:.0f}%。{machine}可能的原因：机器上还有别的程序占着 CPU/GPU；"
                    "--num_threads 比参考少；用了不同的设备或精度。速度只影响花多长时间，不影响训练结果。")]


# ----------------------------------------------------------------------------- the diagnosis
def status_findings(status: str, progress: dict[str, Any] | None) -> list[dict]:
    step, total = (progress or {}).get("step"), (progress or {}).get("total_steps")
    at = (f"（上次记录时在第 {step:,} 步，共 {total:,} 步）" if isinstance(step, int) and isinstance(total, int)
          else "")
    if status == "running":
        return [finding("ok", "running", f"训练还在进行{at}，下面的判断基于目前为止的曲线。")]
    if status == "interrupted" and (progress or {}).get("state") == "failed":
        return [finding("warn", "failed", f"这次训练因为出错而中止{at}：终端里以 error: 开头的那一行说明了原因"
                        "和改法。")]
    if status == "interrupted":
        return [finding("ok", "interrupted", f"训练没有跑完{at}：用同样的命令加上 --resume 可以接着跑。下面的判断基于"
                        "已有的曲线。")]
    return []


def summary_of(status: str, findings: list[dict]) -> str:
    bad = [f for f in findings if f["level"] == "bad"]
    warn = [f for f in findings if f["level"] == "warn"]
    titles = "、".join(dict.fromkeys(TITLES.get(f["code"], f["code"]) for f in bad + warn))
    if bad:
        verdict = f"有问题：{titles}"
    elif warn:
        verdict = f"基本正常，但需要注意：{titles}"
    else:
        verdict = "目前正常" if status == "running" else "正常"
    return f"{STATUS_WORDS[status]}；{verdict}"


def diagnose(folder: str | Path) -> dict[str, Any]:
    """The diagnosis of one run folder (JSON-able): {"id" (when under a stage's runs/), "status", "command",
    "curves": {key: [[x, y], ...]} (y null where not finite), "units": {key: "epoch"|"step"}, "reference": None |
    {"name", "bands": {key: [[x, low, mean, high], ...]} (low/high: the band with its tolerance), "command", ...},
    "findings": [{"level": "bad"|"warn"|"ok", "code", "message"}] (worst first), "summary"}. A folder that is not a
    run is a UserError."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"{folder} is not a folder; give a run folder (the --out_dir of a train.py run), e.g. "
                        "stage5_gpt/runs/gpt_shakespeare_char_quick")
    progress = read_progress(folder)
    status = run_status(folder, progress)
    run, history = None, None
    if (folder / "history.json").is_file() or not is_run_folder(folder):
        run = reference.read_run(folder)      # says in one line what is wrong with a folder that is not a run
        history = read_json(folder / "history.json", "run history")
        header = run.metrics
    else:                                   # a run before its first evaluation: its per-step loss so far
        header = header_of(folder, progress)
    curves: dict[str, Curve] = dict(run.curves) if run else {}
    stage = str(header.get("stage", ""))
    units = {key: STAGES[stage].x if stage in STAGES else "epoch" for key in curves}
    if PER_STEP not in curves:
        steps = events_loss(folder)
        if steps:
            curves[PER_STEP] = steps
    units[PER_STEP] = "step"
    units = {key: units[key] for key in curves}

    try:
        log = read_text(folder / "train.log", "training log") if (folder / "train.log").is_file() else ""
    except UserError:       # a log that is not UTF-8 only loses its own evidence
        log = ""
    c = Curves(curves, units)
    findings = status_findings(status, progress) + nan_rule(curves, units, header, log)
    if run is None and not curves:
        findings.append(finding("ok", "too_early", "还没有评估记录，也没有每步的损失：等第一次评估之后再来看。"))
    if not any(f["code"] == "nan" for f in findings):
        findings += flat_rule(c) or (diverging_rule(c) + oscillating_rule(c) + lr_shape_rules(c))
    findings += overfitting_rule(c, header)
    ref = None
    if run is not None:
        ref, found = reference_part(run)
        findings += [f for f in found if not (f["code"] in ("lr_high", "lr_low")
                                             and any(g["code"] == f["code"] for g in findings))]
    findings += speed_rule(header, history)
    if not any(f["level"] != "ok" and f["code"] not in NOT_LOSS for f in findings) and curves:
        in_band = any(f["code"] in ("better_than_band", "lr_changed") for f in findings) or (
            ref is not None and not any(f["code"] in ("reference_differs", "no_reference") for f in findings))
        if len(c.train) >= 2 or in_band:
            findings.append(finding("ok", "healthy", "损失曲线看起来正常：在下降，没有 NaN、发散、剧烈摆动或过拟合的"
                                    "迹象" + ("，并且在课程参考范围之内。" if in_band else "。")))
        else:
            findings.append(finding("ok", "too_short", f"训练的步数还太少，看不出损失曲线的形状：每步的损失要有 "
                                    f"{MIN_STEP_POINTS} 个点以上（或两轮以上的记录），多训练一会儿再来看。"))
    findings.sort(key=lambda f: LEVELS.index(f["level"]))
    command = header.get("command")
    out: dict[str, Any] = {"id": run_id(folder)} if run_id(folder) else {}
    out.update({"status": status, "command": command if isinstance(command, str) else None,
                "curves": {key: display_curve(curve) for key, curve in curves.items()}, "units": units,
                "reference": ref, "findings": findings, "summary": summary_of(status, findings)})
    return out


# ----------------------------------------------------------------------------- command line
MARKS = {"bad": "[问题]", "warn": "[注意]", "ok": "[正常]"}


def text_report(folder: Path, result: dict[str, Any]) -> str:
    lines = [f"运行：{result.get('id') or folder}（{STATUS_WORDS[result['status']]}）",
             f"命令：{result['command'] or '（未记录）'}"]
    ref = result["reference"]
    if ref is not None:
        lines.append(f"参考：{ref['name']}（`{ref['command']}`，{ref['hardware']}）")
    for f in result["findings"]:
        lines.append(f"{MARKS[f['level']]} {f['message']}")
    lines.append(f"结论：{result['summary']}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = ArgParser(description="Is my loss normal? Diagnose a training run folder (finished, interrupted or still "
                              "running): NaN, divergence, a flat or swinging loss, overfitting, the learning rate, the "
                              "course's reference band and speed; each finding with what to try.")
    p.add_argument("run", help="the run folder (the --out_dir of a train.py run), e.g. "
                               "stage5_gpt/runs/gpt_shakespeare_char")
    p.add_argument("--json", action="store_true", help="print the diagnosis as JSON (what the playground shows)")
    args = p.parse_args(argv)
    result = diagnose(Path(args.run))
    print(json.dumps(result, ensure_ascii=False, indent=1) if args.json else text_report(Path(args.run), result))
    return 0


if __name__ == "__main__":
    run_main(main)
