"""Train a recurrent language model (stage 2): characters of Shakespeare or words of Penn Treebank.

    python train.py                                                # char LSTM on tiny Shakespeare
    python train.py --model_type lstm --vocab_type char --epochs 15
    python train.py --vocab_type word                              # word LSTM on Penn Treebank
    python train.py --impl scratch                                 # the cells of models/cells.py, not nn.LSTM
    python train.py --resume                                       # carry on after Ctrl-C

Truncated backpropagation through time: the text is cut into --batch_size parallel streams, read
--seq_len tokens at a time; the hidden state flows from one batch to the next but gradients stop there.
Writes checkpoints/best_<model>_<vocab>.pt, checkpoints/<vocab>_vocabulary.json and runs/<run>/.
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
from stage2_rnn_lstm.data.corpus import (DATASETS, Vocabulary, batchify, bptt_batches, load_corpus,  # noqa: E402
                                         num_batches)
from stage2_rnn_lstm.models.cells import State, detach_state  # noqa: E402
from stage2_rnn_lstm.models.rnn_lm import LMConfig, RNNLanguageModel  # noqa: E402

STAGE = "stage2_rnn_lstm"
STAGE_DIR = Path(__file__).resolve().parent
MODEL_NAME = "rnn_lm"
# good settings per vocabulary type (flags left unset take these)
DEFAULTS = {
    "char": dict(dataset="shakespeare", embed_dim=128, hidden_dim=512, num_layers=2, dropout=0.25, tie_weights=False,
                 batch_size=64, seq_len=128, lr=3e-3, weight_decay=0.0, clip=1.0, epochs=7),
    "word": dict(dataset="ptb", embed_dim=400, hidden_dim=400, num_layers=2, dropout=0.4, tie_weights=True,
                 batch_size=32, seq_len=35, lr=2e-3, weight_decay=0.0, clip=0.5, epochs=6),
}


def build_parser() -> argparse.ArgumentParser:
    p = ArgParser(description="Train a char- or word-level RNN/LSTM/GRU language model (stage 2).")
    p.add_argument("--model_type", default="lstm", choices=["rnn", "lstm", "gru"], help="recurrent cell")
    p.add_argument("--vocab_type", default="char", choices=["char", "word"], help="tokens: characters or words")
    p.add_argument("--dataset", default=None, choices=DATASETS, help="default: shakespeare (char), ptb (word)")
    p.add_argument("--impl", default="torch", choices=["scratch", "torch"],
                   help="scratch: cells of models/cells.py; torch: nn.RNN/nn.LSTM/nn.GRU")
    p.add_argument("--embed_dim", type=int, default=None, help="token embedding size (char 128, word 400)")
    p.add_argument("--hidden_dim", type=int, default=None, help="hidden (and cell) state size (char 512, word 400)")
    p.add_argument("--num_layers", type=int, default=None, help="stacked recurrent layers (2)")
    p.add_argument("--dropout", type=float, default=None, help="dropout on embeddings, between layers, on outputs")
    p.add_argument("--tie_weights", type=int, choices=[0, 1], default=None,
                   help="1: decoder shares the embedding matrix (word default; needs embed_dim == hidden_dim)")
    p.add_argument("--batch_size", type=int, default=None, help="parallel text streams (char 64, word 32)")
    p.add_argument("--seq_len", type=int, default=None, help="BPTT length: tokens per batch and stream (128 / 35)")
    p.add_argument("--lr", type=float, default=None, help="peak AdamW learning rate (char 3e-3, word 2e-3)")
    p.add_argument("--weight_decay", type=float, default=None, help="AdamW decoupled weight decay")
    p.add_argument("--clip", type=float, default=None, help="clip the gradient norm to this (char 1.0, word 0.5)")
    p.add_argument("--epochs", type=int, default=None, help="passes over the training text (char 7, word 6)")
    p.add_argument("--warmup_steps", type=int, default=100, help="linear warm-up, then cosine decay to 10%%")
    p.add_argument("--max_steps", type=int, default=0, help="stop after this many steps (0: no limit)")
    p.add_argument("--limit", type=int, default=0, help="use only the first N training tokens (0: all)")
    p.add_argument("--checkpoint", default=None, help="best checkpoint path (default checkpoints/best_<model>_<vocab>.pt)")
    p.add_argument("--out_dir", default=None, help="run folder (default runs/<model>_<vocab>_<impl>)")
    p.add_argument("--resume", action="store_true", help="continue from <out_dir>/last.pt")
    add_common_args(p)
    return p


def resolve_args(args: argparse.Namespace) -> argparse.Namespace:
    """Fill unset flags from DEFAULTS[vocab_type] and check what a user may get wrong."""
    for key, value in DEFAULTS[args.vocab_type].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.tie_weights = bool(args.tie_weights)
    if (args.dataset == "ptb") != (args.vocab_type == "word"):
        raise UserError(f"--dataset {args.dataset} goes with --vocab_type {'word' if args.dataset == 'ptb' else 'char'}")
    check_positive(args, "embed_dim", "hidden_dim", "num_layers", "batch_size", "seq_len", "epochs")
    if args.tie_weights and args.embed_dim != args.hidden_dim:
        raise UserError(f"--tie_weights 1 needs --embed_dim == --hidden_dim (got {args.embed_dim} and {args.hidden_dim})")
    if not 0.0 <= args.dropout < 1.0:
        raise UserError(f"--dropout must be in [0, 1), got {args.dropout}")
    run = f"{args.model_type}_{args.vocab_type}"
    args.checkpoint = args.checkpoint or str(STAGE_DIR / "checkpoints" / f"best_{run}.pt")
    args.out_dir = args.out_dir or str(STAGE_DIR / "runs" / f"{run}_{args.impl}")
    return args


def lr_at(step: int, total: int, warmup: int, peak: float) -> float:
    """Linear warm-up to `peak`, then cosine decay to peak/10 at `total` steps (a function of the step alone)."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


