"""Stage 2 benchmark: every number in the stage README, from default settings, on this machine.

    python stage2_rnn_lstm/bench.py                  # all parts (about 70 minutes on 2 CPU cores)
    python stage2_rnn_lstm/bench.py --parts char     # char LSTM on tiny Shakespeare only (~17 min)
    python stage2_rnn_lstm/bench.py --tables_only    # rebuild the README tables from results/

Parts: char (train + evaluate + a sample), word (PTB train + test + a sample), speed (scratch cells
against nn.RNN/LSTM/GRU, same run), classify (LSTM classifier on IMDb), samples (only redraw the samples).
Each writes JSON files into stage2_rnn_lstm/results/.
"""
from __future__ import annotations

import argparse
import functools
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F

from scripts.common import ArgParser, UserError, hardware, run_main, write_json
from scripts.report import load_results, markdown_table, run_script, update_file
from stage2_rnn_lstm.models.rnn_lm import LMConfig, RNNLanguageModel
from stage2_rnn_lstm.train import DEFAULTS

STAGE_DIR = Path(__file__).resolve().parent
RESULTS = STAGE_DIR / "results"
PARTS = ("char", "word", "speed", "classify", "samples")


run = functools.partial(run_script, STAGE_DIR)   # run("train.py", flags...): a stage program, echoed


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


def write_sample(vocab_type: str) -> None:
    """A fixed-seed sample from the benchmark checkpoint, for the README."""
    checkpoint = STAGE_DIR / "checkpoints" / f"bench_lstm_{vocab_type}.pt"
    prompt = "ROMEO:" if vocab_type == "char" else "the company said"
    length = "400" if vocab_type == "char" else "60"
    argv = ["--checkpoint", str(checkpoint), "--prompt", prompt, "--max_new_tokens", length,
            "--temperature", "0.8", "--seed", "0"]
    sample = subprocess.run([sys.executable, str(STAGE_DIR / "generate.py"), *argv], capture_output=True, text=True)
    if sample.returncode != 0:
        raise UserError(f"generate.py failed: {sample.stderr.strip()}")
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


def readme_blocks() -> dict[Path, dict[str, str]]:
    """Every generated block of the stage README, from whatever results/ holds (the top README's course-wide
    tables are made from the same files by `python scripts/course_report.py`)."""
    stage = {"stage2_samples": sample_block()}
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
    for readme, blocks in readme_blocks().items():
        update_file(readme, blocks)


def main(argv: Sequence[str] | None = None) -> int:
    parser = ArgParser(description="Benchmark stage 2 with default settings and rebuild its README tables.")
    parser.add_argument("--parts", nargs="+", default=list(PARTS[:4]), choices=PARTS, help="which measurements to run")
    parser.add_argument("--tables_only", action=argparse.BooleanOptionalAction, default=False,
                        help="only rebuild the README tables from results/")
    parser.add_argument("--data_dir", default=None, help="folder holding the data sets (default: $MY_LLM_DATA)")
    args = parser.parse_args(argv)
    extra = ["--data_dir", args.data_dir] if args.data_dir else []
    if not args.tables_only:
        RESULTS.mkdir(exist_ok=True)
        for part in args.parts:
            if part in ("char", "word"):
                language_model(part, extra)
            elif part == "speed":
                speed()
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
