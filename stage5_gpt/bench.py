"""Stage 5 benchmark: every number in the stage README, from the default settings, on this machine.

    python stage5_gpt/bench.py                                 # all parts but gpu, finetune, quant, distill, export
    python stage5_gpt/bench.py --parts quick                   # the quick preset end to end (~2.5 min)
    python stage5_gpt/bench.py --parts char                    # the default char-level model (~20 min)
    python stage5_gpt/bench.py --parts baby --nanogpt_dir ~/nanoGPT   # also time nanoGPT's own train.py
    python stage5_gpt/bench.py --tables_only                   # rebuild the README tables from results/

quick:     `train.py --preset quick`, then `evaluate.py` on the whole validation text, timed together from start
           to exit (Python's start-up and data loading included); a sample from `generate.py` after (not timed).
           Writes results/quick.json; every part (and --tables_only) also rewrites results/overview.json, the
           quick / default / GPU rows of the course's run table, from the results there are.
baby_lr:   `train.py --preset baby` with each learning rate of BABY_LRS, scored by `evaluate.py` on the whole
           validation text: how the preset's learning rate was chosen.
baby:      `train.py --preset baby` (nanoGPT's CPU "baby GPT": 4 layers, 4 heads, 128 wide, context 64,
           batch 12, 2000 steps); with --nanogpt_dir, nanoGPT's train.py with the same flags right after,
           on the same machine and threads, so the two speeds are measured side by side.
char:      `train.py` with no flags (the default model), then `evaluate.py` over the whole validation text.
kv:        generation speed of the char model with and without the KV cache, for 64 ... 512 new tokens.
bpe:       training our byte-level BPE (8192 tokens) on the first 10 MB of the Gutenberg training text,
           beside Hugging Face `tokenizers` (Rust) with the same settings.
gutenberg: `train.py --preset gutenberg` (BPE pretraining on 105 books), then `evaluate.py` on 6 other books.
finetune:  fine-tuning FINETUNE_BASE (the GPU base, or --base) with `finetune.py`: IMDb with each method (full,
           head only, last 2 blocks, LoRA) and from scratch, AG News (test-split carve-out) pretrained and from
           scratch, and one multi-task model (IMDb, AG News, English->French) pretrained and from scratch. Meant
           for a GPU (`--device cuda`): the AG News runs took about 5 minutes each on the 2-core CPU, at about
           4,500 tokens/s, which puts each IMDb run near 1.5 hours there. `--collect DIR` instead imports
           run folders made elsewhere (DIR/<run name>/test_<task>.json and history.json).
cpu_finetune: the path from nothing to an IMDb classifier on a CPU, timed end to end: `train.py --preset imdb`
           (a BPE and a small GPT learned from the IMDb training reviews' text, no labels; its data preparation
           counted), then `finetune.py --preset cpu` (one epoch of full fine-tuning, scored on the whole test
           set); then, not counted in that time, the same fine-tuning from random weights (--scratch) as the
           control. The load average is sampled throughout and stored with the times.
gpu:       on a CUDA machine: the default char model, GPT-2 small's shape on Gutenberg for 200 steps, eager
           and with --compile (tokens/s and MFU against the card's bf16 peak), and GPU_BASE, a 14M-parameter
           Gutenberg model pretrained in about two minutes (checkpoints/gpu_base_gutenberg.pt), then GPU_ADAPT:
           that model's pretraining continued on the IMDb training reviews' text (checkpoints/gpu_base_imdb.pt),
           the base of the *_adapted fine-tuning runs. With --parts gpu finetune, gpu runs first.
quant:     int8 (ours, models/quant.py) and bf16 copies of the default char model and of cpu_finetune's IMDb
           classifier: file sizes, validation loss on every validation token, IMDb test accuracy, batch-1
           generation tokens/s against float32 and against PyTorch's quantize_dynamic (results/quantization.json).
distill:   a student with under half the default char model's parameters, distilled from it and trained on the
           data alone with the same compute, three seeds (results/distillation.json).
export:    the char model and cpu_finetune's BPE base exported to Hugging Face GPT-2 folders; transformers' greedy
           tokens against ours for 200 new tokens from three prompts each (results/export.json). With
           --llama_cpp DIR (a built llama.cpp checkout), the BPE base also goes to an f32 GGUF file, and
           llama.cpp's greedy llama-simple is compared with ours on the same prompts.
Each writes JSON files into stage5_gpt/results/.
"""
from __future__ import annotations

import argparse
import functools
import json
import math
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from scripts.checks import THREADS
from scripts.classification_data import AG_NEWS_SHA256, IMDB_SHA256
from scripts.common import (ArgParser, UserError, check_reference_data, hardware, load_checkpoint,
                            path_arg, read_json, run_main, write_json)
from scripts.plots import plot_curves
from scripts.report import check_child, markdown_table, update_file
from scripts.report import short_paths as report_short_paths
from stage5_gpt.data.bpe import ByteLevelBPE
from scripts.translation_data import MULTI30K_SHA256
from stage5_gpt.data.corpus import SHAKESPEARE_SHA256, load_text
from stage5_gpt.models.gpt import GPT, GPTConfig
from stage5_gpt.models.hf import GPT2_NAMES

STAGE_DIR = Path(__file__).resolve().parent
RESULTS = STAGE_DIR / "results"
PARTS = ("quick", "baby_lr", "baby", "char", "kv", "bpe", "gutenberg", "finetune", "cpu_finetune", "gpu", "quant",
         "distill", "export")
# the models the last three parts ship: the default char model (`python stage5_gpt/train.py`), and the BPE base and
# IMDb classifier of --parts cpu_finetune (a base pretrained on the CPU, then fine-tuned)
SHIP_CHAR = STAGE_DIR / "checkpoints" / "gpt_shakespeare_char.pt"
SHIP_BPE = STAGE_DIR / "checkpoints" / "bench_cpu_base_imdb.pt"
SHIP_CLASSIFIER = STAGE_DIR / "checkpoints" / "bench_cpu_ft.pt"
SHIP_MADE_BY = {SHIP_CHAR: "python stage5_gpt/train.py", SHIP_BPE: "python stage5_gpt/bench.py --parts cpu_finetune",
                SHIP_CLASSIFIER: "python stage5_gpt/bench.py --parts cpu_finetune"}
SHIP_PARTS = {"quant": (SHIP_CHAR, SHIP_CLASSIFIER), "distill": (SHIP_CHAR,), "export": (SHIP_CHAR, SHIP_BPE)}
EXPORT_PROMPTS = {SHIP_CHAR: ["ROMEO:", "JULIET:\n", "First Citizen:\n"],
                  SHIP_BPE: ["This movie was", "I watched this film last night and", "The acting"]}
DISTILL_SEEDS = (0, 1, 2)
SHIP_ONLY_ASKED = ("quant", "distill", "export")   # they start from models made elsewhere: run when named
BABY_LRS = ("1e-3", "2e-3", "4e-3", "6e-3")   # nanoGPT's 1e-3 and three higher peaks; min_lr = lr / 10
# GPT-2 small's shape (124M with GPT-2's vocabulary; 92M with our 8192 tokens), a short run for speed and MFU
GPT2_SMALL = ["--preset", "gutenberg", "--n_layer", "12", "--n_head", "12", "--n_embd", "768", "--block_size", "1024",
              "--batch_size", "16", "--max_steps", "200", "--warmup_steps", "50", "--lr", "6e-4", "--min_lr", "6e-5",
              "--eval_interval", "200", "--eval_iters", "10", "--log_interval", "20"]
# a GPT-mini pretrained on Gutenberg in about two GPU minutes: the base that stage 5's fine-tuning starts from
GPU_BASE = ["--preset", "gutenberg", "--n_layer", "6", "--n_head", "6", "--n_embd", "384", "--block_size", "512",
            "--batch_size", "64", "--max_steps", "6000", "--warmup_steps", "300", "--lr", "1e-3", "--min_lr", "1e-4",
            "--dropout", "0.1", "--eval_interval", "1000", "--eval_iters", "20", "--log_interval", "500"]
FINETUNE_BASE = STAGE_DIR / "checkpoints" / "gpu_base_gutenberg.pt"
# the same base after continued pretraining on the IMDb training reviews' text (no labels; the test reviews are never
# read): about 5.7 passes over its 8.7M tokens, at half the base's peak learning rate
IMDB_BASE = STAGE_DIR / "checkpoints" / "gpu_base_imdb.pt"
GPU_ADAPT = ["--preset", "gutenberg", "--init_from", str(FINETUNE_BASE), "--dataset", "imdb", "--block_size", "512",
             "--batch_size", "64", "--max_steps", "1500", "--warmup_steps", "100", "--lr", "5e-4", "--min_lr", "5e-5",
             "--dropout", "0.1", "--eval_interval", "250", "--eval_iters", "20", "--log_interval", "250"]
