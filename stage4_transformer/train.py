"""Train the Transformer on English -> French translation (stage 4), on the same data as stage 3.

    python train.py                                   # scratch Transformer on Multi30k, the default settings
    python train.py --impl torch                      # the same model built on nn.Transformer
    python train.py --norm_first 0                    # post-LN, as in the paper (pre-LN is the default)
    python train.py --schedule inverse_sqrt           # the paper's warm-up + 1/sqrt(step), not cosine
    python train.py --bpe_dropout 0.1                 # BPE-dropout: the training pairs re-segmented each epoch
    python train.py --resume                          # carry on after Ctrl-C

A joint English-French BPE vocabulary is trained on the training pairs first (Hugging Face `tokenizers`).
Label-smoothed cross-entropy, warm-up then cosine (or the paper's 1/sqrt(step)), gradient clipping, bf16
autocast on CUDA and on CPUs with native bf16, BLEU on the validation set after each epoch; the best epoch is kept in
checkpoints/best_transformer.pt.
"""
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # bootstrap: find the repo's packages

import argparse  # noqa: E402
import math  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, Callable, Sequence  # noqa: E402

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from tqdm import tqdm  # noqa: E402

from scripts.common import (ArgParser, StopOnInterrupt, UserError, add_common_args, amp_name,  # noqa: E402
                            autocast, check_positive, checkpoint_header, count_params, get_device, load_resume,
                            rng_state, run_main, save_checkpoint, set_rng_state, set_seed, set_threads,
                            setup_logging, uses_bf16, write_json, write_metrics)
from scripts.plots import plot_curves  # noqa: E402
from scripts.translation_data import DATASETS, corpus_scores, load_pairs  # noqa: E402
from stage4_transformer.data.batches import BpeDropout, count_batches, encode_pairs, token_batches  # noqa: E402
from stage4_transformer.data.subword import BOS_ID, EOS_ID, PAD_ID, UNK_ID, SubwordVocab, pre_tokenizer  # noqa: E402
from stage4_transformer.models.transformer import Transformer, TransformerConfig, check_torch_impl  # noqa: E402
from stage4_transformer.translator import MODEL_NAME, STAGE, translate_sentences  # noqa: E402

STAGE_DIR = Path(__file__).resolve().parent
ENCODER_LAYERS, DECODER_LAYERS = 2, 3   # the default depth (--layers N sets both to N)
EPOCHS_FLOAT32, EPOCHS_BF16 = 15, 19     # --epochs' default in float32 and with bf16 autocast (see its help)
RESUME_MUST_MATCH = ("impl", "d_model", "n_heads", "encoder_layers", "decoder_layers", "d_ff", "dropout",
                     "attention_dropout", "activation_dropout", "fast_dropout", "norm_first", "norm", "fix_norm",
                     "positional", "vocab_size", "split_punctuation", "join_elisions", "bpe_dropout", "max_tokens",
                     "limit", "max_len", "seed", "lr", "warmup_steps", "schedule", "decay_vectors", "average_last",
                     "word_dropout", "target_word_dropout", "output_vocab")


