"""Stage 2 benchmark: every number in the stage README, from default settings, on this machine.

    python stage2_rnn_lstm/bench.py                  # all parts (about 70 minutes on 2 CPU cores)
    python stage2_rnn_lstm/bench.py --parts quick    # the quick preset end to end (about 2.5 minutes)
    python stage2_rnn_lstm/bench.py --parts char     # char LSTM on tiny Shakespeare only (~17 min)
    python stage2_rnn_lstm/bench.py --tables_only    # rebuild the README tables from results/

Parts: quick (train.py --preset quick, then evaluate.py, timed as a whole), char (train + evaluate + a sample),
word (PTB train + test + a sample), speed (scratch cells against nn.RNN/LSTM/GRU, same run), classify (LSTM
classifier on IMDb), samples (only redraw the samples). Each writes JSON files into stage2_rnn_lstm/results/;
results/overview.json (quick, default and GPU runs in one schema for the course's tables) is rebuilt from them.
The data must be the course's reference copies (checked against their sha256 before anything runs): a bench
publishes results. Your own data is train.py's.
"""
from __future__ import annotations

import argparse
import functools
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F

from scripts.checks import THREADS
from scripts.classification_data import IMDB_SHA256
from scripts.common import (ArgParser, UserError, check_reference_data, hardware, path_arg, read_json,
                            run_main, write_json)
from scripts.report import check_child, load_results, markdown_table, run_script, short_paths, update_file
from stage2_rnn_lstm.models.rnn_lm import LMConfig, RNNLanguageModel
from stage2_rnn_lstm import train as train_module
from stage2_rnn_lstm.evaluate import load_language_model
from stage2_rnn_lstm.train import DEFAULTS
from stage2_rnn_lstm.data.corpus import PTB_SHA256, SHAKESPEARE_SHA256

STAGE_DIR = Path(__file__).resolve().parent
RESULTS = STAGE_DIR / "results"
PARTS = ("char", "word", "speed", "classify", "quick", "samples")
DEFAULT_PARTS = ("char", "word", "speed", "classify")
# the data each part reads: (name, sha256 of each file of the shared copy, pinned of the unpacked text?). Their
# downloads are checked against the same sha256, all but IMDb's (Hugging Face's), which is refused.
REFERENCE = {
    "shakespeare": ("tiny_shakespeare", {"input.txt": SHAKESPEARE_SHA256}, False),
    "ptb": ("ptb", {f"ptb.{split}.txt.gz": sha256 for split, sha256 in PTB_SHA256.items()}, True),
    "imdb": ("imdb", IMDB_SHA256, False)}
PART_DATA = {"quick": "shakespeare", "char": "shakespeare", "word": "ptb", "classify": "imdb"}
QUICK_COMMAND = "python stage2_rnn_lstm/train.py --preset quick"


run = functools.partial(run_script, STAGE_DIR)   # a failed program's own line is the only one


def language_model(vocab_type: str, extra: list[str]) -> None:
    """Default training run, then evaluation (PTB test / Shakespeare valid); copy the metrics files."""
    run_dir = STAGE_DIR / "runs" / f"bench_lstm_{vocab_type}"
    checkpoint = STAGE_DIR / "checkpoints" / f"bench_lstm_{vocab_type}.pt"
    run("train.py", "--vocab_type", vocab_type, "--out_dir", str(run_dir), "--checkpoint", str(checkpoint), *extra)
    run("evaluate.py", "--checkpoint", str(checkpoint), "--out_dir", str(run_dir / "eval"), *extra)
    RESULTS.mkdir(exist_ok=True)
    shutil.copy(run_dir / "metrics.json", RESULTS / f"lstm_{vocab_type}_train.json")
    shutil.copy(run_dir / "eval" / "metrics.json", RESULTS / f"lstm_{vocab_type}_eval.json")
    shutil.copy(run_dir / "curves.png", RESULTS / f"lstm_{vocab_type}_curves.png")
    shutil.copy(run_dir / "history.json", RESULTS / f"lstm_{vocab_type}_history.json")
    write_sample(vocab_type)


