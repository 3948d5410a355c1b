"""Train the Transformer-encoder text classifier on IMDb or AG News, then score it on the test set (stage 4).

    python train_classifier.py --dataset imdb
    python train_classifier.py --dataset ag_news --epochs 5
    python train_classifier.py --dataset imdb --resume            # after Ctrl-C

The same files, validation split and test set as stage 1's MLP and stage 2's LSTM. The texts are cut
into subword pieces by a BPE vocabulary trained on the training texts (Hugging Face `tokenizers`).
Writes checkpoints/best_classifier_<dataset>.pt and runs/classify_<dataset>/ with metrics.json
(test accuracy, macro-F1, training time, ms per text at batch size 1).
"""
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # bootstrap: find the repo's packages

import argparse  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, Iterator, Sequence  # noqa: E402

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from tqdm import tqdm  # noqa: E402

from scripts.classification_data import DATASETS, classification_report, load_split, train_val_split  # noqa: E402
from scripts.common import (ArgParser, StopOnInterrupt, UserError, add_common_args, amp_name,  # noqa: E402
                            autocast, check_positive, checkpoint_header, count_params, get_device,
                            load_checkpoint, load_resume, rng_state, run_main, save_checkpoint, set_rng_state,
                            set_seed, set_threads, setup_logging, write_json, write_metrics)
from stage4_transformer.data.batches import pad  # noqa: E402
from stage4_transformer.data.subword import SubwordVocab  # noqa: E402
from stage4_transformer.models.classifier import ClassifierConfig, TransformerClassifier  # noqa: E402

STAGE = "stage4_transformer"
STAGE_DIR = Path(__file__).resolve().parent
MODEL_NAME = "transformer_classifier"
RESUME_MUST_MATCH = ("d_model", "n_heads", "layers", "d_ff", "vocab_size", "max_len", "batch_size", "limit", "seed",
                     "lr", "val_fraction")


def clean(text: str) -> str:
    return text.replace("<br />", " ")


