"""Fine-tune a pretrained GPT-mini (stage 5) for classification, or for several tasks at once.

    python finetune.py --base checkpoints/gpt_gutenberg_bpe.pt --task imdb          # full fine-tuning, last-token head
    python finetune.py --base ... --task imdb --method head                          # train the head only
    python finetune.py --base ... --task imdb --method last_blocks --train_blocks 2   # the last 2 blocks and the head
    python finetune.py --base ... --task imdb --method lora --lora_rank 8            # LoRA adapters and the head
    python finetune.py --base ... --task imdb --scratch                              # same model, random weights
    python finetune.py --base checkpoints/gpt_imdb_bpe.pt --task imdb --preset cpu   # 1 epoch, 256 tokens: a CPU
    python finetune.py --base ... --task imdb --limit 2000 --eval_limit 1000         # a fixed, balanced sample
    python finetune.py --base gpt2 --task imdb                                       # GPT-2's weights (online)
    python finetune.py --base ... --task multi --tasks imdb,ag_news,translate        # one model, task prompts
    python finetune.py ... --resume                                                  # carry on after Ctrl-C

--task imdb / ag_news puts a Linear head on the hidden state of the last token (<|endoftext|> appended to the
text). --task multi trains the language model itself, text to text: every example is a task prompt and its
answer (data/tasks.py), the loss on the answer only. After each epoch the validation split is scored and the
best model is kept (LoRA merged into the weights); at the end it is scored on each task's test split,
written to <out_dir>/test_<task>.json.
"""
from __future__ import annotations

import argparse
import copy
import math
import time
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from scripts.common import (ArgParser, UserError, add_common_args, add_output_args, amp_name,
                            autocast, checkpoint_header, get_device, hardware, load_checkpoint, path_arg,
                            run_main, save_checkpoint, set_seed, set_threads, setup_logging, warmup_cosine, write_json,
                            write_metrics)
from scripts.checks import CLIP, COUNT, FRACTION, POSITIVE_INT, Range
from scripts.common import model_from_checkpoint as checked_model
from scripts.monitor import TrainingMonitor
from scripts.plots import plot_curves
from scripts.training import ResumableRun, RunLock
from stage5_gpt.data import tasks as T
from stage5_gpt.models.gpt import GPT
from stage5_gpt.models.hf import GPT2_NAMES, load_gpt2
from stage5_gpt.models.lora import add_lora, merge_lora, trainable_fraction
from stage5_gpt.models.quant import model_from_quantized
from stage5_gpt.train import LR, WEIGHT_DECAY, checkpoint_config, gpt_from_checkpoint, load_pretrained

STAGE = "stage5_gpt"
STAGE_DIR = Path(__file__).resolve().parent
METHODS = ("full", "head", "last_blocks", "lora")
# learning rates that suit each method (--lr overrides): frozen bodies and fresh adapters take larger steps
DEFAULT_LR = {"full": 1e-4, "head": 2e-3, "last_blocks": 2e-4, "lora": 1e-3, "scratch": 3e-4}
# settings for the flags a user leaves unset. standard: the recipe of the results tables, 3 epochs of texts as long as
# the model's context, each method's learning rate; cpu: one epoch of texts cut to 256 tokens, what a 2-core CPU does
# in minutes, at a learning rate high enough for so few steps (from scratch, 3e-4 stays the best: results/TUNING.md,
# "fine-tuning on a CPU")
PRESETS: dict[str, dict[str, Any]] = {
    "standard": dict(epochs=3, max_len=0),
    "cpu": dict(epochs=1, max_len=256, lr=1e-3),
}
# the allowed values of the numeric flags (the others: scripts/checks.py, and train.py's LR and WEIGHT_DECAY)
EPOCHS = Range(int, lo=1, hi=1000)
BATCH = Range(int, lo=1, hi=1 << 16)
LORA_RANK = Range(int, lo=1, hi=1 << 14)          # and at most the model's width (checked once it is loaded)
LORA_ALPHA = Range(float, lo=0, hi=1e4, lo_open=True)
MAX_LEN = Range(int, lo=8, zero_means="the model's context")   # fewer tokens leave no room for a prompt and a text
# the flags that apply to one choice only: flag -> (the option, its value, the flag's default). Typed with another
# choice they would be ignored without a word, so they are refused
ONLY_WITH: dict[str, tuple[str, str, Any]] = {
    "train_blocks": ("method", "last_blocks", 2), "lora_rank": ("method", "lora", 8),
    "lora_alpha": ("method", "lora", 16.0), "lora_targets": ("method", "lora", "c_attn,c_proj"),
    "lora_dropout": ("method", "lora", 0.0), "tasks": ("task", "multi", "imdb,ag_news,translate"),
}
# what --resume compares with the saved run: the flags that decide the model, the data order and the schedule
RESUME_MUST_MATCH = ["base", "scratch", "tasks", "method", "train_blocks", "lora_rank", "lora_alpha", "lora_targets",
                     "lora_dropout", "epochs", "batch_size", "lr", "warmup", "weight_decay", "dropout", "max_len",
                     "limit", "ag_news_source", "amp", "clip", "seed", "eval_limit"]   # seed: the batch order;
