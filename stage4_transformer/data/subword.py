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
    def from_json(cls, text: str) -> "SubwordVocab":
        try:
            return cls(Tokenizer.from_str(text))
        except Exception as err:  # noqa: BLE001 - the library raises its own exception types
            raise UserError(f"not a subword vocabulary ({str(err).splitlines()[0][:100]}); retrain it") from None


def pre_tokenizer(split_punctuation: bool) -> pre_tokenizers.PreTokenizer:
    """How text is cut into the words BPE merges within: at spaces ("▁" marks one), then maybe at marks."""
    if not split_punctuation:
        return pre_tokenizers.Metaspace()
    return pre_tokenizers.Sequence([pre_tokenizers.Metaspace(), pre_tokenizers.Punctuation()])


def normalize(text: str) -> str:
    """Runs of whitespace (tabs, no-break spaces, ...) become one space; no leading/trailing space."""
    return " ".join(text.split())