FINETUNE_COMMON = ["--epochs", "3", "--batch_size", "32"]
# run name -> finetune.py flags (learning rates: the method defaults' neighbourhood, for batch 32)
FINETUNE_RUNS = {
    "imdb_full": ["--task", "imdb", "--method", "full", "--lr", "3e-4"],
    "imdb_head": ["--task", "imdb", "--method", "head", "--lr", "2e-3"],
    "imdb_last_blocks": ["--task", "imdb", "--method", "last_blocks", "--train_blocks", "2", "--lr", "3e-4"],
    "imdb_lora": ["--task", "imdb", "--method", "lora", "--lr", "1e-3"],
    "imdb_scratch": ["--task", "imdb", "--scratch", "--lr", "3e-4"],
    "ag_news_full": ["--task", "ag_news", "--ag_news_source", "test_carveout", "--method", "full", "--lr", "1e-4"],
    "ag_news_scratch": ["--task", "ag_news", "--ag_news_source", "test_carveout", "--scratch", "--lr", "3e-4"],
    "multitask_full": ["--task", "multi", "--ag_news_source", "test_carveout", "--method", "full", "--lr", "2e-4"],
    "multitask_scratch": ["--task", "multi", "--ag_news_source", "test_carveout", "--scratch", "--lr", "5e-4"],
    # from IMDB_BASE: the flags of the runs above, but full fine-tuning at a tenth of the rate: 3e-4 undid what the
    # continued pretraining gave (validation accuracy 86.96% against 90.76% at 1e-4 and 90.96% at 3e-5;
    # results/finetune_imdb_full_adapted_lr_sweep.json)
    "imdb_full_adapted": ["--task", "imdb", "--method", "full", "--lr", "3e-5"],
    "imdb_lora_adapted": ["--task", "imdb", "--method", "lora", "--lr", "1e-3"],
    "imdb_head_adapted": ["--task", "imdb", "--method", "head", "--lr", "2e-3"],
}
# the CPU path: two commands, a base pretrained on the IMDb reviews' text, then one epoch of fine-tuning
CPU_BASE = ["--preset", "imdb"]
CPU_FINETUNE = ["--task", "imdb", "--preset", "cpu"]
BABY_FLAGS = ["--device=cpu", "--compile=False", "--eval_iters=20", "--log_interval=1", "--block_size=64",
              "--batch_size=12", "--n_layer=4", "--n_head=4", "--n_embd=128", "--max_iters=2000",
              "--lr_decay_iters=2000", "--dropout=0.0"]   # nanoGPT README's CPU command, verbatim


PROGRAMS = Path(__file__).resolve().parent   # where the stage's programs are (tests move STAGE_DIR's outputs only)


def run(script: str, *argv: str) -> None:
    """Run one of the stage's programs as a learner would (a fresh Python process), echoing the command. When it
    fails it has said why in its own line: the benchmark ends with its exit status and no second line."""
    cmd = [sys.executable, str(PROGRAMS / script), *argv]
    print("$", " ".join(cmd[1:]), flush=True)
    check_child(script, subprocess.run(cmd).returncode)


short_paths = functools.partial(report_short_paths, stage="stage5_gpt")


def train_and_evaluate(name: str, flags: list[str], extra: list[str], keep: bool = True) -> Path:
    """train.py from scratch (a benchmark never resumes), then evaluate.py on the whole validation text;
    with `keep`, the run's metrics, history and evaluation are copied into results/ as <name>_*.json."""
    run_dir, checkpoint = STAGE_DIR / "runs" / f"bench_{name}", STAGE_DIR / "checkpoints" / f"bench_{name}.pt"
    shutil.rmtree(run_dir, ignore_errors=True)
    run("train.py", *flags, "--out_dir", str(run_dir), "--checkpoint", str(checkpoint), *extra)
    run("evaluate.py", "--checkpoint", str(checkpoint), "--metrics_out", str(run_dir / "eval.json"), *extra)
    if keep:
        RESULTS.mkdir(exist_ok=True)
        for source, target in (("metrics.json", "train"), ("history.json", "history"), ("eval.json", "eval")):
            shutil.copy(run_dir / source, RESULTS / f"{name}_{target}.json")
    return run_dir


QUICK = ["--preset", "quick"]
QUICK_SAMPLE = ["--prompt", "ROMEO:", "--max_new_tokens", "300", "--seed", "1"]   # as `make quick` tries it


def quick(extra: list[str], train_flags: Sequence[str] = ()) -> None:
    """results/quick.json: the quick preset as a learner runs it, train.py then evaluate.py, timed from the first
    start to the last exit; then a sample of what it writes. `train_flags` go to train.py only (tests: tiny runs)."""
    run_dir, checkpoint = STAGE_DIR / "runs" / "bench_quick", STAGE_DIR / "checkpoints" / "bench_quick.pt"
    shutil.rmtree(run_dir, ignore_errors=True)
    load_before, tick = os.getloadavg()[0], time.time()
    run("train.py", *QUICK, "--out_dir", str(run_dir), "--checkpoint", str(checkpoint), *train_flags, *extra)
    run("evaluate.py", "--checkpoint", str(checkpoint), "--metrics_out", str(run_dir / "eval.json"), *extra)
    seconds, load_after = time.time() - tick, os.getloadavg()[0]
    generate = [sys.executable, str(Path(__file__).resolve().parent / "generate.py"), "--checkpoint", str(checkpoint)]
    generated = subprocess.run([*generate, *QUICK_SAMPLE, *extra], capture_output=True, text=True)
    if generated.returncode != 0:
        sys.stderr.write(generated.stderr)   # its own one-line error
        check_child("generate.py", generated.returncode)
    trained, scored = read_json(run_dir / "metrics.json"), read_json(run_dir / "eval.json")
    shutil.copy(run_dir / "history.json", RESULTS / "quick_history.json")
    write_json(RESULTS / "quick.json", {
        "command": "python stage5_gpt/train.py " + " ".join(QUICK), "seconds": round(seconds, 1),
        "minutes": round(seconds / 60, 2), "train_process_seconds": trained["train_seconds"],
        "fit_seconds": trained["metrics"]["fit_seconds"], "eval_seconds": scored["eval_seconds"],
        "val_loss": scored["metrics"]["loss"], "bits_per_char": scored["metrics"]["bits_per_byte"],
        "val_loss_estimate": trained["metrics"]["val_loss"], "steps": trained["metrics"]["steps"],
        "train_tokens_per_s": trained["metrics"]["train_tokens_per_s"], "params": trained["params"],
        "sample_command": "python stage5_gpt/generate.py " + " ".join(QUICK_SAMPLE), "sample": generated.stdout,
        "hardware": trained["hardware"], "torch": trained["torch"], "load_average_1min": [load_before, load_after],
        "commands": [short_paths(trained["command"]), short_paths(scored["command"])]})
    print(f"quick preset: {seconds / 60:.1f} min from start to exit, val loss {scored['metrics']['loss']:.3f}",
          flush=True)


def overview() -> dict:
    """results/overview.json: the quick preset, the default run and the GPU run, each with its command, minutes
    (the quick preset's whole command; the others' training, as the tables below give it), val loss over every
    validation character (evaluate.py) and hardware; rows not measured yet say so."""
    def row(run: str, command: str, names: Sequence[str], minutes: Callable[[list[dict]], float]) -> dict:
        paths = [RESULTS / f"{name}.json" for name in names]
        if not all(path.is_file() for path in paths):
            return {"run": run, "command": command, "minutes": None, "score": "not measured", "hardware": None,
                    "source": None}
        files = [read_json(path) for path in paths]
        loss = files[-1]["metrics"]["loss"] if "metrics" in files[-1] else files[-1]["val_loss"]
        return {"run": run, "command": command, "minutes": round(minutes(files), 1),
                "score": f"val loss {loss:.3f} ({loss / math.log(2):.2f} bits/char)",
                "hardware": files[0]["hardware"], "source": ", ".join(f"results/{p.name}" for p in paths)}

    return {"stage": "stage5_gpt", "rows": [
        row("quick", "python stage5_gpt/train.py --preset quick", ["quick"], lambda f: f[0]["seconds"] / 60),
        row("default", "python stage5_gpt/train.py", ["char_train", "char_eval"],
            lambda f: f[0]["metrics"]["fit_seconds"] / 60),
        row("gpu", "python stage5_gpt/train.py --device cuda", ["gpu_char_train", "gpu_char_eval"],
            lambda f: f[0]["metrics"]["fit_seconds"] / 60)]}