#                                          eval_limit: the best epoch is picked by comparing scores on one set


def build_parser() -> argparse.ArgumentParser:
    p = ArgParser(description="Fine-tune a pretrained GPT-mini for classification or several tasks (stage 5).")
    p.add_argument("--base", type=path_arg, default=str(STAGE_DIR / "checkpoints" / "gpt_gutenberg_bpe.pt"),
                   help="the pretrained model: a checkpoint from train.py (BPE), or gpt2 / gpt2-medium / a local "
                        "GPT-2 folder")
    p.add_argument("--preset", default="standard", choices=list(PRESETS),
                   help="settings for unset flags: standard (3 epochs, whole texts), cpu (1 epoch, texts cut to "
                        "256 tokens: minutes on a 2-core CPU)")
    p.add_argument("--task", default="imdb", choices=["imdb", "ag_news", "multi"],
                   help="imdb / ag_news: a classification head; multi: text-to-text over --tasks")
    p.add_argument("--tasks", default=None,
                   help=f"--task multi: comma-separated tasks, from {', '.join(T.TASKS)} " + only_default("tasks"))
    p.add_argument("--method", default="full", choices=METHODS,
                   help="what is trained: everything, the head only, the last --train_blocks blocks, or LoRA")
    p.add_argument("--scratch", action=argparse.BooleanOptionalAction, default=False,
                   help="same architecture and tokenizer as --base, random weights: what pretraining buys")
    p.add_argument("--epochs", type=EPOCHS, default=None,
                   help="passes over the training split " + preset_default("epochs"))
    p.add_argument("--lr", type=LR, default=None,
                   help="peak AdamW learning rate (default: the cpu preset's "
                        + f"{PRESETS['cpu']['lr']:g} " +
                        "but from scratch; else per method: " +
                        ", ".join(f"{k} {v:g}" for k, v in DEFAULT_LR.items()) + ")")
    p.add_argument("--batch_size", type=BATCH, default=16, help="examples per step")

    # each of these applies to one --method (or --task) only: default None, so that a flag the user typed for
    # another method is refused (resolve_args), and the default filled in after
    method = p.add_argument_group("method (each flag only with its --method)")
    method.add_argument("--train_blocks", type=POSITIVE_INT, default=None,
                        help="--method last_blocks: how many blocks train " + only_default("train_blocks"))
    method.add_argument("--lora_rank", type=LORA_RANK, default=None,
                        help="--method lora: LoRA rank r " + only_default("lora_rank"))
    method.add_argument("--lora_alpha", type=LORA_ALPHA, default=None,
                        help="--method lora: LoRA scale alpha (the update is alpha/r * B A) "
                             + only_default("lora_alpha"))
    method.add_argument("--lora_targets", default=None,
                        help="--method lora: comma-separated Linear names that get LoRA (c_attn, c_proj, c_fc) "
                             + only_default("lora_targets"))
    method.add_argument("--lora_dropout", type=FRACTION, default=None,
                        help="--method lora: dropout on the LoRA branch's input " + only_default("lora_dropout"))

    training = p.add_argument_group("training")
    training.add_argument("--warmup", type=FRACTION, default=0.06, help="fraction of the steps spent warming up")
    training.add_argument("--weight_decay", type=WEIGHT_DECAY, default=0.01, help="AdamW weight decay (matrices only)")
    training.add_argument("--dropout", type=FRACTION, default=0.1, help="dropout in the model and before the head")
    training.add_argument("--clip", type=CLIP, default=1.0, help="clip the global gradient norm (0: off)")
    training.add_argument("--max_len", type=MAX_LEN, default=None,
                          help="tokens per example, longer texts cut (head and tail kept); 0: the model's context "
                               + preset_default("max_len"))
    training.add_argument("--amp", action=argparse.BooleanOptionalAction, default=True,
                          help="bf16 autocast where the hardware has it")
    training.add_argument("--log_interval", type=POSITIVE_INT, default=50, help="log loss and speed every N steps")

    data = p.add_argument_group("data")
    data.add_argument("--limit", type=COUNT, default=0,
                      help="train on N examples of each task, a fixed sample with every class in equal share (0: "
                           "all); the validation and test splits stay whole unless --eval_limit")
    data.add_argument("--eval_limit", type=COUNT, default=0,
                      help="score N validation and N test examples, a fixed sample with every class in equal share "
                           "(0: all)")
    data.add_argument("--eval_batch_size", type=BATCH, default=64, help="examples per batch when scoring")
    data.add_argument("--ag_news_source", default=None, choices=T.AG_NEWS_SOURCES,
                      help="for a task list with ag_news: official (downloads the training split, the default), or "
                           "test_carveout: train on 6,000 rows of the official test split and test on the other "
                           "1,600 (when only test.csv exists)")
    data.add_argument("--cache_dir", default=str(STAGE_DIR / "data_cache" / "tasks"),
                      help="where tokenised task data is kept between runs ('' for none)")

    add_output_args(p, "where the best model is written (default: checkpoints/ft_<task>_<method>.pt)",
                       "run folder (default: runs/ft_<task>_<method>)")
    add_common_args(p, seed_help="seed for the head's initialisation, the batch order and dropout")
    return p


