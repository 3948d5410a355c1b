"""Generate text with a trained stage 2 language model, streamed as it is sampled.

    python generate.py --checkpoint checkpoints/best_lstm_char.pt --prompt "ROMEO:" --temperature 0.8
    python generate.py --checkpoint checkpoints/best_lstm_word.pt --prompt "the company said" --top_p 0.9
    python generate.py --interactive          # prompt loop; type :help for the settings commands
"""
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # bootstrap: find the repo's packages

import argparse  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Callable, Sequence, TextIO  # noqa: E402

import torch  # noqa: E402

from scripts.common import ArgParser, UserError, add_common_args, get_device, run_main, set_threads  # noqa: E402
from stage2_rnn_lstm.data.corpus import EOS, Vocabulary  # noqa: E402
from stage2_rnn_lstm.evaluate import load_language_model  # noqa: E402
from stage2_rnn_lstm.models.rnn_lm import RNNLanguageModel  # noqa: E402

STAGE_DIR = Path(__file__).resolve().parent
HELP = """commands between prompts:
  :temp X     sampling temperature (0 = greedy)      :top_k K    keep the K most likely tokens (0 = all)
  :top_p P    nucleus sampling mass (1 = off)        :length N   tokens to generate
  :seed S     reseed the sampler                     :settings   show the current settings
  :help       this text                              :quit       leave (Ctrl-D works too)"""


@dataclass
class Settings:
    length: int = 300
    temperature: float = 0.8
    top_k: int = 0
    top_p: float = 1.0
    seed: int = 0

    def check(self) -> "Settings":
        if self.length < 1:
            raise UserError(f"length must be at least 1, got {self.length}")
        if self.temperature < 0:
            raise UserError(f"temperature must be >= 0, got {self.temperature}")
        if self.top_k < 0:
            raise UserError(f"top_k must be >= 0, got {self.top_k}")
        if not 0.0 < self.top_p <= 1.0:
            raise UserError(f"top_p must be in (0, 1], got {self.top_p}")
        return self


def encode_prompt(vocab: Vocabulary, prompt: str) -> tuple[torch.Tensor, list[str]]:
    """Prompt ids (unknown tokens become <unk>) and the list of unknown tokens, to tell the user."""
    tokens = vocab.split(prompt)
    if not tokens:
        raise UserError("the prompt is empty; type some text to continue")
    return vocab.encode(tokens), sorted(set(vocab.unknown(tokens)))


def stream(model: RNNLanguageModel, vocab: Vocabulary, prompt: str, settings: Settings, out: TextIO,
           device: torch.device) -> str:
    """Write the prompt's continuation to `out` token by token; return it."""
    ids, unknown = encode_prompt(vocab, prompt)
    if unknown:
        shown = ", ".join(repr(t) for t in unknown[:10])
        print(f"(not in the vocabulary, read as {vocab.itos[vocab.unk_id]}: {shown})", file=out)
    generator = torch.Generator().manual_seed(settings.seed)
    pieces = []
    out.write(prompt)
    for token in model.generate(ids.to(device), settings.length, settings.temperature, settings.top_k,
                                settings.top_p, generator):
        text = vocab.itos[token]
        piece = text if vocab.kind == "char" else ("\n" if text == EOS else " " + text)
        pieces.append(piece)
        out.write(piece)
        out.flush()
    out.write("\n")
    return "".join(pieces)


def apply_command(line: str, settings: Settings, say: Callable[[str], None]) -> bool:
    """Handle a `:command`; returns False when the user asked to quit."""
    name, _, value = line[1:].strip().partition(" ")
    fields = {"temp": ("temperature", float), "temperature": ("temperature", float), "top_k": ("top_k", int),
              "top_p": ("top_p", float), "length": ("length", int), "seed": ("seed", int)}
    if name in ("quit", "q", "exit"):
        return False
    if name == "help":
        say(HELP)
    elif name == "settings":
        say(str(settings))
    elif name in fields:
        attr, kind = fields[name]
        old = getattr(settings, attr)
        try:
            setattr(settings, attr, kind(value))
            settings.check()
            say(f"{attr} = {getattr(settings, attr)}")
        except (ValueError, UserError) as err:
            setattr(settings, attr, old)
            say(f"(:{name} needs a valid {kind.__name__}: {err})")
    else:
        say(f"(unknown command :{name}; type :help)")
    return True


def interactive(model: RNNLanguageModel, vocab: Vocabulary, settings: Settings, device: torch.device) -> int:
    print(f"{model.config.model_type.upper()} {vocab.kind}-level model, vocabulary {len(vocab)}. "
          "Type a prompt; :help lists settings commands; Ctrl-D quits.")
    while True:
        try:
            line = input("> ")
        except EOFError:
            print()
            return 0
        except KeyboardInterrupt:  # Ctrl-C at the prompt: a fresh prompt, like a shell
            print()
            continue
        if line.startswith(":"):
            if not apply_command(line, settings, print):
                return 0
            continue
        if not line.strip():
            print("(empty prompt: type some text, or :help)")
            continue
        try:
            stream(model, vocab, line, settings, sys.stdout, device)
        except UserError as err:
            print(f"({err})")
        except KeyboardInterrupt:  # Ctrl-C while generating: stop this answer, keep the session
            print("\n(stopped)")


def build_parser() -> argparse.ArgumentParser:
    p = ArgParser(description="Sample text from a stage 2 language model.")
    p.add_argument("--checkpoint", default=str(STAGE_DIR / "checkpoints" / "best_lstm_char.pt"), help="checkpoint")
    p.add_argument("--vocab", default=None, help="vocabulary JSON (optional: the checkpoint holds its own)")
    p.add_argument("--prompt", default=None, help="text to continue (default: a newline for char, <eos> for word)")
    p.add_argument("--length", type=int, default=300, help="tokens to generate")
    p.add_argument("--temperature", type=float, default=0.8, help="0 = greedy; <1 sharper, >1 more random")
    p.add_argument("--top_k", type=int, default=0, help="sample among the k most likely tokens (0 = all)")
    p.add_argument("--top_p", type=float, default=1.0, help="nucleus sampling: smallest set with this much mass")
    p.add_argument("--interactive", action="store_true", help="a prompt loop with :settings commands")
    add_common_args(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    set_threads(args.num_threads)
    device = get_device(args.device)
    settings = Settings(args.length, args.temperature, args.top_k, args.top_p, args.seed).check()
    model, vocab, _ = load_language_model(args.checkpoint, args.vocab, device)
    if args.interactive:
        return interactive(model, vocab, settings, device)
    prompt = args.prompt if args.prompt is not None else ("\n" if vocab.kind == "char" else EOS)
    if not prompt.strip() and vocab.kind == "word":
        raise UserError("--prompt is empty; give some words to continue, e.g. --prompt \"the market\"")
    if prompt == "":
        raise UserError("--prompt is empty; give some text to continue, e.g. --prompt \"ROMEO:\"")
    stream(model, vocab, prompt, settings, sys.stdout, device)
    return 0


if __name__ == "__main__":
    run_main(main)
