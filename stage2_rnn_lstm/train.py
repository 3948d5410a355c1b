"""Train a recurrent language model (stage 2): characters of Shakespeare or words of Penn Treebank.

    python stage2_rnn_lstm/train.py                           # char LSTM on tiny Shakespeare
    python stage2_rnn_lstm/train.py --preset quick            # a smaller char LSTM, about two minutes
    python stage2_rnn_lstm/train.py --epochs 15               # the same model, a longer schedule
    python stage2_rnn_lstm/train.py --vocab_type word         # word LSTM on Penn Treebank
    python stage2_rnn_lstm/train.py --impl scratch            # the cells of models/cells.py, not nn.LSTM
    python stage2_rnn_lstm/train.py --resume                  # carry on after Ctrl-C

Truncated backpropagation through time: the text is cut into --batch_size parallel streams, read
--seq_len tokens at a time; the hidden state flows from one batch to the next but gradients stop there.
Writes checkpoints/best_<model>_<vocab>.pt, checkpoints/<vocab>_vocabulary.json and runs/<run>/ (the quick
preset adds `_quick` to both names, so it never overwrites a default run). Every evaluation (once per epoch) refreshes
history.json and curves.png in the run folder, logs to TensorBoard and prints a short sample.
"""
from __future__ import annotations

import argparse
import hashlib
import logging
import math
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F

from scripts.checks import CLIP, COUNT, FRACTION, NON_NEGATIVE, POSITIVE_INT, Range, check_args
from scripts.common import (ArgParser, UserError, add_common_args, add_output_args, checkpoint_header, count_params,
                            get_device, model_from_checkpoint, run_main, save_checkpoint, set_seed, set_threads,
                            setup_logging, warmup_cosine, write_metrics)
from scripts.monitor import TrainingMonitor
from scripts.training import ResumableRun
from stage2_rnn_lstm.data.corpus import (DATASETS, Vocabulary, batchify, bptt_batches, describe_split, load_corpus,
                                         num_batches)
from stage2_rnn_lstm.models.cells import detach_state
from stage2_rnn_lstm.models.rnn_lm import LMConfig, RNNLanguageModel

STAGE = "stage2_rnn_lstm"
STAGE_DIR = Path(__file__).resolve().parent
MODEL_NAME = "rnn_lm"
# good settings (flags left unset take these), per --preset and --vocab_type. "quick" is a smaller char LSTM that
# writes Shakespeare-like text after about two minutes on 2 CPU cores (results/TUNING.md says how it was chosen).
PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "default": {
        "char": dict(dataset="shakespeare", embed_dim=128, hidden_dim=512, num_layers=2, dropout=0.25,
                     tie_weights=False, batch_size=64, seq_len=128, lr=3e-3, weight_decay=0.0, clip=1.0, epochs=7),
        "word": dict(dataset="ptb", embed_dim=400, hidden_dim=400, num_layers=2, dropout=0.4, tie_weights=True,
                     batch_size=32, seq_len=35, lr=2e-3, weight_decay=0.0, clip=0.5, epochs=6),
    },
    "quick": {
        "char": dict(dataset="shakespeare", embed_dim=64, hidden_dim=256, num_layers=2, dropout=0.1,
                     tie_weights=False, batch_size=32, seq_len=64, lr=3e-3, weight_decay=0.0, clip=1.0, epochs=3),
    },
}
DEFAULTS = PRESETS["default"]
# what --resume must find unchanged: the model's shape, the data order and the learning-rate schedule
RESUME_MUST_MATCH = ("model_type", "vocab_type", "impl", "embed_dim", "hidden_dim", "num_layers", "dropout",
                     "tie_weights", "batch_size", "seq_len", "limit", "seed", "lr", "warmup_steps", "weight_decay",
                     "clip", "epochs", "max_steps")
