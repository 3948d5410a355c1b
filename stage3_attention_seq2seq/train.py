"""Train an encoder-decoder translator, English -> French, with or without attention (stage 3).

    python train.py                                         # Bahdanau attention on Multi30k, the default settings
    python train.py --attention_type bahdanau --epochs 30   # the course's command
    python train.py --attention_type luong_general          # or luong_dot, luong_concat, none (no attention)
    python train.py --dataset tatoeba                       # 167k everyday sentence pairs
    python train.py --teacher_forcing_end 0.8               # scheduled sampling
    python train.py --resume                                # carry on after Ctrl-C

Teacher forcing, optionally scheduled: with --teacher_forcing_end 0.8 the model is fed its own guesses
for a share of words growing linearly from 0 (first epoch) to 20% (last epoch). Label-smoothed
cross-entropy, gradient clipping, and BLEU on the validation set after each epoch; the best epoch is
kept in checkpoints/best_attention_model.pt (bahdanau) or checkpoints/best_<attention_type>_model.pt.
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

from scripts.common import (ArgParser, StopOnInterrupt, UserError, add_common_args, check_positive,  # noqa: E402
                            checkpoint_header, count_params, get_device, load_resume, rng_state, run_main,
                            save_checkpoint, set_rng_state, set_seed, set_threads, setup_logging, write_json,
                            write_metrics)
from scripts.plots import plot_curves  # noqa: E402
from stage3_attention_seq2seq.data.translation import (DATASETS, PAD_ID, Vocabulary, bucketed_batches,  # noqa: E402
                                                       encode_pairs, load_pairs, num_batches, save_vocabularies,
                                                       tokenize)
from stage3_attention_seq2seq.models.attention import ATTENTION_TYPES  # noqa: E402
from stage3_attention_seq2seq.models.seq2seq import Seq2Seq, Seq2SeqConfig  # noqa: E402
from scripts.translation_data import corpus_scores  # noqa: E402
from stage3_attention_seq2seq.translator import MODEL_NAME, STAGE, translate_sentences  # noqa: E402

STAGE_DIR = Path(__file__).resolve().parent
# flags that decide the data order, the model or the schedule: a resumed run must keep them (--epochs may grow)
RESUME_MUST_MATCH = ("attention_type", "impl", "batch_size", "limit", "max_len", "min_freq", "seed", "lr",
                     "warmup_steps", "teacher_forcing", "teacher_forcing_end", "embed_dim", "hidden_dim")


def build_parser() -> argparse.ArgumentParser:
    p = ArgParser(description="Train an English->French encoder-decoder with attention (stage 3).")
    p.add_argument("--attention_type", default="bahdanau", choices=ATTENTION_TYPES,
                   help="bahdanau (additive), luong_dot / luong_general / luong_concat, or none (fixed vector)")
    p.add_argument("--dataset", default="multi30k", choices=DATASETS, help="sentence pairs to train on")
    p.add_argument("--impl", default="scratch", choices=["scratch", "torch"],
                   help="recurrent parts: scratch (models/rnn.py) or torch (nn.GRU, nn.GRUCell)")
    p.add_argument("--embed_dim", type=int, default=256, help="word embedding size (also the readout size)")
    p.add_argument("--hidden_dim", type=int, default=128, help="encoder GRU size per direction; decoder is twice it")
    p.add_argument("--attention_dim", type=int, default=256, help="hidden size of additive attention")
    p.add_argument("--dropout", type=float, default=0.3, help="dropout on embeddings and the readout")
    p.add_argument("--tie_embeddings", type=int, choices=[0, 1], default=1,
                   help="1: the output layer shares the target embedding matrix")
    p.add_argument("--min_freq", type=int, default=2, help="words seen fewer times in training become <unk>")
    p.add_argument("--max_len", type=int, default=60, help="drop training pairs longer than this many tokens")
    p.add_argument("--batch_size", type=int, default=128, help="sentence pairs per batch")
    p.add_argument("--lr", type=float, default=2e-3, help="peak Adam learning rate")
    p.add_argument("--weight_decay", type=float, default=0.0, help="AdamW decoupled weight decay")
    p.add_argument("--warmup_steps", type=int, default=200, help="linear warm-up, then cosine decay to 10%%")
    p.add_argument("--clip", type=float, default=1.0, help="clip the gradient norm to this")
    p.add_argument("--label_smoothing", type=float, default=0.1, help="label smoothing of the cross-entropy")
    p.add_argument("--teacher_forcing", type=float, default=1.0,
                   help="probability of feeding the true previous word in the first epoch")
    p.add_argument("--teacher_forcing_end", type=float, default=1.0,
                   help="... in the last epoch, linearly in between (< 1: scheduled sampling, e.g. 0.8)")
    p.add_argument("--epochs", type=int, default=16, help="passes over the training pairs")
    p.add_argument("--max_steps", type=int, default=0, help="stop after this many steps (0: no limit)")
    p.add_argument("--limit", type=int, default=0, help="use only the first N training pairs (0: all)")
    p.add_argument("--val_limit", type=int, default=0, help="score only the first N validation pairs (0: all)")
    p.add_argument("--checkpoint", default=None,
                   help="best checkpoint (default checkpoints/best_attention_model.pt, or best_<type>_model.pt)")
    p.add_argument("--out_dir", default=None, help="run folder (default runs/<attention_type>_<dataset>)")
    p.add_argument("--resume", action="store_true", help="continue from <out_dir>/last.pt")
    add_common_args(p)
    return p


def resolve_args(args: argparse.Namespace) -> argparse.Namespace:
    check_positive(args, "embed_dim", "hidden_dim", "attention_dim", "min_freq", "batch_size", "epochs")
    for flag in ("lr", "clip"):
        if getattr(args, flag) <= 0:
            raise UserError(f"--{flag} must be > 0, got {getattr(args, flag)}")
    for flag in ("max_len", "warmup_steps", "max_steps", "limit", "val_limit"):
        if getattr(args, flag) < 0:
            raise UserError(f"--{flag} must be >= 0, got {getattr(args, flag)}")
    for flag in ("dropout", "label_smoothing"):
        if not 0.0 <= getattr(args, flag) < 1.0:
            raise UserError(f"--{flag} must be in [0, 1), got {getattr(args, flag)}")
    for flag in ("teacher_forcing", "teacher_forcing_end"):
        if not 0.0 <= getattr(args, flag) <= 1.0:
            raise UserError(f"--{flag} must be in [0, 1], got {getattr(args, flag)}")
    name = "attention" if args.attention_type == "bahdanau" else args.attention_type
    args.checkpoint = args.checkpoint or str(STAGE_DIR / "checkpoints" / f"best_{name}_model.pt")
    args.out_dir = args.out_dir or str(STAGE_DIR / "runs" / f"{args.attention_type}_{args.dataset}")
    return args


def lr_at(step: int, total: int, warmup: int, peak: float) -> float:
    """Linear warm-up to `peak`, then cosine decay to peak/10 at `total` steps (a function of the step alone)."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def teacher_forcing_at(epoch: int, args: argparse.Namespace) -> float:
    """Linear schedule from --teacher_forcing (epoch 1) to --teacher_forcing_end (last epoch)."""
    if args.epochs == 1:
        return args.teacher_forcing
    return args.teacher_forcing + (args.teacher_forcing_end - args.teacher_forcing) * (epoch - 1) / (args.epochs - 1)


