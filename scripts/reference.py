"""Reference runs: "is my loss normal?"

    python scripts/reference.py build --stage stage2_rnn_lstm --name default runs/ref_s0 runs/ref_s1 runs/ref_s2
    python scripts/reference.py compare stage2_rnn_lstm/runs/lstm_char_torch
    python scripts/reference.py compare RUN_DIR --reference stage2_rnn_lstm/reference/default.json

`build` reads the run folders (history.json + metrics.json) of one command trained with several seeds and writes
<stage>/reference/<name>.json: the command, hardware, torch version and seeds; for each curve a band of points
[x, mean, min, max] over the seeds (x is the epoch or the step, as the stage logs it); and the final metrics
(mean, std, min, max over the seeds).

`compare` lays a run of your own over that band (a finished run, one still training, or one that was stopped: its
curves so far): it prints, curve by curve, whether the run stays inside the band
widened by a tolerance (see `allowance`), its final metrics against the reference's range, and a one-line verdict,
and draws RUN_DIR/reference_compare.png. It exits 0 whether the run is inside or not; bad input is a one-line error
(exit 2). Without --reference it picks, among <stage>/reference/*.json for the run's data set, the one made with the
run's command, else the one of the run's model, else `default` (among equals, the one as long as the run).
"""
from __future__ import annotations

import bisect
import json
import math
import re
import shlex
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from scripts.checks import NON_NEGATIVE
from scripts.common import REPO_ROOT, ArgParser, UserError, read_json, run_main, write_text
from scripts.monitor import read_progress

FORMAT = "my_llm-reference-v1"
Curve = dict[float, float]          # one run's series: x (epoch or step) -> value
PER_STEP = "train_loss_per_step"    # stage 5's loss at every step, averaged over bins of steps before banding
BINS = 100                          # a per-step curve becomes about this many bins (4000 steps: 40 per bin)
MAX_POINTS = 200                    # longer curves are thinned to this many points, so the file stays small
MAX_BYTES = 30_000

# How far outside the seeds' min..max a run may go and still count as normal (`allowance`):
# - With n seeds, a new run of the same command falls outside the min..max of the n others with probability
#   2 / (n + 1): half the time for 3 seeds. The raw band would flag every other healthy run.
# - So each side is widened by the band's own width. For Gaussian seed noise the expected range of 3 draws is about
#   1.7 sigma, so the widened band is about mean +- 2.5 sigma, which a healthy run leaves rarely.
# - Plus a relative floor (REL_TOL of the mean), for what 3 seeds do not show: the same command on another device or
#   precision (stage 5's default run ends at val loss 1.457 on a 2-core CPU and 1.480 on an H200, 1.6% apart; stage 1's
#   val accuracy 91.36% against 91.72%), and points where the seeds happen to agree closely.
# - And an absolute floor for values near zero (stage 1's train loss falls to ~0.003, where 3% is nothing).
# A real problem (a bug, a learning rate 10x off) moves a loss curve by much more than this.
REL_TOL = 0.03
ABS_TOL = 0.01

# flags that say where things go or how a run is executed, not what it learns: ignored when commands are compared
PLACE_FLAGS = {"--seed", "--out_dir", "--checkpoint", "--model_path", "--cache_dir", "--data_dir", "--num_threads",
               "--device", "--log_interval"}
SWITCH_FLAGS = {"--resume"}


# ----------------------------------------------------------------------------- one adapter per history format
def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def epoch_rows(history: Any, keys: Sequence[str], where: Path) -> dict[str, Curve]:
    """Stages 1-4: history.json is a list of per-epoch rows {"epoch": 1, "train_loss": ..., ...}."""
    if not isinstance(history, list) or not history or not all(
            isinstance(row, dict) and is_number(row.get("epoch")) for row in history):
        raise UserError(f"{where} is not a per-epoch history (a list of rows with an 'epoch'); "
                        "give the run folder of a train.py run")
    curves = {key: {row["epoch"]: float(row[key]) for row in history if is_number(row.get(key))} for key in keys}
    return {key: curve for key, curve in curves.items() if curve}


