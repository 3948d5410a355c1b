"""Train the Transformer on English -> French translation (stage 4), on the same data as stage 3.

    python stage4_transformer/train.py                          # scratch Transformer on Multi30k, default settings
    python stage4_transformer/train.py --preset quick           # a smaller model, 3 epochs: a few minutes on 2 cores
    python stage4_transformer/train.py --impl torch             # the same model built on nn.Transformer
    python stage4_transformer/train.py --no-norm_first          # post-LN, as in the paper (pre-LN is the default)
    python stage4_transformer/train.py --positional learned     # a learned position table instead of sinusoids
    python stage4_transformer/train.py --resume                 # carry on after Ctrl-C
(or, from the stage folder, `python train.py ...`)

A joint English-French BPE vocabulary is learned on the training pairs first (Hugging Face `tokenizers`).
Each step: a batch of about --max_tokens target pieces, the forward pass (bf16 autocast on CUDA and on CPUs
with native bf16), label-smoothed cross-entropy, backward, gradient clipping, AdamW, and the next step's
learning rate (linear warm-up, then a cosine down to a tenth of the peak). After each epoch: validation loss and
greedy BLEU, and the translation of one fixed sentence; the best epoch is kept in checkpoints/best_transformer.pt
(best_transformer_quick.pt for --preset quick), and at the end the average of the last epochs' weights replaces it
if it scores higher. One progress bar covers the whole run; TensorBoard events, history.json and curves.png in the
run folder are refreshed at every epoch (`tensorboard --logdir stage4_transformer/runs`).
"""
from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F

from scripts.checks import CLIP, COUNT, FRACTION, NON_NEGATIVE, POSITIVE_INT, Range, check_args
from scripts.common import (ArgParser, UserError, add_common_args, add_output_args, amp_name, autocast,
                            checkpoint_header, count_params, get_device, run_main, save_checkpoint, set_seed,
                            set_threads, setup_logging, uses_bf16, warmup_cosine, write_metrics, write_text)
from scripts.monitor import TrainingMonitor
from scripts.training import ResumableRun, check_counter
from scripts.translation_data import DATASETS, corpus_scores, load_pairs
from stage4_transformer.data.batches import count_batches, encode_pairs, token_batches
from stage4_transformer.data.subword import BOS_ID, EOS_ID, MAX_PIECES, PAD_ID, UNK_ID, SubwordVocab
from stage4_transformer.models.transformer import Transformer, TransformerConfig, check_torch_impl
from stage4_transformer.translator import (CONFIG_LIMITS, DEFAULT_CHECKPOINT, MAX_POSITIONS, MODEL_NAME, STAGE,
                                           transformer_from_checkpoint, translate_sentences)

STAGE_DIR = Path(__file__).resolve().parent
# good settings per preset (flags left unset take these). "quick" trains a smaller model for a few epochs, so a first
# model translates short sentences after a few minutes on 2 CPU cores (how it was chosen: results/TUNING.md).
# --epochs' default follows the training precision: (float32, bf16 autocast), where an epoch costs about 1.4 times
# less; --layers N sets both depths to N.
PRESETS: dict[str, dict[str, Any]] = {
    "default": dict(epochs=(15, 19), d_model=256, n_heads=4, encoder_layers=2, decoder_layers=3, d_ff=512,
                    dropout=0.1, vocab_size=8000, max_len=100, max_tokens=1024, lr=3e-3, warmup_steps=600,
                    average_last=10),
    # one epoch over the pairs of at most 30 pieces; no dropout: one pass cannot overfit
    "quick": dict(epochs=(1, 1), d_model=256, n_heads=4, encoder_layers=2, decoder_layers=2, d_ff=512,
                  dropout=0.0, vocab_size=8000, max_len=30, max_tokens=1024, lr=3e-3, warmup_steps=150,
                  average_last=0),
}
ENCODER_LAYERS, DECODER_LAYERS = PRESETS["default"]["encoder_layers"], PRESETS["default"]["decoder_layers"]
EPOCHS_FLOAT32, EPOCHS_BF16 = PRESETS["default"]["epochs"]
SAMPLE_SENTENCE = "Two dogs are playing in the snow."   # translated (greedy) at every epoch, to watch the model learn
# flags that decide the data, the model or the schedule: --resume refuses a run saved with other values
RESUME_MUST_MATCH = ("impl", "d_model", "n_heads", "encoder_layers", "decoder_layers", "d_ff", "dropout",
                     "attention_dropout", "activation_dropout", "fast_dropout", "norm_first", "positional",
                     "share_embeddings", "use_sdpa", "vocab_size", "split_punctuation", "max_tokens", "limit",
                     "val_limit", "max_len", "seed", "lr", "warmup_steps", "weight_decay", "clip", "label_smoothing",
                     "average_last")
