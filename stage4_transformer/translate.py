"""Translate English into French with a trained stage 4 Transformer, and draw its attention.

    python stage4_transformer/translate.py "A man is riding a bike down the street."
    python stage4_transformer/translate.py "Two dogs play in the snow." --heatmap attention.png   # every layer, head
    python stage4_transformer/translate.py --input sentences.en --output sentences.fr            # one sentence a line
    python stage4_transformer/translate.py --interactive                         # type sentences; :help for commands
(or, from the stage folder, `python translate.py ...`)

Beam search (--beam_size 5) with the key/value cache by default; --beam_size 1 is greedy. Without --checkpoint it
loads the newest model train.py wrote (--preset quick's too) and says which on stderr.
"""
import argparse
import sys
from pathlib import Path
from typing import Sequence

import torch

from scripts.common import (ArgParser, UserError, add_checkpoint_arg, add_common_args, check_output_is_not_input,
                            check_writable, clean_text, get_device, path_arg, read_text, run_main, set_threads,
                            write_text)
from scripts.repl import SETTING_RANGES, Repl
from scripts.translation_data import split_lines
from stage4_transformer.data.subword import BOS_ID, EOS_ID, SubwordVocab
from stage4_transformer.models.transformer import Transformer
from stage4_transformer.translator import (ALPHA, BATCH_SIZE, find_checkpoint, load_model,
                                           model_line, translate_sentences)

HEATMAP_FORMATS = (".png", ".pdf", ".svg")     # matplotlib would add .png to any other name, so it is refused


def build_parser() -> argparse.ArgumentParser:
    p = ArgParser(description="Translate English to French with a trained stage 4 Transformer.")
    p.add_argument("sentence", nargs="*", help="English text to translate (one sentence)")
    add_checkpoint_arg(p, None, "checkpoint written by train.py (default: the newest checkpoints/best_transformer*.pt "
                                "in the stage folder, else the newest runs/transformer_*/last.pt)")
    p.add_argument("--input", type=path_arg, default=None,
                   help="translate this file, one sentence per line (-: standard input)")
    p.add_argument("--output", type=path_arg, default=None, help="write the file's translations here (default: stdout)")
    p.add_argument("--interactive", action="store_true", help="type sentences at a prompt (:help lists commands)")
    p.add_argument("--beam_size", type=SETTING_RANGES["beam"], default=5, help="beam width (1: greedy)")
    p.add_argument("--alpha", type=ALPHA, default=1.0, help="length penalty exponent (0: none)")
    p.add_argument("--batch_size", type=BATCH_SIZE, default=64, help="sentences per batch with --input")
    p.add_argument("--heatmap", type=path_arg, default=None,
                   help="save the cross-attention of every layer and head as this .png, .pdf or .svg")
    add_common_args(p, seed_help="unused here: greedy and beam search draw no random numbers")
    return p


def check_sentence(sentence: str) -> None:
    """An empty or blank sentence is refused (before the model loads, on the command line). Any other text is
    translated: the subword vocabulary spells every word with its pieces, so no word is unknown."""
    if not sentence.split():
        raise UserError("empty sentence: type some English to translate")


def check_heatmap_name(text: str, name: str) -> None:
    """A heatmap must be a file of a format matplotlib draws: given a folder, or a name without .png/.pdf/.svg,
    matplotlib would write <name>.png, another file than the one the user named and is told about."""
    if Path(text).is_dir():
        raise UserError(f"cannot write the heatmap {text[:100]!r} with {name}: it is a folder; give a file name such "
                        f"as {str(Path(text) / 'attention.png')[:120]!r}")
    if Path(text).suffix.lower() not in HEATMAP_FORMATS:
        raise UserError(f"cannot write the heatmap {text[:100]!r} with {name}: the file name must end in "
                        f"{', '.join(HEATMAP_FORMATS)}")