def step_evals(history: Any, keys: Sequence[str], where: Path) -> dict[str, Curve]:
    """Stage 5: {"evals": [{"step": 250, "train_loss": ..., "val_loss": ...}, ...], "curve": [[step, loss], ...]}."""
    evals, steps = (history.get("evals"), history.get("curve")) if isinstance(history, dict) else (None, None)
    if not isinstance(evals, list) or not isinstance(steps, list) or not all(
            isinstance(row, dict) and is_number(row.get("step")) for row in evals) or not all(
            isinstance(p, list) and len(p) == 2 and is_number(p[0]) and is_number(p[1]) for p in steps):
        raise UserError(f"{where} is not a stage 5 history ({{'evals': [rows with 'step'], 'curve': [[step, loss]]}}); "
                        "give the run folder of a finished stage5_gpt/train.py run")
    curves = {key: {row["step"]: float(row[key]) for row in evals if is_number(row.get(key))}
              for key in keys if key != PER_STEP}
    curves[PER_STEP] = {step: float(loss) for step, loss in steps}
    return {key: curve for key, curve in curves.items() if curve}


@dataclass(frozen=True)
class StageFormat:
    read: Callable[[Any, Sequence[str], Path], dict[str, Curve]]   # history.json -> {curve: {x: value}}
    x: str                      # what x counts
    curves: tuple[str, ...]     # series that get a band (those a run lacks are skipped)
    final: tuple[str, ...]      # keys of metrics.json's "metrics" summarised over the seeds (absent ones skipped)


CLASSIFIER = ("accuracy", "macro_f1", "val_accuracy")       # train_classifier.py of stages 2 and 4
STAGES = {
    "stage1_mlp": StageFormat(epoch_rows, "epoch", ("train_loss", "val_loss", "val_acc"),
                              ("val_accuracy", "val_loss")),
    "stage2_rnn_lstm": StageFormat(epoch_rows, "epoch", ("train_loss", "val_loss", "val_acc"),
                                   ("val_loss", "val_ppl", "val_bpc", *CLASSIFIER)),
    "stage3_attention_seq2seq": StageFormat(epoch_rows, "epoch", ("train_loss", "val_loss", "val_bleu"),
                                            ("val_bleu_greedy", "val_chrf_greedy", "val_loss")),
    "stage4_transformer": StageFormat(epoch_rows, "epoch", ("train_loss", "val_loss", "val_bleu", "val_acc"),
                                      ("val_bleu_greedy", "val_chrf_greedy", "val_loss", *CLASSIFIER)),
    "stage5_gpt": StageFormat(step_evals, "step", ("train_loss", "val_loss", PER_STEP),
                              ("val_loss", "final_val_loss", "final_train_loss")),
}


# ----------------------------------------------------------------------------- run folders
@dataclass
class Run:
    folder: Path
    metrics: dict[str, Any]     # the whole metrics.json (for an unfinished run: its progress.json, no "metrics")
    curves: dict[str, Curve]
    state: str = "finished"     # or running / interrupted / stopped / failed (see scripts/monitor.py)

    @property
    def stage(self) -> str:
        return self.metrics["stage"]

    @property
    def command(self) -> str:
        return str(self.metrics.get("command", ""))

    @property
    def finished(self) -> bool:
        return self.state == "finished"

    def last_x(self) -> float:
        return max(max(curve) for name, curve in self.curves.items() if name != PER_STEP)

    def where(self) -> str:
        """"finished", or how far an unfinished run got: "running, step 1,200 of 4,000"."""
        if self.finished:
            return "finished"
        step, total = self.metrics.get("step"), self.metrics.get("total_steps")
        return f"{self.state}, step {step:,} of {total:,}" if is_number(step) and is_number(total) else self.state


def run_state(folder: Path, progress: dict[str, Any] | None) -> str:
    """"finished" when the run's progress.json says so, or when it has a metrics.json and no progress.json (a run
    from before progress.json existed); else the state its progress.json gives (running, interrupted, stopped,
    failed: see scripts/monitor.py), or "unknown" when it has neither file."""
    if progress is not None:
        return str(progress["state"])
    return "finished" if (Path(folder) / "metrics.json").is_file() else "unknown"