def build_parser() -> argparse.ArgumentParser:
    p = ArgParser(description="Train an English->French Transformer (stage 4).")
    p.add_argument("--dataset", default="multi30k", choices=DATASETS, help="sentence pairs to train on")
    p.add_argument("--impl", default="scratch", choices=["scratch", "torch"],
                   help="scratch: models/transformer.py; torch: the same model on nn.Transformer")
    p.add_argument("--d_model", type=int, default=256, help="model width")
    p.add_argument("--n_heads", type=int, default=4, help="attention heads")
    p.add_argument("--layers", type=int, default=None, help="encoder and decoder layers (default: "
                   f"{ENCODER_LAYERS} encoder, {DECODER_LAYERS} decoder layers)")
    p.add_argument("--encoder_layers", type=int, default=None,
                   help=f"encoder layers (default: --layers, else {ENCODER_LAYERS})")
    p.add_argument("--decoder_layers", type=int, default=None,
                   help=f"decoder layers (default: --layers, else {DECODER_LAYERS}: the third decoder layer fixed "
                        "dropped halves of long sentences, README round 14)")
    p.add_argument("--d_ff", type=int, default=512, help="feed-forward inner width")
    p.add_argument("--dropout", type=float, default=0.1, help="dropout on sublayer outputs and embeddings, the "
                   "paper's places (with --impl torch also on attention weights and after the feed-forward ReLU)")
    p.add_argument("--attention_dropout", type=float, default=None, help="dropout on attention weights "
                   "(default: 0 with --impl scratch, as in the paper; --dropout with --impl torch)")
    p.add_argument("--activation_dropout", type=float, default=None, help="dropout after the feed-forward ReLU "
                   "(default: 0 with --impl scratch, as in the paper; --dropout with --impl torch)")
    p.add_argument("--fast_dropout", type=int, choices=[0, 1], default=None, help="1: dropout masks from random "
                   "bytes on the CPU, much faster than torch's Bernoulli sampling there (default: 1 with --impl "
                   "scratch, 0 with --impl torch, which draws its own masks)")
    p.add_argument("--norm_first", type=int, choices=[0, 1], default=1, help="1: pre-LN; 0: post-LN (the paper)")
    p.add_argument("--norm", default="layer", choices=["layer", "scale"],
                   help="layer: LayerNorm; scale: ScaleNorm, g * x / ||x|| with one learned g (scratch only)")
    p.add_argument("--fix_norm", type=int, choices=[0, 1], default=0,
                   help="1: embedding rows are used at unit length, as inputs and as output weights (scratch only)")
    p.add_argument("--positional", default="sinusoidal", choices=["sinusoidal", "learned"], help="position encoding")
    p.add_argument("--share_embeddings", type=int, choices=[0, 1], default=1,
                   help="1: source, target and output share one matrix; 0: the source gets its own "
                        "(target and output stay tied)")
    p.add_argument("--use_sdpa", type=int, choices=[0, 1], default=0,
                   help="1: scratch attention via F.scaled_dot_product_attention (fused; faster in the README's "
                        "speed table); 0: the written-out softmax that the notes explain")
    p.add_argument("--vocab_size", type=int, default=8000, help="joint BPE vocabulary size")
    p.add_argument("--split_punctuation", type=int, choices=[0, 1], default=1,
                   help="1: each punctuation mark is a word of its own before BPE learns its merges ('▁neige.' -> "
                        "'▁neige', '.'); 0: split at spaces only (the first default)")
    p.add_argument("--join_elisions", type=int, choices=[0, 1], default=0,
                   help="1 (with --split_punctuation 1): an apostrophe stays on the word before it ('▁l'', "
                        "'homme'), as in stage 3's tokenizer; 0: it is a word of its own")
    p.add_argument("--bpe_dropout", type=float, default=0.0, help="BPE-dropout on the training pairs: each merge "
                   "skipped with this probability, new pieces each epoch (0: plain BPE; 0.1 is the paper's)")
    p.add_argument("--word_dropout", type=float, default=0.0, help="each source piece of a training batch (not "
                   "<eos>) becomes <unk> with this probability, drawn afresh every batch (0: off)")
    p.add_argument("--target_word_dropout", type=float, default=0.0, help="the same on the decoder's input pieces "
                   "(not <bos>; the labels stay whole)")
    p.add_argument("--output_vocab", default="target", choices=["all", "target"],
                   help="target: the softmax covers only the pieces seen on the target side of the training pairs "
                        "(a joint vocabulary's source-only pieces cost output columns and are never right); all: "
                        "every piece (the default before round 10)")
    p.add_argument("--max_len", type=int, default=100, help="drop training pairs longer than this many pieces")
    p.add_argument("--max_tokens", type=int, default=1024, help="padded target pieces per batch")
    p.add_argument("--lr", type=float, default=3e-3, help="peak learning rate, reached at the end of warm-up")
    p.add_argument("--warmup_steps", type=int, default=600, help="linear warm-up steps")
    p.add_argument("--schedule", default="cosine", choices=["inverse_sqrt", "cosine"],
                   help="after warm-up: lr * sqrt(warmup/step) (the paper), or cosine to 10%%")
    p.add_argument("--weight_decay", type=float, default=0.1, help="AdamW decoupled weight decay")
    p.add_argument("--decay_vectors", type=int, choices=[0, 1], default=1,
                   help="1: weight decay on every parameter; 0: only on matrices (weights and embeddings), not on "
                        "biases and norm gains")
    p.add_argument("--clip", type=float, default=1.0, help="clip the gradient norm to this")
    p.add_argument("--label_smoothing", type=float, default=0.1, help="label smoothing of the cross-entropy")
    p.add_argument("--epochs", type=int, default=None,
                   help=f"passes over the training pairs (default: {EPOCHS_BF16} with bf16 autocast, "
                        f"{EPOCHS_FLOAT32} in float32; a bf16 epoch costs about 0.7 of a float32 one on a CPU; with "
                        "bf16 the default run takes about 0.8 of stage 3's training time, in float32 about 1.2: "
                        "README, round 14; --resume: the saved run's)")
    p.add_argument("--average_last", type=int, default=10,
                   help="average the weights of the last N epochs (the paper averages checkpoints too; 0 or 1: off); "
                        "the average is kept if its validation BLEU beats the best single epoch (5 before round 11)")
    p.add_argument("--amp", type=int, choices=[0, 1], default=1,
                   help="1: bf16 autocast on CUDA and on CPUs with native bf16 (AMX, AVX512-BF16); 0: float32")
    p.add_argument("--max_steps", type=int, default=0, help="stop after this many steps (0: no limit)")
    p.add_argument("--limit", type=int, default=0, help="use only the first N training pairs (0: all)")
    p.add_argument("--val_limit", type=int, default=0, help="score only the first N validation pairs (0: all)")
    p.add_argument("--checkpoint", default=None, help="best checkpoint (default checkpoints/best_transformer.pt)")
    p.add_argument("--out_dir", default=None, help="run folder (default runs/transformer_<impl>_<dataset>)")
    p.add_argument("--resume", action="store_true", help="continue from <out_dir>/last.pt")
    add_common_args(p)
    return p


