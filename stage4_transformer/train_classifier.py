"""Train the Transformer-encoder text classifier on IMDb or AG News, then score it on the test set (stage 4).

    python stage4_transformer/train_classifier.py --dataset imdb
    python stage4_transformer/train_classifier.py --dataset ag_news --epochs 5
    python stage4_transformer/train_classifier.py --dataset imdb --resume            # after Ctrl-C
(or, from the stage folder, `python train_classifier.py ...`)

The same files, validation split and test set as stage 1's MLP and stage 2's LSTM. The texts are cut
into subword pieces by a BPE vocabulary trained on the training texts (Hugging Face `tokenizers`).
Writes checkpoints/best_classifier_<dataset>.pt and runs/classify_<dataset>/ with metrics.json
(test accuracy, macro-F1, training time, ms per text at batch size 1). One progress bar covers the whole run;
TensorBoard events, history.json and curves.png in the run folder are refreshed after every epoch.
"""
import argparse
import time
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch
import torch.nn.functional as F

from scripts.checks import CLIP, COUNT, FRACTION, POSITIVE_INT, Range
from scripts.classification_data import DATASETS, classification_report, load_split, train_val_split
from scripts.common import (ArgParser, UserError, add_common_args, add_output_args, amp_name, autocast,
                            check_vocab_fits, checkpoint_header, count_params, get_device, load_checkpoint,
                            model_from_checkpoint, run_main, save_checkpoint, set_seed, set_threads, setup_logging,
                            warmup_cosine, write_metrics)
from scripts.monitor import TrainingMonitor
from scripts.training import ResumableRun
from stage4_transformer.data.batches import pad
from stage4_transformer.data.subword import MAX_PIECES, UNK_ID, SubwordVocab
from stage4_transformer.models.classifier import ClassifierConfig, TransformerClassifier
from stage4_transformer.translator import CONFIG_LIMITS, MAX_POSITIONS

STAGE = "stage4_transformer"
STAGE_DIR = Path(__file__).resolve().parent
MODEL_NAME = "transformer_classifier"
WARMUP_STEPS = 200      # linear warm-up to --lr, then constant
RESUME_MUST_MATCH = ("d_model", "n_heads", "layers", "d_ff", "dropout", "vocab_size", "max_len", "batch_size", "limit",
                     "seed", "lr", "clip", "val_fraction")
# the allowed values of the flags (scripts/checks.py), said in --help and in the one-line error
LIMITS = CONFIG_LIMITS      # the sizes a checkpoint may state, shared with the translation model
RANGES = {
    "epochs": POSITIVE_INT, "lr": Range(float, lo=0, hi=1, lo_open=True), "batch_size": Range(int, lo=1, hi=1 << 16),
    "layers": Range(int, lo=1, hi=LIMITS["n_encoder_layers"]), "d_model": Range(int, lo=2, hi=LIMITS["d_model"]),
    "n_heads": Range(int, lo=1, hi=LIMITS["n_heads"]), "d_ff": Range(int, lo=1, hi=LIMITS["d_ff"]),
    "dropout": FRACTION, "vocab_size": Range(int, lo=100, hi=MAX_PIECES), "max_len": Range(int, lo=1, hi=MAX_POSITIONS),
    "patience": POSITIVE_INT, "clip": CLIP, "val_fraction": Range(float, lo=0, hi=1, lo_open=True, hi_open=True),
    "limit": COUNT,
}


def clean(text: str) -> str:
    return text.replace("<br />", " ")


def encode(texts: Sequence[str], vocab: SubwordVocab, max_len: int) -> list[list[int]]:
    """Subword ids of each text, cut to its first `max_len` pieces (an empty text becomes one <unk>)."""
    return [vocab.encode(clean(t))[:max_len] or [UNK_ID] for t in texts]


