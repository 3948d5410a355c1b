"""Train the LSTM text classifier on IMDb or AG News, then score it on the test set (stage 2).

    python stage2_rnn_lstm/train_classifier.py --dataset imdb
    python stage2_rnn_lstm/train_classifier.py --dataset ag_news --epochs 5
    python stage2_rnn_lstm/train_classifier.py --dataset imdb --resume        # after Ctrl-C

The same files, validation split and test set as stage 1's MLP, so the two can be compared directly.
Writes checkpoints/best_classifier_<dataset>.pt (vocabulary inside and beside it as JSON) and
runs/classify_<dataset>/ with metrics.json (test accuracy, macro-F1, training time, ms per document); history.json
and curves.png there are rewritten after every epoch, and TensorBoard event files follow the run.
"""
from __future__ import annotations

import argparse
import hashlib
import math
import re
import time
from collections import Counter
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch
import torch.nn.functional as F

from scripts.checks import CLIP, COUNT, FRACTION, POSITIVE_INT, Range
from scripts.classification_data import DATASETS, classification_report, load_split, train_val_split
from scripts.common import (ArgParser, UserError, add_common_args, add_output_args, checkpoint_header, count_params,
                            get_device, load_checkpoint, model_from_checkpoint, run_main, save_checkpoint, set_seed,
                            set_threads, setup_logging, write_json, write_metrics)
from scripts.monitor import TrainingMonitor
from scripts.training import ResumableRun
from stage2_rnn_lstm.models.classifier import ClassifierConfig, RNNClassifier

STAGE = "stage2_rnn_lstm"
STAGE_DIR = Path(__file__).resolve().parent
MODEL_NAME = "rnn_classifier"
PAD, UNK = "<pad>", "<unk>"
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?|[!?.,;:()\"-]")
# what --resume must find unchanged: the model's shape, the vocabulary, the split and the batches (--epochs and
# --patience may change: more epochs carry on where the run stopped)
RESUME_MUST_MATCH = ("model_type", "impl", "embed_dim", "hidden_dim", "num_layers", "dropout", "vocab_size", "max_len",
                     "limit", "val_fraction", "seed", "batch_size", "lr", "clip")
# allowed values of the size flags: far beyond any sensible model, so that a typo is refused in one line instead of
# filling the memory
WIDTH = Range(int, lo=1, hi=65_536)
LAYERS = Range(int, lo=1, hi=64)
VOCAB_SIZE = Range(int, lo=3, hi=1_000_000)        # <pad>, <unk> and at least one word
MAX_LEN = Range(int, lo=1, hi=100_000)
VAL_FRACTION = Range(float, lo=0, hi=1, lo_open=True, hi_open=True)
LR = Range(float, lo=0, hi=1, lo_open=True)        # 0 would train nothing; AdamW above 1 only diverges
MAX_PARAMS = 500_000_000


def tokenize(text: str) -> list[str]:
    """Lower-case words and punctuation, without IMDb's `<br />` tags (order matters now, so keep punctuation)."""
    return _WORD.findall(text.replace("<br />", " ").lower())


def build_vocab(docs: list[list[str]], max_size: int, min_freq: int = 2) -> list[str]:
    counts = Counter(t for doc in docs for t in doc)
    words = sorted((w for w, c in counts.items() if c >= min_freq), key=lambda w: (-counts[w], w))
    return [PAD, UNK, *words[: max_size - 2]]


def encode(docs: list[list[str]], stoi: dict[str, int], max_len: int) -> list[torch.Tensor]:
    """Token ids per document, cut to the first `max_len` tokens (at least one token: <unk> for an empty text)."""
    return [torch.tensor([stoi.get(t, 1) for t in doc[:max_len]] or [1], dtype=torch.long) for doc in docs]


