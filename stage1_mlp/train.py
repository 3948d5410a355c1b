"""Train the bag-of-n-grams MLP text classifier (stage 1).

    python train.py                                   # IMDb, torch implementation, good defaults
    python train.py --impl scratch                    # hand-written forward/backward/Adam
    python train.py --dataset ag_news --epochs 20
    python train.py --dataset imdb --epochs 30 --lr 0.001 --batch_size 64
    python train.py --resume                          # carry on after Ctrl-C

Writes the best model (by validation accuracy) to checkpoints/best_model.pt, its vocabulary as JSON
beside it, and the run's log, curves, history and metrics.json to runs/<dataset>_<impl>/.
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
                            checkpoint_header, count_params, get_device, load_checkpoint, rng_state, run_main,
                            save_checkpoint, set_rng_state, set_seed, set_threads, setup_logging, write_json,
                            write_metrics)
from scripts.plots import plot_curves  # noqa: E402
from stage1_mlp.data.features import Featurizer, FeatureSet, tokenize  # noqa: E402
from scripts.classification_data import DATASETS, load_split, train_val_split  # noqa: E402
from stage1_mlp.models.config import MLPConfig  # noqa: E402
from stage1_mlp.models.mlp_scratch import ScratchAdam, ScratchMLP, softmax_cross_entropy  # noqa: E402
from stage1_mlp.models.mlp_torch import TorchMLP, make_optimizers  # noqa: E402

STAGE = "stage1_mlp"
STAGE_DIR = Path(__file__).resolve().parent
MODEL_NAME = "ngram_mlp"


def build_parser() -> argparse.ArgumentParser:
    p = ArgParser(description="Train the stage 1 bag-of-n-grams MLP classifier.")
    p.add_argument("--dataset", default="imdb", choices=DATASETS, help="data set to train on")
    p.add_argument("--impl", default="torch", choices=["torch", "scratch"],
                   help="torch: nn + autograd; scratch: hand-written backward pass and Adam")
    p.add_argument("--epochs", type=int, default=10, help="most epochs to train (early stopping may end sooner)")
    p.add_argument("--patience", type=int, default=2, help="stop after this many epochs without a better val accuracy")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate")
    p.add_argument("--batch_size", type=int, default=64, help="documents per step")
    p.add_argument("--embed_dim", type=int, default=32, help="size of each n-gram embedding")
    p.add_argument("--hidden_dim", type=int, default=64, help="size of the hidden ReLU layer")
    p.add_argument("--dropout", type=float, default=0.3, help="dropout on the hidden layer")
    p.add_argument("--ngrams", type=int, default=3, help="longest word n-gram used (1: words only)")
    p.add_argument("--buckets", type=int, default=2_000_000, help="hash buckets for the n-grams")
    p.add_argument("--min_freq", type=int, default=2, help="words seen fewer times map to <unk>")
    p.add_argument("--val_fraction", type=float, default=0.1, help="share of train held out for validation")
    p.add_argument("--limit", type=int, default=0, help="use only this many training documents (0: all)")
    p.add_argument("--max_steps", type=int, default=0, help="stop after this many optimizer steps (0: no limit)")
    p.add_argument("--model_path", default=str(STAGE_DIR / "checkpoints" / "best_model.pt"),
                   help="where the best checkpoint is written")
    p.add_argument("--out_dir", default=None, help="run folder (default: runs/<dataset>_<impl> in this stage)")
    p.add_argument("--resume", action="store_true", help="continue from <out_dir>/last.pt")
    add_common_args(p)
    return p


# ----------------------------------------------------------------------------- one step, both ways
def make_model(impl: str, config: MLPConfig, lr: float, device: torch.device) -> tuple[Any, Any]:
    """The model and its optimizer(s); both implementations draw the same initial distributions."""
    if impl == "torch":
        model = TorchMLP(config).to(device)
        return model, make_optimizers(model, lr)
    model = ScratchMLP(config).to(device)
    return model, ScratchAdam(model.params, lr=lr)


def train_step(impl: str, model: Any, optimizer: Any, ids: torch.Tensor, offsets: torch.Tensor,
               labels: torch.Tensor) -> float:
    """One optimizer step; returns the batch loss. The two branches compute the same thing."""
    if impl == "torch":
        loss = F.cross_entropy(model(ids, offsets), labels)
        for opt in optimizer:
            opt.zero_grad(set_to_none=True)
        loss.backward()
        for opt in optimizer:
            opt.step()
        return loss.item()
    logits, cache = model.forward(ids, offsets)
    loss, dlogits = softmax_cross_entropy(logits, labels)
    optimizer.step(model.backward(dlogits, cache))
    return loss.item()


def optimizer_state(impl: str, optimizer: Any) -> Any:
    return [opt.state_dict() for opt in optimizer] if impl == "torch" else optimizer.state_dict()


def load_optimizer_state(impl: str, optimizer: Any, state: Any) -> None:
    if impl == "torch":
        for opt, s in zip(optimizer, state):
            opt.load_state_dict(s)
    else:
        optimizer.load_state_dict(state)


@torch.no_grad()
def evaluate_loss_acc(model: Any, data: FeatureSet, device: torch.device, batch_size: int = 1024) -> tuple[float, float]:
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


# ----------------------------------------------------------------------------- checkpoints
def checkpoint_payload(args: argparse.Namespace, model: Any, config: MLPConfig, featurizer: Featurizer,
                       classes: list[str], state: dict[str, Any]) -> dict[str, Any]:
    """Everything evaluate.py needs: weights, config, vocabulary, classes, and where they came from."""
    return {
        **checkpoint_header(STAGE, MODEL_NAME),
        "impl": args.impl,
        "dataset": args.dataset,
        "config": config.to_dict(),
        "featurizer": featurizer.to_dict(),
        "classes": classes,
        "args": vars(args),
        "model_state": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        **state,
    }


def load_resume_state(path: Path, args: argparse.Namespace) -> dict[str, Any]:
    if not path.is_file():
        raise UserError(f"--resume: no resumable checkpoint at {path}; train without --resume first "
                        "(or pass the same --out_dir as the interrupted run)")
    ckpt = load_checkpoint(path, STAGE, [MODEL_NAME])
    for key in ("impl", "dataset"):
        if ckpt[key] != getattr(args, key):
            raise UserError(f"--resume: {path} was trained with --{key} {ckpt[key]}, not {getattr(args, key)}")
    return ckpt


def train_one_epoch(args: argparse.Namespace, model: Any, optimizer: Any, train_set: FeatureSet,
                    state: dict[str, Any], device: torch.device, interrupt: StopOnInterrupt,
                    save_last: Callable[[], None]) -> tuple[int, float]:
    """Train until the end of the current epoch (from `state["step_in_epoch"]` when resuming).

    Returns (samples seen, seconds). On Ctrl-C, saves a resumable checkpoint and raises TrainingInterrupted.
    """
    epoch = state["epoch"] + 1
    # the shuffle depends only on (seed, epoch), so a resumed epoch replays the same order
    order = torch.randperm(len(train_set), generator=torch.Generator().manual_seed(args.seed * 10_007 + epoch))
    bar = tqdm(total=math.ceil(len(train_set) / args.batch_size), initial=state["step_in_epoch"],
               desc=f"epoch {epoch}", unit="batch", disable=None, leave=False)
    samples, tick, seconds_before = 0, time.time(), state["train_seconds"]
    for ids, offsets, labels in train_set.batches(args.batch_size, order, state["step_in_epoch"]):
        loss = train_step(args.impl, model, optimizer, ids.to(device), offsets.to(device), labels.to(device))
        samples += len(labels)
        state["epoch_loss_sum"] += loss * len(labels)
        state["epoch_seen"] += len(labels)
        state["step_in_epoch"] += 1
        state["global_step"] += 1
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.4f}", samples_per_s=f"{samples / (time.time() - tick):.0f}")
        state["train_seconds"] = seconds_before + time.time() - tick
        interrupt.stop_if_requested(save_last, f"{Path(args.out_dir) / 'last.pt'} at epoch {epoch}, "
                                               f"step {state['step_in_epoch']}")
        if args.max_steps and state["global_step"] >= args.max_steps:
            break
    bar.close()
    seconds = time.time() - tick
    state["train_seconds"] = seconds_before + seconds
    return samples, seconds


# ----------------------------------------------------------------------------- main
def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    check_positive(args, "epochs", "batch_size", "embed_dim", "hidden_dim", "ngrams", "buckets", "min_freq")
    if not 0.0 <= args.dropout < 1.0:
        raise UserError(f"--dropout must be in [0, 1), got {args.dropout}")
    started = time.time()
    set_threads(args.num_threads)
    device = get_device(args.device)
    out_dir = Path(args.out_dir) if args.out_dir else STAGE_DIR / "runs" / f"{args.dataset}_{args.impl}"
    model_path, last_path = Path(args.model_path), out_dir / "last.pt"
    args.out_dir = str(out_dir)
    resume = load_resume_state(last_path, args) if args.resume else None
    log = setup_logging(out_dir)
    log.info(f"{'resuming' if resume else 'training'} {args.impl} MLP on {args.dataset} ({device}); run folder {out_dir}")

    # data: a fixed-seed validation split carved from train; the test split is for evaluate.py only
    full = load_split(args.dataset, "train", args.data_dir)
    if args.limit:
        full = full.subset(torch.randperm(len(full), generator=torch.Generator().manual_seed(args.seed))[:args.limit])
    train_idx, val_idx = train_val_split(len(full), args.val_fraction, args.seed)
    train_texts, val_texts = full.subset(train_idx), full.subset(val_idx)
    train_tokens = [tokenize(t) for t in train_texts.texts]
    if resume:
        featurizer = Featurizer.from_dict(resume["featurizer"], str(last_path))
    else:
        featurizer = Featurizer.build(train_tokens, args.min_freq, args.ngrams, args.buckets)
    train_set = FeatureSet.from_texts(featurizer, train_tokens, train_texts.labels)
    val_set = FeatureSet.from_texts(featurizer, val_texts.texts, val_texts.labels)
    log.info(f"{full.source}: {len(train_set)} train / {len(val_set)} val documents, "
             f"{featurizer.num_words} words + {featurizer.buckets if args.ngrams > 1 else 0} n-gram buckets, "
             f"{len(train_set.ids) / len(train_set):.0f} features per document ({time.time() - started:.1f}s)")

    config = MLPConfig(featurizer.num_features, len(full.classes), args.embed_dim, args.hidden_dim, args.dropout)
    if resume:
        config = MLPConfig(**resume["config"])
    set_seed(args.seed)
    model, optimizer = make_model(args.impl, config, args.lr, device)
    params = count_params(model.parameters())
    log.info(f"model: {params:,} parameters ({config})")

    state = {"epoch": 0, "step_in_epoch": 0, "global_step": 0, "best_val_acc": -1.0, "best_epoch": 0,
             "bad_epochs": 0, "history": [], "train_seconds": 0.0,
             "epoch_loss_sum": 0.0, "epoch_seen": 0}  # running sums of the current epoch, kept across a resume
    if resume:
        model.load_state_dict({k: v.to(device) for k, v in resume["model_state"].items()})
        load_optimizer_state(args.impl, optimizer, resume["optimizer_state"])
        state = {k: resume[k] for k in state}
        set_rng_state(resume["rng_state"])
        log.info(f"resumed at epoch {state['epoch'] + 1}, step {state['step_in_epoch']} of that epoch")
    featurizer.save(out_dir / "vocab.json")

    def save_last() -> None:
        save_checkpoint(last_path, checkpoint_payload(args, model, config, featurizer, full.classes, {
            **state, "optimizer_state": optimizer_state(args.impl, optimizer), "rng_state": rng_state()}))

    stopped_early = False
    with StopOnInterrupt() as interrupt:
        while state["epoch"] < args.epochs and not stopped_early:
            epoch = state["epoch"] + 1
            samples, seconds = train_one_epoch(args, model, optimizer, train_set, state, device, interrupt, save_last)
            val_loss, val_acc = evaluate_loss_acc(model, val_set, device)
            row = {"epoch": epoch, "steps": state["global_step"],
                   "train_loss": state["epoch_loss_sum"] / max(state["epoch_seen"], 1),
                   "val_loss": val_loss, "val_acc": val_acc, "samples_per_s": samples / max(seconds, 1e-9),
                   "epoch_seconds": seconds}
            state["history"].append(row)
            state.update(epoch=epoch, step_in_epoch=0, epoch_loss_sum=0.0, epoch_seen=0)
            improved = val_acc > state["best_val_acc"]
            if improved:
                state.update(best_val_acc=val_acc, best_epoch=epoch, bad_epochs=0)
                save_checkpoint(model_path, checkpoint_payload(args, model, config, featurizer, full.classes,
                                                               {"epoch": epoch, "best_val_acc": val_acc,
                                                                "history": state["history"]}))
                featurizer.save(model_path.with_suffix(".vocab.json"))
            else:
                state["bad_epochs"] += 1
            log.info(f"epoch {epoch:2d}  train loss {row['train_loss']:.4f}  val loss {val_loss:.4f}  "
                     f"val acc {val_acc:.4f}{'  *best*' if improved else ''}  "
                     f"{row['samples_per_s']:.0f} samples/s  {seconds:.1f}s")
            stopped_early = state["bad_epochs"] >= args.patience
            if args.max_steps and state["global_step"] >= args.max_steps:
                stopped_early = True
            save_last()

    write_json(out_dir / "history.json", state["history"])
    plot_curves(state["history"], out_dir / "curves.png", [["train_loss", "val_loss"], ["val_acc"]],
                title=f"stage 1 MLP ({args.impl}) on {args.dataset}")
    best = max(state["history"], key=lambda r: r["val_acc"])
    mean_speed = sum(r["samples_per_s"] for r in state["history"]) / len(state["history"])
    write_metrics(out_dir / "metrics.json", stage=STAGE, model=f"{MODEL_NAME}_{args.impl}", dataset=args.dataset,
                  split="val", params=params, seconds=time.time() - started, seconds_key="train_seconds",
                  device=device, metrics={"val_accuracy": best["val_acc"], "val_loss": best["val_loss"],
                                          "best_epoch": best["epoch"], "epochs_run": len(state["history"]),
                                          "train_samples_per_s": mean_speed,
                                          "fit_seconds": round(state["train_seconds"], 3)},
                  extra={"checkpoint": str(model_path), "train_size": len(train_set), "val_size": len(val_set)})
    log.info(f"best val acc {state['best_val_acc']:.4f} at epoch {state['best_epoch']}; "
             f"checkpoint {model_path}; curves {out_dir / 'curves.png'}")
    return 0


if __name__ == "__main__":
    run_main(main)