def default_epochs(device: torch.device, amp: bool) -> int:
    """--epochs' default: more epochs where bf16 autocast makes each one cheaper, for about the same training time."""
    return EPOCHS_BF16 if uses_bf16(device, amp) else EPOCHS_FLOAT32


def resolve_args(args: argparse.Namespace) -> argparse.Namespace:
    if args.layers is not None:
        check_positive(args, "layers")
    shared = {"encoder_layers": ENCODER_LAYERS, "decoder_layers": DECODER_LAYERS}   # each: its flag, else --layers
    for name, default in shared.items():
        if getattr(args, name) is None:
            setattr(args, name, args.layers if args.layers is not None else default)
    check_positive(args, "d_model", "n_heads", "encoder_layers", "decoder_layers", "d_ff", "vocab_size",
                   "max_tokens")
    if args.epochs is not None:     # None: set in main() once the device and any --resume are known
        check_positive(args, "epochs")
    for flag in ("lr", "clip"):
        if getattr(args, flag) <= 0:
            raise UserError(f"--{flag} must be > 0, got {getattr(args, flag)}")
    for flag in ("max_len", "warmup_steps", "max_steps", "limit", "val_limit", "average_last"):
        if getattr(args, flag) < 0:
            raise UserError(f"--{flag} must be >= 0, got {getattr(args, flag)}")
    for flag in ("dropout", "attention_dropout", "activation_dropout", "label_smoothing", "bpe_dropout", "word_dropout",
                 "target_word_dropout"):
        if getattr(args, flag) is not None and not 0.0 <= getattr(args, flag) < 1.0:
            raise UserError(f"--{flag} must be in [0, 1), got {getattr(args, flag)}")
    if args.impl == "torch":
        try:
            check_torch_impl(args.dropout, args.attention_dropout, args.activation_dropout, args.norm,
                             bool(args.fix_norm))
        except ValueError as err:
            raise UserError(str(err)) from None
    if args.impl == "torch" and args.fast_dropout:
        raise UserError("--fast_dropout 1 needs --impl scratch (nn.Transformer draws its own dropout masks)")
    for flag in ("attention_dropout", "activation_dropout"):    # scratch: the paper's places only
        if getattr(args, flag) is None:
            setattr(args, flag, 0.0 if args.impl == "scratch" else args.dropout)
    if args.fast_dropout is None:
        args.fast_dropout = int(args.impl == "scratch")
    pre_tokenizer(bool(args.split_punctuation), bool(args.join_elisions))   # refuses a bad pair before data loads
    if args.d_model % args.n_heads:
        raise UserError(f"--d_model {args.d_model} must be divisible by --n_heads {args.n_heads}")
    if args.vocab_size < 100:
        raise UserError(f"--vocab_size {args.vocab_size} is too small (at least 100: the characters come first)")
    args.checkpoint = args.checkpoint or str(STAGE_DIR / "checkpoints" / "best_transformer.pt")
    args.out_dir = args.out_dir or str(STAGE_DIR / "runs" / f"transformer_{args.impl}_{args.dataset}")
    return args


