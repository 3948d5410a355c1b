"""The whole course side by side: every stage's committed results in three tables and two plots.

    python scripts/course_report.py            # rewrite the course_* blocks of README.md and docs/images/course_*.png
    python scripts/course_report.py --check    # exit 2 if a block is out of date; writes nothing

Reads every `stage*/results/*.json` in the course-wide format of `scripts.common.write_metrics` (files without
"stage" and "metrics" are skipped) and makes
- `course_classification`: IMDb (and AG News) test accuracy, macro-F1, training time, latency at batch 1, size;
- `course_translation`: Multi30k English->French test BLEU and chrF of stages 3, 4 and 5;
- `course_language_models`: the character- and word-level language models of stages 2 and 5;
- `course_runs`: for each stage, its quick preset, its default run and its GPU run (command, minutes, score,
  hardware), from `stage*/results/overview.json`, which each stage's `bench.py --parts quick` writes;
- `course_quick`: the quick presets alone, for the README's first screen.
They go into the blocks of those names in README.md, and into docs/roadmap.md where that file has the markers.
A GPU re-run of a model that also has a CPU result is left out (its stage README shows it): the course's numbers
are measured on the same 2 CPU cores, so that latencies and training times compare.
"""
from __future__ import annotations

import fnmatch
import io
import re
from pathlib import Path
from typing import Any, Sequence

from scripts.common import REPO_ROOT, ArgParser, UserError, path_arg, read_json, run_main
from scripts.report import hardware_label, markdown_table, replace_block, update_file

COMMAND = "python scripts/course_report.py"
IMAGES = Path("docs") / "images"
NONE = "—"

# model id -> (name in the tables, short name in the plots); the order is the row order within a stage
MODELS: dict[str, tuple[str, str]] = {
    "ngram_mlp_torch": ("MLP, n-gram bag (`torch`)", "MLP (torch)"),
    "ngram_mlp_scratch": ("MLP, n-gram bag (`scratch`)", "MLP (scratch)"),
    "lstm_classifier_torch": ("LSTM classifier (`torch`)", "LSTM"),
    "lstm_char_torch": ("LSTM, char level (`torch`)", "LSTM char"),
    "lstm_word_torch": ("LSTM, word level (`torch`)", "LSTM word"),
    "bahdanau_scratch": ("GRU encoder-decoder + Bahdanau attention", "GRU + attention"),
    "transformer_classifier": ("Transformer encoder (`scratch`)", "Transformer"),
    "transformer_scratch": ("Transformer encoder-decoder (`scratch`)", "Transformer"),
    "gpt_char": ("GPT-mini, char level", "GPT-mini char"),
    "gpt_scratch": ("GPT-mini, same shape, random init (no pretraining)", "GPT scratch"),
    "gpt_head": ("GPT-mini fine-tuned: classifier head only", "GPT head"),
    "gpt_last_blocks": ("GPT-mini fine-tuned: last blocks + head", "GPT last blocks"),
    "gpt_lora": ("GPT-mini fine-tuned: LoRA", "GPT LoRA"),
    "gpt_full": ("GPT-mini fine-tuned: all weights", "GPT full"),
    "gpt_multitask": ("GPT-mini, multi-task fine-tuned", "GPT multi-task"),
    "gpt_multitask_scratch": ("GPT-mini, multi-task, random init (no pretraining)", "GPT multi-task scratch"),
}
# stage 5's bench.py names the runs from the base whose pretraining went on over the IMDb training reviews' text
# finetune_<run>_adapted_test.json: (what the long name, and the short one, add)
ADAPTED = ("_adapted_test.json", ", base also pretrained on IMDb's training text", " + IMDb text")
# stage 5's CPU path (bench.py --parts cpu_finetune): a smaller base pretrained on the IMDb reviews' text on the CPU,
# then fine-tuned there; its rows stand beside the GPU-base rows of the same method, not in their place
CPU_PATH = ("stage5_gpt/results/cpu_finetune_", ", CPU path (`--preset imdb` shape, 2 CPU cores)", " (CPU path)")


def variant(record: Record) -> int:
    """0: a stage's usual run; 1: stage 5's base also pretrained on IMDb text; 2: stage 5's CPU path."""
    path = str(record.get("_path", ""))
    return 2 if path.startswith(CPU_PATH[0]) else 1 if path.endswith(ADAPTED[0]) else 0