# the sample printed at every evaluation: a fixed prompt and seed, so samples of one run can be compared
SAMPLE = {"char": dict(prompt="ROMEO:", max_new_tokens=200), "word": dict(prompt="the company said", max_new_tokens=40)}
SAMPLE_TEMPERATURE, SAMPLE_SEED = 0.8, 0
# the allowed values of the flags (scripts/checks.py). The bounds are far beyond any sensible model; they are there
# so that a typo such as --hidden_dim 5120000 is refused in one line instead of filling the memory
WIDTH = Range(int, lo=1, hi=65_536)                 # --embed_dim, --hidden_dim
LAYERS = Range(int, lo=1, hi=64)                    # --num_layers
LR = Range(float, lo=0, hi=1, lo_open=True)         # --lr: 0 would train nothing; AdamW above 1 only diverges
MAX_PARAMS = 500_000_000                            # the default char model has 3.3 million
MAX_STEP_NUMBERS = 1 << 29                          # floats one training step holds for logits and states (2 GiB)
FLAG_RANGES = dict(epochs=POSITIVE_INT, lr=LR, batch_size=POSITIVE_INT, embed_dim=WIDTH, hidden_dim=WIDTH,
                   num_layers=LAYERS, dropout=FRACTION, seq_len=POSITIVE_INT, clip=CLIP, weight_decay=NON_NEGATIVE)


def preset_default(key: str) -> str:
    """How --help states a flag whose default comes from --preset and --vocab_type."""
    def shown(value: Any) -> str:
        return ("on" if value else "off") if isinstance(value, bool) else str(value)
    values = [f"{vocab} {shown(v[key])}" for vocab, v in DEFAULTS.items()]
    values += [f"--preset {name}: {shown(v[key])}" for name, preset in PRESETS.items() if name != "default"
               for v in preset.values()]
    return f"(default: {', '.join(values)})"


def build_parser() -> argparse.ArgumentParser:
    p = ArgParser(description="Train a char- or word-level RNN/LSTM/GRU language model (stage 2).\n"
                              "Options without a fixed default take the good setting of --preset and --vocab_type.")
    p.add_argument("--preset", default="default", choices=sorted(PRESETS),
                   help="settings for unset flags: default (the stage's main models), quick (a smaller char LSTM, "
                        "about two minutes on 2 CPU cores)")
    p.add_argument("--model_type", default="lstm", choices=["rnn", "lstm", "gru"], help="recurrent cell")
    p.add_argument("--vocab_type", default="char", choices=["char", "word"], help="tokens: characters or words")
    p.add_argument("--dataset", default=None, choices=DATASETS, help="text to train on " + preset_default("dataset"))
    p.add_argument("--impl", default="torch", choices=["scratch", "torch"],
                   help="scratch: the cells of models/cells.py; torch: nn.RNN/nn.LSTM/nn.GRU")
    p.add_argument("--epochs", type=POSITIVE_INT, default=None,
                   help="passes over the training text " + preset_default("epochs"))
    p.add_argument("--lr", type=LR, default=None, help="peak AdamW learning rate " + preset_default("lr"))
    p.add_argument("--batch_size", type=POSITIVE_INT, default=None,
                   help="parallel text streams " + preset_default("batch_size"))

    model = p.add_argument_group("model")
    model.add_argument("--embed_dim", type=WIDTH, default=None,
                       help="token embedding size " + preset_default("embed_dim"))
    model.add_argument("--hidden_dim", type=WIDTH, default=None,
                       help="hidden (and cell) state size " + preset_default("hidden_dim"))
    model.add_argument("--num_layers", type=LAYERS, default=None,
                       help="stacked recurrent layers " + preset_default("num_layers"))
    model.add_argument("--dropout", type=FRACTION, default=None,
                       help="dropout on embeddings, between layers and on outputs "
                            + preset_default("dropout"))
    model.add_argument("--tie_weights", action=argparse.BooleanOptionalAction, default=None,
                       help="the decoder shares the embedding matrix (needs embed_dim == hidden_dim) "
                            + preset_default("tie_weights"))

    training = p.add_argument_group("training")
    training.add_argument("--seq_len", type=POSITIVE_INT, default=None,
                          help="BPTT length: tokens per batch and stream " + preset_default("seq_len"))
    training.add_argument("--clip", type=CLIP, default=None,
                          help="clip the gradient norm to this (0: no clipping) " + preset_default("clip"))
    training.add_argument("--weight_decay", type=NON_NEGATIVE, default=None,
                          help="AdamW decoupled weight decay " + preset_default("weight_decay"))
    training.add_argument("--warmup_steps", type=COUNT, default=100,
                          help="linear warm-up steps, then cosine decay to lr/10")
    training.add_argument("--max_steps", type=COUNT, default=0, help="stop after this many steps (0: no limit)")
    training.add_argument("--limit", type=COUNT, default=0, help="use only the first N training tokens (0: all)")

    add_output_args(p, "where to write the best model (default: checkpoints/best_<model>_<vocab>.pt, "
                       "best_<model>_<vocab>_quick.pt for the quick preset)",
                       "run folder (default: runs/<model>_<vocab>_<impl>, with _quick for the quick preset)")
    add_common_args(p, seed_help="seed for initialisation and dropout")
    return p


