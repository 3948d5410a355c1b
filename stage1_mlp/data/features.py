"""From text to a bag of n-gram ids: tokenizer, vocabulary, hashed n-grams, batches.

A document becomes the *set* of its features:
- every word, by its id in the vocabulary (rare words map to `<unk>`);
- every word bigram and trigram, hashed into one of `buckets` extra rows, as fastText does, so the
  table does not grow with the (huge) number of distinct n-grams. Two n-grams may share a bucket
  (IMDb has millions of distinct n-grams); most of them are rare, so a shared row costs little.
  N-grams are hashed from word ids, so inside an n-gram every out-of-vocabulary word is `<unk>`.

The model averages the embeddings of these ids (see `models/`), so word order survives only inside
an n-gram: "not good" is one feature, but the document as a whole is an unordered bag.
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from scripts.common import UserError, read_json, write_json

TOKEN_PATTERN = r"[a-z0-9]+(?:'[a-z]+)?|[!?]"
_TOKEN_RE = re.compile(TOKEN_PATTERN)
TOKENIZER = {"token_pattern": TOKEN_PATTERN, "lowercase": True}   # how `tokenize` works, saved with each vocabulary
_HASH_MULTIPLIER = np.uint64(116049371)  # the multiplier fastText uses to hash word n-grams
UNK = "<unk>"
FORMAT = "stage1-ngram-featurizer-v1"
MAX_NGRAMS = 5          # fastText's longest word n-grams; longer ones are almost all seen once
MAX_BUCKETS = 2 ** 24   # 16.8M rows of n-grams, 8x the default: more only costs memory
MAX_WORDS = 2 ** 22     # IMDb has ~100k distinct words; a vocabulary far beyond that is not one of ours


def tokenize(text: str) -> list[str]:
    """Lower-case words (keeping inner apostrophes: "don't") plus '!' and '?', which carry sentiment.

    HTML line breaks (`<br />`, frequent in IMDb) are removed first.
    """
    return _TOKEN_RE.findall(text.replace("<br />", " ").lower())


@dataclass
class Featurizer:
    """Vocabulary plus n-gram hashing settings; saved as readable JSON next to each checkpoint."""

    itos: list[str]
    ngrams: int = 3
    buckets: int = 2_000_000

    def __post_init__(self) -> None:
        self.stoi = {word: i for i, word in enumerate(self.itos)}

    @property
    def num_words(self) -> int:
        return len(self.itos)

    @property
    def num_features(self) -> int:
        """Rows of the embedding table: words first, then the hash buckets."""
        return len(self.itos) + (self.buckets if self.ngrams > 1 else 0)

    @classmethod
    def build(cls, texts: list[list[str]], min_freq: int = 2, ngrams: int = 3,
              buckets: int = 2_000_000) -> "Featurizer":
        """Keep words seen at least `min_freq` times, most frequent first (ties alphabetical)."""
        counts = Counter(word for tokens in texts for word in tokens)
        words = sorted((w for w, c in counts.items() if c >= min_freq), key=lambda w: (-counts[w], w))
        return cls([UNK, *words], ngrams=ngrams, buckets=buckets)

    def word_ids(self, tokens: list[str]) -> np.ndarray:
        return np.array([self.stoi.get(t, 0) for t in tokens], dtype=np.int64)

    def features(self, tokens: list[str]) -> np.ndarray:
        """Sorted unique feature ids of one document (a binary bag of n-grams)."""
        ids = self.word_ids(tokens)
        parts = [ids]
        for n in range(2, self.ngrams + 1):
            if len(ids) < n:
                break
            # h = ((n * M + w1) * M + w2) * M + ... modulo 2**64, then folded into the buckets
            h = np.full(len(ids) - n + 1, n, dtype=np.uint64)
            for k in range(n):
                h = h * _HASH_MULTIPLIER + ids[k:len(ids) - n + 1 + k].astype(np.uint64)
            parts.append(len(self.itos) + (h % np.uint64(self.buckets)).astype(np.int64))
        return np.unique(np.concatenate(parts))

    # -- JSON, never pickle
    def to_dict(self) -> dict:
        return {"format": FORMAT, **TOKENIZER, "ngrams": self.ngrams, "buckets": self.buckets, "itos": self.itos}

    def save(self, path: Path) -> None:
        write_json(path, self.to_dict())

    @classmethod
    def from_dict(cls, obj: dict, where: str = "vocabulary") -> "Featurizer":
        """The featurizer a checkpoint or vocab.json saved, after checking every field: a file edited by hand or
        written by another program is refused in one line naming `where`."""
        if not isinstance(obj, dict) or obj.get("format") != FORMAT:
            raise UserError(f"{where} is not a stage 1 vocabulary (no 'format': '{FORMAT}')")

        def bad(reason: str) -> UserError:
            return UserError(f"{where}: the stage 1 vocabulary is damaged ({reason}); retrain the model")

        # the words were cut out of text by this tokenizer: another pattern or case would give other words, and the
        # model would silently see mostly <unk>. The saved values are compared, never used.
        made_with = {"token_pattern": obj.get("token_pattern"), "lowercase": obj.get("lowercase")}
        if made_with != TOKENIZER or type(made_with["lowercase"]) is not bool:   # 1 == True, but it is not one of ours
            shown = ", ".join(f"{key} {str(value)[:40]!r}" for key, value in made_with.items())
            raise UserError(f"{where}: its vocabulary was made by another tokenizer ({shown}; this version's is "
                            f"token_pattern {TOKEN_PATTERN!r}, lowercase True); retrain the model")
        itos, ngrams, buckets = obj.get("itos"), obj.get("ngrams"), obj.get("buckets")
        if not isinstance(itos, list) or not 1 <= len(itos) <= MAX_WORDS:
            raise bad(f"'itos' must be a list of 1 to {MAX_WORDS:,} words")
        if itos[0] != UNK or not all(isinstance(word, str) for word in itos):
            raise bad(f"'itos' must be words (strings), the first one {UNK!r}")
        if len(set(itos)) != len(itos):
            raise bad("a word appears twice in 'itos'")
        for name, value, most in (("ngrams", ngrams, MAX_NGRAMS), ("buckets", buckets, MAX_BUCKETS)):
            if type(value) is not int or not 1 <= value <= most:
                raise bad(f"'{name}' = {str(value)[:20]!r} is not an integer in 1..{most:,}")
        return cls(list(itos), ngrams=ngrams, buckets=buckets)

    @classmethod
    def load(cls, path: Path) -> "Featurizer":
        return cls.from_dict(read_json(path, "vocabulary"), str(path))


@dataclass
class FeatureSet:
    """Documents as one flat id array plus offsets (CSR layout), the input `EmbeddingBag` wants."""

    ids: torch.Tensor      # (total features,) int64
    offsets: torch.Tensor  # (N + 1,) int64: document i is ids[offsets[i]:offsets[i+1]]
    labels: torch.Tensor   # (N,) int64

    def __len__(self) -> int:
        return len(self.labels)

    @classmethod
    def from_texts(cls, featurizer: Featurizer, texts: list[str] | list[list[str]], labels: list[int]) -> "FeatureSet":
        docs = [featurizer.features(t if isinstance(t, list) else tokenize(t)) for t in texts]
        lengths = torch.tensor([len(d) for d in docs], dtype=torch.int64)
        offsets = torch.zeros(len(docs) + 1, dtype=torch.int64)
        torch.cumsum(lengths, 0, out=offsets[1:])
        ids = torch.from_numpy(np.concatenate(docs)) if docs else torch.zeros(0, dtype=torch.int64)
        return cls(ids, offsets, torch.tensor(labels, dtype=torch.int64))

    def batch(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(ids, offsets, labels) for the documents in `index`; offsets are bag starts, as EmbeddingBag wants."""
        starts, ends = self.offsets[index], self.offsets[index + 1]
        ids = torch.cat([self.ids[s:e] for s, e in zip(starts.tolist(), ends.tolist())])
        lengths = ends - starts
        bag_starts = torch.zeros_like(lengths)
        torch.cumsum(lengths[:-1], 0, out=bag_starts[1:])
        return ids, bag_starts, self.labels[index]

    def batches(self, batch_size: int, order: torch.Tensor | None = None,
                start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Batches in `order` (default: as stored), skipping the first `start` batches (for resume)."""
        order = torch.arange(len(self)) if order is None else order
        for i in range(start * batch_size, len(order), batch_size):
            yield self.batch(order[i:i + batch_size])
