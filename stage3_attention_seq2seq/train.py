"""Train an encoder-decoder translator, English -> French, with or without attention (stage 3).

    python stage3_attention_seq2seq/train.py                                 # Bahdanau attention on Multi30k
    python stage3_attention_seq2seq/train.py --preset quick                  # a small model in about 2 minutes
    python stage3_attention_seq2seq/train.py --attention_type luong_general  # or luong_dot, luong_concat, none
    python stage3_attention_seq2seq/train.py --dataset tatoeba               # 167k everyday sentence pairs
    python stage3_attention_seq2seq/train.py --teacher_forcing_end 0.8       # scheduled sampling
    python stage3_attention_seq2seq/train.py --resume                        # carry on after Ctrl-C
(the same commands work from inside stage3_attention_seq2seq/ as `python train.py ...`)

One step (train_one_epoch): the decoder reads the true previous word (teacher forcing; with
--teacher_forcing_end < 1 a growing share of its own guesses: scheduled sampling), label-smoothed
cross-entropy, backward, gradient clipping, AdamW, warm-up + cosine learning rate. After each epoch
(end_of_epoch): validation loss and greedy BLEU, and one sample translation; the best epoch is kept in
--checkpoint. Watch a run with `tensorboard --logdir stage3_attention_seq2seq/runs`, or open the run folder's
history.json / curves.png, rewritten after every epoch.
"""
from __future__ import annotations

import argparse
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F

from scripts.checks import CLIP, COUNT, FRACTION, NON_NEGATIVE, POSITIVE_INT, Range, check_args
from scripts.common import (ArgParser, UserError, add_common_args, add_output_args, checkpoint_header, count_params,
                            get_device, run_main, save_checkpoint, set_seed, set_threads, setup_logging, warmup_cosine,
                            write_metrics)
from scripts.monitor import TrainingMonitor
from scripts.training import ResumableRun, check_counter
from scripts.translation_data import corpus_scores
from stage3_attention_seq2seq.data.translation import (DATASETS, MIN_TOKENS, PAD_ID, Vocabulary, bucketed_batches,
                                                       encode_pairs, load_pairs, num_batches, save_vocabularies,
                                                       tokenize)
from stage3_attention_seq2seq.models.attention import ATTENTION_TYPES
from stage3_attention_seq2seq.models.seq2seq import MAX_DIM, Seq2Seq, Seq2SeqConfig
from stage3_attention_seq2seq.translator import MODEL_NAME, STAGE, model_from_ckpt, translate_sentences

STAGE_DIR = Path(__file__).resolve().parent
# flags that decide the data order, the model or the schedule: a resumed run must keep them (--epochs may grow)
RESUME_MUST_MATCH = ("attention_type", "impl", "batch_size", "limit", "max_len", "min_freq", "seed", "lr",
                     "warmup_steps", "teacher_forcing", "teacher_forcing_end", "embed_dim", "hidden_dim",
                     "attention_dim", "dropout", "tie_embeddings")
# the good settings of each --preset (flags left unset take these). default: the stage's main model, about
# 26 minutes on 2 CPU cores; quick: a smaller model (a smaller vocabulary above all: the output layer over
# every French word costs most of a step) for 3 epochs at a higher learning rate, about 2 minutes
# (results/TUNING.md, "the quick preset")
PRESETS: dict[str, dict[str, Any]] = {
    "default": dict(epochs=16, lr=2e-3, batch_size=128, embed_dim=256, hidden_dim=128, attention_dim=256,
                    dropout=0.3, min_freq=2, warmup_steps=200),
    "quick": dict(epochs=3, lr=5e-3, batch_size=128, embed_dim=128, hidden_dim=64, attention_dim=64,
                  dropout=0.1, min_freq=5, warmup_steps=100),
}
# the allowed values of the flags (scripts/checks.py), checked while parsing, and again after --preset fills them in
RANGES = {
    "epochs": POSITIVE_INT,
    "lr": Range(float, lo=0, lo_open=True, hi=1),              # AdamW steps of more than 1 per weight make no sense
    "batch_size": POSITIVE_INT,
    "embed_dim": Range(int, lo=1, hi=MAX_DIM), "hidden_dim": Range(int, lo=1, hi=MAX_DIM),
    "attention_dim": Range(int, lo=1, hi=MAX_DIM),
    "dropout": FRACTION, "label_smoothing": FRACTION,
    "teacher_forcing": Range(float, lo=0, hi=1), "teacher_forcing_end": Range(float, lo=0, hi=1),
    "min_freq": POSITIVE_INT,
    "max_len": Range(int, lo=1, zero_means="no limit"),
    "limit": COUNT, "val_limit": COUNT, "warmup_steps": COUNT, "max_steps": COUNT,
    "weight_decay": NON_NEGATIVE, "clip": CLIP,
}
# the sentence translated (greedy) after every epoch, so the log shows the model learning
SAMPLE_SENTENCE = "A man in a blue shirt is playing the guitar."