DATASETS = {"imdb": "IMDb", "ag_news": "AG News", "multi30k": "Multi30k", "shakespeare": "tiny Shakespeare",
            "ptb": "PTB"}
CLASSIFICATION_DATASETS = ("imdb", "ag_news")
TRANSLATION_FILES = ("stage3_attention_seq2seq/results/main_test.json", "stage4_transformer/results/main_test.json",
                     "stage5_gpt/results/finetune_translate_*_test.json")
# (training file, evaluation file, unit): the evaluation file scores every token of the held-out text
LANGUAGE_MODELS = tuple((f"{stage}/results/{name}_train.json", f"{stage}/results/{name}_eval.json", unit)
                        for stage, name, unit in (("stage2_rnn_lstm", "lstm_char", "char"),
                                                  ("stage2_rnn_lstm", "lstm_word", "word"),
                                                  ("stage5_gpt", "char", "char")))

Record = dict[str, Any]


# ----------------------------------------------------------------------------- reading
def load_records(root: Path) -> dict[str, Record]:
    """Every metrics file under `root/stage*/results/`, by its path relative to `root` (also under `_path`)."""
    records: dict[str, Record] = {}
    for path in sorted(Path(root).glob("stage*/results/*.json")):
        data = read_json(path, "results file")
        if not (isinstance(data, dict) and "stage" in data and "metrics" in data):
            continue   # histories, speed tables, samples: other shapes, other tables
        if not isinstance(data["metrics"], dict):
            raise UserError(f"results file {path}: \"metrics\" is not a JSON object; regenerate the file")
        data["_path"] = path.relative_to(root).as_posix()
        records[data["_path"]] = data
    return records


def stage_number(record: Record) -> int:
    found = re.match(r"stage(\d+)", str(record.get("stage", "")))
    return int(found.group(1)) if found else 99


def order(record: Record) -> tuple:
    model = str(record.get("model", ""))
    rank = list(MODELS).index(model) if model in MODELS else len(MODELS)
    return stage_number(record), rank, model, variant(record), record["_path"]


def model_name(record: Record, short: bool = False) -> str:
    model = str(record.get("model", "?"))
    name = MODELS[model][short] if model in MODELS else (model if short else f"`{model}`")
    extra = {0: ("", ""), 1: ADAPTED[1:], 2: CPU_PATH[1:]}[variant(record)]
    return name + extra[1 if short else 0]


def training_record(record: Record, records: dict[str, Record]) -> Record:
    """The run that trained the model `record` evaluates: itself when it carries `train_seconds`, else the
    matching `*_train.json` (stage 1, 3 and 4 write training and test metrics to separate files)."""
    if "train_seconds" in record or not record["_path"].endswith("_test.json"):
        return record
    return records.get(record["_path"].removesuffix("_test.json") + "_train.json", record)


def seconds(value: Any) -> str:
    return f"{value:,.0f} s" if isinstance(value, (int, float)) else NONE


def parameters(record: Record) -> str:
    if not isinstance(record.get("params"), int):
        return NONE
    trained = record.get("trainable_params")
    if isinstance(trained, int) and trained != record["params"]:
        return f"{record['params']:,} ({trained:,} trained)"
    return f"{record['params']:,}"


def sources(rows: Sequence[Record]) -> str:
    return ", ".join(f"`{row['_path']}`" for row in rows)


# ----------------------------------------------------------------------------- classification
def classification_rows(records: dict[str, Record]) -> tuple[list[Record], list[Record]]:
    """(rows, left out): test-set results on IMDb / AG News. A GPU run of a (stage, model, data set) that also
    has a CPU run is left out, so every latency and training time in the table comes from the same kind of machine
    wherever that is possible."""
    tests = [r for r in records.values() if r.get("dataset") in CLASSIFICATION_DATASETS and r.get("split") == "test"
             and "accuracy" in r["metrics"]]

    def key(r: Record) -> tuple:
        return r["stage"], r.get("model"), r["dataset"], variant(r)

    on_cpu = {key(r) for r in tests if r.get("device") == "cpu"}
    rows = [r for r in tests if r.get("device") == "cpu" or key(r) not in on_cpu]
    left_out = [r for r in tests if r not in rows]
    rows.sort(key=lambda r: (CLASSIFICATION_DATASETS.index(r["dataset"]), *order(r)))
    return rows, sorted(left_out, key=order)