def note_cut(model: Transformer, vocab: SubwordVocab, sentences: list[str], what: str) -> None:
    """Say on stderr when a sentence has more subword pieces than the model has positions: `translate_sentences`
    translates only its first pieces (the rest is left out, never silently)."""
    keep = model.config.max_len - 1
    sizes = [len(vocab.encode(s)) for s in sentences]
    long = [i for i, size in enumerate(sizes) if size > keep]
    if len(long) == 1 and len(sentences) == 1:
        print(f"note: {what} is {sizes[0]:,} subword pieces long; the model reads at most "
              f"{keep:,}, so only its beginning is translated", file=sys.stderr)
    elif long:
        lines = f"{len(long):,} lines of {what} (the first: line {long[0] + 1}) are" if len(long) > 1 else \
            f"line {long[0] + 1} of {what} is"
        print(f"note: {lines} longer than the {keep:,} subword pieces the model reads; only the beginning is "
              "translated", file=sys.stderr)


def cross_attention_maps(model: Transformer, vocab: SubwordVocab, sentence: str, translation: str,
                         device: torch.device) -> tuple[torch.Tensor, list[str], list[str]]:
    """Every decoder layer's cross-attention while it reads `translation` (fed in whole) over `sentence`:
    maps (layers, heads, target pieces, source pieces), then the target and the source pieces, <eos> included."""
    longest = model.config.max_len - 1      # as translate_sentences cuts a sentence too long for the model
    src = torch.tensor([vocab.encode(sentence)[:longest] + [EOS_ID]], device=device)
    out = vocab.encode(translation)[:longest] + [EOS_ID]
    maps = model.cross_attention(src, torch.tensor([[BOS_ID] + out[:-1]], device=device))[:, 0].cpu()  # (L, h, T, S)
    name = vocab.tokenizer.id_to_token
    return maps, [name(i) for i in out], [name(i) for i in src[0].tolist()]


def draw_heatmap(model: Transformer, vocab: SubwordVocab, sentence: str, translation: str, path: str | Path,
                 device: torch.device) -> Path:
    """A grid of cross-attention maps: one row per decoder layer, one column per head."""
    import matplotlib  # noqa: PLC0415
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    maps, rows, cols = cross_attention_maps(model, vocab, sentence, translation, device)
    layers, heads = maps.shape[:2]
    fig, axes = plt.subplots(layers, heads, figsize=(2.6 * heads + 1, 2.6 * layers + 1), squeeze=False)
    for layer in range(layers):
        for head in range(heads):
            ax = axes[layer][head]
            ax.imshow(maps[layer, head].numpy(), cmap="viridis", vmin=0.0, vmax=1.0)
            ax.set_title(f"layer {layer + 1}, head {head + 1}", fontsize=8)
            # parse_math=False: a piece such as "$5" is text, not the start of a formula
            ax.set_xticks(range(len(cols)), cols if layer == layers - 1 else [""] * len(cols), rotation=90, fontsize=6,
                          parse_math=False)
            ax.set_yticks(range(len(rows)), rows if head == 0 else [""] * len(rows), fontsize=6, parse_math=False)
    fig.suptitle(translation, fontsize=9, parse_math=False)
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


def translate_one(model: Transformer, vocab: SubwordVocab, sentence: str, beam: int, alpha: float,
                  device: torch.device, heatmap: str | None) -> str:
    check_sentence(sentence)
    note_cut(model, vocab, [sentence], "the sentence")
    translation = translate_sentences(model, vocab, [sentence], device, beam, alpha)[0]
    if heatmap:
        print(f"attention heatmap: {draw_heatmap(model, vocab, sentence, translation, heatmap, device)}",
              file=sys.stderr)
    return translation


def translate_file(model: Transformer, vocab: SubwordVocab, lines: list[str], args: argparse.Namespace,
                   device: torch.device) -> None:
    """Line i of --output translates line i of --input; an empty input line gives an empty output line."""
    todo = [i for i, line in enumerate(lines) if line.split()]
    note_cut(model, vocab, lines, f"--input {args.input}")
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