def preset_default(key: str) -> str:
    """How --help states a flag whose default comes from --preset."""
    return "(default: the preset's: " + ", ".join(f"{name} {values[key]}" for name, values in PRESETS.items()) + ")"


def build_parser() -> argparse.ArgumentParser:
    p = ArgParser(description="Train an English->French encoder-decoder with attention (stage 3).")
    p.add_argument("--preset", default="default", choices=list(PRESETS),
                   help="settings for the flags left unset: default (the main model, ~26 min on 2 CPU cores) or "
                        "quick (a small model, ~2 min); it also names the outputs (quick: *_quick)")
    p.add_argument("--attention_type", default="bahdanau", choices=ATTENTION_TYPES,
                   help="bahdanau (additive), luong_dot / luong_general / luong_concat, or none (fixed vector)")
    p.add_argument("--dataset", default="multi30k", choices=DATASETS, help="sentence pairs to train on")
    p.add_argument("--epochs", type=RANGES["epochs"], default=None,
                   help="passes over the training pairs " + preset_default("epochs"))
    p.add_argument("--lr", type=RANGES["lr"], default=None,
                   help="peak AdamW learning rate " + preset_default("lr"))
    p.add_argument("--batch_size", type=RANGES["batch_size"], default=None,
                   help="sentence pairs per batch " + preset_default("batch_size"))
    p.add_argument("--teacher_forcing_end", type=RANGES["teacher_forcing_end"], default=1.0,
                   help="share of true previous words fed in the last epoch (< 1: scheduled sampling, e.g. 0.8)")

    model = p.add_argument_group("model")
    model.add_argument("--impl", default="scratch", choices=["scratch", "torch"],
                       help="recurrent parts: scratch (models/rnn.py) or torch (nn.GRU, nn.GRUCell)")
    model.add_argument("--embed_dim", type=RANGES["embed_dim"], default=None,
                       help="word embedding size, also the readout size " + preset_default("embed_dim"))
    model.add_argument("--hidden_dim", type=RANGES["hidden_dim"], default=None,
                       help="encoder GRU size per direction; the decoder state is twice it "
                            + preset_default("hidden_dim"))
    model.add_argument("--attention_dim", type=RANGES["attention_dim"], default=None,
                       help="hidden size of additive attention " + preset_default("attention_dim"))
    model.add_argument("--dropout", type=RANGES["dropout"], default=None,
                       help="dropout on embeddings and the readout " + preset_default("dropout"))
    model.add_argument("--tie_embeddings", action=argparse.BooleanOptionalAction, default=True,
                       help="the output layer shares the target embedding matrix")

    data = p.add_argument_group("vocabulary and data")
    data.add_argument("--min_freq", type=RANGES["min_freq"], default=None,
                      help="words seen fewer times in training become <unk> " + preset_default("min_freq"))
    data.add_argument("--max_len", type=RANGES["max_len"], default=60,
                      help="drop training pairs longer than this many tokens (0: keep all)")
    data.add_argument("--limit", type=RANGES["limit"], default=0, help="use only the first N training pairs (0: all)")
    data.add_argument("--val_limit", type=RANGES["val_limit"], default=0,
                      help="score only the first N validation pairs (0: all)")

    training = p.add_argument_group("training")
    training.add_argument("--teacher_forcing", type=RANGES["teacher_forcing"], default=1.0,
                          help="share of true previous words fed in the first epoch (linear to --teacher_forcing_end)")
    training.add_argument("--warmup_steps", type=RANGES["warmup_steps"], default=None,
                          help="linear warm-up steps, then cosine decay to 10%% of --lr "
                               + preset_default("warmup_steps"))
    training.add_argument("--weight_decay", type=RANGES["weight_decay"], default=0.0,
                          help="AdamW decoupled weight decay")
    training.add_argument("--clip", type=RANGES["clip"], default=1.0,
                          help="clip the gradient norm to this (0: no clipping)")
    training.add_argument("--label_smoothing", type=RANGES["label_smoothing"], default=0.1,
                          help="label smoothing of the cross-entropy")
    training.add_argument("--max_steps", type=RANGES["max_steps"], default=0,
                          help="stop after this many steps (0: no limit)")

    add_output_args(p, "where to write the best model (default: stage3_attention_seq2seq/checkpoints/"
                        "best_attention_model.pt for bahdanau, else best_<attention_type>_model.pt there; "
                        "another --dataset adds _<dataset>, --preset quick adds _quick: "
                        "best_attention_model_quick.pt)",
                       "run folder (default: stage3_attention_seq2seq/runs/<attention_type>_<dataset>, "
                       "plus _quick for --preset quick)")
    add_common_args(p, seed_help="seed for initialisation, data order, dropout and scheduled sampling")
    return p


