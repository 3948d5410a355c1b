"""Sentence pairs as subword ids, and batches of similar length holding about --max_tokens target pieces.

Transformers are usually batched by tokens, not by sentences: a batch of short captions then holds
more sentences than a batch of long ones, and every step does about the same amount of work.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Iterator, Sequence

import torch

from stage4_transformer.data.subword import BOS_ID, EOS_ID, PAD_ID, SubwordVocab

Example = tuple[list[int], list[int]]


def encode_pairs(pairs: Sequence[tuple[str, str]], vocab: SubwordVocab, max_len: int = 0) -> list[Example]:
    """(source ids + <eos>, target ids + <eos>); pairs with a side longer than max_len pieces are dropped."""
    out = []
    for src, tgt in pairs:
        src_ids, tgt_ids = vocab.encode(src), vocab.encode(tgt)
        if max_len and (len(src_ids) > max_len or len(tgt_ids) > max_len):
            continue
        out.append((src_ids + [EOS_ID], tgt_ids + [EOS_ID]))
    return out


def pad(sequences: Sequence[Sequence[int]]) -> torch.Tensor:
    out = torch.full((len(sequences), max(len(s) for s in sequences)), PAD_ID, dtype=torch.long)
    for i, seq in enumerate(sequences):
        out[i, : len(seq)] = torch.tensor(seq, dtype=torch.long)
    return out


@dataclass
class Batch:
    src: torch.Tensor       # (B, S) source ids ending in <eos>, right-padded
    tgt_in: torch.Tensor    # (B, T) <bos> y_1 ... y_{T-1}: the decoder's input
    tgt_out: torch.Tensor   # (B, T) y_1 ... y_T (<eos>): the labels
    indices: list[int]

    def to(self, device: torch.device) -> "Batch":
        return Batch(self.src.to(device), self.tgt_in.to(device), self.tgt_out.to(device), self.indices)

    @property
    def target_tokens(self) -> int:
        return int((self.tgt_out != PAD_ID).sum())


def make_batch(examples: Sequence[Example], indices: list[int]) -> Batch:
    tgt = [examples[i][1] for i in indices]
    return Batch(pad([examples[i][0] for i in indices]), pad([[BOS_ID] + t[:-1] for t in tgt]), pad(tgt), indices)


def token_batches(examples: Sequence[Example], max_tokens: int, shuffle: bool, seed: int = 0, epoch: int = 0,
                  start: int = 0) -> Iterator[Batch]:
    """Batches of similar-length pairs, each padded to at most ~max_tokens target positions.

    Shuffled (training): shuffle (seeded by seed and epoch, so a resumed run sees the same order), sort
    by length inside windows of 100 batches' worth, cut, shuffle the batches. `start` skips batches.
    """
    order = list(range(len(examples)))
    key = lambda i: (len(examples[i][1]), len(examples[i][0]))  # noqa: E731
    rng = random.Random(seed * 100_003 + epoch)
    if shuffle:
        rng.shuffle(order)
        window = max(1, 100 * max_tokens // 16)
        order = [i for w in range(0, len(order), window) for i in sorted(order[w: w + window], key=key)]
    else:
        order.sort(key=key)
    chunks, current, longest = [], [], 0
    for i in order:
        longest_if_added = max(longest, len(examples[i][1]), len(examples[i][0]))
        if current and longest_if_added * (len(current) + 1) > max_tokens:
            chunks.append(current)
            current, longest_if_added = [], max(len(examples[i][1]), len(examples[i][0]))
        current.append(i)
        longest = longest_if_added
    if current:
        chunks.append(current)
    if shuffle:
        rng.shuffle(chunks)
    for chunk in chunks[start:]:
        yield make_batch(examples, chunk)


def count_batches(examples: Sequence[Example], max_tokens: int) -> int:
    return sum(1 for _ in token_batches(examples, max_tokens, shuffle=True))