def read_input(name: str) -> str:
    """--input's text: a UTF-8 file (a line that is not UTF-8 is named), or standard input for "-", where bytes that
    are not UTF-8 become U+FFFD (with a note), as for every line typed at a prompt."""
    if name != "-":
        if Path(name).is_dir():       # read_text would say "does not exist"
            raise UserError(f"--input {name} is a folder; give a text file (one sentence per line)")
        return read_text(name, "--input")
    return clean_text(sys.stdin.read(), "standard input")     # run_main reads stdin with errors="replace"


def interactive(model: Transformer, vocab: SubwordVocab, args: argparse.Namespace, device: torch.device) -> int:
    """Translate each typed line; `:beam`, `:alpha`, `:heatmap` and the course's other commands change settings."""
    heatmap = {"file": args.heatmap}

    def set_heatmap(value: str) -> str:
        if value in ("", "off"):
            heatmap["file"] = None
            return "heatmap off"
        if model.config.impl != "scratch":
            return "(attention maps come from the scratch model; this one was trained with --impl torch)"
        try:
            check_heatmap_name(value, ":heatmap")
        except UserError as err:
            return f"({err}; the heatmap stays {heatmap['file'] or 'off'})"
        heatmap["file"] = value
        return f"heatmap = {value} (drawn for each sentence)"

    repl = Repl({"beam": args.beam_size, "alpha": args.alpha},
                extra_settings={"alpha": (alpha_value, "length penalty exponent (0 = none)")},
                extra_commands={"heatmap": (set_heatmap, "FILE.png: draw each sentence's cross-attention there; "
                                                         ":heatmap off stops")})

    def answer(line: str) -> None:
        settings = repl.settings
        print("fr> " + translate_one(model, vocab, line, settings["beam"], settings["alpha"], device,
                                     heatmap["file"]))

    return repl.loop(answer, f"English -> French (Transformer, {model.config.impl}); :help lists the commands.",
                     prompt="en> ", read=input)


def alpha_value(text: str) -> float:
    """A typed length-penalty exponent (a UserError for anything else, so :alpha keeps its value)."""
    return ALPHA.check(text, "alpha")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if sum([bool(args.sentence), args.input is not None, args.interactive]) != 1:
        raise UserError("give one of: a sentence, --input FILE, or --interactive")
    if args.heatmap and args.input is not None:
        raise UserError("--heatmap draws one sentence; give a sentence (or use :heatmap in --interactive)")
    if args.output is not None and args.input is None:
        raise UserError("--output holds the translations of --input FILE; give --input too")
    if args.sentence:
        check_sentence(" ".join(args.sentence))     # before the model loads: a typing slip costs nothing
    check_output_is_not_input(args.input, args.output)
    if args.heatmap:
        check_heatmap_name(args.heatmap, "--heatmap")
    for flag, output in (("--output", args.output), ("--heatmap", args.heatmap)):    # and an output not to be written
        if output:
            check_writable(output, flag)
    lines = split_lines(read_input(args.input)) if args.input is not None else []     # so is a file that is no text
    set_threads(args.num_threads)
    device = get_device(args.device)
    path = find_checkpoint(args.checkpoint)
    model, vocab, ckpt = load_model(path, device)
    print(model_line(path, ckpt), file=sys.stderr, flush=True)    # on stderr: stdout holds only the translations
    if args.heatmap and model.config.impl != "scratch":
        raise UserError("attention maps come from the scratch model; train it with --impl scratch")
    if args.input is not None:
        translate_file(model, vocab, lines, args, device)
    elif args.interactive:
        return interactive(model, vocab, args, device)
    else:
        print(translate_one(model, vocab, " ".join(args.sentence), args.beam_size, args.alpha, device, args.heatmap))
    return 0


if __name__ == "__main__":
    run_main(main)