def resolve_args(args: argparse.Namespace) -> argparse.Namespace:
    """Fill the unset flags from --preset, check the values and fill in the paths that depend on others."""
    for key, value in PRESETS[args.preset].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    check_args(args, **RANGES)
    if args.lr * args.weight_decay >= 1:     # AdamW multiplies each weight by (1 - lr * weight_decay) every step
        raise UserError(f"--lr {args.lr} times --weight_decay {args.weight_decay} must be below 1 (else every step "
                        "flips or zeroes the weights); use a --weight_decay below 1, e.g. 0.01")
    checkpoint, run = default_names(args.attention_type, args.dataset, args.preset)
    args.checkpoint = args.checkpoint or str(STAGE_DIR / "checkpoints" / checkpoint)
    args.out_dir = args.out_dir or str(STAGE_DIR / "runs" / run)
    best, last = Path(args.checkpoint), Path(args.out_dir) / "last.pt"
    if best.is_dir():
        raise UserError(f"--checkpoint {best} is a folder; give the file name of the model to write")
    if best.absolute() == last.absolute():
        raise UserError(f"--checkpoint {best} is the run's own last.pt; give the best model another name")
    return args


def default_names(attention_type: str, dataset: str, preset: str) -> tuple[str, str]:
    """The best checkpoint's file name and the run folder's name: one pair per attention type, data set and
    preset, so no run overwrites another kind's model ("best_attention_model.pt", "bahdanau_multi30k" for the
    default command; "best_attention_model_quick.pt", "bahdanau_multi30k_quick" for --preset quick)."""
    kind = "attention" if attention_type == "bahdanau" else attention_type
    suffix = ("" if dataset == "multi30k" else f"_{dataset}") + ("" if preset == "default" else f"_{preset}")
    run_suffix = "" if preset == "default" else f"_{preset}"
    return f"best_{kind}_model{suffix}.pt", f"{attention_type}_{dataset}{run_suffix}"


@dataclass
class Corpus:
    """The encoded training and validation pairs, the raw validation pairs (BLEU references) and the vocabularies."""

    train: list
    valid: list
    valid_pairs: list
    src_vocab: Vocabulary
    tgt_vocab: Vocabulary


