"""A joint English-French subword vocabulary (BPE), trained on the training split with Hugging Face
`tokenizers` (stage 5 writes BPE from scratch; here the subject is the Transformer).

Words are split into pieces the vocabulary knows, so a new word needs no <unk>: "skateboarders" may
become "▁skate", "board", "ers" (only a character never seen in training is <unk>). A piece that
starts a word carries "▁" (the space before it, SentencePiece's convention), so decoding is exact
for known characters: decode(encode(s)) == " ".join(s.split()).
One vocabulary for both languages lets the model share one embedding matrix for source, target and
output (they share many names, numbers and cognates).
"""
from __future__ import annotations

import json
from typing import Iterable, Sequence

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from scripts.common import UserError

SPECIALS = ("<pad>", "<unk>", "<bos>", "<eos>")
PAD_ID, UNK_ID, BOS_ID, EOS_ID = range(4)


class SubwordVocab:
    """BPE over "▁"-marked words; ids 0-3 are <pad> <unk> <bos> <eos>. Saved as the tokenizer's own JSON."""

    def __init__(self, tokenizer: Tokenizer):
        for i, special in enumerate(SPECIALS):
            if tokenizer.token_to_id(special) != i:
                raise UserError(f"subword vocabulary must have {special} at id {i}; retrain it with train.py")
        self.tokenizer = tokenizer

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int = 8000, min_frequency: int = 2,
              split_punctuation: bool = False) -> "SubwordVocab":
        """split_punctuation: each punctuation mark becomes a word of its own before BPE ("▁neige." -> "▁neige",
        "."; "▁l'herbe" -> "▁l", "'", "herbe"), so no merge is spent on a word glued to its comma or full stop.
        Decoding stays exact: only a piece that starts with "▁" had a space before it."""
        tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
        tokenizer.pre_tokenizer = pre_tokenizer(split_punctuation)
        tokenizer.decoder = decoders.Metaspace()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                      special_tokens=list(SPECIALS), show_progress=False)
        tokenizer.train_from_iterator((normalize(t) for t in texts), trainer)
        return cls(tokenizer)

    def __len__(self) -> int:
        return self.tokenizer.get_vocab_size()

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(normalize(text)).ids

    def pieces(self, text: str) -> list[str]:
        return self.tokenizer.encode(normalize(text)).tokens

    def words(self, text: str) -> list[str]:
        """The words BPE works on, as the pre-tokenizer cuts them: "▁" marks a space before a word; with
        split_punctuation a mark is a word of its own, without "▁" unless a space came before it."""
        return [word for word, _ in self.tokenizer.pre_tokenizer.pre_tokenize_str(normalize(text))]

    def decode(self, ids: Sequence[int]) -> str:
        """Ids to text, stopping at <eos>; <bos>/<pad> are dropped."""
        kept = []
        for i in ids:
            if i == EOS_ID:
                break
            if i not in (PAD_ID, BOS_ID):
                kept.append(int(i))
        return self.tokenizer.decode(kept)

    def to_json(self) -> str:
        return self.tokenizer.to_str()

    @classmethod
    def from_json(cls, text: str, where: str = "the subword vocabulary") -> "SubwordVocab":
        """The vocabulary saved by `to_json`, after checking it is one train.py could have written: a JSON file
        edited by hand (ids repeated or out of range, merges of unknown pieces, another pipeline) is a UserError
        naming `where`, never a model fed ids it has no row for."""
        try:
            check_vocab_json(text)
            tokenizer = Tokenizer.from_str(text)
        except Exception as err:  # noqa: BLE001 - ours are ValueErrors; the library raises its own types
            reason = " ".join(str(err).split())[:120]
            raise UserError(f"{where} is not a subword vocabulary of this course ({reason}); retrain it") from None
        return cls(tokenizer)


