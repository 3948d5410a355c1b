"""Generate text with a trained GPT-mini (stage 5), streaming it as it comes.

    python generate.py --prompt "ROMEO:"                                  # the newest model train.py wrote
    python generate.py --prompt "ROMEO:" --temperature 0.8 --top_p 0.9 --max_new_tokens 300 --seed 1
    python generate.py --checkpoint checkpoints/gpt_gutenberg_bpe.pt --prompt "It was a dark night"
    python generate.py --init_from gpt2 --prompt "Hello"                  # OpenAI's GPT-2 weights (online)
    python generate.py --interactive                                      # a prompt loop; :help lists commands
    python generate.py --interactive --prompt "ROMEO:"                    # this prompt first, then the loop
    python generate.py --prompt "ROMEO:" --no-kv_cache                    # recompute the whole context per token
    python generate.py --checkpoint checkpoints/ft_multi_full.pt --task translate --prompt "A dog runs."
    python generate.py --checkpoint checkpoints/ft_multi_full.pt --interactive    # then :task imdb / translate
    python generate.py --checkpoint checkpoints/ft_imdb_full.pt --prompt "What a film!"   # a classifier: label

Without --checkpoint the newest model train.py wrote is loaded (the newest checkpoints/gpt_*.pt, else the
newest runs/gpt_*/last.pt of a run still going or stopped), and a line says which one and how far it trained.

Sampling: --temperature divides the logits (0: always the likeliest token), --top_k keeps the k
likeliest tokens, --top_p the smallest set reaching probability p. With the KV cache each new token costs
one position of work; --no-kv_cache gives the same tokens, slower.

Fine-tuned models (finetune.py): with --task (or :task in the interactive loop) a multi-task model gets the
task's prompt around your text and answers greedily up to <|endoftext|>; a classifier prints the class of
each text and its probability.
"""
from __future__ import annotations

import argparse
import codecs
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from scripts.checks import Range
from scripts.common import (ArgParser, UserError, add_checkpoint_arg, add_common_args, describe_model, find_model,
                            get_device, load_checkpoint, path_arg, run_main, set_threads)
from scripts.repl import SETTING_RANGES, STANDARD, Repl, check_setting
from stage5_gpt.data import tasks
from stage5_gpt.data.bpe import load_tokenizer
from stage5_gpt.finetune import model_from_checkpoint
from stage5_gpt.models.gpt import GPT
from stage5_gpt.models.hf import load_gpt2
from stage5_gpt.train import BEST_MODELS, RUN_MODELS, TRAIN_HINT

STAGE = "stage5_gpt"
STAGE_DIR = Path(__file__).resolve().parent
CHECKPOINT_HELP = ("a checkpoint written by train.py or finetune.py (default: the newest checkpoints/gpt_*.pt, else "
                   "the newest runs/gpt_*/last.pt)")
FREE_TEXT_TEMPERATURE = 0.8   # an unset --temperature: this for free text, 0 (greedy) for a task's answer
SAMPLING = ("temperature", "top_k", "top_p", "max_new_tokens", "seed")
MAX_NEW_TOKENS = 10_000    # what the interactive loop allows too (scripts/repl.py)


def build_parser() -> argparse.ArgumentParser:
    p = ArgParser(description="Generate text with a trained GPT-mini, or with GPT-2's weights (stage 5).")
    add_checkpoint_arg(p, None, CHECKPOINT_HELP)
    p.add_argument("--init_from", type=path_arg, default=None,
                   help="use GPT-2 weights instead: gpt2 (online) or a local folder")
    p.add_argument("--tokenizer", type=path_arg, default=None,
                   help="tokenizer JSON to use; must be the one the checkpoint was trained with (default: its own)")
    p.add_argument("--prompt", default=None,
                   help="text to continue (default: a new line, or <|endoftext|> for a BPE model)")
    p.add_argument("--interactive", action="store_true",
                   help="read prompts from the keyboard, one per line (with --prompt, that text is answered first)")
    p.add_argument("--task", default=None, help="a fine-tuned multi-task model: wrap the prompt in this task's prompt")
    sampling = p.add_argument_group("sampling")
    sampling.add_argument("--max_new_tokens", type=Range(int, lo=1, hi=MAX_NEW_TOKENS), default=500,
                          help="tokens to generate")
    sampling.add_argument("--temperature", type=SETTING_RANGES["temperature"], default=None,
                          help=f"softmax temperature, 0 = greedy (default: {FREE_TEXT_TEMPERATURE} for free text, "
                               "0 for a task's answer)")
    sampling.add_argument("--top_k", type=SETTING_RANGES["top_k"], default=0,
                          help="sample from the k likeliest tokens only (0: all)")
    sampling.add_argument("--top_p", type=SETTING_RANGES["top_p"], default=0.95,
                          help="nucleus sampling: the smallest set of tokens with probability p")
    sampling.add_argument("--num_samples", type=Range(int, lo=1, hi=1000), default=1,
                          help="independent samples for the prompt (not with --interactive)")
    sampling.add_argument("--kv_cache", action=argparse.BooleanOptionalAction, default=True,
                          help="keep each layer's keys and values; without, the whole context is recomputed for "
                               "every token (same tokens, slower)")
    add_common_args(p, seed_help="seed for sampling")
    return p


