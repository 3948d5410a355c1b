"""Pretrain GPT-mini (stage 5): characters of tiny Shakespeare, or BPE tokens of English books.

    python train.py                                   # char-level tiny Shakespeare, the default model
    python train.py --preset quick                    # a small char model in about 2 minutes on 2 CPU cores
    python train.py --preset baby                     # nanoGPT's CPU "baby GPT" shape, 2000 steps
    python train.py --preset gutenberg                # byte-level BPE (8192) on 105 Gutenberg books
    python train.py --resume                          # carry on after Ctrl-C, bit-exact on CPU
    torchrun --standalone --nproc_per_node 4 train.py --preset gutenberg     # data-parallel on 4 GPUs

Training is counted in optimizer steps. Each step sees --batch_size x --grad_accum x (number of
processes) random windows of --block_size tokens; the learning rate warms up linearly for
--warmup_steps, then follows a cosine down to --min_lr at --max_steps. Every --eval_interval steps the
loss is estimated on --eval_iters fixed random batches of each split, the best model is saved to
--checkpoint and a resumable `last.pt` to the run folder, history.json and curves.png are rewritten, and a
short sample (a fixed prompt and seed) shows what the model writes by now. `tensorboard --logdir runs` shows
the losses and the samples while it trains.

Data-parallel training (DDP): started by torchrun, each process holds a copy of the model and takes
its own share of every step's windows; gradients are averaged across processes in backward, so all
copies stay identical. Several machines: `torchrun --nnodes 2 --node_rank 0|1 --master_addr HOST
--master_port 29500 --nproc_per_node 8 train.py ...` on each one.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import math
import os
import re
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from scripts.common import (ArgParser, TrainingInterrupted, UserError, add_common_args, add_output_args, amp_name,
                            autocast, check_vocab_fits, checkpoint_header, config_from_checkpoint, get_device,
                            hardware, load_checkpoint, path_arg, rng_state, run_main, save_checkpoint, set_rng_state,
                            set_seed,
                            set_threads, setup_logging, uses_bf16, warmup_cosine, write_json, write_metrics)
from scripts.common import model_from_checkpoint as checked_model
from scripts.checks import CLIP, COUNT, FRACTION, POSITIVE_INT, Range
from scripts.monitor import TrainingMonitor
from scripts.plots import plot_curves
from scripts.training import ResumableRun
from stage5_gpt.data.bpe import CharTokenizer, load_tokenizer
from stage5_gpt.data.corpus import DATA_CACHE, DATASETS, TokenData, prepare, train_tokenizer, windows
from stage5_gpt.models.gpt import ATTENTION_IMPLS, GPT, GPTConfig
from stage5_gpt.models.hf import GPT2_NAMES, load_gpt2

STAGE = "stage5_gpt"
STAGE_DIR = Path(__file__).resolve().parent
MODEL_NAME = "gpt"
# where evaluate.py, generate.py and the notebook look when no --checkpoint is given: the newest best model this
# script wrote, else the newest run's last.pt (fine-tuned models, ft_*.pt, are loaded with --checkpoint)
BEST_MODELS = ["checkpoints/gpt_*.pt"]
RUN_MODELS = ["runs/gpt_*/last.pt"]
TRAIN_HINT = "python stage5_gpt/train.py --preset quick"
# the sample printed at every evaluation: always the same prompt and seed, so samples show what training changed
SAMPLE_PROMPTS = {"shakespeare": "ROMEO:"}   # other data sets start from <|endoftext|> (BPE) or a new line
SAMPLE_CHARS, SAMPLE_SEED, SAMPLE_TEMPERATURE, SAMPLE_TOP_P = 200, 0, 0.8, 0.95   # generate.py's sampling defaults
# good settings per preset (flags left unset take these). "baby" is nanoGPT's CPU example, for comparison: its shape,
# batch and steps, with a higher learning rate (4e-3, chosen on validation from 1e-3, 2e-3, 4e-3, 6e-3:
# results/baby_lr_sweep.json)
PRESETS: dict[str, dict[str, Any]] = {
    "char": dict(dataset="shakespeare", tokenizer="char", vocab_size=0,
                 n_layer=4, n_head=4, n_embd=256, block_size=256, bias=False, dropout=0.1, attn_dropout=0.0,
                 batch_size=16, grad_accum=1, max_steps=4000, lr=2e-3, min_lr=2e-4, warmup_steps=100,
                 weight_decay=0.1, beta2=0.99, eval_interval=250, eval_iters=50, amp=True),
    # a first model to play with: about 2 minutes on 2 CPU cores, Shakespeare-like text (results/TUNING.md, "quick")
    "quick": dict(dataset="shakespeare", tokenizer="char", vocab_size=0,
                  n_layer=4, n_head=4, n_embd=128, block_size=64, bias=False, dropout=0.0, attn_dropout=0.0,
                  batch_size=12, grad_accum=1, max_steps=4800, lr=4e-3, min_lr=4e-4, warmup_steps=100,
                  weight_decay=0.1, beta2=0.99, eval_interval=400, eval_iters=20, amp=False),
    "baby": dict(dataset="shakespeare", tokenizer="char", vocab_size=0,
                 n_layer=4, n_head=4, n_embd=128, block_size=64, bias=False, dropout=0.0, attn_dropout=0.0,
                 batch_size=12, grad_accum=1, max_steps=2000, lr=4e-3, min_lr=4e-4, warmup_steps=100,
                 weight_decay=0.1, beta2=0.99, eval_interval=250, eval_iters=20, amp=False),
    "gutenberg": dict(dataset="gutenberg", tokenizer="bpe", vocab_size=8192,
                      n_layer=4, n_head=4, n_embd=256, block_size=256, bias=False, dropout=0.0, attn_dropout=0.0,
                      batch_size=16, grad_accum=1, max_steps=4000, lr=2e-3, min_lr=2e-4, warmup_steps=200,
                      weight_decay=0.1, beta2=0.95, eval_interval=500, eval_iters=50, amp=True),
    # the base of fine-tuning on a CPU: gutenberg's shape, but pretrained on the text of the IMDb training reviews (no
    # labels), the kind of text it will classify, for about 1.1 passes (results/TUNING.md, "fine-tuning on a CPU")
    "imdb": dict(dataset="imdb", tokenizer="bpe", vocab_size=8192,
                 n_layer=4, n_head=4, n_embd=256, block_size=256, bias=False, dropout=0.0, attn_dropout=0.0,
                 batch_size=16, grad_accum=1, max_steps=2000, lr=2e-3, min_lr=2e-4, warmup_steps=200,
                 weight_decay=0.1, beta2=0.95, eval_interval=500, eval_iters=20, amp=True),
}
# the allowed values of the numeric flags (scripts/checks.py): each refused in one line naming it, before any work
LR = Range(float, lo=0, hi=1, lo_open=True)          # AdamW's peak rate: 0 would train nothing
MIN_LR = Range(float, lo=0, hi=1)
WEIGHT_DECAY = Range(float, lo=0, hi=10)
PEAK_TFLOPS = Range(float, lo=0, lo_open=True, zero_means="measure or look up")
VOCAB_SIZE = Range(int, lo=258, hi=1 << 20)          # 256 bytes, <|endoftext|> and at least one merge
SIZES = {"batch_size": Range(int, lo=1, hi=1 << 16), "grad_accum": Range(int, lo=1, hi=1 << 16),
         "n_layer": Range(int, lo=1, hi=256), "n_head": Range(int, lo=1, hi=256),
         "n_embd": Range(int, lo=1, hi=1 << 14),
         "block_size": Range(int, lo=2, hi=1 << 16), "eval_iters": Range(int, lo=1, hi=100_000)}
# what --resume compares with the saved run: the flags that decide the model, the data order and the schedule
RESUME_MUST_MATCH = ["tokenizer", "vocab_size", "bias", "n_layer", "n_head", "n_embd", "block_size", "batch_size",
                     "grad_accum", "max_steps", "lr", "min_lr", "warmup_steps", "limit", "init_from", "dropout",
                     "attn_dropout", "weight_decay", "beta2", "clip", "attention", "amp"]
# dense bf16 tensor-core peak of some GPUs (FLOP/s), for model FLOPs utilisation
# (first match wins, so "H100 PCIe" comes before the SXM card's "H100")
GPU_PEAK_FLOPS = {"H200": 989e12, "H100 PCIe": 756e12, "H100": 989e12, "A100": 312e12, "L4": 121e12,
                  "A10": 125e12, "4090": 165e12, "T4": 65e12, "V100": 125e12}


def preset_default(key: str) -> str:
    """How --help states a flag whose default comes from --preset."""
    shown = {name: PRESETS[name][key] for name in PRESETS}
    values = ", ".join(f"{name} {('on' if v else 'off') if isinstance(v, bool) else v}" for name, v in shown.items())
    return f"(default: the preset's: {values})"


def build_parser() -> argparse.ArgumentParser:
    p = ArgParser(description="Pretrain GPT-mini, a decoder-only Transformer language model (stage 5).")
    p.add_argument("--preset", default="char", choices=sorted(PRESETS),
                   help="settings for unset flags: char (default model), quick (a small char model in about 2 minutes "
                        "on a CPU), baby (nanoGPT's CPU shape), gutenberg (BPE), "
                        "imdb (BPE on the IMDb reviews' text: the base of fine-tuning on a CPU)")
    p.add_argument("--dataset", default=None, choices=sorted(DATASETS),
                   help="text to train on " + preset_default("dataset"))
    p.add_argument("--tokenizer", default=None, choices=["char", "bpe"],
                   help="characters, or byte-level BPE (--dataset imdb needs bpe) " + preset_default("tokenizer"))
    p.add_argument("--init_from", type=path_arg, default="scratch",
                   help="scratch; or GPT-2 weights: gpt2 / gpt2-medium / ... (Hugging Face, online) or a local "
                        "folder holding a transformers GPT-2 (config.json, weights, vocab.json, merges.txt); or a "
                        "checkpoint of this script, to continue pretraining it (e.g. on --dataset imdb) with its "
                        "shape and tokenizer")
    p.add_argument("--max_steps", type=POSITIVE_INT, default=None,
                   help="optimizer steps; the cosine schedule ends here " + preset_default("max_steps"))
    p.add_argument("--lr", type=LR, default=None, help="peak AdamW learning rate " + preset_default("lr"))
    p.add_argument("--batch_size", type=SIZES["batch_size"], default=None,
                   help="windows per micro-batch, per process " + preset_default("batch_size"))

    model = p.add_argument_group("model")
    model.add_argument("--n_layer", type=SIZES["n_layer"], default=None,
                       help="Transformer blocks " + preset_default("n_layer"))
    model.add_argument("--n_head", type=SIZES["n_head"], default=None,
                       help="attention heads per block " + preset_default("n_head"))
    model.add_argument("--n_embd", type=SIZES["n_embd"], default=None,
                       help="model width d, divisible by --n_head " + preset_default("n_embd"))
    model.add_argument("--block_size", type=SIZES["block_size"], default=None,
                       help="context length in tokens " + preset_default("block_size"))
    model.add_argument("--dropout", type=FRACTION, default=None,
                       help="dropout on the embeddings and residual branches " + preset_default("dropout"))
    model.add_argument("--attn_dropout", type=FRACTION, default=None,
                       help="dropout on the attention weights; on CPU the fused attention kernel has none and falls "
                            "back to a much slower path " + preset_default("attn_dropout"))
    model.add_argument("--bias", action=argparse.BooleanOptionalAction, default=None,
                       help="biases in Linear and LayerNorm as in GPT-2; without them a little faster and as good "
                            + preset_default("bias"))
    model.add_argument("--attention", default="sdpa", choices=ATTENTION_IMPLS,
                       help="manual: softmax(QK^T/sqrt(d))V written out; sdpa: F.scaled_dot_product_attention (faster)")

    training = p.add_argument_group("training")
    training.add_argument("--grad_accum", type=SIZES["grad_accum"], default=None,
                          help="micro-batches summed into each optimizer step " + preset_default("grad_accum"))
    training.add_argument("--min_lr", type=MIN_LR, default=None,
                          help="learning rate at the end of the cosine " + preset_default("min_lr"))
    training.add_argument("--warmup_steps", type=COUNT, default=None,
                          help="linear warm-up steps " + preset_default("warmup_steps"))
    training.add_argument("--weight_decay", type=WEIGHT_DECAY, default=None,
                          help="AdamW decoupled weight decay, matrices only " + preset_default("weight_decay"))
    training.add_argument("--beta2", type=FRACTION, default=None, help="AdamW beta2 " + preset_default("beta2"))
    training.add_argument("--clip", type=CLIP, default=1.0, help="clip the global gradient norm to this (0: off)")
    training.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None,
                          help="bf16 autocast on CUDA and on CPUs with AMX/AVX512-BF16 (elsewhere float32); off for "
                               "baby, whose matrices are too small for bf16 to pay on a CPU " + preset_default("amp"))
    training.add_argument("--compile", action=argparse.BooleanOptionalAction, default=False,
                          help="torch.compile the model")
    training.add_argument("--eval_interval", type=POSITIVE_INT, default=None,
                          help="estimate losses and save every N steps " + preset_default("eval_interval"))
    training.add_argument("--eval_iters", type=SIZES["eval_iters"], default=None,
                          help="batches per loss estimate " + preset_default("eval_iters"))
    training.add_argument("--log_interval", type=COUNT, default=0,
                          help="log loss, tokens/s and MFU every N steps (0: ten times per --eval_interval)")
    training.add_argument("--peak_tflops", type=PEAK_TFLOPS, default=0.0,
                          help="hardware peak for MFU (0: known GPUs from a table; CPUs by timing a matmul at start)")

    data = p.add_argument_group("data")
    data.add_argument("--vocab_size", type=VOCAB_SIZE, default=None,
                      help="BPE vocabulary size, special tokens included " + preset_default("vocab_size"))
    data.add_argument("--bpe_train_chars", type=COUNT, default=10_000_000,
                      help="train the BPE on the first N characters of the training text (0: all)")
    data.add_argument("--limit", type=COUNT, default=0, help="use only the first N characters of the training text")
    data.add_argument("--cache_dir", type=path_arg, default=str(DATA_CACHE),
                      help="where the tokenised data sets are kept")

    add_output_args(p, "where the best model is written (default: checkpoints/gpt_<dataset>_"
                        "<tokenizer>.pt, the tokenizer being char, bpe, or base/gpt2 with --init_from; "
                        "checkpoints/gpt_baby.pt for the baby preset, checkpoints/gpt_shakespeare_char_quick.pt "
                        "for the quick one)",
                       "run folder (default: runs/ named like the checkpoint, e.g. runs/gpt_shakespeare_char)")
    add_common_args(p, seed_help="seed for initialisation, data order and dropout")
    return p


def resolve_args(args: argparse.Namespace) -> argparse.Namespace:
    """Fill unset flags from the preset and check what a user may get wrong: each number was checked while
    parsing (its range); here the combinations."""
    typed = {key for key in PRESETS[args.preset] if getattr(args, key) is not None}   # what the user gave
    for key, value in PRESETS[args.preset].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.init_from != "scratch":   # the starting model's own vocabulary
        if not Path(args.init_from).exists() and args.init_from not in GPT2_NAMES:
            raise UserError(f"--init_from {args.init_from}: no such checkpoint or folder, and not one of "
                            f"{', '.join(GPT2_NAMES[:4])}")
        args.tokenizer = "base" if Path(args.init_from).is_file() else "gpt2"
    if args.dataset == "imdb" and args.tokenizer == "char":
        raise UserError("--dataset imdb needs --tokenizer bpe (or --preset imdb): a character model would spell out "
                        "the <|endoftext|> between reviews letter by letter, and finetune.py needs BPE's token for it")
    if "vocab_size" in typed and args.tokenizer != "bpe":
        raise UserError(f"--vocab_size applies to --tokenizer bpe only; this run uses the {args.tokenizer} "
                        "tokenizer's own vocabulary")
    if args.tokenizer == "bpe":
        VOCAB_SIZE.check(args.vocab_size, "--vocab_size")
    args.log_interval = args.log_interval or max(1, args.eval_interval // 10)
    if args.n_embd % args.n_head:
        raise UserError(f"--n_embd {args.n_embd} must be divisible by --n_head {args.n_head}")
    if args.min_lr > args.lr:
        raise UserError(f"--min_lr {args.min_lr:g} must not exceed --lr {args.lr:g} (the cosine goes down to it)")
    if args.limit and args.limit < args.block_size + 2:   # a token holds at least one character
        raise UserError(f"--limit {args.limit} keeps fewer characters than one training window of --block_size "
                        f"{args.block_size} + 1 tokens; raise it, or 0 for the whole text")
    if "warmup_steps" in typed and args.warmup_steps > args.max_steps:
        raise UserError(f"--warmup_steps {args.warmup_steps} must be at most --max_steps {args.max_steps}")
    run = "gpt_baby" if args.preset == "baby" else f"gpt_{args.dataset}_{args.tokenizer}"
    if args.preset == "quick":   # its own files: a quick run never overwrites a long one
        run += "_quick"
    args.checkpoint = args.checkpoint or str(STAGE_DIR / "checkpoints" / f"{run}.pt")
    args.out_dir = args.out_dir or str(STAGE_DIR / "runs" / run)
    return args


# ----------------------------------------------------------------------------- checkpoints of this script
def checkpoint_payload(args: argparse.Namespace, model: GPT, tokenizer: Any) -> dict[str, Any]:
    """What a checkpoint says besides the weights: stage, model, config, data set, tokenizer and flags."""
    return {**checkpoint_header(STAGE, MODEL_NAME), "config": model.config.to_dict(), "dataset": args.dataset,
            "tokenizer": tokenizer.to_dict(), "tokenizer_fingerprint": tokenizer.fingerprint(), "args": vars(args)}


# the largest sizes a checkpoint's config may hold (GPT-2 xl is 1600 wide, 48 layers, 50257 tokens, context 1024):
# a bigger one was edited or damaged, and is refused before a single tensor is allocated from it
CONFIG_LIMITS = {"vocab_size": 1 << 20, "block_size": 1 << 16, "n_layer": 256, "n_head": 256, "n_embd": 1 << 14}


def checkpoint_config(ckpt: dict[str, Any], where: str) -> tuple[GPTConfig, Any]:
    """The checked model config and the tokenizer of a loaded checkpoint of this stage: every config key present
    and of its type, sizes within CONFIG_LIMITS, the tokenizer valid, unedited (its fingerprint) and exactly as
    large as the model's embedding."""
    config = config_from_checkpoint(where, ckpt.get("config"), GPTConfig, limits=CONFIG_LIMITS)
    for key, kind in (("tokenizer", dict), ("tokenizer_fingerprint", str)):   # (load_tokenizer takes a str for a path)
        if not isinstance(ckpt.get(key), kind):
            raise UserError(f"{where} holds no {key} (the entry is missing or of the wrong type: edited, or made by "
                            "another version); retrain the model")
    try:
        tokenizer = load_tokenizer(ckpt["tokenizer"])
    except UserError as err:
        raise UserError(f"{where}: {err}") from None
    if ckpt.get("tokenizer_fingerprint") != tokenizer.fingerprint():
        raise UserError(f"{where}: its tokenizer does not match the fingerprint saved with it (the file was edited); "
                        "retrain the model")
    check_vocab_fits(where, tokenizer.vocab_size, config.vocab_size)
    return config, tokenizer


