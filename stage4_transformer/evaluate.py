"""Score a stage 4 Transformer with sacreBLEU and chrF, greedy and beam search, on a held-out split.

    python stage4_transformer/evaluate.py                                   # the newest model (says which)
    python stage4_transformer/evaluate.py --checkpoint checkpoints/bench_main.pt --beam_size 10 --alpha 0.6
    python stage4_transformer/evaluate.py --no-kv_cache                     # the slow path: same words, slower
    python stage4_transformer/evaluate.py --split valid --alpha 1.4         # choose alpha on validation, not test
(or, from the stage folder, `python evaluate.py ...`)

Multi30k's test split is test_2016_flickr. Detokenised output against the raw references (sacreBLEU's 13a
tokenisation, cased); the signature is printed. Writes metrics.json and translations.txt (beam search) to
runs/eval_<checkpoint name>/ (or --out_dir), and metrics.json also to --metrics_out if given.
"""
import argparse
import json
import os
import socket
import time
from pathlib import Path
from typing import Any, Sequence

import torch

from scripts.checks import COUNT
from scripts.common import (ArgParser, UserError, add_checkpoint_arg, add_common_args, check_json_out, check_writable,
                            count_params, get_device, path_arg, run_main, set_threads, write_metrics, write_text)
from scripts.monitor import process_alive
from scripts.repl import SETTING_RANGES
from scripts.training import RunLock
from scripts.translation_data import DATASETS, SPLITS, corpus_scores, load_pairs
from stage4_transformer.data.subword import SubwordVocab
from stage4_transformer.models.transformer import Transformer
from stage4_transformer.translator import (ALPHA, BATCH_SIZE, STAGE, find_checkpoint, load_model,
                                           model_line, translate_sentences)

STAGE_DIR = Path(__file__).resolve().parent


def build_parser() -> argparse.ArgumentParser:
    p = ArgParser(description="Evaluate a stage 4 Transformer: sacreBLEU and chrF, greedy and beam search.")
    add_checkpoint_arg(p, None, "checkpoint written by train.py (default: the newest checkpoints/best_transformer*.pt "
                                "in the stage folder, else the newest runs/transformer_*/last.pt)")
    p.add_argument("--dataset", default=None, choices=DATASETS, help="default: the one the model was trained on")
    p.add_argument("--split", default="test", choices=SPLITS, help="test = Multi30k test_2016_flickr")
    p.add_argument("--beam_size", type=SETTING_RANGES["beam"], default=5,
                   help="beam width for the beam-search score")
    p.add_argument("--alpha", type=ALPHA, default=1.0, help="length penalty exponent (0: none)")
    p.add_argument("--kv_cache", action=argparse.BooleanOptionalAction, default=True,
                   help="decode with the key/value cache; --no-kv_cache: recompute every position each step (slower, "
                        "the same words)")
    p.add_argument("--batch_size", type=BATCH_SIZE, default=128, help="sentences translated at once")
    p.add_argument("--limit", type=COUNT, default=0, help="score only the first N pairs (0: all)")
    p.add_argument("--out_dir", type=path_arg, default=None, help="default: runs/eval_<checkpoint name>")
    p.add_argument("--metrics_out", type=path_arg, default=None, help="also write metrics.json here")
    add_common_args(p, seed_help="unused here: greedy and beam search draw no random numbers")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.checkpoint = str(find_checkpoint(args.checkpoint))
    # where the results go is checked before minutes of decoding, so they are never lost at the end
    out_dir = Path(args.out_dir) if args.out_dir else STAGE_DIR / "runs" / f"eval_{Path(args.checkpoint).stem}"
    check_writable(out_dir, "--out_dir", folder=True)
    refuse_a_training_folder(out_dir, "--out_dir")
    if args.metrics_out:
        check_json_out(args.metrics_out, "--metrics_out")
        if training_metrics(Path(args.metrics_out)):
            raise UserError(f"--metrics_out {args.metrics_out} is a training run's metrics.json; write the "
                            "evaluation elsewhere: another --metrics_out")
    set_threads(args.num_threads)
    device = get_device(args.device)
    started = time.time()
    model, vocab, ckpt = load_model(args.checkpoint, device)
    print(model_line(args.checkpoint, ckpt), flush=True)
    dataset = args.dataset or ckpt["dataset"]
    pairs = load_pairs(dataset, args.split, args.data_dir)
    if args.limit:
        pairs = pairs[: args.limit]
    # the folder is this evaluation's until it ends: a training started into it meanwhile is refused
    lock = RunLock(out_dir, advice="pass another --out_dir").acquire()
    try:
        return score(args, model, vocab, ckpt, dataset, pairs, out_dir, device, started)
    finally:
        lock.release()


