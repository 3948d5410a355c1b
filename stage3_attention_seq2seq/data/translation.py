"""Translation data for stage 3: a reversible word tokenizer, vocabularies, and length-bucketed batches.

The two English -> French corpora (multi30k, the main task, and tatoeba) are read by
`scripts/translation_data.py`, which every translating stage shares; `load_pairs` is re-exported here.

Tokens are words and punctuation marks. A mark written without a space before it carries a `##`
prefix ("homme." -> "homme", "##."), and a word ending in an apostrophe ("l'", "d'", "qu'") joins
the next word, so `detokenize(tokenize(s)) == " ".join(s.split())` on every line of both corpora:
BLEU is then computed by sacrebleu on the model's detokenised output against the raw reference text.
"""
from __future__ import annotations

import random
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch

from scripts.common import UserError, read_json, write_json
from scripts.translation_data import DATASETS, SPLITS, Pairs, load_pairs, split_lines  # noqa: F401 (re-exported)

PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<bos>", "<eos>"
SPECIALS = (PAD, UNK, BOS, EOS)
PAD_ID, UNK_ID, BOS_ID, EOS_ID = range(4)
GLUE = "##"
MIN_TOKENS, MAX_TOKENS = 5, 1 << 20        # a vocabulary holds the specials and some words (models/seq2seq.py's limits)
MAX_TOKEN_CHARS = 1000                      # a word of the corpora has at most a few dozen characters
# an elided word ("l'", "qu'": letters, then an apostrophe right before another word), a word, or one mark
_TOKEN = re.compile(r"\w+['’](?=\w)|\w+|[^\w\s]")


# ----------------------------------------------------------------------------- tokenizer
def tokenize(text: str) -> list[str]:
    """Words and marks; a token glued to the one before it (no space between) gets the `##` prefix,
    except after an elision ("l'eau" -> "l'", "eau"), which always joins."""
    tokens: list[str] = []
    end = -1
    for match in _TOKEN.finditer(text):
        token = match.group()
        glued = match.start() == end and not is_elision(tokens[-1])
        tokens.append(GLUE + token if glued else token)
        end = match.end()
    return tokens


def strip_glue(token: str) -> str:
    return token[len(GLUE):] if token.startswith(GLUE) else token


def is_elision(token: str) -> bool:
    """"l'", "qu'": a word ending in an apostrophe; the next word always follows it without a space."""
    return len(token) > 1 and token[-1] in "'’" and not token.startswith(GLUE)


def detokenize(tokens: Sequence[str]) -> str:
    """The inverse of `tokenize`: a space between tokens unless the second is glued or follows an elision."""
    out: list[str] = []
    for token in tokens:
        if token in SPECIALS:
            continue
        if token.startswith(GLUE) and len(token) > len(GLUE):
            out.append(strip_glue(token))
        elif out and is_elision(out[-1]):
            out.append(token)
        else:
            out.append((" " if out else "") + token)
    return "".join(out)


# ----------------------------------------------------------------------------- vocabulary
@dataclass
class Vocabulary:
    """Token <-> id for one language, specials first (<pad>=0, <unk>=1, <bos>=2, <eos>=3); JSON on disk."""

    itos: list[str]
    min_freq: int = 1

    def __post_init__(self) -> None:
        if list(self.itos[:4]) != list(SPECIALS):
            raise UserError(f"vocabulary must start with {list(SPECIALS)}, got {self.itos[:4]}")
        self.stoi = {token: i for i, token in enumerate(self.itos)}

    def __len__(self) -> int:
        return len(self.itos)

    @classmethod
    def build(cls, sentences: Sequence[list[str]], min_freq: int = 2) -> "Vocabulary":
        """Tokens seen at least `min_freq` times, most frequent first (ties in first-seen order)."""
        counts = Counter(token for sentence in sentences for token in sentence)
        # a "word" of thousands of letters (a damaged line) stays <unk>; so do the rarest words beyond MAX_TOKENS
        words = [t for t, n in counts.most_common() if n >= min_freq and len(t) <= MAX_TOKEN_CHARS]
        return cls(list(SPECIALS) + words[: MAX_TOKENS - len(SPECIALS)], min_freq)

    def encode(self, tokens: Sequence[str]) -> list[int]:
        return [self.stoi.get(token, UNK_ID) for token in tokens]

    def decode(self, ids: Sequence[int]) -> list[str]:
        """Ids to tokens, stopping at <eos> and dropping <bos>/<pad>; an id the vocabulary lacks reads as <unk>."""
        tokens = []
        for i in ids:
            if i == EOS_ID:
                break
            if i not in (PAD_ID, BOS_ID):
                tokens.append(self.itos[i] if 0 <= i < len(self.itos) else UNK)
        return tokens

    def to_dict(self) -> dict:
        return {"min_freq": self.min_freq, "itos": self.itos}

    @classmethod
    def from_dict(cls, data: Any, where: str = "vocabulary") -> "Vocabulary":
        """A vocabulary saved by `to_dict` (in a checkpoint or a .vocab.json file), after checking what a hand edit
        or another program could have broken: `where` names it in the one-line error ("ckpt.pt: source vocabulary")."""
        def bad(reason: str) -> UserError:
            return UserError(f"{where} {reason}; retrain the model (or restore the file) to get a whole one")

        if not isinstance(data, dict) or not isinstance(data.get("itos"), list):
            raise bad("is not a dict with an 'itos' list of tokens")
        itos, min_freq = data["itos"], data.get("min_freq", 1)
        if not MIN_TOKENS <= len(itos) <= MAX_TOKENS:
            raise bad(f"has {len(itos):,} entries; it needs between {MIN_TOKENS} and {MAX_TOKENS:,}")
        if list(itos[:4]) != list(SPECIALS):
            raise bad(f"must start with {list(SPECIALS)}, got {str(itos[:4])[:80]}")
        for i, token in enumerate(itos):
            if not isinstance(token, str) or not 0 < len(token) <= MAX_TOKEN_CHARS or not is_utf8(token):
                raise bad(f"entry {i} is not a token (a non-empty UTF-8 string of at most {MAX_TOKEN_CHARS} "
                          f"characters): {str(token)[:40]!r}")
        seen: dict[str, int] = {}
        for i, token in enumerate(itos):
            if token in seen:
                raise bad(f"holds {token[:40]!r} twice (entries {seen[token]} and {i})")
            seen[token] = i
        if isinstance(min_freq, bool) or not isinstance(min_freq, int) or min_freq < 1:
            raise bad(f"has min_freq {str(min_freq)[:40]!r}; it must be an integer >= 1")
        return cls(list(itos), min_freq)


