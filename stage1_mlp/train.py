"""Train the bag-of-n-grams MLP text classifier (stage 1).

    python stage1_mlp/train.py                        # IMDb, torch implementation, good defaults
    python stage1_mlp/train.py --preset quick         # a smaller model in two short epochs (well under a minute)
    python stage1_mlp/train.py --impl scratch         # hand-written forward/backward/Adam
    python stage1_mlp/train.py --dataset ag_news --epochs 20
    python stage1_mlp/train.py --resume               # carry on after Ctrl-C (same flags)

(From inside stage1_mlp/ the same commands are `python train.py ...`.)
Writes the best model (by validation accuracy) to checkpoints/best_model.pt, its vocabulary as JSON
beside it, and the run's log, curves, history, TensorBoard events and metrics.json to runs/<dataset>_<impl>/
(the quick preset: checkpoints/best_model_quick.pt and runs/<dataset>_<impl>_quick/).
"""
from __future__ import annotations

import argparse
import logging
import math
import time
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from scripts.classification_data import DATASETS, TextDataset, load_split, train_val_split
from scripts.checks import COUNT, FRACTION, POSITIVE_INT, Range, check_args
from scripts.common import (ArgParser, UserError, add_common_args, add_output_args, checkpoint_header, count_params,
                            get_device, run_main, save_checkpoint, set_seed, set_threads, setup_logging,
                            write_metrics)
from scripts.monitor import TrainingMonitor
from scripts.training import ResumableRun
from stage1_mlp.data.features import MAX_BUCKETS, MAX_NGRAMS, MAX_WORDS, FeatureSet, Featurizer, tokenize
from stage1_mlp.models.checkpoint import build_model, load_model
from stage1_mlp.models.config import LIMITS, MAX_TABLE, MLPConfig
from stage1_mlp.models.mlp_scratch import ScratchAdam, softmax_cross_entropy
from stage1_mlp.models.mlp_torch import SparseDenseAdam

STAGE = "stage1_mlp"
STAGE_DIR = Path(__file__).resolve().parent
MODEL_NAME = "ngram_mlp"
# flags that decide the data, the model or the optimizer: --resume refuses to change them mid-run
RESUME_MUST_MATCH = ["impl", "seed", "limit", "val_fraction", "min_freq", "ngrams", "buckets", "embed_dim",
                     "hidden_dim", "dropout", "lr", "batch_size"]
# good settings per preset (flags left unset take these). "quick" hashes only bigrams into a quarter of the buckets
# (half the features per document, so featurizing and every step are faster) and takes 4x larger batches at 4x the
# learning rate: two epochs reach about the default's test accuracy in a fraction of its time (results/TUNING.md)
PRESETS: dict[str, dict[str, Any]] = {
    "default": dict(epochs=10, lr=1e-3, batch_size=64, ngrams=3, buckets=2_000_000),
    "quick": dict(epochs=2, lr=4e-3, batch_size=256, ngrams=2, buckets=500_000),
}
# a few fixed texts the model classifies at every evaluation, to watch it learn (train.log, TensorBoard)
# the allowed values of the numeric flags (scripts/checks.py): each is checked before any work starts
RANGES = {
    "epochs": POSITIVE_INT, "batch_size": POSITIVE_INT, "min_freq": POSITIVE_INT, "patience": POSITIVE_INT,
    "lr": Range(float, lo=0, lo_open=True, hi=1),              # 0 would train nothing; Adam above 1 only diverges
    "embed_dim": Range(int, lo=1, hi=LIMITS["embed_dim"]), "hidden_dim": Range(int, lo=1, hi=LIMITS["hidden_dim"]),
    "dropout": FRACTION, "ngrams": Range(int, lo=1, hi=MAX_NGRAMS), "buckets": Range(int, lo=1, hi=MAX_BUCKETS),
    "val_fraction": Range(float, lo=0, hi=1, lo_open=True, hi_open=True),
    "limit": COUNT, "max_steps": COUNT,
}
SAMPLE_TEXTS = {
    "imdb": ["A moving, beautifully acted film.", "The acting was not bad, the story was good.",
             "The acting was not good, the story was bad."],
    "ag_news": ["The team won the championship after a late goal.", "Shares fell as the bank cut its profit outlook."],
}


