"""What train.py, evaluate.py and translate.py share: load a trained Transformer and translate many
sentences in length-sorted batches."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch
from tqdm import tqdm

from scripts.checks import Range
from scripts.common import (UserError, check_vocab_fits, config_from_checkpoint, describe_model, find_model,
                            load_checkpoint, model_from_checkpoint)
from scripts.translation_data import DATASETS
from stage4_transformer.data.batches import make_batch
from stage4_transformer.data.subword import EOS_ID, MAX_PIECES, SubwordVocab
from stage4_transformer.models.search import beam_search, greedy_decode
from stage4_transformer.models.transformer import (Transformer, TransformerConfig, check_output_ids,
                                                   check_torch_impl)

STAGE = "stage4_transformer"
ALPHA = Range(float, lo=0, hi=10)      # beam search's length-penalty exponent: 0 (none) to 10
BATCH_SIZE = Range(int, lo=1, hi=4096)  # sentences translated at once
# the largest sizes a checkpoint may state (scripts.common.config_from_checkpoint): the position table and the
# softmax's index are not saved, so their sizes must be bounded before the model is built
MAX_POSITIONS = 4096
# the fewest positions a checkpoint may state: a source sentence needs its pieces and <eos>, and the decoder <bos>
# and the words it writes (train.py always gives 258 or more; 1 or 2 would leave no room for a sentence)
MIN_POSITIONS = 8
CONFIG_LIMITS = {"max_len": MAX_POSITIONS, "d_model": 8192, "n_heads": 256, "n_encoder_layers": 64,
                 "n_decoder_layers": 64, "d_ff": 65536, "src_vocab_size": MAX_PIECES, "tgt_vocab_size": MAX_PIECES}
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
    history = ckpt.get("history") if isinstance(ckpt.get("history"), list) else []
    last = history[-1] if history and isinstance(history[-1], dict) else {}
    bleu = last.get("val_bleu") if Path(path).name == "last.pt" else ckpt.get("best_val_bleu")
    if isinstance(bleu, float) and bleu >= 0 and line.endswith(")"):
        line = f"{line[:-1]}, val BLEU {bleu:.2f})"
    return line


def load_model(path: str | Path, device: torch.device) -> tuple[Transformer, SubwordVocab, dict[str, Any]]:
    """A trained model in eval mode, its subword vocabulary and the checkpoint dict (every part checked first)."""
    ckpt = load_checkpoint(path, STAGE, [MODEL_NAME], map_location="cpu")
    if ckpt.get("dataset") not in DATASETS:
        raise UserError(f"{path} does not say which data set trained it (dataset = {str(ckpt.get('dataset'))[:30]!r}); "
                        "retrain the model")
    model, vocab = transformer_from_checkpoint(path, ckpt)
    return model.to(device).eval(), vocab, ckpt


def transformer_from_checkpoint(path: str | Path, ckpt: dict[str, Any]) -> tuple[Transformer, SubwordVocab]:
    """The model and vocabulary a checkpoint holds, refused in one line (before any tensor is allocated from its
    sizes) when its config, vocabulary or weights were edited, cut short or made by another version."""
    config = config_from(path, ckpt.get("config"))
    vocab = SubwordVocab.from_json(ckpt.get("vocab"), where=f"{path}: its subword vocabulary")
    check_vocab_fits(path, len(vocab), config.src_vocab_size)
    check_vocab_fits(path, len(vocab), config.tgt_vocab_size)
    return model_from_checkpoint(path, lambda: Transformer(config), ckpt.get("model_state")), vocab


def config_from(path: str | Path, saved: Any) -> TransformerConfig:
    """A checkpoint's TransformerConfig: the keys, types and sizes (scripts.common.config_from_checkpoint), then
    what only this model knows (its choices, dropout rates, the softmax's pieces)."""
    config = config_from_checkpoint(path, saved, TransformerConfig, limits=CONFIG_LIMITS)
    try:
        check_config(config)
    except ValueError as err:
        raise UserError(f"{path} holds a model config that this version cannot build ({err}); retrain the model") \
            from None
    return config


def check_config(c: TransformerConfig) -> None:
    """ValueError naming the first value a Transformer cannot be built from."""
    for name in ("src_vocab_size", "tgt_vocab_size", "d_model", "n_heads", "n_encoder_layers", "n_decoder_layers",
                 "d_ff", "max_len"):
        if getattr(c, name) < (4 if name.endswith("vocab_size") else 1):
            raise ValueError(f"{name} = {getattr(c, name)}")
    if c.max_len < MIN_POSITIONS:
        raise ValueError(f"max_len {c.max_len} leaves no room for a sentence: at least {MIN_POSITIONS}")
    if c.d_model % c.n_heads:
        raise ValueError(f"d_model {c.d_model} is not divisible by n_heads {c.n_heads}")
    for name in ("dropout", "attention_dropout", "activation_dropout"):
        value = getattr(c, name)
        if not (value is None and name != "dropout" or isinstance(value, (int, float)) and not isinstance(value, bool)
                and 0 <= value < 1):
            raise ValueError(f"{name} = {str(value)[:20]}")
    if c.impl not in ("scratch", "torch") or c.positional not in ("sinusoidal", "learned"):
        raise ValueError(f"impl {c.impl[:20]!r}, positional {c.positional[:20]!r}")
    if c.impl == "torch":
        check_torch_impl(c.dropout, c.attention_dropout, c.activation_dropout)
    if c.output_ids is not None:
        check_output_ids(c.output_ids, c.tgt_vocab_size)


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