def classification_block(records: dict[str, Record]) -> str:
    rows, left_out = classification_rows(records)
    columns = [
        ("model", model_name), ("stage", stage_number), ("data", lambda r: DATASETS[r["dataset"]]),
        ("test accuracy", lambda r: f"{100 * r['metrics']['accuracy']:.2f}%"),
        ("macro-F1", lambda r: f"{100 * r['metrics']['macro_f1']:.2f}" if "macro_f1" in r["metrics"] else NONE),
        ("train time", lambda r: seconds(training_record(r, records).get("train_seconds"))),
        ("ms per sample (batch 1)", lambda r: f"{r['metrics']['latency_ms_bs1']:.2f}"
         if isinstance(r["metrics"].get("latency_ms_bs1"), (int, float)) else NONE),
        ("parameters", parameters), ("hardware", lambda r: r.get("hardware", NONE))]
    notes = [f"Made by `{COMMAND}` from {sources(rows) or 'no results yet'}. Train time: the whole training run "
             "(from the matching `*_train.json` where the test file lacks it); ms per sample: one text at a time."]
    if any(stage_number(r) == 5 and r.get("model") != "gpt_scratch" for r in rows):
        notes.append("Stage 5 fine-tuned rows: train time of the fine-tuning only, not of pretraining the base "
                     "(see stage5_gpt/README.md).")
    if left_out:
        notes.append(f"Left out, as GPU re-runs of a model measured on the CPU: {sources(left_out)}.")
    return markdown_table(rows, columns) + "\n\n" + " ".join(notes)


# ----------------------------------------------------------------------------- translation
def translation_rows(records: dict[str, Record]) -> list[Record]:
    rows = [r for path, r in records.items() if r.get("dataset") == "multi30k"
            and any(fnmatch.fnmatch(path, pattern) for pattern in TRANSLATION_FILES)]
    return sorted(rows, key=order)


def translation_scores(metrics: dict[str, Any]) -> dict[str, Any]:
    """BLEU and chrF of the best decoding the file reports (beam where there is one), and greedy BLEU,
    which every stage reports and so compares across all rows."""
    if "bleu_beam" in metrics:
        return {"bleu": metrics["bleu_beam"], "chrf": metrics.get("chrf_beam"),
                "decoding": f"beam {metrics.get('beam_size', '?')}", "greedy": metrics.get("bleu_greedy")}
    decoding = str(metrics.get("decoding", "greedy"))
    return {"bleu": metrics.get("bleu"), "chrf": metrics.get("chrf"), "decoding": decoding,
            "greedy": metrics.get("bleu") if decoding == "greedy" else metrics.get("bleu_greedy")}


def score(value: Any) -> str:
    return f"{value:.2f}" if isinstance(value, (int, float)) else NONE


def translation_block(records: dict[str, Record]) -> str:
    rows = translation_rows(records)

    def minutes(r: Record) -> str:
        value = training_record(r, records).get("train_seconds")
        return f"{value / 60:.1f}" if isinstance(value, (int, float)) else NONE

    def hardware(r: Record) -> str:
        return hardware_label(r.get("hardware", NONE), training_record(r, records).get("amp"))

    columns = [
        ("model", model_name), ("stage", stage_number),
        ("test BLEU", lambda r: score(translation_scores(r["metrics"])["bleu"])),
        ("decoding", lambda r: translation_scores(r["metrics"])["decoding"]),
        ("chrF", lambda r: score(translation_scores(r["metrics"])["chrf"])),
        ("BLEU, greedy", lambda r: score(translation_scores(r["metrics"])["greedy"])),
        ("train min", minutes), ("parameters", parameters), ("hardware", hardware)]
    splits = sorted({str(r.get("split")) for r in rows})
    signatures = sorted({str(r["metrics"].get("bleu_signature")) for r in rows})
    notes = [f"Made by `{COMMAND}` from {sources(rows) or 'no results yet'}; English to French, test set "
             f"{', '.join(splits) or NONE}, sacreBLEU signature {', '.join(f'`{s}`' for s in signatures) or NONE}. "
             "Train min: the whole training run (from the matching `*_train.json` where the test file lacks it)."]
    if any(stage_number(r) == 5 for r in rows):
        notes.append("Stage 5: train time of the fine-tuning only, not of pretraining the base.")
    return markdown_table(rows, columns) + "\n\n" + " ".join(notes)


