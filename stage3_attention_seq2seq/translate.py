"""Translate English into French with a trained stage 3 model, and draw where it looked.

    python stage3_attention_seq2seq/translate.py "A man is riding a bike down the street."
    python stage3_attention_seq2seq/translate.py "Two dogs play in the snow." --heatmap attention.png
    python stage3_attention_seq2seq/translate.py --input sentences.en --output sentences.fr
    cat sentences.en | python stage3_attention_seq2seq/translate.py --input -     # one sentence per line from stdin
    python stage3_attention_seq2seq/translate.py --interactive          # type sentences; :help lists commands
(the same commands work from inside stage3_attention_seq2seq/ as `python translate.py ...`)

Without --checkpoint it loads the newest checkpoints/*.pt (else the newest runs/*/last.pt) and says which
on stderr. Beam search (--beam_size 5) by default; --beam_size 1 is greedy. The interactive prompt takes the
course's commands (:beam, :settings, :help, :quit) plus :alpha VALUE and :heatmap FILE.png|off.
"""
from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path
from typing import Callable, Sequence

import torch

from scripts.checks import POSITIVE_INT
from scripts.common import (ArgParser, UserError, add_checkpoint_arg, add_common_args, check_output_is_not_input,
                            check_writable, clean_text, get_device, path_arg, read_text, run_main, set_threads,
                            write_text)
from scripts.repl import Repl
from stage3_attention_seq2seq.data.translation import EOS, UNK, Vocabulary, split_lines, tokenize
from stage3_attention_seq2seq.models.seq2seq import Seq2Seq
from stage3_attention_seq2seq.translator import (ALPHA, BEAM, CHECKPOINT_HELP, Translation, check_length,
                                                 find_checkpoint, load_model, model_line,
                                                 translate_sentences)

NO_ATTENTION = "this model has no attention weights to draw (--attention_type none)"
HEATMAP_FORMATS = (".png", ".pdf", ".svg")


def build_parser() -> argparse.ArgumentParser:
    p = ArgParser(description="Translate English to French with a trained stage 3 model.")
    p.add_argument("sentence", nargs="*", help="English text to translate (one sentence)")
    add_checkpoint_arg(p, None, CHECKPOINT_HELP)
    p.add_argument("--input", type=path_arg, default=None,
                   help="translate this file, one sentence per line; - reads stdin (default: none)")
    p.add_argument("--output", type=path_arg, default=None, help="write the file's translations here (default: stdout)")
    p.add_argument("--interactive", action="store_true", help="type sentences at a prompt (:help lists commands)")
    p.add_argument("--beam_size", type=BEAM, default=5, help="beam width (1: greedy)")
    p.add_argument("--alpha", type=ALPHA, default=1.0, help="length penalty exponent")
    p.add_argument("--unk_replace", action=argparse.BooleanOptionalAction, default=True,
                   help="replace <unk> in the output by the most attended source word")
    p.add_argument("--batch_size", type=POSITIVE_INT, default=64, help="sentences per batch with --input")
    p.add_argument("--heatmap", type=path_arg, default=None,
                   help="save the sentence's attention weights as this .png, .pdf or .svg (default: none)")
    add_common_args(p, seed_help="unused: greedy and beam search draw no random numbers")
    return p


def check_sentence(sentence: str, what: str = "that sentence") -> list[str]:
    """The words of a sentence to translate; refuses an empty one or one too long (no model is needed to tell)."""
    tokens = tokenize(sentence)
    if not tokens:
        raise UserError("empty sentence: type some English to translate")
    check_length(tokens, what)
    return tokens


def note_unknown(sentence: str, src_vocab: Vocabulary) -> None:
    """Say on stderr which words the model does not know (they are read as <unk>). A sentence of unknown words
    only is still translated: the model's answer, however poor, is the result asked for."""
    tokens = check_sentence(sentence)
    unknown = [t for t in tokens if t not in src_vocab.stoi]
    if len(unknown) == len(tokens):
        print(f"note: none of the words of {sentence[:200]!r} is in the model's English vocabulary, so the "
              "translation is a guess; try a sentence about people, animals or places (Multi30k describes photos)",
              file=sys.stderr)
    elif unknown:
        print(f"note: unknown words read as {UNK}: {' '.join(unknown)[:500]}", file=sys.stderr)


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
    path = Path(path)
    try:
        # words are drawn as typed: "$" is not the start of a formula, and a character the font lacks is a box
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Glyph .* missing")
            ax.imshow(weights[: len(rows), : len(cols)], cmap="viridis", vmin=0.0, vmax=1.0)
            ax.set_xticks(range(len(cols)), cols, rotation=60, ha="right", parse_math=False)
            ax.set_yticks(range(len(rows)), rows, parse_math=False)
            ax.set_xlabel("English (source)")
            ax.set_ylabel("French (output)")
            ax.set_title(title or translation.text, fontsize=9, parse_math=False)
            fig.tight_layout()
            path.parent.mkdir(parents=True, exist_ok=True)
            fig.savefig(path, dpi=120)
    except (OSError, ValueError) as err:
        raise UserError(f"cannot write the heatmap {path} ({getattr(err, 'strerror', None) or err})") from None
    finally:
        plt.close(fig)
    return path