def gpt_from_checkpoint(ckpt: dict[str, Any], where: str, overrides: dict[str, Any] | None = None,
                        random_init: bool = False) -> tuple[GPT, Any]:
    """The GPT and the tokenizer of a loaded checkpoint of this script, both checked (`checkpoint_config`, and the
    weights' names and shapes against the config before the model is built). `overrides` change settings that
    leave the shapes alone (dropout, attention); random_init keeps the architecture but not the weights."""
    config, tokenizer = checkpoint_config(ckpt, where)
    config = dataclasses.replace(config, **(overrides or {}))
    # random_init: load (to check the weights fit), then build afresh; the check draws no random numbers
    with torch.random.fork_rng(devices=[]) if random_init else contextlib.nullcontext():
        model = checked_model(where, lambda: GPT(config), ckpt.get("model_state"))
    return (GPT(config) if random_init else model), tokenizer


def load_pretrained(path: str | Path, flag: str, overrides: dict[str, Any] | None = None,
                    random_init: bool = False) -> tuple[GPT, Any]:
    """A pretrained GPT-mini and its tokenizer from a checkpoint of this script (fine-tuned ones are refused).
    `flag` names the option in errors."""
    ckpt = load_checkpoint(path, STAGE, [MODEL_NAME])
    if ckpt.get("quantization") is not None:          # quantize.py's record: int8 or half weights, inference only
        from stage5_gpt.models.quant import refuse_quantized  # noqa: PLC0415
        refuse_quantized(path, flag, "train from", ckpt)
    if ckpt.get("finetune"):
        raise UserError(f"{flag} {path} is a fine-tuned model; start from a pretrained one (train.py's checkpoint)")
    return gpt_from_checkpoint(ckpt, f"{flag} {path}", overrides, random_init)


