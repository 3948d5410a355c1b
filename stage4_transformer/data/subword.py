"""A joint English-French subword vocabulary (BPE), trained on the training split with Hugging Face
`tokenizers` (stage 5 writes BPE from scratch; here the subject is the Transformer).

Words are split into pieces the vocabulary knows, so a new word needs no <unk>: "skateboarders" may
become "▁skate", "board", "ers" (only a character never seen in training is <unk>). A piece that
starts a word carries "▁" (the space before it, SentencePiece's convention), so decoding is exact
for known characters: decode(encode(s)) == " ".join(s.split()).
One vocabulary for both languages lets the model share one embedding matrix for source, target and
output (they share many names, numbers and cognates).

`SubwordVocab.segment` writes BPE out for one word, which BPE-dropout (data/batches.py) needs: with
probability p each possible merge is skipped, so a word comes out in smaller pieces now and then.
"""
from __future__ import annotations

import json
import random
from typing import Iterable, Sequence

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

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
        self._ranks: dict[tuple[str, str], int] | None = None

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int = 8000, min_frequency: int = 2,
              split_punctuation: bool = False, join_elisions: bool = False) -> "SubwordVocab":
        """split_punctuation: each punctuation mark becomes a word of its own before BPE ("▁neige." -> "▁neige",
        "."; "▁l'herbe" -> "▁l", "'", "herbe"), so no merge is spent on a word glued to its comma or full stop.
        join_elisions (with split_punctuation): an apostrophe stays on the word before it ("▁l'", "herbe"), as
        in stage 3's tokenizer, and a mark is any character that is neither a letter, a digit nor a space.
        Decoding stays exact: only a piece that starts with "▁" had a space before it."""
        tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
        tokenizer.pre_tokenizer = pre_tokenizer(split_punctuation, join_elisions)
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

    def merge_ranks(self) -> dict[tuple[str, str], int]:
        """(left, right) -> its rank in the learned merges: the lower, the earlier BPE applies it."""
        if self._ranks is None:
            merges = json.loads(self.tokenizer.to_str())["model"]["merges"]
            pairs = (tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in merges)
            self._ranks = {pair: rank for rank, pair in enumerate(pairs)}
        return self._ranks

    def segment(self, word: str, dropout: float = 0.0, rng: random.Random | None = None) -> list[str]:
        """BPE on one "▁"-marked word: start from its characters and merge the adjacent pair of lowest rank
        until no pair can be merged. With dropout p (BPE-dropout, Provilkov et al. 2020) each candidate pair
        is skipped with probability p at each step, so the same word may come out in smaller pieces, each of
        which is still in the vocabulary. With p = 0 this gives what `pieces` gives."""
        ranks, symbols = self.merge_ranks(), list(word)
        while len(symbols) > 1:
            best, best_rank = -1, len(ranks)
            for i in range(len(symbols) - 1):
                rank = ranks.get((symbols[i], symbols[i + 1]), best_rank)
                if rank < best_rank and not (dropout and rng.random() < dropout):
                    best, best_rank = i, rank
            if best < 0:
                break
            symbols[best: best + 2] = [symbols[best] + symbols[best + 1]]
        return symbols

    def piece_ids(self, pieces: Sequence[str]) -> list[int]:
        ids = (self.tokenizer.token_to_id(piece) for piece in pieces)
        return [UNK_ID if i is None else i for i in ids]          # a character never seen in training

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


def pre_tokenizer(split_punctuation: bool, join_elisions: bool) -> pre_tokenizers.PreTokenizer:
    """How text is cut into the words BPE merges within: at spaces ("▁" marks one), then maybe at marks."""
    if join_elisions and not split_punctuation:
        raise UserError("--join_elisions 1 needs --split_punctuation 1")
    if not split_punctuation:
        return pre_tokenizers.Metaspace()
    if not join_elisions:
        return pre_tokenizers.Sequence([pre_tokenizers.Metaspace(), pre_tokenizers.Punctuation()])
    return pre_tokenizers.Sequence([pre_tokenizers.Metaspace(),
                                    pre_tokenizers.Split(Regex("['’]"), behavior="merged_with_previous"),
                                    pre_tokenizers.Split(Regex(r"[^\w\s'’▁]"), behavior="isolated")])


def normalize(text: str) -> str:
    """Runs of whitespace (tabs, no-break spaces, ...) become one space; no leading/trailing space."""
    return " ".join(text.split())