def load_corpus(args: argparse.Namespace, vocabularies: tuple[Vocabulary, Vocabulary] | None, log: Any) -> Corpus:
    """Read the sentence pairs; build the vocabularies from the training pairs (a resumed run keeps its own)."""
    train_pairs = load_pairs(args.dataset, "train", args.data_dir)[: args.limit or None]
    valid_pairs = load_pairs(args.dataset, "valid", args.data_dir)[: args.val_limit or None]
    if vocabularies:
        src_vocab, tgt_vocab = vocabularies
    else:
        src_vocab = Vocabulary.build([tokenize(s) for s, _ in train_pairs], args.min_freq)
        tgt_vocab = Vocabulary.build([tokenize(t) for _, t in train_pairs], args.min_freq)
        if min(len(src_vocab), len(tgt_vocab)) < MIN_TOKENS:
            raise UserError(f"no word is seen --min_freq {args.min_freq} times in the {len(train_pairs):,} "
                            "training pairs; lower --min_freq or raise --limit")
    train = encode_pairs(train_pairs, src_vocab, tgt_vocab, args.max_len)
    if not train:
        raise UserError(f"no training pairs left (of {len(train_pairs):,}) after --limit/--max_len; loosen them")
    log.info(f"{args.dataset}: {len(train):,} training pairs (of {len(train_pairs):,}), "
             f"{len(valid_pairs):,} validation; vocabularies en {len(src_vocab):,} / fr {len(tgt_vocab):,} "
             f"(min_freq {args.min_freq}); run folder {args.out_dir}")
    return Corpus(train, encode_pairs(valid_pairs, src_vocab, tgt_vocab), valid_pairs, src_vocab, tgt_vocab)


def model_config(args: argparse.Namespace, corpus: Corpus) -> Seq2SeqConfig:
    return Seq2SeqConfig(src_vocab_size=len(corpus.src_vocab), tgt_vocab_size=len(corpus.tgt_vocab),
                         attention_type=args.attention_type, impl=args.impl, embed_dim=args.embed_dim,
                         hidden_dim=args.hidden_dim, attention_dim=args.attention_dim, dropout=args.dropout,
                         tie_embeddings=args.tie_embeddings)


def teacher_forcing_at(epoch: int, args: argparse.Namespace) -> float:
    """Linear schedule from --teacher_forcing (epoch 1) to --teacher_forcing_end (last epoch)."""
    if args.epochs == 1:
        return args.teacher_forcing
    return args.teacher_forcing + (args.teacher_forcing_end - args.teacher_forcing) * (epoch - 1) / (args.epochs - 1)


def sequence_loss(logits: torch.Tensor, targets: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """Mean cross-entropy per real target token (padding ignored)."""
    return F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=PAD_ID,
                           label_smoothing=label_smoothing)


def train_one_epoch(args: argparse.Namespace, model: Seq2Seq, optimizer: torch.optim.Optimizer, examples: list,
                    run: ResumableRun, monitor: TrainingMonitor, total_steps: int,
                    device: torch.device) -> dict[str, float]:
    """One pass over the training pairs from `batch_in_epoch` on; returns its speed and last learning rate."""
    state = run.state
    epoch = state["epoch"] + 1
    ratio = teacher_forcing_at(epoch, args)
    tokens, tick, seconds_before = 0, time.time(), state["train_seconds"]
    for batch in bucketed_batches(examples, args.batch_size, True, args.seed, epoch, state["batch_in_epoch"]):
        lr = warmup_cosine(state["global_step"], total_steps, args.warmup_steps, args.lr, final=args.lr / 10)
        for group in optimizer.param_groups:
            group["lr"] = lr
        batch = batch.to(device)
        logits = model(batch.src, batch.tgt, teacher_forcing=ratio)                  # (B, T, V_t)
        loss = sequence_loss(logits, batch.tgt, args.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if args.clip:                                    # 0: no clipping
            torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip)
        optimizer.step()

        batch_tokens = int((batch.tgt != PAD_ID).sum())
        tokens += batch_tokens
        state["epoch_loss_sum"] += loss.item() * batch_tokens
        state["epoch_tokens"] += batch_tokens
        state["batch_in_epoch"] += 1
        state["global_step"] += 1
        state["train_seconds"] = seconds_before + time.time() - tick
        # the whole run's bar (ETA, running loss, target tokens/s) and the loss curve in TensorBoard
        monitor.step(loss.item(), items=batch_tokens, epoch=f"{epoch}/{args.epochs}", lr=lr)
        run.step_done(f"epoch {epoch}, batch {state['batch_in_epoch']}")   # after Ctrl-C: save last.pt, exit 130
        if args.max_steps and state["global_step"] >= args.max_steps:
            break
    return {"tgt_tokens_per_s": tokens / max(time.time() - tick, 1e-9), "lr": optimizer.param_groups[0]["lr"]}