def preset_default(key: str) -> str:
    """How --help states a flag whose default comes from --preset (its allowed values: the formatter adds them)."""
    shown = [f"{name} {values[key]:,}" if isinstance(values[key], int) else f"{name} {values[key]}"
             for name, values in PRESETS.items()]
    return f"(default: the preset's: {', '.join(shown)})"


def run_suffix(preset: str) -> str:
    """The default run folder and checkpoint of a preset other than "default" carry its name, so a quick run never
    overwrites a long one."""
    return "" if preset == "default" else f"_{preset}"


def build_parser() -> argparse.ArgumentParser:
    p = ArgParser(description=__doc__)
    p.add_argument("--preset", default="default", choices=list(PRESETS),
                   help="settings for unset flags: default (the README's model) or quick (a smaller model, two short "
                        "epochs)")
    p.add_argument("--dataset", default="imdb", choices=DATASETS, help="data set to train on")
    p.add_argument("--impl", default="torch", choices=["torch", "scratch"],
                   help="torch: nn + autograd; scratch: hand-written backward pass and Adam")
    p.add_argument("--epochs", type=RANGES["epochs"], default=None,
                   help="most epochs to train (early stopping may end sooner) " + preset_default("epochs"))
    p.add_argument("--lr", type=RANGES["lr"], default=None, help="Adam learning rate " + preset_default("lr"))
    p.add_argument("--batch_size", type=RANGES["batch_size"], default=None,
                   help="documents per step " + preset_default("batch_size"))

    model = p.add_argument_group("model and features")
    model.add_argument("--embed_dim", type=RANGES["embed_dim"], default=32,
                       help="size of each n-gram embedding")
    model.add_argument("--hidden_dim", type=RANGES["hidden_dim"], default=64,
                       help="size of the hidden ReLU layer")
    model.add_argument("--dropout", type=RANGES["dropout"], default=0.3,
                       help="dropout on the hidden layer")
    model.add_argument("--ngrams", type=RANGES["ngrams"], default=None,
                       help="longest word n-gram used (1: words only) " + preset_default("ngrams"))
    model.add_argument("--buckets", type=RANGES["buckets"], default=None,
                       help="hash buckets for the n-grams " + preset_default("buckets"))
    model.add_argument("--min_freq", type=RANGES["min_freq"], default=2,
                       help="words seen fewer times map to <unk>")

    training = p.add_argument_group("training")
    training.add_argument("--patience", type=RANGES["patience"], default=2,
                          help="stop after this many epochs without a better val accuracy")
    training.add_argument("--val_fraction", type=RANGES["val_fraction"], default=0.1,
                          help="share of train held out for validation")
    training.add_argument("--limit", type=RANGES["limit"], default=0,
                          help="use only this many training documents (0: all)")
    training.add_argument("--max_steps", type=RANGES["max_steps"], default=0,
                          help="stop after this many optimizer steps (0: no limit)")

    add_output_args(p, "where the best checkpoint is written (when not given: "
                        "stage1_mlp/checkpoints/best_model.pt; best_model_quick.pt for the quick preset)",
                       "run folder (when not given: stage1_mlp/runs/<dataset>_<impl>, with _quick at the end for the "
                       "quick preset)")
    add_common_args(p, seed_help="seed for the validation split, initialisation, data order and dropout")
    return p


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    args = build_parser().parse_args(argv)
    for key, value in PRESETS[args.preset].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    check_args(args, **RANGES)   # the values a preset filled in, too
    if args.ngrams > 1 and args.buckets * args.embed_dim > MAX_TABLE:
        raise UserError(f"--buckets {args.buckets:,} x --embed_dim {args.embed_dim} makes an embedding table of "
                        f"{args.buckets * args.embed_dim:,} numbers, more than the {MAX_TABLE:,} (1 GiB) this course "
                        "builds; lower --buckets or --embed_dim")
    suffix = run_suffix(args.preset)
    args.out_dir = args.out_dir or str(STAGE_DIR / "runs" / f"{args.dataset}_{args.impl}{suffix}")
    args.checkpoint = args.checkpoint or str(STAGE_DIR / "checkpoints" / f"best_model{suffix}.pt")
    best, last = Path(args.checkpoint), Path(args.out_dir) / "last.pt"
    if best.is_dir():
        raise UserError(f"--checkpoint {args.checkpoint} is a folder; give a file name, e.g. {best / 'best_model.pt'}")
    if best.resolve() == last.resolve():
        raise UserError(f"--checkpoint {args.checkpoint} is the run's resumable state (<out_dir>/last.pt); "
                        "give the best model another file name")
    return args