def pad_batch(docs: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T_max) ids padded with 0 at the end, and the true lengths (B,)."""
    lengths = torch.tensor([len(d) for d in docs])
    return torch.nn.utils.rnn.pad_sequence(docs, batch_first=True), lengths


def bucketed_batches(lengths: list[int], batch_size: int, generator: torch.Generator) -> list[list[int]]:
    """Shuffle, then sort within windows of 50 batches so a batch holds texts of similar length (less padding)."""
    order = torch.randperm(len(lengths), generator=generator).tolist()
    window = batch_size * 50
    batches = []
    for start in range(0, len(order), window):
        chunk = sorted(order[start:start + window], key=lambda i: lengths[i])
        batches += [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
    shuffled = torch.randperm(len(batches), generator=generator).tolist()
    return [batches[i] for i in shuffled]


def in_order_batches(docs: list[torch.Tensor],
                     batch_size: int) -> Iterator[tuple[list[int], torch.Tensor, torch.Tensor]]:
    by_length = sorted(range(len(docs)), key=lambda i: len(docs[i]))
    for start in range(0, len(docs), batch_size):
        index = by_length[start:start + batch_size]
        yield (index, *pad_batch([docs[i] for i in index]))


@torch.no_grad()
def predict(model: RNNClassifier, docs: list[torch.Tensor], device: torch.device,
            batch_size: int = 256) -> torch.Tensor:
    """Class probabilities (N, C) in the original order."""
    model.eval()
    probs = torch.zeros(len(docs), model.config.num_classes)
    for index, tokens, lengths in in_order_batches(docs, batch_size):
        probs[index] = torch.softmax(model(tokens.to(device), lengths.to(device)), dim=1).cpu()
    model.train()
    return probs


def build_parser() -> argparse.ArgumentParser:
    p = ArgParser(description="Train and test the stage 2 LSTM text classifier.")
    p.add_argument("--dataset", default="imdb", choices=DATASETS, help="data set")
    p.add_argument("--model_type", default="lstm", choices=["rnn", "lstm", "gru"], help="recurrent cell")
    p.add_argument("--impl", default="torch", choices=["torch", "scratch"], help="nn.LSTM or the cells of models/")
    p.add_argument("--epochs", type=POSITIVE_INT, default=4,
                   help="most epochs (early stopping on validation accuracy)")
    p.add_argument("--lr", type=LR, default=2e-3, help="AdamW learning rate")
    p.add_argument("--batch_size", type=POSITIVE_INT, default=64, help="texts per step")

    model = p.add_argument_group("model")
    model.add_argument("--embed_dim", type=WIDTH, default=128, help="word embedding size")
    model.add_argument("--hidden_dim", type=WIDTH, default=128, help="hidden state size")
    model.add_argument("--num_layers", type=LAYERS, default=1, help="stacked recurrent layers")
    model.add_argument("--dropout", type=FRACTION, default=0.3,
                       help="dropout on embeddings and the pooled vector")
    model.add_argument("--vocab_size", type=VOCAB_SIZE, default=30000,
                       help="most frequent words kept (the rest are <unk>)")
    model.add_argument("--max_len", type=MAX_LEN, default=400,
                       help="read at most this many tokens of each text")

    training = p.add_argument_group("training")
    training.add_argument("--patience", type=POSITIVE_INT, default=1,
                          help="epochs without a better validation accuracy before stopping")
    training.add_argument("--clip", type=CLIP, default=1.0,
                          help="clip the gradient norm to this (0: no clipping)")
    training.add_argument("--val_fraction", type=VAL_FRACTION, default=0.1,
                          help="share of train held out for validation")
    training.add_argument("--limit", type=COUNT, default=0, help="use only N training and N test texts (0: all)")

    add_output_args(p, "where to write the best model (checkpoints/best_classifier_<dataset>.pt)",
                       "run folder (runs/classify_<dataset>)")
    add_common_args(p, seed_help="seed for the validation split, initialisation, batch order and dropout")
    return p


def load_data(args: argparse.Namespace, resume: dict[str, Any] | None, last_path: Path) -> dict[str, Any]:
    """Training and validation texts as token ids (the validation split held out of train), the vocabulary
    (the resumed run's, else built from the training texts), the class names and the data's fingerprint."""
    full = load_split(args.dataset, "train", args.data_dir)
    fingerprint = data_fingerprint(full.texts, full.labels)
    if resume is not None and resume.get("data") not in (None, fingerprint):    # a last.pt from before: no check
        old_args = resume.get("args") if isinstance(resume.get("args"), dict) else {}
        raise UserError(f"--resume: {last_path} was trained on other {args.dataset} texts (from "
                        f"{data_folder(old_args.get('data_dir'))}) than {data_folder(args.data_dir)} holds now; "
                        "resume with the run's own data, or start a new run with another --out_dir")
    if args.limit:
        full = full.subset(torch.randperm(len(full), generator=torch.Generator().manual_seed(args.seed))[:args.limit])
    train_idx, val_idx = train_val_split(len(full), args.val_fraction, args.seed)
    if len(train_idx) == 0:
        raise UserError(f"--val_fraction {args.val_fraction} of {len(full)} text{'s' if len(full) > 1 else ''} "
                        f"{'(--limit ' + str(args.limit) + ') ' if args.limit else ''}leaves none to train on; "
                        "use a larger --limit or a smaller --val_fraction")
    train_labels = [full.labels[i] for i in train_idx.tolist()]
    if len(set(train_labels)) < 2:      # a model shown one class learns to say it always
        flags = f"--limit {args.limit} and " if args.limit else ""
        raise UserError(f"{flags}--val_fraction {args.val_fraction} leave {len(train_labels)} training "
                        f"text{'s' if len(train_labels) > 1 else ''}, all of one class; use "
                        f"{'a larger --limit' if args.limit else 'a smaller --val_fraction'}")
    train_docs = [tokenize(full.texts[i]) for i in train_idx.tolist()]
    saved_vocab = resume.get("vocab") if resume is not None else None
    itos = (checked_vocab(saved_vocab, args.vocab_size, last_path) if saved_vocab is not None
            else build_vocab(train_docs, args.vocab_size))
    stoi = {w: i for i, w in enumerate(itos)}
    return {"itos": itos, "stoi": stoi, "classes": full.classes, "source": full.source, "fingerprint": fingerprint,
            "train_x": encode(train_docs, stoi, args.max_len), "train_y": torch.tensor(train_labels),
            "val_x": encode([tokenize(full.texts[i]) for i in val_idx.tolist()], stoi, args.max_len),
            "val_y": torch.tensor([full.labels[i] for i in val_idx.tolist()])}


def data_fingerprint(texts: list[str], labels: list[int]) -> dict[str, Any]:
    """sha256 and count of the training file's texts and labels (saved in last.pt: --resume with another
    --data_dir holding other texts is refused)."""
    digest = hashlib.sha256()
    for text, label in zip(texts, labels):
        digest.update(f"{label}\x00{text}\x01".encode("utf-8", "surrogatepass"))
    return {"sha256": digest.hexdigest(), "texts": len(texts)}


def data_folder(data_dir: Any) -> str:
    return f"--data_dir {data_dir}" if data_dir else "the default data folder"


def checked_vocab(itos: Any, vocab_size: int, where: Path) -> list[str]:
    """The vocabulary saved in last.pt, as --resume reads it: <pad>, <unk>, then distinct words, at most
    --vocab_size of them (the file may have been edited; a wrong list would silently misread every text)."""
    if (not isinstance(itos, list) or itos[:2] != [PAD, UNK] or not 2 <= len(itos) <= vocab_size
            or not all(isinstance(w, str) and w for w in itos) or len(set(itos)) != len(itos)):
        raise UserError(f"{where}: the saved vocabulary is not a list of <pad>, <unk> and at most --vocab_size "
                        f"{vocab_size} distinct words; start a new run with another --out_dir")
    return itos


def train_one_epoch(args: argparse.Namespace, model: RNNClassifier, optimizer: torch.optim.Optimizer,
                    data: dict[str, Any], run: ResumableRun, monitor: TrainingMonitor,
                    device: torch.device) -> tuple[int, float]:
    """One pass over the training texts in length buckets, from batch `run.state["batch_in_epoch"]`;
    returns (tokens read, seconds)."""
    state, epoch = run.state, run.state["epoch"] + 1
    batches = bucketed_batches([len(d) for d in data["train_x"]], args.batch_size,
                               torch.Generator().manual_seed(args.seed * 10_007 + epoch))
    tick, tokens, seconds_before = time.time(), 0, state["train_seconds"]
    for index in batches[state["batch_in_epoch"]:]:
        inputs, lengths = pad_batch([data["train_x"][i] for i in index])                # (B, T), (B,)
        logits = model(inputs.to(device), lengths.to(device))                           # (B, C)
        loss = F.cross_entropy(logits, data["train_y"][index].to(device))
        if not math.isfinite(loss.item()):  # nothing after this could be trusted: last.pt and the best model stay
            raise UserError(f"the training loss became {loss.item()} at epoch {epoch}, batch "
                            f"{state['batch_in_epoch'] + 1:,}: the model diverged; use a smaller --lr "
                            f"(now {args.lr:g})")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip or math.inf)     # --clip 0: no clipping
        optimizer.step()

        tokens += int(lengths.sum())
        state["epoch_loss_sum"] += loss.item() * len(index)
        state["epoch_seen"] += len(index)
        state["batch_in_epoch"] += 1
        state["train_seconds"] = seconds_before + time.time() - tick
        monitor.step(loss.item(), items=len(index), epoch=f"{epoch}/{args.epochs}")
        run.step_done(f"epoch {epoch}, batch {state['batch_in_epoch']}")
    return tokens, time.time() - tick


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    started = time.time()
    set_threads(args.num_threads)
    device = get_device(args.device)
    out_dir = Path(args.out_dir or STAGE_DIR / "runs" / f"classify_{args.dataset}")
    best_path = Path(args.checkpoint or STAGE_DIR / "checkpoints" / f"best_classifier_{args.dataset}.pt")
    # checked now, not when the first epoch ends and its best model cannot be written
    if best_path.is_dir():
        raise UserError(f"--checkpoint {best_path} is a folder; give the path of a .pt file to write")
    if best_path.resolve() == (out_dir / "last.pt").resolve():
        raise UserError(f"--checkpoint {best_path} is the run's own last.pt; choose another path")
    run = ResumableRun(args, STAGE, MODEL_NAME, out_dir / "last.pt", must_match=RESUME_MUST_MATCH,
                       map_location=device, state={
        "epoch": 0, "batch_in_epoch": 0, "best_val_acc": -1.0, "bad_epochs": 0, "history": [],
        "train_seconds": 0.0, "epoch_loss_sum": 0.0, "epoch_seen": 0})
    log = setup_logging(out_dir)
    data = load_data(args, run.resume, run.last_path)
    train_x, itos = data["train_x"], data["itos"]
    log.info(f"{data['source']}: {len(train_x)} train / {len(data['val_x'])} val texts, vocabulary {len(itos)}, "
             f"{sum(len(d) for d in train_x) / len(train_x):.0f} tokens per text (cut at {args.max_len})")

    # on --resume the flags that shape the model were checked against the saved run (RESUME_MUST_MATCH)
    config = ClassifierConfig(
        vocab_size=len(itos), num_classes=len(data["classes"]), model_type=args.model_type, impl=args.impl,
        embed_dim=args.embed_dim, hidden_dim=args.hidden_dim, num_layers=args.num_layers, dropout=args.dropout)
    check_size(config)
    set_seed(args.seed)
    model = RNNClassifier(config).to(device)
    if run.resume:      # the saved weights must be those of this model (last.pt may have been edited)
        model_from_checkpoint(run.last_path, lambda: RNNClassifier(config), run.resume.get("model_state"))
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr)
    log.info(f"{config.model_type.upper()} classifier ({config.impl}): {count_params(model):,} parameters")
    payload = {**checkpoint_header(STAGE, MODEL_NAME), "config": config.to_dict(), "vocab": itos,
               "classes": data["classes"], "dataset": args.dataset, "data": data["fingerprint"], "args": vars(args)}
    run.attach(model, optimizer, payload=lambda: payload)
    write_json(best_path.with_suffix(".vocab.json"), {"format": "stage2-classifier-vocabulary-v1", "itos": itos})

    state = run.state
    steps_per_epoch = math.ceil(len(train_x) / args.batch_size)
    monitor = TrainingMonitor(out_dir, stage=STAGE, model=f"{args.model_type}_classifier_{args.impl}",
                              dataset=args.dataset, device=device, total_steps=args.epochs * steps_per_epoch,
                              done_steps=state["epoch"] * steps_per_epoch + state["batch_in_epoch"], unit="texts",
                              log=log, title=f"{args.model_type.upper()} classifier ({args.impl}) on {args.dataset}")
    with monitor, run:   # the monitor marks the run finished, interrupted (Ctrl-C) or failed
        while state["epoch"] < args.epochs and state["bad_epochs"] < args.patience:
            tokens, seconds = train_one_epoch(args, model, optimizer, data, run, monitor, device)
            with monitor.evaluating():
                row = end_of_epoch(model, data, run, payload, best_path, tokens, seconds, device)
            log.info(f"epoch {row['epoch']}  train loss {row['train_loss']:.4f}  val acc {row['val_acc']:.4f}"
                     f"  {row['tokens_per_s']:,.0f} tokens/s  {seconds:.0f}s")
            monitor.evaluated(row, state["history"], panels=[["train_loss"], ["val_acc"], ["tokens_per_s"]])
    train_seconds = time.time() - started

    metrics = score_on_test(args, model, best_path, config, data["stoi"], device)
    metrics["val_accuracy"] = state["best_val_acc"]
    metrics["train_tokens_per_s"] = sum(r["tokens_per_s"] for r in state["history"]) / len(state["history"])
    write_metrics(out_dir / "metrics.json", stage=STAGE, model=f"{args.model_type}_classifier_{args.impl}",
                  dataset=args.dataset, split="test", metrics=metrics, params=count_params(model),
                  seconds=train_seconds, seconds_key="train_seconds", device=device,
                  extra={"checkpoint": str(best_path), "test_size": metrics.pop("test_size"),
                         "train_size": len(train_x)})
    log.info(f"{args.dataset} test: accuracy {metrics['accuracy']:.4f}, macro-F1 {metrics['macro_f1']:.4f}, "
             f"{metrics['latency_ms_bs1']:.2f} ms/text at batch 1; trained in {train_seconds / 60:.1f} min")
    return 0


def check_size(config: ClassifierConfig) -> None:
    """Refuse, before anything is allocated, a model too large to train (a typo such as --hidden_dim 50000)."""
    with torch.device("meta"):
        params = count_params(RNNClassifier(config))
    if params > MAX_PARAMS:
        raise UserError(f"--embed_dim {config.embed_dim}, --hidden_dim {config.hidden_dim}, --num_layers "
                        f"{config.num_layers} and a vocabulary of {config.vocab_size:,} make a model of {params:,} "
                        f"parameters, more than the {MAX_PARAMS:,} that fit in memory for training; choose smaller "
                        "sizes")


def end_of_epoch(model: RNNClassifier, data: dict[str, Any], run: ResumableRun, payload: dict[str, Any],
                 best_path: Path, tokens: int, seconds: float, device: torch.device) -> dict[str, Any]:
    """Validation accuracy, the best model kept, early-stopping count, last.pt saved; returns the history row."""
    state = run.state
    val_acc = (predict(model, data["val_x"], device).argmax(1) == data["val_y"]).double().mean().item()
    row = {"epoch": state["epoch"] + 1, "train_loss": state["epoch_loss_sum"] / max(state["epoch_seen"], 1),
           "val_acc": val_acc, "tokens_per_s": tokens / max(seconds, 1e-9), "epoch_seconds": seconds}
    state["history"].append(row)
    state.update(epoch=row["epoch"], batch_in_epoch=0, epoch_loss_sum=0.0, epoch_seen=0)
    if val_acc > state["best_val_acc"]:
        state.update(best_val_acc=val_acc, bad_epochs=0)
        weights = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        save_checkpoint(best_path, {**payload, "model_state": weights, "epoch": row["epoch"], "best_val_acc": val_acc})
    else:
        state["bad_epochs"] += 1
    run.save()
    return row


def score_on_test(args: argparse.Namespace, model: RNNClassifier, best_path: Path, config: ClassifierConfig,
              stoi: dict[str, int], device: torch.device) -> dict[str, Any]:
    """Load the best checkpoint into `model` and score it on the test set, read only now: accuracy, macro-F1,
    per-class scores, the confusion matrix and the latency of one text at a time."""
    best = load_checkpoint(best_path, STAGE, [MODEL_NAME], map_location=device)
    if best.get("dataset") != args.dataset or best.get("config") != config.to_dict():
        raise UserError(f"{best_path} no longer holds this run's best model (another run wrote over it); "
                        "give each run its own --checkpoint")
    best_model = model_from_checkpoint(best_path, lambda: RNNClassifier(config), best.get("model_state"))
    model.load_state_dict(best_model.state_dict())
    test = load_split(args.dataset, "test", args.data_dir)
    if args.limit:
        test = test.subset(list(range(0, len(test), max(1, len(test) // args.limit)))[: args.limit])
    test_x = encode([tokenize(t) for t in test.texts], stoi, args.max_len)
    metrics = classification_report(torch.tensor(test.labels), predict(model, test_x, device).argmax(1), test.classes)
    model.eval()
    with torch.no_grad():
        sample = test.texts[:200]
        tick = time.perf_counter()
        for text in sample:
            inputs, lengths = pad_batch(encode([tokenize(text)], stoi, args.max_len))
            model(inputs.to(device), lengths.to(device))
        metrics["latency_ms_bs1"] = (time.perf_counter() - tick) / len(sample) * 1000
    return {**metrics, "test_size": len(test_x)}


if __name__ == "__main__":
    run_main(main)