# ----------------------------------------------------------------------------- model, data, optimizer
def load_init(args: argparse.Namespace) -> tuple[GPT, Any] | None:
    """The model --init_from names and its tokenizer: GPT-2's, or a checkpoint of this script (whose dropout and
    attention then follow the flags); None for scratch."""
    if args.init_from == "scratch":
        return None
    if args.tokenizer == "gpt2":
        return load_gpt2(args.init_from, args.attention, args.dropout)
    return load_pretrained(args.init_from, "--init_from", {"dropout": args.dropout, "attn_dropout": args.attn_dropout,
                                                           "attention": args.attention})


def build_model(args: argparse.Namespace, tokenizer: Any, init: tuple[GPT, Any] | None, log: Any) -> GPT:
    """The --init_from model (GPT-2's or a checkpoint's) or a new one of the flags' shape."""
    if init:
        model = init[0]
        if args.block_size > model.config.block_size:
            raise UserError(f"--block_size {args.block_size} exceeds {args.init_from}'s context of "
                            f"{model.config.block_size}")
        log.info(f"model shape from {args.init_from}: {model.config.n_layer} layers, {model.config.n_head} heads, "
                 f"{model.config.n_embd} wide (--n_layer, --n_head, --n_embd and --bias do not apply)")
        return model
    return GPT(GPTConfig(vocab_size=tokenizer.vocab_size, block_size=args.block_size, n_layer=args.n_layer,
                         n_head=args.n_head, n_embd=args.n_embd, dropout=args.dropout, attn_dropout=args.attn_dropout,
                         bias=args.bias, attention=args.attention))