def baby_lr_sweep(extra: list[str]) -> None:
    rows = []
    for lr in BABY_LRS:
        run_dir = train_and_evaluate(f"baby_lr{lr}", ["--preset", "baby", "--lr", lr, "--min_lr", str(float(lr) / 10)],
                                     extra, keep=False)
        evaluation = read_json(run_dir / "eval.json")
        rows.append({"lr": float(lr), "min_lr": float(lr) / 10, "val_loss_every_token": evaluation["metrics"]["loss"],
                     "train_command": read_json(run_dir / "metrics.json")["command"]})
    best = min(rows, key=lambda r: r["val_loss_every_token"])
    write_json(RESULTS / "baby_lr_sweep.json", {"rows": rows, "chosen": best["lr"], "split": "val",
                                                "hardware": hardware("cpu"), "torch": torch.__version__})


def nanogpt(nanogpt_dir: Path, threads: int) -> None:
    """nanoGPT's own train.py with the baby-GPT flags; its log gives ms per iteration and the losses."""
    data = nanogpt_dir / "data" / "shakespeare_char"
    if not (data / "train.bin").is_file():
        raise UserError(f"{data}/train.bin is missing: copy tiny Shakespeare's input.txt there and run prepare.py")
    cmd = [sys.executable, "train.py", "config/train_shakespeare_char.py", *BABY_FLAGS,
           "--eval_interval=250", "--out_dir=out-bench-baby"]
    print("$ (in", nanogpt_dir, ")", " ".join(cmd[1:]), flush=True)
    env = {"OMP_NUM_THREADS": str(threads), "PATH": "/usr/bin:/bin"}
    tick = time.time()
    result = subprocess.run(cmd, cwd=nanogpt_dir, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise UserError(f"nanoGPT's train.py failed: {result.stderr.strip().splitlines()[-1:]}")
    (STAGE_DIR / "runs").mkdir(exist_ok=True)
    (STAGE_DIR / "runs" / "nanogpt_baby.log").write_text(result.stdout)
    nanogpt_results(result.stdout, time.time() - tick)


def nanogpt_results(log: str, wall_seconds: float) -> None:
    """results/nanogpt_baby.json from nanoGPT's log (kept in runs/nanogpt_baby.log)."""
    iters = re.findall(r"^iter (\d+): loss [\d.]+, time ([\d.]+)ms", log, re.M)
    # skip the first iterations (warm-up) and every 250th (its time includes nanoGPT's evaluation)
    times = [float(ms) for it, ms in iters if int(it) >= 10 and int(it) % 250]
    evals = [(int(s), float(t), float(v)) for s, t, v in
             re.findall(r"^step (\d+): train loss ([\d.]+), val loss ([\d.]+)", log, re.M)]
    if not times or not evals:
        raise UserError("could not read nanoGPT's log (runs/nanogpt_baby.log): has its output format changed?")
    ms = sum(times) / len(times)
    write_json(RESULTS / "nanogpt_baby.json", {
        "source": "karpathy/nanoGPT train.py", "flags": BABY_FLAGS, "ms_per_iter": ms,
        "tokens_per_s": 12 * 64 / (ms / 1000), "evals": evals, "val_loss": min(v for _, _, v in evals),
        "final_val_loss": evals[-1][2], "wall_seconds": wall_seconds, "hardware": hardware("cpu"),
        "torch": torch.__version__})


def kv_speed(checkpoint: Path, lengths: Sequence[int] = (64, 128, 256, 512), repeats: int = 2) -> None:
    """Seconds to generate N new tokens (batch 1, greedy) with and without the KV cache, same model."""
    ckpt = load_checkpoint(checkpoint, "stage5_gpt", ["gpt"])
    model = GPT(GPTConfig(**ckpt["config"])).eval()
    model.load_state_dict(ckpt["model_state"])
    prompt = torch.zeros(1, 1, dtype=torch.long)
    rows = []
    for n in lengths:
        row = {"new_tokens": n}
        for name, cache in (("cached", True), ("uncached", False)):
            best = float("inf")
            for _ in range(repeats):
                tick = time.perf_counter()
                tokens = torch.cat(list(model.generate(prompt, n, temperature=0.0, use_cache=cache)))
                best = min(best, time.perf_counter() - tick)
            row[f"{name}_seconds"], row[f"{name}_tokens"] = best, tokens.tolist()
        assert row["cached_tokens"] == row["uncached_tokens"], "the KV cache changed the greedy output"
        row["same_tokens"] = True
        del row["cached_tokens"], row["uncached_tokens"]
        row["speedup"] = row["uncached_seconds"] / row["cached_seconds"]
        print(f"{n} new tokens: {row['cached_seconds']:.2f} s cached, {row['uncached_seconds']:.2f} s uncached "
              f"({row['speedup']:.1f}x)", flush=True)
        rows.append(row)
    write_json(RESULTS / "kv_cache.json", {"checkpoint": checkpoint.name, "block_size": model.config.block_size,
                                           "batch": 1, "decoding": "greedy", "rows": rows,
                                           "hardware": hardware("cpu"), "torch": torch.__version__})


def bpe_speed(data_dir: str | None, chars: int = 10_000_000, vocab_size: int = 8192) -> None:
    text = load_text("gutenberg", data_dir)["train"][:chars]
    tick = time.perf_counter()
    ours = ByteLevelBPE.train(text, vocab_size)
    ours_seconds = time.perf_counter() - tick
    tick = time.perf_counter()
    ids = ours.encode(text)
    encode_seconds = time.perf_counter() - tick
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers   # Hugging Face's Rust BPE, only for this part

    hf = Tokenizer(models.BPE())
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size - 1, min_frequency=2, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), special_tokens=[])
    tick = time.perf_counter()
    # ours never merges across or into <|endoftext|>; HF sees the text between those markers, the same thing
    hf.train_from_iterator(text.split("<|endoftext|>"), trainer)
    hf_seconds = time.perf_counter() - tick
    hf_merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m)
                 for m in json.loads(hf.to_str())["model"]["merges"]]
    same = hf_merges == [(ours.token_str(a), ours.token_str(b)) for a, b in ours.merges]
    write_json(RESULTS / "bpe.json", {
        "chars": len(text), "bytes": len(text.encode("utf-8")), "vocab_size": vocab_size,
        "train_seconds": ours_seconds,
        "encode_seconds": encode_seconds, "tokens": len(ids), "bytes_per_token": len(text.encode("utf-8")) / len(ids),
        "hf_tokenizers_train_seconds": hf_seconds, "same_merges_as_hf": same, "hardware": hardware("cpu"),
        "torch": torch.__version__})
    print(f"BPE {vocab_size} on {len(text):,} chars: ours {ours_seconds:.1f} s, HF tokenizers {hf_seconds:.1f} s, "
          f"same merges: {same}", flush=True)


def gpu(extra: list[str]) -> None:
    if not torch.cuda.is_available():
        raise UserError("--parts gpu needs a CUDA GPU")
    train_and_evaluate("gpu_char", ["--device", "cuda", "--log_interval", "100"], extra)
    for name, flags in (("gpu_gpt2small_eager", []), ("gpu_gpt2small_compiled", ["--compile"])):
        run_dir = STAGE_DIR / "runs" / f"bench_{name}"
        shutil.rmtree(run_dir, ignore_errors=True)
        run("train.py", *GPT2_SMALL, *flags, "--device", "cuda", "--out_dir", str(run_dir), "--checkpoint",
            str(STAGE_DIR / "checkpoints" / f"bench_{name}.pt"), *extra)
        shutil.copy(run_dir / "metrics.json", RESULTS / f"{name}_train.json")
    run_dir = STAGE_DIR / "runs" / "gpu_base"
    shutil.rmtree(run_dir, ignore_errors=True)
    run("train.py", *GPU_BASE, "--device", "cuda", "--out_dir", str(run_dir), "--checkpoint", str(FINETUNE_BASE),
        *extra)
    shutil.copy(run_dir / "metrics.json", RESULTS / "gpu_base_train.json")
    run_dir = STAGE_DIR / "runs" / "gpu_base_imdb"
    shutil.rmtree(run_dir, ignore_errors=True)
    run("train.py", *GPU_ADAPT, "--device", "cuda", "--out_dir", str(run_dir), "--checkpoint", str(IMDB_BASE), *extra)
    shutil.copy(run_dir / "metrics.json", RESULTS / "gpu_base_imdb_train.json")


def finetune_base(name: str, base: Path) -> Path:
    """The pretrained checkpoint a fine-tuning run starts from: IMDB_BASE for the *_adapted runs, else `base`."""
    return IMDB_BASE if name.endswith("_adapted") else base


