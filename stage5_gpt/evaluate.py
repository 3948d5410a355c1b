"""Score a GPT-mini (stage 5): loss, perplexity and bits per byte on held-out text, or a fine-tuned model's tasks.

    python evaluate.py                                                 # the newest model train.py wrote
    python evaluate.py --checkpoint checkpoints/gpt_gutenberg_bpe.pt   # BPE model, 6 held-out books
    python evaluate.py --text_file my_text.txt                         # any UTF-8 text file
    python evaluate.py --checkpoint checkpoints/ft_imdb_full.pt        # a fine-tuned model on its tasks' test splits
    python evaluate.py --checkpoint checkpoints/ft_multi_full.pt --task translate    # one task: sacreBLEU, chrF
    python evaluate.py --checkpoint checkpoints/ft_multi_full.pt --dataset gutenberg # what fine-tuning forgot

A fine-tuned checkpoint is scored on each task's test split (accuracy, macro-F1, confusion matrix; or sacreBLEU
and chrF of greedy translations), with examples per second and the latency at batch 1, into
<out>/test_<task>.json. With --dataset or --text_file it is scored as a language model instead.

Every token of the text is predicted once, in non-overlapping windows of the model's context (so each
window starts without history: slightly pessimistic, and exact, not an estimate from random windows).
Bits per byte divides the total loss by the UTF-8 bytes of the text: unlike loss per token, it compares
models with different tokenizers (a char model and a BPE model) on the same text.
"""
from __future__ import annotations

import argparse
import math
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from scripts.checks import COUNT
from scripts.common import (ArgParser, UserError, add_checkpoint_arg, add_common_args, autocast, check_json_out,
                            get_device, path_arg, read_text, run_main, set_threads, write_metrics)
from stage5_gpt.data.corpus import DATASETS, load_text, sequential_windows
from stage5_gpt.data.tasks import TASKS, evaluate_task, load_task, tokenize
from stage5_gpt.finetune import BATCH, model_from_checkpoint, model_label
from stage5_gpt.generate import CHECKPOINT_HELP, find_checkpoint, load_model
from stage5_gpt.models.gpt import GPT
from stage5_gpt.models.quant import parameter_count   # int8 weights are buffers, not parameters

STAGE = "stage5_gpt"
RUNS = Path(__file__).resolve().parent / "runs"


def build_parser() -> argparse.ArgumentParser:
    p = ArgParser(description="Validation loss, perplexity and bits per byte of a GPT-mini (stage 5).")
    add_checkpoint_arg(p, None, CHECKPOINT_HELP)
    p.add_argument("--init_from", type=path_arg, default=None,
                   help="score GPT-2's weights instead: gpt2 (online) or a folder")
    p.add_argument("--tokenizer", type=path_arg, default=None,
                   help="tokenizer JSON (must match the checkpoint; default its own)")
    p.add_argument("--dataset", default=None, choices=sorted(DATASETS),
                   help="whose validation split to score (default: the checkpoint's); imdb: the held-out training "
                        "reviews' text")
    p.add_argument("--text_file", type=path_arg, default=None,
                   help="score this UTF-8 text file instead of a validation split")
    p.add_argument("--batch_size", type=BATCH, default=16, help="windows per forward pass")
    p.add_argument("--limit", type=COUNT, default=0,
                   help="score only the first N characters (0: all); for tasks, N test examples, a fixed sample "
                        "with every class in equal share")
    p.add_argument("--task", default=None, choices=list(TASKS),
                   help="a fine-tuned checkpoint: score only this task (default: every task it was tuned on)")
    p.add_argument("--split", default="test", choices=["val", "test"], help="a fine-tuned checkpoint: which split")
    p.add_argument("--out_dir", type=path_arg, default=None,
                   help="where the results go: test_<task>.json for a fine-tuned checkpoint, metrics.json for a "
                        "language model (default runs/eval_<checkpoint name>)")
    p.add_argument("--amp", action=argparse.BooleanOptionalAction, default=False,
                   help="bf16 autocast where the hardware has it (faster, less exact)")
    p.add_argument("--metrics_out", type=path_arg, default=None,
                   help="a language model: metrics.json path, instead of --out_dir "
                        "(default: runs/eval_<checkpoint name>/metrics.json)")
    add_common_args(p, seed_help="random seed (scoring draws no random numbers)")
    return p


@torch.no_grad()
def score(model: GPT, ids: np.ndarray, batch_size: int, device: torch.device, amp: bool) -> tuple[float, int]:
    """(summed cross-entropy in nats, number of predicted tokens) over every token of `ids`."""
    total, count = 0.0, 0
    batches = sequential_windows(ids, model.config.block_size, batch_size)
    n_batches = math.ceil((len(ids) - 1) / model.config.block_size / batch_size)
    for x, y in tqdm(batches, total=n_batches, desc="scoring", unit="batch", disable=None, leave=False):
        with autocast(device, amp):
            logits, _ = model(x.to(device))
        total += F.cross_entropy(logits.float().flatten(0, 1), y.to(device).flatten(), reduction="sum").item()
        count += y.numel()
    return total, count


