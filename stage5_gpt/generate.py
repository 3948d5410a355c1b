"""Generate text with a trained GPT-mini (stage 5), streaming it as it comes.

    python generate.py --prompt "ROMEO:"                                  # char-level Shakespeare model
    python generate.py --prompt "ROMEO:" --temperature 0.8 --top_p 0.9 --max_new_tokens 300 --seed 1
    python generate.py --checkpoint checkpoints/gpt_gutenberg_bpe.pt --prompt "It was a dark night"
    python generate.py --init_from gpt2 --prompt "Hello"                  # OpenAI's GPT-2 weights (online)
    python generate.py --interactive                                      # a prompt loop; :help lists commands
    python generate.py --prompt "ROMEO:" --no_kv_cache                    # recompute the whole context per token
    python generate.py --checkpoint checkpoints/ft_multi_full.pt --task translate --prompt "A dog runs."
    python generate.py --checkpoint checkpoints/ft_multi_full.pt --interactive    # then :task imdb / translate
    python generate.py --checkpoint checkpoints/ft_imdb_full.pt --prompt "What a film!"   # a classifier: label

Sampling: --temperature divides the logits (0: always the likeliest token), --top_k keeps the k
likeliest tokens, --top_p the smallest set reaching probability p. With the KV cache each new token costs
one position of work; --no_kv_cache gives the same tokens, slower.

Fine-tuned models (finetune.py): with --task (or :task in the interactive loop) a multi-task model gets the
task's prompt around your text and answers greedily up to <|endoftext|>; a classifier prints the class of
each text and its probability.
"""
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # bootstrap: find the repo's packages

import argparse  # noqa: E402
import codecs  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, Sequence  # noqa: E402

import torch  # noqa: E402

from scripts.common import ArgParser, UserError, add_common_args, get_device, load_checkpoint, run_main, set_threads  # noqa: E402,E501
from stage5_gpt.data import tasks  # noqa: E402
from stage5_gpt.data.bpe import load_tokenizer  # noqa: E402
from stage5_gpt.models.gpt import GPT  # noqa: E402

STAGE = "stage5_gpt"
STAGE_DIR = Path(__file__).resolve().parent
DEFAULT_CHECKPOINT = STAGE_DIR / "checkpoints" / "gpt_shakespeare_char.pt"
SETTINGS = {"temperature": float, "top_k": int, "top_p": float, "max_new_tokens": int, "seed": int}
HELP = """commands (type them instead of a prompt):
  :temperature 0.8   :top_k 40   :top_p 0.9   :max_new_tokens 200   :seed 1   change a setting
  :cache on|off      use the KV cache or recompute the context      :settings   show the settings
  :task NAME|none    a fine-tuned multi-task model: wrap each line in that task's prompt
  :help              this list            :quit (or Ctrl-D)  leave; Ctrl-C stops a running generation"""


def build_parser() -> argparse.ArgumentParser:
    p = ArgParser(description="Generate text with a trained GPT-mini, or with GPT-2's weights (stage 5).")
    p.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT), help="a checkpoint written by train.py")
    p.add_argument("--init_from", default=None, help="use GPT-2 weights instead: gpt2 (online) or a local folder")
    p.add_argument("--tokenizer", default=None,
                   help="tokenizer JSON to use (must be the one the checkpoint was trained with; default: its own)")
    p.add_argument("--prompt", default=None, help="text to continue (default: a new line, or <|endoftext|> for BPE)")
    p.add_argument("--max_new_tokens", type=int, default=500, help="tokens to generate")
    p.add_argument("--temperature", type=float, default=None,
                   help="softmax temperature (0: greedy; default 0.8, and 0 with --task)")
    p.add_argument("--top_k", type=int, default=0, help="sample from the k likeliest tokens only (0: all)")
    p.add_argument("--top_p", type=float, default=0.95, help="nucleus sampling: smallest set with probability p")
    p.add_argument("--num_samples", type=int, default=1, help="independent samples for the prompt")
    p.add_argument("--no_kv_cache", action="store_true", help="recompute the whole context for every token")
    p.add_argument("--interactive", action="store_true", help="read prompts from the keyboard, one per line")
    p.add_argument("--task", default=None, help="a fine-tuned multi-task model: wrap the prompt in this task's prompt")
    add_common_args(p)
    return p


def check_settings(settings: dict[str, Any]) -> None:
    if settings["temperature"] is not None and settings["temperature"] < 0:
        raise UserError(f"temperature must be >= 0, got {settings['temperature']}")
    if settings["top_k"] < 0:
        raise UserError(f"top_k must be >= 0, got {settings['top_k']}")
    if not 0 < settings["top_p"] <= 1:
        raise UserError(f"top_p must be in (0, 1], got {settings['top_p']}")
    if settings["max_new_tokens"] < 1:
        raise UserError(f"max_new_tokens must be at least 1, got {settings['max_new_tokens']}")


def load_model(args: argparse.Namespace, device: torch.device, classifier_ok: bool = False,
               ckpt: dict[str, Any] | None = None) -> tuple[torch.nn.Module, Any, str | None]:
    """The model, its tokenizer and the data set it was trained on (None for GPT-2), from a checkpoint
    (checked against --tokenizer; `ckpt` when the caller has loaded it already) or from GPT-2.
    A fine-tuned classifier only where classifier_ok."""
    if args.init_from:
        from stage5_gpt.models.hf import load_gpt2  # noqa: PLC0415

        if args.tokenizer:
            raise UserError("--tokenizer does not apply with --init_from: GPT-2's own vocabulary is used")
        model, tokenizer = load_gpt2(args.init_from)
        dataset = None
    else:
        from stage5_gpt.finetune import model_from_checkpoint  # noqa: PLC0415

        ckpt = ckpt or load_checkpoint(args.checkpoint, STAGE, ["gpt", "gpt_classifier"] if classifier_ok else ["gpt"])
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


