"""Stage 3 benchmark: every number in the stage README, from default settings, on this machine.

    python stage3_attention_seq2seq/bench.py                      # all parts (about 100 minutes on 2 CPU cores)
    python stage3_attention_seq2seq/bench.py --parts quick        # the quick preset, timed end to end (2-3 min)
    python stage3_attention_seq2seq/bench.py --parts main heatmaps  # Bahdanau, default settings (~30 min)
    python stage3_attention_seq2seq/bench.py --parts compare      # the five attention types, short runs (~65 min)
    python stage3_attention_seq2seq/bench.py --tables_only        # rebuild the README tables from results/

quick:    `train.py --preset quick`, then `evaluate.py` on test_2016_flickr, timed from the start of the one to the
          end of the other (results/quick.json: the time, the scores, the first test translations and a few of
          TRY_SENTENCES).
main:     `train.py` with no flags (Bahdanau attention), then `evaluate.py` on test_2016_flickr.
heatmaps: `translate.py --heatmap` on two sentences with the main model (results/heatmap_*.png).
compare:  every --attention_type (and the no-attention baseline) trained for --compare_epochs epochs
          with otherwise default settings, then evaluated the same way: one table, same budget each.
lengths:  test BLEU of each compared model by English source length (seconds; reads the translations).
Each run's metrics.json, training history and test translations are copied into results/.
Every part ends by rewriting results/overview.json (quick / default / GPU run: command, minutes, score, hardware,
made from the result files) and the README tables.
The data must be the course's reference copies (checked against their sha256 before anything runs): a bench
publishes results. Your own data is train.py's.
"""
from __future__ import annotations

import functools
import os
import shutil
import time
from operator import itemgetter
from pathlib import Path
from typing import Sequence

import torch

from scripts.checks import POSITIVE_INT, THREADS
from scripts.common import (REPO_ROOT, ArgParser, UserError, check_reference_data, path_arg, read_json, run_main,
                            write_json)
from scripts.report import markdown_table, run_script, update_file
from scripts.report import short_paths as report_short_paths
from scripts.translation_data import MULTI30K_FILES, MULTI30K_SHA256, corpus_scores
from stage3_attention_seq2seq.data.translation import load_pairs, tokenize
from stage3_attention_seq2seq.models.attention import ATTENTION_TYPES
from stage3_attention_seq2seq.translator import load_model, translate_sentences

STAGE_DIR = Path(__file__).resolve().parent
RESULTS = STAGE_DIR / "results"
STAGE = STAGE_DIR.name
PARTS = ("quick", "main", "heatmaps", "compare", "lengths")
QUICK_COMMAND = "python stage3_attention_seq2seq/train.py --preset quick"
# the data the parts read must be the shared reference copies (sha256 of the gz bytes, as the downloads are checked)
MULTI30K_PINS = {f"{MULTI30K_FILES[split]}.{lang}.gz": MULTI30K_SHA256[f"{MULTI30K_FILES[split]}.{lang}.gz"]
                 for split in ("train", "valid", "test") for lang in ("en", "fr")}
LENGTH_BUCKETS = [(1, 10), (11, 13), (14, 16), (17, 20), (21, 200)]
HEATMAP_SENTENCES = {"heatmap_short": "A black dog is running on the grass.",
                     "heatmap_reorder": "A young woman in a red dress is singing into a microphone."}
EXAMPLES = 6
# short everyday sentences for the quick model (the first two are the ones `make quick` translates)
TRY_SENTENCES = ("A man is riding a bicycle down the street.", "Two dogs are playing in the snow.",
                 "A woman is reading a book on a bench.", "Children are playing soccer in the park.")


run = functools.partial(run_script, STAGE_DIR)   # a failed program's own line is the only one


def train_and_evaluate(name: str, train_argv: list[str], extra: list[str]) -> None:
    """train.py, then evaluate.py on the test split; results/<name>_{train,test,history}.json + translations."""
    run_dir = STAGE_DIR / "runs" / f"bench_{name}"
    checkpoint = STAGE_DIR / "checkpoints" / f"bench_{name}.pt"
    run("train.py", *train_argv, "--out_dir", str(run_dir), "--checkpoint", str(checkpoint), *extra)
    run("evaluate.py", "--checkpoint", str(checkpoint), "--out_dir", str(run_dir / "eval"), *extra)
    RESULTS.mkdir(exist_ok=True)
    shutil.copy(run_dir / "metrics.json", RESULTS / f"{name}_train.json")
    shutil.copy(run_dir / "eval" / "metrics.json", RESULTS / f"{name}_test.json")
    shutil.copy(run_dir / "history.json", RESULTS / f"{name}_history.json")
    shutil.copy(run_dir / "eval" / "translations.txt", RESULTS / f"{name}_translations.txt")
    if name == "main":
        shutil.copy(run_dir / "curves.png", RESULTS / "main_curves.png")
        write_examples(data_dir_of(extra))