# the allowed values of the flags (scripts/checks.py); those a preset fills in are checked after it did
MAX_LEN = MAX_POSITIONS // 4        # pieces per sentence; the model's position table gets room to spare
RANGES = {
    "epochs": POSITIVE_INT, "lr": Range(float, lo=0, hi=1, lo_open=True), "max_tokens": Range(int, lo=1, hi=1 << 20),
    "layers": Range(int, lo=1, hi=CONFIG_LIMITS["n_encoder_layers"]),
    "encoder_layers": Range(int, lo=1, hi=CONFIG_LIMITS["n_encoder_layers"]),
    "decoder_layers": Range(int, lo=1, hi=CONFIG_LIMITS["n_decoder_layers"]),
    "d_model": Range(int, lo=2, hi=CONFIG_LIMITS["d_model"]), "n_heads": Range(int, lo=1, hi=CONFIG_LIMITS["n_heads"]),
    "d_ff": Range(int, lo=1, hi=CONFIG_LIMITS["d_ff"]), "dropout": FRACTION, "attention_dropout": FRACTION,
    "activation_dropout": FRACTION, "vocab_size": Range(int, lo=100, hi=MAX_PIECES),
    "max_len": Range(int, lo=1, hi=MAX_LEN), "limit": COUNT, "val_limit": COUNT, "warmup_steps": COUNT,
    "weight_decay": NON_NEGATIVE, "clip": CLIP, "label_smoothing": FRACTION, "average_last": COUNT, "max_steps": COUNT,
}
BOOL = argparse.BooleanOptionalAction
# the numbers each history row (one per finished epoch) holds, which the final report reads
HISTORY_NUMBERS = ("train_loss", "val_loss", "val_bleu", "val_chrf", "tgt_tokens_per_s")


def preset_default(key: str) -> str:
    """How --help states a flag whose default comes from --preset."""
    def shown(value: Any) -> str:
        if isinstance(value, tuple):        # --epochs: (float32, bf16 autocast)
            return f"{value[1]} with bf16 autocast, {value[0]} in float32" if value[0] != value[1] else f"{value[0]}"
        return f"{value:g}"
    return "(default: the preset's: " + "; ".join(f"{name} {shown(p[key])}" for name, p in PRESETS.items()) + ")"