def only_default(key: str) -> str:
    """How --help states the default of a flag that only one --method (or --task) takes."""
    return f"(default: {ONLY_WITH[key][2]})"


def preset_default(key: str) -> str:
    """How --help states a flag whose default comes from --preset."""
    return "(default: the preset's: " + ", ".join(f"{name} {values[key]}" for name, values in PRESETS.items()) + ")"


def resolve_args(args: argparse.Namespace) -> argparse.Namespace:
    for name, (option, value, default) in ONLY_WITH.items():
        if getattr(args, name) is None:
            setattr(args, name, default)
        elif getattr(args, option) != value:
            raise UserError(f"--{name} applies only with --{option} {value}, not --{option} {getattr(args, option)}; "
                            f"drop --{name} or use --{option} {value}")
    args.preset_max_len = args.max_len is None   # a preset's length gives way to a shorter context; a flag's errs
    for key, value in PRESETS[args.preset].items():
        if getattr(args, key) is None and not (key == "lr" and args.scratch):   # random weights keep their own rate
            setattr(args, key, value)
    args.task_list = [t.strip() for t in args.tasks.split(",") if t.strip()] if args.task == "multi" else [args.task]
    for task in args.task_list:
        T.check_task(task)
    if len(set(args.task_list)) != len(args.task_list) or not args.task_list:
        raise UserError(f"--tasks must name each task once, got {args.tasks!r}")
    if args.ag_news_source is not None and "ag_news" not in args.task_list:
        raise UserError(f"--ag_news_source applies only when ag_news is trained (--task ag_news, or --task multi with "
                        f"ag_news in --tasks), not to {', '.join(args.task_list)}; drop --ag_news_source")
    args.ag_news_source = args.ag_news_source or "official"
    if args.task == "multi" and args.method == "head":
        raise UserError("--method head needs a classification head: use --task imdb or ag_news")
    if args.scratch and args.method != "full":
        raise UserError("--scratch trains every weight from random values: use it with --method full")
    args.lr = args.lr if args.lr is not None else DEFAULT_LR["scratch" if args.scratch else args.method]
    args.lora_target_list = [t.strip() for t in args.lora_targets.split(",") if t.strip()]
    args.dataset = args.task if args.task != "multi" else "multi:" + ",".join(args.task_list)
    name = f"ft_{args.task}_{'scratch' if args.scratch else args.method}"
    args.checkpoint = args.checkpoint or str(STAGE_DIR / "checkpoints" / f"{name}.pt")
    args.out_dir = args.out_dir or str(STAGE_DIR / "runs" / name)
    return args


# ----------------------------------------------------------------------------- model
def load_base(args: argparse.Namespace) -> tuple[GPT, Any, str, str]:
    """The pretrained GPT (its dropout set to --dropout), its tokenizer, where it came from, and a line for the log."""
    if args.base in GPT2_NAMES or Path(args.base).is_dir():
        model, tokenizer = load_gpt2(args.base, "sdpa", args.dropout, flag="--base")
        if args.scratch:
            model = GPT(model.config)
        return model, tokenizer, f"GPT-2 ({args.base})", ""
    model, tokenizer = load_pretrained(args.base, "--base", {"dropout": args.dropout}, random_init=args.scratch)
    T.eot_of(tokenizer)   # a char-level base cannot mark the end of a text
    config = model.config
    line = (f"base {args.base}: {model.num_params():,} parameters, {config.n_layer} layers, {config.n_embd} wide, "
            f"context {config.block_size}{' (architecture only: random weights)' if args.scratch else ''}")
    return model, tokenizer, str(args.base), line