def run_name(checkpoint: Path) -> str:
    """What the evaluation folder is named after: the checkpoint's name, or a last.pt's run folder."""
    return checkpoint.parent.name if checkpoint.name == "last.pt" else checkpoint.stem


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.metrics_out:      # before minutes of scoring, and never over a checkpoint
        check_json_out(args.metrics_out, "--metrics_out")
    set_threads(args.num_threads)
    device = get_device(args.device)
    ckpt = None if args.init_from else find_checkpoint(args, classifier_ok=True)
    if ckpt and ckpt.get("finetune") and not (args.text_file or args.dataset):
        return evaluate_tasks(args, device, ckpt)
    if args.task:
        raise UserError(f"--task needs a fine-tuned checkpoint; {args.checkpoint} is a pretrained language model")
    if args.out_dir and args.metrics_out:
        raise UserError("give --out_dir or --metrics_out, not both: each says where metrics.json goes")
    if ckpt and ckpt["model"] == "gpt_classifier":
        raise UserError(f"{args.checkpoint} is a classifier, not a language model: drop --dataset / --text_file")
    model, tokenizer, trained_on = load_model(args, device, ckpt=ckpt)
    if args.text_file:
        path = Path(args.text_file)
        text, dataset = read_text(path, "--text_file"), path.name
    else:
        if args.init_from and not args.dataset:
            raise UserError("with --init_from, say what to score: --dataset or --text_file")
        dataset = args.dataset or trained_on
        if not (isinstance(dataset, str) and dataset in DATASETS):   # an edited checkpoint's entry
            raise UserError(f"{args.checkpoint} does not say which data set it was trained on (its dataset entry is "
                            f"{str(dataset)[:40]!r}); say what to score: --dataset or --text_file")
        text = load_text(dataset, args.data_dir)["val"]
    text = text[: args.limit] if args.limit else text
    tick = time.time()
    ids = np.asarray(tokenizer.encode(text), dtype=np.int64)
    if len(ids) < 2:
        raise UserError("the text is too short to score: it needs at least two tokens")
    nats, count = score(model, ids, args.batch_size, device, args.amp)
    seconds = time.time() - tick
    n_bytes = len(text.encode("utf-8"))
    loss = nats / count
    metrics = {"loss": loss, "perplexity": math.exp(loss), "bits_per_byte": nats / math.log(2) / n_bytes,
               "tokens": count, "bytes": n_bytes, "bytes_per_token": n_bytes / len(ids),
               "tokens_per_s": count / max(seconds, 1e-9)}
    name = args.init_from or run_name(Path(args.checkpoint))
    out_dir = Path(args.out_dir) if args.out_dir else RUNS / f"eval_{Path(name).name}"
    out = Path(args.metrics_out) if args.metrics_out else out_dir / "metrics.json"
    write_metrics(out, stage=STAGE, model="gpt", dataset=dataset, split="val" if not args.text_file else "text",
                  metrics=metrics, params=parameter_count(model), seconds=seconds, seconds_key="eval_seconds",
                  device=device, extra={"checkpoint": args.init_from or args.checkpoint})
    print(f"{dataset}: loss {loss:.4f} nats/token, perplexity {metrics['perplexity']:.2f}, "
          f"{metrics['bits_per_byte']:.4f} bits/byte over {count:,} tokens ({n_bytes:,} bytes) in {seconds:.1f} s")
    print(f"metrics: {out}")
    return 0


def evaluate_tasks(args: argparse.Namespace, device: torch.device, ckpt: dict) -> int:
    """Score a fine-tuned checkpoint on the test (or validation) split of its tasks."""
    if args.metrics_out:   # one file cannot hold a result per task
        raise UserError("--metrics_out applies only to a language model; a fine-tuned checkpoint's results go to "
                        "--out_dir (one <split>_<task>.json per task)")
    model, tokenizer = model_from_checkpoint(ckpt, args.checkpoint)
    model, info = model.to(device).eval(), ckpt["finetune"]
    tasks = [args.task] if args.task else info["tasks"]
    if args.task and args.task not in info["tasks"]:
        raise UserError(f"{args.checkpoint} was fine-tuned on {', '.join(info['tasks'])}, not {args.task}")
    out_dir = Path(args.out_dir) if args.out_dir else RUNS / f"eval_{run_name(Path(args.checkpoint))}"
    for task in tasks:
        data = tokenize(tokenizer, load_task(task, args.split, args.data_dir, info["ag_news_source"],
                                             args.limit))
        tick = time.time()
        metrics = evaluate_task(info["kind"], model, tokenizer, data, info["max_len"], args.batch_size, device,
                                args.amp)
        seconds = time.time() - tick
        out = out_dir / f"{args.split}_{task}.json"
        write_metrics(out, stage=STAGE, model=model_label(info),
                      dataset="multi30k" if task == "translate" else task,
                      split="test_2016_flickr" if task == "translate" and args.split == "test" else args.split,
                      metrics=metrics, params=parameter_count(model), seconds=seconds,
                      seconds_key="eval_seconds", device=device,
                      extra={"task": task, "checkpoint": args.checkpoint, "data_source": data.source,
                             "test_size": len(data), **{k: info[k] for k in ("method", "scratch", "tasks", "base",
                                                                             "trainable_params")}})
        score = (f"BLEU {metrics['bleu']:.2f}, chrF {metrics['chrf']:.2f} (greedy)" if task == "translate" else
                 f"accuracy {100 * metrics['accuracy']:.2f}%, macro-F1 {100 * metrics['macro_f1']:.2f}")
        print(f"{task} ({args.split}, {len(data):,} examples): {score}; "
              f"{metrics['latency_ms_bs1']:.1f} ms per example at batch 1")
        print(f"metrics: {out}")
    return 0


if __name__ == "__main__":
    run_main(main)