# ----------------------------------------------------------------------------- language models
def language_model_rows(records: dict[str, Record]) -> list[dict[str, Any]]:
    return [{"train": records[train], "eval": records[evaluation], "unit": unit}
            for train, evaluation, unit in LANGUAGE_MODELS if train in records and evaluation in records]


def lm_score(row: dict[str, Any]) -> str:
    metrics = row["eval"]["metrics"]
    if row["unit"] == "char":   # one token is one character (and one byte: the text is ASCII)
        bits = metrics.get("bits_per_token", metrics.get("bits_per_byte"))
        return f"loss {metrics['loss']:.3f} nats, {bits:.3f} bits/char"
    return f"perplexity {metrics.get('ppl', metrics.get('perplexity')):.1f}"


def lm_time(train: Record) -> str:
    metrics = train["metrics"]
    count = (f"{metrics['epochs_run']:,} epochs" if "epochs_run" in metrics else
             f"{metrics['steps']:,} steps" if "steps" in metrics else "")
    time = f"{metrics['fit_seconds'] / 60:.1f} min" if "fit_seconds" in metrics else NONE
    return f"{time} ({count})" if count else time


def language_model_block(records: dict[str, Record]) -> str:
    rows = language_model_rows(records)
    columns = [
        ("model", lambda r: model_name(r["train"])), ("stage", lambda r: stage_number(r["train"])),
        ("data", lambda r: DATASETS.get(r["eval"]["dataset"], r["eval"]["dataset"])),
        ("scored on", lambda r: {"val": "valid"}.get(r["eval"]["split"], r["eval"]["split"])),
        ("score (every token)", lm_score), ("training time", lambda r: lm_time(r["train"])),
        ("tokens/s", lambda r: f"{r['train']['metrics']['train_tokens_per_s']:,.0f}"),
        ("parameters", lambda r: parameters(r["train"])), ("hardware", lambda r: r["train"].get("hardware", NONE))]
    used = [r[kind] for r in rows for kind in ("train", "eval")]
    return (markdown_table(rows, columns) + f"\n\nMade by `{COMMAND}` from {sources(used) or 'no results yet'}. "
            "Training time: the training loop (`fit_seconds`); tokens/s: training tokens per second.")


RUN_NAMES = {"quick": "quick preset", "default": "default run", "gpu": "GPU run"}


def load_overviews(root: Path) -> list[Record]:
    """Every `stage*/results/overview.json` ({"stage": ..., "rows": [{"run", "command", "minutes", "score",
    "hardware", "source"}]}), checked, in stage order."""
    out = []
    stages = sorted(folder for folder in Path(root).glob("stage*_*") if (folder / "bench.py").is_file())
    missing = [f"{folder.name}/results/overview.json" for folder in stages
               if not (folder / "results" / "overview.json").is_file()]
    if missing:     # a stage's row silently gone from the course tables would read as "not measured"
        raise UserError(f"{', '.join(missing)} missing; run that stage's bench.py (e.g. --parts quick) first")
    for path in sorted(Path(root).glob("stage*/results/overview.json")):
        data = read_json(path, "results file")
        rows = data.get("rows") if isinstance(data, dict) else None
        if not isinstance(rows, list) or not all(isinstance(r, dict) and r.get("run") in RUN_NAMES and
                                                 isinstance(r.get("command"), str) for r in rows):
            raise UserError(f"results file {path}: not an overview ({{\"stage\", \"rows\": [{{\"run\": "
                            f"{'|'.join(RUN_NAMES)}, \"command\", ...}}]}}); regenerate it with the stage's bench.py")
        out.append({**data, "_path": path.relative_to(root).as_posix()})
    return out


