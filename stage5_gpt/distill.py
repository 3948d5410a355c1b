"""Knowledge distillation (stage 5): train a smaller GPT-mini on what a trained one predicts.

    python distill.py                                  # teacher: the default char model; student: 4 layers, 176 wide
    python distill.py --no-distill                     # the control: the same student on the data alone
    python distill.py --teacher T.pt --n_layer 2 --n_embd 128 --temperature 2 --alpha 0.5   # other T and alpha
    python distill.py --resume                         # carry on after Ctrl-C, bit-exact on CPU

The data alone says which token came next; the teacher says how likely every token was. The student learns
from both (Hinton, Vinyals & Dean 2015, "Distilling the Knowledge in a Neural Network"):

    L = alpha * T^2 * KL( softmax(z_teacher / T) || softmax(z_student / T) ) + (1 - alpha) * CE(z_student, y)

A temperature T > 1 softens both distributions, so the small probabilities the teacher gives to the wrong
tokens (that "e" often follows "th", "a" less often) carry weight; T^2 keeps the soft term's gradient about as
large as at T = 1: its gradient with respect to the student's logits is (q_T - p_T) / T, and at high T the
difference q_T - p_T itself shrinks like 1/T, so without the factor it would fade like 1/T^2.

The teacher is frozen, in eval mode. With --cache_teacher (the default where it fits in memory) its logits
for every training position are computed once, before the first step, from windows of its context that overlap
by a quarter (so each position sees at least a quarter of a context), and each step reads them: a step then
costs what the control's step costs, and the distilled run is slower only by that one pass of the teacher.
Without it the teacher runs on every batch. The student has the teacher's tokenizer, data set and context
length; the result is an ordinary stage 5 checkpoint (model "gpt") that generate.py and evaluate.py load, with
a "distillation" record: the teacher's path and sha256, T, alpha and both sizes.

`measure()` compares the distilled student with the same student trained on the data alone in the same time.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from scripts.common import (ArgParser, TrainingInterrupted, UserError, add_common_args, add_output_args, amp_name,
                            autocast, checkpoint_entry, display_path, file_sha256, hardware, load_checkpoint, path_arg,
                            refuse_replacing, run_main, save_checkpoint, set_seed, set_threads, setup_logging,
                            warmup_cosine, write_json, write_metrics)
from scripts.common import model_from_checkpoint as checked_model
from scripts.checks import CLIP, COUNT, FRACTION, POSITIVE_INT, Range
from scripts.monitor import TrainingMonitor
from scripts.training import ResumableRun
from stage5_gpt.data.bpe import CharTokenizer
from stage5_gpt.data.corpus import DATA_CACHE, TokenData, prepare
from stage5_gpt.models.gpt import GPT, GPTConfig
from stage5_gpt.models.quant import refuse_quantized
from stage5_gpt import train as T

STAGE, MODEL_NAME, STAGE_DIR = T.STAGE, T.MODEL_NAME, T.STAGE_DIR
DEFAULT_TEACHER = STAGE_DIR / "checkpoints" / "gpt_shakespeare_char.pt"
# the student's shape and training (results/TUNING.md): about half the teacher's parameters or fewer
DEFAULTS: dict[str, Any] = dict(n_layer=4, n_head=4, n_embd=176, dropout=0.0, batch_size=16, grad_accum=1,
                                max_steps=1500, lr=2e-3, min_lr=2e-4, warmup_steps=100, weight_decay=0.1,
                                beta2=0.99, eval_interval=250, eval_iters=50)
CACHE_LIMIT_BYTES = 2 << 30       # --cache_teacher by default when the teacher's logits fit in 2 GiB (float16)
TEMPERATURE = Range(float, lo=0.05, hi=100)
ALPHA = Range(float, lo=0, hi=1)
# what --resume compares with the saved run: the flags that decide the student, the targets and the schedule
RESUME_MUST_MATCH = ["teacher_sha256", "n_layer", "n_head", "n_embd", "dropout", "batch_size", "grad_accum",
                     "max_steps", "lr", "min_lr", "warmup_steps", "weight_decay", "beta2", "clip", "amp",
                     "temperature", "alpha", "distill", "init_from_sha256"]   # and cache_teacher, once resolved


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, targets: torch.Tensor,
                      temperature: float, alpha: float) -> torch.Tensor:
    """Hinton et al.'s loss, averaged over the positions whose target is not -1:

        L = alpha * T^2 * KL(p_T || q_T) + (1 - alpha) * CE(z_s, y)
        p_T = softmax(z_t / T),  q_T = softmax(z_s / T),  KL(p || q) = sum_v p_v (log p_v - log q_v)

    student_logits, teacher_logits: (..., vocab); targets: (...) token ids. alpha 0 is the data alone (the
    teacher's logits are then not read), alpha 1 the teacher alone. Computed in float32."""
    z_student = student_logits.float().flatten(0, -2)                       # (N, V)
    y = targets.flatten()                                                   # (N,)
    ce = F.cross_entropy(z_student, y, ignore_index=-1)
    if alpha == 0:
        return ce
    keep = (y != -1).float()                                                # (N,)
    log_q = F.log_softmax(z_student / temperature, dim=-1)                  # (N, V)
    log_p = F.log_softmax(teacher_logits.float().flatten(0, -2) / temperature, dim=-1)
    kl = (log_p.exp() * (log_p - log_q)).sum(dim=-1)                        # (N,)
    kl = (kl * keep).sum() / keep.sum().clamp(min=1)
    return alpha * temperature ** 2 * kl + (1 - alpha) * ce


# ----------------------------------------------------------------------------- command line
def build_parser() -> argparse.ArgumentParser:
    d = DEFAULTS
    p = ArgParser(description="Distil a trained GPT-mini (the teacher) into a smaller one (the student), stage 5.")
    p.add_argument("--teacher", type=path_arg, default=str(DEFAULT_TEACHER),
                   help="the trained model to learn from: a checkpoint of train.py; its data set, tokenizer and "
                        "context length are the student's")
    # T 1, alpha 0.9 (stage5_gpt/results/TUNING.md): at T 1 the soft targets are the distribution the student is
    # scored on; T 2 with alpha 0.5 spent the small student's capacity on the teacher's softened tail
    p.add_argument("--temperature", type=TEMPERATURE, default=1.0,
                   help="T: both distributions are softmax(logits / T); higher shows the teacher's small "
                        "probabilities more")
    p.add_argument("--alpha", type=ALPHA, default=0.9,
                   help="weight of the teacher's soft targets; 1 - alpha goes to the data's next tokens")
    p.add_argument("--distill", action=argparse.BooleanOptionalAction, default=True,
                   help="learn from the teacher; --no-distill trains the same student on the data alone (alpha 0), "
                        "the control")
    p.add_argument("--max_steps", type=POSITIVE_INT, default=d["max_steps"],
                   help="optimizer steps; the cosine schedule ends here")
    p.add_argument("--lr", type=T.LR, default=d["lr"], help="peak AdamW learning rate")

    student = p.add_argument_group("student")
    student.add_argument("--n_layer", type=T.SIZES["n_layer"], default=d["n_layer"], help="the student's blocks")
    student.add_argument("--n_head", type=T.SIZES["n_head"], default=d["n_head"],
                         help="the student's attention heads per block")
    student.add_argument("--n_embd", type=T.SIZES["n_embd"], default=d["n_embd"],
                         help="the student's width, divisible by --n_head")
    student.add_argument("--dropout", type=FRACTION, default=d["dropout"], help="the student's dropout")
    student.add_argument("--init_from", type=path_arg, default=None,
                         help="start the student from this checkpoint of train.py or distill.py (its shape; it must "
                              "use the teacher's tokenizer) instead of random weights")

    training = p.add_argument_group("training")
    training.add_argument("--batch_size", type=T.SIZES["batch_size"], default=d["batch_size"],
                          help="windows per micro-batch")
    training.add_argument("--grad_accum", type=T.SIZES["grad_accum"], default=d["grad_accum"],
                          help="micro-batches summed into each optimizer step")
    training.add_argument("--min_lr", type=T.MIN_LR, default=d["min_lr"],
                          help="learning rate at the end of the cosine")
    training.add_argument("--warmup_steps", type=COUNT, default=None,
                          help=f"linear warm-up steps (default: {d['warmup_steps']}, or a tenth of --max_steps when "
                               "that is shorter)")
    training.add_argument("--weight_decay", type=T.WEIGHT_DECAY, default=d["weight_decay"],
                          help="AdamW decoupled weight decay, matrices only")
    training.add_argument("--beta2", type=FRACTION, default=d["beta2"], help="AdamW beta2")
    training.add_argument("--clip", type=CLIP, default=1.0, help="clip the global gradient norm to this (0: off)")
    training.add_argument("--amp", action=argparse.BooleanOptionalAction, default=True,
                          help="bf16 autocast on CUDA and on CPUs with AMX/AVX512-BF16 (elsewhere float32), for the "
                               "student and the teacher")
    training.add_argument("--cache_teacher", action=argparse.BooleanOptionalAction, default=None,
                          help="compute the teacher's logits for the whole training text once, before the first step "
                               "(default: when they fit in 2 GiB); --no-cache_teacher runs the teacher on every batch")
    training.add_argument("--eval_interval", type=POSITIVE_INT, default=d["eval_interval"],
                          help="estimate losses and save every N steps")
    training.add_argument("--eval_iters", type=T.SIZES["eval_iters"], default=d["eval_iters"],
                          help="batches per loss estimate")
    training.add_argument("--log_interval", type=COUNT, default=0,
                          help="log loss and tokens/s every N steps (0: ten times per --eval_interval)")
    training.add_argument("--cache_dir", type=path_arg, default=str(DATA_CACHE),
                          help="where the tokenised data sets are kept")

    add_output_args(p, "where the best student is written (default: checkpoints/student_<dataset>_<tokenizer>.pt, "
                       "student_..._alone.pt with --no-distill)",
                    "run folder: log, history, curves, metrics.json, last.pt (default: runs/student_<dataset>_"
                    "<tokenizer>[_alone])")
    add_common_args(p)
    return p


def load_teacher(path: str) -> tuple[dict[str, Any], GPT, Any]:
    """The teacher's checkpoint, model and tokenizer. Refused in one line: another stage, a classifier, a
    fine-tuned or quantized model (those say so in their records)."""
    ckpt = load_checkpoint(path, STAGE, [MODEL_NAME])
    if ckpt.get("finetune"):
        raise UserError(f"--teacher {path} is a fine-tuned model; distil a pretrained one (a checkpoint of train.py)")
    refuse_quantized(path, "--teacher", "distil from", ckpt)
    if not isinstance(ckpt.get("dataset"), str) or not isinstance(ckpt.get("tokenizer"), dict):
        raise UserError(f"--teacher {path} does not say which data set and tokenizer it was trained with; "
                        "retrain it with train.py")
    model, tokenizer = T.gpt_from_checkpoint(ckpt, f"--teacher {path}", {"dropout": 0.0, "attn_dropout": 0.0,
                                                                          "attention": "sdpa"})
    return ckpt, model, tokenizer


def load_student_init(args: argparse.Namespace, tokenizer: Any) -> GPT | None:
    """--init_from: the student's starting weights; its tokenizer must be the teacher's."""
    if args.init_from is None:
        return None
    # train.py's loading: a pretrained float GPT (fine-tuned and quantized ones refused)
    model, own = T.load_pretrained(args.init_from, "--init_from", {"dropout": args.dropout})
    if own.fingerprint() != tokenizer.fingerprint():
        raise UserError(f"--init_from {args.init_from} uses another tokenizer than --teacher {args.teacher} (token "
                        "ids would mean other things to the two models); start from a model of the teacher's "
                        "tokenizer, or from scratch")
    return model


def resolve_args(args: argparse.Namespace) -> argparse.Namespace:
    """Check the combinations of flags; the teacher's checks come in `setup`."""
    if args.n_embd % args.n_head:
        raise UserError(f"--n_embd {args.n_embd} must be divisible by --n_head {args.n_head}")
    if args.min_lr > args.lr:
        raise UserError(f"--min_lr {args.min_lr:g} must not exceed --lr {args.lr:g} (the cosine goes down to it)")
    if args.warmup_steps is None:   # not typed: the default, unless it would outlast a short try
        default = DEFAULTS["warmup_steps"]
        args.warmup_steps = default if default <= args.max_steps else args.max_steps // 10
    if args.warmup_steps > args.max_steps:
        raise UserError(f"--warmup_steps {args.warmup_steps} must be at most --max_steps {args.max_steps}")
    if not args.distill:
        args.alpha = 0.0
    elif args.alpha == 0:
        raise UserError("--alpha 0 ignores the teacher; that is the control: say --no-distill")
    args.log_interval = args.log_interval or max(1, args.eval_interval // 10)
    args.peak_tflops = 0.0          # SpeedMeter times a matmul for the CPU's peak (train.py's MFU)
    return args


def layers(n: int) -> str:
    return f"{n} layer" + ("" if n == 1 else "s")


def is_student(path: Path) -> bool:
    """Whether `path` holds a checkpoint distill.py wrote (its "distillation" record), read memory-mapped."""
    return isinstance(checkpoint_entry(path, "distillation"), dict)


def check_student_path(args: argparse.Namespace) -> None:
    """--checkpoint may replace an earlier student, never the teacher, the --init_from model or another file."""
    out = Path(args.checkpoint)
    for flag in ("teacher", "init_from"):
        other = getattr(args, flag)
        if other and out.exists() and os.path.samefile(out, other):
            raise UserError(f"--checkpoint {out} is the --{flag} file; the student would replace it: give another "
                            "--checkpoint")
    refuse_replacing(out, "--checkpoint", is_student, "a student distill.py wrote")


def output_paths(args: argparse.Namespace) -> None:
    run = f"student_{args.dataset}_{args.tokenizer}" + ("" if args.distill else "_alone")
    args.checkpoint = args.checkpoint or str(STAGE_DIR / "checkpoints" / f"{run}.pt")
    args.out_dir = args.out_dir or str(STAGE_DIR / "runs" / run)


# ----------------------------------------------------------------------------- the teacher's targets
class TeacherTargets:
    """The teacher's logits for a batch of training windows: read from a table computed once over the whole
    training text (cached), or from a forward pass of the teacher on the batch (online)."""

    def __init__(self, teacher: GPT, data: np.ndarray, device: torch.device, amp: bool, cached: bool,
                 log: Any) -> None:
        self.teacher, self.device, self.amp = teacher, device, amp
        self.table: torch.Tensor | None = None
        self.seconds = 0.0
        if cached:
            tick = time.time()
            self.table = self.logits_table(data, log)
            self.seconds = time.time() - tick

    @torch.no_grad()
    def logits_table(self, data: np.ndarray, log: Any, batch: int = 32) -> torch.Tensor:
        """(len(data) - 1, vocab) float16: row i is the teacher's logits for the token after position i. Windows of
        the teacher's context overlap by a quarter, and each keeps the positions no earlier window covered, so
        every position but the first few sees at least a quarter of a context (one pass and a third over the text:
        a full overlap would buy longer contexts for twice the cost of one pass)."""
        n = len(data) - 1                                  # positions that have a next token
        block = min(self.teacher.config.block_size, n)
        starts = table_windows(n, block)
        table = torch.empty(n, self.teacher.config.vocab_size, dtype=torch.float16)
        log.info(f"teacher: computing its logits for {n:,} positions ({len(starts):,} windows of {block})")
        written = 0                                        # positions 0 .. written - 1 are in the table
        for first in range(0, len(starts), batch):
            chunk = starts[first:first + batch]
            x = torch.from_numpy(np.stack([np.asarray(data[s:s + block], dtype=np.int64) for s in chunk]))
            with autocast(self.device, self.amp):
                logits, _ = self.teacher(x.to(self.device))                     # (b, block, V)
            logits = logits.float().cpu()
            for row, s in enumerate(chunk):
                keep = max(0, written - s)                                       # in-window index of the first new one
                table[s + keep:s + block] = logits[row, keep:].to(torch.float16)
                written = s + block
        return table

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, starts: torch.Tensor) -> torch.Tensor:
        """(B, T, vocab) float32 logits for the windows whose inputs x (B, T) begin at `starts` (B,)."""
        if self.table is None:
            with autocast(self.device, self.amp):
                logits, _ = self.teacher(x)
            return logits.float()
        index = starts[:, None] + torch.arange(x.size(1))                       # (B, T) positions
        return self.table[index].to(self.device).float()     # the 2-byte rows cross to the device, then widen


def table_windows(positions: int, block: int) -> list[int]:
    """Where the teacher's windows start when it fills the table: every 3/4 block, the last ending at the end."""
    stride = max(1, block - block // 4)
    starts = list(range(0, positions - block + 1, stride))
    if starts[-1] != positions - block:
        starts.append(positions - block)
    return starts


def teacher_pass_flops(teacher: GPT, train_tokens: int) -> float:
    """FLOPs of the teacher's one pass over the training text (forward only: a third of training's per token)."""
    block = min(teacher.config.block_size, train_tokens - 1)
    return len(table_windows(train_tokens - 1, block)) * block * teacher.flops_per_token(block) / 3


def cache_fits(data: np.ndarray, vocab_size: int) -> bool:
    return len(data) * vocab_size * 2 <= CACHE_LIMIT_BYTES


# ----------------------------------------------------------------------------- set-up
def load_data(args: argparse.Namespace, tokenizer: Any, log: Any) -> TokenData:
    """The teacher's data set, tokenised with the teacher's tokenizer (in a cache folder named after it)."""
    def make_tokenizer(splits: dict[str, str]) -> Any:
        if isinstance(tokenizer, CharTokenizer):
            unknown = sorted(set(splits["train"]).union(splits["val"]) - set(tokenizer.chars))
            if unknown:
                raise UserError(f"the {args.dataset} text here holds {len(unknown)} character(s) the teacher's "
                                f"vocabulary lacks ({', '.join(map(repr, unknown[:5]))}): it is not the text the "
                                f"teacher was trained on; give the --data_dir of {args.teacher}'s data set")
        return tokenizer
    name = f"{args.dataset}-teacher-{tokenizer.fingerprint()[:12]}"
    data = prepare(args.dataset, args.data_dir, make_tokenizer, name, 0, log.info, Path(args.cache_dir))
    if data.tokenizer.fingerprint() != tokenizer.fingerprint():
        raise UserError(f"token cache {data.folder} holds another tokenizer than the teacher's; delete the folder "
                        "and rerun")
    if len(data.train) < args.block_size + 2 or len(data.val) < args.block_size + 2:
        raise UserError(f"the {args.dataset} text holds fewer tokens than one window of the teacher's context "
                        f"({args.block_size}); give the --data_dir of the teacher's data set")
    return data


def build_student(args: argparse.Namespace, tokenizer: Any, init: GPT | None) -> GPT:
    if init is not None:
        if init.config.block_size < args.block_size:
            raise UserError(f"--init_from {args.init_from} has a context of {init.config.block_size}, shorter than "
                            f"the teacher's {args.block_size}")
        return init
    return GPT(GPTConfig(vocab_size=tokenizer.vocab_size, block_size=args.block_size, n_layer=args.n_layer,
                         n_head=args.n_head, n_embd=args.n_embd, dropout=args.dropout, attn_dropout=0.0,
                         bias=False, attention="sdpa"))


def distillation_record(args: argparse.Namespace, teacher: GPT, student: GPT,
                        teacher_ckpt: dict[str, Any]) -> dict[str, Any]:
    """What a student's checkpoint says about how it was made."""
    return {"distilled": bool(args.distill), "teacher": str(args.teacher), "teacher_sha256": args.teacher_sha256,
            "temperature": args.temperature, "alpha": args.alpha, "teacher_params": teacher.num_params(),
            "student_params": student.num_params(), "teacher_config": teacher.config.to_dict(),
            "teacher_best_val_loss": teacher_ckpt.get("best_val_loss"), "cache_teacher": bool(args.cache_teacher)}


# ----------------------------------------------------------------------------- the training loop
def main(argv: Sequence[str] | None = None) -> int:
    args = resolve_args(build_parser().parse_args(argv))
    started = time.time()
    set_threads(args.num_threads)
    device = T.get_device(args.device)
    teacher_ckpt, teacher, tokenizer = load_teacher(args.teacher)
    args.teacher_sha256 = file_sha256(Path(args.teacher))
    args.dataset, args.block_size = teacher_ckpt["dataset"], teacher.config.block_size
    args.tokenizer = "char" if isinstance(tokenizer, CharTokenizer) else "bpe"
    args.init_from_sha256 = file_sha256(Path(args.init_from)) if args.init_from else None
    init = load_student_init(args, tokenizer)
    if init is not None:      # the shape comes from --init_from
        shape = {"n_layer": init.config.n_layer, "n_head": init.config.n_head, "n_embd": init.config.n_embd}
        typed = [k for k, v in shape.items() if getattr(args, k) not in (v, DEFAULTS[k])]
        if typed:
            raise UserError(f"--init_from {args.init_from} sets the student's shape ({layers(shape['n_layer'])}, "
                            f"{shape['n_head']} heads, {shape['n_embd']} wide); drop "
                            + " ".join(f"--{k}" for k in typed))
        args.n_layer, args.n_head, args.n_embd = shape.values()
    output_paths(args)
    check_student_path(args)
    set_seed(args.seed)                   # the student's first weights (and later its dropout) come from --seed
    student = build_student(args, tokenizer, init)
    if student.num_params() >= teacher.num_params():
        raise UserError(f"the student ({student.num_params():,} parameters: {layers(args.n_layer)}, {args.n_embd} "
                        f"wide) is not smaller than the teacher ({teacher.num_params():,}); choose fewer --n_layer "
                        "or a smaller --n_embd")
    return train(args, teacher_ckpt, teacher, tokenizer, student, device, started)


def train(args: argparse.Namespace, teacher_ckpt: dict[str, Any], teacher: GPT, tokenizer: Any, student: GPT,
          device: torch.device, started: float) -> int:
    out_dir = Path(args.out_dir)
    run = ResumableRun(args, STAGE, MODEL_NAME, out_dir / "last.pt", must_match=RESUME_MUST_MATCH,
                       state={"step": 0, "best_val_loss": math.inf, "best_step": 0, "history": [], "curve": [],
                              "train_seconds": 0.0, "teacher_seconds": 0.0, "tokens_seen": 0, "speeds": []})
    log = setup_logging(out_dir)
    data = load_data(args, tokenizer, log)
    fits = cache_fits(data.train, tokenizer.vocab_size)
    if args.cache_teacher and not fits:
        raise UserError(f"--cache_teacher: the teacher's logits for {len(data.train):,} tokens x "
                        f"{tokenizer.vocab_size:,} would take more than {CACHE_LIMIT_BYTES >> 30} GiB; use "
                        "--no-cache_teacher")
    args.cache_teacher = bool(args.distill and (fits if args.cache_teacher is None else args.cache_teacher))
    if run.resume and run.resume["args"].get("cache_teacher") != args.cache_teacher:
        raise UserError(f"--resume: {run.last_path} was trained with "
                        f"--{'' if run.resume['args'].get('cache_teacher') else 'no-'}cache_teacher (the teacher's "
                        "targets differ with it); resume with the same flags")
    if run.resume and run.resume.get("tokenizer_fingerprint") != tokenizer.fingerprint():
        raise UserError(f"--resume: {run.last_path} was trained with another tokenizer; start a new run with "
                        "another --out_dir")
    log.info(f"teacher {args.teacher}: {teacher.num_params():,} parameters ({layers(teacher.config.n_layer)}, "
             f"{teacher.config.n_embd} wide); student: {student.num_params():,} ({layers(args.n_layer)}, "
             f"{args.n_embd} wide), {student.num_params() / teacher.num_params():.0%} of the teacher")
    teacher = teacher.to(device).eval().requires_grad_(False)
    student = student.to(device)
    optimizer = T.make_optimizer(student, args, device)
    data_order = torch.Generator().manual_seed(args.seed)
    record = distillation_record(args, teacher, student, teacher_ckpt)

    def payload() -> dict[str, Any]:
        return {**T.checkpoint_payload(args, student, tokenizer), "distillation": record}
    if run.resume:   # the saved weights must fit the student the flags build (an edited last.pt: one line)
        checked_model(run.last_path, lambda: student, run.resume.get("model_state"))
    run.attach(student, optimizer, payload=payload, extra_state=lambda: {"data_rng": data_order.get_state()})
    if run.resume:
        if not isinstance(run.resume.get("data_rng"), torch.Tensor):
            raise UserError(f"--resume: {run.last_path} holds no data order (edited, or made by another program); "
                            "start a new run with --restart")
        data_order.set_state(run.resume["data_rng"])
    save_last = run.save
    state = run.state
    if run.resume:
        if not 0 <= state["step"] <= args.max_steps:
            raise UserError(f"--resume: {run.last_path} says step {state['step']:,}, but the run has only "
                            f"{args.max_steps:,} steps: the file was edited; start a new run with --restart")
        log.info(f"resumed at step {state['step']}")

    try:
        targets = TeacherTargets(teacher, data.train, device, args.amp, args.cache_teacher, log) \
            if args.distill else None
    except KeyboardInterrupt:
        raise TrainingInterrupted("while the teacher scored the training text, before the first step: nothing to "
                                  "save yet; run the same command to start again") from None
    if targets is not None and targets.table is not None:
        state["teacher_seconds"] += targets.seconds
        log.info(f"teacher: logits of the training text in {targets.seconds:.1f} s "
                 f"({targets.table.numel() * 2 / 2**20:.0f} MiB)")
    teacher_val = T.estimate_loss(teacher, data.val, args, device, 2)
    meter = T.SpeedMeter(student, args, SimpleNamespace(device=device, world=1))
    log.info(f"teacher val loss (estimate) {teacher_val:.4f}; "
             + (f"T {args.temperature:g}, alpha {args.alpha:g}" if args.distill else "the data alone (--no-distill)")
             + f"; GPT ({amp_name(device, args.amp)}) on {hardware(device)}: {meter.describe()}")
    student.train()
    monitor = TrainingMonitor(out_dir, stage=STAGE, model="gpt_student", dataset=args.dataset, device=device,
                              total_steps=args.max_steps, done_steps=state["step"], unit="tokens", log=log,
                              title=f"student of {Path(args.teacher).name}")
    meter.restart()
    with monitor, run:
        while state["step"] < args.max_steps:
            step_start = time.time()
            lr = warmup_cosine(state["step"], args.max_steps, args.warmup_steps, args.lr, args.min_lr)
            for group in optimizer.param_groups:
                group["lr"] = lr
            starts = T.window_starts(data.train, args, 1, data_order)
            loss = train_step(student, optimizer, data.train, starts, targets, args, device)
            state["step"] += 1
            state["tokens_seen"] += meter.tokens_per_step
            state["train_seconds"] += time.time() - step_start
            state["curve"].append([state["step"], round(loss, 6)])
            meter.step()
            monitor.step(loss, items=meter.tokens_per_step, lr=lr)
            last = state["step"] == args.max_steps
            if state["step"] % args.log_interval == 0 or last:
                speed, _, ms_per_step = meter.report()
                state["speeds"].append(speed)
                # the distilled loss mixes the KL term in: it is not the cross-entropy the evaluations report
                label = "loss (CE)" if args.alpha == 0 else f"distillation loss (alpha {args.alpha:g})"
                log.info(f"step {state['step']:5d}  {label} {loss:.4f}  lr {lr:.2e}  {speed:,.0f} tokens/s  "
                         f"{ms_per_step:.0f} ms/step")
            if state["step"] % args.eval_interval == 0 or last:
                with monitor.evaluating():
                    row = evaluate_and_save(student, data, args, state, lr, payload, log)
                    save_last()
                    sample = T.sample_text(student, tokenizer, args.dataset, device)
                monitor.evaluated(row, {"evals": state["history"], "curve": state["curve"]}, sample=sample,
                                  plot=lambda path: T.plot_history(args, state["history"], path))
                meter.restart()
            if run.stop_requested:
                save_last()
                monitor.close("interrupted")
                raise TrainingInterrupted(f"saved {run.last_path} at step {state['step']}; run the same command "
                                          "with --resume to continue")
    pass_flops = teacher_pass_flops(teacher, len(data.train)) if args.cache_teacher else 0.0
    finish(args, student, teacher, teacher_val, pass_flops, state, meter, device, started, log)
    return 0


def train_step(student: GPT, optimizer: torch.optim.Optimizer, data: np.ndarray, starts: torch.Tensor,
               targets: TeacherTargets | None, args: argparse.Namespace, device: torch.device) -> float:
    """One optimizer step over --grad_accum micro-batches of the distillation loss; returns its mean."""
    loss_sum = 0.0
    for micro in range(args.grad_accum):
        x, y = T.batch_on(data, starts[micro], args.block_size, device)
        teacher_logits = targets(x, starts[micro]) if targets is not None else None
        with autocast(device, args.amp):
            logits, _ = student(x)
        loss = distillation_loss(logits, teacher_logits, y, args.temperature, args.alpha)
        (loss / args.grad_accum).backward()
        loss_sum += loss.item() / args.grad_accum
    if args.clip > 0:
        torch.nn.utils.clip_grad_norm_(student.parameters(), args.clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss_sum


def evaluate_and_save(student: GPT, data: TokenData, args: argparse.Namespace, state: dict[str, Any], lr: float,
                      payload: Any, log: Any) -> dict[str, Any]:
    """Estimate both splits' cross-entropy (the data's loss, whatever the training loss) into the history; save the
    student to --checkpoint when validation improved."""
    device = next(student.parameters()).device
    row = {"step": state["step"], "train_loss": T.estimate_loss(student, data.train, args, device, 1),
           "val_loss": T.estimate_loss(student, data.val, args, device, 2), "lr": lr,
           "tokens_seen": state["tokens_seen"], "elapsed_s": round(state["train_seconds"], 3)}
    state["history"].append(row)
    improved = row["val_loss"] < state["best_val_loss"]
    if improved:
        state.update(best_val_loss=row["val_loss"], best_step=state["step"])
        save_checkpoint(Path(args.checkpoint), {
            **payload(), "model_state": {k: v.detach().cpu() for k, v in student.state_dict().items()},
            "step": state["step"], "best_val_loss": row["val_loss"], "history": state["history"]})
    log.info(f"step {state['step']:5d}  train loss {row['train_loss']:.4f}  val loss {row['val_loss']:.4f}"
             f"{'  *best*' if improved else ''}  {state['train_seconds'] / 60:.1f} min")
    return row


def finish(args: argparse.Namespace, student: GPT, teacher: GPT, teacher_val: float, pass_flops: float,
           state: dict[str, Any], meter: Any, device: torch.device, started: float, log: Any) -> None:
    """history.json, curves.png and metrics.json of the run (with the FLOPs of the student's steps and of the
    teacher's pass, which measure() uses to give the control the same compute)."""
    out_dir = Path(args.out_dir)
    write_json(out_dir / "history.json", {"evals": state["history"], "curve": state["curve"]})
    T.plot_history(args, state["history"], out_dir / "curves.png")
    tokens_per_s = state["tokens_seen"] / max(state["train_seconds"], 1e-9)
    steady = float(np.median(state["speeds"][1:] or state["speeds"] or [tokens_per_s]))
    best = min(state["history"], key=lambda r: r["val_loss"])
    metrics = {"val_loss": best["val_loss"], "best_step": best["step"],
               "final_val_loss": state["history"][-1]["val_loss"],
               "final_train_loss": state["history"][-1]["train_loss"], "teacher_val_loss": teacher_val,
               "steps": state["step"], "tokens_seen": state["tokens_seen"], "train_tokens_per_s": tokens_per_s,
               "steady_tokens_per_s": steady, "fit_seconds": round(state["train_seconds"], 3),
               "teacher_seconds": round(state["teacher_seconds"], 3), "teacher_pass_flops": pass_flops,
               "train_flops": state["tokens_seen"] * meter.flops_per_token,
               "seconds_per_step": state["train_seconds"] / max(state["step"], 1),
               "student_params": student.num_params(), "teacher_params": teacher.num_params(),
               "temperature": args.temperature, "alpha": args.alpha, "distilled": bool(args.distill)}
    write_metrics(out_dir / "metrics.json", stage=STAGE, model="gpt_student" if args.distill else "gpt_student_alone",
                  dataset=args.dataset, split="val", params=student.num_params(), seconds=time.time() - started,
                  seconds_key="train_seconds", device=device, metrics=metrics,
                  extra={"checkpoint": str(args.checkpoint), "teacher": str(args.teacher),
                         "config": student.config.to_dict(), "amp": amp_name(device, args.amp)})
    log.info(f"best val loss {best['val_loss']:.4f} at step {best['step']} (teacher {teacher_val:.4f}); "
             f"{tokens_per_s:,.0f} tokens/s; checkpoint {args.checkpoint}")


# ----------------------------------------------------------------------------- the comparison, for bench.py
def gap_closed(alone: float, distilled: float, teacher: float) -> float | None:
    """The share of the gap between the student alone and the teacher that distillation closed; None when there is
    no gap (the student alone is already as good as its teacher), where the ratio would mean nothing."""
    gap = alone - teacher
    return (alone - distilled) / gap if gap > 0 else None


def measure(out_root: str | Path, teacher: str | Path = DEFAULT_TEACHER, *, seeds: Sequence[int] = (0,),
            flags: Sequence[str] = (), data_dir: str | None = None, num_threads: int = 2, device: str = "cpu",
            parallel: bool = False, log: Any = print) -> dict[str, Any]:
    """The distilled student against the same student on the data alone, in the same compute, for each seed.

    The distilled run takes --max_steps (from `flags`, else the default) and pays for the teacher's pass over the
    text; the control then trains for as many more steps as that pass cost in FLOPs (forward FLOPs of the
    teacher against the training FLOPs of one student step), so both spend the same arithmetic; their measured
    wall-clock seconds are reported beside it. Every model, the teacher included, is scored by evaluate.py on every
    validation token. gap_closed = (alone - distilled) / (alone - teacher). `parallel` runs each seed's two
    trainings at once (one torch thread each): both then see the same machine load, at the price of slower runs.
    The 1-minute load average is sampled every 10 s while the runs go."""
    out_root = Path(out_root)
    common = [*(["--data_dir", data_dir] if data_dir else []), "--device", device]
    threads = max(1, num_threads // 2) if parallel else num_threads
    set_threads(threads)        # this process only sets up; `hardware` below then names each run's threads
    parsed = resolve_args(build_parser().parse_args([*flags, "--teacher", str(teacher)]))
    _, teacher_model, tokenizer = load_teacher(str(teacher))
    student = GPT(GPTConfig(vocab_size=tokenizer.vocab_size, block_size=teacher_model.config.block_size,
                            n_layer=parsed.n_layer, n_head=parsed.n_head, n_embd=parsed.n_embd, bias=False))
    loads: list[float] = []
    sampling = threading.Event()

    def sample_load() -> None:
        while not sampling.wait(10):
            loads.append(os.getloadavg()[0])
    sampler = threading.Thread(target=sample_load, daemon=True)
    sampler.start()
    teacher_val = evaluate_loss(Path(teacher), out_root / "teacher_eval.json", common, num_threads)
    train_tokens = train_token_count(parsed, str(teacher), data_dir)
    block = student.config.block_size
    step_flops = parsed.batch_size * parsed.grad_accum * block * student.flops_per_token(block)
    extra = math.ceil(teacher_pass_flops(teacher_model, train_tokens) / step_flops)
    runs = []
    try:
        for seed in seeds:
            folder = out_root / f"seed{seed}"
            distilled = [*flags, "--seed", str(seed), "--num_threads", str(threads)]
            alone = [*flags, "--seed", str(seed), "--num_threads", str(threads), "--no-distill",
                     "--max_steps", str(parsed.max_steps + extra)]
            jobs = {"distilled": distilled, "alone": alone}
            started = {name: launch(folder / name, [*argv, *common, "--teacher", str(teacher)], log)
                       for name, argv in jobs.items()} if parallel else {}
            result: dict[str, Any] = {"seed": seed}
            for name, argv in jobs.items():
                proc = started.get(name) or launch(folder / name, [*argv, *common, "--teacher", str(teacher)], log)
                if proc.wait() != 0:
                    raise UserError(f"distill.py ({name}, seed {seed}) failed with status {proc.returncode}; see "
                                    f"{folder / name / 'stdout.log'}")
            for name in jobs:
                metrics = json.loads((folder / name / "run" / "metrics.json").read_text(encoding="utf-8"))
                m = metrics["metrics"]
                result[name] = {"val_loss": evaluate_loss(folder / name / "student.pt", folder / name / "eval.json",
                                                          common, num_threads),
                                "val_loss_estimate": m["val_loss"], "steps": m["steps"], "best_step": m["best_step"],
                                "fit_seconds": m["fit_seconds"], "teacher_seconds": m["teacher_seconds"],
                                "seconds": m["fit_seconds"] + m["teacher_seconds"],
                                "flops": m["train_flops"] + m["teacher_pass_flops"],
                                "tokens_per_s": m["train_tokens_per_s"], "params": metrics["params"]}
            result["gap_closed"] = gap_closed(result["alone"]["val_loss"], result["distilled"]["val_loss"],
                                              teacher_val)
            closed_text = ("undefined (alone is no worse than the teacher)" if result["gap_closed"] is None
                           else f"{result['gap_closed']:.0%} of the gap closed")
            log(f"seed {seed}: teacher {teacher_val:.4f}, alone {result['alone']['val_loss']:.4f}, distilled "
                f"{result['distilled']['val_loss']:.4f}: {closed_text}")
            runs.append(result)
    finally:
        sampling.set()
    closed = [r["gap_closed"] for r in runs if r["gap_closed"] is not None]
    return {"teacher": {"checkpoint": display_path(teacher), "params": teacher_model.num_params(),
                        "val_loss": teacher_val},
            "student": {"n_layer": parsed.n_layer, "n_head": parsed.n_head, "n_embd": parsed.n_embd,
                        "params": student.num_params(),
                        "fraction_of_teacher": student.num_params() / teacher_model.num_params()},
            "settings": {"temperature": parsed.temperature, "alpha": parsed.alpha, "steps": parsed.max_steps,
                         "control_steps": parsed.max_steps + extra, "flags": list(flags), "parallel": parallel,
                         "num_threads_per_run": threads},
            "runs": runs,
            "mean": {key: float(np.mean([r[name]["val_loss"] for r in runs])) for key, name in
                     (("alone_val_loss", "alone"), ("distilled_val_loss", "distilled"))}
            | {"gap_closed": float(np.mean(closed)) if closed else None,
               "gap_closed_min": float(min(closed)) if closed else None, "gap_defined_runs": len(closed)},
            "load_average": {"mean": float(np.mean(loads)) if loads else os.getloadavg()[0],
                             "max": float(max(loads)) if loads else os.getloadavg()[0], "samples": len(loads)},
            "hardware": hardware(device), "cpu_count": os.cpu_count()}


def launch(folder: Path, argv: list[str], log: Any) -> subprocess.Popen:
    """Start distill.py into `folder` (its run folder, checkpoint and output log there)."""
    folder.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, str(Path(__file__)), *argv, "--out_dir", str(folder / "run"),
           "--checkpoint", str(folder / "student.pt"), "--restart"]
    log("$ " + " ".join(cmd[1:]))
    with open(folder / "stdout.log", "w", encoding="utf-8") as out:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)


def evaluate_loss(checkpoint: Path, metrics_out: Path, common: list[str], num_threads: int) -> float:
    """evaluate.py's loss over every validation token of the checkpoint's data set."""
    cmd = [sys.executable, str(STAGE_DIR / "evaluate.py"), "--checkpoint", str(checkpoint), "--metrics_out",
           str(metrics_out), "--num_threads", str(num_threads), *common]
    if subprocess.run(cmd, stdout=subprocess.DEVNULL).returncode != 0:
        raise UserError(f"evaluate.py failed on {checkpoint}")
    return float(json.loads(metrics_out.read_text(encoding="utf-8"))["metrics"]["loss"])


def train_token_count(args: argparse.Namespace, teacher: str, data_dir: str | None) -> int:
    """Tokens of the teacher's training text (tokenised into the cache distill.py uses)."""
    ckpt, _, tokenizer = load_teacher(teacher)
    args.dataset, args.data_dir, args.teacher = ckpt["dataset"], data_dir, teacher
    args.block_size = ckpt["config"]["block_size"]
    quiet = SimpleNamespace(info=lambda message: None)
    return len(load_data(args, tokenizer, quiet).train)


if __name__ == "__main__":
    run_main(main)
