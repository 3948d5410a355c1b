"""Generate text with a trained stage 2 language model, streamed as it is sampled.

    python stage2_rnn_lstm/generate.py --prompt "ROMEO:" --temperature 0.8
    python stage2_rnn_lstm/generate.py --checkpoint stage2_rnn_lstm/checkpoints/best_lstm_word.pt \\
        --prompt "the company said" --top_p 0.9
    python stage2_rnn_lstm/generate.py --interactive     # a prompt loop; :help lists the commands
    python stage2_rnn_lstm/generate.py --interactive --prompt "ROMEO:"   # that prompt first, then the loop

Without --checkpoint it loads the newest best language model in checkpoints/ (else the newest run's last.pt, e.g.
of a run still training or stopped with Ctrl-C) and says which.
"""
from __future__ import annotations

import argparse
import sys
from typing import Any, Callable, Sequence, TextIO

import torch

from scripts.common import (ArgParser, UserError, add_checkpoint_arg, add_common_args, describe_model, get_device,
                            path_arg, run_main, set_threads)
from scripts.checks import Range
from scripts.repl import SETTING_RANGES, Repl, check_setting
from stage2_rnn_lstm.data.corpus import EOS, Vocabulary
from stage2_rnn_lstm.evaluate import CHECKPOINT_HELP, find_language_model, load_language_model
from stage2_rnn_lstm.models.rnn_lm import RNNLanguageModel

SETTINGS = ("temperature", "top_k", "top_p", "max_new_tokens", "seed")
MAX_PROMPT_TOKENS = 20_000    # a recurrent model keeps only a state: a longer prompt takes time and adds little
MAX_NEW_TOKENS = 10_000       # check_setting's limit (scripts/repl.py), for --max_new_tokens and :max_new_tokens


def encode_prompt(vocab: Vocabulary, prompt: str) -> tuple[torch.Tensor, list[str]]:
    """Prompt ids (unknown tokens become <unk>) and the list of unknown tokens, to tell the user."""
    tokens = vocab.split(prompt)
    if not tokens:
        raise UserError("the prompt is empty; type some text to continue")
    if len(tokens) > MAX_PROMPT_TOKENS:
        raise UserError(f"the prompt has {len(tokens):,} {vocab.kind}s; at most {MAX_PROMPT_TOKENS:,} are read, "
                        "so shorten it (its end is what the model continues)")
    return vocab.encode(tokens), sorted(set(vocab.unknown(tokens)))


def stream(model: RNNLanguageModel, vocab: Vocabulary, prompt: str, settings: dict[str, Any], out: TextIO,
           device: torch.device) -> str:
    """Write the prompt's continuation to `out` token by token; return it."""
    ids, unknown = encode_prompt(vocab, prompt)
    if unknown:
        shown = ", ".join(repr(t if len(t) <= 20 else t[:17] + "...") for t in unknown[:10])
        print(f"(not in the vocabulary, read as {vocab.itos[vocab.unk_id]}: {shown})", file=out)
    generator = torch.Generator().manual_seed(settings["seed"])
    pieces = []
    out.write(prompt)
    for token in model.generate(ids.to(device), settings["max_new_tokens"], settings["temperature"],
                                settings["top_k"], settings["top_p"], generator):
        piece = vocab.piece(vocab.itos[token])
        pieces.append(piece)
        out.write(piece)
        out.flush()
    out.write("\n")
    return "".join(pieces)


def interactive(model: RNNLanguageModel, vocab: Vocabulary, settings: dict[str, Any], device: torch.device,
                read: Callable[[str], str] | None = None, first: str | None = None) -> int:
    """The prompt loop: every line is a prompt to continue or a :command (scripts/repl.py); returns exit status 0.
    `first` (--prompt) is answered first, as if it had been typed at the prompt."""
    repl = Repl(settings)
    if first is not None:
        read = typed_first(first, read)
    return repl.loop(lambda line: stream(model, vocab, line, repl.settings, sys.stdout, device), read=read,
                     banner=f"{model.config.model_type.upper()} {vocab.kind}-level model, vocabulary "
                            f"{len(vocab)}. Type a prompt; :help lists the commands; Ctrl-D quits.")