def lr_at(step: int, args: argparse.Namespace, total: int) -> float:
    """Linear warm-up to --lr, then lr * sqrt(warmup / step) (Vaswani et al.'s schedule, with the peak
    as the knob instead of d_model^-0.5), or a cosine decay to lr/10 at `total` steps."""
    warmup = max(1, args.warmup_steps)
    if step < warmup:
        return args.lr * (step + 1) / warmup
    if args.schedule == "inverse_sqrt":
        return args.lr * math.sqrt(warmup / (step + 1))
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return args.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def target_pieces(examples: list, also: set[int] = frozenset()) -> list[int]:
    """The specials and every piece id on the target side of the training pairs (and `also`: the pieces
    BPE-dropout can cut), ascending: the softmax of --output_vocab target."""
    return sorted({PAD_ID, UNK_ID, BOS_ID, EOS_ID, *also}.union(*(target for _, target in examples)))


def word_dropout(tokens: torch.Tensor, p: float) -> torch.Tensor:
    """Each real piece (not <pad>, <bos>, <eos>) replaced by <unk> with probability p: the model must translate
    from context when a piece is missing (Sennrich & Zhang 2019 use it on small data). Global RNG, so resumable."""
    if p == 0.0:
        return tokens
    hit = (torch.rand(tokens.shape, device=tokens.device) < p) & (tokens != PAD_ID) & (tokens != BOS_ID) \
        & (tokens != EOS_ID)
    return tokens.masked_fill(hit, UNK_ID)


def sequence_loss(logits: torch.Tensor, targets: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """Mean cross-entropy per real target piece (padding ignored), computed in float32."""
    return F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), ignore_index=PAD_ID,
                           label_smoothing=label_smoothing)


def batch_loss(model: Transformer, src: torch.Tensor, tgt_in: torch.Tensor, tgt_out: torch.Tensor,
               device: torch.device, amp: bool, label_smoothing: float = 0.0) -> torch.Tensor:
    """One batch's loss: the forward pass (under autocast when amp), the labels moved to the softmax's columns
    (`Transformer.output_targets`: the same ids unless --output_vocab target), then `sequence_loss`."""
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