def refuse_a_training_folder(folder: Path, flag: str) -> None:
    """An evaluation never writes into a training's run folder: its metrics.json is the training's record, and a
    training may still be writing there. Refused in one line before the model is even loaded."""
    if (folder / "last.pt").is_file() or (folder / "train.log").is_file() or training_metrics(folder / "metrics.json"):
        raise UserError(f"{flag} {folder} is a training run folder (it holds last.pt, train.log or a training's "
                        f"metrics.json); write the evaluation elsewhere: another {flag}")
    holder = RunLock(folder).holder()
    if holder is not None and holder.get("pid") != os.getpid() and (
            holder.get("host") != socket.gethostname() or process_alive(holder.get("pid"))):
        raise UserError(f"{flag} {folder} is in use by process {holder.get('pid')} (`{holder.get('command')}`); "
                        f"wait for it to end, or pass another {flag}")


def training_metrics(path: Path) -> bool:
    """Whether the file at path is a training's metrics.json (it states train_seconds)."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(record, dict) and "train_seconds" in record


def score(args: argparse.Namespace, model: Transformer, vocab: SubwordVocab, ckpt: dict, dataset: str,
          pairs: list, out_dir: Path, device: torch.device, started: float) -> int:
    """Greedy and beam-search BLEU and chrF on `pairs`, printed and written to out_dir (and --metrics_out)."""
    sources, references = [s for s, _ in pairs], [t for _, t in pairs]

    metrics: dict = {"sentences": len(pairs), "beam_size": args.beam_size, "alpha": args.alpha,
                     "kv_cache": args.kv_cache}
    outputs = {}
    for name, beam in (("greedy", 1), ("beam", args.beam_size)):
        tick = time.perf_counter()
        outputs[name] = translate_sentences(model, vocab, sources, device, beam, args.alpha, args.batch_size,
                                            use_cache=args.kv_cache, progress=True)
        seconds = time.perf_counter() - tick
        scores = corpus_scores(outputs[name], references)
        metrics.update({f"bleu_{name}": scores["bleu"], f"chrf_{name}": scores["chrf"],
                        f"sentences_per_s_{name}": round(len(pairs) / seconds, 1)})
        metrics.setdefault("bleu_signature", scores["bleu_signature"])
        metrics.setdefault("chrf_signature", scores["chrf_signature"])
        print(f"{name:6s} (beam {beam:2d}): {scores['bleu_detail']}  chrF {scores['chrf']:.2f}  "
              f"{len(pairs) / seconds:,.1f} sentences/s")

    try:
        write_text(out_dir / "translations.txt", "".join(t + "\n" for t in outputs["beam"]))
    except OSError as err:
        raise UserError(f"cannot write to {out_dir} ({err.strerror or err}); pass another --out_dir") from None
    common = dict(stage=STAGE, model=f"transformer_{model.config.impl}", dataset=dataset,
                  split="test_2016_flickr" if dataset == "multi30k" and args.split == "test" else args.split,
                  metrics=metrics, params=count_params(model), seconds=time.time() - started,
                  seconds_key="eval_seconds", device=device,
                  extra={"checkpoint": str(args.checkpoint), "trained_epochs": plain(ckpt.get("epoch")),
                         "history": plain(ckpt.get("history", []))})
    write_metrics(out_dir / "metrics.json", **common)
    if args.metrics_out:
        write_metrics(Path(args.metrics_out), **common)
    print(f"{metrics['bleu_signature']}\n{metrics['chrf_signature']}")
    print(f"wrote {out_dir / 'metrics.json'} and {out_dir / 'translations.txt'}")
    return 0


def plain(value: Any) -> Any:
    """A checkpoint's record as metrics.json can hold it (None for what JSON cannot: a checkpoint edited by hand)."""
    try:
        json.dumps(value, allow_nan=True)
    except (TypeError, ValueError):
        return None
    return value


if __name__ == "__main__":
    run_main(main)