def sequence_loss(logits: torch.Tensor, targets: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """Mean cross-entropy per real target token (padding ignored)."""
    return F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=PAD_ID,
                           label_smoothing=label_smoothing)


@torch.no_grad()
def validate(model: Seq2Seq, examples: list, pairs: list, src_vocab: Vocabulary, tgt_vocab: Vocabulary,
             device: torch.device) -> dict[str, float]:
    """Validation loss (teacher-forced, no smoothing) and greedy BLEU against the raw references."""
    model.eval()
    total, count = 0.0, 0
    for batch in bucketed_batches(examples, 256, shuffle=False):
        batch = batch.to(device)
        logits = model(batch.src, batch.tgt)
        tokens = int((batch.tgt != PAD_ID).sum())
        total += sequence_loss(logits, batch.tgt).item() * tokens
        count += tokens
    hypotheses = translate_sentences(model, src_vocab, tgt_vocab, [s for s, _ in pairs], device, batch_size=256)
    scores = corpus_scores([h.text for h in hypotheses], [t for _, t in pairs])
    model.train()
    return {"val_loss": total / max(count, 1), "val_bleu": scores["bleu"], "val_chrf": scores["chrf"]}


def checkpoint_payload(args: argparse.Namespace, model: Seq2Seq, src_vocab: Vocabulary, tgt_vocab: Vocabulary,
                       extra: dict[str, Any]) -> dict[str, Any]:
    return {**checkpoint_header(STAGE, MODEL_NAME), "config": model.config.to_dict(), "dataset": args.dataset,
            "src_vocab": src_vocab.to_dict(), "tgt_vocab": tgt_vocab.to_dict(), "args": vars(args),
            "model_state": {k: v.detach().cpu() for k, v in model.state_dict().items()}, **extra}