def check_heatmap(text: str, name: str = "--heatmap") -> Path:
    """A heatmap file name that can be written and names a format matplotlib draws (checked before any work)."""
    if Path(text).suffix.lower() not in HEATMAP_FORMATS:
        raise UserError(f"{name} {text[:100]!r}: the file name must end in {', '.join(HEATMAP_FORMATS)}")
    return check_writable(text, name)


def translate_one(model: Seq2Seq, src_vocab: Vocabulary, tgt_vocab: Vocabulary, sentence: str, device: torch.device,
                  beam: int, alpha: float, unk_replace: bool, heatmap: str | None,
                  show: Callable[[str], None] = print) -> None:
    """One sentence, shown through `show`; unknown words are named on stderr, then the attention drawn to
    `heatmap` if given (the translation is shown first: a heatmap that cannot be written does not lose it)."""
    note_unknown(sentence, src_vocab)
    result = translate_sentences(model, src_vocab, tgt_vocab, [sentence], device, beam, alpha,
                                 return_attention=heatmap is not None and model.attention is not None,
                                 unk_replace=unk_replace)[0]
    show(result.text)
    if heatmap:
        print(f"attention heatmap: {draw_heatmap(result, heatmap)}", file=sys.stderr)


def translate_file(model: Seq2Seq, src_vocab: Vocabulary, tgt_vocab: Vocabulary, lines: list[str],
                   args: argparse.Namespace, device: torch.device) -> None:
    """Line i of --output translates line i of --input; an empty input line gives an empty output line."""
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


def read_input(name: str) -> list[str]:
    """The lines of --input: a UTF-8 text file (gzipped or not; a damaged one is named with its line), or stdin
    for "-" (undecodable bytes there become U+FFFD, and the user is told once). A line too long to translate is
    refused before any work, with its number."""
    if name == "-":
        where, lines = "stdin", split_lines(clean_text(sys.stdin.read(), "stdin"))
    else:
        where, lines = f"--input {name}", split_lines(read_text(name, "--input"))
    for number, line in enumerate(lines, 1):
        check_length(tokenize(line), f"{where}, line {number}")
    return lines


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
            try:
                heatmap["path"] = str(check_heatmap(value, ":heatmap"))
            except UserError as err:
                return f"(:heatmap kept {heatmap['path'] or 'off'}: {err})"
        return f"heatmap = {heatmap['path'] or 'off'}"

    repl = Repl({"beam": args.beam_size, "alpha": args.alpha},
                extra_settings={"alpha": (lambda text: ALPHA.check(text, "alpha"),
                                          "length penalty exponent, 0 (none) .. 10")},
                extra_commands={"heatmap": (set_heatmap,
                                            "FILE.png: draw each translation's attention there; off: stop")})

    def answer(line: str) -> None:
        translate_one(model, src_vocab, tgt_vocab, line, device, repl.settings["beam"], repl.settings["alpha"],
                      args.unk_replace, heatmap["path"], show=lambda text: print("fr> " + text))

    banner = (f"English -> French ({model.config.attention_type} attention, beam {args.beam_size}). "
              "Type a sentence; :help lists the commands, :quit (or Ctrl-D) leaves.")
    return repl.loop(answer, banner, prompt="en> ")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if sum([bool(args.sentence), args.input is not None, args.interactive]) != 1:
        raise UserError("give one of: a sentence, --input FILE, or --interactive")
    if args.heatmap and args.input is not None:
        raise UserError("--heatmap draws one sentence; give a sentence (or use :heatmap in --interactive)")
    if args.output is not None and args.input is None:
        raise UserError("--output holds the translations of --input FILE; give --input too")
    if args.sentence:       # checked before the model loads: a typing slip costs nothing
        check_sentence(" ".join(args.sentence), "the sentence")
    if args.heatmap:
        check_heatmap(args.heatmap)
    check_output_is_not_input(args.input, args.output)
    if args.output:
        check_writable(args.output, "--output")
    lines = read_input(args.input) if args.input is not None else []     # read and checked before the model loads
    path = find_checkpoint(args.checkpoint)
    set_threads(args.num_threads)
    device = get_device(args.device)
    model, src_vocab, tgt_vocab, ckpt = load_model(path, device)
    print(model_line(path, ckpt), file=sys.stderr)     # stderr: stdout holds only the translations
    if args.heatmap and model.attention is None:
        raise UserError(f"{NO_ATTENTION}; drop --heatmap")
    if args.input is not None:
        translate_file(model, src_vocab, tgt_vocab, lines, args, device)
    elif args.interactive:
        return interactive(model, src_vocab, tgt_vocab, args, device)
    else:
        translate_one(model, src_vocab, tgt_vocab, " ".join(args.sentence), device, args.beam_size, args.alpha,
                      args.unk_replace, args.heatmap)
    return 0


if __name__ == "__main__":
    run_main(main)