def resolve_args(args: argparse.Namespace) -> argparse.Namespace:
    """Fill unset flags from PRESETS[preset][vocab_type] and check what a user may get wrong."""
    preset = PRESETS[args.preset]
    if args.vocab_type not in preset:
        raise UserError(f"--preset {args.preset} trains a {' or '.join(preset)} model, not --vocab_type "
                        f"{args.vocab_type}; drop one of the two flags")
    for key, value in preset[args.vocab_type].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if (args.dataset == "ptb") != (args.vocab_type == "word"):
        wanted = "word" if args.dataset == "ptb" else "char"
        raise UserError(f"--dataset {args.dataset} goes with --vocab_type {wanted}")
    check_args(args, **FLAG_RANGES)        # the preset's values obey the same rules as typed ones
    if args.lr * args.weight_decay >= 1:   # AdamW multiplies each weight by (1 - lr * weight_decay) every step
        raise UserError(f"--lr {args.lr:g} times --weight_decay {args.weight_decay:g} must be below 1 (each step "
                        "would zero or flip every weight); lower one of them")
    if args.tie_weights and args.embed_dim != args.hidden_dim:
        raise UserError(f"--tie_weights needs --embed_dim == --hidden_dim (got {args.embed_dim} and "
                        f"{args.hidden_dim}); change one, or pass --no-tie_weights")
    suffix = "" if args.preset == "default" else f"_{args.preset}"
    run = f"{args.model_type}_{args.vocab_type}"
    args.checkpoint = args.checkpoint or str(STAGE_DIR / "checkpoints" / f"best_{run}{suffix}.pt")
    args.out_dir = args.out_dir or str(STAGE_DIR / "runs" / f"{run}_{args.impl}{suffix}")
    # the best model and the run's last state are two files: one path for both would lose one of them
    if Path(args.checkpoint).resolve() == (Path(args.out_dir) / "last.pt").resolve():
        raise UserError(f"--checkpoint {args.checkpoint} is the run's own last.pt; choose another path")
    if Path(args.checkpoint).is_dir():
        raise UserError(f"--checkpoint {args.checkpoint} is a folder; give the path of a .pt file to write")
    return args


def check_size(config: LMConfig, batch_size: int, seq_len: int, stream_len: int) -> None:
    """Refuse, before anything is allocated, a model or a batch that cannot fit in memory (a typo such as
    --hidden_dim 50000, or --seq_len as long as the whole text with a 10,000-word vocabulary). A batch holds
    min(seq_len, stream_len) tokens per stream."""
    params = config.num_parameters()
    if params > MAX_PARAMS:
        raise UserError(f"--embed_dim {config.embed_dim}, --hidden_dim {config.hidden_dim} and --num_layers "
                        f"{config.num_layers} make a model of {params:,} parameters, more than the {MAX_PARAMS:,} "
                        "that fit in memory for training; choose smaller sizes")
    numbers = batch_size * min(seq_len, stream_len) * (config.vocab_size + 6 * config.num_layers * config.hidden_dim)
    if numbers > MAX_STEP_NUMBERS:
        raise UserError(f"--batch_size {batch_size} x --seq_len {seq_len} tokens make a step of {numbers:,} numbers "
                        f"(logits over {config.vocab_size:,} tokens and the recurrent states), more than the "
                        f"{MAX_STEP_NUMBERS:,} that fit in memory; lower --batch_size or --seq_len")


