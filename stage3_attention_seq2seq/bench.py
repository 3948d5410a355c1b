"""Stage 3 benchmark: every number in the stage README, from default settings, on this machine.

    python stage3_attention_seq2seq/bench.py                      # all parts (about 95 minutes on 2 CPU cores)
    python stage3_attention_seq2seq/bench.py --parts main heatmaps  # Bahdanau, default settings (~30 min)
    python stage3_attention_seq2seq/bench.py --parts compare      # the five attention types, short runs (~65 min)
    python stage3_attention_seq2seq/bench.py --tables_only        # rebuild the README tables from results/

main:     `train.py` with no flags (Bahdanau attention), then `evaluate.py` on test_2016_flickr.
heatmaps: `translate.py --heatmap` on two sentences with the main model (results/heatmap_*.png).
compare:  every --attention_type (and the no-attention baseline) trained for --compare_epochs epochs
          with otherwise default settings, then evaluated the same way: one table, same budget each.
lengths:  test BLEU of each compared model by English source length (seconds; reads the translations).
Each run's metrics.json, training history and test translations are copied into results/.
"""
from __future__ import annotations

import functools
import shutil
from operator import itemgetter
from pathlib import Path
from typing import Sequence

from scripts.common import REPO_ROOT, ArgParser, read_json, run_main, write_json
from scripts.report import markdown_table, run_script, update_file
from scripts.report import short_paths as report_short_paths
from scripts.translation_data import corpus_scores
from stage3_attention_seq2seq.data.translation import load_pairs, tokenize
from stage3_attention_seq2seq.models.attention import ATTENTION_TYPES

STAGE_DIR = Path(__file__).resolve().parent
RESULTS = STAGE_DIR / "results"
PARTS = ("main", "heatmaps", "compare", "lengths")
LENGTH_BUCKETS = [(1, 10), (11, 13), (14, 16), (17, 20), (21, 200)]
HEATMAP_SENTENCES = {"heatmap_short": "A black dog is running on the grass.",
                     "heatmap_reorder": "A young woman in a red dress is singing into a microphone."}
EXAMPLES = 6


run = functools.partial(run_script, STAGE_DIR)   # run("train.py", flags...): a stage program, echoed


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
        write_examples(extra[1] if extra else None)


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
    p.add_argument("--parts", nargs="+", default=list(PARTS), choices=PARTS,
                   help="main: default Bahdanau run; heatmaps: attention PNGs of the main model; compare: all types")
    p.add_argument("--compare_epochs", type=int, default=5, help="epochs per attention type in the comparison")
    p.add_argument("--tables_only", action="store_true", help="only rebuild the README tables from results/")
    p.add_argument("--data_dir", default=None, help="folder holding multi30k/ (default: $MY_LLM_DATA)")
    args = p.parse_args(argv)
    extra = ["--data_dir", args.data_dir] if args.data_dir else []
    if not args.tables_only:
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
    for readme, blocks in readme_blocks().items():
        print(readme.relative_to(REPO_ROOT), "updated" if update_file(readme, blocks) else "unchanged")
    return 0


if __name__ == "__main__":
    run_main(main)
