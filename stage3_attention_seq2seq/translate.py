"""Translate English into French with a trained stage 3 model, and draw where it looked.

    python stage3_attention_seq2seq/translate.py "A man is riding a bike down the street."
    python stage3_attention_seq2seq/translate.py "Two dogs play in the snow." --heatmap attention.png
    python stage3_attention_seq2seq/translate.py --input sentences.en --output sentences.fr
    python stage3_attention_seq2seq/translate.py --interactive          # type sentences; :help lists commands
(the same commands work from inside stage3_attention_seq2seq/ as `python translate.py ...`)

Without --checkpoint it loads the newest checkpoints/*.pt (else the newest runs/*/last.pt) and says which
on stderr. Beam search (--beam_size 5) by default; --beam_size 1 is greedy. The interactive prompt takes the
course's commands (:beam, :settings, :help, :quit) plus :alpha VALUE and :heatmap FILE.png|off.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

import torch

from scripts.common import (ArgParser, UserError, add_checkpoint_arg, add_common_args, check_positive, get_device,
                            run_main, set_threads, write_text)
from scripts.repl import Repl
from stage3_attention_seq2seq.data.translation import EOS, UNK, Vocabulary, split_lines, tokenize
from stage3_attention_seq2seq.models.seq2seq import Seq2Seq
from stage3_attention_seq2seq.translator import (CHECKPOINT_HELP, Translation, check_alpha, check_beam,
                                                 find_checkpoint, load_model, model_line, translate_sentences)

NO_ATTENTION = "this model has no attention weights to draw (--attention_type none)"


def build_parser() -> argparse.ArgumentParser:
    p = ArgParser(description="Translate English to French with a trained stage 3 model.")
    p.add_argument("sentence", nargs="*", help="English text to translate (one sentence)")
    add_checkpoint_arg(p, None, CHECKPOINT_HELP)
    p.add_argument("--input", default=None, help="translate this file, one sentence per line (default: none)")
    p.add_argument("--output", default=None, help="write the file's translations here (default: stdout)")
    p.add_argument("--interactive", action="store_true", help="type sentences at a prompt (:help lists commands)")
    p.add_argument("--beam_size", type=int, default=5, help="beam width (1: greedy)")
    p.add_argument("--alpha", type=float, default=1.0, help="length penalty exponent (0: none)")
    p.add_argument("--unk_replace", action=argparse.BooleanOptionalAction, default=True,
                   help="replace <unk> in the output by the most attended source word")
    p.add_argument("--batch_size", type=int, default=64, help="sentences per batch with --input")
    p.add_argument("--heatmap", default=None, help="save the sentence's attention weights as this PNG (default: none)")
    add_common_args(p, seed_help="unused: greedy and beam search draw no random numbers")
    return p


def check_known(sentence: str, src_vocab: Vocabulary) -> list[str]:
    """The unknown words of a sentence; refuses an empty sentence or one with no known word at all."""
    tokens = tokenize(sentence)
    if not tokens:
        raise UserError("empty sentence: type some English to translate")
    unknown = [t for t in tokens if t not in src_vocab.stoi]
    if len(unknown) == len(tokens):
        raise UserError(f"none of the words of {sentence!r} is in the model's English vocabulary; "
                        "try a sentence about people, animals or places (Multi30k describes photos)")
    return unknown


def draw_heatmap(translation: Translation, path: str | Path, title: str = "") -> Path:
    """Rows: output words (+ <eos>); columns: source words (+ <eos>); colour: attention weight."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if translation.attention is None:
        raise UserError(NO_ATTENTION)
    weights = translation.attention.numpy()
    rows, cols = translation.tokens + [EOS], translation.source_tokens + [EOS]
    fig, ax = plt.subplots(figsize=(0.45 * len(cols) + 2, 0.4 * len(rows) + 1.5))
    ax.imshow(weights[: len(rows), : len(cols)], cmap="viridis", vmin=0.0, vmax=1.0)
    ax.set_xticks(range(len(cols)), cols, rotation=60, ha="right")
    ax.set_yticks(range(len(rows)), rows)
    ax.set_xlabel("English (source)")
    ax.set_ylabel("French (output)")
    ax.set_title(title or translation.text, fontsize=9)
    fig.tight_layout()
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=120)
    except (OSError, ValueError) as err:
        raise UserError(f"cannot write the heatmap {path} ({err})") from None
    finally:
        plt.close(fig)
    return path