def make_optimizer(model: GPT, args: argparse.Namespace, device: torch.device) -> torch.optim.AdamW:
    """AdamW with decoupled weight decay on the matrices only (weights and embedding tables, as GPT-2 and
    nanoGPT do): decaying biases and LayerNorm gains would only pull offsets and scales towards zero."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    # fused: one kernel updates every tensor (CUDA and CPU) instead of a Python loop over them
    fused = {"fused": True} if device.type in ("cuda", "cpu") else {}
    return torch.optim.AdamW(groups, lr=args.lr, betas=(0.9, args.beta2), **fused)


def peak_flops(device: torch.device, args: argparse.Namespace) -> tuple[float, str]:
    """One device's peak FLOP/s (MFU divides by this times the number of processes), and its source."""
    if args.peak_tflops > 0:
        return args.peak_tflops * 1e12, "--peak_tflops"
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, value in GPU_PEAK_FLOPS.items():
            if re.search(rf"\b{key}\b", name):   # whole words: "L4" is not an L40S, "A10" not an A10G
                return value, f"{name} bf16 dense peak"
    # CPUs (and unknown GPUs): time a large matmul in the dtype training uses
    dtype = torch.bfloat16 if uses_bf16(device, args.amp) else torch.float32
    a = torch.full((1024, 1024), 0.5, device=device, dtype=dtype)   # not randn: leave the RNG to training
    for _ in range(3):
        a @ a
    if device.type == "cuda":
        torch.cuda.synchronize()
    reps, tick = 20, time.perf_counter()
    for _ in range(reps):
        a @ a
    if device.type == "cuda":
        torch.cuda.synchronize()
    return 2 * 1024 ** 3 * reps / (time.perf_counter() - tick), f"measured 1024x1024 {str(dtype)[6:]} matmul"


