"""Translate English into French with a trained stage 3 model, and draw where it looked.

    python translate.py "A man is riding a bike down the street."
    python translate.py "Two dogs play in the snow." --heatmap attention.png     # the attention weights as a PNG
    python translate.py --input sentences.en --output sentences.fr              # a file, one sentence a line
    python translate.py --interactive                                            # type sentences; :help for commands

Beam search (--beam_size 5) by default; --beam_size 1 is greedy.
"""
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # bootstrap: find the repo's packages

import argparse  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Sequence  # noqa: E402

import torch  # noqa: E402

from scripts.common import (ArgParser, UserError, add_common_args, check_positive, get_device, run_main,  # noqa: E402
                            set_threads, write_text)
from stage3_attention_seq2seq.data.translation import EOS, UNK, Vocabulary, split_lines, tokenize  # noqa: E402
from stage3_attention_seq2seq.models.seq2seq import Seq2Seq  # noqa: E402
from stage3_attention_seq2seq.translator import Translation, load_model, translate_sentences  # noqa: E402

STAGE_DIR = Path(__file__).resolve().parent
HELP = """commands:  :beam N   beam width (1 = greedy)    :heatmap FILE.png   draw the next translation's attention
           :heatmap off            :settings               :quit (or Ctrl-D)"""


def build_parser() -> argparse.ArgumentParser:
    p = ArgParser(description="Translate English to French with a trained stage 3 model.")
    p.add_argument("sentence", nargs="*", help="English text to translate (one sentence)")
    p.add_argument("--model_path", default=str(STAGE_DIR / "checkpoints" / "best_attention_model.pt"),
                   help="checkpoint written by train.py")
    p.add_argument("--input", default=None, help="translate this file, one sentence per line")
    p.add_argument("--output", default=None, help="write the file's translations here (default: stdout)")
    p.add_argument("--interactive", action="store_true", help="type sentences at a prompt")
    p.add_argument("--beam_size", type=int, default=5, help="beam width (1: greedy)")
    p.add_argument("--alpha", type=float, default=1.0, help="length penalty exponent")
    p.add_argument("--unk_replace", type=int, choices=[0, 1], default=1,
                   help="1: replace <unk> in the output by the most attended source word")
    p.add_argument("--batch_size", type=int, default=64, help="sentences per batch with --input")
    p.add_argument("--heatmap", default=None, help="save the attention weights of the sentence as this PNG")
    add_common_args(p)
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
    import matplotlib  # noqa: PLC0415
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    if translation.attention is None:
        raise UserError("this model has no attention weights to draw (--attention_type none)")
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


def translate_one(model: Seq2Seq, src_vocab: Vocabulary, tgt_vocab: Vocabulary, sentence: str, args: argparse.Namespace,
                  device: torch.device, heatmap: str | None) -> str:
    unknown = check_known(sentence, src_vocab)
    if unknown:
        print(f"note: unknown words read as {UNK}: {' '.join(unknown)}", file=sys.stderr)
    result = translate_sentences(model, src_vocab, tgt_vocab, [sentence], device, args.beam_size, args.alpha,
                                 return_attention=heatmap is not None and model.attention is not None,
                                 unk_replace=bool(args.unk_replace))[0]
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
                                  args.alpha, args.batch_size, unk_replace=bool(args.unk_replace), progress=True)
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
                device: torch.device) -> None:
    print(f"English -> French ({model.config.attention_type} attention). {HELP}")
    heatmap: str | None = args.heatmap
    while True:
        try:
            line = input("en> ").strip()
        except (EOFError, KeyboardInterrupt):
            print()
            return
        if line in (":quit", ":q", ":exit"):
            return
        try:
            if line.startswith(":"):
                heatmap = command(line, args, heatmap, model.attention is not None)
            else:
                print("fr> " + translate_one(model, src_vocab, tgt_vocab, line, args, device, heatmap))
        except UserError as err:
            print(f"error: {err}")
        except KeyboardInterrupt:
            print("\n(interrupted)")


def command(line: str, args: argparse.Namespace, heatmap: str | None, has_attention: bool) -> str | None:
    name, _, value = line.partition(" ")
    if name == ":beam":
        if not value.strip().isdigit() or int(value) < 1:
            raise UserError(":beam takes a positive whole number, e.g. :beam 5")
        args.beam_size = int(value)
    elif name == ":heatmap":
        heatmap = None if value.strip() in ("", "off") else value.strip()
        if heatmap and not has_attention:
            raise UserError("this model has no attention weights to draw (--attention_type none)")
    elif name == ":settings":
        pass
    else:
        print(HELP)
        return heatmap
    print(f"beam {args.beam_size}, alpha {args.alpha}, heatmap {heatmap or 'off'}")
    return heatmap


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    check_positive(args, "beam_size", "batch_size")
    modes = sum([bool(args.sentence), args.input is not None, args.interactive])
    if modes != 1:
        raise UserError("give one of: a sentence, --input FILE, or --interactive")
    set_threads(args.num_threads)
    device = get_device(args.device)
    if args.heatmap and args.input is not None:
        raise UserError("--heatmap draws one sentence; give a sentence (or use :heatmap in --interactive)")
    model, src_vocab, tgt_vocab, _ = load_model(args.model_path, device)
    if args.heatmap and model.attention is None:
        raise UserError("this model has no attention weights to draw (--attention_type none); drop --heatmap")
    if args.input is not None:
        translate_file(model, src_vocab, tgt_vocab, args, device)
    elif args.interactive:
        interactive(model, src_vocab, tgt_vocab, args, device)
    else:
        print(translate_one(model, src_vocab, tgt_vocab, " ".join(args.sentence), args, device, args.heatmap))
    return 0


if __name__ == "__main__":
    run_main(main)