# ----------------------------------------------------------------------------- one step, both ways
def make_model(impl: str, config: MLPConfig, lr: float, device: torch.device) -> tuple[Any, Any]:
    """The model and its optimizer; both implementations draw the same initial distributions."""
    return make_optimizer(impl, build_model(impl, config).to(device), lr)


def make_optimizer(impl: str, model: Any, lr: float) -> tuple[Any, Any]:
    """`model` and its optimizer: torch's sparse + dense Adam, or the hand-written one."""
    return model, SparseDenseAdam(model, lr) if impl == "torch" else ScratchAdam(model.params, lr=lr)


def train_step(impl: str, model: Any, optimizer: Any, ids: torch.Tensor, offsets: torch.Tensor,
               labels: torch.Tensor) -> float:
    """One optimizer step; returns the batch loss. The two branches compute the same thing."""
    if impl == "torch":
        loss = F.cross_entropy(model(ids, offsets), labels)   # forward
        optimizer.zero_grad()
        loss.backward()                                       # autograd
        optimizer.step()
        return loss.item()
    logits, cache = model.forward(ids, offsets)               # forward, keeping what backward needs
    loss, dlogits = softmax_cross_entropy(logits, labels)
    optimizer.step(model.backward(dlogits, cache))            # hand-written backward, then Adam
    return loss.item()


@torch.no_grad()
def evaluate_loss_acc(model: Any, data: FeatureSet, device: torch.device,
                      batch_size: int = 1024) -> tuple[float, float]:
    """Mean cross-entropy and accuracy over `data` (dropout off; the model's mode is restored after)."""
    was_training = model.training
    model.eval()
    total_loss, correct = 0.0, 0
    for ids, offsets, labels in data.batches(batch_size):
        logits = model(ids.to(device), offsets.to(device))
        total_loss += F.cross_entropy(logits, labels.to(device), reduction="sum").item()
        correct += (logits.argmax(1).cpu() == labels).sum().item()
    model.train(was_training)
    return total_loss / len(data), correct / len(data)


@torch.no_grad()
def sample_predictions(model: Any, featurizer: Featurizer, classes: list[str], texts: list[str],
                       device: torch.device) -> str:
    """The model's class probabilities for a few fixed texts, one line each: what it can already tell apart."""
    was_training = model.training
    model.eval()
    ids, offsets, _ = FeatureSet.from_texts(featurizer, texts, [0] * len(texts)).batch(torch.arange(len(texts)))
    probs = torch.softmax(model(ids.to(device), offsets.to(device)), dim=1).cpu()   # (texts, classes)
    model.train(was_training)
    return "\n".join(f"{classes[int(p.argmax())]:>9} {p.max():6.1%}  {text}" for text, p in zip(texts, probs))