def build_parser() -> argparse.ArgumentParser:
    p = ArgParser(description="Train an English->French Transformer (stage 4).")
    p.add_argument("--preset", default="default", choices=list(PRESETS),
                   help="settings for the flags left unset: default (the stage's main model), quick (2 + 2 layers, "
                        "one epoch: a first model in a few minutes on 2 CPU cores)")
    p.add_argument("--impl", default="scratch", choices=["scratch", "torch"],
                   help="scratch: models/transformer.py; torch: the same model on nn.Transformer")
    p.add_argument("--dataset", default="multi30k", choices=DATASETS, help="sentence pairs to train on")
    p.add_argument("--epochs", type=RANGES["epochs"], default=None,
                   help="passes over the training pairs; an epoch in float32 costs about 1.4 times as much (with "
                        "--resume: the saved run's) " + preset_default("epochs"))
    p.add_argument("--lr", type=RANGES["lr"], default=None,
                   help="peak learning rate: a linear warm-up to it, then a cosine down to a tenth of it "
                        + preset_default("lr"))
    p.add_argument("--max_tokens", "--batch_size", dest="max_tokens", type=RANGES["max_tokens"], default=None,
                   help="batch size, counted in padded target pieces (not sentences) " + preset_default("max_tokens"))
    p.add_argument("--layers", type=RANGES["layers"], default=None,
                   help="encoder and decoder layers (default: --encoder_layers and --decoder_layers)")

    model = p.add_argument_group("model")
    model.add_argument("--d_model", type=RANGES["d_model"], default=None,
                       help="model width " + preset_default("d_model"))
    model.add_argument("--n_heads", type=RANGES["n_heads"], default=None,
                       help="attention heads " + preset_default("n_heads"))
    model.add_argument("--encoder_layers", type=RANGES["encoder_layers"], default=None,
                       help="encoder layers (default: --layers, else the preset's: "
                            + "; ".join(f"{name} {p['encoder_layers']}" for name, p in PRESETS.items()) + ")")
    model.add_argument("--decoder_layers", type=RANGES["decoder_layers"], default=None,
                       help="decoder layers (default: --layers, else the preset's: "
                            + "; ".join(f"{name} {p['decoder_layers']}" for name, p in PRESETS.items()) + ")")
    model.add_argument("--d_ff", type=RANGES["d_ff"], default=None,
                       help="feed-forward inner width " + preset_default("d_ff"))
    model.add_argument("--norm_first", action=BOOL, default=True,
                       help="pre-LN, x + F(LN(x)); --no-norm_first: post-LN, LN(x + F(x)), as in the paper")
    model.add_argument("--positional", default="sinusoidal", choices=["sinusoidal", "learned"],
                       help="position encoding")
    model.add_argument("--share_embeddings", action=BOOL, default=True,
                       help="source, target and output share one matrix; --no-share_embeddings: the source gets its "
                            "own (target and output stay tied)")
    model.add_argument("--use_sdpa", action=BOOL, default=False,
                       help="scratch attention through the fused F.scaled_dot_product_attention instead of the "
                            "written-out softmax the notes explain")
    model.add_argument("--dropout", type=RANGES["dropout"], default=None,
                       help="dropout on sublayer outputs and embeddings, the "
                       "paper's places (with --impl torch also on attention weights and after the feed-forward ReLU) "
                       + preset_default("dropout"))
    model.add_argument("--attention_dropout", type=RANGES["attention_dropout"], default=None,
                       help="dropout on attention weights "
                       "(default: 0 with --impl scratch, as in the paper; --dropout with --impl torch)")
    model.add_argument("--activation_dropout", type=RANGES["activation_dropout"], default=None,
                       help="dropout after the feed-forward ReLU "
                       "(default: 0 with --impl scratch, as in the paper; --dropout with --impl torch)")
    model.add_argument("--fast_dropout", action=BOOL, default=None,
                       help="dropout masks from random bytes, much faster than torch's Bernoulli sampling on a CPU "
                            "(default: on with --impl scratch; off with --impl torch, which draws its own masks)")

    data = p.add_argument_group("data")
    data.add_argument("--vocab_size", type=RANGES["vocab_size"], default=None,
                      help="joint BPE vocabulary size " + preset_default("vocab_size"))
    data.add_argument("--split_punctuation", action=BOOL, default=True,
                      help="each punctuation mark is a word of its own before BPE learns its merges ('▁neige.' -> "
                           "'▁neige', '.'); --no-split_punctuation: split at spaces only")
    data.add_argument("--max_len", type=RANGES["max_len"], default=None,
                      help="drop training pairs longer than this many pieces " + preset_default("max_len"))
    data.add_argument("--limit", type=RANGES["limit"], default=0,
                      help="use only the first N training pairs (0: all)")
    data.add_argument("--val_limit", type=RANGES["val_limit"], default=0,
                      help="score only the first N validation pairs (0: all)")

    training = p.add_argument_group("training")
    training.add_argument("--warmup_steps", type=RANGES["warmup_steps"], default=None,
                          help="linear warm-up steps " + preset_default("warmup_steps"))
    training.add_argument("--weight_decay", type=RANGES["weight_decay"], default=0.1,
                          help="AdamW decoupled weight decay")
    training.add_argument("--clip", type=RANGES["clip"], default=1.0, help="clip the gradient norm to this (0: off)")
    training.add_argument("--label_smoothing", type=RANGES["label_smoothing"], default=0.1,
                          help="label smoothing of the cross-entropy")
    training.add_argument("--average_last", type=RANGES["average_last"], default=None,
                          help="average the weights of the last N epochs, as the paper does (0 or 1: off); the "
                               "average is kept if its validation BLEU beats the best single epoch "
                               + preset_default("average_last"))
    training.add_argument("--amp", action=BOOL, default=True,
                          help="bf16 autocast on CUDA and on CPUs with native bf16 (AMX, AVX512-BF16); "
                               "--no-amp: float32")
    training.add_argument("--max_steps", type=RANGES["max_steps"], default=0,
                          help="stop after this many steps (0: no limit)")

    add_output_args(p, "where the best model is saved (default: checkpoints/best_transformer.pt in "
                        "the stage folder; best_transformer_quick.pt with --preset quick)",
                       "run folder: log, history, curves, TensorBoard events, metrics.json, last.pt "
                        "(default: runs/transformer_<impl>_<dataset> in the stage folder, with _quick at the end "
                        "for --preset quick)")
    add_common_args(p, seed_help="seed for initialisation, data order and dropout")
    return p


def resolve_args(args: argparse.Namespace) -> argparse.Namespace:
    """Refuse bad values (before any data loads) and fill in the defaults that depend on other flags (the preset's
    values for the flags left unset; --epochs only once the device is known, in main())."""
    preset = PRESETS[args.preset]
    for name in ("encoder_layers", "decoder_layers"):
        if getattr(args, name) is None:     # each: its own flag, else --layers, else the preset's depth
            setattr(args, name, args.layers if args.layers is not None else preset[name])
    for name, value in preset.items():
        if name != "epochs" and getattr(args, name) is None:
            setattr(args, name, value)
    check_args(args, **RANGES)      # the preset's values too (a preset edited into nonsense is caught here)
    if args.impl == "torch":
        try:
            check_torch_impl(args.dropout, args.attention_dropout, args.activation_dropout)
        except ValueError as err:
            raise UserError(str(err)) from None
        if args.fast_dropout:
            raise UserError("--fast_dropout needs --impl scratch (nn.Transformer draws its own dropout masks)")
    for flag in ("attention_dropout", "activation_dropout"):    # scratch: the paper's places only
        if getattr(args, flag) is None:
            setattr(args, flag, 0.0 if args.impl == "scratch" else args.dropout)
    if args.fast_dropout is None:
        args.fast_dropout = args.impl == "scratch"
    if args.d_model % args.n_heads:
        raise UserError(f"--d_model {args.d_model} must be divisible by --n_heads {args.n_heads}")
    if args.positional == "sinusoidal" and args.d_model % 2:
        raise UserError(f"--d_model {args.d_model} must be even for --positional sinusoidal (sines and cosines pair "
                        "up); use an even width or --positional learned")
    if args.lr * args.weight_decay >= 1:
        raise UserError(f"--lr {args.lr:g} times --weight_decay {args.weight_decay:g} must be below 1 (each step "
                        "shrinks the weights by this share: at 1 or more it flips their sign); lower one of them")
    suffix = "" if args.preset == "default" else f"_{args.preset}"
    args.checkpoint = args.checkpoint or str(DEFAULT_CHECKPOINT.with_name(f"{DEFAULT_CHECKPOINT.stem}{suffix}.pt"))
    args.out_dir = args.out_dir or str(STAGE_DIR / "runs" / f"transformer_{args.impl}_{args.dataset}{suffix}")
    return args