def train_one_epoch(args: argparse.Namespace, model: Seq2Seq, optimizer: torch.optim.Optimizer, examples: list,
                    state: dict[str, Any], total_steps: int, device: torch.device, interrupt: StopOnInterrupt,
                    save_last: Callable[[], None]) -> tuple[int, float]:
    """One pass over the training pairs from `state["batch_in_epoch"]`; returns (target tokens, seconds)."""
    epoch = state["epoch"] + 1
    ratio = teacher_forcing_at(epoch, args)
    bar = tqdm(total=num_batches(len(examples), args.batch_size), initial=state["batch_in_epoch"],
               desc=f"epoch {epoch}", unit="batch", disable=None, leave=False)
    tokens, tick, seconds_before = 0, time.time(), state["train_seconds"]
    for batch in bucketed_batches(examples, args.batch_size, True, args.seed, epoch, state["batch_in_epoch"]):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(state["global_step"], total_steps, args.warmup_steps, args.lr)
        batch = batch.to(device)
        loss = sequence_loss(model(batch.src, batch.tgt, teacher_forcing=ratio), batch.tgt, args.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip)
        optimizer.step()
        batch_tokens = int((batch.tgt != PAD_ID).sum())
        tokens += batch_tokens
        state["epoch_loss_sum"] += loss.item() * batch_tokens
        state["epoch_tokens"] += batch_tokens
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


