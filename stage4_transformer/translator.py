"""What train.py, evaluate.py and translate.py share: load a trained Transformer and translate many
sentences in length-sorted batches."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import torch
from tqdm import tqdm

from scripts.common import UserError, describe_model, find_model, load_checkpoint
from scripts.repl import check_setting
from stage4_transformer.data.batches import make_batch
from stage4_transformer.data.subword import EOS_ID, SubwordVocab
from stage4_transformer.models.search import beam_search, greedy_decode
from stage4_transformer.models.transformer import Transformer, TransformerConfig

STAGE = "stage4_transformer"
MODEL_NAME = "transformer_mt"
STAGE_DIR = Path(__file__).resolve().parent
DEFAULT_CHECKPOINT = STAGE_DIR / "checkpoints" / "best_transformer.pt"   # train.py's default
# what a program loads without --checkpoint: the newest best model train.py wrote (best_transformer.pt, or
# best_transformer_quick.pt of --preset quick), else the newest run's last.pt (a run stopped or still training)
BEST_GLOBS, RUN_GLOBS = ["checkpoints/best_transformer*.pt"], ["runs/transformer_*/last.pt"]
TRAIN_HINT = "python stage4_transformer/train.py --preset quick"


def find_checkpoint(given: str | None) -> Path:
    """--checkpoint when given, else the newest model of this stage (`scripts.common.find_model`)."""
    return find_model(given, STAGE_DIR, BEST_GLOBS, RUN_GLOBS, TRAIN_HINT)


def model_line(path: str | Path, ckpt: dict[str, Any]) -> str:
    """"model: <file> (best checkpoint; preset quick, epoch 2 of 2, val loss 1.53, val BLEU 35.10)": which model a
    program loaded, and how far it trained (the validation BLEU is greedy, as train.py scores each epoch)."""
    line = describe_model(Path(path), ckpt)
    history = ckpt.get("history") or []
    bleu = history[-1].get("val_bleu") if Path(path).name == "last.pt" and history else ckpt.get("best_val_bleu")
    if isinstance(bleu, float) and bleu >= 0 and line.endswith(")"):
        line = f"{line[:-1]}, val BLEU {bleu:.2f})"
    return line


def load_model(path: str | Path, device: torch.device) -> tuple[Transformer, SubwordVocab, dict[str, Any]]:
    """A trained model in eval mode, its subword vocabulary and the checkpoint dict."""
    ckpt = load_checkpoint(path, STAGE, [MODEL_NAME], map_location="cpu")
    try:
        model = Transformer(TransformerConfig(**ckpt["config"]))
        model.load_state_dict(ckpt["model_state"])
        vocab = SubwordVocab.from_json(ckpt["vocab"])
    except (KeyError, TypeError, RuntimeError, ValueError) as err:
        reason = str(err).splitlines()[0][:120]
        raise UserError(f"{path} does not hold a complete stage 4 model ({reason}); retrain it") from None
    return model.to(device).eval(), vocab, ckpt


def check_alpha(value: float) -> float:
    """The length-penalty exponent of beam search (ValueError unless a number from 0 to 10)."""
    if not (math.isfinite(value) and 0.0 <= value <= 10.0):
        raise ValueError(f"alpha must be between 0 (no length penalty) and 10, got {value}")
    return value


def check_search_flags(beam_size: int, alpha: float) -> None:
    """--beam_size and --alpha, refused in one line with the words the interactive :beam and :alpha use."""
    try:
        check_setting("beam", beam_size)
    except UserError as err:
        raise UserError(f"--beam_size: {err}") from None
    try:
        check_alpha(alpha)
    except ValueError as err:
        raise UserError(f"--alpha: {err}") from None


@torch.no_grad()
def translate_sentences(model: Transformer, vocab: SubwordVocab, sentences: Sequence[str], device: torch.device,
                        beam_size: int = 1, alpha: float = 1.0, batch_size: int = 128, use_cache: bool = True,
                        progress: bool = False) -> list[str]:
    """Detokenised translations, in input order (translated in batches of similar length)."""
    model.eval()
    encoded = [(vocab.encode(s)[: model.config.max_len - 1] + [EOS_ID], [EOS_ID]) for s in sentences]
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i][0]))
    out: list[str] = [""] * len(sentences)
    bar = tqdm(total=len(sentences), unit="sent", desc="translating", disable=True if not progress else None,
               leave=False)
    for start in range(0, len(order), batch_size):
        batch = make_batch(encoded, order[start: start + batch_size])
        src = batch.src.to(device)
        max_len = min(model.config.max_len - 1, int(1.5 * src.size(1)) + 10)
        if beam_size > 1:
            ids = beam_search(model, src, beam_size, alpha, max_len=max_len, use_cache=use_cache)
        else:
            ids = greedy_decode(model, src, max_len=max_len, use_cache=use_cache)
        for row, index in zip(ids.cpu().tolist(), batch.indices):
            out[index] = vocab.decode(row)
        bar.update(len(batch.indices))
    bar.close()
    return out