class Distributed:
    """Rank, world size and the helpers the loop needs; a single process is world size 1."""

    def __init__(self, device_name: str) -> None:
        self.enabled = int(os.environ.get("WORLD_SIZE", "1")) > 1
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.device = get_device(device_name)
        if self.enabled:
            if self.device.type == "cuda":
                self.device = torch.device("cuda", self.local_rank)
                torch.cuda.set_device(self.device)
            dist.init_process_group(backend="nccl" if self.device.type == "cuda" else "gloo")
        self.master = self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def any(self, flag: bool) -> bool:
        """True on every rank if `flag` is true on any (so all ranks stop at the same step)."""
        if not self.enabled:
            return flag
        t = torch.tensor([int(flag)], device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())

    def gather(self, obj: Any) -> list[Any]:
        """`obj` from every process, in rank order (a one-item list for a single process)."""
        if not self.enabled:
            return [obj]
        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def mean(self, value: float) -> float:
        """The average of `value` over all processes (the loss of the whole global batch)."""
        if not self.enabled:
            return value
        t = torch.tensor([value], dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return t.item() / self.world

    def check_in_sync(self, model: torch.nn.Module) -> None:
        """DDP's promise, checked: after the last step every process holds exactly the same parameters."""
        if not self.enabled:
            return
        flat = torch.cat([p.detach().float().flatten() for p in model.parameters()])
        gathered = [torch.empty_like(flat) for _ in range(self.world)]
        dist.all_gather(gathered, flat)
        if not all(torch.equal(gathered[0], g) for g in gathered[1:]):
            raise RuntimeError("the processes' parameters differ after training: DDP lost synchronisation")

    def close(self) -> None:
        if self.enabled and dist.is_initialized():
            dist.destroy_process_group()


def load_data(args: argparse.Namespace, ddp: Distributed, log: Any, given_tokenizer: Any | None) -> TokenData:
    """Tokenise once (the first process), then every process memory-maps the same files. given_tokenizer:
    the vocabulary of the model training starts from (--init_from), instead of one trained here."""
    if given_tokenizer is not None:
        name = f"{args.dataset}-{args.tokenizer}-{given_tokenizer.fingerprint()[:8]}"
    elif args.tokenizer == "char":
        name = f"{args.dataset}-char"
    else:
        name = f"{args.dataset}-bpe{args.vocab_size}-{args.bpe_train_chars}"

    def make_tokenizer(splits: dict[str, str]) -> Any:
        if given_tokenizer is not None:
            check_spells(given_tokenizer, splits, args)
            return given_tokenizer
        tokenizer = train_tokenizer(args.tokenizer, splits, args.vocab_size, args.bpe_train_chars)
        if args.tokenizer == "bpe" and tokenizer.vocab_size < args.vocab_size:    # the text ran out of pairs to merge
            print(f"note: the BPE reached {tokenizer.vocab_size:,} tokens, not --vocab_size {args.vocab_size:,}: its "
                  "training text has no more pairs to merge (raise --bpe_train_chars)", file=sys.stderr)
        return tokenizer

    if ddp.master:
        data = prepare(args.dataset, args.data_dir, make_tokenizer, name, args.limit, log.info, Path(args.cache_dir))
    ddp.barrier()
    if not ddp.master:
        data = prepare(args.dataset, args.data_dir, make_tokenizer, name, args.limit, log.info, Path(args.cache_dir))
    return data


def check_spells(tokenizer: Any, splits: dict[str, str], args: argparse.Namespace) -> None:
    """--init_from a character model: its vocabulary must hold every character of --dataset (BPE's bytes hold any
    text). Said now, naming both flags, rather than as an encoding error about 'the text'."""
    if not isinstance(tokenizer, CharTokenizer):
        return
    unknown = sorted(set(splits["train"]).union(splits["val"]) - set(tokenizer.chars))
    if unknown:
        shown = ", ".join(repr(c) for c in unknown[:10]) + (" ..." if len(unknown) > 10 else "")
        raise UserError(f"--init_from {args.init_from} is a character model whose vocabulary lacks {len(unknown)} "
                        f"character(s) of --dataset {args.dataset} ({shown}); start from a BPE model or from scratch")


def random_starts(data: np.ndarray, block_size: int, shape: tuple[int, ...],
                  generator: torch.Generator) -> torch.Tensor:
    """Random window starts of the given shape, each leaving room for block_size + 1 tokens."""
    high = len(data) - block_size - 1
    if high < 1:
        raise UserError(f"a split holds {len(data)} tokens, fewer than one window of {block_size + 1}; "
                        "lower --block_size or drop --limit")
    return torch.randint(high, shape, generator=generator)


def window_starts(data: np.ndarray, args: argparse.Namespace, world: int,
                  generator: torch.Generator) -> torch.Tensor:
    """Random window starts for one optimizer step of every process: (world * grad_accum, batch_size).
    Every process draws the same numbers and takes its own rows, so a run on N processes sees exactly
    the windows of a one-process run with N times the accumulation."""
    return random_starts(data, args.block_size, (world * args.grad_accum, args.batch_size), generator)


def batch_on(data: np.ndarray, starts: torch.Tensor, block: int, device: torch.device) -> tuple[torch.Tensor, ...]:
    """(inputs, targets) of the windows at `starts`, on `device`."""
    x, y = windows(data, starts.tolist(), block)
    if device.type == "cuda":   # pinned memory lets the copy overlap with compute
        return x.pin_memory().to(device, non_blocking=True), y.pin_memory().to(device, non_blocking=True)
    return x.to(device), y.to(device)


@torch.no_grad()
def estimate_loss(model: torch.nn.Module, data: np.ndarray, args: argparse.Namespace,
                  device: torch.device, seed: int) -> float:
    """Mean loss on --eval_iters batches of random windows, always the same ones (own generator): the
    estimates at different steps are comparable and the training RNG is not disturbed."""
    generator = torch.Generator().manual_seed(seed)
    was_training = model.training
    model.eval()
    losses = []
    for _ in range(args.eval_iters):
        starts = random_starts(data, args.block_size, (args.batch_size,), generator)
        x, y = batch_on(data, starts, args.block_size, device)
        with autocast(device, args.amp):
            _, loss = model(x, y)
        losses.append(loss.item())
    model.train(was_training)
    return float(np.mean(losses))


def train_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, data: np.ndarray, starts: torch.Tensor,
               args: argparse.Namespace, ddp: Distributed) -> float:
    """One optimizer step over this process's --grad_accum micro-batches; returns the global batch's mean loss.

    Each micro-batch's loss is divided by --grad_accum, so the summed gradients are those of the mean over
    the whole batch. Under DDP, gradients are averaged across processes in the last micro-batch's backward
    (no_sync skips that all-reduce for the others)."""
    device = ddp.device
    loss_sum = 0.0
    for micro in range(args.grad_accum):
        x, y = batch_on(data, starts[ddp.rank * args.grad_accum + micro], args.block_size, device)
        sync = micro == args.grad_accum - 1 or not ddp.enabled
        with (contextlib.nullcontext() if sync else model.no_sync()), autocast(device, args.amp):
            _, loss = model(x, y)
        (loss / args.grad_accum).backward()
        loss_sum += loss.item() / args.grad_accum
    if args.clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    if device.type == "cuda":
        torch.cuda.synchronize()   # so the step's wall time is the GPU's time, not the launch time
    return ddp.mean(loss_sum)