def typed_first(line: str, read: Callable[[str], str] | None) -> Callable[[str], str]:
    """A `read` for the loop that gives `line` first (shown after the prompt, as the terminal would show it typed),
    then reads as usual."""
    pending = [line]

    def read_line(prompt: str) -> str:
        if pending:
            print(prompt + pending[0], flush=True)
            return pending.pop()
        return (read or input)(prompt)
    return read_line


def allowed(name: str) -> str:
    """How --help states a sampling flag's allowed values (checked after parsing, by check_setting): in a Range's
    words, as the other programs' flags say them."""
    limits = Range(int, lo=1, hi=MAX_NEW_TOKENS) if name == "max_new_tokens" else SETTING_RANGES[name]
    return f"allowed: {limits.describe()}"


def build_parser() -> argparse.ArgumentParser:
    p = ArgParser(description="Sample text from a stage 2 language model.")
    add_checkpoint_arg(p, None, help=CHECKPOINT_HELP)
    p.add_argument("--vocab", type=path_arg, default=None,
                   help="vocabulary JSON (optional: the checkpoint holds its own)")
    p.add_argument("--prompt", default=None,
                   help="text to continue (a newline for a char model, <eos> for a word one); with --interactive, "
                        "answered first, then the loop goes on")
    p.add_argument("--max_new_tokens", "--length", dest="max_new_tokens", type=int, default=300,
                   help=f"tokens to generate ({allowed('max_new_tokens')})")
    p.add_argument("--temperature", type=float, default=0.8,
                   help="sampling temperature, 0 = greedy: below 1 sharper, above 1 more random "
                        f"({allowed('temperature')})")
    p.add_argument("--top_k", type=int, default=0,
                   help=f"sample among the k most likely tokens, 0 = all ({allowed('top_k')})")
    p.add_argument("--top_p", type=float, default=1.0,
                   help=f"nucleus sampling: smallest set with this much mass ({allowed('top_p')})")
    p.add_argument("--interactive", action=argparse.BooleanOptionalAction, default=False,
                   help="a prompt loop with :commands (:temperature, :top_k, :max_new_tokens, ...)")
    add_common_args(p, seed_help="seed for sampling")
    return p


def checked_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The sampling flags, checked by the same rules as the REPL's :commands."""
    settings = {name: getattr(args, name) for name in SETTINGS}
    for name, value in settings.items():
        try:
            check_setting(name, value)
        except UserError as err:
            raise UserError(f"--{err}") from None
    return settings


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    set_threads(args.num_threads)
    device = get_device(args.device)
    settings = checked_settings(args)
    checkpoint = find_language_model(args.checkpoint)
    model, vocab, ckpt = load_language_model(checkpoint, args.vocab, device)
    if args.interactive:
        print(describe_model(checkpoint, ckpt))
        return interactive(model, vocab, settings, device, first=args.prompt)
    prompt = args.prompt if args.prompt is not None else ("\n" if vocab.kind == "char" else EOS)
    if not prompt.strip() and vocab.kind == "word":
        raise UserError("--prompt is empty; give some words to continue, e.g. --prompt \"the market\"")
    if prompt == "":
        raise UserError("--prompt is empty; give some text to continue, e.g. --prompt \"ROMEO:\"")
    encode_prompt(vocab, prompt)        # a prompt that cannot be read is refused before anything is printed
    # on stderr, so that `generate.py > sample.txt` keeps only the text
    print(describe_model(checkpoint, ckpt), file=sys.stderr)
    stream(model, vocab, prompt, settings, sys.stdout, device)
    return 0


if __name__ == "__main__":
    run_main(main)