def model_label(args: argparse.Namespace) -> str:
    """The model's name in metrics.json and progress.json: lstm_char_torch, lstm_char_torch_quick..."""
    suffix = "" if args.preset == "default" else f"_{args.preset}"
    return f"{args.model_type}_{args.vocab_type}_{args.impl}{suffix}"


def load_data(args: argparse.Namespace, resume: dict[str, Any] | None,
              log: logging.Logger) -> tuple[Vocabulary, torch.Tensor, torch.Tensor, dict[str, Any]]:
    """The vocabulary (the resumed run's, else built from the training text), the batchified training and
    validation streams, and the data's fingerprint (saved in last.pt, so that --resume can tell other text)."""
    splits, kind = load_corpus(args.dataset, args.data_dir)
    data = fingerprint(splits)
    if resume is not None:
        check_same_data(args, resume, data)
    train_tokens = splits["train"][: args.limit] if args.limit else splits["train"]
    where = Path(args.out_dir) / "last.pt"
    vocab = (Vocabulary.from_dict(resume.get("vocab", {}), str(where)) if resume is not None
             else Vocabulary.build(splits["train"], kind, where=describe_split(args.dataset, "train")))
    if vocab.kind != kind:
        raise UserError(f"{where} holds a {vocab.kind} vocabulary, but {args.dataset} is read as {kind}s; "
                        "start a new run with another --out_dir")
    what = (f"the first {len(train_tokens):,} tokens (--limit {args.limit})" if args.limit
            else describe_split(args.dataset, "train"))
    train_data = batchify(vocab.encode(train_tokens), args.batch_size, what)                # (B, N / B)
    # a BPTT window longer than a stream would be cut to the stream's length without a word: say so instead
    if args.seq_len > train_data.shape[1] - 1:
        raise UserError(f"--seq_len {args.seq_len} is longer than each of the --batch_size {args.batch_size} "
                        f"streams of {what} ({train_data.shape[1] - 1:,} tokens to predict each); use --seq_len "
                        f"{train_data.shape[1] - 1} or less, or a smaller --batch_size")
    valid_data = batchify(vocab.encode(splits["valid"]), min(args.batch_size, 16),
                          describe_split(args.dataset, "valid"))
    log.info(f"{args.dataset}: {len(train_tokens):,} train / {len(splits['valid']):,} valid {kind}s, "
             f"vocabulary {len(vocab)}; run folder {args.out_dir}")
    return vocab, train_data, valid_data, {**data, "train_size": len(train_tokens)}


def fingerprint(splits: dict[str, list[str]]) -> dict[str, Any]:
    """sha256 and lengths of the training and validation text: the same --dataset read from another --data_dir
    (another text) gives other numbers."""
    digest = hashlib.sha256()
    for split in ("train", "valid"):
        digest.update("\x00".join(splits[split]).encode("utf-8", "surrogatepass") + b"\x01")
    return {"sha256": digest.hexdigest(), "tokens": [len(splits["train"]), len(splits["valid"])]}


def check_same_data(args: argparse.Namespace, resume: dict[str, Any], data: dict[str, Any]) -> None:
    """--resume must read the text the run was trained on (a last.pt saved before fingerprints has none: let it be)."""
    saved = resume.get("data")
    if saved is None or saved == data:
        return
    old_args = resume.get("args") if isinstance(resume.get("args"), dict) else {}

    def folder(value: Any) -> str:
        return f"--data_dir {value}" if value else "the default data folder"
    raise UserError(f"--resume: {Path(args.out_dir) / 'last.pt'} was trained on other {args.dataset} text (from "
                    f"{folder(old_args.get('data_dir'))}) than {folder(args.data_dir)} holds now; resume with the "
                    "run's own data, or start a new run with another --out_dir")


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


