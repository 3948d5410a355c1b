"""Stage 1 benchmark: train and evaluate both implementations with default settings, then rebuild
the stage README tables from the metrics.json files it wrote (the course-wide tables in the top README are
made from the same files by `python scripts/course_report.py`).

    python stage1_mlp/bench.py                 # IMDb, torch then scratch (about 3 minutes on 2 cores)
    python stage1_mlp/bench.py --tables_only   # only rebuild the README tables from results/

(From inside stage1_mlp/ the same commands are `python bench.py ...`.)

Results go to stage1_mlp/results/<dataset>_<impl>_{train,test}.json and <dataset>_speed.json.
"""
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Sequence

from scripts.common import ArgParser, UserError, run_main, write_json
from scripts.report import load_results, markdown_table, update_file

STAGE_DIR = Path(__file__).resolve().parent
RESULTS = STAGE_DIR / "results"
IMPLS = ("torch", "scratch")


def run_one(dataset: str, impl: str, extra: list[str]) -> None:
    """train.py then evaluate.py for one implementation, exactly as a user would run them."""
    run_dir = STAGE_DIR / "runs" / f"bench_{dataset}_{impl}"
    eval_dir = STAGE_DIR / "runs" / f"bench_eval_{dataset}_{impl}"
    checkpoint = STAGE_DIR / "checkpoints" / f"bench_{dataset}_{impl}.pt"
    python = sys.executable
    subprocess.run([python, str(STAGE_DIR / "train.py"), "--dataset", dataset, "--impl", impl, "--out_dir",
                    str(run_dir), "--checkpoint", str(checkpoint), *extra], check=True)
    subprocess.run([python, str(STAGE_DIR / "evaluate.py"), "--checkpoint", str(checkpoint), "--out_dir",
                    str(eval_dir), *extra], check=True)
    RESULTS.mkdir(exist_ok=True)
    shutil.copy(run_dir / "metrics.json", RESULTS / f"{dataset}_{impl}_train.json")
    shutil.copy(eval_dir / "metrics.json", RESULTS / f"{dataset}_{impl}_test.json")
    shutil.copy(run_dir / "curves.png", RESULTS / f"{dataset}_{impl}_curves.png")
    shutil.copy(eval_dir / "confusion_matrix.png", RESULTS / f"{dataset}_{impl}_confusion.png")


def speed_summary(dataset: str) -> dict:
    """Scratch against torch from the same benchmark run: speed ratio and accuracy gap."""
    train = {impl: load_results([RESULTS / f"{dataset}_{impl}_train.json"])[0] for impl in IMPLS}
    test = {impl: load_results([RESULTS / f"{dataset}_{impl}_test.json"])[0] for impl in IMPLS}
    speed = {impl: train[impl]["metrics"]["train_samples_per_s"] for impl in IMPLS}
    accuracy = {impl: test[impl]["metrics"]["accuracy"] for impl in IMPLS}
    return {"dataset": dataset, "train_samples_per_s": speed,
            "scratch_over_torch_speed": speed["scratch"] / speed["torch"],
            "accuracy_gap_points": 100 * abs(accuracy["scratch"] - accuracy["torch"]),
            "hardware": train["torch"]["hardware"]}


def tables(dataset: str) -> dict[str, str]:
    rows = []
    for impl in IMPLS:
        train = load_results([RESULTS / f"{dataset}_{impl}_train.json"])[0]
        test = load_results([RESULTS / f"{dataset}_{impl}_test.json"])[0]
        rows.append({"impl": impl, "train": train, "test": test})
    columns = [
        ("implementation", lambda r: f"`--impl {r['impl']}`"),
        ("test accuracy", lambda r: f"{100 * r['test']['metrics']['accuracy']:.2f}%"),
        ("test macro-F1", lambda r: f"{100 * r['test']['metrics']['macro_f1']:.2f}"),
        ("best val accuracy", lambda r: f"{100 * r['train']['metrics']['val_accuracy']:.2f}% "
                                        f"(epoch {r['train']['metrics']['best_epoch']})"),
        ("train wall time", lambda r: f"{r['train']['train_seconds']:.0f} s"),
        ("train samples/s", lambda r: round(r["train"]["metrics"]["train_samples_per_s"])),
        ("latency, batch 1", lambda r: f"{r['test']['metrics']['latency_ms_bs1']:.2f} ms"),
        ("throughput, batch 1024", lambda r: f"{r['test']['metrics']['throughput_samples_per_s']:,.0f} docs/s"),
        ("parameters", lambda r: r["train"]["params"]),
    ]
    summary = load_results([RESULTS / f"{dataset}_speed.json"])[0]
    hardware = rows[0]["train"]["hardware"]
    note = (f"\nMeasured by `python stage1_mlp/bench.py` on {hardware} (torch {rows[0]['train']['torch']}); "
            f"default settings. Scratch trains at **{summary['scratch_over_torch_speed']:.2f}x** the speed of "
            f"the torch version in the same run; test accuracies differ by "
            f"{summary['accuracy_gap_points']:.2f} points.\n")
    blocks = {f"stage1_{dataset}": markdown_table(rows, columns) + "\n" + note}
    gpu_rows = [{"impl": impl, "train": load_results([RESULTS / f"{dataset}_{impl}_cuda_train.json"])[0],
                 "test": load_results([RESULTS / f"{dataset}_{impl}_cuda_test.json"])[0]}
                for impl in IMPLS if (RESULTS / f"{dataset}_{impl}_cuda_test.json").is_file()]
    if gpu_rows:
        gpu_columns = [*columns[:2], columns[4], columns[5], columns[6],
                       ("hardware", lambda r: f"{r['train']['hardware']}, torch {r['train']['torch']}"),
                       ("command", lambda r: f"`{r['train']['command']}`")]
        blocks[f"stage1_{dataset}_gpu"] = markdown_table(gpu_rows, gpu_columns)
    return blocks


def write_tables(dataset: str) -> None:
    update_file(STAGE_DIR / "README.md", tables(dataset))


def main(argv: Sequence[str] | None = None) -> int:
    parser = ArgParser(description=__doc__)
    parser.add_argument("--dataset", default="imdb", choices=["imdb", "ag_news"], help="data set to benchmark")
    parser.add_argument("--tables_only", action="store_true", help="only rebuild README tables from results/")
    parser.add_argument("--data_dir", default=None, help="folder holding the data sets (default: $MY_LLM_DATA)")
    args = parser.parse_args(argv)
    extra = ["--data_dir", args.data_dir] if args.data_dir else []
    if not args.tables_only:
        for impl in IMPLS:
            try:
                run_one(args.dataset, impl, extra)
            except subprocess.CalledProcessError as err:
                raise UserError(f"the {impl} run failed (exit {err.returncode}); see its message above") from None
        write_json(RESULTS / f"{args.dataset}_speed.json", speed_summary(args.dataset))
    write_tables(args.dataset)
    print(f"README tables rebuilt from {RESULTS}")
    return 0


if __name__ == "__main__":
    run_main(main)
