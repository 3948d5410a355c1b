"""Translate English into French with a trained stage 4 Transformer, and draw its attention.

    python translate.py "A man is riding a bike down the street."
    python translate.py "Two dogs play in the snow." --heatmap attention.png   # every decoder layer and head
    python translate.py --input sentences.en --output sentences.fr            # a file, one sentence a line
    python translate.py --interactive                                          # type sentences; :help for commands

Beam search (--beam_size 5) with the key/value cache by default; --beam_size 1 is greedy.
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
from scripts.translation_data import split_lines  # noqa: E402
from stage4_transformer.data.subword import BOS_ID, EOS_ID, SubwordVocab  # noqa: E402
from stage4_transformer.models.transformer import Transformer  # noqa: E402
from stage4_transformer.translator import load_model, translate_sentences  # noqa: E402

STAGE_DIR = Path(__file__).resolve().parent
HELP = "commands:  :beam N   beam width (1 = greedy)    :heatmap FILE.png | off    :settings    :quit (or Ctrl-D)"


def build_parser() -> argparse.ArgumentParser:
    p = ArgParser(description="Translate English to French with a trained stage 4 Transformer.")
    p.add_argument("sentence", nargs="*", help="English text to translate (one sentence)")
    p.add_argument("--model_path", default=str(STAGE_DIR / "checkpoints" / "best_transformer.pt"),
                   help="checkpoint written by train.py")
    p.add_argument("--input", default=None, help="translate this file, one sentence per line")
    p.add_argument("--output", default=None, help="write the file's translations here (default: stdout)")
    p.add_argument("--interactive", action="store_true", help="type sentences at a prompt")
    p.add_argument("--beam_size", type=int, default=5, help="beam width (1: greedy)")
    p.add_argument("--alpha", type=float, default=1.0, help="length penalty exponent")
    p.add_argument("--batch_size", type=int, default=64, help="sentences per batch with --input")
    p.add_argument("--heatmap", default=None, help="save the cross-attention of every layer and head as this PNG")
    add_common_args(p)
    return p


def check_sentence(sentence: str) -> None:
    if not sentence.split():
        raise UserError("empty sentence: type some English to translate")


def draw_heatmap(model: Transformer, vocab: SubwordVocab, sentence: str, translation: str, path: str | Path,
                 device: torch.device) -> Path:
    """A grid of cross-attention maps: one row per decoder layer, one column per head."""
    import matplotlib  # noqa: PLC0415
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    src = torch.tensor([vocab.encode(sentence) + [EOS_ID]], device=device)
    out = vocab.encode(translation) + [EOS_ID]
    maps = model.cross_attention(src, torch.tensor([[BOS_ID] + out[:-1]], device=device))[:, 0].cpu()  # (L, h, T, S)
    rows = [vocab.tokenizer.id_to_token(i) for i in out]
    cols = [vocab.tokenizer.id_to_token(i) for i in src[0].tolist()]
    layers, heads = maps.shape[:2]
    fig, axes = plt.subplots(layers, heads, figsize=(2.6 * heads + 1, 2.6 * layers + 1), squeeze=False)
    for layer in range(layers):
        for head in range(heads):
            ax = axes[layer][head]
            ax.imshow(maps[layer, head].numpy(), cmap="viridis", vmin=0.0, vmax=1.0)
            ax.set_title(f"layer {layer + 1}, head {head + 1}", fontsize=8)
            ax.set_xticks(range(len(cols)), cols if layer == layers - 1 else [""] * len(cols), rotation=90, fontsize=6)
            ax.set_yticks(range(len(rows)), rows if head == 0 else [""] * len(rows), fontsize=6)
    fig.suptitle(translation, fontsize=9)
    fig.tight_layout()
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110)
    except (OSError, ValueError) as err:
        raise UserError(f"cannot write the heatmap {path} ({err})") from None
    finally:
        plt.close(fig)
    return path


def translate_one(model: Transformer, vocab: SubwordVocab, sentence: str, args: argparse.Namespace,
                  device: torch.device, heatmap: str | None) -> str:
    check_sentence(sentence)
    translation = translate_sentences(model, vocab, [sentence], device, args.beam_size, args.alpha)[0]
    if heatmap:
        print(f"attention heatmap: {draw_heatmap(model, vocab, sentence, translation, heatmap, device)}",
              file=sys.stderr)
    return translation


def translate_file(model: Transformer, vocab: SubwordVocab, args: argparse.Namespace, device: torch.device) -> None:
    """Line i of --output translates line i of --input; an empty input line gives an empty output line."""
    path = Path(args.input)
    if not path.is_file():
        raise UserError(f"--input {path} does not exist")
    try:
        lines = split_lines(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise UserError(f"--input {path} is not UTF-8 text") from None
    todo = [i for i, line in enumerate(lines) if line.split()]
    results = translate_sentences(model, vocab, [lines[i] for i in todo], device, args.beam_size, args.alpha,
                                  args.batch_size, progress=True)
    out = [""] * len(lines)
    for i, text in zip(todo, results):
        out[i] = text
    text = "".join(line + "\n" for line in out)
    if not args.output:
        sys.stdout.write(text)
        return
    target = Path(args.output)
    try:
        write_text(target, text)
    except OSError as err:
        raise UserError(f"cannot write --output {target} ({err.strerror or err})") from None
    print(f"translated {len(todo):,} sentences ({len(lines) - len(todo)} empty lines kept empty) -> {target}",
          file=sys.stderr)


def interactive(model: Transformer, vocab: SubwordVocab, args: argparse.Namespace, device: torch.device) -> None:
    print(f"English -> French (Transformer, {model.config.impl}). {HELP}")
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
                heatmap = command(line, args, heatmap)
            else:
                print("fr> " + translate_one(model, vocab, line, args, device, heatmap))
        except UserError as err:
            print(f"error: {err}")
        except KeyboardInterrupt:
            print("\n(interrupted)")


def command(line: str, args: argparse.Namespace, heatmap: str | None) -> str | None:
    name, _, value = line.partition(" ")
    if name == ":beam":
        if not value.strip().isdigit() or int(value) < 1:
            raise UserError(":beam takes a positive whole number, e.g. :beam 5")
        args.beam_size = int(value)
    elif name == ":heatmap":
        heatmap = None if value.strip() in ("", "off") else value.strip()
    elif name != ":settings":
        print(HELP)
        return heatmap
    print(f"beam {args.beam_size}, alpha {args.alpha}, heatmap {heatmap or 'off'}")
    return heatmap


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    check_positive(args, "beam_size", "batch_size")
    if sum([bool(args.sentence), args.input is not None, args.interactive]) != 1:
        raise UserError("give one of: a sentence, --input FILE, or --interactive")
    if args.heatmap and args.input is not None:
        raise UserError("--heatmap draws one sentence; give a sentence (or use :heatmap in --interactive)")
    set_threads(args.num_threads)
    device = get_device(args.device)
    model, vocab, _ = load_model(args.model_path, device)
    if args.heatmap and model.config.impl != "scratch":
        raise UserError("attention maps come from the scratch model; train it with --impl scratch")
    if args.input is not None:
        translate_file(model, vocab, args, device)
    elif args.interactive:
        interactive(model, vocab, args, device)
    else:
        print(translate_one(model, vocab, " ".join(args.sentence), args, device, args.heatmap))
    return 0


if __name__ == "__main__":
    run_main(main)