def main(argv: Sequence[str] | None = None) -> int:
    args = resolve_args(build_parser().parse_args(argv))
    started = time.time()
    set_threads(args.num_threads)
    device = get_device(args.device)
    out_dir, best_path = Path(args.out_dir), Path(args.checkpoint)
    last_path = out_dir / "last.pt"
    resume = load_resume(last_path, STAGE, MODEL_NAME, args, RESUME_MUST_MATCH)
    log = setup_logging(out_dir)

    train_pairs = load_pairs(args.dataset, "train", args.data_dir)
    valid_pairs = load_pairs(args.dataset, "valid", args.data_dir)
    if args.limit:
        train_pairs = train_pairs[: args.limit]
    if args.val_limit:
        valid_pairs = valid_pairs[: args.val_limit]
    if resume:
        src_vocab, tgt_vocab = Vocabulary.from_dict(resume["src_vocab"]), Vocabulary.from_dict(resume["tgt_vocab"])
    else:
        src_vocab = Vocabulary.build([tokenize(s) for s, _ in train_pairs], args.min_freq)
        tgt_vocab = Vocabulary.build([tokenize(t) for _, t in train_pairs], args.min_freq)
    train_examples = encode_pairs(train_pairs, src_vocab, tgt_vocab, args.max_len)
    if not train_examples:
        raise UserError(f"no training pairs left (of {len(train_pairs):,}) after --limit/--max_len; loosen them")
    valid_examples = encode_pairs(valid_pairs, src_vocab, tgt_vocab)
    log.info(f"{args.dataset}: {len(train_examples):,} training pairs (of {len(train_pairs):,}), "
             f"{len(valid_pairs):,} validation; vocabularies en {len(src_vocab):,} / fr {len(tgt_vocab):,} "
             f"(min_freq {args.min_freq}); run folder {out_dir}")

    set_seed(args.seed)
    config = Seq2SeqConfig(len(src_vocab), len(tgt_vocab), args.attention_type, args.impl, args.embed_dim,
                           args.hidden_dim, args.attention_dim, args.dropout, bool(args.tie_embeddings))
    if resume:
        config = Seq2SeqConfig(**resume["config"])
    model = Seq2Seq(config).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    params = count_params(model)
    log.info(f"attention {config.attention_type} ({config.impl}): {params:,} parameters, {config}")

    state: dict[str, Any] = {"epoch": 0, "batch_in_epoch": 0, "global_step": 0, "best_val_bleu": -1.0,
                             "best_epoch": 0, "history": [], "train_seconds": 0.0, "wall_seconds": 0.0,
                             "epoch_loss_sum": 0.0, "epoch_tokens": 0}
    if resume:
        model.load_state_dict(resume["model_state"])
        optimizer.load_state_dict(resume["optimizer_state"])
        state = {k: resume.get(k, v) for k, v in state.items()}
        set_rng_state(resume["rng_state"])
        log.info(f"resumed at epoch {state['epoch'] + 1}, batch {state['batch_in_epoch']}")
    vocab_path = best_path.with_suffix(".vocab.json")
    save_vocabularies(vocab_path, src_vocab, tgt_vocab)

    wall_before = state["wall_seconds"]       # wall time of earlier sessions of this run (resumed)

    def save_last() -> None:
        state["wall_seconds"] = wall_before + time.time() - started
        save_checkpoint(last_path, checkpoint_payload(args, model, src_vocab, tgt_vocab, {
            **state, "optimizer_state": optimizer.state_dict(), "rng_state": rng_state()}))

    total_steps = args.epochs * num_batches(len(train_examples), args.batch_size)
    if args.max_steps:
        total_steps = min(total_steps, args.max_steps)
    model.train()
    with StopOnInterrupt() as interrupt:
        while state["epoch"] < args.epochs and not (args.max_steps and state["global_step"] >= args.max_steps):
            epoch = state["epoch"] + 1
            tokens, seconds = train_one_epoch(args, model, optimizer, train_examples, state, total_steps, device,
                                              interrupt, save_last)
            tick = time.time()
            scores = validate(model, valid_examples, valid_pairs, src_vocab, tgt_vocab, device)
            row = {"epoch": epoch, "steps": state["global_step"],
                   "train_loss": state["epoch_loss_sum"] / max(state["epoch_tokens"], 1), **scores,
                   "teacher_forcing": teacher_forcing_at(epoch, args), "tgt_tokens_per_s": tokens / max(seconds, 1e-9),
                   "lr": optimizer.param_groups[0]["lr"], "elapsed_s": state["train_seconds"],
                   "val_seconds": time.time() - tick}
            state["history"].append(row)
            state.update(epoch=epoch, batch_in_epoch=0, epoch_loss_sum=0.0, epoch_tokens=0)
            improved = scores["val_bleu"] > state["best_val_bleu"]
            if improved:
                state.update(best_val_bleu=scores["val_bleu"], best_epoch=epoch)
                save_checkpoint(best_path, checkpoint_payload(args, model, src_vocab, tgt_vocab, {
                    "epoch": epoch, "best_val_bleu": scores["val_bleu"], "history": state["history"]}))
            log.info(f"epoch {epoch:2d}  train loss {row['train_loss']:.3f}  val loss {scores['val_loss']:.3f}  "
                     f"val BLEU {scores['val_bleu']:.2f} (greedy){'  *best*' if improved else ''}  "
                     f"{row['tgt_tokens_per_s']:,.0f} target tokens/s  {(time.time() - started) / 60:.1f} min")
            save_last()

    if not state["history"]:
        raise UserError(f"this run finished no epoch (it stopped at step {state['global_step']}); nothing to report")
    write_json(out_dir / "history.json", state["history"])
    plot_curves(state["history"], out_dir / "curves.png", [["train_loss", "val_loss"], ["val_bleu"],
                                                           ["tgt_tokens_per_s"]],
                title=f"{config.attention_type} attention on {args.dataset}")
    best = max(state["history"], key=lambda r: r["val_bleu"])
    speed = sum(r["tgt_tokens_per_s"] for r in state["history"]) / len(state["history"])
    save_last()     # last.pt carries the wall time this report states, so a resumed run's total adds on to it
    write_metrics(out_dir / "metrics.json", stage=STAGE, model=f"{config.attention_type}_{config.impl}",
                  dataset=args.dataset, split="valid", params=params, seconds=state["wall_seconds"],
                  seconds_key="train_seconds", device=device,
                  metrics={"val_bleu_greedy": best["val_bleu"], "val_chrf_greedy": best["val_chrf"],
                           "val_loss": best["val_loss"], "best_epoch": best["epoch"],
                           "epochs_run": len(state["history"]), "train_tgt_tokens_per_s": speed,
                           "fit_seconds": round(state["train_seconds"], 3)},
                  extra={"checkpoint": str(best_path), "vocab": str(vocab_path),
                         "train_pairs": len(train_examples)})
    log.info(f"best val BLEU {best['val_bleu']:.2f} (greedy) at epoch {best['epoch']}; checkpoint {best_path}")
    return 0


if __name__ == "__main__":
    run_main(main)
