"""Score a stage 3 translator with sacreBLEU and chrF, greedy and beam search, on a held-out split.

    python stage3_attention_seq2seq/evaluate.py               # the newest model trained, on test_2016_flickr
    python stage3_attention_seq2seq/evaluate.py --checkpoint stage3_attention_seq2seq/checkpoints/best_none_model.pt
    python stage3_attention_seq2seq/evaluate.py --beam_size 10 --alpha 0.6 --split valid
(the same commands work from inside stage3_attention_seq2seq/ as `python evaluate.py ...`)

The output is detokenised and compared with the raw reference sentences (sacreBLEU's own 13a
tokenisation, cased), so the number is comparable with published ones; the signature says exactly how.
Without --checkpoint it scores the newest checkpoints/*.pt (else the newest runs/*/last.pt) and prints
which. Writes metrics.json and translations.txt (beam search, one line per source line) to
runs/eval_<checkpoint name>/ (or --out_dir), and metrics.json also to --metrics_out if given.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Sequence

from scripts.checks import COUNT, POSITIVE_INT
from scripts.common import (ArgParser, UserError, add_checkpoint_arg, add_common_args, check_json_out, check_writable,
                            count_params, get_device, path_arg, run_main, set_threads, write_metrics, write_text)
from scripts.translation_data import corpus_scores
from stage3_attention_seq2seq.data.translation import DATASETS, SPLITS, load_pairs, tokenize
from stage3_attention_seq2seq.translator import (ALPHA, BEAM, CHECKPOINT_HELP, STAGE, STAGE_DIR, check_length,
                                                 find_checkpoint, load_model, model_line,
                                                 translate_sentences)


def build_parser() -> argparse.ArgumentParser:
    p = ArgParser(description="Evaluate a stage 3 translator: sacreBLEU and chrF, greedy and beam search.")
    add_checkpoint_arg(p, None, CHECKPOINT_HELP)
    p.add_argument("--dataset", default=None, choices=DATASETS,
                   help="data set to score on (default: the one the model was trained on)")
    p.add_argument("--split", default="test", choices=SPLITS, help="test = Multi30k test_2016_flickr")
    p.add_argument("--beam_size", type=BEAM, default=5, help="beam width for the beam-search score")
    p.add_argument("--alpha", type=ALPHA, default=1.0, help="length penalty exponent")
    p.add_argument("--unk_replace", action=argparse.BooleanOptionalAction, default=True,
                   help="replace <unk> in the output by the most attended source word")
    p.add_argument("--batch_size", type=POSITIVE_INT, default=128, help="sentences translated at once")
    p.add_argument("--limit", type=COUNT, default=0, help="score only the first N pairs (0: all)")
    p.add_argument("--out_dir", type=path_arg, default=None,
                   help="where metrics.json and translations.txt go (default: "
                        "stage3_attention_seq2seq/runs/eval_<checkpoint name>, eval_<run>_last for a run's last.pt)")
    p.add_argument("--metrics_out", type=path_arg, default=None,
                   help="also write metrics.json here (default: nowhere else)")
    add_common_args(p, seed_help="unused: greedy and beam search draw no random numbers")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    path = find_checkpoint(args.checkpoint)
    # where the results go is checked before minutes of decoding, so they are never lost at the end
    out_dir = Path(args.out_dir) if args.out_dir else STAGE_DIR / "runs" / f"eval_{eval_name(path)}"
    check_writable(out_dir, "--out_dir", folder=True)
    if args.metrics_out:
        check_json_out(args.metrics_out, "--metrics_out")
    set_threads(args.num_threads)
    device = get_device(args.device)
    started = time.time()
    model, src_vocab, tgt_vocab, ckpt = load_model(path, device)
    print(model_line(path, ckpt), flush=True)
    dataset = args.dataset or ckpt["dataset"]
    pairs = load_pairs(dataset, args.split, args.data_dir)
    if args.limit:
        pairs = pairs[: args.limit]
    if not pairs:
        raise UserError(f"{dataset} {args.split} has no sentence pairs to score")
    for number, (source, _) in enumerate(pairs, 1):
        check_length(tokenize(source), f"{dataset} {args.split} pair {number}")
    print(f"scoring {len(pairs):,} {dataset} {args.split} pairs: greedy, then beam {args.beam_size}", flush=True)
    sources, references = [s for s, _ in pairs], [t for _, t in pairs]

    metrics: dict = {"sentences": len(pairs), "beam_size": args.beam_size, "alpha": args.alpha,
                     "unk_replace": args.unk_replace}
    outputs = {}
    for name, beam in (("greedy", 1), ("beam", args.beam_size)):
        tick = time.perf_counter()
        translations = translate_sentences(model, src_vocab, tgt_vocab, sources, device, beam, args.alpha,
                                           args.batch_size, unk_replace=args.unk_replace, progress=True)
        seconds = time.perf_counter() - tick
        scores = corpus_scores([t.text for t in translations], references)
        outputs[name] = translations
        metrics.update({f"bleu_{name}": scores["bleu"], f"chrf_{name}": scores["chrf"],
                        f"sentences_per_s_{name}": round(len(pairs) / seconds, 1)})
        metrics.setdefault("bleu_signature", scores["bleu_signature"])
        metrics.setdefault("chrf_signature", scores["chrf_signature"])
        print(f"{name:6s} (beam {beam:2d}): {scores['bleu_detail']}  chrF {scores['chrf']:.2f}  "
              f"{len(pairs) / seconds:,.1f} sentences/s")
    unknown = sum(t.source_tokens.count("<unk>") for t in outputs["beam"])
    metrics["source_unknown_rate"] = round(unknown / max(1, sum(len(t.source_tokens) for t in outputs["beam"])), 4)

    try:
        write_text(out_dir / "translations.txt", "".join(t.text + "\n" for t in outputs["beam"]))
    except OSError as err:
        raise UserError(f"cannot write to {out_dir} ({err.strerror or err}); pass another --out_dir") from None
    config = model.config
    common = dict(stage=STAGE, model=f"{config.attention_type}_{config.impl}", dataset=dataset,
                  split="test_2016_flickr" if dataset == "multi30k" and args.split == "test" else args.split,
                  metrics=metrics, params=count_params(model), seconds=time.time() - started,
                  seconds_key="eval_seconds", device=device,
                  extra={"checkpoint": str(path), "attention_type": config.attention_type,
                         "trained_epochs": ckpt.get("epoch") if isinstance(ckpt.get("epoch"), int) else None,
                         "history": plain_history(ckpt.get("history"))})
    write_metrics(out_dir / "metrics.json", **common)
    if args.metrics_out:
        write_metrics(Path(args.metrics_out), **common)
    print(f"{metrics['bleu_signature']}\n{metrics['chrf_signature']}")
    print(f"wrote {out_dir / 'metrics.json'} and {out_dir / 'translations.txt'}")
    return 0


def plain_history(history: object) -> list:
    """The checkpoint's training history as metrics.json carries it: a list of rows of plain numbers, or [] when
    it is anything else (a checkpoint edited by hand or made by another version)."""
    try:
        json.dumps(history)
    except (TypeError, ValueError):
        return []
    return history if isinstance(history, list) else []


def eval_name(path: Path) -> str:
    """The name of the default output folder: the checkpoint's file name, or <run>_last for a run's last.pt."""
    return f"{path.parent.name}_last" if path.name == "last.pt" else path.stem


if __name__ == "__main__":
    run_main(main)