@torch.no_grad()
def evaluate_stream(model: RNNLanguageModel, data: torch.Tensor, seq_len: int, device: torch.device) -> float:
    """Mean cross-entropy (nats per token) over a batchified stream, carrying the state along."""
    was_training = model.training
    model.eval()
    total, count, state = 0.0, 0, None
    for inputs, targets in bptt_batches(data, seq_len):
        logits, state = model(inputs.to(device), state)
        total += F.cross_entropy(logits.flatten(0, 1), targets.to(device).flatten(), reduction="sum").item()
        count += targets.numel()
    model.train(was_training)
    return total / count


def checkpoint_payload(args: argparse.Namespace, model: RNNLanguageModel, vocab: Vocabulary,
                       extra: dict[str, Any]) -> dict[str, Any]:
    return {**checkpoint_header(STAGE, MODEL_NAME), "config": model.config.to_dict(), "vocab": vocab.to_dict(),
            "dataset": args.dataset, "args": vars(args),
            "model_state": {k: v.detach().cpu() for k, v in model.state_dict().items()}, **extra}


def train_one_epoch(args: argparse.Namespace, model: RNNLanguageModel, optimizer: torch.optim.Optimizer,
                    data: torch.Tensor, state: dict[str, Any], total_steps: int, device: torch.device,
                    interrupt: StopOnInterrupt, save_last: Callable[[], None]) -> tuple[int, float]:
    """One pass over the training streams from `state["batch_in_epoch"]`; returns (tokens, seconds)."""
    epoch = state["epoch"] + 1
    bar = tqdm(total=num_batches(data, args.seq_len), initial=state["batch_in_epoch"], desc=f"epoch {epoch}",
               unit="batch", disable=None, leave=False)
    hidden: State | None = state["hidden"]
    tokens, tick, seconds_before = 0, time.time(), state["train_seconds"]
    for inputs, targets in bptt_batches(data, args.seq_len, state["batch_in_epoch"]):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(state["global_step"], total_steps, args.warmup_steps, args.lr)
        hidden = detach_state(hidden) if hidden is not None else None
        logits, hidden = model(inputs.to(device), hidden)
        loss = F.cross_entropy(logits.flatten(0, 1), targets.to(device).flatten())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip)
        optimizer.step()
        tokens += targets.numel()
        state["epoch_loss_sum"] += loss.item() * targets.numel()
        state["epoch_tokens"] += targets.numel()
        state["batch_in_epoch"] += 1
        state["global_step"] += 1
        state["hidden"] = detach_state(hidden)
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.3f}", tokens_per_s=f"{tokens / (time.time() - tick):.0f}")
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
    resume = load_resume(last_path, STAGE, MODEL_NAME, args, map_location=device)
    log = setup_logging(out_dir)

    splits, kind = load_corpus(args.dataset, args.data_dir)
    train_tokens = splits["train"][: args.limit] if args.limit else splits["train"]
    vocab = Vocabulary.from_dict(resume["vocab"]) if resume else Vocabulary.build(splits["train"], kind)
    train_data = batchify(vocab.encode(train_tokens), args.batch_size)
    valid_data = batchify(vocab.encode(splits["valid"]), min(args.batch_size, 16))
    log.info(f"{args.dataset}: {len(train_tokens):,} train / {len(splits['valid']):,} valid {kind}s, "
             f"vocabulary {len(vocab)}; run folder {out_dir}")

    set_seed(args.seed)
    config = LMConfig(len(vocab), args.model_type, args.impl, args.embed_dim, args.hidden_dim, args.num_layers,
                      args.dropout, args.tie_weights)
    if resume:
        config = LMConfig(**resume["config"])
    model = RNNLanguageModel(config).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    params = count_params(model)
    log.info(f"{args.model_type.upper()} ({args.impl}): {params:,} parameters, {config}")

    state: dict[str, Any] = {"epoch": 0, "batch_in_epoch": 0, "global_step": 0, "hidden": None,
                             "best_val_loss": math.inf, "best_epoch": 0, "history": [], "train_seconds": 0.0,
                             "epoch_loss_sum": 0.0, "epoch_tokens": 0}
    if resume:
        model.load_state_dict(resume["model_state"])
        optimizer.load_state_dict(resume["optimizer_state"])
        state = {k: resume[k] for k in state}
        set_rng_state(resume["rng_state"])
        log.info(f"resumed at epoch {state['epoch'] + 1}, batch {state['batch_in_epoch']}")
    best_path.parent.mkdir(parents=True, exist_ok=True)
    vocab_path = best_path.parent / f"{kind}_vocabulary.json"
    vocab.save(vocab_path)

    def save_last() -> None:
        save_checkpoint(last_path, checkpoint_payload(args, model, vocab, {
            **state, "optimizer_state": optimizer.state_dict(), "rng_state": rng_state()}))

    total_steps = args.epochs * num_batches(train_data, args.seq_len)
    if args.max_steps:
        total_steps = min(total_steps, args.max_steps)
    with StopOnInterrupt() as interrupt:
        while state["epoch"] < args.epochs and not (args.max_steps and state["global_step"] >= args.max_steps):
            epoch = state["epoch"] + 1
            tokens, seconds = train_one_epoch(args, model, optimizer, train_data, state, total_steps, device,
                                              interrupt, save_last)
            val_loss = evaluate_stream(model, valid_data, args.seq_len, device)
            row = {"epoch": epoch, "steps": state["global_step"],
                   "train_loss": state["epoch_loss_sum"] / max(state["epoch_tokens"], 1), "val_loss": val_loss,
                   "val_ppl": math.exp(val_loss), "val_bpc": val_loss / math.log(2),
                   "tokens_per_s": tokens / max(seconds, 1e-9), "lr": optimizer.param_groups[0]["lr"],
                   "elapsed_s": state["train_seconds"]}
            state["history"].append(row)
            state.update(epoch=epoch, batch_in_epoch=0, hidden=None, epoch_loss_sum=0.0, epoch_tokens=0)
            improved = val_loss < state["best_val_loss"]
            if improved:
                state.update(best_val_loss=val_loss, best_epoch=epoch)
                save_checkpoint(best_path, checkpoint_payload(args, model, vocab, {
                    "epoch": epoch, "best_val_loss": val_loss, "history": state["history"]}))
            log.info(f"epoch {epoch:2d}  train loss {row['train_loss']:.4f}  val loss {val_loss:.4f}  "
                     f"(ppl {row['val_ppl']:.2f}, {row['val_bpc']:.3f} bits/token){'  *best*' if improved else ''}  "
                     f"{row['tokens_per_s']:,.0f} tokens/s  {state['train_seconds'] / 60:.1f} min")
            save_last()

    write_json(out_dir / "history.json", state["history"])
    plot_curves(state["history"], out_dir / "curves.png", [["train_loss", "val_loss"], ["tokens_per_s"]],
                title=f"{args.model_type.upper()} ({args.impl}) on {args.dataset}")
    best = min(state["history"], key=lambda r: r["val_loss"])
    speed = sum(r["tokens_per_s"] for r in state["history"]) / len(state["history"])
    write_metrics(out_dir / "metrics.json", stage=STAGE, model=f"{args.model_type}_{args.vocab_type}_{args.impl}",
                  dataset=args.dataset, split="valid", params=params, seconds=time.time() - started,
                  seconds_key="train_seconds", device=device,
                  metrics={"val_loss": best["val_loss"], "val_ppl": best["val_ppl"], "val_bpc": best["val_bpc"],
                           "best_epoch": best["epoch"], "epochs_run": len(state["history"]),
                           "train_tokens_per_s": speed, "fit_seconds": round(state["train_seconds"], 3)},
                  extra={"checkpoint": str(best_path), "vocab": str(vocab_path), "train_tokens": len(train_tokens)})
    log.info(f"best val loss {best['val_loss']:.4f} (ppl {best['val_ppl']:.2f}) at epoch {best['epoch']}; "
             f"checkpoint {best_path}")
    return 0


if __name__ == "__main__":
    run_main(main)