def train_one_epoch(args: argparse.Namespace, model: RNNLanguageModel, optimizer: torch.optim.Optimizer,
                    data: torch.Tensor, run: ResumableRun, monitor: TrainingMonitor, total_steps: int,
                    device: torch.device) -> tuple[int, float]:
    """One pass over the training streams, from batch `run.state["batch_in_epoch"]`; returns (tokens, seconds)."""
    state = run.state
    tokens, tick, seconds_before = 0, time.time(), state["train_seconds"]
    for inputs, targets in bptt_batches(data, args.seq_len, state["batch_in_epoch"]):    # (B, T), (B, T)
        lr = warmup_cosine(state["global_step"], total_steps, args.warmup_steps, args.lr, args.lr / 10)
        for group in optimizer.param_groups:
            group["lr"] = lr
        logits, hidden = model(inputs.to(device), state["hidden"])                       # (B, T, V)
        loss = F.cross_entropy(logits.flatten(0, 1), targets.to(device).flatten())
        check_finite(loss.item(), "training", state["global_step"] + 1, args.lr)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        # --clip 0 turns clipping off: an infinite bound leaves the gradients as they are (the norm is still logged)
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip or math.inf)
        optimizer.step()

        state["hidden"] = detach_state(hidden)          # the values flow on to the next batch, the gradients stop
        tokens += targets.numel()
        state["epoch_loss_sum"] += loss.item() * targets.numel()
        state["epoch_tokens"] += targets.numel()
        state["batch_in_epoch"] += 1
        state["global_step"] += 1
        state["train_seconds"] = seconds_before + time.time() - tick
        monitor.step(loss.item(), items=targets.numel(), epoch=f"{state['epoch'] + 1}/{args.epochs}", lr=lr,
                     grad_norm=grad_norm.item())
        run.step_done(f"epoch {state['epoch'] + 1}, batch {state['batch_in_epoch']}")
        if args.max_steps and state["global_step"] >= args.max_steps:
            break
    return tokens, time.time() - tick


def check_finite(loss: float, what: str, step: int, lr: float) -> None:
    """A loss that became NaN or infinite ends the run in one line: nothing after it could be trusted, so neither
    last.pt (the last evaluation's state) nor the best checkpoint is written over."""
    if not math.isfinite(loss):
        raise UserError(f"the {what} loss became {loss} at step {step:,}: the model diverged; use a smaller --lr "
                        f"(now {lr:g})")


def perplexity(loss: float) -> float:
    """exp(loss), or inf where that overflows a float (a loss above about 709 nats)."""
    return math.exp(loss) if loss < math.log(sys.float_info.max) else math.inf


@torch.no_grad()
def sample_text(model: RNNLanguageModel, vocab: Vocabulary, device: torch.device) -> str:
    """The fixed-prompt, fixed-seed sample shown at every evaluation (its own generator: the training RNG is left
    alone, so a resumed run stays exact)."""
    settings = SAMPLE[vocab.kind]
    was_training = model.training
    ids = vocab.encode(vocab.split(settings["prompt"])).to(device)
    generator = torch.Generator().manual_seed(SAMPLE_SEED)
    tokens = model.generate(ids, settings["max_new_tokens"], SAMPLE_TEMPERATURE, generator=generator)
    text = settings["prompt"] + "".join(vocab.piece(vocab.itos[t]) for t in tokens)
    model.train(was_training)
    return text