def encode(texts: Sequence[str], vocab: SubwordVocab, max_len: int) -> list[list[int]]:
    """Subword ids of each text, cut to its first `max_len` pieces (an empty text becomes one <unk>)."""
    return [vocab.encode(clean(t))[:max_len] or [1] for t in texts]


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
    p.add_argument("--d_model", type=int, default=128, help="model width")
    p.add_argument("--n_heads", type=int, default=4, help="attention heads")
    p.add_argument("--layers", type=int, default=2, help="encoder layers")
    p.add_argument("--d_ff", type=int, default=512, help="feed-forward inner width")
    p.add_argument("--dropout", type=float, default=0.1, help="dropout")
    p.add_argument("--vocab_size", type=int, default=16000, help="BPE vocabulary trained on the training texts")
    p.add_argument("--max_len", type=int, default=256, help="read at most this many subword pieces of each text")
    p.add_argument("--epochs", type=int, default=4, help="most epochs (early stopping on validation accuracy)")
    p.add_argument("--patience", type=int, default=1,
                   help="epochs without a better validation accuracy before stopping")
    p.add_argument("--lr", type=float, default=1e-3, help="peak AdamW learning rate (linear warm-up over 200 steps)")
    p.add_argument("--batch_size", type=int, default=64, help="texts per step")
    p.add_argument("--amp", type=int, choices=[0, 1], default=1,
                   help="1: bf16 autocast on CUDA and on CPUs with native bf16 (AMX, AVX512-BF16); 0: float32")
    p.add_argument("--clip", type=float, default=1.0, help="gradient-norm clipping")
    p.add_argument("--val_fraction", type=float, default=0.1, help="share of train held out for validation")
    p.add_argument("--limit", type=int, default=0, help="use only N training and N test texts (0: all)")
    p.add_argument("--checkpoint", default=None, help="default checkpoints/best_classifier_<dataset>.pt")
    p.add_argument("--out_dir", default=None, help="default runs/classify_<dataset>")
    p.add_argument("--resume", action="store_true", help="continue from <out_dir>/last.pt")
    add_common_args(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    check_positive(args, "d_model", "n_heads", "layers", "d_ff", "vocab_size", "max_len", "epochs", "batch_size")
    if args.d_model % args.n_heads:
        raise UserError(f"--d_model {args.d_model} must be divisible by --n_heads {args.n_heads}")
    if args.limit < 0:
        raise UserError(f"--limit must be >= 0, got {args.limit}")
    started = time.time()
    set_threads(args.num_threads)
    device = get_device(args.device)
    out_dir = Path(args.out_dir or STAGE_DIR / "runs" / f"classify_{args.dataset}")
    best_path = Path(args.checkpoint or STAGE_DIR / "checkpoints" / f"best_classifier_{args.dataset}.pt")
    last_path = out_dir / "last.pt"
    resume = load_resume(last_path, STAGE, MODEL_NAME, args, RESUME_MUST_MATCH)
    log = setup_logging(out_dir)

    full = load_split(args.dataset, "train", args.data_dir)
    if args.limit:
        full = full.subset(torch.randperm(len(full), generator=torch.Generator().manual_seed(args.seed))[:args.limit])
    train_idx, val_idx = train_val_split(len(full), args.val_fraction, args.seed)
    train_texts = [full.texts[i] for i in train_idx.tolist()]
    vocab = (SubwordVocab.from_json(resume["vocab"]) if resume else
             SubwordVocab.train((clean(t) for t in train_texts), args.vocab_size))
    train_x = encode(train_texts, vocab, args.max_len)
    train_y = torch.tensor([full.labels[i] for i in train_idx.tolist()])
    val_x = encode([full.texts[i] for i in val_idx.tolist()], vocab, args.max_len)
    val_y = torch.tensor([full.labels[i] for i in val_idx.tolist()])
    log.info(f"{full.source}: {len(train_x)} train / {len(val_x)} val texts, BPE vocabulary {len(vocab):,}, "
             f"{sum(len(d) for d in train_x) / len(train_x):.0f} pieces per text (cut at {args.max_len})")

    set_seed(args.seed)
    config = ClassifierConfig(len(vocab), len(full.classes), args.d_model, args.n_heads, args.layers, args.d_ff,
                              args.dropout, args.max_len)
    model = TransformerClassifier(config).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.98))
    params = count_params(model)
    log.info(f"Transformer classifier: {params:,} parameters, {config}; {amp_name(device, bool(args.amp))}")
    state: dict[str, Any] = {"epoch": 0, "batch_in_epoch": 0, "step": 0, "best_val_acc": -1.0, "bad_epochs": 0,
                             "history": [], "train_seconds": 0.0, "epoch_loss_sum": 0.0, "epoch_seen": 0}
    if resume:
        model.load_state_dict(resume["model_state"])
        optimizer.load_state_dict(resume["optimizer_state"])
        state = {k: resume.get(k, v) for k, v in state.items()}
        set_rng_state(resume["rng_state"])

    def payload(extra: dict[str, Any]) -> dict[str, Any]:
        return {**checkpoint_header(STAGE, MODEL_NAME), "config": config.to_dict(), "vocab": vocab.to_json(),
                "classes": full.classes, "dataset": args.dataset, "args": vars(args),
                "model_state": {k: v.detach().cpu() for k, v in model.state_dict().items()}, **extra}

    def save_last() -> None:
        save_checkpoint(last_path, payload({**state, "optimizer_state": optimizer.state_dict(),
                                            "rng_state": rng_state()}))

    with StopOnInterrupt() as interrupt:
        while state["epoch"] < args.epochs and state["bad_epochs"] < args.patience:
            epoch = state["epoch"] + 1
            order = batches([len(d) for d in train_x], args.batch_size, args.seed, epoch)
            bar = tqdm(total=len(order), initial=state["batch_in_epoch"], desc=f"epoch {epoch}", disable=None,
                       leave=False)
            tick, tokens, seconds_before = time.time(), 0, state["train_seconds"]
            for index in order[state["batch_in_epoch"]:]:
                for group in optimizer.param_groups:
                    group["lr"] = args.lr * min(1.0, (state["step"] + 1) / 200)
                tokens_batch = pad([train_x[i] for i in index]).to(device)
                with autocast(device, bool(args.amp)):
                    logits = model(tokens_batch)
                loss = F.cross_entropy(logits.float(), train_y[index].to(device))
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip)
                optimizer.step()
                tokens += sum(len(train_x[i]) for i in index)
                state["epoch_loss_sum"] += loss.item() * len(index)
                state["epoch_seen"] += len(index)
                state["batch_in_epoch"] += 1
                state["step"] += 1
                bar.update(1)
                bar.set_postfix(loss=f"{loss.item():.3f}", tokens_per_s=f"{tokens / (time.time() - tick):.0f}")
                state["train_seconds"] = seconds_before + time.time() - tick
                interrupt.stop_if_requested(save_last, f"{last_path} at epoch {epoch}, batch {state['batch_in_epoch']}")
            bar.close()
            seconds = time.time() - tick
            state["train_seconds"] = seconds_before + seconds
            val_acc = (predict(model, val_x, device, amp=bool(args.amp)).argmax(1) == val_y).double().mean().item()
            row = {"epoch": epoch, "train_loss": state["epoch_loss_sum"] / max(state["epoch_seen"], 1),
                   "val_acc": val_acc, "tokens_per_s": tokens / max(seconds, 1e-9), "epoch_seconds": seconds}
            state["history"].append(row)
            state.update(epoch=epoch, batch_in_epoch=0, epoch_loss_sum=0.0, epoch_seen=0)
            if val_acc > state["best_val_acc"]:
                state.update(best_val_acc=val_acc, bad_epochs=0)
                save_checkpoint(best_path, payload({"epoch": epoch, "best_val_acc": val_acc}))
            else:
                state["bad_epochs"] += 1
            log.info(f"epoch {epoch}  train loss {row['train_loss']:.4f}  val acc {val_acc:.4f}  "
                     f"{row['tokens_per_s']:,.0f} tokens/s  {seconds:.0f}s")
            save_last()
    train_seconds = time.time() - started

    # the test set, read only now, scored with the best checkpoint
    best = load_checkpoint(best_path, STAGE, [MODEL_NAME], map_location="cpu")
    if best["dataset"] != args.dataset or best["config"] != config.to_dict():
        raise UserError(f"{best_path} no longer holds this run's best model (another run wrote over it); "
                        "give each run its own --checkpoint")
    model.load_state_dict(best["model_state"])
    test = load_split(args.dataset, "test", args.data_dir)
    if args.limit:
        test = test.subset(list(range(0, len(test), max(1, len(test) // args.limit)))[: args.limit])
    test_x = encode(test.texts, vocab, args.max_len)
    preds = predict(model, test_x, device, amp=bool(args.amp)).argmax(1)
    metrics = classification_report(torch.tensor(test.labels), preds, test.classes)
    model.eval()
    with torch.no_grad():
        tick = time.perf_counter()
        for text in test.texts[:200]:
            with autocast(device, bool(args.amp)):
                model(pad(encode([text], vocab, args.max_len)).to(device))
        metrics["latency_ms_bs1"] = (time.perf_counter() - tick) / min(200, len(test.texts)) * 1000
    metrics["val_accuracy"] = state["best_val_acc"]
    metrics["train_tokens_per_s"] = sum(r["tokens_per_s"] for r in state["history"]) / len(state["history"])
    write_json(out_dir / "history.json", state["history"])
    write_metrics(out_dir / "metrics.json", stage=STAGE, model="transformer_classifier", dataset=args.dataset,
                  split="test", metrics=metrics, params=params, seconds=train_seconds, seconds_key="train_seconds",
                  device=device, extra={"checkpoint": str(best_path), "test_size": len(test_x),
                                        "train_size": len(train_x)})
    log.info(f"{args.dataset} test: accuracy {metrics['accuracy']:.4f}, macro-F1 {metrics['macro_f1']:.4f}, "
             f"{metrics['latency_ms_bs1']:.2f} ms/text at batch 1; trained in {train_seconds / 60:.1f} min")
    return 0


if __name__ == "__main__":
    run_main(main)