def data_dir_of(extra: list[str]) -> str | None:
    return extra[extra.index("--data_dir") + 1] if "--data_dir" in extra else None


def quick_part(extra: list[str]) -> None:
    """The quick preset as a learner runs it, then its test score: the wall time of the two programs together."""
    run_dir, checkpoint = STAGE_DIR / "runs" / "bench_quick", STAGE_DIR / "checkpoints" / "bench_quick.pt"
    loads = [os.getloadavg()[0]]
    started = time.perf_counter()
    run("train.py", "--preset", "quick", "--out_dir", str(run_dir), "--checkpoint", str(checkpoint), *extra)
    trained = time.perf_counter()
    loads.append(os.getloadavg()[0])
    run("evaluate.py", "--checkpoint", str(checkpoint), "--out_dir", str(run_dir / "eval"), *extra)
    finished = time.perf_counter()
    loads.append(os.getloadavg()[0])
    train, test = read_json(run_dir / "metrics.json"), read_json(run_dir / "eval" / "metrics.json")
    m, t = test["metrics"], train["metrics"]
    outputs = (run_dir / "eval" / "translations.txt").read_text(encoding="utf-8").splitlines()
    pairs = load_pairs("multi30k", "test", data_dir_of(extra))
    RESULTS.mkdir(exist_ok=True)
    write_json(RESULTS / "quick.json", {
        "command": QUICK_COMMAND, "minutes": round((finished - started) / 60, 2),
        "wall_seconds": round(finished - started, 1), "train_wall_seconds": round(trained - started, 1),
        "evaluate_wall_seconds": round(finished - trained, 1), "hardware": train["hardware"] + busy_note(loads),
        "load_average": [round(load, 2) for load in loads],
        "train_command": short_paths(train["command"]), "evaluate_command": short_paths(test["command"]),
        "epochs": t["epochs_run"], "best_epoch": t["best_epoch"], "val_bleu_greedy": t["val_bleu_greedy"],
        "train_tgt_tokens_per_s": t["train_tgt_tokens_per_s"], "params": train["params"],
        "test": {key: m[key] for key in ("bleu_beam", "bleu_greedy", "chrf_beam", "beam_size", "alpha",
                                         "sentences", "bleu_signature")},
        "examples": [{"source": source, "reference": reference, "output": output}
                     for (source, reference), output in list(zip(pairs, outputs))[:EXAMPLES]],
        "tries": tries(checkpoint)})


def tries(checkpoint: Path) -> list[dict]:
    """TRY_SENTENCES as translate.py gives them (beam 5, length penalty 1.0, <unk> replaced)."""
    model, src_vocab, tgt_vocab, _ = load_model(checkpoint, torch.device("cpu"))
    results = translate_sentences(model, src_vocab, tgt_vocab, TRY_SENTENCES, torch.device("cpu"), beam_size=5,
                                  alpha=1.0, unk_replace=True)
    return [{"source": sentence, "output": result.text} for sentence, result in zip(TRY_SENTENCES, results)]


def busy_note(loads: list[float]) -> str:
    """A timing taken while other programs shared the CPU says so (1-minute load average above the core count + 1:
    the benchmark's own process accounts for about one)."""
    cores = os.cpu_count() or 1
    return f", shared with other jobs (load average up to {max(loads):.1f})" if max(loads) > cores + 1 else ""


def overview() -> dict:
    """Quick preset, default run and GPU run of this stage, from the result files (never typed in)."""
    rows = []
    if (RESULTS / "quick.json").is_file():
        quick = read_json(RESULTS / "quick.json")
        rows.append({"run": "quick", "command": quick["command"], "minutes": quick["minutes"],
                     "score": f"test BLEU {quick['test']['bleu_beam']:.2f} (beam {quick['test']['beam_size']})",
                     "hardware": quick["hardware"], "source": "results/quick.json"})
    if (RESULTS / "main_test.json").is_file():
        main = result_row("main")
        rows.append({"run": "default", "command": "python stage3_attention_seq2seq/train.py",
                     "minutes": round(main["minutes"], 2), "score": f"test BLEU {main['bleu_beam']:.2f} (beam 5)",
                     "hardware": main["hardware"], "source": "results/main_train.json, results/main_test.json"})
    # no GPU run of the default command has been timed (the H200 sweep in TUNING.md ran 8 settings at once)
    rows.append({"run": "gpu", "command": "python stage3_attention_seq2seq/train.py --device cuda", "minutes": None,
                 "score": "not measured", "hardware": None, "source": None})
    return {"stage": STAGE, "rows": rows}