class SpeedMeter:
    """Training tokens per second and model FLOPs utilisation (MFU) over the steps since the last report.

    MFU = tokens/s x training FLOPs per token / the hardware's peak FLOP/s (of every process together)."""

    def __init__(self, model: GPT, args: argparse.Namespace, ddp: Distributed) -> None:
        self.params = model.num_params()
        self.flops_per_token = model.flops_per_token(args.block_size)
        self.peak, self.peak_source = peak_flops(ddp.device, args)   # one device's
        self.world = ddp.world
        self.tokens_per_step = args.batch_size * args.block_size * args.grad_accum * ddp.world
        self.restart()

    def describe(self) -> str:
        return (f"{self.params:,} parameters, {self.flops_per_token / 1e6:.1f} MFLOPs/token, "
                f"{self.tokens_per_step:,} tokens/step, {self.world} process(es); MFU against "
                f"{self.peak / 1e12:.2f} TFLOP/s per device ({self.peak_source})")

    def mfu(self, tokens_per_s: float) -> float:
        return tokens_per_s * self.flops_per_token / (self.peak * self.world)

    def restart(self) -> None:
        """Start a new window (after an evaluation, which is not training time)."""
        self.tick, self.steps = time.time(), 0

    def step(self) -> None:
        self.steps += 1

    def report(self) -> tuple[float, float, float]:
        """(tokens/s, MFU, ms per step) of the window since the last report; starts a new one."""
        seconds = time.time() - self.tick
        speed = self.steps * self.tokens_per_step / seconds
        result = speed, self.mfu(speed), 1000 * seconds / self.steps
        self.restart()
        return result


def check_resume(run: ResumableRun, ddp: Distributed, data: TokenData) -> None:
    """What ResumableRun cannot check from the flags: the number of processes and the tokenizer."""
    if run.resume is None:
        return
    if run.resume.get("processes") != ddp.world:
        raise UserError(f"--resume: {run.last_path} was trained by {run.resume.get('processes')} process(es), now "
                        f"{ddp.world}; resume with the same number (the global batch and data order depend on it)")
    if run.resume.get("tokenizer_fingerprint") != data.tokenizer.fingerprint():
        raise UserError(f"--resume: {run.last_path} was trained with another tokenizer than {data.folder}; "
                        "start a new run with another --out_dir")