def runs_block(overviews: Sequence[Record]) -> str:
    """Quick preset, default run and GPU run of every stage: what a learner can expect from each command."""
    rows = [{"stage": str(stage_number({"stage": o["stage"]})), **row} for o in overviews for row in o["rows"]]

    def minutes(row: Record) -> str:
        value = row.get("minutes")
        return f"{value:.1f} min" if isinstance(value, (int, float)) else "not measured"

    columns = [("stage", lambda r: r["stage"]), ("run", lambda r: RUN_NAMES[r["run"]]),
               ("command", lambda r: f"`{r['command']}`"), ("time", minutes),
               ("score", lambda r: r.get("score") or NONE), ("hardware", lambda r: r.get("hardware") or NONE)]
    files = ", ".join(f"`{o['_path']}`" for o in overviews)
    return (markdown_table(rows, columns) + f"\n\nMade by `{COMMAND}` from {files or 'no results yet'}. "
            "Time: the whole command, from start to exit (data loading and evaluation included) for the quick "
            "preset, the training as each stage measured it for the others (see the stage's README).")


def quick_block(overviews: Sequence[Record]) -> str:
    """The quick preset of every stage, for the top README's first screen: what a learner gets in a few minutes."""
    rows = [{"stage": o["stage"], **row} for o in overviews for row in o["rows"] if row["run"] == "quick"]
    columns = [("stage", lambda r: f"[{r['stage']}]({r['stage']}/)"), ("command", lambda r: f"`{r['command']}`"),
               ("time", lambda r: f"{r['minutes']:.1f} min" if isinstance(r.get("minutes"), (int, float))
                else "not measured"),
               ("score", lambda r: r.get("score") or NONE), ("hardware", lambda r: r.get("hardware") or NONE)]
    files = ", ".join(f"`{o['_path']}`" for o in overviews)
    return (markdown_table(rows, columns) + f"\n\nMade by `{COMMAND}` from {files or 'no results yet'}; "
            "time from start to exit, data loading and the final evaluation included.")


def course_blocks(records: dict[str, Record], overviews: Sequence[Record] = ()) -> dict[str, str]:
    return {"course_classification": classification_block(records),
            "course_translation": translation_block(records),
            "course_language_models": language_model_block(records),
            "course_runs": runs_block(overviews),
            "course_quick": quick_block(overviews)}


# ----------------------------------------------------------------------------- plots
def _figure_bytes(fig: Any) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, metadata={"Software": None})   # no version stamp: same data, same bytes
    return buffer.getvalue()