def runs_block(data: dict) -> str:
    names = {"quick": "quick preset", "default": "default run", "gpu": "GPU run"}
    return markdown_table(data["rows"], [
        ("run", lambda r: names[r["run"]]), ("command", lambda r: f"`{r['command']}`"),
        ("minutes", lambda r: r["minutes"] if r["minutes"] is not None else "not measured"),
        ("score", itemgetter("score")), ("hardware", lambda r: r["hardware"] or "—")]) + (
        "\n\nMinutes: the quick preset's whole command (data loading, training and `evaluate.py` included); "
        "the default run's training, validation included. Made from `results/overview.json`.")


def quick_examples_block(quick: dict) -> str:
    """Short sentences of one's own, then the first test sentences with their reference."""
    beam = f"quick model (beam {quick['test']['beam_size']})"
    return markdown_table(quick["tries"], [("English", itemgetter("source")), (beam, itemgetter("output"))]) + \
        "\n\n" + markdown_table(quick["examples"], [
            ("English (test_2016_flickr)", itemgetter("source")), ("reference", itemgetter("reference")),
            (beam, itemgetter("output"))])


def result_row(name: str) -> dict:
    train, test = read_json(RESULTS / f"{name}_train.json"), read_json(RESULTS / f"{name}_test.json")
    m, t = test["metrics"], train["metrics"]
    return {"attention": test["attention_type"], "bleu_beam": m["bleu_beam"], "bleu_greedy": m["bleu_greedy"],
            "chrf": m["chrf_beam"], "val_bleu": t["val_bleu_greedy"], "epochs": t["epochs_run"],
            "minutes": train["train_seconds"] / 60, "tokens_per_s": t["train_tgt_tokens_per_s"],
            "beam_sent_s": m["sentences_per_s_beam"], "params": train["params"], "hardware": train["hardware"],
            "command": short_paths(train["command"]), "signature": m["bleu_signature"]}


short_paths = functools.partial(report_short_paths, stage="stage3_attention_seq2seq")


COLUMNS = [(title, itemgetter(key)) for key, title in (
    ("attention", "attention"), ("bleu_beam", "test BLEU (beam 5)"), ("bleu_greedy", "test BLEU (greedy)"),
    ("chrf", "chrF (beam)"), ("val_bleu", "best val BLEU (greedy)"), ("epochs", "epochs"),
    ("minutes", "train min (incl. validation)"), ("tokens_per_s", "target tokens/s"),
    ("beam_sent_s", "beam sentences/s"), ("params", "parameters"))]


def write_examples(data_dir: str | None) -> None:
    """The first test sentences, their reference and the main model's beam-search output."""
    pairs = load_pairs("multi30k", "test", data_dir)[:EXAMPLES]
    outputs = (RESULTS / "main_translations.txt").read_text(encoding="utf-8").splitlines()
    write_json(RESULTS / "main_examples.json", [{"source": source, "reference": reference, "output": output}
                                                for (source, reference), output in zip(pairs, outputs)])


def write_length_buckets(data_dir: str | None) -> None:
    """Corpus BLEU of each compared model's test translations, by source length in tokens."""
    pairs = load_pairs("multi30k", "test", data_dir)
    lengths = [len(tokenize(source)) for source, _ in pairs]
    rows = []
    for kind in ATTENTION_TYPES:
        path = RESULTS / f"compare_{kind}_translations.txt"
        if not path.is_file():
            continue
        hypotheses = path.read_text(encoding="utf-8").splitlines()
        row: dict = {"attention": kind}
        for low, high in LENGTH_BUCKETS:
            picked = [i for i, n in enumerate(lengths) if low <= n <= high]
            scores = corpus_scores([hypotheses[i] for i in picked], [pairs[i][1] for i in picked])
            row[bucket_name(low, high)] = scores["bleu"]
        rows.append(row)
    sizes = {bucket_name(low, high): sum(low <= n <= high for n in lengths) for low, high in LENGTH_BUCKETS}
    write_json(RESULTS / "bleu_by_length.json", {"sentences": sizes, "rows": rows})


def bucket_name(low: int, high: int) -> str:
    return f"{low}-{high}" if high < 200 else f">{low - 1}"


def lengths_block() -> str:
    data = read_json(RESULTS / "bleu_by_length.json")
    columns = [("attention", itemgetter("attention"))] + [
        (f"{name} tokens ({count} sent.)", itemgetter(name)) for name, count in data["sentences"].items()]
    return markdown_table(data["rows"], columns)


def examples_block() -> str:
    return markdown_table(read_json(RESULTS / "main_examples.json"), [
        ("English (test_2016_flickr)", itemgetter("source")), ("reference", itemgetter("reference")),
        ("model (beam 5)", itemgetter("output"))])