@torch.no_grad()
def validate(model: Seq2Seq, corpus: Corpus, device: torch.device) -> dict[str, float]:
    """Validation loss (teacher-forced, no smoothing) and greedy BLEU against the raw references."""
    model.eval()
    total, count = 0.0, 0
    for batch in bucketed_batches(corpus.valid, 256, shuffle=False):
        batch = batch.to(device)
        tokens = int((batch.tgt != PAD_ID).sum())
        total += sequence_loss(model(batch.src, batch.tgt), batch.tgt).item() * tokens
        count += tokens
    hypotheses = translate_sentences(model, corpus.src_vocab, corpus.tgt_vocab, [s for s, _ in corpus.valid_pairs],
                                     device, batch_size=256)
    scores = corpus_scores([h.text for h in hypotheses], [t for _, t in corpus.valid_pairs])
    model.train()
    return {"val_loss": total / max(count, 1), "val_bleu": scores["bleu"], "val_chrf": scores["chrf"]}


def sample_translation(model: Seq2Seq, corpus: Corpus, device: torch.device) -> str:
    """SAMPLE_SENTENCE translated greedily (no random numbers drawn: a resumed run stays exact)."""
    result = translate_sentences(model, corpus.src_vocab, corpus.tgt_vocab, [SAMPLE_SENTENCE], device,
                                 unk_replace=True)[0]
    model.train()
    return f"en: {SAMPLE_SENTENCE}\nfr: {result.text}"


def end_of_epoch(args: argparse.Namespace, run: ResumableRun, model: Seq2Seq, corpus: Corpus, device: torch.device,
                 speed: dict[str, float], save_best: Callable[[], None]) -> tuple[dict[str, Any], bool]:
    """Validate, add the epoch's row to the history, and keep the model if its validation BLEU is the best yet.
    Returns the row and whether it is the best so far."""
    state = run.state
    epoch, tick = state["epoch"] + 1, time.time()
    scores = validate(model, corpus, device)
    row = {"epoch": epoch, "steps": state["global_step"],
           "train_loss": state["epoch_loss_sum"] / max(state["epoch_tokens"], 1), **scores,
           "teacher_forcing": teacher_forcing_at(epoch, args), "tgt_tokens_per_s": speed["tgt_tokens_per_s"],
           "lr": speed["lr"], "elapsed_s": state["train_seconds"], "val_seconds": time.time() - tick}
    state["history"].append(row)
    state.update(epoch=epoch, batch_in_epoch=0, epoch_loss_sum=0.0, epoch_tokens=0)
    improved = scores["val_bleu"] > state["best_val_bleu"]
    if improved:
        state.update(best_val_bleu=scores["val_bleu"], best_epoch=epoch)
        save_best()
    return row, improved