def sampling(settings: dict[str, Any], task: str | None) -> dict[str, Any]:
    """The settings to generate with: an unset temperature is 0 (greedy) for a task's answer, 0.8 for free text."""
    if settings["temperature"] is not None:
        return settings
    return {**settings, "temperature": 0.0 if task else 0.8}


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


def classify_loop(model: tasks.GPTClassifier, tokenizer: Any, device: torch.device) -> None:
    info = model.finetune
    print(f"a {info['tasks'][0]} classifier ({', '.join(info['classes'][info['tasks'][0]])}). "
          "Type a text and press Enter; :quit or Ctrl-D to leave.")
    while True:
        try:
            line = input("> ").strip()
        except (EOFError, KeyboardInterrupt):
            print()
            return
        if line in (":quit", ":exit", ":q"):
            return
        print(classify(model, tokenizer, line, device) if line else "(empty text: type something to classify)")


def interactive(model: GPT, tokenizer: Any, settings: dict[str, Any], use_cache: bool, device: torch.device,
                task: str | None = None) -> None:
    info = getattr(model, "finetune", None)
    print(f"GPT-mini, context {model.config.block_size} tokens. Type a prompt and press Enter; :help for commands.")
    if info and info["kind"] == "prompt":
        print(f"fine-tuned on {', '.join(info['tasks'])}: ':task NAME' wraps each line in that task's prompt "
              f"(now: {task or 'none'})")
    while True:
        try:
            line = input("> ")
        except (EOFError, KeyboardInterrupt):
            print()
            return
        command = line.strip()
        if not command:
            print("(empty prompt: type some text to continue, or :help)")
            continue
        if command.startswith(":"):
            name, _, value = command[1:].partition(" ")
            if name in ("quit", "exit", "q"):
                return
            if name == "help":
                print(HELP)
            elif name == "settings":
                print(", ".join(f"{k} {v}" for k, v in sampling(settings, task).items())
                      + f", cache {'on' if use_cache else 'off'}")
            elif name == "cache" and value.strip() in ("on", "off"):
                use_cache = value.strip() == "on"
            elif name == "task":
                try:
                    if value.strip() not in ("", "none"):
                        task_prompt(model, tokenizer, value.strip(), "x")   # checks the task
                    task = None if value.strip() in ("", "none") else value.strip()
                    print(f"task: {task or 'none'}")
                except UserError as err:
                    print(f"error: {err}")
            elif name in SETTINGS:
                try:
                    trial = {**settings, name: SETTINGS[name](value)}
                    check_settings(trial)
                    settings.update(trial)
                except (ValueError, UserError) as err:
                    print(f"error: {name} needs a valid number ({err})")
            else:
                print(f"unknown command {command!r}; :help lists them")
            continue
        try:
            if task:
                ids, note = task_prompt(model, tokenizer, task, line), None
            else:
                ids, note = encode_prompt(line, tokenizer, model.config.block_size)
        except UserError as err:
            print(f"error: {err}")
            continue
        if note:
            print(note)
        print(f"{task}:" if task else line, end="")
        try:
            _, speed = stream(model, tokenizer, ids, sampling(settings, task), use_cache, device)
            print(f"[{speed:.0f} tokens/s]")
        except KeyboardInterrupt:
            print("\n(stopped)")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = {"temperature": args.temperature, "top_k": args.top_k, "top_p": args.top_p,
                "max_new_tokens": args.max_new_tokens, "seed": args.seed}
    check_settings(settings)
    if args.num_samples < 1:
        raise UserError(f"--num_samples must be at least 1, got {args.num_samples}")
    set_threads(args.num_threads)
    device = get_device(args.device)
    model, tokenizer, _ = load_model(args, device, classifier_ok=True)
    if isinstance(model, tasks.GPTClassifier):
        if args.interactive:
            classify_loop(model, tokenizer, device)
        elif not (args.prompt or "").strip():
            raise UserError(f"{args.checkpoint} is a classifier: give the text to classify with --prompt")
        else:
            print(classify(model, tokenizer, args.prompt, device))
        return 0
    if args.task:
        task_prompt(model, tokenizer, args.task, "x")   # a clear error now for a wrong task or model
    if args.interactive:
        interactive(model, tokenizer, settings, not args.no_kv_cache, device, args.task)
        return 0
    if args.prompt is not None and not args.prompt.strip():
        raise UserError("--prompt is empty; give some text to continue (or leave --prompt out to start fresh)")
    prompt = args.prompt if args.prompt is not None else default_prompt(tokenizer)
    if args.task:
        ids, note = task_prompt(model, tokenizer, args.task, prompt), None
    else:
        ids, note = encode_prompt(prompt, tokenizer, model.config.block_size)
    if note:
        print(note, file=sys.stderr)
    for sample in range(args.num_samples):
        if args.num_samples > 1:
            print(f"--- sample {sample + 1}")
        if args.prompt is not None:
            sys.stdout.write(f"{prompt}\n{args.task}:" if args.task else prompt)
        _, speed = stream(model, tokenizer, ids, {**sampling(settings, args.task), "seed": args.seed + sample},
                          not args.no_kv_cache, device)
        print(f"[{speed:.0f} tokens/s, {'KV cache' if not args.no_kv_cache else 'no cache'}]", file=sys.stderr)
    return 0


if __name__ == "__main__":
    run_main(main)