def check_flags(args: argparse.Namespace) -> None:
    """The sampling flags, checked as the interactive loop checks its :commands (the same words, with --)."""
    for name in SAMPLING:
        if getattr(args, name) is not None:
            try:
                setattr(args, name, check_setting(name, getattr(args, name)))
            except UserError as err:
                raise UserError(f"--{err}") from None


def find_checkpoint(args: argparse.Namespace, classifier_ok: bool = False) -> dict[str, Any]:
    """Load --checkpoint, or without it the newest model train.py wrote (and say which: a line on stderr, so that
    stdout stays the generated text)."""
    chosen = args.checkpoint is None
    args.checkpoint = str(find_model(args.checkpoint, STAGE_DIR, BEST_MODELS, RUN_MODELS, TRAIN_HINT))
    ckpt = load_checkpoint(args.checkpoint, STAGE, ["gpt", "gpt_classifier"] if classifier_ok else ["gpt"])
    if chosen:
        print(describe_model(Path(args.checkpoint), ckpt), file=sys.stderr, flush=True)
    return ckpt


def load_model(args: argparse.Namespace, device: torch.device, classifier_ok: bool = False,
               ckpt: dict[str, Any] | None = None) -> tuple[torch.nn.Module, Any, str | None]:
    """The model, its tokenizer and the data set it was trained on (None for GPT-2), from a checkpoint
    (checked against --tokenizer; `ckpt` when the caller has loaded it already) or from GPT-2.
    A fine-tuned classifier only where classifier_ok."""
    if args.init_from:
        if args.tokenizer:
            raise UserError("--tokenizer does not apply with --init_from: GPT-2's own vocabulary is used")
        model, tokenizer = load_gpt2(args.init_from)
        dataset = None
    else:
        ckpt = ckpt or find_checkpoint(args, classifier_ok)
        model, tokenizer = model_from_checkpoint(ckpt, args.checkpoint)
        model.finetune = ckpt.get("finetune")
        if args.tokenizer:
            given = load_tokenizer(Path(args.tokenizer))
            if given.fingerprint() != ckpt.get("tokenizer_fingerprint"):
                raise UserError(f"--tokenizer {args.tokenizer} is not the tokenizer {args.checkpoint} was trained "
                                "with (ids would mean other tokens); drop --tokenizer to use the checkpoint's own")
            tokenizer = given
        dataset = ckpt.get("dataset")
    return model.to(device).eval(), tokenizer, dataset


def encode_prompt(text: str, tokenizer: Any, block_size: int) -> tuple[list[int], str | None]:
    """Token ids of the prompt (the last block_size of them), and a note when it had to be cut."""
    ids = tokenizer.encode(text)
    if len(ids) > block_size:
        note = (f"note: the prompt is {len(ids)} tokens, longer than the model's context of {block_size}; "
                f"it keeps only the last {block_size}")
        return ids[-block_size:], note
    return ids, None


def default_prompt(tokenizer: Any) -> str:
    return "<|endoftext|>" if getattr(tokenizer, "eot_id", None) is not None else "\n"


def token_bytes(tokenizer: Any, ids: list[int]) -> bytes:
    if hasattr(tokenizer, "decode_bytes"):
        return tokenizer.decode_bytes(ids)
    return tokenizer.decode(ids).encode("utf-8")