def plot_classification(rows: Sequence[Record]) -> bytes | None:
    """One bar per model and data set: test accuracy, with the milliseconds per text written on the bar."""
    if not rows:
        return None
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = [d for d in CLASSIFICATION_DATASETS if any(r["dataset"] == d for r in rows)]
    counts = [sum(r["dataset"] == d for r in rows) for d in datasets]
    fig, axes = plt.subplots(len(datasets), 1, figsize=(8, 0.8 + 0.32 * sum(counts) + 0.5 * len(datasets)),
                             squeeze=False, gridspec_kw={"height_ratios": counts})
    colors = plt.get_cmap("tab10")
    for ax, dataset in zip(axes[:, 0], datasets):
        picked = [r for r in rows if r["dataset"] == dataset][::-1]   # barh counts from the bottom: first row on top
        accuracy = [100 * r["metrics"]["accuracy"] for r in picked]
        ax.barh(range(len(picked)), accuracy, color=[colors(stage_number(r) % 10) for r in picked])
        names = [f"stage {stage_number(r)}: {model_name(r, short=True)}"
                 f"{'' if r.get('device', 'cpu') == 'cpu' else ' (GPU)'}" for r in picked]
        ax.set_yticks(range(len(picked)), names, fontsize=8)
        for i, (r, value) in enumerate(zip(picked, accuracy)):
            latency = r["metrics"].get("latency_ms_bs1")
            text = f"{value:.2f}%" + (f", {latency:.2f} ms" if isinstance(latency, (int, float)) else "")
            ax.text(value - 0.3, i, text, ha="right", va="center", fontsize=8, color="white")
        ax.set_xlim(max(0.0, 5 * (min(accuracy) // 5) - 10), 100)   # bars start near the lowest score, not at 0
        ax.set_title(f"{DATASETS[dataset]}: test accuracy, ms per text at batch 1", fontsize=10)
        ax.grid(alpha=0.3, axis="x")
    axes[-1, 0].set_xlabel("test accuracy (%)")
    fig.tight_layout()
    data = _figure_bytes(fig)
    plt.close(fig)
    return data


def plot_translation(rows: Sequence[Record]) -> bytes | None:
    """Test BLEU per model: greedy (every stage has it) beside the best decoding each reports."""
    if not rows:
        return None
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scores = [translation_scores(r["metrics"]) for r in rows]
    fig, ax = plt.subplots(figsize=(7, 4))
    width = 0.38
    for shift, key, label in ((-width / 2, "greedy", "greedy"), (width / 2, "bleu", "best decoding")):
        values = [s[key] if isinstance(s[key], (int, float)) else 0.0 for s in scores]
        bars = ax.bar([i + shift for i in range(len(rows))], values, width, label=label)
        ax.bar_label(bars, labels=[score(s[key]) if isinstance(s[key], (int, float)) else "" for s in scores],
                     fontsize=8)
    names = [f"stage {stage_number(r)}\n{model_name(r, short=True)}\n({s['decoding']})" for r, s in zip(rows, scores)]
    ax.set_xticks(range(len(rows)), names, fontsize=8)
    ax.set_ylabel("sacreBLEU")
    ax.set_ylim(0, 1.2 * max([s["bleu"] for s in scores if isinstance(s["bleu"], (int, float))], default=1))
    ax.set_title("Multi30k English to French, test set")
    ax.legend(loc="upper right", fontsize=8, ncols=2)
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    data = _figure_bytes(fig)
    plt.close(fig)
    return data


def write_plots(records: dict[str, Record], folder: Path) -> list[Path]:
    """Draw the plots into `folder`; a file whose bytes would not change is left alone. Returns those written."""
    written = []
    for name, data in (("course_classification.png", plot_classification(classification_rows(records)[0])),
                       ("course_translation.png", plot_translation(translation_rows(records)))):
        path = Path(folder) / name
        if data is None or (path.is_file() and path.read_bytes() == data):
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        written.append(path)
    return written


# ----------------------------------------------------------------------------- target files
def targets(root: Path, blocks: dict[str, str]) -> dict[Path, dict[str, str]]:
    """README.md must hold every block; docs/roadmap.md gets those whose markers it holds (maybe none)."""
    readme = Path(root) / "README.md"
    text = readme.read_text(encoding="utf-8") if readme.is_file() else ""
    missing = [name for name in blocks if f"<!-- results:{name} -->" not in text]
    if missing:
        raise UserError(f"{readme} has no <!-- results:{missing[0]} --> ... <!-- /results:{missing[0]} --> block; "
                        "put the two marker lines where the table belongs")
    out = {readme: blocks}
    roadmap = Path(root) / "docs" / "roadmap.md"
    if roadmap.is_file():
        text = roadmap.read_text(encoding="utf-8")
        present = {name: body for name, body in blocks.items() if f"<!-- results:{name} -->" in text}
        if present:
            out[roadmap] = present
    return out


def stale(root: Path) -> list[str]:
    """'FILE [block, ...]' for each target file whose blocks differ from what the results make now."""
    out = []
    for path, blocks in targets(root, course_blocks(load_records(root), load_overviews(root))).items():
        old = path.read_text(encoding="utf-8")
        names = [name for name in blocks if replace_block(old, name, blocks[name]) != old]
        if names:
            out.append(f"{path.relative_to(root)} [{', '.join(names)}]")
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = ArgParser(description="Compare all stages: tables in README.md (and docs/roadmap.md) and plots, "
                                   "made from the committed stage*/results/*.json files.")
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 2 if a course_* block is not what the results make now")
    parser.add_argument("--images_dir", type=path_arg, default=None,
                        help=f"folder for the PNG plots (default: <root>/{IMAGES})")
    parser.add_argument("--root", type=path_arg, default=str(REPO_ROOT), help="the checkout to report on")
    args = parser.parse_args(argv)
    root = Path(args.root).resolve()
    if not root.is_dir():
        raise UserError(f"--root {args.root} is not a folder; pass the repository's root folder")
    if args.check:
        out_of_date = stale(root)
        if out_of_date:
            raise UserError(f"out of date: {'; '.join(out_of_date)}; run `{COMMAND}`")
        print("course tables are up to date")
        return 0
    records = load_records(root)
    for path, blocks in targets(root, course_blocks(records, load_overviews(root))).items():
        print(path.relative_to(root), "updated" if update_file(path, blocks) else "unchanged")
    images = Path(args.images_dir) if args.images_dir else root / IMAGES
    for path in write_plots(records, images):
        print(path, "written")
    return 0


if __name__ == "__main__":
    run_main(main)