def default_epochs(device: torch.device, amp: bool, preset: str = "default") -> int:
    """--epochs' default: more epochs where bf16 autocast makes each one cheaper, for about the same training time."""
    float32, bf16 = PRESETS[preset]["epochs"]
    return bf16 if uses_bf16(device, amp) else float32


# ----------------------------------------------------------------------------- data and model
@dataclass
class Data:
    vocab: SubwordVocab
    train: list             # (source ids + <eos>, target ids + <eos>) of the training pairs that fit --max_len
    valid: list             # the same for the validation pairs (for the loss)
    valid_pairs: list       # the validation pairs as text (for BLEU against the raw references)


def load_data(args: argparse.Namespace, vocab: SubwordVocab | None, log: Any) -> Data:
    """The pairs, and the joint BPE vocabulary learned on the training pairs (unless a resumed run brings its own)."""
    tick = time.time()
    train_pairs = load_pairs(args.dataset, "train", args.data_dir)[: args.limit or None]
    valid_pairs = load_pairs(args.dataset, "valid", args.data_dir)[: args.val_limit or None]
    if vocab is None:
        vocab = SubwordVocab.train((text for pair in train_pairs for text in pair), args.vocab_size,
                                   split_punctuation=args.split_punctuation)
    train = encode_pairs(train_pairs, vocab, args.max_len)
    if not train:
        raise UserError(f"no training pairs left (of {len(train_pairs):,}) after --limit/--max_len; loosen them")
    log.info(f"{args.dataset}: {len(train):,} training pairs (of {len(train_pairs):,}), {len(valid_pairs):,} "
             f"validation; joint BPE vocabulary {len(vocab):,} pieces ({time.time() - tick:.1f} s); "
             f"run folder {args.out_dir}")
    # the validation loss skips a pair too long for the model's position table (BLEU still translates it, cut short)
    return Data(vocab, train, encode_pairs(valid_pairs, vocab, model_max_len(args) - 1), valid_pairs)


def model_max_len(args: argparse.Namespace) -> int:
    """The positions the model has room for: the longest training pair, <eos> and <bos> included, and at least 258."""
    return max(args.max_len, 256) + 2


def target_pieces(examples: list) -> list[int]:
    """The specials and every piece id on the target side of the training pairs, ascending: the pieces the softmax
    covers (a joint vocabulary's English-only pieces are never a right answer, and each costs an output column)."""
    return sorted({PAD_ID, UNK_ID, BOS_ID, EOS_ID}.union(*(target for _, target in examples)))


def build_config(args: argparse.Namespace, data: Data) -> TransformerConfig:
    return TransformerConfig(
        src_vocab_size=len(data.vocab), tgt_vocab_size=len(data.vocab), d_model=args.d_model, n_heads=args.n_heads,
        n_encoder_layers=args.encoder_layers, n_decoder_layers=args.decoder_layers, d_ff=args.d_ff,
        dropout=args.dropout, attention_dropout=args.attention_dropout, activation_dropout=args.activation_dropout,
        max_len=model_max_len(args), norm_first=args.norm_first, positional=args.positional,
        share_embeddings=args.share_embeddings, impl=args.impl, use_sdpa=args.use_sdpa,
        fast_dropout=args.fast_dropout, output_ids=target_pieces(data.train))


def build_model(build: Any) -> Transformer:
    """`build()`, or one line when the model does not fit in memory (torch says so with a RuntimeError)."""
    try:
        return build()
    except RuntimeError as err:
        if "alloc" not in str(err):
            raise
        raise UserError("not enough memory for a model this large; lower --d_model, --d_ff, --layers or --vocab_size, "
                        "or train on a device with more memory") from None


def model_payload(args: argparse.Namespace, model: Transformer, vocab: SubwordVocab) -> dict[str, Any]:
    """What every checkpoint of this program says about its model: header, config, data set, vocabulary, flags."""
    return {**checkpoint_header(STAGE, MODEL_NAME), "config": model.config.to_dict(), "dataset": args.dataset,
            "vocab": vocab.to_json(), "args": vars(args)}


def save_model(path: Path, args: argparse.Namespace, model: Transformer, vocab: SubwordVocab, **extra: Any) -> None:
    """The best model so far, and beside it its vocabulary as the tokenizer's JSON (each written whole or not at all:
    a crash or a full disk leaves the previous pair in place)."""
    weights = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    save_checkpoint(path, {**model_payload(args, model, vocab), "model_state": weights, **extra})
    write_text(tokenizer_path(path), vocab.to_json())


