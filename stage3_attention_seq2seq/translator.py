"""What train.py, evaluate.py and translate.py share: find and load a trained model, and translate many
sentences in length-sorted batches (scored by `scripts.translation_data.corpus_scores`)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from tqdm import tqdm

from scripts.common import (UserError, check_vocab_fits, config_from_checkpoint, describe_model, find_model,
                            load_checkpoint, model_from_checkpoint)
from scripts.checks import Range
from scripts.repl import SETTING_RANGES
from stage3_attention_seq2seq.data.translation import (
    DATASETS,
    EOS_ID,
    UNK,
    Vocabulary,
    detokenize,
    make_batch,
    strip_glue,
    tokenize,
)
from stage3_attention_seq2seq.models.search import beam_search, greedy_decode
from stage3_attention_seq2seq.models.seq2seq import MAX_DIM, MAX_VOCAB, Seq2Seq, Seq2SeqConfig

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


# the search settings, checked the same way on the command line (`type=BEAM`) and at the prompt (:beam, :alpha)
BEAM = SETTING_RANGES["beam"]                                                  # 1 (greedy) .. 64
ALPHA = Range(float, lo=0, lo_open=True, hi=10, zero_means="no length penalty")
# the longest sentence translated at once: the training pairs have at most --max_len 60 tokens, and decoding cost
# grows with the length (a pasted page would take minutes and mean nothing)
MAX_SOURCE_TOKENS = 200


def check_length(tokens: Sequence[str], where: str) -> None:
    if len(tokens) > MAX_SOURCE_TOKENS:
        raise UserError(f"{where} has {len(tokens):,} words and marks; this model translates at most "
                        f"{MAX_SOURCE_TOKENS} at once: split it into sentences")


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
    model, src_vocab, tgt_vocab = model_from_ckpt(path, ckpt)
    return model.to(device).eval(), src_vocab, tgt_vocab, ckpt


def model_from_ckpt(path: str | Path, ckpt: dict[str, Any]) -> tuple[Seq2Seq, Vocabulary, Vocabulary]:
    """The model and vocabularies a checkpoint holds, each part checked before anything is allocated from it: the
    config (exact keys, sizes within models/seq2seq.py's limits), the data set it names, both vocabularies (a
    list of distinct tokens, specials first, as long as the model's embeddings), then the weights' names and
    shapes (built on the meta device first). An edited checkpoint, or one made by another version, ends in one
    line naming the file and what is wrong, never in a traceback or a huge allocation."""
    config = config_from_checkpoint(path, ckpt.get("config"), Seq2SeqConfig,
                                    limits={"src_vocab_size": MAX_VOCAB, "tgt_vocab_size": MAX_VOCAB,
                                            "embed_dim": MAX_DIM, "hidden_dim": MAX_DIM, "attention_dim": MAX_DIM})
    if ckpt.get("dataset") not in DATASETS:
        raise UserError(f"{path} names the data set {str(ckpt.get('dataset'))[:40]!r}, not one of "
                        f"{', '.join(DATASETS)}; retrain the model")
    src_vocab = Vocabulary.from_dict(ckpt.get("src_vocab"), f"{path}: its source vocabulary")
    tgt_vocab = Vocabulary.from_dict(ckpt.get("tgt_vocab"), f"{path}: its target vocabulary")
    check_vocab_fits(path, len(src_vocab), config.src_vocab_size, "source vocabulary")
    check_vocab_fits(path, len(tgt_vocab), config.tgt_vocab_size, "target vocabulary")
    model = model_from_checkpoint(path, lambda: Seq2Seq(config), ckpt.get("model_state"))
    return model, src_vocab, tgt_vocab


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