def is_utf8(text: str) -> bool:
    """False for a string holding lone surrogates (bytes that were not UTF-8): it could not be written to JSON."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def save_vocabularies(path: Path, src: Vocabulary, tgt: Vocabulary) -> None:
    write_json(path, {"tokenizer": "words and marks, '##' = glued to the previous token",
                      "source": src.to_dict(), "target": tgt.to_dict()})


def load_vocabularies(path: str | Path) -> tuple[Vocabulary, Vocabulary]:
    """The two vocabularies of a `.vocab.json` file train.py wrote beside its checkpoint, checked."""
    data = read_json(path, "vocabulary file")
    if not isinstance(data, dict) or "source" not in data or "target" not in data:
        raise UserError(f"vocabulary file {path} lacks 'source'/'target' entries; regenerate it with train.py")
    return (Vocabulary.from_dict(data["source"], f"vocabulary file {path}: source"),
            Vocabulary.from_dict(data["target"], f"vocabulary file {path}: target"))


# ----------------------------------------------------------------------------- tensors and batches
def encode_pairs(pairs: Pairs, src_vocab: Vocabulary, tgt_vocab: Vocabulary,
                 max_len: int = 0) -> list[tuple[list[int], list[int]]]:
    """Token ids: source + <eos>, target + <eos>; pairs with a side longer than `max_len` tokens are dropped."""
    out = []
    for src, tgt in pairs:
        src_ids, tgt_ids = src_vocab.encode(tokenize(src)), tgt_vocab.encode(tokenize(tgt))
        if max_len and (len(src_ids) > max_len or len(tgt_ids) > max_len):
            continue
        out.append((src_ids + [EOS_ID], tgt_ids + [EOS_ID]))
    return out


def pad(sequences: Sequence[Sequence[int]]) -> torch.Tensor:
    """(B, T_max) LongTensor, right-padded with <pad>=0."""
    out = torch.full((len(sequences), max(len(s) for s in sequences)), PAD_ID, dtype=torch.long)
    for i, seq in enumerate(sequences):
        out[i, : len(seq)] = torch.tensor(seq, dtype=torch.long)
    return out


@dataclass
class Batch:
    src: torch.Tensor        # (B, S) source ids, <eos>-terminated, right-padded
    src_lengths: torch.Tensor  # (B,)
    tgt: torch.Tensor        # (B, T) target ids, <eos>-terminated, right-padded (the labels)
    indices: list[int]       # positions of these pairs in the encoded list

    @property
    def src_mask(self) -> torch.Tensor:
        return self.src != PAD_ID                                              # (B, S) True on real tokens

    def to(self, device: torch.device) -> "Batch":
        return Batch(self.src.to(device), self.src_lengths.to(device), self.tgt.to(device), self.indices)


def make_batch(examples: Sequence[tuple[list[int], list[int]]], indices: list[int]) -> Batch:
    srcs = [examples[i][0] for i in indices]
    return Batch(pad(srcs), torch.tensor([len(s) for s in srcs]), pad([examples[i][1] for i in indices]), indices)


def bucketed_batches(examples: Sequence[tuple[list[int], list[int]]], batch_size: int, shuffle: bool,
                     seed: int = 0, epoch: int = 0, start: int = 0) -> Iterator[Batch]:
    """Batches of pairs of similar length, so little compute is spent on padding.

    Shuffled: the pairs are shuffled (seeded by seed and epoch: a resumed run sees the same order),
    sorted by length inside windows of 50 batches, cut into batches, and the batches shuffled.
    Not shuffled (evaluation): sorted by source length; `Batch.indices` maps back to the input order.
    `start` skips the first batches (resuming in the middle of an epoch).
    """
    order = list(range(len(examples)))
    key = lambda i: (len(examples[i][0]), len(examples[i][1]))  # noqa: E731
    if shuffle:
        rng = random.Random(seed * 100_003 + epoch)
        rng.shuffle(order)
        window = batch_size * 50
        order = [i for w in range(0, len(order), window) for i in sorted(order[w: w + window], key=key)]
        chunks = [order[i: i + batch_size] for i in range(0, len(order), batch_size)]
        rng.shuffle(chunks)
    else:
        order.sort(key=key)
        chunks = [order[i: i + batch_size] for i in range(0, len(order), batch_size)]
    for chunk in chunks[start:]:
        yield make_batch(examples, chunk)


def num_batches(n_examples: int, batch_size: int) -> int:
    return (n_examples + batch_size - 1) // batch_size