def prepare_model(args: argparse.Namespace, gpt: GPT, classes: list[str] | None) -> nn.Module:
    """The model to train (a GPTClassifier for one classification task, else the GPT), with only the
    parameters of --method left trainable."""
    model: nn.Module = T.GPTClassifier(gpt, len(classes), args.dropout) if classes else gpt
    if args.method == "lora":
        if args.lora_rank > gpt.config.n_embd:   # a rank as large as the layer is no longer low-rank
            raise UserError(f"--lora_rank {args.lora_rank} exceeds the model's width of {gpt.config.n_embd}")
        try:
            add_lora(gpt, args.lora_rank, args.lora_alpha, args.lora_target_list, args.lora_dropout)
        except ValueError as err:
            raise UserError(f"--lora_targets {args.lora_targets}: {err} (c_attn, c_proj, c_fc)") from None
    elif args.method in ("head", "last_blocks"):
        if args.method == "last_blocks" and args.train_blocks > gpt.config.n_layer:
            raise UserError(f"--train_blocks {args.train_blocks} exceeds the model's {gpt.config.n_layer} blocks")
        for param in gpt.parameters():
            param.requires_grad_(False)
        if args.method == "last_blocks":
            for module in [*gpt.h[-args.train_blocks:], gpt.ln_f]:
                module.requires_grad_(True)
    if classes:
        model.head.requires_grad_(True)
    return model


def finetuned_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The weights to keep: LoRA merged into a copy, so the saved model is a plain GPT (and head)."""
    if any("lora_" in name for name, _ in model.named_parameters()):
        model = copy.deepcopy(model)
        merge_lora(model)
    return {k: v.detach().cpu() for k, v in model.state_dict().items()}


def model_label(info: dict[str, Any]) -> str:
    """How results files name a fine-tuned model: gpt_full, gpt_lora, gpt_scratch, gpt_multitask, ..."""
    if info["kind"] == "prompt":
        return "gpt_multitask_scratch" if info["scratch"] else "gpt_multitask"
    return "gpt_scratch" if info["scratch"] else f"gpt_{info['method']}"


def load_finetuned(path: str | Path, device: torch.device) -> tuple[nn.Module, Any, dict[str, Any]]:
    """A checkpoint written by finetune.py: (model, tokenizer, fine-tuning info). The model is a
    GPTClassifier (kind 'head') or a GPT (kind 'prompt')."""
    ckpt = load_checkpoint(path, STAGE, ["gpt", "gpt_classifier"])
    if not ckpt.get("finetune"):
        raise UserError(f"{path} is a pretrained model, not a fine-tuned one; run finetune.py first")
    model, tokenizer = model_from_checkpoint(ckpt, path)
    return model.to(device).eval(), tokenizer, ckpt["finetune"]


def model_from_checkpoint(ckpt: dict[str, Any], path: str | Path) -> tuple[nn.Module, Any]:
    """The model of a loaded checkpoint and its tokenizer: a GPT (pretrained, or fine-tuned text to text), or for
    a 'gpt_classifier' checkpoint the GPTClassifier. Everything is checked before the model is built: the config,
    the tokenizer, the fine-tuning record and the weights' shapes."""
    where = str(path)
    if ckpt.get("finetune") is not None or ckpt.get("model") == "gpt_classifier":
        check_finetune_info(ckpt.get("finetune"), where, ckpt.get("model"), ckpt.get("config"))
    quantized = ckpt.get("quantization") is not None      # written by quantize.py: int8, bf16 or fp16 weights
    if ckpt.get("model") != "gpt_classifier" and not quantized:
        return gpt_from_checkpoint(ckpt, where)
    config, tokenizer = checkpoint_config(ckpt, where)
    if ckpt.get("model") == "gpt_classifier":
        info = ckpt["finetune"]
        classes = len(info["classes"][info["tasks"][0]])
        build = lambda: T.GPTClassifier(GPT(config), classes)   # noqa: E731
    else:
        build = lambda: GPT(config)   # noqa: E731
    if quantized:
        return model_from_quantized(where, build, ckpt), tokenizer
    return checked_model(where, build, ckpt.get("model_state")), tokenizer


FINETUNE_KEYS = ("kind", "tasks", "classes", "method", "scratch", "base", "max_len", "ag_news_source",
                 "trainable_params")