def pre_tokenizer(split_punctuation: bool) -> pre_tokenizers.PreTokenizer:
    """How text is cut into the words BPE merges within: at spaces ("▁" marks one), then maybe at marks."""
    if not split_punctuation:
        return pre_tokenizers.Metaspace()
    return pre_tokenizers.Sequence([pre_tokenizers.Metaspace(), pre_tokenizers.Punctuation()])


def normalize(text: str) -> str:
    """Runs of whitespace (tabs, no-break spaces, ...) become one space; no leading/trailing space. Lone surrogates
    (bytes that were not UTF-8, as Python keeps them) become U+FFFD: the tokenizer takes only encodable text."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
    return " ".join(text.split())


MAX_PIECES = 1 << 20      # far beyond any vocabulary size train.py allows


def check_vocab_json(text: str) -> None:
    """ValueError unless `text` is a BPE vocabulary as `SubwordVocab.train` writes it: the specials at ids 0-3, every
    id from 0 to size - 1 used exactly once, merges of known pieces into known pieces, and the same pre-tokenizer,
    decoder and settings (no normalizer or post-processor that could rewrite the text)."""
    if not isinstance(text, str):
        raise ValueError("not JSON text")
    data = json.loads(text)
    model = data.get("model") if isinstance(data, dict) else None
    if not isinstance(model, dict) or model.get("type") != "BPE":
        raise ValueError("no BPE model")
    settings = {k: v for k, v in model.items() if k not in ("vocab", "merges")}
    if any(settings.get(k, v) != v for k, v in REFERENCE_SETTINGS.items()):
        raise ValueError("BPE settings differ from train.py's")
    if any(data.get(k) is not None for k in ("normalizer", "post_processor", "truncation", "padding")):
        raise ValueError("a normalizer, post-processor, truncation or padding was added")
    if data.get("pre_tokenizer") not in REFERENCE_PRE_TOKENIZERS or data.get("decoder") != REFERENCE_DECODER:
        raise ValueError("another pre-tokenizer or decoder")
    vocab, merges = model.get("vocab"), model.get("merges")
    if not isinstance(vocab, dict) or not 0 < len(vocab) <= MAX_PIECES or not isinstance(merges, list):
        raise ValueError("no vocab and merges")
    ids = list(vocab.values())
    if not all(type(i) is int for i in ids) or sorted(ids) != list(range(len(ids))):
        raise ValueError("the ids must be 0 .. size - 1, each used once")
    if any(vocab.get(special) != i for i, special in enumerate(SPECIALS)):
        raise ValueError("the specials must be <pad> <unk> <bos> <eos> at ids 0-3")
    for number, merge in enumerate(merges, 1):
        parts = merge.split(" ") if isinstance(merge, str) else merge
        if not (isinstance(parts, list) and len(parts) == 2 and all(isinstance(p, str) for p in parts)
                and parts[0] in vocab and parts[1] in vocab and parts[0] + parts[1] in vocab):
            raise ValueError(f"merge {number} {str(merge)[:30]!r} does not join two known pieces into a known one")
    added = data.get("added_tokens")
    if not isinstance(added, list) or [(t.get("id"), t.get("content")) if isinstance(t, dict) else None
                                        for t in added] != list(enumerate(SPECIALS)):
        raise ValueError("the added tokens must be exactly the specials")


def _reference() -> tuple[dict, list[dict], dict]:
    """What train() writes besides the pieces: the BPE settings, the two pre-tokenizers, the decoder."""
    out = []
    for split in (False, True):
        tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
        tokenizer.pre_tokenizer = pre_tokenizer(split)
        tokenizer.decoder = decoders.Metaspace()
        out.append(json.loads(tokenizer.to_str()))
    settings = {k: v for k, v in out[0]["model"].items() if k not in ("vocab", "merges")}
    return settings, [d["pre_tokenizer"] for d in out], out[0]["decoder"]


REFERENCE_SETTINGS, REFERENCE_PRE_TOKENIZERS, REFERENCE_DECODER = _reference()