def read_run(folder: str | Path) -> Run:
    """A training run, finished or not: the header of its metrics.json (a finished run) or of its progress.json
    (one still running, interrupted or stopped), which names the stage, and its history.json, read by the stage's
    adapter. Anything else is a UserError saying what is wrong."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"{folder} is not a folder; give a run folder (the --out_dir of a train.py run)")
    progress = read_progress(folder)
    if not (folder / "history.json").is_file():
        if progress is not None:
            raise UserError(f"{folder} has no history.json yet: the run ({progress['state']}, step "
                            f"{progress.get('step')} of {progress.get('total_steps')}) has not finished its first "
                            "evaluation; try again after it")
        raise UserError(f"{folder} is not a training run: it has no history.json (train.py writes it at every "
                        "evaluation)")
    state = run_state(folder, progress)
    if state == "finished" and (folder / "metrics.json").is_file():
        metrics = read_json(folder / "metrics.json", "run metrics")
        if not isinstance(metrics, dict) or not isinstance(metrics.get("metrics"), dict) or "stage" not in metrics:
            raise UserError(f"{folder / 'metrics.json'} is not a metrics file of this course (no 'stage' and "
                            "'metrics')")
    elif progress is not None:
        metrics = {**progress, "metrics": {}}
    else:
        raise UserError(f"{folder} has a history.json but neither metrics.json (written when a run ends) nor "
                        "progress.json (written while it trains); give the run folder of a train.py run")
    if metrics["stage"] not in STAGES:
        raise UserError(f"{folder} was made by {metrics['stage']!r}, which has no reference runs; "
                        f"known stages: {', '.join(STAGES)}")
    layout = STAGES[metrics["stage"]]
    curves = layout.read(read_json(folder / "history.json", "run history"), layout.curves, folder / "history.json")
    if not any(name != PER_STEP for name in curves):
        raise UserError(f"{folder / 'history.json'} holds none of {', '.join(layout.curves)}")
    return Run(folder, metrics, curves, state)


def words_of(command: str) -> list[str]:
    try:
        return shlex.split(command)
    except ValueError:      # unbalanced quotes in a hand-edited file: split on blanks
        return command.split()


def seed_of(command: str) -> int:
    """The --seed of a recorded command (train.py's default, 0, when absent)."""
    words = words_of(command)
    values = [words[i + 1] for i, w in enumerate(words[:-1]) if w == "--seed"]
    values += [w.split("=", 1)[1] for w in words if w.startswith("--seed=")]
    try:
        return int(values[-1]) if values else 0
    except ValueError:
        raise UserError(f"the command `{command}` has a --seed that is not a whole number") from None


def recipe(command: str) -> str:
    """The command without the flags that only place or execute a run (PLACE_FLAGS): what decides the curves."""
    words, kept, skip = words_of(command), [], False
    for word in words:
        if skip:
            skip = False
            continue
        name = word.split("=", 1)[0]
        if name in PLACE_FLAGS:
            skip = "=" not in word
        elif name not in SWITCH_FLAGS:
            kept.append(word)
    return shlex.join(kept)


def flag_of(command: str, flag: str) -> str | None:
    """The value of a flag in a command (`--preset quick` or `--preset=quick`; the last one given), or None."""
    words, value = words_of(command), None
    for i, word in enumerate(words):
        if word.startswith(flag + "="):
            value = word.split("=", 1)[1]
        elif word == flag and i + 1 < len(words):
            value = words[i + 1]
    return value


def preset_of(command: str) -> str | None:
    """The value of --preset in a command, or None."""
    return flag_of(command, "--preset")


# ----------------------------------------------------------------------------- bands
def bin_curve(curve: Curve, width: int) -> Curve:
    """Mean of each bin of `width` steps, at the bin's last step; a bin less than half full is dropped."""
    bins: dict[int, list[float]] = {}
    for step, value in curve.items():
        bins.setdefault(math.ceil(step / width) * width, []).append(value)
    return {end: statistics.fmean(values) for end, values in sorted(bins.items()) if 2 * len(values) >= width}


def band(curves: Sequence[Curve], need: int) -> list[list[float]]:
    """[x, mean, min, max] over the runs at every x that at least `need` runs reached."""
    points = []
    for x in sorted(set().union(*curves)):
        values = [curve[x] for curve in curves if x in curve]
        if len(values) >= need:
            points.append([x, statistics.fmean(values), min(values), max(values)])
    if len(points) > MAX_POINTS:    # keep evenly spaced points, always the last
        points = [points[round(i * (len(points) - 1) / (MAX_POINTS - 1))] for i in range(MAX_POINTS)]
    return points


def summary(values: Sequence[float]) -> dict[str, float]:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "min": min(values), "max": max(values)}