def check_finetune_info(info: Any, where: str, model: Any, config: Any) -> None:
    """The fine-tuning record of a checkpoint (`finetune_info`), checked: generate.py and evaluate.py read the kind,
    tasks, classes and length from it, so an edited one is refused here in one line, not halfway through."""
    def bad(reason: str) -> UserError:
        return UserError(f"{where}: its fine-tuning record is damaged or from another version ({reason}); "
                         "fine-tune the model again")

    if not isinstance(info, dict) or not all(key in info for key in FINETUNE_KEYS):
        raise bad(f"it must hold {', '.join(FINETUNE_KEYS)}")
    kind, tasks, classes = info["kind"], info["tasks"], info["classes"]
    if kind != ("head" if model == "gpt_classifier" else "prompt"):
        raise bad(f"kind {str(kind)[:20]!r} for a {model!r} model")
    if (not isinstance(tasks, list) or not tasks or len(set(map(str, tasks))) != len(tasks)
            or not all(task in T.TASKS for task in tasks)
            or kind == "head" and (len(tasks) != 1 or tasks[0] not in T.CLASSIFICATION_TASKS)):
        raise bad(f"tasks {str(tasks)[:60]}")
    for task in (t for t in tasks if t in T.CLASSIFICATION_TASKS):
        names = classes.get(task) if isinstance(classes, dict) else None
        if not (isinstance(names, list) and 2 <= len(names) <= 1000 and all(isinstance(c, str) and c for c in names)):
            raise bad(f"classes of {task}: {str(names)[:60]}")
    context = config.get("block_size") if isinstance(config, dict) else None
    max_len = info["max_len"]
    if not (isinstance(max_len, int) and isinstance(context, int) and 8 <= max_len <= context):
        raise bad(f"max_len {str(max_len)[:20]} for a context of {context}")
    if info["ag_news_source"] not in T.AG_NEWS_SOURCES:
        raise bad(f"ag_news_source {str(info['ag_news_source'])[:20]!r}")
    # what results files copy: method and scratch name the model, base and trainable_params are written as they are
    if info["method"] not in METHODS or not isinstance(info["scratch"], bool):
        raise bad(f"method {str(info['method'])[:20]!r}, scratch {str(info['scratch'])[:20]!r}")
    if not isinstance(info["base"], str) or isinstance(info["trainable_params"], bool) \
            or not isinstance(info["trainable_params"], int):
        raise bad(f"base {str(info['base'])[:40]!r}, trainable_params {str(info['trainable_params'])[:20]!r}")


# ----------------------------------------------------------------------------- data
def load_splits(args: argparse.Namespace, tokenizer: Any, log: Any) -> dict[str, dict[str, T.TaskData]]:
    """Train, validation and test data of each task, tokenised (and cached in --cache_dir)."""
    splits: dict[str, dict[str, T.TaskData]] = {}
    for task in args.task_list:
        splits[task] = {split: T.load_task(task, split, args.data_dir, args.ag_news_source,
                                           args.limit if split == "train" else args.eval_limit)
                        for split in ("train", "val", "test")}
        check_classes(splits[task]["train"], args.limit)
        for data in splits[task].values():
            T.tokenize(tokenizer, data, args.cache_dir or None)
        sizes = ", ".join(f"{len(d):,} {s}" for s, d in splits[task].items())
        log.info(f"{task} ({splits[task]['test'].source}): {sizes}")
    return splits


def check_classes(data: T.TaskData, limit: int) -> None:
    """Training examples of a classification task must hold two classes at least: with one, the head learns to
    answer it always and the run reports a success. A small --limit (or a tiny data file's split) can leave one."""
    present = sorted(set(data.labels))
    if data.labels and len(present) < 2:
        only = data.classes[present[0]] if present else "none"
        cause = (f"--limit {limit} leaves" if limit else "the training part of the data (its 90/10 split) holds")
        raise UserError(f"{cause} only one class ({only}) of {data.task}'s {len(data.classes)} in its {len(data):,} "
                        "training example(s): a classifier needs two at least"
                        + (f"; raise --limit to {len(data.classes)} or more" if limit else "; check the data files"))


def encode_train(args: argparse.Namespace, tokenizer: Any, splits: dict[str, dict[str, T.TaskData]],
                 kind: str) -> list[Any]:
    """Training examples: (ids, label) for the head, (prompt ids, answer ids) text to text."""
    if kind == "head":
        data = splits[args.task_list[0]]["train"]
        return list(zip(T.encode_for_head(tokenizer, data, args.max_len), data.labels))
    return [ex for task in args.task_list
            for ex in T.encode_text_to_text(tokenizer, splits[task]["train"], args.max_len)]


def example_length(example: Any) -> int:
    return len(example[0]) + (len(example[1]) if isinstance(example[1], list) else 0)


def make_batch(examples: Sequence[Any], kind: str, pad: int) -> tuple[torch.Tensor, ...]:
    if kind == "head":
        ids, lengths = T.pad_batch([ids for ids, _ in examples], pad)
        return ids, lengths, torch.tensor([label for _, label in examples])
    return T.lm_batch(examples, pad)


def epoch_batches(lengths: list[int], args: argparse.Namespace, epoch: int) -> list[list[int]]:
    """The batches of one epoch: a function of --seed and the epoch alone, so --resume recomputes them."""
    return T.bucket_batches(lengths, args.batch_size, torch.Generator().manual_seed(args.seed * 1000 + epoch))


def make_optimizer(model: nn.Module, args: argparse.Namespace) -> torch.optim.AdamW:
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=args.lr, betas=(0.9, 0.999))