def attach(run: ResumableRun, model: GPT, optimizer: torch.optim.Optimizer, data_order: torch.Generator,
           args: argparse.Namespace, tokenizer: Any, ddp: Distributed) -> Callable[[], None]:
    """Tell the run what last.pt holds, restore it on --resume, and return `save_last`, which every process
    calls (each one's RNG state is gathered, for its own dropout masks; the first process writes the file)."""
    rng_states: list[Any] = []
    run.attach(model, optimizer, payload=lambda: checkpoint_payload(args, model, tokenizer),
               extra_state=lambda: {"rng_states": rng_states, "data_rng": data_order.get_state(),
                                    "processes": ddp.world})
    if run.resume:
        data_order.set_state(run.resume["data_rng"])
        set_rng_state(run.resume["rng_states"][ddp.rank])

    def save_last() -> None:
        rng_states[:] = ddp.gather(rng_state())
        if ddp.master:
            run.save()
    return save_last


def wrap(model: GPT, args: argparse.Namespace, ddp: Distributed) -> torch.nn.Module:
    """torch.compile and DDP around the model; the raw model is what gets evaluated and saved."""
    if args.compile:
        model = torch.compile(model)
    if ddp.enabled:
        model = DistributedDataParallel(model, device_ids=[ddp.device.index] if ddp.device.type == "cuda" else None)
    return model


def evaluate_and_save(model: GPT, data: TokenData, args: argparse.Namespace, state: dict[str, Any], lr: float,
                      ddp: Distributed, log: Any) -> dict[str, Any]:
    """Estimate both splits' losses into the history (returns the new row); save the model to --checkpoint when
    validation improved."""
    row = {"step": state["step"], "train_loss": estimate_loss(model, data.train, args, ddp.device, 1),
           "val_loss": estimate_loss(model, data.val, args, ddp.device, 2), "lr": lr,
           "tokens_seen": state["tokens_seen"], "elapsed_s": round(state["train_seconds"], 3)}
    state["history"].append(row)
    improved = row["val_loss"] < state["best_val_loss"]
    if improved:
        state.update(best_val_loss=row["val_loss"], best_step=state["step"])
        if ddp.master:
            save_checkpoint(Path(args.checkpoint), {
                **checkpoint_payload(args, model, data.tokenizer),
                "model_state": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                "step": state["step"], "best_val_loss": row["val_loss"], "history": state["history"]})
    log.info(f"step {state['step']:5d}  train loss {row['train_loss']:.4f}  val loss {row['val_loss']:.4f}"
             f"{'  *best*' if improved else ''}  {state['train_seconds'] / 60:.1f} min")
    return row


@torch.no_grad()
def sample_text(model: GPT, tokenizer: Any, dataset: str, device: torch.device) -> str:
    """About SAMPLE_CHARS characters the model writes after its data set's fixed prompt, with a fixed seed (its
    own generator: the training's random numbers are not touched, so --resume stays exact)."""
    prompt = SAMPLE_PROMPTS.get(dataset, "")
    eot = getattr(tokenizer, "eot_id", None)
    ids = tokenizer.encode(prompt) if prompt else [eot] if eot is not None else tokenizer.encode("\n")
    generator = torch.Generator(device=device).manual_seed(SAMPLE_SEED)
    was_training = model.training
    model.eval()
    new: list[int] = []
    for token in model.generate(torch.tensor([ids], device=device), SAMPLE_CHARS, SAMPLE_TEMPERATURE,
                                top_p=SAMPLE_TOP_P, generator=generator, stop_token=eot):
        if int(token[0]) == eot:
            break
        new.append(int(token[0]))
        if len(tokenizer.decode(new)) >= SAMPLE_CHARS:
            break
    model.train(was_training)
    return prompt + tokenizer.decode(new)[:SAMPLE_CHARS]


def plot_history(args: argparse.Namespace, evals: list[dict[str, Any]], path: Path) -> None:
    """curves.png: the estimated train and validation losses, and the learning rate, against the step."""
    plot_curves(evals, path, [["train_loss", "val_loss"], ["lr"]], x="step",
                title=f"GPT on {args.dataset} ({args.tokenizer})")


# ----------------------------------------------------------------------------- the training loop
def main(argv: Sequence[str] | None = None) -> int:
    args = resolve_args(build_parser().parse_args(argv))
    started = time.time()
    set_threads(args.num_threads)
    ddp = Distributed(args.device)
    try:
        return train(args, ddp, started)
    finally:
        ddp.close()