def allowance(low: float, high: float, mean: float, rel_tol: float = REL_TOL) -> tuple[float, float]:
    """The band [low, high] of the seeds widened on each side by max(its width, rel_tol of the mean, ABS_TOL)
    (why: see REL_TOL above)."""
    margin = max(high - low, rel_tol * abs(mean), ABS_TOL)
    return low - margin, high + margin


def band_at(points: Sequence[Sequence[float]], x: float) -> tuple[float, float, float] | None:
    """(mean, min, max) of the band at x, linear between the reference's points; None outside its x range."""
    xs = [p[0] for p in points]
    if not xs or x < xs[0] or x > xs[-1]:
        return None
    i = bisect.bisect_left(xs, x)
    if xs[i] == x:
        return points[i][1], points[i][2], points[i][3]
    a, b = points[i - 1], points[i]
    t = (x - a[0]) / (b[0] - a[0])
    return tuple(a[k] + t * (b[k] - a[k]) for k in (1, 2, 3))  # type: ignore[return-value]


# ----------------------------------------------------------------------------- build
def rounded(value: Any) -> Any:
    """6 significant digits, integers kept as integers (the file is for people and diffs, not for bit-exactness)."""
    if isinstance(value, float):
        return int(value) if value.is_integer() and abs(value) < 1e15 else float(f"{value:.6g}")
    if isinstance(value, list):
        return [rounded(v) for v in value]
    if isinstance(value, dict):
        return {k: rounded(v) for k, v in value.items()}
    return value


def dumps(reference: dict[str, Any]) -> str:
    """JSON with one point per line (a list holding only numbers or strings goes on one line)."""
    text = json.dumps(rounded(reference), indent=1, ensure_ascii=False)
    return re.sub(r"\[\s+([^\[\]{}]*?)\s+\]", lambda m: "[" + re.sub(r",\s+", ", ", m.group(1)) + "]", text) + "\n"


def one_value(runs: Sequence[Run], key: str) -> str:
    """A metrics.json field shared by the runs, or the distinct values joined by ' | '."""
    values = list(dict.fromkeys(str(run.metrics.get(key, "?")) for run in runs))
    return " | ".join(values)


def check_runs(runs: Sequence[Run], stage: str | None) -> str:
    """All runs come from one stage (the one asked for), one command and distinct seeds; returns the stage."""
    stages = sorted({run.stage for run in runs})
    if len(stages) > 1:
        raise UserError(f"the runs come from different stages ({', '.join(stages)}); give runs of one command")
    if stage is not None and stages[0] != stage:
        raise UserError(f"--stage {stage}, but the runs were made by {stages[0]}")
    first = recipe(runs[0].command)
    for run in runs[1:]:
        if recipe(run.command) != first:
            raise UserError(f"the runs were made by different commands: {run.folder} ran `{recipe(run.command)}`, "
                            f"{runs[0].folder} ran `{first}`; a reference is seeds of one command")
    seeds = [seed_of(run.command) for run in runs]
    for i, seed in enumerate(seeds):
        if seed in seeds[:i]:
            raise UserError(f"{runs[seeds.index(seed)].folder} and {runs[i].folder} both ran --seed {seed}; "
                            "give runs of different seeds")
    for run in runs:
        bad = [(name, x) for name, curve in run.curves.items() for x, v in curve.items() if not math.isfinite(v)]
        if bad:
            raise UserError(f"{run.folder} has a non-finite {bad[0][0]} at {STAGES[run.stage].x} {bad[0][1]}; "
                            "a reference needs healthy runs")
    return stages[0]