def validate(model: nn.Module, kind: str, args: argparse.Namespace, tokenizer: Any,
             splits: dict[str, dict[str, T.TaskData]], device: torch.device) -> dict[str, float]:
    """Validation scores: accuracy per classification task, and (text to text) the answer loss."""
    row: dict[str, float] = {}
    amp = args.amp
    for task in args.task_list:
        data = splits[task]["val"]
        if task in T.CLASSIFICATION_TASKS:
            if kind == "head":
                preds = T.predict_head(model, T.encode_for_head(tokenizer, data, args.max_len),
                                       args.eval_batch_size, device, amp, tokenizer.eot_id)
            else:
                labels = T.label_tokens(tokenizer, task, data.classes)
                prompts = [T.encode_prompt(tokenizer, task, ids, args.max_len, max(map(len, labels)))
                           for ids in data.ids]
                preds = T.predict_prompt(model, prompts, labels, args.eval_batch_size, device, amp, tokenizer.eot_id)
            row[f"val_acc_{task}"] = (preds == torch.tensor(data.labels)).double().mean().item()
        if kind == "prompt":
            row[f"val_loss_{task}"] = answer_loss(model, T.encode_text_to_text(tokenizer, data, args.max_len),
                                                  args, device, tokenizer.eot_id)
    model.train()
    return row


@torch.no_grad()
def answer_loss(model: GPT, examples: list[Any], args: argparse.Namespace, device: torch.device, pad: int) -> float:
    model.eval()
    total, count = 0.0, 0
    for batch in T.bucket_batches([example_length(e) for e in examples], args.eval_batch_size, None):
        ids, targets = T.lm_batch([examples[i] for i in batch], pad)
        with autocast(device, args.amp):
            logits, _ = model(ids.to(device))
        targets = targets.to(device)
        total += F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=-1,
                                 reduction="sum").item()
        count += int((targets >= 0).sum())
    return total / max(count, 1)


def selection_score(row: dict[str, float], kind: str) -> float:
    """What picks the best epoch (higher is better): mean validation accuracy for a head, minus the mean
    answer loss text to text."""
    if kind == "head":
        return sum(v for k, v in row.items() if k.startswith("val_acc_"))
    losses = [v for k, v in row.items() if k.startswith("val_loss_")]
    return -sum(losses) / len(losses)


# ----------------------------------------------------------------------------- training
class Throughput:
    """Tokens and examples per second since the last report."""

    def __init__(self) -> None:
        self.restart()

    def restart(self) -> None:
        self.tick, self.tokens, self.examples = time.time(), 0, 0

    def add(self, tokens: int, examples: int) -> None:
        self.tokens += tokens
        self.examples += examples

    def report(self) -> str:
        seconds = time.time() - self.tick
        text = f"{self.tokens / seconds:,.0f} tokens/s  {self.examples / seconds:,.1f} examples/s"
        self.restart()
        return text


def finetune_info(args: argparse.Namespace, kind: str, classes: dict[str, list[str]], base_name: str,
                  trainable: int) -> dict[str, Any]:
    """What a fine-tuned checkpoint says about its training: kind, tasks, classes, method, prompts, base."""
    return {"kind": kind, "tasks": args.task_list, "classes": classes, "method": args.method, "scratch": args.scratch,
            "base": base_name, "max_len": args.max_len, "prompts": {t: T.PROMPTS[t] for t in args.task_list},
            "ag_news_source": args.ag_news_source, "trainable_params": trainable,
            "lora": {"rank": args.lora_rank, "alpha": args.lora_alpha, "targets": args.lora_target_list}
            if args.method == "lora" else None}


def count_trainable(model: nn.Module) -> tuple[int, int]:
    """(trained parameters, parameters of the model as saved): LoRA's adapters are merged away when saving."""
    trainable, total = trainable_fraction(model)
    return trainable, total - sum(p.numel() for name, p in model.named_parameters() if "lora_" in name)


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, batch: list[torch.Tensor], kind: str,
               args: argparse.Namespace, device: torch.device) -> float:
    """Forward, loss, backward, clip and update on one batch; returns the loss. A head's batch is (ids, lengths,
    labels); a text-to-text batch is (ids, targets), the targets -1 except on the answer."""
    with autocast(device, args.amp):
        if kind == "head":
            loss = F.cross_entropy(model(batch[0], batch[1]).float(), batch[2])
        else:
            _, loss = model(batch[0], batch[1])
    loss.backward()
    if args.clip > 0:
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], args.clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    if device.type == "cuda":
        torch.cuda.synchronize()   # so the step's wall time is the GPU's time, not the launch time
    return loss.item()


def epoch_row(model: nn.Module, kind: str, args: argparse.Namespace, tokenizer: Any,
              splits: dict[str, dict[str, T.TaskData]], device: torch.device, state: dict[str, Any],
              steps_per_epoch: int) -> dict[str, Any]:
    """The history row of the epoch just ended: its mean training loss and the validation scores."""
    return {"epoch": state["step"] // steps_per_epoch, "step": state["step"],
            "train_loss": float(sum(v for _, v in state["curve"][-steps_per_epoch:]) / steps_per_epoch),
            **validate(model, kind, args, tokenizer, splits, device), "elapsed_s": round(state["train_seconds"], 3)}


