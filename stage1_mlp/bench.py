"""Stage 1 benchmark: train and evaluate both implementations with default settings, and the quick preset end to
end, then rebuild the stage README tables from the metrics files it wrote (the course-wide tables in the top README
are made from the same files by `python scripts/course_report.py`).

    python stage1_mlp/bench.py                 # both parts (about 4 minutes on 2 cores)
    python stage1_mlp/bench.py --parts default # IMDb, default settings, torch then scratch (about 3 minutes)
    python stage1_mlp/bench.py --parts quick   # the quick preset: train.py then evaluate.py, timed (well under 1 min)
    python stage1_mlp/bench.py --tables_only   # only rebuild the README tables from results/

(From inside stage1_mlp/ the same commands are `python bench.py ...`.)

Results go to stage1_mlp/results/: <dataset>_<impl>_{train,test}.json and <dataset>_speed.json (default part),
quick.json (quick part); every part, and --tables_only, also rewrites results/overview.json, the quick / default /
GPU summary the course's roadmap is built from. The data must be the course's reference copies (checked against their
sha256 before anything runs): a bench publishes results. Your own data is train.py's.
"""
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from scripts.checks import THREADS
from scripts.classification_data import AG_NEWS_SHA256, IMDB_SHA256
from scripts.common import (ArgParser, ChildFailed, UserError, check_reference_data, data_bases, path_arg, read_json,
                            run_main, write_json)
from scripts.report import load_results, markdown_table, update_file

STAGE_DIR = Path(__file__).resolve().parent
RESULTS = STAGE_DIR / "results"
IMPLS = ("torch", "scratch")
PARTS = ("default", "quick")
QUICK_COMMAND = "python stage1_mlp/train.py --preset quick"
# the sha256 of the shared copies (their MANIFEST.md): the only data the benchmark publishes results of. The shared
# AG News holds the test split only, so there is no reference training split: its results are train.py's to make.
REFERENCE = {"imdb": IMDB_SHA256,
             "ag_news": AG_NEWS_SHA256}


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


def run_quick(extra: list[str], train_flags: Sequence[str] = (), results: Path = RESULTS,
              outputs: Path = STAGE_DIR) -> dict[str, Any]:
    """results/quick.json: the quick preset as a learner runs it, train.py then evaluate.py on the whole test set,
    timed from the first start to the last exit. It writes to runs/bench_quick and checkpoints/bench_quick.pt (under
    `outputs`), so a model of your own is never replaced. `train_flags` go to train.py only (the tests' tiny runs)."""
    run_dir, checkpoint = outputs / "runs" / "bench_quick", outputs / "checkpoints" / "bench_quick.pt"
    eval_dir = outputs / "runs" / "bench_eval_quick"
    shutil.rmtree(run_dir, ignore_errors=True)   # a fresh run: no --resume, no old TensorBoard events
    python = sys.executable
    load_before, tick = os.getloadavg()[0], time.perf_counter()
    subprocess.run([python, str(STAGE_DIR / "train.py"), "--preset", "quick", "--out_dir", str(run_dir),
                    "--checkpoint", str(checkpoint), *train_flags, *extra], check=True)
    subprocess.run([python, str(STAGE_DIR / "evaluate.py"), "--checkpoint", str(checkpoint), "--out_dir",
                    str(eval_dir), *extra], check=True)
    seconds, load_after = time.perf_counter() - tick, os.getloadavg()[0]
    trained, scored = read_json(run_dir / "metrics.json"), read_json(eval_dir / "metrics.json")
    summary = {
        "command": QUICK_COMMAND, "seconds": round(seconds, 1), "minutes": round(seconds / 60, 2),
        "test_accuracy": scored["metrics"]["accuracy"], "test_macro_f1": scored["metrics"]["macro_f1"],
        "test_size": scored["test_size"], "val_accuracy": trained["metrics"]["val_accuracy"],
        "best_epoch": trained["metrics"]["best_epoch"], "epochs_run": trained["metrics"]["epochs_run"],
        "train_process_seconds": trained["train_seconds"], "fit_seconds": trained["metrics"]["fit_seconds"],
        "eval_seconds": scored["eval_seconds"], "train_samples_per_s": trained["metrics"]["train_samples_per_s"],
        "params": trained["params"], "hardware": trained["hardware"], "torch": trained["torch"],
        "load_average_1min": [round(load_before, 2), round(load_after, 2)],
        "commands": [trained["command"], scored["command"]]}
    results.mkdir(parents=True, exist_ok=True)
    write_json(results / "quick.json", summary)
    shutil.copy(run_dir / "history.json", results / "quick_history.json")
    print(f"quick preset: {seconds:.0f} s from start to exit, IMDb test accuracy {100 * summary['test_accuracy']:.2f}%",
          flush=True)
    return summary


def overview(results: Path = RESULTS) -> dict[str, Any]:
    """results/overview.json: the quick preset, the default run and the GPU run (torch implementation, IMDb), each
    with its command, minutes (the quick preset's whole command, train and test; the others' training process, as
    the tables below give it), IMDb test accuracy and hardware; a run not measured yet says so."""
    def row(run: str, command: str, names: Sequence[str]) -> dict[str, Any]:
        paths = [results / name for name in names]
        if not all(path.is_file() for path in paths):
            return {"run": run, "command": command, "minutes": None, "score": "not measured", "hardware": None,
                    "source": None}
        files = [read_json(path) for path in paths]
        if run == "quick":
            seconds, accuracy, hardware = files[0]["seconds"], files[0]["test_accuracy"], files[0]["hardware"]
        else:
            seconds, accuracy = files[0]["train_seconds"], files[1]["metrics"]["accuracy"]
            hardware = files[0]["hardware"] + ("" if files[0]["device"] == "cpu" else f", torch {files[0]['torch']}")
        return {"run": run, "command": command, "minutes": round(seconds / 60, 2),
                "score": f"test accuracy {100 * accuracy:.2f}%", "hardware": hardware,
                "source": ", ".join(f"results/{name}" for name in names)}

    return {"stage": "stage1_mlp", "rows": [
        row("quick", QUICK_COMMAND, ["quick.json"]),
        row("default", "python stage1_mlp/train.py", ["imdb_torch_train.json", "imdb_torch_test.json"]),
        row("gpu", "python stage1_mlp/train.py --device cuda",
            ["imdb_torch_cuda_train.json", "imdb_torch_cuda_test.json"])]}


