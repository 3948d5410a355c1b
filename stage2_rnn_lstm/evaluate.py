"""Evaluate a stage 2 language model: perplexity (word level) or bits per character (char level).

    python stage2_rnn_lstm/evaluate.py                                                  # the newest language model
    python stage2_rnn_lstm/evaluate.py --checkpoint stage2_rnn_lstm/checkpoints/best_lstm_word.pt   # PTB test

Without --checkpoint it loads the newest best language model in checkpoints/ (else the newest run's last.pt)
and says which. Tiny Shakespeare has no test split, so the char model is scored on its validation 10%.
Writes metrics.json to runs/eval_<model>_<vocab>/ (or --out_dir) and to --metrics_out if given.
"""
from __future__ import annotations

import argparse
import math
import time
from pathlib import Path
from typing import Any, Sequence

import torch

from scripts.checks import POSITIVE_INT
from scripts.common import (ArgParser, UserError, add_checkpoint_arg, add_common_args, check_vocab_fits,
                            config_from_checkpoint, count_params, describe_model, find_model, get_device,
                            load_checkpoint, model_from_checkpoint, path_arg, run_main, set_threads, write_metrics)
from stage2_rnn_lstm.data.corpus import MAX_VOCAB, Vocabulary, batchify, describe_split, load_corpus
from stage2_rnn_lstm.models.rnn_lm import LMConfig, RNNLanguageModel
from stage2_rnn_lstm.train import MODEL_NAME, PRESETS, STAGE, check_size, evaluate_stream, perplexity

STAGE_DIR = Path(__file__).resolve().parent
# where the newest language model is looked for without --checkpoint (the classifier's checkpoints do not match)
BEST_GLOBS = ("checkpoints/best_*_char*.pt", "checkpoints/best_*_word*.pt")
RUN_GLOBS = ("runs/*_char*/last.pt", "runs/*_word*/last.pt")
CHECKPOINT_HELP = ("trained language model (default: the newest checkpoints/best_*.pt of a char or word model, "
                   "else the newest runs/*/last.pt)")
# the largest sizes a saved config may hold (train.py's flags allow no more); anything larger was edited
CONFIG_LIMITS = {"vocab_size": MAX_VOCAB, "embed_dim": 65_536, "hidden_dim": 65_536, "num_layers": 64}
DATASET_KINDS = {"shakespeare": "char", "ptb": "word"}


def find_language_model(given: str | None) -> Path:
    """--checkpoint, or the newest language model of this stage (a best checkpoint, else a run's last.pt)."""
    return find_model(given, STAGE_DIR, BEST_GLOBS, RUN_GLOBS, "python stage2_rnn_lstm/train.py --preset quick")


def load_language_model(checkpoint: str | Path, vocab_path: str | None,
                        device: torch.device) -> tuple[RNNLanguageModel, Vocabulary, dict[str, Any]]:
    """Model and vocabulary from a checkpoint; a separate --vocab file must be the checkpoint's own.

    Every part of the checkpoint is checked against the others before the model is built (the config's sizes
    and kinds, the vocabulary, the data set, the weights' names and shapes), so a file edited by hand or made by
    another version is refused in one line, not with a traceback or after allocating an absurd model."""
    ckpt = load_checkpoint(checkpoint, STAGE, [MODEL_NAME], map_location=device)
    config = config_from_checkpoint(checkpoint, ckpt.get("config"), LMConfig, limits=CONFIG_LIMITS)
    vocab = Vocabulary.from_dict(ckpt.get("vocab"), str(checkpoint))
    check_vocab_fits(checkpoint, len(vocab), config.vocab_size)
    dataset = ckpt.get("dataset")
    if DATASET_KINDS.get(dataset) != vocab.kind:
        raise UserError(f"{checkpoint} says it was trained on {str(dataset)[:20]!r} with a {vocab.kind} vocabulary; "
                        f"expected {' or '.join(f'{d} ({k})' for d, k in DATASET_KINDS.items())}; retrain the model")
    if vocab_path is not None:
        given = Vocabulary.load(vocab_path)
        if given.itos != vocab.itos or given.kind != vocab.kind:
            raise UserError(f"vocabulary {vocab_path} ({given.kind}, {len(given)} tokens) does not match the one "
                            f"{checkpoint} was trained with ({vocab.kind}, {len(vocab)} tokens); drop --vocab "
                            "or pass the vocabulary saved beside that checkpoint")
    state = ckpt.get("model_state")
    model = model_from_checkpoint(checkpoint, lambda: RNNLanguageModel(config), state)
    # a tied model has one matrix under two names: loading two different ones into it would keep only the second
    if config.tie_weights and not torch.equal(state["embedding.weight"], state["decoder.weight"]):
        raise UserError(f"{checkpoint}: the config says tie_weights but the saved embedding and decoder differ "
                        "(the config was edited); retrain the model")
    return model.to(device).eval(), vocab, ckpt