def epoch_row(state: dict[str, Any], val_loss: float, tokens: int, seconds: float, lr: float) -> dict[str, Any]:
    """One line of history.json: the epoch's mean training loss, validation loss, perplexity and bits per token."""
    return {"epoch": state["epoch"] + 1, "steps": state["global_step"],
            "train_loss": state["epoch_loss_sum"] / max(state["epoch_tokens"], 1), "val_loss": val_loss,
            "val_ppl": perplexity(val_loss), "val_bpc": val_loss / math.log(2),
            "tokens_per_s": tokens / max(seconds, 1e-9), "lr": lr, "elapsed_s": state["train_seconds"]}


def main(argv: Sequence[str] | None = None) -> int:
    args = resolve_args(build_parser().parse_args(argv))
    started = time.time()
    set_threads(args.num_threads)
    device = get_device(args.device)
    out_dir, best_path = Path(args.out_dir), Path(args.checkpoint)
    run = ResumableRun(args, STAGE, MODEL_NAME, out_dir / "last.pt", must_match=RESUME_MUST_MATCH,
                       map_location=device, state={
                           "epoch": 0, "batch_in_epoch": 0, "global_step": 0, "hidden": None,
                           "best_val_loss": math.inf, "best_epoch": 0, "history": [], "train_seconds": 0.0,
                           "epoch_loss_sum": 0.0, "epoch_tokens": 0})
    log = setup_logging(out_dir)
    vocab, train_data, valid_data, data = load_data(args, run.resume, log)
    train_size = data.pop("train_size")

    # on --resume the flags that shape the model were checked against the saved run (RESUME_MUST_MATCH)
    config = LMConfig(vocab_size=len(vocab), model_type=args.model_type, impl=args.impl, embed_dim=args.embed_dim,
                      hidden_dim=args.hidden_dim, num_layers=args.num_layers, dropout=args.dropout,
                      tie_weights=args.tie_weights)
    check_size(config, args.batch_size, args.seq_len, train_data.shape[1] - 1)
    set_seed(args.seed)
    model = RNNLanguageModel(config).to(device)
    if run.resume:      # the saved weights and state must be those of this model (last.pt may have been edited)
        check_resume(run, config, args.batch_size)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    log.info(f"{config.model_type.upper()} ({config.impl}): {count_params(model):,} parameters, {config}")
    payload = {**checkpoint_header(STAGE, MODEL_NAME), "config": config.to_dict(), "vocab": vocab.to_dict(),
               "dataset": args.dataset, "data": data, "args": vars(args)}
    if run.attach(model, optimizer, payload=lambda: payload):
        log.info(f"resumed at epoch {run.state['epoch'] + 1}, batch {run.state['batch_in_epoch']}")
    vocab_path = best_path.parent / f"{vocab.kind}_vocabulary.json"
    vocab.save(vocab_path)

    state = run.state
    total_steps = args.epochs * num_batches(train_data, args.seq_len)
    if args.max_steps:
        total_steps = min(total_steps, args.max_steps)
    monitor = TrainingMonitor(out_dir, stage=STAGE, model=model_label(args), dataset=args.dataset, device=device,
                              total_steps=total_steps, done_steps=state["global_step"], unit="tokens", log=log,
                              title=f"{args.model_type.upper()} ({args.impl}) on {args.dataset}")
    with monitor, run:   # the monitor marks the run finished, interrupted (Ctrl-C) or failed
        while state["epoch"] < args.epochs and not (args.max_steps and state["global_step"] >= args.max_steps):
            tokens, seconds = train_one_epoch(args, model, optimizer, train_data, run, monitor, total_steps,
                                              device)
            with monitor.evaluating():
                row, improved, sample = end_of_epoch(args, model, optimizer, valid_data, vocab, run, payload,
                                                     tokens, seconds, device)
            log.info(f"epoch {row['epoch']:2d}  train loss {row['train_loss']:.4f}  val loss "
                     f"{row['val_loss']:.4f}  (ppl {row['val_ppl']:.2f}, {row['val_bpc']:.3f} bits/token)"
                     f"{'  *best*' if improved else ''}  {row['tokens_per_s']:,.0f} tokens/s  "
                     f"{state['train_seconds'] / 60:.1f} min")
            monitor.evaluated(row, state["history"], panels=[["train_loss", "val_loss"], ["tokens_per_s"]],
                              sample=sample)
    best = write_results(args, state["history"], count_params(model), time.time() - started, device, vocab_path,
                         train_size)
    log.info(f"best val loss {best['val_loss']:.4f} (ppl {best['val_ppl']:.2f}) at epoch {best['epoch']}; "
             f"checkpoint {best_path}")
    return 0