def finetune_bench(extra: list[str], base: Path, runs: Sequence[str]) -> None:
    for name in runs:
        run_dir = STAGE_DIR / "runs" / f"bench_ft_{name}"
        shutil.rmtree(run_dir, ignore_errors=True)
        run("finetune.py", "--base", str(finetune_base(name, base)), *FINETUNE_RUNS[name], *FINETUNE_COMMON,
            "--out_dir", str(run_dir), "--checkpoint", str(STAGE_DIR / "checkpoints" / f"bench_ft_{name}.pt"), *extra)
        if name == "multitask_full":   # forgetting: the tuned model as a language model on the held-out books
            run("evaluate.py", "--checkpoint", str(STAGE_DIR / "checkpoints" / f"bench_ft_{name}.pt"), "--dataset",
                "gutenberg", "--metrics_out", str(run_dir / "gutenberg_eval.json"), *extra)
        collect_finetune(run_dir, name)


def collect_finetune(run_dir: Path, name: str) -> None:
    """Copy a fine-tuning run's test_<task>.json (and history.json) into results/: a one-task run `imdb_lora` as
    finetune_imdb_lora_test.json; the multi-task runs per task, as finetune_<task>_multitask[_scratch]_test.json."""
    tests = sorted(run_dir.glob("test_*.json"))
    if not tests:
        raise UserError(f"{run_dir} holds no test_<task>.json: not a finished finetune.py run")
    RESULTS.mkdir(exist_ok=True)
    for test in tests:
        task = test.stem[len("test_"):]
        target = (f"finetune_{task}_{name.replace('_full', '')}_test.json" if name.startswith("multitask")
                  else f"finetune_{name}_test.json")
        shutil.copy(test, RESULTS / target)
    if (run_dir / "history.json").is_file():
        shutil.copy(run_dir / "history.json", RESULTS / f"finetune_{name}_history.json")
    if (run_dir / "gutenberg_eval.json").is_file():
        shutil.copy(run_dir / "gutenberg_eval.json", RESULTS / f"finetune_{name}_gutenberg_eval.json")


class LoadSampler:
    """The 1-minute load average every `every` seconds in a background thread: how busy the machine was."""

    def __init__(self, every: float = 30.0) -> None:
        self.samples: list[float] = []
        self.every, self.done = every, threading.Event()
        self.thread = threading.Thread(target=self.sample, daemon=True)

    def sample(self) -> None:
        while True:
            self.samples.append(round(os.getloadavg()[0], 2))
            if self.done.wait(self.every):
                return

    def __enter__(self) -> "LoadSampler":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        self.thread.join()


def timed(script: str, *argv: str) -> tuple[float, float]:
    """Run a stage program (echoed); (wall-clock seconds, Python's start-up included; CPU seconds it used, all
    threads summed). On a shared machine the wall clock stretches, the CPU seconds hardly do."""
    tick, before = time.time(), resource.getrusage(resource.RUSAGE_CHILDREN)
    run(script, *argv)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.time() - tick, (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)


def cpu_finetune(extra: list[str]) -> None:
    """results/cpu_finetune.json: the two commands of the CPU path, each timed from a cold start (a fresh data
    cache, so tokenising counts), the test scores, and the from-scratch control (timed on its own)."""
    run_dir = STAGE_DIR / "runs" / "bench_cpu_finetune"
    shutil.rmtree(run_dir, ignore_errors=True)
    base, tuned = STAGE_DIR / "checkpoints" / "bench_cpu_base_imdb.pt", STAGE_DIR / "checkpoints" / "bench_cpu_ft.pt"
    threads = torch.get_num_threads()
    cache = run_dir / "cache"
    with LoadSampler() as load:
        pretrain, pretrain_cpu = timed("train.py", *CPU_BASE, "--out_dir", str(run_dir / "base"),
                                       "--checkpoint", str(base), "--cache_dir", str(cache), *extra)
        finetune, finetune_cpu = timed("finetune.py", "--base", str(base), *CPU_FINETUNE, "--out_dir",
                                       str(run_dir / "finetune"), "--checkpoint", str(tuned),
                                       "--cache_dir", str(cache / "tasks"), *extra)
    for source, target in (("base/metrics.json", "cpu_base_imdb_train"), ("base/history.json", "cpu_base_imdb_history"),
                           ("finetune/test_imdb.json", "cpu_finetune_imdb_test"),
                           ("finetune/history.json", "cpu_finetune_imdb_history")):
        shutil.copy(run_dir / source, RESULTS / f"{target}.json")
    base_run, test = read_json(run_dir / "base" / "metrics.json"), read_json(run_dir / "finetune" / "test_imdb.json")
    busy = sum(load.samples) / max(len(load.samples), 1)
    result = {
        "commands": ["python stage5_gpt/train.py " + " ".join(CPU_BASE), "python stage5_gpt/finetune.py --base "
                     "stage5_gpt/checkpoints/gpt_imdb_bpe.pt " + " ".join(CPU_FINETUNE)],
        "steps": [
            {"step": "pretrain", "seconds": round(pretrain, 1), "cpu_seconds": round(pretrain_cpu, 1),
             "training_seconds": base_run["metrics"]["fit_seconds"], "command": base_run["command"]},
            {"step": "finetune", "seconds": round(finetune, 1), "cpu_seconds": round(finetune_cpu, 1),
             "training_seconds": test["train_seconds"],
             "test_scoring_seconds": round(test["test_size"] / test["metrics"]["examples_per_s"], 1),
             "command": test["command"]}],
        "total_seconds": round(pretrain + finetune, 1), "total_cpu_seconds": round(pretrain_cpu + finetune_cpu, 1),
        "accuracy": test["metrics"]["accuracy"], "macro_f1": test["metrics"]["macro_f1"],
        "test_size": test["test_size"], "train_size": test["train_size"], "scratch_control": None,
        "hardware": hardware("cpu"), "torch_threads": threads, "torch": torch.__version__,
        "load_average_samples": load.samples, "load_average_mean": round(busy, 2),
        "contention": ("measured while other jobs shared the 2 cores" if busy > threads + 0.5 else
                       "the machine was otherwise about idle") + f" (mean 1-minute load average {busy:.2f}, "
                       f"this run's own {threads} threads included)",
        "command": "python stage5_gpt/bench.py --parts cpu_finetune"}
    write_json(RESULTS / "cpu_finetune.json", result)   # the path's numbers are kept even if the control is cut short
    scratch, scratch_cpu = timed("finetune.py", "--base", str(base), *CPU_FINETUNE, "--scratch", "--out_dir",
                                 str(run_dir / "scratch"), "--checkpoint",
                                 str(tuned.with_name("bench_cpu_ft_scratch.pt")), "--cache_dir", str(cache / "tasks"),
                                 *extra)
    for source, target in (("scratch/test_imdb.json", "cpu_finetune_imdb_scratch_test"),
                           ("scratch/history.json", "cpu_finetune_imdb_scratch_history")):
        shutil.copy(run_dir / source, RESULTS / f"{target}.json")
    control = read_json(run_dir / "scratch" / "test_imdb.json")
    result["scratch_control"] = {"seconds": round(scratch, 1), "cpu_seconds": round(scratch_cpu, 1),
                                 "training_seconds": control["train_seconds"],
                                 "accuracy": control["metrics"]["accuracy"], "macro_f1": control["metrics"]["macro_f1"],
                                 "test_size": control["test_size"],
                                 "load_average_1min": round(os.getloadavg()[0], 2), "command": control["command"]}
    write_json(RESULTS / "cpu_finetune.json", result)


def quant_part(data_dir: str | None, threads: int) -> None:
    """int8 and bf16 against float32 and PyTorch's own int8 (stage5_gpt/quantize.py's measure)."""
    from stage5_gpt.quantize import measure
    tasks_cache = STAGE_DIR / "runs" / "bench_cpu_finetune" / "cache" / "tasks"   # cpu_finetune's tokenised IMDb
    result = measure(SHIP_CHAR, SHIP_CLASSIFIER, Path(data_dir) if data_dir else None, num_threads=threads,
                     cache_dir=tasks_cache if tasks_cache.is_dir() else None)
    write_json(RESULTS / "quantization.json", {**result, "hardware": hardware(), "threads": threads,
                                               "command": "python stage5_gpt/bench.py --parts quant"})


def distill_part(data_dir: str | None, threads: int) -> None:
    """The distilled student against the same student on the data alone (stage5_gpt/distill.py's measure)."""
    from stage5_gpt.distill import measure
    result = measure(STAGE_DIR / "runs" / "bench_distill", SHIP_CHAR, seeds=DISTILL_SEEDS, data_dir=data_dir,
                     num_threads=threads)
    write_json(RESULTS / "distillation.json", {**result, "command": "python stage5_gpt/bench.py --parts distill"})


