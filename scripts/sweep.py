"""A small hyperparameter sweep over any stage's train.py: a grid (or random picks from it), several seeds.

    python scripts/sweep.py stage5_gpt/train.py --grid lr=1e-3,2e-3,4e-3 n_layer=2,4 --seeds 0 1 2 \\
        --metric val_loss --out sweeps/gpt_lr -- --max_steps 500
    python scripts/sweep.py stage1_mlp/train.py --grid lr=1e-3,3e-3 --random 2 --metric val_accuracy --mode max \\
        --out sweeps/mlp -- --dataset imdb --epochs 2

Each run is the stage's own train.py in a fresh process, with the fixed flags after `--`, one value per
grid flag, `--seed`, and its own `--out_dir` (and checkpoint path) under --out. The score is read from the
run's metrics.json (`"metrics": {...}`), so any metric a train.py reports can be swept. Finished runs are
skipped when the sweep is started again, so Ctrl-C loses at most the run in progress.
Writes <out>/results.json (every run), <out>/results.md (mean and spread over seeds per setting, best
first) and <out>/sweep.png.
"""
from __future__ import annotations

import itertools
import random
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Sequence

from scripts.checks import COUNT, SEED
from scripts.common import (REPO_ROOT, ArgParser, ChildFailed, UserError, path_arg, read_json, run_main, write_json,
                            write_text)
from scripts.report import markdown_table


SWEEP_SETS = ("seed", "out_dir", "checkpoint", "model_path", "resume", "restart")   # flags each run gets from the sweep


def parse_grid(items: Sequence[str]) -> dict[str, list[str]]:
    """["lr=1e-3,2e-3", "n_layer=2,4"] -> {"lr": ["1e-3", "2e-3"], "n_layer": ["2", "4"]}."""
    grid: dict[str, list[str]] = {}
    for item in items:
        name, sep, values = item.partition("=")
        name = name.strip().removeprefix("--")
        choices = [v.strip() for v in values.split(",") if v.strip()]
        if not sep or not name or not choices:
            raise UserError(f"--grid {item!r}: write FLAG=V1,V2,... (e.g. lr=1e-3,2e-3)")
        if name in SWEEP_SETS:
            raise UserError(f"--grid {item!r}: the sweep sets --{name} itself for every run (use --seeds, --out)")
        if name in grid:
            raise UserError(f"--grid names {name} twice; give all its values in one FLAG=V1,V2,...")
        if len(set(choices)) < len(choices):
            raise UserError(f"--grid {item!r} repeats a value; each run of a setting needs its own folder")
        grid[name] = choices
    return grid


def settings(grid: dict[str, list[str]], random_picks: int, seed: int) -> list[dict[str, str]]:
    """Every combination of the grid, or `random_picks` distinct ones drawn from it (reproducibly)."""
    combos = [dict(zip(grid, values)) for values in itertools.product(*grid.values())]
    if random_picks:
        combos = random.Random(seed).sample(combos, min(random_picks, len(combos)))
    return combos


def checkpoint_flag(script: Path) -> str | None:
    """The flag the script takes for its checkpoint path (stages differ), read from its --help."""
    help_text = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True).stdout
    return next((flag for flag in ("--checkpoint", "--model_path") if flag in help_text), None)


def run_one(script: Path, setting: dict[str, str], seed: int, fixed: list[str], run_dir: Path,
            ckpt_flag: str | None) -> None:
    argv = [sys.executable, str(script), *fixed, *[a for k, v in setting.items() for a in (f"--{k}", v)],
            "--seed", str(seed), "--out_dir", str(run_dir)]
    if ckpt_flag:
        argv += [ckpt_flag, str(run_dir / "best.pt")]
    print("$", " ".join(argv[1:]), flush=True)
    code = subprocess.run(argv).returncode
    if code != 0:       # the run has said why, in its one line: no second line from the sweep
        raise ChildFailed(code)


def summarise(rows: list[dict], grid: dict[str, list[str]], metric: str, mode: str) -> list[dict]:
    """One line per setting: mean, spread (sample std; 0 for one seed), min and max over its seeds."""
    groups: dict[tuple, list[float]] = {}
    for row in rows:
        groups.setdefault(tuple(row["setting"][k] for k in grid), []).append(row["score"])
    out = [{"setting": dict(zip(grid, key)), "mean": statistics.fmean(scores),
            "std": statistics.stdev(scores) if len(scores) > 1 else 0.0, "min": min(scores), "max": max(scores),
            "seeds": len(scores)} for key, scores in groups.items()]
    return sorted(out, key=lambda r: r["mean"], reverse=mode == "max")