def check_resumed_counters(run: ResumableRun, batches: int, total_steps: int) -> None:
    """The counters of a resumed last.pt must describe a run these flags could have made: one history row per
    finished epoch, a batch inside the epoch, steps that the finished epochs and that batch add up to."""
    state = run.state
    steps_before = state["history"][-1].get("steps") if state["history"] else 0
    if (state["epoch"] != len(state["history"]) or not 0 <= state["batch_in_epoch"] < batches
            or not isinstance(steps_before, int) or state["global_step"] != steps_before + state["batch_in_epoch"]
            or state["global_step"] > total_steps):
        raise UserError(f"--resume: {run.last_path} says epoch {state['epoch']}, batch {state['batch_in_epoch']}, "
                        f"step {state['global_step']:,}, which these flags' run ({batches} batches an epoch, "
                        f"{total_steps:,} steps) cannot reach: the file was edited; start a new run with --restart")


def main(argv: Sequence[str] | None = None) -> int:
    args = resolve_args(build_parser().parse_args(argv))
    started = time.time()
    set_threads(args.num_threads)
    device = get_device(args.device)
    out_dir, best_path = Path(args.out_dir), Path(args.checkpoint)
    run = ResumableRun(args, STAGE, MODEL_NAME, out_dir / "last.pt", must_match=RESUME_MUST_MATCH, state={
        "epoch": 0, "batch_in_epoch": 0, "global_step": 0, "best_val_bleu": -1.0, "best_epoch": 0, "history": [],
        "train_seconds": 0.0, "epoch_loss_sum": 0.0, "epoch_tokens": 0})
    resumed = resumed_model(run) if run.resume else None
    best_path.parent.mkdir(parents=True, exist_ok=True)      # a --checkpoint that cannot be written fails now
    log = setup_logging(out_dir)
    corpus = load_corpus(args, resumed[1:] if resumed else None, log)

    set_seed(args.seed)
    config = model_config(args, corpus)
    if resumed and resumed[0].config != config:
        saved, now = resumed[0].config.to_dict(), config.to_dict()
        differ = ", ".join(f"{k} {saved[k]} (flags make {now[k]})" for k in now if saved[k] != now[k])
        raise UserError(f"--resume: {run.last_path} holds a model config its flags do not make ({differ}); "
                        "it was edited or pieced together: start a new run with another --out_dir")
    model = Seq2Seq(config).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    log.info(f"attention {model.config.attention_type} ({model.config.impl}): {count_params(model):,} parameters, "
             f"{model.config}")
    wall_before = resumed_wall_seconds(run)      # time before this --resume

    def wall_seconds() -> float:
        return wall_before + time.time() - started

    def payload() -> dict[str, Any]:
        return {**checkpoint_header(STAGE, MODEL_NAME), "config": model.config.to_dict(), "dataset": args.dataset,
                "src_vocab": corpus.src_vocab.to_dict(), "tgt_vocab": corpus.tgt_vocab.to_dict(), "args": vars(args)}

    def save_best() -> None:
        save_checkpoint(best_path, {**payload(), "model_state": {k: v.detach().cpu() for k, v in
                                                                 model.state_dict().items()},
                                    **{k: run.state[k] for k in ("epoch", "best_val_bleu", "history")}})
        # beside the model it belongs to, written with it: an earlier model's vocabulary is never replaced before
        save_vocabularies(best_path.with_suffix(".vocab.json"), corpus.src_vocab, corpus.tgt_vocab)

    resumed = run.attach(model, optimizer, payload, extra_state=lambda: {"wall_seconds": wall_seconds()})
    total_steps = args.epochs * num_batches(len(corpus.train), args.batch_size)
    if resumed:
        check_resumed_counters(run, num_batches(len(corpus.train), args.batch_size), total_steps)
        log.info(f"resumed at epoch {run.state['epoch'] + 1}, batch {run.state['batch_in_epoch']}")

    total_steps = min(total_steps, args.max_steps) if args.max_steps else total_steps
    monitor = TrainingMonitor(out_dir, stage=STAGE, model=f"{model.config.attention_type}_{model.config.impl}",
                              dataset=args.dataset, device=device, total_steps=total_steps,
                              done_steps=run.state["global_step"], unit="tgt_tokens", log=log,
                              title=f"{model.config.attention_type} attention on {args.dataset}")
    model.train()
    with run, monitor:          # Ctrl-C now stops at the next step boundary; the monitor records how the run ended
        while run.state["epoch"] < args.epochs and not (args.max_steps and run.state["global_step"] >= args.max_steps):
            speed = train_one_epoch(args, model, optimizer, corpus.train, run, monitor, total_steps, device)
            with monitor.evaluating():          # validation time stays out of the ETA and the throughput
                row, improved = end_of_epoch(args, run, model, corpus, device, speed, save_best)
                sample = sample_translation(model, corpus, device)
                log.info(f"epoch {row['epoch']:2d}  train loss {row['train_loss']:.3f}  val loss {row['val_loss']:.3f}"
                         f"  val BLEU {row['val_bleu']:.2f} (greedy){'  *best*' if improved else ''}  "
                         f"{row['tgt_tokens_per_s']:,.0f} target tokens/s  {(time.time() - started) / 60:.1f} min")
                run.save()
            # history.json and curves.png rewritten; the numbers and the sample to TensorBoard and train.log
            monitor.evaluated(row, run.state["history"], panels=CURVES, sample=sample)
    report(args, run, model, corpus, device, wall_seconds(), log)
    run.save()      # last.pt carries at least the wall time reported, so a resumed run's total adds on to it
    return 0