def build_reference(runs: Sequence[Run], stage: str | None, name: str) -> dict[str, Any]:
    stage = check_runs(runs, stage)
    layout = STAGES[stage]
    runs = sorted(runs, key=lambda run: seed_of(run.command))
    need = max(1, math.ceil(len(runs) / 2))   # a point most seeds reached (runs that stop early end sooner)
    curves: dict[str, Any] = {}
    for key in layout.curves:
        per_run = [run.curves[key] for run in runs if key in run.curves]
        if len(per_run) < need:
            continue
        entry: dict[str, Any] = {"x": layout.x}
        if key == PER_STEP:
            width = max(1, math.ceil(max(max(c) for c in per_run) / BINS))
            per_run = [bin_curve(curve, width) for curve in per_run]
            entry.update(bin=width, note=f"training loss at every step, averaged over bins of {width} steps")
        entry["points"] = band(per_run, need)
        if entry["points"]:
            curves[key] = entry
    final = {}
    for key in layout.final:
        values = [run.metrics["metrics"][key] for run in runs if is_number(run.metrics["metrics"].get(key))]
        if len(values) == len(runs):
            final[key] = summary([float(v) for v in values])
    last = [run.last_x() for run in runs]
    return {
        "format": FORMAT, "stage": stage, "name": name,
        "model": one_value(runs, "model"), "dataset": one_value(runs, "dataset"),
        "command": recipe(runs[0].command),
        "device": one_value(runs, "device"), "hardware": one_value(runs, "hardware"), "torch": one_value(runs, "torch"),
        "seeds": [seed_of(run.command) for run in runs],
        "created": time.strftime("%Y-%m-%d"),
        "tolerance": f"compare allows max(band width, {REL_TOL:.0%} of the mean, {ABS_TOL}) beyond each side",
        "length": {"x": layout.x, "min": min(last), "max": max(last)},
        "curves": curves,
        "final": final,
    }


def build(args: Any) -> int:
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", args.name):
        raise UserError(f"--name {args.name!r}: use letters, digits, '_', '-' or '.' (it becomes a file name)")
    runs = [read_run(folder) for folder in args.runs]
    for run in runs:
        if not run.finished:
            raise UserError(f"{run.folder} is {run.where()}: a reference is built from finished runs only")
    reference = build_reference(runs, args.stage, args.name)
    out = Path(args.out) if args.out else REPO_ROOT / reference["stage"] / "reference" / f"{args.name}.json"
    text = dumps(reference)
    write_text(out, text)
    print(f"wrote {out} ({len(text.encode()):,} bytes): {reference['stage']} `{reference['command']}`, "
          f"seeds {' '.join(map(str, reference['seeds']))}, {reference['hardware']}, torch {reference['torch']}")
    for key, curve in reference["curves"].items():
        print(f"  {key}: {len(curve['points'])} points")
    for key, stats in reference["final"].items():
        print(f"  final {key}: mean {fmt(stats['mean'])}, std {fmt(stats['std'])}, "
              f"range {fmt(stats['min'])}-{fmt(stats['max'])}")
    if len(runs) < 3:
        print(f"note: {len(runs)} seed{'s' * (len(runs) != 1)} give a narrow band; 3 or more make a better reference")
    if len(text.encode()) > MAX_BYTES:
        print(f"note: the file is larger than {MAX_BYTES:,} bytes; lower BINS or MAX_POINTS")
    return 0


# ----------------------------------------------------------------------------- compare
def load_reference(path: Path) -> dict[str, Any]:
    ref = read_json(path, "reference file")
    curves = ref.get("curves") if isinstance(ref, dict) else None
    ok = (isinstance(ref, dict) and ref.get("format") == FORMAT and ref.get("stage") in STAGES
          and isinstance(curves, dict) and isinstance(ref.get("final"), dict) and isinstance(ref.get("length"), dict)
          and is_number(ref["length"].get("min")) and is_number(ref["length"].get("max"))
          and all(isinstance(s, dict) and all(is_number(s.get(k)) for k in ("mean", "std", "min", "max"))
                  for s in ref["final"].values())
          and all(isinstance(c, dict) and isinstance(c.get("points"), list) and all(
              isinstance(p, list) and len(p) == 4 and all(is_number(v) for v in p) for p in c["points"])
              for c in curves.values()))
    if not ok:
        raise UserError(f"{path} is not a reference file of this course (format {FORMAT}); "
                        "rebuild it with `python scripts/reference.py build ...`")
    for entry in curves.values():
        entry["points"].sort()      # band_at bisects on x
    return ref


