"""Evaluate a trained stage 1 classifier, or classify your own text.

    python stage1_mlp/evaluate.py                                    # the newest model: test accuracy, macro-F1, speed
    python stage1_mlp/evaluate.py --checkpoint stage1_mlp/checkpoints/best_model.pt
    python stage1_mlp/evaluate.py --text "A moving, beautifully acted film."   # one text, with probabilities
    python stage1_mlp/evaluate.py --interactive                      # type texts; :help lists commands

(From inside stage1_mlp/ the same commands are `python evaluate.py ...`.)
Without --checkpoint it loads the newest model train.py wrote: the newest checkpoints/best_model*.pt, else the
newest runs/*/last.pt (a run stopped before its first evaluation); the first line printed says which.
The test split is read here and nowhere else. Writes metrics.json, confusion_matrix.png and
predictions.jsonl to runs/eval_<dataset>/ (runs/eval_<dataset>_quick/ for a model of the quick preset, or
--out_dir), and metrics.json to --metrics_out if given.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Sequence

import torch

from scripts.classification_data import DATASETS, classification_report, load_split
from scripts.checks import COUNT, POSITIVE_INT
from scripts.common import (ArgParser, UserError, add_checkpoint_arg, add_common_args, count_params, describe_model,
                            find_model, get_device, load_checkpoint, path_arg, run_main, set_threads, write_metrics)
from scripts.plots import plot_confusion
from scripts.repl import Repl
from stage1_mlp.data.features import FeatureSet, tokenize
from stage1_mlp.models.checkpoint import load_model

STAGE = "stage1_mlp"
STAGE_DIR = Path(__file__).resolve().parent
MODEL_NAME = "ngram_mlp"
# where a program looks for a model when no --checkpoint is given (under STAGE_DIR): best checkpoints, else last.pt
BEST_GLOBS = ["checkpoints/best_model*.pt"]
RUN_GLOBS = ["runs/*/last.pt"]
TRAIN_HINT = "python stage1_mlp/train.py --preset quick"
# options of the test-set evaluation only (not of --text / --interactive)
TEST_SET_OPTIONS = ("dataset", "limit", "batch_size", "latency_samples", "out_dir", "metrics_out")


def build_parser() -> argparse.ArgumentParser:
    p = ArgParser(description=__doc__)
    add_checkpoint_arg(p, None, "trained model to load (when not given: the newest stage1_mlp/checkpoints/"
                                "best_model*.pt, else the newest stage1_mlp/runs/*/last.pt)")
    p.add_argument("--dataset", default=None, choices=DATASETS,
                   help="test set (when not given: the one the model was trained on)")
    p.add_argument("--text", default=None, help="classify this text and print class probabilities")
    p.add_argument("--interactive", action="store_true", help="classify texts typed at a prompt")
    p.add_argument("--limit", type=COUNT, default=0, help="evaluate only N evenly spaced test documents (0: all)")
    p.add_argument("--batch_size", type=POSITIVE_INT, default=1024,
                   help="batch size for the accuracy pass and throughput")
    p.add_argument("--latency_samples", type=POSITIVE_INT, default=500,
                   help="documents timed one at a time for latency")
    p.add_argument("--out_dir", type=path_arg, default=None,
                   help="where outputs go (when not given: stage1_mlp/runs/eval_<dataset>, with _quick at the end "
                        "for a model of the quick preset)")
    p.add_argument("--metrics_out", type=path_arg, default=None, help="also write metrics.json to this file")
    add_common_args(p, seed_help="random seed (evaluation itself draws no random numbers)")
    return p


class Classifier:
    """A loaded checkpoint: featurizer + model, from raw text to class probabilities."""

    def __init__(self, path: str | Path, device: torch.device):
        ckpt = load_checkpoint(path, STAGE, [MODEL_NAME], map_location=device)
        self.path, self.device = Path(path), device
        self.description = describe_model(self.path, ckpt)   # "model: <file> (best checkpoint; epoch 2 of 2, ...)"
        if self.path.name != "last.pt" and isinstance(ckpt.get("best_val_acc"), float):   # its own val accuracy
            self.description = self.description[:-1] + f", val acc {ckpt['best_val_acc']:.2%})"
        self.args = ckpt.get("args") if isinstance(ckpt.get("args"), dict) else {}
        self.dataset = ckpt.get("dataset") if ckpt.get("dataset") in DATASETS else None
        if self.dataset is None:
            raise UserError(f"{path} does not say which data set it was trained on (one of {', '.join(DATASETS)}); "
                            "retrain the model")
        # every field checked against the model about to be built (models/checkpoint.py)
        saved, self.model = load_model(path, ckpt, device)
        self.impl, self.config, self.classes = saved.impl, saved.config, saved.classes
        self.featurizer = saved.featurizer
        self.model.eval()

    @torch.no_grad()
    def probabilities(self, data: FeatureSet, batch_size: int = 1024) -> torch.Tensor:
        out = [torch.softmax(self.model(ids.to(self.device), offsets.to(self.device)), dim=1).cpu()
               for ids, offsets, _ in data.batches(batch_size)]
        return torch.cat(out)

    def classify(self, text: str) -> tuple[torch.Tensor, int]:
        """Probabilities for one text, and how many of its words the vocabulary knows."""
        tokens = tokenize(text)
        if not tokens:
            raise UserError("the text has no words to classify (it is empty or only punctuation)")
        known = sum(1 for t in tokens if t in self.featurizer.stoi)
        return self.probabilities(FeatureSet.from_texts(self.featurizer, [tokens], [0]))[0], known


def find_checkpoint(given: str | None) -> Path:
    """--checkpoint when given, else the newest model of this stage (see the module docstring)."""
    return find_model(given, STAGE_DIR, BEST_GLOBS, RUN_GLOBS, TRAIN_HINT)


def eval_dir(clf: Classifier, dataset: str) -> Path:
    """Where the evaluation of `clf` on `dataset` goes by default: runs/eval_<dataset>, _quick for the quick preset."""
    preset = clf.args.get("preset")
    preset = preset if isinstance(preset, str) and preset.isascii() and preset.isalnum() else "default"
    return STAGE_DIR / "runs" / (f"eval_{dataset}" + ("" if preset == "default" else f"_{preset}"))


def format_prediction(clf: Classifier, text: str) -> str:
    probs, known = clf.classify(text)
    best = int(probs.argmax())
    lines = [f"{clf.classes[best]}  ({probs[best]:.1%})"]
    lines += [f"  {name:<10} {p:6.1%}  {'#' * int(round(p.item() * 30))}" for name, p in zip(clf.classes, probs)]
    if known == 0:
        lines.append("  note: none of these words is in the vocabulary, so this is only the model's prior")
    return "\n".join(lines)


def describe_features(clf: Classifier, text: str) -> str:
    """What the model sees of a text: its words (unknown ones marked) and how many n-gram features it has."""
    tokens = tokenize(text)
    if not tokens:
        return "(:features TEXT shows the features of TEXT, e.g. :features not bad at all)"
    features = clf.featurizer.features(tokens)
    words = " ".join(t if t in clf.featurizer.stoi else f"{t}(<unk>)" for t in tokens)
    ngram_features = int((features >= clf.featurizer.num_words).sum())
    ngrams = f"hashed n-grams (n = 2..{clf.featurizer.ngrams})" if clf.featurizer.ngrams > 1 else "n-grams (words only)"
    return (f"{len(features)} distinct features: {len(features) - ngram_features} words and {ngram_features} {ngrams}"
            f"\n  words: {words}")


def interactive(clf: Classifier) -> int:
    """Classify each line typed; `:features TEXT` shows what the model sees of a text."""
    repl = Repl({}, extra_commands={
        "features": (lambda text: describe_features(clf, text), "TEXT: the words and n-gram features of TEXT")})
    banner = (f"stage 1 MLP ({clf.dataset}: {', '.join(clf.classes)}). Type a text and press Enter; "
              ":help lists commands, :quit or Ctrl-D leaves.")
    return repl.loop(lambda text: print(format_prediction(clf, text)), banner)


def measure_latency(clf: Classifier, texts: list[str], samples: int) -> float:
    """Milliseconds per document at batch size 1, raw text to probabilities (after a short warm-up)."""
    texts = texts[:max(samples, 1)]
    for text in texts[:10]:
        clf.classify(text)
    start = time.perf_counter()
    for text in texts:
        clf.classify(text)
    return (time.perf_counter() - start) / len(texts) * 1000


def check_combinations(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """--text and --interactive classify what the user types: the test-set options would be silently ignored."""
    if args.text is not None and args.interactive:
        raise UserError("--text and --interactive exclude each other: classify one text, or type texts at a prompt")
    if args.text is not None and not args.text.strip():
        raise UserError("--text is empty; give the text to classify, e.g. --text \"a wonderful film\"")
    if args.text is not None or args.interactive:
        given = [f"--{name}" for name in TEST_SET_OPTIONS if getattr(args, name) != parser.get_default(name)]
        if given:
            mode = "--text" if args.text is not None else "--interactive"
            raise UserError(f"{', '.join(given)} only apply to the test-set evaluation, not to {mode}; "
                            f"leave {'them' if len(given) > 1 else 'it'} out, or leave out {mode}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    check_combinations(parser, args)
    if args.metrics_out and Path(args.metrics_out).is_dir():
        raise UserError(f"--metrics_out {args.metrics_out} is a folder; give a file name, e.g. {args.metrics_out}/"
                        "metrics.json")
    set_threads(args.num_threads)
    device = get_device(args.device)
    args.checkpoint = str(find_checkpoint(args.checkpoint))
    clf = Classifier(args.checkpoint, device)
    print(clf.description)
    if args.text is not None:
        print(format_prediction(clf, args.text))
        return 0
    if args.interactive:
        return interactive(clf)

    dataset = args.dataset or clf.dataset
    started = time.time()
    # the output folders first: one that cannot be written is said before the evaluation, not after it
    out_dir = Path(args.out_dir) if args.out_dir else eval_dir(clf, dataset)
    out_dir.mkdir(parents=True, exist_ok=True)
    if args.metrics_out:
        Path(args.metrics_out).parent.mkdir(parents=True, exist_ok=True)
    test = load_split(dataset, "test", args.data_dir)
    if len(test.classes) != len(clf.classes):
        raise UserError(f"{args.checkpoint} predicts {len(clf.classes)} classes but {dataset} has {len(test.classes)}")
    if args.limit:  # evenly spaced, so a file sorted by label still gives every class
        test = test.subset(list(range(0, len(test), max(1, len(test) // args.limit)))[: args.limit])
    tick = time.perf_counter()
    data = FeatureSet.from_texts(clf.featurizer, test.texts, test.labels)
    featurize_seconds = time.perf_counter() - tick
    tick = time.perf_counter()
    probs = clf.probabilities(data, args.batch_size)
    model_seconds = time.perf_counter() - tick
    preds = probs.argmax(1)
    report = classification_report(data.labels, preds, clf.classes)
    latency = measure_latency(clf, test.texts, args.latency_samples)

    plot_confusion(report["confusion_matrix"], clf.classes, out_dir / "confusion_matrix.png",
                   title=f"{dataset} test, MLP ({clf.impl})")
    with open(out_dir / "predictions.jsonl", "w", encoding="utf-8") as f:
        for i, (label, pred) in enumerate(zip(data.labels.tolist(), preds.tolist())):
            row = {"index": i, "label": label, "pred": pred, "confidence": round(probs[i, pred].item(), 5)}
            if label != pred:
                row["text"] = test.texts[i]
            f.write(json.dumps(row, ensure_ascii=False) + "\n")

    metrics = {
        "accuracy": report["accuracy"], "macro_f1": report["macro_f1"], "per_class": report["per_class"],
        "confusion_matrix": report["confusion_matrix"],
        "latency_ms_bs1": latency,
        "throughput_samples_per_s": len(data) / (featurize_seconds + model_seconds),
        "model_only_samples_per_s": len(data) / model_seconds,
        "batch_size": args.batch_size,
    }
    common = dict(stage=STAGE, model=f"{MODEL_NAME}_{clf.impl}", dataset=dataset, split="test", metrics=metrics,
                  params=count_params(clf.model.parameters()), seconds=time.time() - started,
                  seconds_key="eval_seconds", device=device,
                  extra={"checkpoint": str(args.checkpoint), "test_size": len(data)})
    write_metrics(out_dir / "metrics.json", **common)
    if args.metrics_out:
        write_metrics(Path(args.metrics_out), **common)
    print(f"{dataset} test ({len(data)} documents), MLP ({clf.impl}) from {args.checkpoint}")
    print(f"  accuracy {report['accuracy']:.4f}   macro-F1 {report['macro_f1']:.4f}")
    for name, row in report["per_class"].items():
        print(f"  {name:<10} precision {row['precision']:.4f}  recall {row['recall']:.4f}  f1 {row['f1']:.4f}")
    print(f"  latency {latency:.2f} ms/document at batch 1; throughput {metrics['throughput_samples_per_s']:.0f} "
          f"documents/s at batch {args.batch_size} (text to prediction)")
    print(f"  wrote {out_dir / 'metrics.json'}, confusion_matrix.png, predictions.jsonl")
    return 0


if __name__ == "__main__":
    run_main(main)