def resumed_model(run: ResumableRun) -> tuple[Seq2Seq, Vocabulary, Vocabulary]:
    """The model and vocabularies of the last.pt that --resume continues, each checked (translator.model_from_ckpt)
    before anything is built from it."""
    return model_from_ckpt(run.last_path, run.resume)


def resumed_wall_seconds(run: ResumableRun) -> float:
    """The wall time of the run before this --resume, as last.pt holds it (0 for a fresh run); checked, so that an
    edited file ends in one line now rather than in a traceback when the metrics are written."""
    if not run.resume:
        return 0.0
    seconds = run.resume.get("wall_seconds")
    check_counter(run.last_path, "wall_seconds", seconds, 0.0)
    if not math.isfinite(seconds) or seconds < 0:
        raise UserError(f"--resume: {run.last_path}: wall_seconds is {seconds!r}, not a number of seconds (the file "
                        "was edited); start a new run with another --out_dir")
    return float(seconds)


# the panels of curves.png: losses, validation BLEU, speed
CURVES = [["train_loss", "val_loss"], ["val_bleu"], ["tgt_tokens_per_s"]]


def report(args: argparse.Namespace, run: ResumableRun, model: Seq2Seq, corpus: Corpus, device: torch.device,
           wall_seconds: float, log: Any) -> None:
    """metrics.json in the run folder: the best epoch's validation scores, speed and time."""
    history, out_dir = run.state["history"], Path(args.out_dir)
    if not history:
        raise UserError(f"this run finished no epoch (it stopped at step {run.state['global_step']}); "
                        "nothing to report")
    best = max(history, key=lambda r: r["val_bleu"])
    write_metrics(out_dir / "metrics.json", stage=STAGE, model=f"{model.config.attention_type}_{model.config.impl}",
                  dataset=args.dataset, split="valid", params=count_params(model), seconds=wall_seconds,
                  seconds_key="train_seconds", device=device,
                  metrics={"val_bleu_greedy": best["val_bleu"], "val_chrf_greedy": best["val_chrf"],
                           "val_loss": best["val_loss"], "best_epoch": best["epoch"], "epochs_run": len(history),
                           "train_tgt_tokens_per_s": sum(r["tgt_tokens_per_s"] for r in history) / len(history),
                           "fit_seconds": round(run.state["train_seconds"], 3)},
                  extra={"checkpoint": args.checkpoint, "vocab": str(Path(args.checkpoint).with_suffix(".vocab.json")),
                         "train_pairs": len(corpus.train)})
    log.info(f"best val BLEU {best['val_bleu']:.2f} (greedy) at epoch {best['epoch']}; checkpoint {args.checkpoint}")


if __name__ == "__main__":
    run_main(main)