def tokenizer_path(checkpoint: str | Path) -> Path:
    """Where the best model's vocabulary goes: beside it, as <name>.tokenizer.json (never a run folder's file)."""
    return Path(checkpoint).with_suffix(".tokenizer.json")


def check_tokenizer_path(args: argparse.Namespace) -> None:
    """The vocabulary file beside --checkpoint must be a file that can be replaced, checked before any work: a folder
    there (the run folder itself, say) would stop the run at its first best epoch."""
    path = tokenizer_path(args.checkpoint)
    if path.is_dir() or path.absolute() == Path(args.out_dir).absolute():
        raise UserError(f"--checkpoint {args.checkpoint}: its vocabulary goes beside it to {path}, which is a folder"
                        " (or --out_dir); give another --checkpoint name")


# ----------------------------------------------------------------------------- loss and validation
def sequence_loss(logits: torch.Tensor, targets: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """Mean cross-entropy per real target piece (padding ignored), computed in float32."""
    return F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), ignore_index=PAD_ID,
                           label_smoothing=label_smoothing)


def batch_loss(model: Transformer, src: torch.Tensor, tgt_in: torch.Tensor, tgt_out: torch.Tensor,
               device: torch.device, amp: bool, label_smoothing: float = 0.0) -> torch.Tensor:
    """One batch's loss: the forward pass (under autocast when amp), the labels moved to the softmax's columns
    (`Transformer.output_targets`), then `sequence_loss`."""
    with autocast(device, amp):
        logits = model(src, tgt_in)
    return sequence_loss(logits, model.output_targets(tgt_out), label_smoothing)


@torch.no_grad()
def validate(model: Transformer, examples: list, pairs: list, vocab: SubwordVocab, device: torch.device,
             amp: bool) -> dict[str, float]:
    """Validation loss (no smoothing) and greedy BLEU against the raw references."""
    model.eval()
    total, count = 0.0, 0
    for batch in token_batches(examples, 8192, shuffle=False):
        batch = batch.to(device)
        total += batch_loss(model, batch.src, batch.tgt_in, batch.tgt_out, device, amp).item() * batch.target_tokens
        count += batch.target_tokens
    with autocast(device, amp):
        hypotheses = translate_sentences(model, vocab, [s for s, _ in pairs], device, batch_size=256)
    scores = corpus_scores(hypotheses, [t for _, t in pairs])
    model.train()
    return {"val_loss": total / max(count, 1), "val_bleu": scores["bleu"], "val_chrf": scores["chrf"]}


# ----------------------------------------------------------------------------- training
def train_epoch(args: argparse.Namespace, model: Transformer, optimizer: torch.optim.Optimizer, run: ResumableRun,
                monitor: TrainingMonitor, examples: list, total_steps: int, device: torch.device) -> tuple[int, float]:
    """One pass over the training pairs, from the batch a resumed run stopped at; returns (target pieces, seconds)."""
    state = run.state
    epoch = state["epoch"] + 1
    tokens, tick, seconds_before = 0, time.time(), state["train_seconds"]
    for batch in token_batches(examples, args.max_tokens, True, args.seed, epoch, state["batch_in_epoch"]):
        lr = warmup_cosine(state["global_step"], total_steps, args.warmup_steps, args.lr, args.lr / 10)
        for group in optimizer.param_groups:
            group["lr"] = lr
        batch = batch.to(device)
        loss = batch_loss(model, batch.src, batch.tgt_in, batch.tgt_out, device, args.amp, args.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if args.clip:       # --clip 0: off
            torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip)
        optimizer.step()

        tokens += batch.target_tokens
        state["epoch_loss_sum"] += loss.item() * batch.target_tokens
        state["epoch_tokens"] += batch.target_tokens
        state["batch_in_epoch"] += 1
        state["global_step"] += 1
        state["train_seconds"] = seconds_before + time.time() - tick
        monitor.step(loss.item(), items=batch.target_tokens, epoch=f"{epoch}/{args.epochs}", lr=lr)
        run.step_done(f"epoch {epoch}, batch {state['batch_in_epoch']}")   # after Ctrl-C: save last.pt, exit 130
        if args.max_steps and state["global_step"] >= args.max_steps:
            break
    return tokens, time.time() - tick


class WeightAverage:
    """The paper's checkpoint averaging: a running float32 sum, on the CPU, of the weights at the end of each of
    the last --average_last epochs (kept in last.pt, so --resume carries it on)."""

    def __init__(self, saved: dict[str, Any] | None = None) -> None:
        self.sum: dict[str, torch.Tensor] = saved["weight_sum"] if saved else {}
        self.count: int = saved["weight_count"] if saved else 0

    def add(self, model: torch.nn.Module) -> None:
        for name, value in model.state_dict().items():
            value = value.detach().float().cpu()
            self.sum[name] = self.sum[name] + value if name in self.sum else value.clone()
        self.count += 1

    def mean(self, device: torch.device) -> dict[str, torch.Tensor]:
        return {name: (total / self.count).to(device) for name, total in self.sum.items()}

    def state(self) -> dict[str, Any]:
        return {"weight_sum": self.sum, "weight_count": self.count}