def export_part(llama_cpp: Path | None) -> None:
    """Hugging Face export: transformers' greedy tokens against ours (stage5_gpt/export.py's measure); with
    `llama_cpp`, llama.cpp's on the GGUF file too."""
    from stage5_gpt.export import measure
    rows = [measure(path, prompts, 200, llama_cpp) for path, prompts in EXPORT_PROMPTS.items()]
    command = "python stage5_gpt/bench.py --parts export" + (" --llama_cpp DIR" if llama_cpp else "")
    write_json(RESULTS / "export.json", {"rows": rows, "command": command})


def first_lines(text: str, n: int) -> str:
    """The first `n` lines of a generated sample (the README shows a taste; the whole is in the results file)."""
    lines = text.strip().splitlines()
    return "\n".join(lines[:n]) + ("\n..." if len(lines) > n else "")


def closed_text(d: dict[str, Any]) -> str:
    """The distillation's gap closed over seeds, in words (undefined where the student alone matched its teacher)."""
    m, n = d["mean"], len(d["runs"])
    if m["gap_closed"] is None:
        return "undefined (the student alone was as good as the teacher)"
    undefined = n - m.get("gap_defined_runs", n)
    return (f"{100 * m['gap_closed']:.0f}% on average, {100 * m['gap_closed_min']:.0f}% at worst"
            + (f" ({undefined} runs undefined: the student alone was as good as the teacher)" if undefined else ""))


def ship_blocks() -> dict[str, str]:
    """The README tables of quantization, distillation and export (parts not run yet are left out)."""
    blocks = {}
    if (RESULTS / "quantization.json").is_file():
        q = read_json(RESULTS / "quantization.json")
        loss, size, speed, scoring = q["val_loss"], q["file_bytes"], q["tokens_per_s"], q["scoring_tokens_per_s"]
        calls = q["operator_calls_per_token"]
        rows = [{"what": "float32", "bytes": size["float32"], "loss": loss["float32"], "speed": speed["float32"],
                 "scoring": scoring["float32"], "calls": calls["float32"]},
                {"what": "bf16 weights", "bytes": size["bf16"], "loss": loss["bf16"], "speed": None, "scoring": None,
                 "calls": None},
                {"what": "int8, ours (models/quant.py)", "bytes": size["int8"], "loss": loss["int8"],
                 "speed": speed["int8"], "scoring": scoring["int8"], "calls": calls["int8"]},
                {"what": "int8, PyTorch quantize_dynamic", "bytes": q["state_bytes"]["pytorch_int8"],
                 "loss": loss["pytorch_int8"], "speed": speed["pytorch_int8"], "scoring": scoring["pytorch_int8"],
                 "calls": calls["pytorch_int8"]}]
        if "int8_fused" in scoring:
            rows.insert(3, {"what": "int8, ours, fused by torch.compile (quant.fuse)", "bytes": size["int8"],
                            "loss": None, "speed": None, "scoring": scoring["int8_fused"], "calls": None})
        table = markdown_table(rows, [
            ("weights", lambda r: r["what"]), ("size", lambda r: f"{r['bytes'] / 1e6:.2f} MB"),
            ("vs float32", lambda r: "—" if r["what"] == "float32" else f"{size['float32'] / r['bytes']:.2f}x smaller"),
            ("val loss", lambda r: "same as above" if r["loss"] is None else
             f"{r['loss']:.4f} ({100 * (r['loss'] / loss['float32'] - 1):+.2f}%)"),
            ("tokens/s, generating (batch 1)", lambda r: "—" if r["speed"] is None else f"{r['speed']:,.0f}"),
            ("operator calls per token", lambda r: "—" if r["calls"] is None else f"{r['calls']:,.0f}"),
            (f"tokens/s, scoring (batch {q['scoring_batch_size']})",
             lambda r: "—" if r["scoring"] is None else f"{r['scoring']:,.0f}")])
        note = (f"\n\nThe default char model, validation loss over all {q['val_tokens']:,} validation tokens; "
                f"generation: {q['new_tokens']} new tokens, KV cache, median of {q['repeats']}; int8 ours / float32 "
                f"{q['speed_int8_vs_float32']:.2f}x, ours / PyTorch's {q['speed_int8_vs_pytorch']:.2f}x; scoring "
                f"(evaluate.py's pass, {q['scoring_batch_size']} windows at once, median of {q['repeats']}): ours / "
                f"float32 {q['scoring_int8_vs_float32']:.2f}x, ours / PyTorch's {q['scoring_int8_vs_pytorch']:.2f}x"
                + (f", fused / PyTorch's {scoring['int8_fused'] / scoring['pytorch_int8']:.2f}x (compiling took "
                   f"{q['fused_compile_seconds']:.0f} s, once)" if "int8_fused" in scoring else "") + ". "
                "PyTorch's size is its state dict in memory (the tied embedding stays float32).")
        if "imdb" in q:
            m = q["imdb"]
            note += (f" IMDb classifier (`--parts cpu_finetune`'s): test accuracy {100 * m['accuracy_float32']:.2f}% "
                     f"float32, {100 * m['accuracy_int8']:.2f}% int8 ({m['accuracy_change_points']:+.2f} points, "
                     f"{m['test_size']:,} reviews), file {m['size_ratio_int8']:.2f}x smaller.")
        blocks["stage5_quant"] = table + note + f" {q['hardware']}. Command: `{q['command']}`."
    if (RESULTS / "distillation.json").is_file():
        d = read_json(RESULTS / "distillation.json")
        rows = [{"what": f"teacher ({d['teacher']['params']:,} parameters)", "loss": d["teacher"]["val_loss"],
                 "seconds": None}]
        for name, label in (("alone", "student on the data alone"), ("distilled", "student, distilled")):
            losses = [r[name]["val_loss"] for r in d["runs"]]
            seconds = [r[name]["seconds"] for r in d["runs"]]
            rows.append({"what": f"{label} ({d['student']['params']:,})", "loss": losses, "seconds": seconds})
        table = markdown_table(rows, [
            ("model", lambda r: r["what"]),
            ("val loss", lambda r: f"{r['loss']:.4f}" if r["seconds"] is None else
             f"{sum(r['loss']) / len(r['loss']):.4f} ({min(r['loss']):.4f}–{max(r['loss']):.4f})"),
            ("training time (median)", lambda r: "—" if r["seconds"] is None else
             f"{statistics.median(r['seconds']) / 60:.1f} min")])
        s_ = d["settings"]
        blocks["stage5_distill"] = table + (
            f"\n\nGap closed (alone − distilled) / (alone − teacher): {closed_text(d)} over seeds "
            f"{', '.join(str(r['seed']) for r in d['runs'])}"
            f"; student {d['student']['n_layer']} layers, {d['student']['n_embd']} wide "
            f"({100 * d['student']['fraction_of_teacher']:.0f}% of the teacher's parameters), T {s_['temperature']}, "
            f"alpha {s_['alpha']}, {s_['steps']} steps distilled and {s_['control_steps']} alone (the same "
            f"arithmetic: the teacher's pass over the text is counted; the times are wall-clock and depend on the "
            f"load: 1-minute load average {d['load_average']['mean']:.1f} on average, "
            f"{d['load_average']['max']:.1f} at most). {d['hardware']}. Command: `{d['command']}`.")
    if (RESULTS / "export.json").is_file():
        e = read_json(RESULTS / "export.json")
        blocks["stage5_export"] = markdown_table(e["rows"], [
            ("checkpoint", lambda r: f"`{Path(r['checkpoint']).name}`"), ("tokenizer", lambda r: r["tokenizer"]),
            ("prompts", lambda r: ", ".join(repr(p["prompt"]) for p in r["prompts"])),
            ("greedy tokens each", lambda r: "/".join(str(p["new_tokens"]) for p in r["prompts"])),
            ("same tokens in transformers", lambda r: f"{sum(p['same_tokens'] for p in r['prompts'])} of "
                                                      f"{len(r['prompts'])} prompts"),
            ("same prompt ids", lambda r: "yes" if all(p["same_ids"] for p in r["prompts"]) else "no"),
            ("largest logit difference", lambda r: f"{r['max_logit_diff']:.1e}")]) + (
            f"\n\ntransformers {e['rows'][0]['transformers']}, {e['rows'][0]['hardware']}. "
            f"Command: `{e['command']}`.")
        for row in e["rows"]:
            if "gguf" in row:
                parts = [f"{p['prompt']!r}: " + ("the same text" if p["same_text"] else
                                                 f"the same for {p['tokens_agreed']} tokens, then another token "
                                                 f"where our top two logits differ by "
                                                 f"{p['top2_logit_gap_where_parted']:.1e}")
                         for p in row["gguf"]["prompts"]]
                blocks["stage5_export"] += (
                    f"\n\nGGUF ({row['gguf']['type']}, `{Path(row['checkpoint']).name}`) in llama.cpp's "
                    f"llama-simple, greedy, {row['new_tokens']} new tokens: " + "; ".join(parts) + ".")
    return blocks