def plot(summary: list[dict], rows: list[dict], grid: dict[str, list[str]], metric: str, path: Path) -> None:
    import matplotlib  # noqa: PLC0415 - only when a sweep ends

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    labels = [", ".join(f"{k}={v}" for k, v in s["setting"].items()) for s in summary]
    fig, ax = plt.subplots(figsize=(max(5, 1.2 * len(labels) + 2), 3.8))
    ax.errorbar(range(len(summary)), [s["mean"] for s in summary], yerr=[s["std"] for s in summary], fmt="o",
                capsize=4, label="mean ± std over seeds")
    for i, s in enumerate(summary):
        scores = [r["score"] for r in rows if r["setting"] == s["setting"]]
        ax.plot([i] * len(scores), scores, "x", color="C1", label="one seed" if i == 0 else None)
    ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right")
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    fixed = argv[argv.index("--") + 1:] if "--" in argv else []
    own = argv[: argv.index("--")] if "--" in argv else argv
    p = ArgParser(description="Grid or random sweep over a stage's train.py flags, several seeds per setting.")
    p.add_argument("script", help="the train.py to run, e.g. stage5_gpt/train.py")
    p.add_argument("--grid", nargs="+", required=True, help="FLAG=V1,V2,... for each flag to vary")
    p.add_argument("--seeds", nargs="+", type=SEED, default=[0], help="seeds to run every setting with")
    p.add_argument("--random", type=COUNT, default=0, help="try only N settings drawn from the grid (0: all)")
    p.add_argument("--metric", required=True, help="key of metrics.json's 'metrics' to compare (e.g. val_loss)")
    p.add_argument("--mode", choices=["min", "max"], default="min", help="whether lower or higher is better")
    p.add_argument("--out", type=path_arg, required=True,
                   help="folder for the runs, results.json, results.md and sweep.png")
    args = p.parse_args(own)
    script = (Path(args.script) if Path(args.script).is_file() else REPO_ROOT / args.script).resolve()
    trainers = sorted(REPO_ROOT.glob("stage*/train*.py")) + sorted(REPO_ROOT.glob("stage*/finetune.py"))
    if script not in trainers:
        raise UserError(f"{args.script} is not one of the course's training programs; give one of "
                        f"{', '.join(str(t.relative_to(REPO_ROOT)) for t in trainers)}")
    if Path(args.out).exists() and not Path(args.out).is_dir():
        raise UserError(f"--out {args.out} is a file; give a folder for the runs")
    grid, out = parse_grid(args.grid), Path(args.out)
    if len(set(args.seeds)) < len(args.seeds):
        raise UserError(f"--seeds {' '.join(map(str, args.seeds))} repeats a seed; each run needs its own folder")
    fixed_set = [a for a in fixed if a.startswith("--") and a[2:].split("=")[0] in SWEEP_SETS]
    if fixed_set:
        raise UserError(f"{fixed_set[0]} after --: the sweep sets it itself for every run (use --seeds, --out)")
    ckpt_flag = checkpoint_flag(script)
    rows = []
    for setting in settings(grid, args.random, 0):
        for seed in args.seeds:
            run_dir = out / ("_".join(f"{k}{v}" for k, v in setting.items()) + f"_seed{seed}")
            if not (run_dir / "metrics.json").is_file():      # finished runs are kept from an earlier start
                run_one(script, setting, seed, fixed, run_dir, ckpt_flag)
            metrics = read_json(run_dir / "metrics.json", "run metrics")["metrics"]
            if args.metric not in metrics:
                raise UserError(f"{run_dir}/metrics.json has no metric {args.metric!r}; it has {sorted(metrics)}")
            rows.append({"setting": setting, "seed": seed, "score": metrics[args.metric], "run": str(run_dir)})
            write_json(out / "results.json", {"script": str(args.script), "metric": args.metric, "mode": args.mode,
                                              "fixed": fixed, "rows": rows})
    summary = summarise(rows, grid, args.metric, args.mode)
    table = markdown_table(summary, [*[(k, lambda r, k=k: r["setting"][k]) for k in grid],
                                     (f"{args.metric} (mean)", lambda r: f"{r['mean']:.4f}"),
                                     ("std", lambda r: f"{r['std']:.4f}"), ("min", lambda r: f"{r['min']:.4f}"),
                                     ("max", lambda r: f"{r['max']:.4f}"), ("seeds", lambda r: r["seeds"])])
    write_text(out / "results.md", f"Sweep of `{args.script}` ({args.mode} {args.metric}), fixed flags: "
                                   f"`{' '.join(fixed) or '(none)'}`\n\n{table}\n")
    plot(summary, rows, grid, args.metric, out / "sweep.png")
    print(table)
    print(f"best: {summary[0]['setting']} ({args.metric} {summary[0]['mean']:.4f}); results in {out}")
    return 0


if __name__ == "__main__":
    run_main(main)