# ----------------------------------------------------------------------------- data and checkpoints
def read_data(args: argparse.Namespace, log: Any) -> tuple[TextDataset, torch.Tensor, torch.Tensor]:
    """The training documents (after --limit) and their train / validation split, each checked: called before the
    run folder is touched, so a missing or odd data set leaves it as it was.

    Validation is a fixed-seed slice of train; the test split is evaluate.py's."""
    full = load_split(args.dataset, "train", args.data_dir)
    if args.limit > len(full):
        log.info(f"note: --limit {args.limit:,} is more than the {len(full):,} training documents; using them all")
    elif args.limit:
        full = full.subset(torch.randperm(len(full), generator=torch.Generator().manual_seed(args.seed))[:args.limit])
    train_idx, val_idx = train_val_split(len(full), args.val_fraction, args.seed)
    if len(train_idx) == 0:
        raise UserError(f"--val_fraction {args.val_fraction} of {len(full)} documents leaves none to train on; "
                        "use a smaller --val_fraction or a larger --limit")
    # the data file has two classes or more (load_split checks it), but a small --limit or the held-out validation
    # documents may leave one: a model would only learn to answer that class
    classes_left = {full.labels[i] for i in train_idx.tolist()}
    if len(classes_left) < 2:
        only = full.classes[classes_left.pop()]
        cause = (f"--limit {args.limit:,}" if 0 < args.limit <= len(full) else full.source) + \
            f" with --val_fraction {args.val_fraction}"
        raise UserError(f"{cause} leaves training documents of one class only ({only!r}): a classifier learns nothing "
                        "from them; use a larger --limit or a smaller --val_fraction")
    return full, train_idx, val_idx


def featurize(args: argparse.Namespace, full: TextDataset, train_idx: torch.Tensor, val_idx: torch.Tensor,
              saved_featurizer: Featurizer | None) -> tuple[Featurizer, FeatureSet, FeatureSet]:
    """Train and validation features. A resumed run reuses the featurizer it saved (the same vocabulary, so the
    same feature ids); a new run builds it from the training documents."""
    train_texts, val_texts = full.subset(train_idx), full.subset(val_idx)
    train_tokens = [tokenize(t) for t in train_texts.texts]
    if saved_featurizer is not None:
        featurizer = saved_featurizer
    else:
        featurizer = Featurizer.build(train_tokens, args.min_freq, args.ngrams, args.buckets)
        check_vocabulary(args, featurizer, train_tokens)
    train_set = FeatureSet.from_texts(featurizer, train_tokens, train_texts.labels)
    val_set = FeatureSet.from_texts(featurizer, val_texts.texts, val_texts.labels)
    return featurizer, train_set, val_set


def check_vocabulary(args: argparse.Namespace, featurizer: Featurizer, train_tokens: list[list[str]]) -> None:
    """A vocabulary of <unk> alone would make every document the same bag: the model could learn nothing."""
    if featurizer.num_words < 2:
        from collections import Counter  # noqa: PLC0415

        counts = Counter(word for tokens in train_tokens for word in tokens)
        top = max(counts.values(), default=0)
        raise UserError(f"--min_freq {args.min_freq:,} keeps no word: the most frequent word of the "
                        f"{len(train_tokens):,} training documents appears {top:,} times; use a smaller --min_freq")
    if featurizer.num_words > MAX_WORDS:
        raise UserError(f"--min_freq {args.min_freq} keeps {featurizer.num_words:,} words, more than the {MAX_WORDS:,} "
                        "this course builds; raise --min_freq")


def checkpoint_payload(args: argparse.Namespace, config: MLPConfig, featurizer: Featurizer,
                       classes: list[str]) -> dict[str, Any]:
    """Everything evaluate.py needs besides the weights: config, vocabulary, classes, and where they came from."""
    return {**checkpoint_header(STAGE, MODEL_NAME), "impl": args.impl, "dataset": args.dataset,
            "config": config.to_dict(), "featurizer": featurizer.to_dict(), "classes": classes, "args": vars(args)}