def resumed_average(run: ResumableRun, model: torch.nn.Module) -> WeightAverage:
    """The running sum of weights last.pt carries on (an empty one for a fresh run), checked against the model
    (an edited file ends in one line now, not in a traceback at the last epoch)."""
    if not run.resume:
        return WeightAverage()
    total, count = run.resume.get("weight_sum"), run.resume.get("weight_count")
    check_counter(run.last_path, "weight_count", count, 0)
    shapes = {name: value.shape for name, value in model.state_dict().items()}
    fits = isinstance(total, dict) and all(isinstance(v, torch.Tensor) and v.is_floating_point()
                                           for v in total.values())
    if not fits or (count and {k: v.shape for k, v in total.items()} != shapes) or (not count and total):
        raise UserError(f"--resume: {run.last_path}: its weight_sum (the running sum for --average_last) does not "
                        "fit the model (the file was edited); start a new run with another --out_dir")
    return WeightAverage(run.resume)


def try_average(args: argparse.Namespace, model: Transformer, data: Data, run: ResumableRun, average: WeightAverage,
                device: torch.device, log: Any) -> None:
    """Score the mean of the last epochs' weights on validation like an epoch; keep it as the best model if better."""
    state, last_epoch = run.state, {k: v.detach().clone() for k, v in model.state_dict().items()}
    model.load_state_dict(average.mean(device))
    scores = validate(model, data.valid, data.valid_pairs, data.vocab, device, args.amp)
    epochs = list(range(args.epochs - average.count + 1, args.epochs + 1))
    improved = scores["val_bleu"] > state["best_val_bleu"]
    state["averaged"] = {"epochs": epochs, **scores, "kept": improved}
    if improved:
        state.update(best_val_bleu=scores["val_bleu"], best_epoch=args.epochs)
        save_model(Path(args.checkpoint), args, model, data.vocab, epoch=args.epochs, averaged_epochs=epochs,
                   best_val_bleu=scores["val_bleu"], val_loss=scores["val_loss"], history=state["history"])
    model.load_state_dict(last_epoch)   # last.pt keeps the last epoch's own weights, so a longer --resume goes on
    log.info(f"average of epochs {epochs[0]}-{epochs[-1]}: val loss {scores['val_loss']:.3f}  val BLEU "
             f"{scores['val_bleu']:.2f} (greedy){'  *best*, kept' if improved else ', not better: not kept'}")


@torch.no_grad()
def sample_translation(model: Transformer, vocab: SubwordVocab, device: torch.device, amp: bool) -> str:
    """SAMPLE_SENTENCE translated greedily by the model as it is now (no random numbers drawn: --resume stays exact)."""
    with autocast(device, amp):
        french = translate_sentences(model, vocab, [SAMPLE_SENTENCE], device)[0]
    model.train()
    return f"en: {SAMPLE_SENTENCE}\nfr: {french}"


def report(args: argparse.Namespace, model: Transformer, data: Data, run: ResumableRun, seconds: float,
           device: torch.device, log: Any) -> None:
    """metrics.json (the best epoch, or the average if it was kept) in the run folder; the monitor has written
    history.json and curves.png at every epoch."""
    history, averaged, out_dir = run.state["history"], run.state["averaged"], Path(args.out_dir)
    best = max(history, key=lambda r: r["val_bleu"])
    if averaged.get("kept"):
        best = {**averaged, "epoch": f"average of {averaged['epochs'][0]}-{averaged['epochs'][-1]}"}
    write_metrics(out_dir / "metrics.json", stage=STAGE, model=f"transformer_{args.impl}", dataset=args.dataset,
                  split="valid", params=count_params(model), seconds=seconds, seconds_key="train_seconds",
                  device=device,
                  metrics={"val_bleu_greedy": best["val_bleu"], "val_chrf_greedy": best["val_chrf"],
                           "val_loss": best["val_loss"], "best_epoch": best["epoch"], "epochs_run": len(history),
                           "train_tgt_tokens_per_s": sum(r["tgt_tokens_per_s"] for r in history) / len(history),
                           "fit_seconds": round(run.state["train_seconds"], 3),
                           "averaged_val_bleu": averaged.get("val_bleu"), "averaged_epochs": averaged.get("epochs")},
                  extra={"checkpoint": args.checkpoint, "train_pairs": len(data.train),
                         "amp": amp_name(device, args.amp)})
    log.info(f"best val BLEU {best['val_bleu']:.2f} (greedy) at epoch {best['epoch']}; checkpoint {args.checkpoint}")