def overview_table(data: dict[str, Any], quick: dict[str, Any] | None = None) -> str:
    """The README's quick / default / GPU table, from results/overview.json (and the machine's load during the quick
    run, from results/quick.json: other work on the same cores slows it down)."""
    names = {"quick": "quick preset", "default": "default run", "gpu": "GPU"}
    columns = [("run", lambda r: names[r["run"]]), ("command", lambda r: f"`{r['command']}`"),
               ("time", lambda r: "not measured" if r["minutes"] is None else f"{r['minutes']:.1f} min"),
               ("IMDb test accuracy", lambda r: r["score"].removeprefix("test accuracy ")),
               ("hardware", lambda r: r["hardware"] or "—")]
    load = ""
    if quick and quick.get("load_average_1min"):
        load = f", measured at a 1-minute load average of {max(quick['load_average_1min']):.1f}"
    return (markdown_table(data["rows"], columns) + "\n\nTime: the quick preset from start to exit, training and "
            f"the test-set evaluation included (`results/quick.json`{load}); the default and GPU runs: the training "
            "process (`results/imdb_torch*_train.json`).\n")


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
    blocks = {}
    if dataset == "imdb":
        quick = read_json(RESULTS / "quick.json") if (RESULTS / "quick.json").is_file() else None
        blocks["stage1_overview"] = overview_table(read_json(RESULTS / "overview.json"), quick)
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
    blocks[f"stage1_{dataset}"] = markdown_table(rows, columns) + "\n" + note
    gpu_rows = [{"impl": impl, "train": load_results([RESULTS / f"{dataset}_{impl}_cuda_train.json"])[0],
                 "test": load_results([RESULTS / f"{dataset}_{impl}_cuda_test.json"])[0]}
                for impl in IMPLS if (RESULTS / f"{dataset}_{impl}_cuda_test.json").is_file()]
    if gpu_rows:
        gpu_columns = [*columns[:2], columns[4], columns[5], columns[6],
                       ("hardware", lambda r: f"{r['train']['hardware']}, torch {r['train']['torch']}"),
                       ("command", lambda r: f"`{r['train']['command']}`")]
        blocks[f"stage1_{dataset}_gpu"] = markdown_table(gpu_rows, gpu_columns)
    return blocks


def main(argv: Sequence[str] | None = None) -> int:
    parser = ArgParser(description=__doc__)
    parser.add_argument("--parts", nargs="+", default=None, choices=PARTS,
                        help="default: both implementations with default settings; quick: the quick preset, timed "
                             "(default: both)")
    parser.add_argument("--dataset", default="imdb", choices=["imdb", "ag_news"],
                        help="data set of the default part (the quick part is IMDb's)")
    parser.add_argument("--tables_only", action="store_true", help="only rebuild README tables from results/")
    parser.add_argument("--data_dir", type=path_arg, default=None,
                        help="folder holding the data sets (default: $MY_LLM_DATA); they must be the reference "
                             "copies, checked against their sha256 before anything runs (your own data: train.py)")
    parser.add_argument("--num_threads", type=THREADS, default=None,
                        help="CPU threads for torch in every run (default 0: torch's default, one per core)")
    args = parser.parse_args(argv)
    if args.tables_only and (args.parts is not None or args.data_dir is not None or args.num_threads is not None):
        raise UserError("--tables_only runs nothing: drop --parts, --data_dir and --num_threads")
    args.parts = args.parts or list(PARTS)
    args.num_threads = args.num_threads or 0
    data_bases(args.data_dir)   # a --data_dir that is not a folder is said here, not by the first run
    if not args.tables_only:   # the data each part reads, checked before the first run
        for name in {args.dataset if part == "default" else "imdb" for part in args.parts}:
            check_reference_data(name, REFERENCE[name], args.data_dir, download_checked=False)
    extra = (["--data_dir", args.data_dir] if args.data_dir else []) + ["--num_threads", str(args.num_threads)]
    if not args.tables_only:
        try:
            if "default" in args.parts:
                for impl in IMPLS:
                    run_one(args.dataset, impl, extra)
                write_json(RESULTS / f"{args.dataset}_speed.json", speed_summary(args.dataset))
            if "quick" in args.parts:
                run_quick(extra)
        except subprocess.CalledProcessError as err:   # the run has said why in its one line: nothing to add
            raise ChildFailed(err.returncode) from None
    try:   # the README is rewritten only when every results file reads
        write_json(RESULTS / "overview.json", overview())
        blocks = tables(args.dataset)
    except (KeyError, TypeError, ValueError, IndexError, ZeroDivisionError, FileNotFoundError) as err:
        raise UserError(f"the results files in {RESULTS} are incomplete or were edited ({type(err).__name__}: "
                        f"{str(err)[:80]}); rerun python stage1_mlp/bench.py to measure them again") from None
    update_file(STAGE_DIR / "README.md", blocks)
    print(f"README tables rebuilt from {RESULTS}")
    return 0


if __name__ == "__main__":
    run_main(main)