def main(argv: Sequence[str] | None = None) -> int:
    args = resolve_args(build_parser().parse_args(argv))
    started = time.time()
    set_threads(args.num_threads)
    device = get_device(args.device)
    kind = "head" if args.task in T.CLASSIFICATION_TASKS else "prompt"
    # the run folder and the best checkpoint are this process's before its log goes there (ResumableRun below,
    # which needs the base's context to check --resume, takes both locks over)
    RunLock(Path(args.out_dir)).acquire()
    RunLock.for_checkpoint(Path(args.checkpoint)).acquire()
    # the console only, until ResumableRun has checked the run folder may be written (a refused rerun after
    # Ctrl-C must leave the interrupted run's train.log as it was)
    log = setup_logging(None)
    set_seed(args.seed)
    gpt, tokenizer, base_name, base_line = load_base(args)
    if args.max_len > gpt.config.block_size and args.preset_max_len:
        args.max_len = gpt.config.block_size
    if args.max_len > gpt.config.block_size:
        raise UserError(f"--max_len {args.max_len} exceeds the model's context of {gpt.config.block_size}")
    args.max_len = args.max_len or gpt.config.block_size       # 0: the model's context
    model_name = "gpt_classifier" if kind == "head" else "gpt"
    run = ResumableRun(args, STAGE, model_name, Path(args.out_dir) / "last.pt", must_match=RESUME_MUST_MATCH,
                       state={"step": 0, "best_score": -math.inf, "best_epoch": 0, "history": [], "curve": [],
                              "train_seconds": 0.0, "tokens_seen": 0, "examples_seen": 0})
    log = setup_logging(Path(args.out_dir))
    if base_line:
        log.info(base_line)
    splits = load_splits(args, tokenizer, log)
    classes = {task: splits[task]["test"].classes for task in args.task_list}
    model = prepare_model(args, gpt, classes[args.task] if kind == "head" else None).to(device)
    trainable, total = count_trainable(model)
    log.info(f"{args.method}{' (from scratch)' if args.scratch else ''}: training {trainable:,} of {total:,} "
             f"parameters ({100 * trainable / total:.2f}%) on {hardware(device)}, {amp_name(device, args.amp)}")

    examples = encode_train(args, tokenizer, splits, kind)
    lengths = [example_length(e) for e in examples]
    steps_per_epoch = len(epoch_batches(lengths, args, 0))
    total_steps = steps_per_epoch * args.epochs
    warmup_steps = max(1, int(args.warmup * total_steps))
    optimizer = make_optimizer(model, args)
    info = finetune_info(args, kind, classes, base_name, trainable)

    def payload() -> dict[str, Any]:   # what both checkpoints hold besides the weights (and, in last.pt, the run)
        return {**checkpoint_header(STAGE, model_name), "config": {**gpt.config.to_dict(), "dropout": 0.0},
                "dataset": args.dataset, "tokenizer": tokenizer.to_dict(),
                "tokenizer_fingerprint": tokenizer.fingerprint(), "args": vars(args), "finetune": info}

    if run.attach(model, optimizer, payload):
        check_resumed_counters(run, total_steps, args.epochs)
        log.info(f"resumed at step {run.state['step']} of {total_steps}")
    state, order, pad, speed = run.state, {}, tokenizer.eot_id, Throughput()
    model.train()
    # one bar for the whole run, TensorBoard events, history.json and curves.png refreshed at every evaluation
    monitor = TrainingMonitor(args.out_dir, stage=STAGE, model=model_label(info), dataset=args.dataset, device=device,
                              total_steps=total_steps, done_steps=state["step"], unit="tokens", desc="fine-tuning",
                              log=log)
    with run, monitor:   # from here, Ctrl-C stops the loop after a step and saves last.pt
        while state["step"] < total_steps:
            epoch, within = divmod(state["step"], steps_per_epoch)
            if epoch not in order:   # the epoch's batches, drawn once
                order = {epoch: epoch_batches(lengths, args, epoch)}
            batch_ids = order[epoch][within]
            step_start = time.time()
            lr = warmup_cosine(state["step"], total_steps, warmup_steps, args.lr, args.lr / 10)
            for group in optimizer.param_groups:
                group["lr"] = lr
            batch = [t.to(device) for t in make_batch([examples[i] for i in batch_ids], kind, pad)]
            loss = train_step(model, optimizer, batch, kind, args, device)
            tokens = sum(lengths[i] for i in batch_ids)
            state["step"] += 1
            state["train_seconds"] += time.time() - step_start
            state["tokens_seen"] += tokens
            state["examples_seen"] += len(batch_ids)
            state["curve"].append([state["step"], round(loss, 6)])
            speed.add(tokens, len(batch_ids))
            monitor.step(loss, items=tokens, epoch=f"{epoch + 1}/{args.epochs}", lr=lr)
            if state["step"] % args.log_interval == 0:
                log.info(f"step {state['step']:5d}/{total_steps}  loss {loss:.4f}  lr {lr:.2e}  {speed.report()}")
            if state["step"] % steps_per_epoch == 0:
                with monitor.evaluating():   # validation is not training time
                    row = epoch_row(model, kind, args, tokenizer, splits, device, state, steps_per_epoch)
                    state["history"].append(row)
                    improved = selection_score(row, kind) > state["best_score"]
                    if improved:
                        state.update(best_score=selection_score(row, kind), best_epoch=row["epoch"])
                        save_checkpoint(Path(args.checkpoint),
                                        {**payload(), "model_state": finetuned_state(model), "epoch": row["epoch"]})
                    run.save()
                shown = "  ".join(f"{k} {v:.4f}" for k, v in row.items() if k.startswith(("val_", "train_loss")))
                log.info(f"epoch {row['epoch']}  {shown}{'  *best*' if improved else ''}  "
                         f"{state['train_seconds'] / 60:.1f} min")
                monitor.evaluated(row, {"evals": state["history"], "curve": state["curve"]},
                                  plot=lambda path: plot_history(args, state["history"], path))
                speed.restart()
            run.step_done(f"step {state['step']}")
    finish(args, state, splits, tokenizer, device, trainable, total, started, log)
    return 0