def preset_of(ckpt: dict[str, Any]) -> str:
    """The --preset the model was trained with (it names the model in metrics.json); "default" when unknown."""
    args = ckpt.get("args")
    preset = args.get("preset") if isinstance(args, dict) else None
    return preset if preset in PRESETS else "default"


def build_parser() -> argparse.ArgumentParser:
    p = ArgParser(description="Evaluate a stage 2 language model.")
    add_checkpoint_arg(p, None, help=CHECKPOINT_HELP)
    p.add_argument("--vocab", type=path_arg, default=None,
                   help="vocabulary JSON (optional: the checkpoint holds its own)")
    p.add_argument("--split", default=None, choices=["valid", "test"],
                   help="default: test for PTB, valid for Shakespeare (which has no test split)")
    p.add_argument("--batch_size", type=POSITIVE_INT, default=16, help="parallel streams while scoring")
    p.add_argument("--seq_len", type=POSITIVE_INT, default=128,
                   help="tokens per forward pass (the state carries over)")
    p.add_argument("--out_dir", type=path_arg, default=None, help="default: runs/eval_<model>_<vocab> in this stage")
    p.add_argument("--metrics_out", type=path_arg, default=None, help="also write metrics.json here")
    add_common_args(p, seed_help="unused: scoring draws no random numbers")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    set_threads(args.num_threads)
    device = get_device(args.device)
    started = time.time()
    args.checkpoint = str(find_language_model(args.checkpoint))
    model, vocab, ckpt = load_language_model(args.checkpoint, args.vocab, device)
    print(describe_model(Path(args.checkpoint), ckpt))
    dataset = ckpt["dataset"]
    splits, kind = load_corpus(dataset, args.data_dir)
    split = args.split or ("test" if "test" in splits else "valid")
    if split not in splits:
        raise UserError(f"{dataset} has no {split} split; use --split valid")
    data = batchify(vocab.encode(splits[split]), args.batch_size, describe_split(dataset, split))
    check_size(model.config, args.batch_size, args.seq_len, data.shape[1] - 1)
    loss = evaluate_stream(model, data, args.seq_len, device)
    seconds = time.time() - started
    scored = data[:, 1:]  # every token but the first of each stream is predicted once
    metrics = {"loss": loss, "ppl": perplexity(loss), "bits_per_token": loss / math.log(2),
               "tokens": scored.numel(), "unknown_rate": (scored == vocab.unk_id).float().mean().item()}
    config = model.config
    preset = preset_of(ckpt)      # train.py's name for the model (metrics.json)
    name = f"{config.model_type}_{kind}_{config.impl}" + ("" if preset == "default" else f"_{preset}")
    out_dir = Path(args.out_dir) if args.out_dir else STAGE_DIR / "runs" / f"eval_{config.model_type}_{kind}"
    common = dict(stage=STAGE, model=name, dataset=dataset, split=split, metrics=metrics,
                  params=count_params(model), seconds=seconds, seconds_key="eval_seconds", device=device,
                  extra={"checkpoint": str(args.checkpoint)})
    write_metrics(out_dir / "metrics.json", **common)
    if args.metrics_out:
        write_metrics(Path(args.metrics_out), **common)
    unit = "bits per character" if kind == "char" else "bits per word"
    print(f"{dataset} {split} ({scored.numel():,} {kind}s scored), {name} from {args.checkpoint}")
    print(f"  loss {loss:.4f} nats/token   perplexity {perplexity(loss):.2f}   {loss / math.log(2):.3f} {unit}")
    print(f"  wrote {out_dir / 'metrics.json'}")
    return 0


if __name__ == "__main__":
    run_main(main)