def best_checkpoint(args: argparse.Namespace, model: Any, config: MLPConfig, featurizer: Featurizer,
                    classes: list[str], state: dict[str, Any]) -> dict[str, Any]:
    """best_model.pt: the payload and the weights, without the optimizer state that only last.pt needs."""
    return {**checkpoint_payload(args, config, featurizer, classes),
            "model_state": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            "epoch": state["epoch"], "global_step": state["global_step"], "best_val_acc": state["best_val_acc"],
            "val_loss": state["history"][-1]["val_loss"], "history": state["history"]}


def train_one_epoch(args: argparse.Namespace, model: Any, optimizer: Any, train_set: FeatureSet, run: ResumableRun,
                    monitor: TrainingMonitor, device: torch.device) -> tuple[int, float]:
    """Train until the end of the current epoch (from `state["step_in_epoch"]` when resuming).

    Returns (samples seen, seconds). After a Ctrl-C, `run.step_done` saves last.pt and ends the program (exit 130).
    """
    state = run.state
    epoch = state["epoch"] + 1
    # the shuffle depends only on (seed, epoch), so a resumed epoch replays the same order
    order = torch.randperm(len(train_set), generator=torch.Generator().manual_seed(args.seed * 10_007 + epoch))
    samples, tick, seconds_before = 0, time.time(), state["train_seconds"]
    for ids, offsets, labels in train_set.batches(args.batch_size, order, state["step_in_epoch"]):
        if args.max_steps and state["global_step"] >= args.max_steps:   # a resumed run that had reached it
            break
        loss = train_step(args.impl, model, optimizer, ids.to(device), offsets.to(device), labels.to(device))
        if not math.isfinite(loss):   # nothing after this step could be trusted; last.pt still holds the last epoch
            raise UserError(f"the training loss became {loss} at step {state['global_step'] + 1:,}: the model "
                            f"diverged; use a smaller --lr (now {args.lr:g})")
        samples += len(labels)
        state["epoch_loss_sum"] += loss * len(labels)
        state["epoch_seen"] += len(labels)
        state["step_in_epoch"] += 1
        state["global_step"] += 1
        state["train_seconds"] = seconds_before + time.time() - tick
        monitor.step(loss, items=len(labels), epoch=f"{epoch}/{args.epochs}")
        run.step_done(f"epoch {epoch}, step {state['step_in_epoch']}")
        if args.max_steps and state["global_step"] >= args.max_steps:
            break
    return samples, time.time() - tick


def write_summary(args: argparse.Namespace, state: dict[str, Any], params: int, device: torch.device,
                  seconds: float, sizes: dict[str, int]) -> None:
    """metrics.json of the finished run (the best epoch's scores); history.json and curves.png are rewritten at every
    evaluation."""
    out_dir = Path(args.out_dir)
    best = max(state["history"], key=lambda r: r["val_acc"])
    mean_speed = sum(r["samples_per_s"] for r in state["history"]) / len(state["history"])
    write_metrics(out_dir / "metrics.json", stage=STAGE, model=f"{MODEL_NAME}_{args.impl}", dataset=args.dataset,
                  split="val", params=params, seconds=seconds, seconds_key="train_seconds", device=device,
                  metrics={"val_accuracy": best["val_acc"], "val_loss": best["val_loss"], "best_epoch": best["epoch"],
                           "epochs_run": len(state["history"]), "train_samples_per_s": mean_speed,
                           "fit_seconds": round(state["train_seconds"], 3)},
                  extra={"checkpoint": str(args.checkpoint), **sizes})