def find_reference(run: Run) -> Path:
    """The reference in <stage>/reference/ for the run's data set: same command, else same --preset (a quick run
    with another --impl still meets the quick band), else same model, else 'default'; among equals, the one whose
    runs were as long as this one."""
    folder = REPO_ROOT / run.stage / "reference"
    candidates = []
    for path in sorted(folder.glob("*.json")):
        ref = load_reference(path)
        if ref.get("dataset") == run.metrics.get("dataset"):
            candidates.append((path, ref))
    if not candidates:
        others = ", ".join(p.stem for p in sorted(folder.glob("*.json"))) or "none"
        raise UserError(f"no reference for {run.stage} on {run.metrics.get('dataset')} in {folder} (there: {others}); "
                        "build one with `python scripts/reference.py build ...` or pass --reference FILE")
    preset = preset_of(run.command)
    wanted = [("command", recipe(run.command)), ("preset", preset), ("model", run.metrics.get("model")),
              ("name", "default")]
    for field, value in wanted:
        if value is None:
            continue
        matches = [(path, ref) for path, ref in candidates
                   if (preset_of(ref.get("command", "")) if field == "preset" else ref.get(field)) == value]
        # one command can train for different lengths (stage 4's --epochs default follows the training precision):
        # prefer the reference whose runs were as long as this one
        for path, ref in matches:
            if ref["length"]["max"] == run.last_x():
                return path
        if matches:
            return matches[0][0]
    return candidates[0][0]


def fmt(value: float) -> str:
    return f"{value:.4f}" if abs(value) < 10 else f"{value:.2f}"


def label(key: str) -> str:
    return key.replace("_", " ")


@dataclass
class Check:
    """One value of the run against the reference: a point of a curve (x = epoch or step) or a final metric."""
    key: str
    x: float | None             # None for a final metric
    unit: str                   # what x counts
    value: float
    low: float                  # the seeds' band
    high: float
    allowed: tuple[float, float]

    @property
    def inside(self) -> bool:       # False for NaN too
        return self.allowed[0] <= self.value <= self.allowed[1]

    @property
    def what(self) -> str:
        if self.x is None:
            return f"final {self.key}"
        return f"{label(self.key)} at {self.unit} {int(self.x) if float(self.x).is_integer() else self.x}"

    def describe(self) -> str:
        if not math.isfinite(self.value):      # a diverged run: NaN is no side of the band
            return (f"{self.what} is {fmt(self.value)}, not a finite number: the run diverged (the band is "
                    f"{fmt(self.low)}-{fmt(self.high)})")
        side = "above" if self.value > self.allowed[1] else "below" if self.value < self.allowed[0] else "within"
        bound = (f"allowed up to {fmt(self.allowed[1])}" if side == "above" else
                 f"allowed down to {fmt(self.allowed[0])}" if side == "below" else
                 f"allowed {fmt(self.allowed[0])}-{fmt(self.allowed[1])}")
        return f"{self.what} is {fmt(self.value)}, {side} the band {fmt(self.low)}-{fmt(self.high)} ({bound})"


def curve_checks(run: Run, ref: dict[str, Any], key: str, rel_tol: float) -> list[Check]:
    entry = ref["curves"][key]
    curve = run.curves.get(key, {})
    if "bin" in entry:
        curve = bin_curve(curve, int(entry["bin"]))
    checks = []
    for x, value in sorted(curve.items()):
        at = band_at(entry["points"], x)
        if at is not None:
            mean, low, high = at
            checks.append(Check(key, x, entry.get("x", "x"), value, low, high, allowance(low, high, mean, rel_tol)))
    return checks


def final_checks(run: Run, ref: dict[str, Any], rel_tol: float) -> list[Check]:
    checks = []
    for key, stats in ref["final"].items():
        value = run.metrics["metrics"].get(key)
        if is_number(value):
            checks.append(Check(key, None, "", float(value), stats["min"], stats["max"],
                                allowance(stats["min"], stats["max"], stats["mean"], rel_tol)))
    return checks