def main(argv: Sequence[str] | None = None) -> int:
    args = resolve_args(build_parser().parse_args(argv))
    check_tokenizer_path(args)
    started = time.time()
    set_threads(args.num_threads)
    device = get_device(args.device)
    run = ResumableRun(args, STAGE, MODEL_NAME, Path(args.out_dir) / "last.pt", must_match=RESUME_MUST_MATCH,
                       state={"epoch": 0, "batch_in_epoch": 0, "global_step": 0, "epoch_loss_sum": 0.0,
                              "epoch_tokens": 0, "train_seconds": 0.0, "best_val_bleu": -1.0, "best_epoch": 0,
                              "history": [], "averaged": {}})
    resumed_model, vocab = transformer_from_checkpoint(run.last_path, run.resume) if run.resume else (None, None)
    if run.resume:      # a resumed run keeps its own length (so its schedule) and adds to its own wall time
        args.epochs = args.epochs or saved_number(run, ("args", "epochs"), POSITIVE_INT)
        started -= saved_number(run, ("wall_seconds",), Range(float, lo=0))
    args.epochs = args.epochs or default_epochs(device, args.amp, args.preset)
    if run.resume:
        check_resumed_counters(run, args)      # before the run folder's train.log is touched
    log = setup_logging(Path(args.out_dir))
    data = load_data(args, vocab, log)

    set_seed(args.seed)
    model = build_model(lambda: (resumed_model or Transformer(build_config(args, data))).to(device))
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.98), weight_decay=args.weight_decay)
    average = resumed_average(run, model)
    run.attach(model, optimizer, payload=lambda: model_payload(args, model, data.vocab),
               extra_state=lambda: {"wall_seconds": time.time() - started, **average.state()})
    state, config = run.state, model.config
    log.info(f"Transformer ({config.impl}): {count_params(model):,} parameters, {config}; softmax over "
             f"{len(config.output_ids):,} target-side pieces; {amp_name(device, args.amp)}; {args.epochs} epochs"
             + (f" (preset {args.preset})" if args.preset != "default" else "")
             + (f"; resumed at epoch {state['epoch'] + 1}, batch {state['batch_in_epoch']}" if run.resume else ""))
    Path(args.checkpoint).parent.mkdir(parents=True, exist_ok=True)    # a path that cannot be written: fail now

    steps_per_epoch = count_batches(data.train, args.max_tokens)
    if run.resume:
        check_resumed_position(run, steps_per_epoch)
    total_steps = args.epochs * steps_per_epoch    # the schedule's length (--max_steps shortens it)
    total_steps = min(total_steps, args.max_steps or total_steps)
    if args.warmup_steps > total_steps:     # allowed (a smoke test's few steps), but never silently
        log.info(f"note: --warmup_steps {args.warmup_steps} is longer than this run's {total_steps:,} steps: the "
                 f"learning rate peaks at {total_steps / args.warmup_steps:.0%} of --lr; lower --warmup_steps "
                 "for a real run")
    # the model and data set named as metrics.json names them, so `scripts/reference.py compare` can read either
    monitor = TrainingMonitor(args.out_dir, stage=STAGE, model=f"transformer_{args.impl}", dataset=args.dataset,
                              device=device, total_steps=total_steps, done_steps=state["global_step"],
                              unit="tgt_tokens", title=f"Transformer ({args.impl}) on {args.dataset}", log=log)
    model.train()
    with run, monitor:      # the monitor marks the run finished, interrupted (Ctrl-C) or failed
        train_loop(args, model, optimizer, data, run, monitor, average, total_steps, device, started, log)

    if not state["history"]:
        raise UserError(f"this run finished no epoch (it stopped at step {state['global_step']}); nothing to report")
    seconds = time.time() - started
    run.save()      # last.pt carries the wall time this report states, so a resumed run's total adds on to it
    report(args, model, data, run, seconds, device, log)
    return 0


def check_resumed_counters(run: ResumableRun, args: argparse.Namespace) -> None:
    """last.pt's counters must describe a run that can go on: one history row per finished epoch, the step count
    they add up to, an optimizer that has Adam's moments once a step was taken, and something left to train. An
    edited file (or a --resume with a lower --epochs/--max_steps) is refused in one line, not trained wrongly."""
    saved, where = run.resume, f"--resume: {run.last_path}"
    for key, start in run.state.items():     # the kinds first (a fresh run's), as ResumableRun.attach checks them
        check_counter(run.last_path, key, saved.get(key), start)
    epoch, batch, step, history = (saved["epoch"], saved["batch_in_epoch"], saved["global_step"],
                                   saved["history"])
    rows_fit = all(isinstance(row, dict) and row.get("epoch") == i + 1 and type(row.get("steps")) is int
                   and all(isinstance(row.get(k), (int, float)) for k in HISTORY_NUMBERS)
                   for i, row in enumerate(history))
    if not rows_fit:
        raise UserError(f"{where}: its history is not one row of numbers per finished epoch (the file was edited); "
                        "start a new run with another --out_dir")
    if epoch != len(history):
        raise UserError(f"{where}: epoch {epoch} does not match its history of {len(history)} finished epochs (the "
                        "file was edited); start a new run with another --out_dir")
    if step != (history[-1]["steps"] if history else 0) + batch:
        raise UserError(f"{where}: global_step {step:,} is not the steps of its finished epochs plus batch_in_epoch "
                        f"{batch:,} (the file was edited); start a new run with another --out_dir")
    optimizer = saved.get("optimizer_state")
    if step and isinstance(optimizer, dict) and not optimizer.get("state"):
        raise UserError(f"{where}: its optimizer state is empty after {step:,} steps (the file was edited; resuming "
                        "would restart Adam's averages); start a new run with another --out_dir")
    for flag, what, done, total in (("--epochs", "epoch", epoch, args.epochs),
                                    ("--max_steps", "step", step, args.max_steps)):
        if total and done > total:
            raise UserError(f"{where}: the run is at {what} {done:,}, past {flag} {total:,} (the file was "
                            f"edited, or {flag} was lowered); give the run's own {flag} or more")
    # a run stopped between its last epoch and the average of its last epochs' weights still has that to do
    count = saved.get("weight_count")
    averaging_left = args.average_last > 1 and isinstance(count, int) and count > 1 and not saved["averaged"]
    if (epoch == args.epochs and not averaging_left) or (args.max_steps and step == args.max_steps):
        raise UserError(f"{where}: the run already finished (epoch {epoch} of {args.epochs}, step {step:,}): "
                        "nothing left to train; raise --epochs or --max_steps to train on")