# ----------------------------------------------------------------------------- main
def new_config(args: argparse.Namespace, featurizer: Featurizer, num_classes: int) -> MLPConfig:
    try:
        return MLPConfig(num_features=featurizer.num_features, num_classes=num_classes, embed_dim=args.embed_dim,
                         hidden_dim=args.hidden_dim, dropout=args.dropout)
    except ValueError as err:   # the vocabulary and the buckets together make too large a table
        raise UserError(f"the model these flags describe is too large ({err}); lower --buckets or --embed_dim, "
                        "or raise --min_freq") from None


def resume_run(run: ResumableRun, model: Any, optimizer: Any, payload: Any) -> bool:
    """`run.attach` (which refuses a last.pt whose weights, optimizer state or counters were edited), and counters
    that are not finite numbers refused in one line instead of failing in the middle of training."""
    resumed = run.attach(model, optimizer, payload)
    for key, value in run.state.items():
        ok = isinstance(value, list) if key == "history" else (
            isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= -1)
        if not ok:
            raise UserError(f"{run.last_path}: its training state has {key} = {str(value)[:20]!r}; start a new run "
                            "(another --out_dir, or without --resume)")
    return resumed


class Remember(logging.Handler):
    """Keeps the log records said before the run's train.log may be opened."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def console_log() -> tuple[logging.Logger, Remember]:
    """The log on the console only (the run folder is not touched yet), remembering what it says."""
    log, early = setup_logging(None), Remember()
    log.addHandler(early)
    return log, early


def open_run_log(out_dir: Path, early: Remember) -> logging.Logger:
    """The log on the console and in <out_dir>/train.log, which first gets the lines the console already showed."""
    log = setup_logging(out_dir)
    for handler in log.handlers:
        if isinstance(handler, logging.FileHandler):
            for record in early.records:
                handler.handle(record)
    return log


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.time()
    set_threads(args.num_threads)
    device = get_device(args.device)
    out_dir, best_path = Path(args.out_dir), Path(args.checkpoint)
    # until every input is checked (data, last.pt, the model) the run folder is left as it was: what is said goes
    # to the console and reaches train.log when it is opened
    log, early = console_log()
    log.info(f"{'resuming' if args.resume else 'training'} {args.impl} MLP on {args.dataset} ({device}); "
             f"run folder {out_dir}")
    full, train_idx, val_idx = read_data(args, log)
    run = ResumableRun(args, STAGE, MODEL_NAME, out_dir / "last.pt", must_match=RESUME_MUST_MATCH, state={
        "epoch": 0, "step_in_epoch": 0, "global_step": 0, "best_val_acc": -1.0, "best_epoch": 0, "bad_epochs": 0,
        "history": [], "train_seconds": 0.0, "epoch_loss_sum": 0.0, "epoch_seen": 0})  # sums of the current epoch

    # a resumed run rebuilds the model, vocabulary and classes last.pt saved, each checked (models/checkpoint.py)
    saved, model = load_model(run.last_path, run.resume, device) if run.resume else (None, None)
    featurizer, train_set, val_set = featurize(args, full, train_idx, val_idx, saved and saved.featurizer)
    classes = full.classes
    log.info(f"{full.source}: {len(train_set)} train / {len(val_set)} val documents, {featurizer.num_words} words + "
             f"{featurizer.num_features - featurizer.num_words} n-gram buckets, "
             f"{len(train_set.ids) / len(train_set):.0f} features per document ({time.time() - started:.1f}s)")
    if saved is not None:
        config, classes = saved.config, saved.classes
        model, optimizer = make_optimizer(args.impl, model, args.lr)
    else:
        config = new_config(args, featurizer, len(classes))
        set_seed(args.seed)
        model, optimizer = make_model(args.impl, config, args.lr, device)
    params = count_params(model.parameters())
    log.info(f"model: {params:,} parameters ({config})")
    resumed = resume_run(run, model, optimizer, payload=lambda: checkpoint_payload(args, config, featurizer, classes))
    log = open_run_log(out_dir, early)   # every input checked: from here on the run folder is written
    if resumed:
        log.info(f"resumed at epoch {run.state['epoch'] + 1}, step {run.state['step_in_epoch']} of that epoch")
    featurizer.save(out_dir / "vocab.json")

    state = run.state
    steps_per_epoch = math.ceil(len(train_set) / args.batch_size)
    total_steps = args.epochs * steps_per_epoch   # the planned epochs; early stopping may end the run sooner
    if args.max_steps:
        total_steps = min(total_steps, args.max_steps)
    monitor = TrainingMonitor(out_dir, stage=STAGE, model=f"{MODEL_NAME}_{args.impl}", dataset=args.dataset,
                              device=device, total_steps=total_steps, done_steps=state["global_step"],
                              unit="samples", title=f"stage 1 MLP ({args.impl}) on {args.dataset}", log=log)
    sample_texts = SAMPLE_TEXTS[args.dataset]
    # a resumed run that had already stopped (early stopping or --max_steps, after its epoch's evaluation) stays stopped
    stop = state["step_in_epoch"] == 0 and (state["bad_epochs"] >= args.patience
                                            or 0 < args.max_steps <= state["global_step"])
    # `run`: from here on, the first Ctrl-C saves last.pt at the end of the current step and exits 130;
    # `monitor`: the bar over all steps of the planned epochs, TensorBoard, and progress.json saying how the run ended
    with run, monitor:
        while state["epoch"] < args.epochs and not stop:
            samples, seconds = train_one_epoch(args, model, optimizer, train_set, run, monitor, device)
            with monitor.evaluating():   # evaluation and checkpoint writes count neither in the ETA nor in samples/s
                val_loss, val_acc = evaluate_loss_acc(model, val_set, device)
                epoch = state["epoch"] + 1
                row = {"epoch": epoch, "steps": state["global_step"],
                       "train_loss": state["epoch_loss_sum"] / max(state["epoch_seen"], 1), "val_loss": val_loss,
                       "val_acc": val_acc, "samples_per_s": samples / max(seconds, 1e-9), "epoch_seconds": seconds}
                state["history"].append(row)
                state.update(epoch=epoch, step_in_epoch=0, epoch_loss_sum=0.0, epoch_seen=0)
                improved = val_acc > state["best_val_acc"]
                if improved:   # early stopping keeps the epoch with the best validation accuracy
                    state.update(best_val_acc=val_acc, best_epoch=epoch, bad_epochs=0)
                    save_checkpoint(best_path, best_checkpoint(args, model, config, featurizer, classes, state))
                    featurizer.save(best_path.with_suffix(".vocab.json"))
                else:
                    state["bad_epochs"] += 1
                log.info(f"epoch {epoch:2d}  train loss {row['train_loss']:.4f}  val loss {val_loss:.4f}  "
                         f"val acc {val_acc:.4f}{'  *best*' if improved else ''}  "
                         f"{row['samples_per_s']:.0f} samples/s  {seconds:.1f}s")
                stop = state["bad_epochs"] >= args.patience or 0 < args.max_steps <= state["global_step"]
                if state["bad_epochs"] >= args.patience and epoch < args.epochs:
                    log.info(f"early stopping: no better val acc for {args.patience} epochs, so the run ends after "
                             f"epoch {epoch} of {args.epochs} (step {state['global_step']:,} of {total_steps:,})")
                run.save()
                sample = sample_predictions(model, featurizer, classes, sample_texts, device)
            monitor.evaluated(row, state["history"], panels=[["train_loss", "val_loss"], ["val_acc"]], sample=sample)

    write_summary(args, state, params, device, time.time() - started,
                  {"train_size": len(train_set), "val_size": len(val_set)})
    log.info(f"best val acc {state['best_val_acc']:.4f} at epoch {state['best_epoch']}; "
             f"checkpoint {best_path}; curves {out_dir / 'curves.png'}")
    return 0


if __name__ == "__main__":
    run_main(main)