def param_groups(model: torch.nn.Module, weight_decay: float, decay_vectors: bool) -> list[dict]:
    """AdamW's parameter groups. decay_vectors=False: decay only matrices (ndim >= 2: linear weights,
    embeddings); biases and norm gains (vectors and scalars) are left alone, as most GPT and BERT code does."""
    params = list(model.parameters())
    if decay_vectors:
        return [{"params": params, "weight_decay": weight_decay}]
    return [{"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]


def checkpoint_payload(args: argparse.Namespace, model: Transformer, vocab: SubwordVocab,
                       extra: dict[str, Any]) -> dict[str, Any]:
    return {**checkpoint_header(STAGE, MODEL_NAME), "config": model.config.to_dict(), "dataset": args.dataset,
            "vocab": vocab.to_json(), "args": vars(args),
            "model_state": {k: v.detach().cpu() for k, v in model.state_dict().items()}, **extra}


def train_one_epoch(args: argparse.Namespace, model: Transformer, optimizer: torch.optim.Optimizer, examples: list,
                    state: dict[str, Any], total_steps: int, device: torch.device, interrupt: StopOnInterrupt,
                    save_last: Callable[[], None]) -> tuple[int, float]:
    """One pass over the training pairs from `state["batch_in_epoch"]`; returns (target pieces, seconds)."""
    epoch = state["epoch"] + 1
    bar = tqdm(total=state["batches_per_epoch"], initial=state["batch_in_epoch"], desc=f"epoch {epoch}",
               unit="batch", disable=None, leave=False)
    tokens, tick, seconds_before = 0, time.time(), state["train_seconds"]
    for batch in token_batches(examples, args.max_tokens, True, args.seed, epoch, state["batch_in_epoch"]):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(state["global_step"], args, total_steps)
        batch = batch.to(device)
        src, tgt_in = word_dropout(batch.src, args.word_dropout), word_dropout(batch.tgt_in, args.target_word_dropout)
        loss = batch_loss(model, src, tgt_in, batch.tgt_out, device, bool(args.amp), args.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip)
        optimizer.step()
        tokens += batch.target_tokens
        state["epoch_loss_sum"] += loss.item() * batch.target_tokens
        state["epoch_tokens"] += batch.target_tokens
        state["batch_in_epoch"] += 1
        state["global_step"] += 1
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.3f}", tgt_tokens_per_s=f"{tokens / (time.time() - tick):.0f}")
        state["train_seconds"] = seconds_before + time.time() - tick
        interrupt.stop_if_requested(save_last, f"{Path(args.out_dir) / 'last.pt'} at epoch {epoch}, "
                                               f"batch {state['batch_in_epoch']}")
        if args.max_steps and state["global_step"] >= args.max_steps:
            break
    bar.close()
    seconds = time.time() - tick
    state["train_seconds"] = seconds_before + seconds
    return tokens, seconds


def add_weights(state: dict[str, Any], model: Transformer) -> None:
    """Add this epoch's weights to a running float32 sum on the CPU (kept in last.pt, so --resume carries it)."""
    for name, value in model.state_dict().items():
        value = value.detach().float().cpu()
        state["weight_sum"][name] = state["weight_sum"][name] + value if name in state["weight_sum"] else value.clone()
    state["weight_count"] += 1


def average_checkpoints(args: argparse.Namespace, model: Transformer, vocab: SubwordVocab, state: dict[str, Any],
                        valid_examples: list, valid_pairs: list, device: torch.device, best_path: Path,
                        log: Any) -> None:
    """The paper's checkpoint averaging: the mean of the last epochs' weights, scored on validation like an epoch."""
    count, last_epoch = state["weight_count"], {k: v.detach().clone() for k, v in model.state_dict().items()}
    model.load_state_dict({name: (total / count).to(device) for name, total in state["weight_sum"].items()})
    scores = validate(model, valid_examples, valid_pairs, vocab, device, bool(args.amp))
    epochs = list(range(args.epochs - count + 1, args.epochs + 1))
    improved = scores["val_bleu"] > state["best_val_bleu"]
    state["averaged"] = {"epochs": epochs, **scores, "kept": improved}
    if improved:
        state.update(best_val_bleu=scores["val_bleu"], best_epoch=args.epochs)
        save_checkpoint(best_path, checkpoint_payload(args, model, vocab, {
            "epoch": args.epochs, "averaged_epochs": epochs, "best_val_bleu": scores["val_bleu"],
            "history": state["history"]}))
    model.load_state_dict(last_epoch)   # last.pt keeps the last epoch's own weights, so a longer --resume goes on
    log.info(f"average of epochs {epochs[0]}-{epochs[-1]}: val loss {scores['val_loss']:.3f}  val BLEU "
             f"{scores['val_bleu']:.2f} (greedy){'  *best*, kept' if improved else ', not better: not kept'}")


def main(argv: Sequence[str] | None = None) -> int:
    args = resolve_args(build_parser().parse_args(argv))
    started = time.time()
    set_threads(args.num_threads)
    device = get_device(args.device)
    out_dir, best_path = Path(args.out_dir), Path(args.checkpoint)
    last_path = out_dir / "last.pt"
    # before_flag: what a last.pt saved before these flags existed did (split at spaces only, no joined elisions,
    # LayerNorm, plain embeddings, weight decay on every parameter, whole inputs, a softmax over every piece)
    resume = load_resume(last_path, STAGE, MODEL_NAME, args, RESUME_MUST_MATCH,
                         before_flag={"split_punctuation": 0, "join_elisions": 0, "norm": "layer", "fix_norm": 0,
                                      "decay_vectors": 1, "word_dropout": 0.0, "target_word_dropout": 0.0,
                                      "output_vocab": "all"})
    if args.epochs is None:     # a resumed run keeps its own length (and schedule); a new one gets the default
        args.epochs = resume["args"].get("epochs", EPOCHS_FLOAT32) if resume else default_epochs(device, bool(args.amp))
    log = setup_logging(out_dir)

    train_pairs = load_pairs(args.dataset, "train", args.data_dir)
    valid_pairs = load_pairs(args.dataset, "valid", args.data_dir)
    if args.limit:
        train_pairs = train_pairs[: args.limit]
    if args.val_limit:
        valid_pairs = valid_pairs[: args.val_limit]
    tick = time.time()
    if resume:
        vocab = SubwordVocab.from_json(resume["vocab"])
    else:
        vocab = SubwordVocab.train((text for pair in train_pairs for text in pair), args.vocab_size,
                                   split_punctuation=bool(args.split_punctuation),
                                   join_elisions=bool(args.join_elisions))
    train_examples = encode_pairs(train_pairs, vocab, args.max_len)
    if not train_examples:
        raise UserError(f"no training pairs left (of {len(train_pairs):,}) after --limit/--max_len; loosen them")
    valid_examples = encode_pairs(valid_pairs, vocab)
    resegment = BpeDropout(vocab, train_pairs, args.bpe_dropout, args.seed, args.max_len) if args.bpe_dropout else None
    log.info(f"{args.dataset}: {len(train_examples):,} training pairs (of {len(train_pairs):,}), "
             f"{len(valid_pairs):,} validation; joint BPE vocabulary {len(vocab):,} pieces"
             f"{f', BPE-dropout {args.bpe_dropout}' if resegment else ''} ({time.time() - tick:.1f} s); "
             f"run folder {out_dir}")

    set_seed(args.seed)
    config = TransformerConfig(len(vocab), len(vocab), args.d_model, args.n_heads, args.encoder_layers,
                               args.decoder_layers, args.d_ff, args.dropout, args.attention_dropout,
                               args.activation_dropout, max(args.max_len, 256) + 2, bool(args.norm_first),
                               args.positional, bool(args.share_embeddings), args.impl, bool(args.use_sdpa),
                               bool(args.fast_dropout), args.norm, bool(args.fix_norm),
                               target_pieces(train_examples, resegment.target_piece_ids() if resegment else set())
                               if args.output_vocab == "target" else None)
    if resume:
        config = TransformerConfig(**resume["config"])
    model = Transformer(config).to(device)
    optimizer = torch.optim.AdamW(param_groups(model, args.weight_decay, bool(args.decay_vectors)), lr=args.lr,
                                  betas=(0.9, 0.98))
    params = count_params(model)
    softmax = f"softmax over {len(config.output_ids):,} target-side pieces; " if config.output_ids else ""
    log.info(f"Transformer ({config.impl}): {params:,} parameters, {config}; "
             f"{softmax}{amp_name(device, bool(args.amp))}; {args.epochs} epochs")

    state: dict[str, Any] = {"epoch": 0, "batch_in_epoch": 0, "global_step": 0, "best_val_bleu": -1.0,
                             "best_epoch": 0, "history": [], "train_seconds": 0.0, "wall_seconds": 0.0,
                             "epoch_loss_sum": 0.0, "epoch_tokens": 0, "weight_sum": {}, "weight_count": 0,
                             "averaged": {}, "batches_per_epoch": 0}
    if resume:
        model.load_state_dict(resume["model_state"])
        optimizer.load_state_dict(resume["optimizer_state"])
        state = {k: resume.get(k, v) for k, v in state.items()}
        set_rng_state(resume["rng_state"])
        log.info(f"resumed at epoch {state['epoch'] + 1}, batch {state['batch_in_epoch']}")
    def epoch_examples(epoch: int) -> list:
        """The training pairs as this epoch sees them: plain BPE, or segmented afresh by BPE-dropout."""
        return resegment.examples(epoch) if resegment else train_examples

    # the schedule's length: epochs x batches of epoch 1 (with BPE-dropout later epochs differ by a batch or two)
    steps_per_epoch = count_batches(epoch_examples(1), args.max_tokens)
    best_path.parent.mkdir(parents=True, exist_ok=True)
    best_path.with_suffix(".tokenizer.json").write_text(vocab.to_json(), encoding="utf-8")
    wall_before = state["wall_seconds"]

    def save_last() -> None:
        state["wall_seconds"] = wall_before + time.time() - started
        save_checkpoint(last_path, checkpoint_payload(args, model, vocab, {
            **state, "optimizer_state": optimizer.state_dict(), "rng_state": rng_state()}))

    total_steps = args.epochs * steps_per_epoch
    if args.max_steps:
        total_steps = min(total_steps, args.max_steps)
    model.train()
    with StopOnInterrupt() as interrupt:
        while state["epoch"] < args.epochs and not (args.max_steps and state["global_step"] >= args.max_steps):
            epoch = state["epoch"] + 1
            examples = epoch_examples(epoch)
            state["batches_per_epoch"] = count_batches(examples, args.max_tokens)
            tokens, seconds = train_one_epoch(args, model, optimizer, examples, state, total_steps, device,
                                              interrupt, save_last)
            tick = time.time()
            scores = validate(model, valid_examples, valid_pairs, vocab, device, bool(args.amp))
            row = {"epoch": epoch, "steps": state["global_step"],
                   "train_loss": state["epoch_loss_sum"] / max(state["epoch_tokens"], 1), **scores,
                   "tgt_tokens_per_s": tokens / max(seconds, 1e-9), "lr": optimizer.param_groups[0]["lr"],
                   "elapsed_s": state["train_seconds"], "val_seconds": time.time() - tick}
            state["history"].append(row)
            state.update(epoch=epoch, batch_in_epoch=0, epoch_loss_sum=0.0, epoch_tokens=0)
            improved = scores["val_bleu"] > state["best_val_bleu"]
            if improved:
                state.update(best_val_bleu=scores["val_bleu"], best_epoch=epoch)
                save_checkpoint(best_path, checkpoint_payload(args, model, vocab, {
                    "epoch": epoch, "best_val_bleu": scores["val_bleu"], "history": state["history"]}))
            log.info(f"epoch {epoch:2d}  train loss {row['train_loss']:.3f}  val loss {scores['val_loss']:.3f}  "
                     f"val BLEU {scores['val_bleu']:.2f} (greedy){'  *best*' if improved else ''}  "
                     f"{row['tgt_tokens_per_s']:,.0f} target tokens/s  "
                     f"{(wall_before + time.time() - started) / 60:.1f} min")
            if epoch > args.epochs - args.average_last:
                add_weights(state, model)
            save_last()
        if args.average_last > 1 and state["epoch"] == args.epochs and state["weight_count"] > 1 \
                and not state["averaged"]:
            average_checkpoints(args, model, vocab, state, valid_examples, valid_pairs, device, best_path, log)
            save_last()

    if not state["history"]:
        raise UserError(f"this run finished no epoch (it stopped at step {state['global_step']}); nothing to report")
    write_json(out_dir / "history.json", state["history"])
    plot_curves(state["history"], out_dir / "curves.png", [["train_loss", "val_loss"], ["val_bleu"], ["lr"],
                                                           ["tgt_tokens_per_s"]],
                title=f"Transformer ({config.impl}) on {args.dataset}")
    best = max(state["history"], key=lambda r: r["val_bleu"])
    averaged = state["averaged"]
    if averaged.get("kept"):
        best = {**averaged, "epoch": f"average of {averaged['epochs'][0]}-{averaged['epochs'][-1]}"}
    speed = sum(r["tgt_tokens_per_s"] for r in state["history"]) / len(state["history"])
    save_last()     # last.pt carries the wall time this report states, so a resumed run's total adds on to it
    write_metrics(out_dir / "metrics.json", stage=STAGE, model=f"transformer_{config.impl}", dataset=args.dataset,
                  split="valid", params=params, seconds=state["wall_seconds"],
                  seconds_key="train_seconds", device=device,
                  metrics={"val_bleu_greedy": best["val_bleu"], "val_chrf_greedy": best["val_chrf"],
                           "val_loss": best["val_loss"], "best_epoch": best["epoch"],
                           "epochs_run": len(state["history"]), "train_tgt_tokens_per_s": speed,
                           "fit_seconds": round(state["train_seconds"], 3),
                           "averaged_val_bleu": averaged.get("val_bleu"), "averaged_epochs": averaged.get("epochs")},
                  extra={"checkpoint": str(best_path), "train_pairs": len(train_examples),
                         "amp": amp_name(device, bool(args.amp))})
    log.info(f"best val BLEU {best['val_bleu']:.2f} (greedy) at epoch {best['epoch']}; checkpoint {best_path}")
    return 0


if __name__ == "__main__":
    run_main(main)