def batches(lengths: list[int], batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """Shuffled (seeded by seed and epoch), sorted by length within windows of 50 batches, batches shuffled."""
    generator = torch.Generator().manual_seed(seed * 10_007 + epoch)
    order = torch.randperm(len(lengths), generator=generator).tolist()
    window, out = batch_size * 50, []
    for start in range(0, len(order), window):
        chunk = sorted(order[start: start + window], key=lambda i: lengths[i])
        out += [chunk[i: i + batch_size] for i in range(0, len(chunk), batch_size)]
    return [out[i] for i in torch.randperm(len(out), generator=generator).tolist()]


def in_order(docs: list[list[int]], batch_size: int) -> Iterator[tuple[list[int], torch.Tensor]]:
    by_length = sorted(range(len(docs)), key=lambda i: len(docs[i]))
    for start in range(0, len(docs), batch_size):
        index = by_length[start: start + batch_size]
        yield index, pad([docs[i] for i in index])


@torch.no_grad()
def predict(model: TransformerClassifier, docs: list[list[int]], device: torch.device,
            batch_size: int = 128, amp: bool = False) -> torch.Tensor:
    """Class probabilities (N, C) in the original order."""
    model.eval()
    probs = torch.zeros(len(docs), model.config.num_classes)
    for index, tokens in in_order(docs, batch_size):
        with autocast(device, amp):
            logits = model(tokens.to(device))
        probs[index] = torch.softmax(logits.float(), dim=1).cpu()
    model.train()
    return probs


def build_parser() -> argparse.ArgumentParser:
    p = ArgParser(description="Train and test the stage 4 Transformer-encoder text classifier.")
    p.add_argument("--dataset", default="imdb", choices=DATASETS, help="data set")
    p.add_argument("--epochs", type=RANGES["epochs"], default=4,
                   help="most epochs (early stopping on validation accuracy)")
    p.add_argument("--lr", type=RANGES["lr"], default=1e-3,
                   help=f"peak AdamW learning rate (linear warm-up over {WARMUP_STEPS} steps, then constant)")
    p.add_argument("--batch_size", type=RANGES["batch_size"], default=64, help="texts per step")
    p.add_argument("--layers", type=RANGES["layers"], default=2, help="encoder layers")

    model = p.add_argument_group("model")
    model.add_argument("--d_model", type=RANGES["d_model"], default=128, help="model width")
    model.add_argument("--n_heads", type=RANGES["n_heads"], default=4, help="attention heads")
    model.add_argument("--d_ff", type=RANGES["d_ff"], default=512, help="feed-forward inner width")
    model.add_argument("--dropout", type=RANGES["dropout"], default=0.1, help="dropout")
    model.add_argument("--vocab_size", type=RANGES["vocab_size"], default=16000,
                       help="BPE vocabulary trained on the training texts")
    model.add_argument("--max_len", type=RANGES["max_len"], default=256,
                       help="read at most this many subword pieces of each text")

    training = p.add_argument_group("training")
    training.add_argument("--patience", type=RANGES["patience"], default=1,
                          help="epochs without a better validation accuracy before stopping")
    training.add_argument("--amp", action=argparse.BooleanOptionalAction, default=True,
                          help="bf16 autocast on CUDA and on CPUs with native bf16 (AMX, AVX512-BF16); "
                               "--no-amp: float32")
    training.add_argument("--clip", type=RANGES["clip"], default=1.0, help="gradient-norm clipping (0: off)")
    training.add_argument("--val_fraction", type=RANGES["val_fraction"], default=0.1,
                          help="share of train held out for validation")
    training.add_argument("--limit", type=RANGES["limit"], default=0,
                          help="use only N training and N test texts (0: all)")

    add_output_args(p, "where the best model is saved (default: checkpoints/best_classifier_<dataset>.pt "
                        "in the stage folder)",
                       "run folder (default: runs/classify_<dataset> in the stage "
                        "folder)")
    add_common_args(p, seed_help="seed for the validation split, initialisation, data order and dropout")
    return p


def load_texts(args: argparse.Namespace, resume: dict | None, resume_path: Path,
               log: Any) -> tuple[SubwordVocab, list, Any, Any, Any]:
    """The BPE vocabulary (learned on the training texts, or the resumed run's), the training and validation texts
    as piece ids with their labels, and the data set (for its classes)."""
    full = load_split(args.dataset, "train", args.data_dir)
    if args.limit:
        full = full.subset(torch.randperm(len(full), generator=torch.Generator().manual_seed(args.seed))[:args.limit])
    train_idx, val_idx = train_val_split(len(full), args.val_fraction, args.seed)
    if not len(train_idx):
        raise UserError(f"--limit {args.limit} with --val_fraction {args.val_fraction:g} leaves no training texts; "
                        "raise --limit (0: all) or lower --val_fraction")
    if len({full.labels[i] for i in train_idx.tolist()}) < 2:     # what --limit and the split left: one class
        raise UserError(f"--limit {args.limit} with --val_fraction {args.val_fraction:g} leaves training texts of one "
                        "class only, and a classifier learns nothing from one class; raise --limit (0: all)")
    train_texts = [full.texts[i] for i in train_idx.tolist()]
    vocab = (SubwordVocab.from_json(resume.get("vocab"), where=f"{resume_path}: its subword vocabulary") if resume
             else SubwordVocab.train((clean(t) for t in train_texts), args.vocab_size))
    train = (encode(train_texts, vocab, args.max_len), torch.tensor([full.labels[i] for i in train_idx.tolist()]))
    valid = (encode([full.texts[i] for i in val_idx.tolist()], vocab, args.max_len),
             torch.tensor([full.labels[i] for i in val_idx.tolist()]))
    log.info(f"{full.source}: {len(train[0])} train / {len(valid[0])} val texts, BPE vocabulary {len(vocab):,}, "
             f"{sum(len(d) for d in train[0]) / len(train[0]):.0f} pieces per text (cut at {args.max_len})")
    return vocab, train, valid, full


def train_epoch(args: argparse.Namespace, model: TransformerClassifier, optimizer: torch.optim.Optimizer,
                run: ResumableRun, monitor: TrainingMonitor, train: tuple[list, torch.Tensor],
                device: torch.device) -> tuple[int, float]:
    """One pass over the training texts, from the batch a resumed run stopped at; returns (tokens, seconds)."""
    state, (docs, labels) = run.state, train
    epoch = state["epoch"] + 1
    order = batches([len(d) for d in docs], args.batch_size, args.seed, epoch)
    tick, tokens, seconds_before = time.time(), 0, state["train_seconds"]
    for index in order[state["batch_in_epoch"]:]:
        lr = warmup_cosine(state["step"], args.epochs * len(order), WARMUP_STEPS, args.lr, args.lr)  # flat after
        for group in optimizer.param_groups:
            group["lr"] = lr
        with autocast(device, args.amp):
            logits = model(pad([docs[i] for i in index]).to(device))
        loss = F.cross_entropy(logits.float(), labels[index].to(device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if args.clip:       # --clip 0: off
            torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip)
        optimizer.step()

        pieces = sum(len(docs[i]) for i in index)
        tokens += pieces
        state["epoch_loss_sum"] += loss.item() * len(index)
        state["epoch_seen"] += len(index)
        state["batch_in_epoch"] += 1
        state["step"] += 1
        state["train_seconds"] = seconds_before + time.time() - tick
        monitor.step(loss.item(), items=pieces, epoch=f"{epoch}/{args.epochs}", lr=lr)
        run.step_done(f"epoch {epoch}, batch {state['batch_in_epoch']}")   # after Ctrl-C: save last.pt, exit 130
    return tokens, time.time() - tick


def score_on_test(args: argparse.Namespace, model: TransformerClassifier, vocab: SubwordVocab, best_path: Path,
              device: torch.device) -> tuple[dict[str, Any], int]:
    """The test set, read only now, scored with the best checkpoint; plus ms per text at batch size 1."""
    best = load_checkpoint(best_path, STAGE, [MODEL_NAME], map_location="cpu")
    if best.get("dataset") != args.dataset or best.get("config") != model.config.to_dict():
        raise UserError(f"{best_path} no longer holds this run's best model (another run wrote over it); "
                        "give each run its own --checkpoint")
    checked = model_from_checkpoint(best_path, lambda: TransformerClassifier(model.config), best.get("model_state"))
    model.load_state_dict(checked.state_dict())
    test = load_split(args.dataset, "test", args.data_dir)
    if args.limit:
        test = test.subset(list(range(0, len(test), max(1, len(test) // args.limit)))[: args.limit])
    test_x = encode(test.texts, vocab, args.max_len)
    preds = predict(model, test_x, device, amp=args.amp).argmax(1)
    metrics = classification_report(torch.tensor(test.labels), preds, test.classes)
    model.eval()
    with torch.no_grad():
        tick = time.perf_counter()
        for text in test.texts[:200]:
            with autocast(device, args.amp):
                model(pad(encode([text], vocab, args.max_len)).to(device))
        metrics["latency_ms_bs1"] = (time.perf_counter() - tick) / min(200, len(test.texts)) * 1000
    return metrics, len(test_x)


def train_and_validate(args: argparse.Namespace, model: TransformerClassifier, optimizer: torch.optim.Optimizer,
                       run: ResumableRun, monitor: TrainingMonitor, train: tuple[list, torch.Tensor],
                       valid: tuple[list, torch.Tensor], payload: dict[str, Any], best_path: Path,
                       device: torch.device, log: Any) -> None:
    """One epoch, then the validation accuracy; the best model so far goes to best_path, last.pt is saved."""
    state = run.state
    epoch = state["epoch"] + 1
    tokens, seconds = train_epoch(args, model, optimizer, run, monitor, train, device)
    with monitor.evaluating():      # validation and checkpoints: left out of the bar's ETA and throughput
        val_acc = (predict(model, valid[0], device, amp=args.amp).argmax(1) == valid[1]).double().mean().item()
        row = {"epoch": epoch, "train_loss": state["epoch_loss_sum"] / max(state["epoch_seen"], 1),
               "val_acc": val_acc, "tokens_per_s": tokens / max(seconds, 1e-9), "epoch_seconds": seconds}
        state["history"].append(row)
        state.update(epoch=epoch, batch_in_epoch=0, epoch_loss_sum=0.0, epoch_seen=0)
        if val_acc > state["best_val_acc"]:
            state.update(best_val_acc=val_acc, bad_epochs=0)
            weights = {k: v.detach().cpu() for k, v in model.state_dict().items()}
            save_checkpoint(best_path, {**payload, "model_state": weights, "epoch": epoch, "best_val_acc": val_acc})
        else:
            state["bad_epochs"] += 1
        log.info(f"epoch {epoch}  train loss {row['train_loss']:.4f}  val acc {val_acc:.4f}  "
                 f"{row['tokens_per_s']:,.0f} tokens/s  {seconds:.0f}s")
        run.save()
    monitor.evaluated(row, state["history"], panels=[["train_loss"], ["val_acc"], ["tokens_per_s"]])


def check_resumable(path: Path, resume: dict[str, Any], config: ClassifierConfig, vocab_size: int) -> None:
    """last.pt's config, vocabulary and weights must be those the flags build, checked before anything is built."""
    if resume.get("config") != config.to_dict():
        raise UserError(f"--resume: {path} holds another model config than these flags build; it was edited or "
                        "made by another version: start a new run with another --out_dir")
    check_vocab_fits(path, vocab_size, config.vocab_size)
    with torch.device("meta"):      # shapes only: no memory
        expected = {k: tuple(v.shape) for k, v in TransformerClassifier(config).state_dict().items()}
    state = resume.get("model_state")
    saved = {k: tuple(v.shape) for k, v in state.items() if isinstance(v, torch.Tensor)} if isinstance(state, dict) \
        else {}
    if saved != expected:
        raise UserError(f"--resume: {path}: the saved weights do not fit the saved config; start a new run with "
                        "another --out_dir")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.d_model % args.n_heads:
        raise UserError(f"--d_model {args.d_model} must be divisible by --n_heads {args.n_heads}")
    if args.d_model % 2:
        raise UserError(f"--d_model {args.d_model} must be even (the sinusoidal positions pair sines and cosines)")
    started = time.time()
    set_threads(args.num_threads)
    device = get_device(args.device)
    out_dir = Path(args.out_dir or STAGE_DIR / "runs" / f"classify_{args.dataset}")
    best_path = Path(args.checkpoint or STAGE_DIR / "checkpoints" / f"best_classifier_{args.dataset}.pt")
    run = ResumableRun(args, STAGE, MODEL_NAME, out_dir / "last.pt", must_match=RESUME_MUST_MATCH,
                       state={"epoch": 0, "batch_in_epoch": 0, "step": 0, "best_val_acc": -1.0, "bad_epochs": 0,
                              "history": [], "train_seconds": 0.0, "epoch_loss_sum": 0.0, "epoch_seen": 0})
    log = setup_logging(out_dir)
    vocab, train, valid, full = load_texts(args, run.resume, run.last_path, log)

    set_seed(args.seed)
    config = ClassifierConfig(vocab_size=len(vocab), num_classes=len(full.classes), d_model=args.d_model,
                              n_heads=args.n_heads, layers=args.layers, d_ff=args.d_ff, dropout=args.dropout,
                              max_len=args.max_len)
    if run.resume:      # the same flags (RESUME_MUST_MATCH) must rebuild exactly the saved model and vocabulary
        check_resumable(run.last_path, run.resume, config, len(vocab))
    model = TransformerClassifier(config).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.98))
    payload = {**checkpoint_header(STAGE, MODEL_NAME), "config": config.to_dict(), "vocab": vocab.to_json(),
               "classes": full.classes, "dataset": args.dataset, "args": vars(args)}
    run.attach(model, optimizer, payload=lambda: payload)
    state = run.state
    log.info(f"Transformer classifier: {count_params(model):,} parameters, {config}; {amp_name(device, args.amp)}")

    steps_per_epoch = len(batches([len(d) for d in train[0]], args.batch_size, args.seed, 1))
    # the model and data set named as metrics.json names them, so `scripts/reference.py compare` can read either
    monitor = TrainingMonitor(out_dir, stage=STAGE, model="transformer_classifier", dataset=args.dataset,
                              device=device, total_steps=args.epochs * steps_per_epoch, done_steps=state["step"],
                              unit="tokens", title=f"Transformer classifier on {args.dataset}", log=log)
    with run, monitor:      # the monitor marks the run finished, interrupted (Ctrl-C) or failed
        while state["epoch"] < args.epochs and state["bad_epochs"] < args.patience:
            train_and_validate(args, model, optimizer, run, monitor, train, valid, payload, best_path, device, log)
    train_seconds = time.time() - started

    metrics, test_size = score_on_test(args, model, vocab, best_path, device)
    metrics["val_accuracy"] = state["best_val_acc"]
    metrics["train_tokens_per_s"] = sum(r["tokens_per_s"] for r in state["history"]) / len(state["history"])
    write_metrics(out_dir / "metrics.json", stage=STAGE, model="transformer_classifier", dataset=args.dataset,
                  split="test", metrics=metrics, params=count_params(model), seconds=train_seconds,
                  seconds_key="train_seconds", device=device,
                  extra={"checkpoint": str(best_path), "test_size": test_size, "train_size": len(train[0])})
    log.info(f"{args.dataset} test: accuracy {metrics['accuracy']:.4f}, macro-F1 {metrics['macro_f1']:.4f}, "
             f"{metrics['latency_ms_bs1']:.2f} ms/text at batch 1; trained in {train_seconds / 60:.1f} min")
    return 0


if __name__ == "__main__":
    run_main(main)