def translate_one(model: Seq2Seq, src_vocab: Vocabulary, tgt_vocab: Vocabulary, sentence: str, device: torch.device,
                  beam: int, alpha: float, unk_replace: bool, heatmap: str | None) -> str:
    """One sentence; unknown words are named on stderr, the attention drawn to `heatmap` if given."""
    unknown = check_known(sentence, src_vocab)
    if unknown:
        print(f"note: unknown words read as {UNK}: {' '.join(unknown)}", file=sys.stderr)
    result = translate_sentences(model, src_vocab, tgt_vocab, [sentence], device, beam, alpha,
                                 return_attention=heatmap is not None and model.attention is not None,
                                 unk_replace=unk_replace)[0]
    if heatmap:
        print(f"attention heatmap: {draw_heatmap(result, heatmap)}", file=sys.stderr)
    return result.text


def translate_file(model: Seq2Seq, src_vocab: Vocabulary, tgt_vocab: Vocabulary, args: argparse.Namespace,
                   device: torch.device) -> None:
    """Line i of --output translates line i of --input; an empty input line gives an empty output line."""
    path = Path(args.input)
    if not path.is_file():
        raise UserError(f"--input {path} does not exist")
    try:
        lines = split_lines(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise UserError(f"--input {path} is not UTF-8 text") from None
    todo = [i for i, line in enumerate(lines) if tokenize(line)]
    results = translate_sentences(model, src_vocab, tgt_vocab, [lines[i] for i in todo], device, args.beam_size,
                                  args.alpha, args.batch_size, unk_replace=args.unk_replace, progress=True)
    out = [""] * len(lines)
    for i, result in zip(todo, results):
        out[i] = result.text
    text = "".join(line + "\n" for line in out)
    if args.output:
        target = Path(args.output)
        try:
            write_text(target, text)
        except OSError as err:
            raise UserError(f"cannot write --output {target} ({err.strerror or err})") from None
        print(f"translated {len(todo):,} sentences ({len(lines) - len(todo)} empty lines kept empty) -> {target}",
              file=sys.stderr)
    else:
        sys.stdout.write(text)


def interactive(model: Seq2Seq, src_vocab: Vocabulary, tgt_vocab: Vocabulary, args: argparse.Namespace,
                device: torch.device) -> int:
    """A prompt loop through the course's Repl: :beam and :alpha set the search, :heatmap FILE.png|off the drawing."""
    heatmap = {"path": args.heatmap}

    def set_heatmap(value: str) -> str:
        if not value:
            return (f"heatmap = {heatmap['path'] or 'off'}  "
                    "(:heatmap FILE.png draws each translation, :heatmap off stops)")
        if value.lower() == "off":
            heatmap["path"] = None
        elif model.attention is None:
            return f"(:heatmap kept off: {NO_ATTENTION})"
        else:
            heatmap["path"] = value
        return f"heatmap = {heatmap['path'] or 'off'}"

    repl = Repl({"beam": args.beam_size, "alpha": args.alpha},
                extra_settings={"alpha": (lambda text: check_alpha(float(text), "alpha"),
                                          "length penalty exponent (0 = none)")},
                extra_commands={"heatmap": (set_heatmap,
                                            "FILE.png: draw each translation's attention there; off: stop")})

    def answer(line: str) -> None:
        print("fr> " + translate_one(model, src_vocab, tgt_vocab, line, device, repl.settings["beam"],
                                     repl.settings["alpha"], args.unk_replace, heatmap["path"]))

    banner = (f"English -> French ({model.config.attention_type} attention, beam {args.beam_size}). "
              "Type a sentence; :help lists the commands, :quit (or Ctrl-D) leaves.")
    return repl.loop(answer, banner, prompt="en> ")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    check_positive(args, "batch_size")
    check_beam(args.beam_size)
    check_alpha(args.alpha)
    if sum([bool(args.sentence), args.input is not None, args.interactive]) != 1:
        raise UserError("give one of: a sentence, --input FILE, or --interactive")
    if args.heatmap and args.input is not None:
        raise UserError("--heatmap draws one sentence; give a sentence (or use :heatmap in --interactive)")
    path = find_checkpoint(args.checkpoint)
    set_threads(args.num_threads)
    device = get_device(args.device)
    model, src_vocab, tgt_vocab, ckpt = load_model(path, device)
    print(model_line(path, ckpt), file=sys.stderr)     # stderr: stdout holds only the translations
    if args.heatmap and model.attention is None:
        raise UserError(f"{NO_ATTENTION}; drop --heatmap")
    if args.input is not None:
        translate_file(model, src_vocab, tgt_vocab, args, device)
    elif args.interactive:
        return interactive(model, src_vocab, tgt_vocab, args, device)
    else:
        print(translate_one(model, src_vocab, tgt_vocab, " ".join(args.sentence), device, args.beam_size,
                            args.alpha, args.unk_replace, args.heatmap))
    return 0


if __name__ == "__main__":
    run_main(main)