def quick(extra: list[str], train_extra: Sequence[str] = (), stage_dir: Path = STAGE_DIR,
          results: Path = RESULTS) -> dict:
    """The quick preset as a learner runs it, timed from start to end of both processes (loading, training,
    evaluating): train.py --preset quick, then evaluate.py on its checkpoint. Writes results/quick.json.
    (`train_extra`, `stage_dir` and `results` let the tests run the same pipeline on tiny data.)"""
    run_dir = stage_dir / "runs" / "bench_lstm_char_quick"
    checkpoint = stage_dir / "checkpoints" / "bench_lstm_char_quick.pt"
    load_before = os.getloadavg()[0]
    cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    run("train.py", "--preset", "quick", "--out_dir", str(run_dir), "--checkpoint", str(checkpoint), *extra,
        *train_extra)
    run("evaluate.py", "--checkpoint", str(checkpoint), "--out_dir", str(run_dir / "eval"), *extra)
    wall = time.perf_counter() - start
    cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    # CPU time of the two processes: with --num_threads 1 on a busy machine, close to what they take alone on one core
    cpu = (cpu_after.ru_utime - cpu_before.ru_utime) + (cpu_after.ru_stime - cpu_before.ru_stime)
    train, evaluation = read_json(run_dir / "metrics.json"), read_json(run_dir / "eval" / "metrics.json")
    history = read_json(run_dir / "history.json")
    result = {"command": QUICK_COMMAND, "bench_command": "python stage2_rnn_lstm/bench.py --parts quick",
              "wall_seconds": round(wall, 1), "cpu_seconds": round(cpu, 1), "train_seconds": train["train_seconds"],
              "fit_seconds": train["metrics"]["fit_seconds"], "eval_seconds": evaluation["eval_seconds"],
              "val_loss": evaluation["metrics"]["loss"], "val_bpc": evaluation["metrics"]["bits_per_token"],
              "epochs": len(history), "train_tokens_per_s": train["metrics"]["train_tokens_per_s"],
              "params": train["params"], "hardware": train["hardware"], "torch": train["torch"],
              "load_average_at_start": round(load_before, 2), "load_average_at_end": round(os.getloadavg()[0], 2),
              "train_command": short_paths(train["command"], "stage2_rnn_lstm"),
              "eval_command": short_paths(evaluation["command"], "stage2_rnn_lstm"),
              "sample": model_sample(checkpoint)}
    write_json(results / "quick.json", result)
    print(f"quick preset: {wall / 60:.1f} min from start to end, valid loss {result['val_loss']:.3f} nats "
          f"({result['val_bpc']:.3f} bits/char)", flush=True)
    return result


def model_sample(checkpoint: Path) -> str:
    """The sample train.py prints at each evaluation (fixed prompt, temperature and seed), from `checkpoint`."""
    model, vocab, _ = load_language_model(checkpoint, None, torch.device("cpu"))
    return train_module.sample_text(model, vocab, torch.device("cpu"))


def write_sample(vocab_type: str) -> None:
    """A fixed-seed sample from the benchmark checkpoint, for the README."""
    checkpoint = STAGE_DIR / "checkpoints" / f"bench_lstm_{vocab_type}.pt"
    prompt = "ROMEO:" if vocab_type == "char" else "the company said"
    length = "400" if vocab_type == "char" else "60"
    argv = ["--checkpoint", str(checkpoint), "--prompt", prompt, "--max_new_tokens", length,
            "--temperature", "0.8", "--seed", "0"]
    sample = subprocess.run([sys.executable, str(STAGE_DIR / "generate.py"), *argv], capture_output=True, text=True)
    if sample.returncode != 0:
        sys.stderr.write(sample.stderr)     # generate.py's own one-line message
        check_child("generate.py", sample.returncode)
    shown = " ".join(f"'{a}'" if " " in a or ":" in a else a for a in argv[2:])
    write_json(RESULTS / f"lstm_{vocab_type}_sample.json",
               {"text": sample.stdout, "command": f"python stage2_rnn_lstm/generate.py --checkpoint "
                                                 f"stage2_rnn_lstm/checkpoints/{checkpoint.name} {shown}"})