def train(args: argparse.Namespace, ddp: Distributed, started: float) -> int:
    """Set up the data, the model and the run (fresh or resumed), then take optimizer steps to --max_steps."""
    device, out_dir = ddp.device, Path(args.out_dir)
    run = ResumableRun(args, STAGE, MODEL_NAME, out_dir / "last.pt", must_match=RESUME_MUST_MATCH,
                       state={"step": 0, "best_val_loss": math.inf, "best_step": 0, "history": [], "curve": [],
                              "train_seconds": 0.0, "tokens_seen": 0, "speeds": []})
    log = setup_logging(out_dir if ddp.master else None)
    log.disabled = not ddp.master
    init = load_init(args)
    data = load_data(args, ddp, log, init[1] if init else None)
    check_resume(run, ddp, data)
    log.info(f"{args.dataset}: {len(data.train):,} train / {len(data.val):,} val tokens, "
             f"{data.tokenizer.vocab_size:,}-token {type(data.tokenizer).__name__}; run folder {out_dir}")

    set_seed(args.seed + ddp.rank)          # dropout differs per process; the data order does not
    raw_model = build_model(args, data.tokenizer, init, log).to(device)
    optimizer = make_optimizer(raw_model, args, device)
    data_order = torch.Generator().manual_seed(args.seed)
    if run.resume:   # the saved weights must fit the model the flags build (an edited last.pt: one line)
        checked_model(run.last_path, lambda: raw_model, run.resume.get("model_state"))
    save_last = attach(run, raw_model, optimizer, data_order, args, data.tokenizer, ddp)
    state = run.state
    if run.resume:
        if not 0 <= state["step"] <= args.max_steps:
            raise UserError(f"--resume: {run.last_path} says step {state['step']:,}, but the run has only "
                            f"{args.max_steps:,} steps (--max_steps): the file was edited; start a new run with "
                            "--restart")
        log.info(f"resumed at step {state['step']}")
    meter = SpeedMeter(raw_model, args, ddp)
    log.info(f"GPT ({args.attention}, {amp_name(device, args.amp)}) on {hardware(device)}: {meter.describe()}")
    model = wrap(raw_model, args, ddp)

    model.train()
    # the bar, TensorBoard, history.json/curves.png and progress.json: the first process only
    monitor = TrainingMonitor(out_dir, stage=STAGE, model=f"gpt_{args.preset}", dataset=args.dataset, device=device,
                              total_steps=args.max_steps, done_steps=state["step"], unit="tokens", log=log,
                              title=f"GPT on {args.dataset} ({args.tokenizer})", enabled=ddp.master)
    meter.restart()
    with monitor, run:   # from here, Ctrl-C stops the loop after a step and saves last.pt
        while state["step"] < args.max_steps:
            step_start = time.time()
            lr = warmup_cosine(state["step"], args.max_steps, args.warmup_steps, args.lr, args.min_lr)
            for group in optimizer.param_groups:
                group["lr"] = lr
            starts = window_starts(data.train, args, ddp.world, data_order)
            loss = train_step(model, optimizer, data.train, starts, args, ddp)
            state["step"] += 1
            state["tokens_seen"] += meter.tokens_per_step
            state["train_seconds"] += time.time() - step_start
            state["curve"].append([state["step"], round(loss, 6)])
            meter.step()
            monitor.step(loss, items=meter.tokens_per_step, lr=lr)
            last = state["step"] == args.max_steps
            if state["step"] % args.log_interval == 0 or last:
                speed, mfu, ms_per_step = meter.report()
                state["speeds"].append(speed)
                log.info(f"step {state['step']:5d}  loss {loss:.4f}  lr {lr:.2e}  {speed:,.0f} tokens/s  "
                         f"MFU {100 * mfu:.1f}%  {ms_per_step:.0f} ms/step")
            if state["step"] % args.eval_interval == 0 or last:
                with monitor.evaluating():   # not training time: left out of the ETA and tokens/s
                    row = evaluate_and_save(raw_model, data, args, state, lr, ddp, log)
                    save_last()
                    sample = sample_text(raw_model, data.tokenizer, args.dataset, ddp.device) if ddp.master else None
                monitor.evaluated(row, {"evals": state["history"], "curve": state["curve"]}, sample=sample,
                                  plot=lambda path: plot_history(args, state["history"], path))
                meter.restart()
            if ddp.any(run.stop_requested):   # Ctrl-C on any process: every one stops after this step
                save_last()
                monitor.close("interrupted")
                raise TrainingInterrupted(f"saved {run.last_path} at step {state['step']}; run the same command "
                                          "with --resume to continue")

    ddp.check_in_sync(raw_model)
    if ddp.enabled:
        log.info(f"parameters identical on all {ddp.world} processes")
    if ddp.master:
        finish(args, raw_model, state, meter, device, started, log)
    return 0


def finish(args: argparse.Namespace, model: GPT, state: dict[str, Any], meter: SpeedMeter, device: torch.device,
           started: float, log: Any) -> None:
    """history.json, curves.png (already written at every evaluation; again here for a resumed run that had
    nothing left to train) and metrics.json of the run."""
    out_dir = Path(args.out_dir)
    write_json(out_dir / "history.json", {"evals": state["history"], "curve": state["curve"]})
    plot_history(args, state["history"], out_dir / "curves.png")
    tokens_per_s = state["tokens_seen"] / max(state["train_seconds"], 1e-9)
    # steady state: the median logging window after the first (which holds warm-up and any compilation)
    steady = float(np.median(state["speeds"][1:] or state["speeds"] or [tokens_per_s]))
    best = min(state["history"], key=lambda r: r["val_loss"])
    metrics = {"val_loss": best["val_loss"], "best_step": best["step"],
               "final_val_loss": state["history"][-1]["val_loss"],
               "final_train_loss": state["history"][-1]["train_loss"], "steps": state["step"],
               "tokens_seen": state["tokens_seen"], "train_tokens_per_s": tokens_per_s,
               "steady_tokens_per_s": steady, "flops_per_token": meter.flops_per_token,
               "mfu": meter.mfu(tokens_per_s), "steady_mfu": meter.mfu(steady),
               "peak_flops": meter.peak, "peak_source": meter.peak_source,
               "fit_seconds": round(state["train_seconds"], 3), "processes": meter.world}
    write_metrics(out_dir / "metrics.json", stage=STAGE, model=f"gpt_{args.preset}", dataset=args.dataset,
                  split="val", params=meter.params, seconds=time.time() - started, seconds_key="train_seconds",
                  device=device, metrics=metrics,
                  extra={"checkpoint": str(args.checkpoint), "tokenizer": args.tokenizer,
                         "config": model.config.to_dict(), "amp": amp_name(device, args.amp)})
    log.info(f"best val loss {best['val_loss']:.4f} at step {best['step']}; {tokens_per_s:,.0f} tokens/s; "
             f"checkpoint {args.checkpoint}")


if __name__ == "__main__":
    run_main(main)