def plot_compare(run: Run, ref: dict[str, Any], results: dict[str, list[Check]], path: Path, rel_tol: float,
                 title: str) -> None:
    from scripts.plots import plt  # noqa: PLC0415 - matplotlib (Agg) only when drawing

    keys = [key for key, entry in ref["curves"].items() if entry["points"]]
    if not keys:
        return
    fig, axes = plt.subplots(1, len(keys), figsize=(4.6 * len(keys), 3.6), squeeze=False)
    for ax, key in zip(axes[0], keys):
        entry = ref["curves"][key]
        xs, means, lows, highs = zip(*entry["points"])
        allowed = [allowance(lo, hi, m, rel_tol) for m, lo, hi in zip(means, lows, highs)]
        ax.fill_between(xs, [a[0] for a in allowed], [a[1] for a in allowed], color="C0", alpha=0.12,
                        label="allowed (tolerance)")
        ax.fill_between(xs, lows, highs, color="C0", alpha=0.35, label=f"{len(ref.get('seeds', []))} seeds min-max")
        ax.plot(xs, means, "--", color="C0", lw=1, label="reference mean")
        curve = run.curves.get(key, {})
        if "bin" in entry:
            curve = bin_curve(curve, int(entry["bin"]))
        if curve:
            mine = sorted(curve.items())
            ax.plot([x for x, _ in mine], [v for _, v in mine], color="C1", marker="o" if len(mine) < 60 else None,
                    ms=3, label="this run")
        bad = [c for c in results.get(key, []) if not c.inside]
        if bad:
            ax.plot([c.x for c in bad], [c.value for c in bad], "x", color="red", ms=8, mew=2, label="outside")
        ax.set_xlabel(entry.get("x", "x"))
        ax.set_title(label(key) + (f" (mean of {entry['bin']} steps)" if "bin" in entry else ""), fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def compare(args: Any) -> int:
    run = read_run(args.run)
    ref_path = Path(args.reference) if args.reference else find_reference(run)
    if not ref_path.is_file():
        raise UserError(f"reference file {ref_path} does not exist")
    ref = load_reference(ref_path)
    if ref["stage"] != run.stage:
        raise UserError(f"{ref_path} is a reference of {ref['stage']}, but {run.folder} was made by {run.stage}; "
                        f"use a reference from {run.stage}/reference/")
    if ref.get("dataset") != run.metrics.get("dataset"):
        raise UserError(f"{ref_path} was trained on {ref.get('dataset')}, this run on {run.metrics.get('dataset')}; "
                        "their losses cannot be compared")
    if not args.tolerance >= 0:
        raise UserError(f"--tolerance must be 0 or more, got {args.tolerance}")
    seeds = ref.get("seeds", [])
    print(f"reference: {ref_path} ({len(seeds)} seed{'s' * (len(seeds) != 1)}: {' '.join(map(str, seeds))}; "
          f"`{ref.get('command')}`; "
          f"{ref.get('hardware')}, torch {ref.get('torch')})")
    print(f"this run:  {run.folder} ({run.where()}; `{recipe(run.command)}`; {run.metrics.get('hardware')}, "
          f"torch {run.metrics.get('torch')})")
    for note in notes(run, ref):
        print(f"note: {note}")
    print(f"tolerance: the seeds' min-max widened on each side by max(its width, {100 * args.tolerance:g}% of the "
          f"mean, {ABS_TOL})")

    results = {key: curve_checks(run, ref, key, args.tolerance) for key in ref["curves"]}
    for key, checks in results.items():
        print(curve_line(key, ref["curves"][key], checks, key in run.curves))
    # a run cut shorter by its own flags (--epochs 3, --max_steps) ends with other final metrics; one of the same
    # command that stopped early (stage 1's early stopping) is compared as it is
    length = ref["length"]
    shortened = run.last_x() < length["min"] and recipe(run.command) != ref.get("command")
    finals = [] if shortened or not run.finished else final_checks(run, ref, args.tolerance)
    if not run.finished and ref["final"]:
        resume = " (`--resume` continues it)" if run.state in ("interrupted", "stopped") else ""
        print(f"final metrics: not compared: the run is {run.where()}{resume}; its curves are compared up to "
              f"{length['x']} {run.last_x():g}")
    elif shortened and ref["final"]:
        print(f"final metrics: not compared (this run, with other flags, ends at {length['x']} {run.last_x():g}; "
              f"the reference runs end at {length['min']:g}-{length['max']:g})")
    elif finals:
        print("final metrics:")
    for check in finals:
        stats = ref["final"][check.key]
        print(f"  {check.key:<18} {fmt(check.value):>9}   reference {fmt(stats['min'])}-{fmt(stats['max'])} "
              f"(mean {fmt(stats['mean'])} +- {fmt(stats['std'])}; allowed {fmt(check.allowed[0])}-"
              f"{fmt(check.allowed[1])})  {'ok' if check.inside else 'OUTSIDE'}")

    verdict_text = verdict(results, finals)
    if not run.finished and verdict_text == "within the reference band":
        verdict_text += f" so far ({run.where()})"
    png = run.folder / "reference_compare.png"
    short = verdict_text.split(":")[0]
    plot_compare(run, ref, results, png, args.tolerance,
                 f"{run.folder.name} against reference {ref_path.stem} ({ref.get('hardware')}): {short}")
    print(f"plot: {png}")
    print(f"verdict: {verdict_text}")
    return 0


def notes(run: Run, ref: dict[str, Any]) -> list[str]:
    """What makes the comparison less exact: another command, model or device."""
    out = []
    if recipe(run.command) != ref.get("command"):
        out.append(f"this run's command differs from the reference's (`{recipe(run.command)}` against "
                   f"`{ref.get('command')}`); other flags give other curves")
    if run.metrics.get("model") != ref.get("model"):
        out.append(f"this run trained {run.metrics.get('model')}, the reference {ref.get('model')}")
    if run.metrics.get("device") != ref.get("device"):
        out.append(f"the reference ran on {ref.get('device')} ({ref.get('hardware')}), this run on "
                   f"{run.metrics.get('device')}: the same command on another device or precision lands a little "
                   "apart (the tolerance allows for it)")
    return out


def curve_line(key: str, entry: dict[str, Any], checks: list[Check], present: bool) -> str:
    name = label(key) + (f" (mean of {entry['bin']} steps)" if "bin" in entry else "")
    if not present:
        return f"{name}: not in this run"
    if not checks:
        xs = [p[0] for p in entry["points"]] or [math.nan]
        return f"{name}: no point of this run lies in the reference's range ({entry.get('x')} {xs[0]:g}-{xs[-1]:g})"
    bad = [c for c in checks if not c.inside]
    unit = entry.get("x", "x")
    if not bad:
        return f"{name}: within the band at all {len(checks)} {unit}s compared"
    return f"{name}: outside at {len(bad)} of {len(checks)} {unit}s; first: {bad[0].describe()}"


def verdict(results: dict[str, list[Check]], finals: list[Check]) -> str:
    compared = sum(len(checks) for checks in results.values()) + len(finals)
    if not compared:
        return "nothing to compare: no point of this run lies in the reference's range"
    first_bad = [next(c for c in checks if not c.inside) for checks in results.values()
                 if any(not c.inside for c in checks)]
    first_bad += [c for c in finals if not c.inside]
    if not first_bad:
        return "within the reference band"
    return "outside: " + "; ".join(c.describe() for c in first_bad)


# ----------------------------------------------------------------------------- command line
def main(argv: Sequence[str] | None = None) -> int:
    p = ArgParser(description="Reference runs: build a band from several seeds of one command, or compare a run "
                              "with it.")
    sub = p.add_subparsers(dest="action", required=True, metavar="{build,compare}")
    b = sub.add_parser("build", help="write <stage>/reference/<name>.json from run folders of several seeds",
                       description="Write <stage>/reference/<name>.json from run folders of several seeds.")
    b.add_argument("runs", nargs="+", help="run folders (history.json + metrics.json) of one command, one per seed")
    b.add_argument("--stage", default=None, choices=sorted(STAGES), help="the stage the runs must come from")
    b.add_argument("--name", default="default", help="reference name: <stage>/reference/<name>.json")
    b.add_argument("--out", default=None, help="write the reference here instead of <stage>/reference/<name>.json")
    c = sub.add_parser("compare", help="lay a run over a reference band: a report, a verdict and a PNG",
                       description="Lay a run over a reference band: a report, a verdict, RUN/reference_compare.png.")
    c.add_argument("run", help="the run folder to check (history.json, and metrics.json or progress.json): "
                               "finished, still running or interrupted")
    c.add_argument("--reference", default=None,
                   help="reference file (default: from <stage>/reference/ by the run's data set and command)")
    c.add_argument("--tolerance", type=NON_NEGATIVE, default=REL_TOL,
                   help="relative margin beyond the seeds' band, as a fraction of the mean")
    args = p.parse_args(argv)
    return build(args) if args.action == "build" else compare(args)


if __name__ == "__main__":
    run_main(main)