def check_resumed_position(run: ResumableRun, steps_per_epoch: int) -> None:
    """Where last.pt says the run stopped must lie within the epochs' batches (known once the data is loaded)."""
    state, where = run.state, f"--resume: {run.last_path}"
    if state["batch_in_epoch"] > steps_per_epoch:
        raise UserError(f"{where}: batch_in_epoch {state['batch_in_epoch']:,} is past the {steps_per_epoch:,} batches "
                        "of an epoch (the file was edited); start a new run with another --out_dir")
    most = state["epoch"] * steps_per_epoch + state["batch_in_epoch"]
    if state["global_step"] > most:
        raise UserError(f"{where}: global_step {state['global_step']:,} is more than {state['epoch']} epochs of "
                        f"{steps_per_epoch:,} batches hold (the file was edited); start a new run with another "
                        "--out_dir")


def saved_number(run: ResumableRun, keys: tuple[str, ...], allowed: Range) -> Any:
    """A number last.pt holds (run.resume[keys[0]][keys[1]]...), checked: an edited file ends in one line."""
    value: Any = run.resume
    for key in keys:
        value = value.get(key) if isinstance(value, dict) else None
    try:
        return allowed.check(value, "/".join(keys))
    except UserError as err:
        raise UserError(f"--resume: {run.last_path}: {err}; start a new run with another --out_dir") from None


def train_loop(args: argparse.Namespace, model: Transformer, optimizer: torch.optim.Optimizer, data: Data,
               run: ResumableRun, monitor: TrainingMonitor, average: WeightAverage, total_steps: int,
               device: torch.device, started: float, log: Any) -> None:
    """The epochs still to run: train, then validate, keep the best model, save last.pt; at the end the average."""
    state = run.state
    while state["epoch"] < args.epochs and not (args.max_steps and state["global_step"] >= args.max_steps):
        epoch = state["epoch"] + 1
        tokens, seconds = train_epoch(args, model, optimizer, run, monitor, data.train, total_steps, device)
        with monitor.evaluating():      # validation and checkpoints: left out of the bar's ETA and throughput
            tick = time.time()
            scores = validate(model, data.valid, data.valid_pairs, data.vocab, device, args.amp)
            row = {"epoch": epoch, "steps": state["global_step"],
                   "train_loss": state["epoch_loss_sum"] / max(state["epoch_tokens"], 1), **scores,
                   "tgt_tokens_per_s": tokens / max(seconds, 1e-9), "lr": optimizer.param_groups[0]["lr"],
                   "elapsed_s": state["train_seconds"], "val_seconds": time.time() - tick}
            state["history"].append(row)
            state.update(epoch=epoch, batch_in_epoch=0, epoch_loss_sum=0.0, epoch_tokens=0)
            improved = scores["val_bleu"] > state["best_val_bleu"]
            if improved:
                state.update(best_val_bleu=scores["val_bleu"], best_epoch=epoch)
                save_model(Path(args.checkpoint), args, model, data.vocab, epoch=epoch,
                           best_val_bleu=scores["val_bleu"], val_loss=scores["val_loss"], history=state["history"])
            log.info(f"epoch {epoch:2d}  train loss {row['train_loss']:.3f}  val loss {scores['val_loss']:.3f}  "
                     f"val BLEU {scores['val_bleu']:.2f} (greedy){'  *best*' if improved else ''}  "
                     f"{row['tgt_tokens_per_s']:,.0f} target tokens/s  {(time.time() - started) / 60:.1f} min")
            if epoch > args.epochs - args.average_last:
                average.add(model)
            sample = sample_translation(model, data.vocab, device, args.amp)
            run.save()
        monitor.evaluated(row, state["history"], panels=[["train_loss", "val_loss"], ["val_bleu"], ["lr"],
                                                         ["tgt_tokens_per_s"]], sample=sample)
    if args.average_last > 1 and state["epoch"] == args.epochs and average.count > 1 and not state["averaged"]:
        with monitor.evaluating():
            try_average(args, model, data, run, average, device, log)
            run.save()


if __name__ == "__main__":
    run_main(main)