def stream(model: GPT, tokenizer: Any, prompt_ids: list[int], settings: dict[str, Any], use_cache: bool,
           device: torch.device, out: Any = None) -> tuple[list[int], float]:
    """Write the continuation to `out` token by token; return the new ids and tokens per second.
    A BPE token may end in the middle of a UTF-8 character: the incremental decoder holds such bytes back
    until the character is complete."""
    out = out or sys.stdout
    generator = torch.Generator(device=device).manual_seed(settings["seed"])
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    idx = torch.tensor([prompt_ids], dtype=torch.long, device=device)
    new: list[int] = []
    tick = time.perf_counter()
    eot = getattr(tokenizer, "eot_id", None)
    try:
        for token in model.generate(idx, settings["max_new_tokens"], settings["temperature"], settings["top_k"],
                                    settings["top_p"], use_cache=use_cache, generator=generator, stop_token=eot):
            new.append(int(token[0]))
            if new[-1] == eot:
                break
            out.write(decoder.decode(token_bytes(tokenizer, [new[-1]])))
            out.flush()
    finally:
        out.write(decoder.decode(b"", final=True) + "\n")
        out.flush()
    return new, len(new) / max(time.perf_counter() - tick, 1e-9)


def default_temperature(task: str | None) -> float:
    """An unset temperature: greedy for a task's answer, sampling for free text."""
    return 0.0 if task else FREE_TEXT_TEMPERATURE


def task_prompt(model: GPT, tokenizer: Any, task: str, text: str) -> list[int]:
    """Token ids of `text` wrapped in a fine-tuned multi-task model's prompt for `task`."""
    info = getattr(model, "finetune", None)
    if not info or info["kind"] != "prompt":
        raise UserError("a task needs a multi-task model from `finetune.py --task multi`; this one is not")
    if task not in info["tasks"]:
        raise UserError(f"unknown task {task!r}: this model was fine-tuned on {', '.join(info['tasks'])}")
    room = info["max_len"] // 2 if task == "translate" else 8
    return tasks.encode_prompt(tokenizer, task, tokenizer.encode(text, allowed_special=False), info["max_len"], room)


@torch.no_grad()
def classify(model: tasks.GPTClassifier, tokenizer: Any, text: str, device: torch.device) -> str:
    """'label (probability)' for one text, and the other classes' probabilities."""
    info = model.finetune
    classes = info["classes"][info["tasks"][0]]
    ids = tasks.fit(tokenizer.encode(text, allowed_special=False), info["max_len"] - 1) + [tokenizer.eot_id]
    logits = model(torch.tensor([ids], device=device), torch.tensor([len(ids)], device=device))
    probs = torch.softmax(logits.float(), -1)[0].tolist()
    order = sorted(range(len(classes)), key=lambda c: -probs[c])
    return f"{classes[order[0]]} ({probs[order[0]]:.1%})  " + "  ".join(f"{classes[c]} {probs[c]:.1%}"
                                                                     for c in order[1:])


def classify_loop(model: tasks.GPTClassifier, tokenizer: Any, device: torch.device, first: str | None = None) -> int:
    info = model.finetune
    banner = (f"a {info['tasks'][0]} classifier ({', '.join(info['classes'][info['tasks'][0]])}). "
              "Type a text and press Enter; :help lists commands, :quit or Ctrl-D leaves.")
    return Repl({}).loop(lambda line: print(classify(model, tokenizer, line, device)), banner,
                         read=first_then_keyboard(first))


def first_then_keyboard(first: str | None) -> Callable[[str], str]:
    """The interactive loop's reader: `first` (--prompt) as if it had been typed, then the keyboard."""
    pending = [first] if first is not None else []

    def read(prompt: str) -> str:
        if pending:
            print(prompt + pending[0], flush=True)
            return pending.pop()
        return input(prompt)
    return read