def check_resumed_counters(run: ResumableRun, total_steps: int, epochs: int) -> None:
    """A last.pt's counters must fit this run: a step past the end would "finish" without training, a best epoch
    never reached would name a model that was never scored."""
    step, best, history = run.state["step"], run.state["best_epoch"], run.state["history"]
    problem = (f"step {step}, but the run has only {total_steps} steps" if not 0 <= step <= total_steps else
               f"best epoch {best} of {epochs} epochs" if not 0 <= best <= epochs else
               f"{len(history)} epochs scored of {epochs}" if not isinstance(history, list) or len(history) > epochs
               else "")
    if problem:
        raise UserError(f"--resume: {run.last_path} says {problem}; it was edited or belongs to another run: "
                        "start over with --restart")


def plot_history(args: argparse.Namespace, history: list[dict[str, Any]], path: Path) -> None:
    """curves.png: the training loss and the validation scores, epoch by epoch."""
    keys = sorted({k for row in history for k in row if k.startswith("val_")})
    plot_curves(history, path, [["train_loss"], keys], x="epoch",
                title=f"fine-tuning GPT-mini: {args.dataset} ({args.method})")


def finish(args: argparse.Namespace, state: dict[str, Any], splits: dict[str, dict[str, T.TaskData]],
           tokenizer: Any, device: torch.device, trainable: int, total: int, started: float, log: Any) -> None:
    """history.json, curves.png, and test_<task>.json for each task, scored with the best epoch's model."""
    out_dir = Path(args.out_dir)
    write_json(out_dir / "history.json", {"evals": state["history"], "curve": state["curve"]})
    plot_history(args, state["history"], out_dir / "curves.png")
    model, _, info = load_finetuned(args.checkpoint, device)
    model_name = model_label(info)
    train_speed = {"train_tokens_per_s": state["tokens_seen"] / max(state["train_seconds"], 1e-9),
                   "train_examples_per_s": state["examples_seen"] / max(state["train_seconds"], 1e-9)}
    for task in args.task_list:
        metrics = T.evaluate_task(info["kind"], model, tokenizer, splits[task]["test"], args.max_len,
                                  args.eval_batch_size, device, args.amp)
        metrics.update(train_speed, best_epoch=state["best_epoch"], epochs=args.epochs)
        payload = write_metrics(
            out_dir / f"test_{task}.json", stage=STAGE, model=model_name,
            dataset="multi30k" if task == "translate" else task,
            split="test_2016_flickr" if task == "translate" else "test", params=total,
            seconds=state["train_seconds"], seconds_key="train_seconds", device=device, metrics=metrics,
            extra={"task": task, "method": args.method, "scratch": args.scratch, "tasks": args.task_list,
                   "base": info["base"], "trainable_params": trainable, "data_source": splits[task]["test"].source,
                   "train_size": len(splits[task]["train"]), "test_size": len(splits[task]["test"]),
                   "checkpoint": str(args.checkpoint), "amp": amp_name(device, args.amp)})
        score = (f"BLEU {metrics['bleu']:.2f}, chrF {metrics['chrf']:.2f} (greedy)" if task == "translate"
                 else f"accuracy {100 * metrics['accuracy']:.2f}%, macro-F1 {100 * metrics['macro_f1']:.2f}")
        log.info(f"test {task}: {score}; {payload['metrics']['latency_ms_bs1']:.1f} ms per example at batch 1")
    log.info(f"done in {(time.time() - started) / 60:.1f} min; best epoch {state['best_epoch']}; "
             f"checkpoint {args.checkpoint}")


if __name__ == "__main__":
    run_main(main)