def mins(seconds: float) -> str:
    return f"{seconds / 60:.1f} min"


def readme_blocks() -> dict[Path, dict[str, str]]:
    """The README tables, made from results/*.json (parts not run yet are left out)."""
    blocks: dict[str, str] = {}
    rows = []
    for name, label in (("baby", "baby GPT (`--preset baby`)"), ("char", "default (`train.py`, no flags)"),
                        ("gutenberg", "BPE 8192, Gutenberg (`--preset gutenberg`)")):
        if not (RESULTS / f"{name}_train.json").is_file():
            continue
        train, evaluation = read_json(RESULTS / f"{name}_train.json"), read_json(RESULTS / f"{name}_eval.json")
        m, e = train["metrics"], evaluation["metrics"]
        rows.append({"model": label, "data": train["dataset"], "est": m["val_loss"], "exact": e["loss"],
                     "bpb": e["bits_per_byte"], "time": mins(m["fit_seconds"]), "steps": m["steps"],
                     "speed": m["train_tokens_per_s"], "mfu": f"{100 * m['mfu']:.1f}%", "params": train["params"],
                     "flops": m["flops_per_token"],
                     "hardware": train["hardware"], "amp": train["amp"]})
    if rows:
        table = markdown_table(rows, [("model", lambda r: r["model"]), ("data", lambda r: r["data"]),
                                      ("val loss (estimate)", lambda r: f"{r['est']:.3f}"),
                                      ("val loss (every token)", lambda r: f"{r['exact']:.3f}"),
                                      ("bits/byte", lambda r: f"{r['bpb']:.3f}"),
                                      ("training time", lambda r: r["time"]), ("steps", lambda r: r["steps"]),
                                      ("tokens/s", lambda r: f"{r['speed']:,.0f}"), ("MFU", lambda r: r["mfu"]),
                                      ("parameters", lambda r: r["params"]),
                                      ("MFLOPs/token", lambda r: f"{r['flops'] / 1e6:.1f}"),
                                      ("precision", lambda r: r["amp"]),
                                      ("hardware", lambda r: r["hardware"])])
        blocks["stage5_pretrain"] = table + "\n\nCommand: `python stage5_gpt/bench.py --parts baby char gutenberg`."
    if (RESULTS / "nanogpt_baby.json").is_file() and (RESULTS / "baby_train.json").is_file():
        ng, ours = read_json(RESULTS / "nanogpt_baby.json"), read_json(RESULTS / "baby_train.json")
        table = markdown_table([
            {"who": "this course, `train.py --preset baby`", "val": ours["metrics"]["val_loss"],
             "speed": ours["metrics"]["train_tokens_per_s"]},
            {"who": "nanoGPT `train.py` (its README's CPU command)", "val": ng["val_loss"],
             "speed": ng["tokens_per_s"]},
        ], [("program", lambda r: r["who"]), ("best val loss (20 batches)", lambda r: f"{r['val']:.3f}"),
            ("training tokens/s", lambda r: f"{r['speed']:,.0f}")])
        blocks["stage5_nanogpt"] = (table + f"\n\nSame machine, one after the other: {ng['hardware']}, torch "
                                    f"{ng['torch']}. Command: `python stage5_gpt/bench.py --parts baby "
                                    "--nanogpt_dir PATH`.")
    if (RESULTS / "kv_cache.json").is_file():
        kv = read_json(RESULTS / "kv_cache.json")
        table = markdown_table(kv["rows"], [
            ("new tokens", lambda r: r["new_tokens"]), ("with KV cache", lambda r: f"{r['cached_seconds']:.2f} s"),
            ("without", lambda r: f"{r['uncached_seconds']:.2f} s"), ("speed-up", lambda r: f"{r['speedup']:.1f}x"),
            ("same tokens", lambda r: "yes" if r["same_tokens"] else "no")])
        blocks["stage5_kv"] = (table + f"\n\nThe default char model (context {kv['block_size']}), batch 1, greedy; "
                               f"{kv['hardware']}. Command: `python stage5_gpt/bench.py --parts kv`.")
    if (RESULTS / "bpe.json").is_file():
        b = read_json(RESULTS / "bpe.json")
        blocks["stage5_bpe"] = markdown_table([b], [
            ("text", lambda r: f"{r['chars']:,} characters of Gutenberg"), ("vocabulary", lambda r: r["vocab_size"]),
            ("train (ours, Python)", lambda r: f"{r['train_seconds']:.1f} s"),
            ("train (HF tokenizers, Rust)", lambda r: f"{r['hf_tokenizers_train_seconds']:.1f} s"),
            ("same merges", lambda r: "yes" if r["same_merges_as_hf"] else "no"),
            ("encode (ours)", lambda r: f"{r['encode_seconds']:.1f} s"),
            ("bytes/token", lambda r: f"{r['bytes_per_token']:.2f}")]) + (
            f"\n\n{b['hardware']}. Command: `python stage5_gpt/bench.py --parts bpe`.")
    gpu_rows = [(label, read_json(RESULTS / f"{name}_train.json")) for name, label in (
        ("gpu_char", "default char model (`train.py --device cuda`)"),
        ("gpu_gpt2small_eager", "GPT-2 small shape, Gutenberg BPE, 200 steps"),
        ("gpu_gpt2small_compiled", "same, `--compile`"),
        ("gpu_base", "pretraining base for fine-tuning: 6 layers, 384 wide, context 512, Gutenberg BPE"),
        ("gpu_base_imdb", "the same base, pretraining continued on the IMDb training reviews' text (no labels)"),
    ) if (RESULTS / f"{name}_train.json").is_file()]
    if gpu_rows:
        table = markdown_table(gpu_rows, [
            ("run", lambda r: r[0]), ("parameters", lambda r: r[1]["params"]),
            ("tokens/step", lambda r: r[1]["metrics"]["tokens_seen"] // r[1]["metrics"]["steps"]),
            ("val loss", lambda r: f"{r[1]['metrics']['val_loss']:.3f}"),
            ("tokens/s (steady)", lambda r: f"{r[1]['metrics']['steady_tokens_per_s']:,.0f}"),
            ("MFU (steady)", lambda r: f"{100 * r[1]['metrics']['steady_mfu']:.1f}%"),
            ("tokens/s (whole run)", lambda r: f"{r[1]['metrics']['train_tokens_per_s']:,.0f}"),
            ("training time", lambda r: f"{r[1]['metrics']['fit_seconds']:.0f} s"),
            ("GPU", lambda r: r[1]["hardware"]), ("torch", lambda r: r[1]["torch"])])
        if (RESULTS / "gpu_base_eval.json").is_file():
            e = read_json(RESULTS / "gpu_base_eval.json")
            note = (f"\n\nThe base's checkpoint (brought back to the CPU machine in bfloat16 and loaded as float32), "
                    f"scored by `evaluate.py` on {e['hardware']}: {e['metrics']['loss']:.3f} nats per token over every "
                    f"validation token, {e['metrics']['bits_per_byte']:.3f} bits/byte. Command: `{e['command']}`.")
        else:
            note = ""
        adapted = [RESULTS / f"{name}.json" for name in ("gpu_base_on_imdb_eval", "gpu_base_imdb_eval",
                                                          "gpu_base_imdb_on_gutenberg_eval")]
        if all(path.is_file() for path in adapted):
            before, after, forgot = (read_json(path) for path in adapted)
            note += (f"\n\nContinued pretraining, scored the same way: on the held-out tenth of the IMDb training "
                     f"reviews the Gutenberg base scores {before['metrics']['loss']:.3f} nats per token "
                     f"({before['metrics']['bits_per_byte']:.3f} bits/byte) and the continued one "
                     f"{after['metrics']['loss']:.3f} ({after['metrics']['bits_per_byte']:.3f} bits/byte); on the 6 "
                     f"Gutenberg validation books the continued one scores {forgot['metrics']['loss']:.3f} "
                     f"({forgot['metrics']['bits_per_byte']:.3f} bits/byte), what it forgot of the books. Commands: "
                     + "; ".join(f"`{r['command']}`" for r in (before, after, forgot)) + ".")
        peak = gpu_rows[0][1]["metrics"]
        blocks["stage5_gpu"] = (table + f"\n\nMFU against {peak['peak_flops'] / 1e12:,.0f} TFLOP/s "
                                f"({peak['peak_source']}); "
                                "steady = the median logging window after the first (the first holds warm-up and "
                                "compilation). bf16 autocast. Command: `python stage5_gpt/bench.py --parts gpu`."
                                + note)
    finetune_rows = sorted(({**read_json(path), "adapted": path.stem.endswith("_adapted_test")}
                            for path in RESULTS.glob("finetune_*_test.json")),
                           key=lambda r: (TASK_ORDER.index(r["task"]), r["adapted"], METHOD_ORDER.index(r["model"])))
    if finetune_rows:
        blocks["stage5_finetune"] = markdown_table(finetune_rows, [
            ("task", lambda r: r["task"] + (" (test-split carve-out)" if "carve-out" in r["data_source"]
                                             else "")),
            ("model", lambda r: METHOD_LABELS[r["model"]].replace("pretrained", "pretrained + IMDb text")
             if r["adapted"] else METHOD_LABELS[r["model"]]),
            ("trained parameters", lambda r: f"{r['trainable_params']:,} of {r['params']:,}"),
            ("test score", lambda r: f"BLEU {r['metrics']['bleu']:.2f} (greedy), chrF {r['metrics']['chrf']:.2f}"
             if r["task"] == "translate" else f"accuracy {100 * r['metrics']['accuracy']:.2f}%, "
                                              f"macro-F1 {100 * r['metrics']['macro_f1']:.2f}"),
            ("test examples", lambda r: f"{r['test_size']:,}"),
            ("training time", lambda r: f"{r['train_seconds']:.0f} s"),
            ("latency, batch 1", lambda r: f"{r['metrics']['latency_ms_bs1']:.1f} ms"),
            ("scored on", lambda r: r["hardware"])]) + (
            f"\n\nEvery model starts from `{FINETUNE_BASE.name}` (table above), the \"+ IMDb text\" rows from "
            f"`{IMDB_BASE.name}` (the same base after continued pretraining on the training reviews' text), the "
            "from-scratch rows from random weights of the same shape; 3 epochs, batch 32, the best epoch on the "
            "validation split. Command: "
            "`python stage5_gpt/bench.py --parts finetune --device cuda` (runs and flags in its FINETUNE_RUNS).")
        forgot, base = RESULTS / "finetune_multitask_full_gutenberg_eval.json", RESULTS / "gpu_base_eval.json"
        if forgot.is_file() and base.is_file():
            after, before = read_json(forgot)["metrics"], read_json(base)["metrics"]
            blocks["stage5_finetune"] += (
                f"\n\nForgetting: as a language model on the 6 held-out Gutenberg books, the multi-task model scores "
                f"{after['loss']:.3f} nats per token ({after['bits_per_byte']:.3f} bits/byte); the base it started "
                f"from scored {before['loss']:.3f} ({before['bits_per_byte']:.3f} bits/byte). Command: "
                f"`{read_json(forgot)['command']}`.")
    summary = overview()
    blocks["stage5_overview"] = markdown_table(summary["rows"], [
        ("run", lambda r: r["run"]), ("command", lambda r: f"`{r['command']}`"),
        ("minutes", lambda r: "not measured" if r["minutes"] is None else f"{r['minutes']:.1f}"),
        ("score", lambda r: r["score"]), ("hardware", lambda r: r["hardware"] or "-")]) + (
        "\n\nMinutes: the whole command from start to exit for quick (data loading and the evaluation of every "
        "validation character included); the training loop for default and gpu. Score: `evaluate.py`'s loss over "
        "every validation character. Command: `python stage5_gpt/bench.py --parts quick` (results/overview.json).")
    if (RESULTS / "quick.json").is_file():
        made = read_json(RESULTS / "quick.json")
        blocks["stage5_overview"] += (f"\n\nWhat the quick model writes (`{made['sample_command']}`):\n\n```\n"
                                      f"{first_lines(made['sample'], 9)}\n```")
    if (RESULTS / "cpu_finetune.json").is_file():
        blocks["stage5_cpu_finetune"] = cpu_finetune_table(read_json(RESULTS / "cpu_finetune.json"))
    details = {name: blocks.pop(name) for name in ("stage5_nanogpt", "stage5_gpu", "stage5_kv", "stage5_bpe",
                                                   "stage5_cpu_finetune")
               if name in blocks}
    blocks.update(ship_blocks())
    return {STAGE_DIR / "README.md": blocks, RESULTS / "TUNING.md": details}    # the lesson, and its measurement notes


def cpu_finetune_table(cpu: dict) -> str:
    """The CPU path's steps and score, beside the GPU runs it can be compared with (when their files are here)."""
    pretrain, finetune = cpu["steps"]
    control = cpu["scratch_control"]
    rows = [{"path": "CPU: `train.py --preset imdb`, then `finetune.py --preset cpu`",
             "pretraining": f"{mins(pretrain['seconds'])} (IMDb reviews' text, BPE learned here)",
             "fine-tuning": f"{mins(finetune['seconds'])} (1 epoch, full; test scoring included)",
             "total": mins(cpu["total_seconds"]), "accuracy": cpu["accuracy"], "macro_f1": cpu["macro_f1"],
             "test": cpu["test_size"], "hardware": cpu["hardware"]}]
    if control:
        rows.append({"path": "CPU control: the same fine-tuning from random weights (`--scratch`)",
                     "pretraining": "none", "fine-tuning": f"{mins(control['training_seconds'])} (training only)",
                     "total": f"{mins(control['training_seconds'])} + scoring",
                     "accuracy": control["accuracy"], "macro_f1": control["macro_f1"], "test": control["test_size"],
                     "hardware": cpu["hardware"]})
    gpu_runs = [RESULTS / name for name in ("gpu_base_train.json", "gpu_base_imdb_train.json",
                                            "finetune_imdb_full_adapted_test.json", "finetune_imdb_scratch_test.json")]
    if all(path.is_file() for path in gpu_runs):
        base, adapt, full, scratch = (read_json(path) for path in gpu_runs)
        pretraining = base["metrics"]["fit_seconds"] + adapt["metrics"]["fit_seconds"]
        rows += [{"path": "GPU: Gutenberg base + IMDb text, full fine-tuning (3 epochs)",
                  "pretraining": f"{pretraining:.0f} s (Gutenberg, then IMDb text)",
                  "fine-tuning": f"{full['train_seconds']:.0f} s (training only)",
                  "total": f"{pretraining + full['train_seconds']:.0f} s + scoring",
                  "accuracy": full["metrics"]["accuracy"], "macro_f1": full["metrics"]["macro_f1"],
                  "test": full["test_size"], "hardware": full["hardware"]},
                 {"path": "GPU control: from random weights (3 epochs)", "pretraining": "none",
                  "fine-tuning": f"{scratch['train_seconds']:.0f} s (training only)",
                  "total": f"{scratch['train_seconds']:.0f} s + scoring", "accuracy": scratch["metrics"]["accuracy"],
                  "macro_f1": scratch["metrics"]["macro_f1"], "test": scratch["test_size"],
                  "hardware": scratch["hardware"]}]
    table = markdown_table(rows, [
        ("path", lambda r: r["path"]), ("pretraining", lambda r: r["pretraining"]),
        ("fine-tuning", lambda r: r["fine-tuning"]), ("end to end", lambda r: r["total"]),
        ("test accuracy", lambda r: f"{100 * r['accuracy']:.2f}% (macro-F1 {100 * r['macro_f1']:.2f})"),
        ("test examples", lambda r: f"{r['test']:,}"), ("hardware", lambda r: r["hardware"])])
    cpu_minutes = cpu["total_cpu_seconds"] / 60
    return (table + f"\n\nThe CPU times are wall-clock from each command's start to its end, tokenising and scoring "
            f"the whole test set included; {cpu['contention']}. Both commands used {cpu_minutes:.0f} CPU-minutes "
            f"in all (threads summed). Command: `{cpu['command']}`.")


TASK_ORDER = ["imdb", "ag_news", "translate"]
METHOD_ORDER = ["gpt_full", "gpt_last_blocks", "gpt_lora", "gpt_head", "gpt_scratch", "gpt_multitask",
                "gpt_multitask_scratch"]
METHOD_LABELS = {"gpt_full": "pretrained, full fine-tuning", "gpt_last_blocks": "pretrained, last 2 blocks + head",
                 "gpt_lora": "pretrained, LoRA (r 8) + head", "gpt_head": "pretrained, head only",
                 "gpt_scratch": "same model from random weights", "gpt_multitask": "pretrained, one multi-task model",
                 "gpt_multitask_scratch": "one multi-task model from random weights"}


def draw_curves() -> None:
    """results/<run>_curves.png: training and validation loss of each benchmarked pretraining run, from its
    history (the README shows the default char model's)."""
    for name in ("char", "gutenberg"):
        path = RESULTS / f"{name}_history.json"
        if path.is_file():
            history = read_json(path, "history file")["evals"]
            plot_curves(history, RESULTS / f"{name}_curves.png", [["train_loss", "val_loss"]],
                        title=f"GPT-mini, {name} run: loss (nats per token)", x="step")


# the data each part reads, and the sha256 of its shared copy: a bench publishes results of the reference data only
# (download_checked: a download is verified against the same pins, so "no local copy" may go ahead)
GUTENBERG_SHA256 = {"train.txt.gz": "d49fa9e6c697b619abb0fc519c8b2fe7da06098fe65f5e4b0111bea5beb111d7",
                    "valid.txt.gz": "b0d1519473e96768458e854b0b220a1f41093c6b4c5a46f4d80a686be2f99cb1"}
REFERENCE_DATA = {   # data set -> (pins, download checked, the parts that read it)
    "tiny_shakespeare": ({"input.txt": SHAKESPEARE_SHA256}, True, {"quick", "baby_lr", "baby", "char", "kv", "quant",
                                                                   "distill"}),
    "gutenberg_en": (GUTENBERG_SHA256, True, {"bpe", "gpu"}),
    "imdb": (IMDB_SHA256, False, {"gpu", "finetune", "cpu_finetune", "quant"}),
    "multi30k": (MULTI30K_SHA256, True, {"finetune"}),
    "ag_news": ({"test.csv": AG_NEWS_SHA256["test.csv"]}, False, {"finetune"}),
}


def check_bench_args(args: argparse.Namespace) -> argparse.Namespace:
    """The combinations: a flag of a part that does not run would be ignored (after hours of other parts), a
    folder or checkpoint that is not there would fail at the end; both are refused before anything runs."""
    if args.tables_only and (args.parts is not None or args.nanogpt_dir or args.base or args.runs or args.collect
                             or args.data_dir or args.num_threads or args.llama_cpp):
        raise UserError("--tables_only runs nothing: drop --parts, --nanogpt_dir, --llama_cpp, --base, --runs, "
                        "--collect, --data_dir and --num_threads")
    args.parts = args.parts or [part for part in PARTS if part not in ("gpu", "finetune") + SHIP_ONLY_ASKED]
    for flag in ("base", "runs", "device", "collect"):
        if getattr(args, flag) is not None and "finetune" not in args.parts:
            raise UserError(f"--{flag} applies to --parts finetune only")
    if args.collect and (args.base or args.device):
        raise UserError("--collect imports finished runs: --base and --device do not apply")
    if args.llama_cpp and "export" not in args.parts:
        raise UserError("--llama_cpp applies to --parts export only")
    if args.llama_cpp and not (Path(args.llama_cpp).expanduser() / "build" / "bin" / "llama-simple").is_file():
        raise UserError(f"--llama_cpp {args.llama_cpp} has no build/bin/llama-simple: build llama.cpp first "
                        "(cmake -B build && cmake --build build)")
    if args.nanogpt_dir and "baby" not in args.parts:
        raise UserError("--nanogpt_dir applies to --parts baby only")
    if args.nanogpt_dir and not (Path(args.nanogpt_dir).expanduser() / "train.py").is_file():
        raise UserError(f"--nanogpt_dir {args.nanogpt_dir} is not a nanoGPT checkout (no train.py in it)")
    args.runs = args.runs or list(FINETUNE_RUNS)
    if args.collect and not any((Path(args.collect) / name).is_dir() for name in args.runs):
        raise UserError(f"--collect {args.collect} holds no run folder named {', '.join(args.runs)}")
    args.base = args.base or str(FINETUNE_BASE)
    if "finetune" in args.parts and not args.collect:
        made_here = {FINETUNE_BASE, IMDB_BASE} if "gpu" in args.parts else set()   # the gpu part runs first
        for name in args.runs:
            base = finetune_base(name, Path(args.base))
            if base not in made_here and not base.exists() and str(base) not in GPT2_NAMES:
                whose, other = (("--base", "pass another --base") if base != IMDB_BASE else
                                (f"run {name} starts from {IMDB_BASE.name}:", "leave the *_adapted runs out"))
                raise UserError(f"{whose} {base} does not exist; pretrain it first (--parts gpu) or {other}")
    for part, needed in SHIP_PARTS.items():
        made_first = "cpu_finetune" in args.parts and part != "distill"
        for path in needed:
            if part in args.parts and not args.tables_only and not path.is_file() and not (
                    made_first and SHIP_MADE_BY[path].endswith("cpu_finetune")):
                raise UserError(f"--parts {part} needs {path.relative_to(STAGE_DIR.parent)}; make it first: "
                                f"{SHIP_MADE_BY[path]}")
    if not args.tables_only and not args.collect:
        for name, (pins, download_checked, parts) in REFERENCE_DATA.items():
            if parts & set(args.parts):
                check_reference_data(name, pins, args.data_dir, download_checked=download_checked)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    p = ArgParser(description="Stage 5 benchmark: the numbers in stage5_gpt/README.md.")
    p.add_argument("--parts", nargs="+", default=None, choices=PARTS,
                   help="which measurements to run (default: all but gpu, finetune, quant, distill and export)")
    p.add_argument("--nanogpt_dir", type=path_arg, default=None,
                   help="--parts baby: a nanoGPT checkout, to time its train.py beside ours")
    p.add_argument("--llama_cpp", type=path_arg, default=None,
                   help="--parts export: a built llama.cpp checkout, to run the GGUF export in its llama-simple")
    p.add_argument("--data_dir", type=path_arg, default=None,
                   help="folder holding the data sets (default $MY_LLM_DATA)")
    p.add_argument("--tables_only", action="store_true", help="only rebuild the README tables from results/")
    # the flags of the finetune part: default None, so that one typed without --parts finetune is refused
    p.add_argument("--base", type=path_arg, default=None,
                   help="--parts finetune: the pretrained checkpoint (default: checkpoints/gpu_base_gutenberg.pt, "
                        "made by --parts gpu)")
    p.add_argument("--runs", nargs="+", default=None, choices=list(FINETUNE_RUNS),
                   help="--parts finetune: which fine-tuning runs (default: all)")
    p.add_argument("--device", default=None, choices=["auto", "cpu", "cuda", "mps"],
                   help="--parts finetune: passed to finetune.py")
    p.add_argument("--num_threads", type=THREADS, default=0,
                   help="passed to every program: CPU threads for torch (0: torch's default, one per core)")
    p.add_argument("--collect", type=path_arg, default=None,
                   help="--parts finetune: import finished fine-tuning run folders DIR/<run name> into results/ "
                        "instead of training")
    args = check_bench_args(p.parse_args(argv))
    extra = (["--data_dir", args.data_dir] if args.data_dir else []) + (
        ["--num_threads", str(args.num_threads)] if args.num_threads else [])
    threads = torch.get_num_threads()
    if not args.tables_only:
        RESULTS.mkdir(exist_ok=True)
        if "quick" in args.parts:
            quick(extra)
        if "baby_lr" in args.parts:
            baby_lr_sweep(extra)
        if "baby" in args.parts:
            train_and_evaluate("baby", ["--preset", "baby"], extra)
            if args.nanogpt_dir:
                nanogpt(Path(args.nanogpt_dir).expanduser().resolve(), threads)
        if "char" in args.parts:
            train_and_evaluate("char", [], extra)
        if "kv" in args.parts:
            kv_speed(STAGE_DIR / "checkpoints" / "bench_char.pt")
        if "bpe" in args.parts:
            bpe_speed(args.data_dir)
        if "gutenberg" in args.parts:
            train_and_evaluate("gutenberg", ["--preset", "gutenberg"], extra)
        if "gpu" in args.parts:   # before finetune: it pretrains the bases fine-tuning starts from
            gpu(extra)
        if "finetune" in args.parts and args.collect:
            for name in args.runs:
                if (Path(args.collect) / name).is_dir():
                    collect_finetune(Path(args.collect) / name, name)
        elif "finetune" in args.parts:
            finetune_bench(extra + (["--device", args.device] if args.device else []), Path(args.base), args.runs)
        if "cpu_finetune" in args.parts:
            cpu_finetune(extra)
        if "quant" in args.parts:
            quant_part(args.data_dir, args.num_threads or 2)
        if "distill" in args.parts:
            distill_part(args.data_dir, args.num_threads or 2)
        if "export" in args.parts:
            export_part(Path(args.llama_cpp).expanduser() if args.llama_cpp else None)
    draw_curves()
    write_json(RESULTS / "overview.json", overview())
    for path, blocks in readme_blocks().items():
        if path.is_file() and blocks:
            update_file(path, {k: short_paths(v) for k, v in blocks.items()})
    return 0


if __name__ == "__main__":
    run_main(main)