def interactive(model: GPT, tokenizer: Any, args: argparse.Namespace, device: torch.device) -> int:
    """A prompt loop: each line is continued (or, with :task, answered); :commands change the settings."""
    info = getattr(model, "finetune", None)
    chosen = {"task": args.task, "temperature_given": args.temperature is not None}

    def parse_temperature(text: str) -> float:   # the standard check; once set, :task no longer changes it
        value = check_setting("temperature", text)
        chosen["temperature_given"] = True
        return value

    def parse_cache(text: str) -> str:
        if text not in ("on", "off"):
            raise ValueError(f"{text!r} is not on or off")
        return text

    def set_task(text: str) -> str:
        task = None if text in ("", "none") else text
        if task:
            try:
                task_prompt(model, tokenizer, task, "x")   # checks the model and the task
            except UserError as err:
                return f"({err})"
        chosen["task"] = task
        if not chosen["temperature_given"]:      # a temperature the user chose stays; the program's follows the task
            repl.settings["temperature"] = default_temperature(task)
            return f"task: {task or 'none'} (temperature {repl.settings['temperature']})"
        return f"task: {task or 'none'}"

    def answer(line: str) -> None:
        task = chosen["task"]
        if task:
            ids, note = task_prompt(model, tokenizer, task, line), None
        else:
            ids, note = encode_prompt(line, tokenizer, model.config.block_size)
        if note:
            print(note)
        print(f"{task}:" if task else line, end="")
        _, speed = stream(model, tokenizer, ids, repl.settings, repl.settings["cache"] == "on", device)
        print(f"[{speed:.0f} tokens/s]")

    settings = {name: getattr(args, name) for name in SAMPLING}
    settings["temperature"] = args.temperature if chosen["temperature_given"] else default_temperature(args.task)
    repl = Repl({**settings, "cache": "on" if args.kv_cache else "off"},
                extra_settings={"temperature": (parse_temperature, STANDARD["temperature"][1]),
                                "cache": (parse_cache, "on: use the KV cache; off: recompute the context per token")},
                extra_commands={"task": (set_task, "NAME|none: wrap each line in this task's prompt (a fine-tuned "
                                                   "multi-task model)")})
    banner = f"GPT-mini, context {model.config.block_size} tokens. Type a prompt and press Enter; :help lists commands."
    if info and info["kind"] == "prompt":
        banner += (f"\nfine-tuned on {', '.join(info['tasks'])}: ':task NAME' wraps each line in that task's prompt "
                   f"(now: {args.task or 'none'})")
    return repl.loop(answer, banner, read=first_then_keyboard(args.prompt))


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    check_flags(args)
    set_threads(args.num_threads)
    device = get_device(args.device)
    if args.interactive and args.num_samples != 1:
        raise UserError("--num_samples applies to one --prompt; the interactive loop answers each line once")
    if args.prompt is not None and not args.prompt.strip():
        raise UserError("--prompt is empty; give some text to continue (or leave --prompt out to start fresh)")
    model, tokenizer, _ = load_model(args, device, classifier_ok=True)
    if isinstance(model, tasks.GPTClassifier):
        if args.interactive:
            return classify_loop(model, tokenizer, device, args.prompt)
        if not (args.prompt or "").strip():
            raise UserError(f"{args.checkpoint} is a classifier: give the text to classify with --prompt")
        print(classify(model, tokenizer, args.prompt, device))
        return 0
    if args.task:
        task_prompt(model, tokenizer, args.task, "x")   # a clear error now for a wrong task or model
    if args.interactive:
        return interactive(model, tokenizer, args, device)
    prompt = args.prompt if args.prompt is not None else default_prompt(tokenizer)
    if args.task:
        ids, note = task_prompt(model, tokenizer, args.task, prompt), None
    else:
        ids, note = encode_prompt(prompt, tokenizer, model.config.block_size)
    if note:
        print(note, file=sys.stderr)
    settings = {name: getattr(args, name) for name in SAMPLING}
    if args.temperature is None:
        settings["temperature"] = default_temperature(args.task)
    for sample in range(args.num_samples):
        if args.num_samples > 1:
            print(f"--- sample {sample + 1}")
        if args.prompt is not None:
            sys.stdout.write(f"{prompt}\n{args.task}:" if args.task else prompt)
        _, speed = stream(model, tokenizer, ids, {**settings, "seed": args.seed + sample}, args.kv_cache, device)
        print(f"[{speed:.0f} tokens/s, {'KV cache' if args.kv_cache else 'no cache'}]", file=sys.stderr)
    return 0


if __name__ == "__main__":
    run_main(main)
