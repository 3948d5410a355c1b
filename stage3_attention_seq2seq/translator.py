"""What train.py, evaluate.py and translate.py share: find and load a trained model, and translate many
sentences in length-sorted batches (scored by `scripts.translation_data.corpus_scores`)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from tqdm import tqdm

from scripts.common import UserError, describe_model, find_model, load_checkpoint
from scripts.repl import check_setting
from stage3_attention_seq2seq.data.translation import (
    EOS_ID,
    UNK,
    Vocabulary,
    detokenize,
    make_batch,
    strip_glue,
    tokenize,
)
from stage3_attention_seq2seq.models.search import beam_search, greedy_decode
from stage3_attention_seq2seq.models.seq2seq import Seq2Seq, Seq2SeqConfig

STAGE = "stage3_attention_seq2seq"
MODEL_NAME = "seq2seq_attention"
STAGE_DIR = Path(__file__).resolve().parent
# without --checkpoint, programs load the newest best checkpoint train.py wrote (any attention type, data set or
# preset), else the newest run's last.pt (a run stopped before its first epoch ended, or one still training)
BEST_GLOBS = ("checkpoints/*.pt",)
RUN_GLOBS = ("runs/*/last.pt",)
TRAIN_HINT = "python stage3_attention_seq2seq/train.py --preset quick"
CHECKPOINT_HELP = ("model written by train.py (default: the newest stage3_attention_seq2seq/checkpoints/*.pt, "
                   "else the newest runs/*/last.pt there)")


@dataclass
class Translation:
    source_tokens: list[str]     # as the model read them (unknown words shown as <unk>), without <eos>
    tokens: list[str]            # the output tokens, without <eos>
    text: str                    # detokenised output
    attention: torch.Tensor | None = None   # (len(tokens) + 1, len(source_tokens) + 1), <eos> rows/cols included


def check_beam(value: int, name: str = "--beam_size") -> int:
    """The beam width a user asked for: the same rule as the REPL's `:beam` (1 = greedy, at most 64)."""
    try:
        return check_setting("beam", value)
    except UserError as err:
        raise UserError(str(err).replace("beam", name, 1)) from None


def check_alpha(value: float, name: str = "--alpha") -> float:
    """The length penalty exponent: finite, between 0 (no penalty) and 10."""
    if not (math.isfinite(value) and 0.0 <= value <= 10.0):
        raise UserError(f"{name} must be between 0 (no length penalty) and 10, got {value}")
    return value


def find_checkpoint(given: str | None) -> Path:
    """--checkpoint when given, else the newest model of this stage (BEST_GLOBS, then RUN_GLOBS)."""
    return find_model(given, STAGE_DIR, BEST_GLOBS, RUN_GLOBS, TRAIN_HINT)


def model_line(path: str | Path, ckpt: dict[str, Any]) -> str:
    """What a program prints about the model it loaded: the file, best or a run's latest state, how far it
    trained, and its attention type, data set and best validation BLEU."""
    line = describe_model(Path(path), ckpt)
    config = ckpt.get("config") if isinstance(ckpt.get("config"), dict) else {}
    details = [f"{config.get('attention_type', '?')} attention on {ckpt.get('dataset', '?')}"]
    if isinstance(ckpt.get("best_val_bleu"), float) and ckpt["best_val_bleu"] >= 0:
        details.append(f"best val BLEU {ckpt['best_val_bleu']:.2f} (greedy)")
    return f"{line}: {', '.join(details)}"


def load_model(path: str | Path, device: torch.device) -> tuple[Seq2Seq, Vocabulary, Vocabulary, dict[str, Any]]:
    """A trained model in eval mode, its two vocabularies and the checkpoint dict."""
    ckpt = load_checkpoint(path, STAGE, [MODEL_NAME], map_location="cpu")
    try:
        model = Seq2Seq(Seq2SeqConfig(**ckpt["config"]))
        model.load_state_dict(ckpt["model_state"])
        src_vocab, tgt_vocab = Vocabulary.from_dict(ckpt["src_vocab"]), Vocabulary.from_dict(ckpt["tgt_vocab"])
    except (KeyError, TypeError, RuntimeError, ValueError) as err:
        reason = str(err).splitlines()[0][:120]
        raise UserError(f"{path} does not hold a complete stage 3 model ({reason}); retrain it") from None
    return model.to(device).eval(), src_vocab, tgt_vocab, ckpt


@torch.no_grad()
def translate_sentences(model: Seq2Seq, src_vocab: Vocabulary, tgt_vocab: Vocabulary, sentences: Sequence[str],
                        device: torch.device, beam_size: int = 1, alpha: float = 1.0, batch_size: int = 128,
                        return_attention: bool = False, unk_replace: bool = False,
                        progress: bool = False) -> list[Translation]:
    """Translate in batches of similar length (sorted, then put back in input order).

    unk_replace: where the model writes <unk>, copy the source word it attended to most
    (Luong et al. 2015, "Addressing the rare word problem"): names and numbers come through.
    """
    model.eval()
    encoded = [(src_vocab.encode(tokenize(s)) + [EOS_ID], [EOS_ID]) for s in sentences]
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i][0]))
    need_attention = return_attention or unk_replace
    results: list[Translation | None] = [None] * len(sentences)
    bar = tqdm(total=len(sentences), unit="sent", desc="translating", disable=True if not progress else None,
               leave=False)
    for start in range(0, len(order), batch_size):
        batch = make_batch(encoded, order[start: start + batch_size])
        src = batch.src.to(device)
        if beam_size > 1:
            ids, weights = beam_search(model, src, beam_size, alpha, return_attention=need_attention)
        else:
            ids, weights = greedy_decode(model, src, return_attention=need_attention)
        ids = ids.cpu()
        weights = weights.cpu() if weights is not None else None
        for row, index in enumerate(batch.indices):
            source_tokens = tokenize(sentences[index])
            tokens = tgt_vocab.decode(ids[row].tolist())
            attention = None
            if weights is not None:
                attention = weights[row, : len(tokens) + 1, : int(batch.src_lengths[row])]
            if unk_replace and attention is not None:
                written = len(tokens)
                tokens, kept = replace_unknowns(tokens, source_tokens, attention)
                attention = attention[kept + ([written] if attention.size(0) > written else [])]  # rows stay aligned
            results[index] = Translation([t if t in src_vocab.stoi else UNK for t in source_tokens], tokens,
                                         detokenize(tokens), attention if return_attention else None)
        bar.update(len(batch.indices))
    bar.close()
    return results  # type: ignore[return-value]


def replace_unknowns(tokens: list[str], source_tokens: list[str],
                     attention: torch.Tensor) -> tuple[list[str], list[int]]:
    """Each <unk> output becomes the source word it attends to most (the source <eos> column is left out).
    A copied word gets French spacing (no "##" glue); a copied punctuation mark is dropped.
    Returns the new tokens and, for each, the position of the output token it came from."""
    out, kept = [], []
    for i, token in enumerate(tokens):
        if token == UNK:
            token = strip_glue(source_tokens[int(attention[i, : len(source_tokens)].argmax())])
            if not any(ch.isalnum() for ch in token):
                continue
        out.append(token)
        kept.append(i)
    return out, kept