def training_speed(config: LMConfig, batch: int, seq_len: int, steps: int = 20) -> float:
    """Training tokens per second of one configuration (forward, backward, clip, AdamW step)."""
    torch.manual_seed(0)
    model = RNNLanguageModel(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    tokens = torch.randint(0, config.vocab_size, (batch, seq_len + 1))
    for i in range(steps + 3):
        if i == 3:
            start = time.perf_counter()
        logits, _ = model(tokens[:, :-1])
        loss = F.cross_entropy(logits.flatten(0, 1), tokens[:, 1:].flatten())
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
    return batch * seq_len * steps / (time.perf_counter() - start)


def speed() -> None:
    """Scratch cells against nn.RNN/nn.LSTM/nn.GRU, the char and word default shapes, alternating runs."""
    rows = []
    for vocab_type, vocab_size in (("char", 66), ("word", 10000)):
        d = DEFAULTS[vocab_type]
        for model_type in ("rnn", "lstm", "gru"):
            best = {"torch": 0.0, "scratch": 0.0}
            for _ in range(2):  # alternate, keep each one's best: background noise hits both alike
                for impl in ("torch", "scratch"):
                    config = LMConfig(vocab_size=vocab_size, model_type=model_type, impl=impl,
                                      embed_dim=d["embed_dim"], hidden_dim=d["hidden_dim"], num_layers=d["num_layers"],
                                      dropout=d["dropout"], tie_weights=d["tie_weights"])
                    best[impl] = max(best[impl], training_speed(config, d["batch_size"], d["seq_len"]))
            rows.append({"vocab_type": vocab_type, "model_type": model_type, "torch_tokens_per_s": best["torch"],
                         "scratch_tokens_per_s": best["scratch"],
                         "scratch_over_torch": best["scratch"] / best["torch"]})
            print(rows[-1], flush=True)
    write_json(RESULTS / "speed.json", {"rows": rows, "hardware": hardware(), "torch": str(torch.__version__),
                                        "command": "python stage2_rnn_lstm/bench.py --parts speed"})


def classify(extra: list[str]) -> None:
    run_dir = STAGE_DIR / "runs" / "bench_classify_imdb"
    run("train_classifier.py", "--dataset", "imdb", "--out_dir", str(run_dir),
        "--checkpoint", str(STAGE_DIR / "checkpoints" / "bench_classifier_imdb.pt"), *extra)
    RESULTS.mkdir(exist_ok=True)
    shutil.copy(run_dir / "metrics.json", RESULTS / "classify_imdb_test.json")


# ----------------------------------------------------------------------------- tables
def lm_table() -> str:
    rows = []
    for vocab_type in ("char", "word"):
        if (RESULTS / f"lstm_{vocab_type}_eval.json").is_file():
            train, evaluation = load_results([RESULTS / f"lstm_{vocab_type}_train.json",
                                              RESULTS / f"lstm_{vocab_type}_eval.json"])
            rows.append({"train": train, "eval": evaluation, "vocab": vocab_type})
    columns = [
        ("model", lambda r: f"LSTM, {r['vocab']} level (`{r['train']['model'].rsplit('_', 1)[1]}`)"),
        ("data", lambda r: r["train"]["dataset"]),
        ("score", lambda r: f"{r['eval']['split']} loss {r['eval']['metrics']['loss']:.3f} nats, "
                            f"{r['eval']['metrics']['bits_per_token']:.3f} bits/char" if r["vocab"] == "char" else
                            f"{r['eval']['split']} perplexity **{r['eval']['metrics']['ppl']:.1f}**"),
        ("training time", lambda r: f"{r['train']['metrics']['fit_seconds'] / 60:.1f} min "
                                    f"({r['train']['metrics']['epochs_run']} epochs)"),
        ("tokens/s", lambda r: round(r["train"]["metrics"]["train_tokens_per_s"])),
        ("parameters", lambda r: r["train"]["params"]),
        ("hardware", lambda r: r["train"]["hardware"]),
    ]
    return markdown_table(rows, columns) + "\n\nCommand: `python stage2_rnn_lstm/bench.py --parts char word`.\n"


def speed_table() -> str:
    data = load_results([RESULTS / "speed.json"])[0]
    columns = [("shape", lambda r: f"{r['vocab_type']} default"), ("cell", lambda r: r["model_type"].upper()),
               ("nn.* tokens/s", lambda r: round(r["torch_tokens_per_s"])),
               ("scratch tokens/s", lambda r: round(r["scratch_tokens_per_s"])),
               ("scratch / nn.*", lambda r: f"{r['scratch_over_torch']:.2f}x")]
    return (markdown_table(data["rows"], columns) +
            f"\n\nMeasured in one run by `{data['command']}` on {data['hardware']} (torch {data['torch']}).\n")


def classify_rows() -> list[dict]:
    return [{"test": r} for r in load_results(sorted(RESULTS.glob("classify_*_test.json")))]


def classify_table() -> str:
    columns = [("model", lambda r: f"LSTM classifier (`{r['test']['model'].rsplit('_', 1)[1]}`)"),
               ("data", lambda r: r["test"]["dataset"]),
               ("test accuracy", lambda r: f"{100 * r['test']['metrics']['accuracy']:.2f}%"),
               ("test macro-F1", lambda r: f"{100 * r['test']['metrics']['macro_f1']:.2f}"),
               ("train time", lambda r: f"{r['test']['train_seconds']:.0f} s"),
               ("latency, batch 1", lambda r: f"{r['test']['metrics']['latency_ms_bs1']:.2f} ms"),
               ("parameters", lambda r: r["test"]["params"])]
    return markdown_table(classify_rows(), columns)


def sample_block() -> str:
    parts = []
    for vocab_type in ("char", "word"):
        path = RESULTS / f"lstm_{vocab_type}_sample.json"
        if path.is_file():
            sample = load_results([path])[0]
            parts.append(f"`{sample['command']}`:\n\n```text\n{sample['text'].rstrip()}\n```\n")
    return "\n".join(parts)


def char_score(loss: float, bpc: float) -> str:
    return f"val loss {loss:.3f} nats, {bpc:.3f} bits/char"


def quick_hardware(q: dict) -> str:
    """The machine of the quick run, and whether other programs were running on it (then the minutes are longer
    than the same run takes alone)."""
    load = q.get("load_average_at_start", 0.0)
    return q["hardware"] + (f"; machine shared with other programs (load average {load:.1f})" if load >= 2 else "")


def overview(results: Path = RESULTS) -> dict:
    """The quick, default and GPU runs of the char model in the course's one schema (docs/roadmap.md and the top
    README are built from it), every number read from a results file."""
    rows = []
    if (results / "quick.json").is_file():
        q = read_json(results / "quick.json")
        rows.append({"run": "quick", "command": q["command"], "minutes": round(q["wall_seconds"] / 60, 1),
                     "score": char_score(q["val_loss"], q["val_bpc"]), "hardware": quick_hardware(q),
                     "source": "results/quick.json"})
    if (results / "lstm_char_eval.json").is_file():
        train, evaluation = read_json(results / "lstm_char_train.json"), read_json(results / "lstm_char_eval.json")
        rows.append({"run": "default", "command": "python stage2_rnn_lstm/train.py",
                     "minutes": round(train["metrics"]["fit_seconds"] / 60, 1),
                     "score": char_score(evaluation["metrics"]["loss"], evaluation["metrics"]["bits_per_token"]),
                     "hardware": train["hardware"], "source": "results/lstm_char_train.json"})
    rows.append({"run": "gpu", "command": "python stage2_rnn_lstm/train.py --device cuda", "minutes": None,
                 "score": "not measured", "hardware": "no GPU measurement yet", "source": None})
    return {"stage": "stage2_rnn_lstm", "rows": rows}


def overview_table(data: dict) -> str:
    names = {"quick": "quick (`--preset quick`)", "default": "default", "gpu": "GPU"}
    columns = [("run", lambda r: names[r["run"]]), ("command", lambda r: f"`{r['command']}`"),
               ("minutes", lambda r: "not measured" if r["minutes"] is None else f"{r['minutes']:.1f}"),
               ("score", lambda r: r["score"]), ("hardware", lambda r: r["hardware"])]
    return (markdown_table(data["rows"], columns) +
            "\n\nquick: the whole `train.py` + `evaluate.py` run (`python stage2_rnn_lstm/bench.py --parts quick`); "
            "default: the training time of `python stage2_rnn_lstm/bench.py --parts char`. "
            "Made from [`results/overview.json`](results/overview.json).\n")


def overview_block() -> str:
    """The three-row table, and what the quick model wrote at its last evaluation."""
    text = overview_table(overview())
    if (RESULTS / "quick.json").is_file():
        sample = read_json(RESULTS / "quick.json")["sample"]
        text += (f"\nWhat the quick model writes (the sample `train.py` prints at each evaluation: prompt `ROMEO:`, "
                 f"temperature {train_module.SAMPLE_TEMPERATURE}, seed {train_module.SAMPLE_SEED}):\n\n"
                 f"```text\n{sample}\n```\n")
    return text


def readme_blocks() -> dict[Path, dict[str, str]]:
    """Every generated block of the stage README, from whatever results/ holds (the top README's course-wide
    tables are made from the same files by `python scripts/course_report.py`)."""
    stage = {"stage2_samples": sample_block(), "stage2_overview": overview_block()}
    if any(RESULTS.glob("lstm_*_eval.json")):
        stage["stage2_lm"] = lm_table()
    if (RESULTS / "speed.json").is_file():
        stage["stage2_speed"] = speed_table()
    if classify_rows():
        first = classify_rows()[0]["test"]
        stage["stage2_classify"] = (classify_table() +
                                    f"\n\nCommand: `python stage2_rnn_lstm/bench.py --parts classify` on "
                                    f"{first['hardware']} (torch {first['torch']}).\n")
    return {STAGE_DIR / "README.md": stage}


def write_tables() -> None:
    write_json(RESULTS / "overview.json", overview())
    for readme, blocks in readme_blocks().items():
        update_file(readme, blocks)


def main(argv: Sequence[str] | None = None) -> int:
    parser = ArgParser(description="Benchmark stage 2 with default settings and rebuild its README tables. The data "
                                   "must be the reference copies (sha256-checked first); your own data: train.py.")
    parser.add_argument("--parts", nargs="+", default=None, choices=PARTS,
                        help=f"which measurements to run (default: {' '.join(DEFAULT_PARTS)})")
    parser.add_argument("--tables_only", action=argparse.BooleanOptionalAction, default=False,
                        help="only rebuild the README tables from results/")
    parser.add_argument("--data_dir", type=path_arg, default=None,
                        help="folder holding the data sets (default: $MY_LLM_DATA); they must be the reference "
                             "copies, checked against their sha256 before anything runs")
    parser.add_argument("--num_threads", type=THREADS, default=None,
                        help="CPU threads for torch in the programs run (default 0: torch's default, one per core)")
    args = parser.parse_args(argv)
    if args.tables_only and (args.parts is not None or args.data_dir is not None or args.num_threads is not None):
        raise UserError("--tables_only runs nothing: drop --parts, --data_dir and --num_threads")
    args.parts = args.parts or list(DEFAULT_PARTS)
    if not args.tables_only:   # the data each part reads, checked before the first part runs
        for data in sorted({PART_DATA[part] for part in args.parts if part in PART_DATA}):
            name, pins, unpacked = REFERENCE[data]
            check_reference_data(name, pins, args.data_dir, unpacked, download_checked=data != "imdb")
    extra = ["--data_dir", args.data_dir] if args.data_dir else []
    extra += ["--num_threads", str(args.num_threads)] if args.num_threads else []
    if not args.tables_only:
        RESULTS.mkdir(exist_ok=True)
        for part in args.parts:
            if part in ("char", "word"):
                language_model(part, extra)
            elif part == "speed":
                speed()
            elif part == "quick":
                quick(extra)
            elif part == "samples":
                for vocab_type in ("char", "word"):
                    write_sample(vocab_type)
            else:
                classify(extra)
    write_tables()
    print(f"README tables rebuilt from {RESULTS}")
    return 0


if __name__ == "__main__":
    run_main(main)