def check_resume(run: ResumableRun, config: LMConfig, batch_size: int) -> None:
    """The weights and the carried hidden state in last.pt must fit the model about to be trained."""
    model_from_checkpoint(run.last_path, lambda: RNNLanguageModel(config), run.resume.get("model_state"))
    hidden = run.resume.get("hidden")
    tensors = hidden if isinstance(hidden, (tuple, list)) else [] if hidden is None else [hidden]
    expected = (config.num_layers, batch_size, config.hidden_dim)
    if len(tensors) != (0 if hidden is None else 2 if config.model_type == "lstm" else 1) or any(
            not isinstance(t, torch.Tensor) or tuple(t.shape) != expected for t in tensors):
        raise UserError(f"{run.last_path}: the saved hidden state does not fit a {config.model_type} of this size "
                        "(the file was edited or pieced together); start a new run with another --out_dir")


def end_of_epoch(args: argparse.Namespace, model: RNNLanguageModel, optimizer: torch.optim.Optimizer,
                 valid_data: torch.Tensor, vocab: Vocabulary, run: ResumableRun, payload: dict[str, Any],
                 tokens: int, seconds: float, device: torch.device) -> tuple[dict[str, Any], bool, str]:
    """Validate, keep the best model, save last.pt and draw the sample; returns (history row, improved, sample)."""
    state = run.state
    val_loss = evaluate_stream(model, valid_data, args.seq_len, device)
    check_finite(val_loss, "validation", state["global_step"], args.lr)
    row = epoch_row(state, val_loss, tokens, seconds, optimizer.param_groups[0]["lr"])
    state["history"].append(row)
    state.update(epoch=row["epoch"], batch_in_epoch=0, hidden=None, epoch_loss_sum=0.0, epoch_tokens=0)
    improved = val_loss < state["best_val_loss"]
    if improved:
        state.update(best_val_loss=val_loss, best_epoch=row["epoch"])
        save_checkpoint(Path(args.checkpoint), {
            **payload, "model_state": cpu_weights(model), "epoch": row["epoch"], "global_step": state["global_step"],
            "best_val_loss": val_loss, "history": state["history"]})
    run.save()
    return row, improved, sample_text(model, vocab, device)


def cpu_weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu() for k, v in model.state_dict().items()}


def write_results(args: argparse.Namespace, history: list[dict[str, Any]], params: int, seconds: float,
                  device: torch.device, vocab_path: Path, train_size: int) -> dict[str, Any]:
    """metrics.json (the best epoch's scores) in the run folder (history.json and curves.png are rewritten at every
    evaluation by the monitor); returns the best row."""
    best = min(history, key=lambda r: r["val_loss"])
    write_metrics(Path(args.out_dir) / "metrics.json", stage=STAGE, model=model_label(args),
                  dataset=args.dataset, split="valid", params=params, seconds=seconds,
                  seconds_key="train_seconds", device=device,
                  metrics={"val_loss": best["val_loss"], "val_ppl": best["val_ppl"], "val_bpc": best["val_bpc"],
                           "best_epoch": best["epoch"], "epochs_run": len(history),
                           "train_tokens_per_s": sum(r["tokens_per_s"] for r in history) / len(history),
                           "fit_seconds": round(history[-1]["elapsed_s"], 3)},
                  extra={"checkpoint": args.checkpoint, "vocab": str(vocab_path), "train_tokens": train_size})
    return best


if __name__ == "__main__":
    run_main(main)