def readme_blocks() -> dict[Path, dict[str, str]]:
    """Every generated block of the stage README, from whatever results/ holds (the top README's course-wide
    tables are made from the same files by `python scripts/course_report.py`)."""
    stage: dict[str, str] = {}
    if (RESULTS / "overview.json").is_file():
        stage["stage3_runs"] = runs_block(read_json(RESULTS / "overview.json"))
    if (RESULTS / "quick.json").is_file():
        stage["stage3_quick_examples"] = quick_examples_block(read_json(RESULTS / "quick.json"))
    if (RESULTS / "main_test.json").is_file():
        row = result_row("main")
        note = (f"\n\nCommand: `{row['command']}`, then `python evaluate.py --checkpoint <checkpoint>` "
                f"(beam 5, length penalty 1.0); hardware: {row['hardware']}; sacreBLEU signature "
                f"`{row['signature']}`.")
        stage["stage3_main"] = markdown_table([row], COLUMNS) + note
        if (RESULTS / "main_examples.json").is_file():
            stage["stage3_examples"] = examples_block()
    names = [f"compare_{kind}" for kind in ATTENTION_TYPES if (RESULTS / f"compare_{kind}_test.json").is_file()]
    if names:
        rows = [result_row(n) for n in names]
        if (RESULTS / "bleu_by_length.json").is_file():
            stage["stage3_lengths"] = lengths_block()
        stage["stage3_attention"] = (markdown_table(rows, COLUMNS) + f"\n\nEach: `{rows[0]['command']}` with its own "
                                     f"`--attention_type`; hardware: {rows[0]['hardware']}.")
    return {STAGE_DIR / "README.md": stage}


def main(argv: Sequence[str] | None = None) -> int:
    p = ArgParser(description="Stage 3 benchmark: train and evaluate, then rebuild the README tables.")
    p.add_argument("--parts", nargs="+", default=None, choices=PARTS,
                   help="quick: the quick preset, timed; main: default Bahdanau run; heatmaps: attention PNGs of the "
                        "main model; compare: all types; lengths: BLEU by source length (default: all)")
    p.add_argument("--compare_epochs", type=POSITIVE_INT, default=None,
                   help="--parts compare: epochs per attention type in the comparison (default 5)")
    p.add_argument("--tables_only", action="store_true",
                   help="only rebuild results/overview.json and the README tables from results/")
    p.add_argument("--data_dir", type=path_arg, default=None,
                   help="folder holding multi30k/ (default: $MY_LLM_DATA); it must be the reference copy, checked "
                        "against its sha256 before anything runs (your own data: train.py)")
    p.add_argument("--num_threads", type=THREADS, default=None,
                   help="passed to every program (default 0: torch's default, one per core; the timings in the "
                        "README)")
    args = p.parse_args(argv)
    if args.tables_only and (args.parts is not None or args.compare_epochs is not None or args.data_dir is not None
                             or args.num_threads is not None):
        raise UserError("--tables_only runs nothing: drop --parts, --compare_epochs, --data_dir and --num_threads")
    args.parts = args.parts or list(PARTS)
    if args.compare_epochs is not None and "compare" not in args.parts:
        raise UserError("--compare_epochs applies to --parts compare only")
    args.compare_epochs = args.compare_epochs or 5
    if args.data_dir is not None and not Path(args.data_dir).is_dir():    # checked here, before a program runs
        raise UserError(f"--data_dir {args.data_dir} is not a folder; pass the folder that holds multi30k/")
    if not args.tables_only and set(args.parts) - {"heatmaps"}:   # heatmaps reads the main model only
        check_reference_data("multi30k", MULTI30K_PINS, args.data_dir)
    extra = (["--data_dir", args.data_dir] if args.data_dir else []) + (
        ["--num_threads", str(args.num_threads)] if args.num_threads else [])
    if not args.tables_only:
        if "quick" in args.parts:
            quick_part(extra)
        if "main" in args.parts:
            train_and_evaluate("main", [], extra)
        if "heatmaps" in args.parts:
            for name, sentence in HEATMAP_SENTENCES.items():
                run("translate.py", "--checkpoint", str(STAGE_DIR / "checkpoints" / "bench_main.pt"), sentence,
                    "--heatmap", str(RESULTS / f"{name}.png"))
        if "compare" in args.parts:
            for kind in ATTENTION_TYPES:
                train_and_evaluate(f"compare_{kind}", ["--attention_type", kind, "--epochs", str(args.compare_epochs)],
                                   extra)
        if "lengths" in args.parts:
            write_length_buckets(args.data_dir)
    write_json(RESULTS / "overview.json", overview())
    for readme, blocks in readme_blocks().items():
        print(readme.relative_to(REPO_ROOT), "updated" if update_file(readme, blocks) else "unchanged")
    return 0


if __name__ == "__main__":
    run_main(main)
