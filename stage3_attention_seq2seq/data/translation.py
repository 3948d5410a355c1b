"""Translation data: sentence pairs, a reversible word tokenizer, vocabularies, and length-bucketed batches.

Two English -> French corpora:
- multi30k: image captions (train 29,000 / val 1,014 / test_2016_flickr 1,000 pairs), the main task;
- tatoeba: 167k short everyday sentences (manythings.org's fra-eng), split here with a fixed seed,
  grouped by English sentence so that no source sentence is in two splits.

Tokens are words and punctuation marks. A mark written without a space before it carries a `##`
prefix ("homme." -> "homme", "##."), and a word ending in an apostrophe ("l'", "d'", "qu'") joins
the next word, so `detokenize(tokenize(s)) == s` for almost every sentence: BLEU is then computed
by sacrebleu on the model's detokenised output against the raw reference text, as it should be.
"""
from __future__ import annotations

import gzip
import os
import random
import re
import zipfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import torch

from scripts.common import (UserError, cache_dir, download, find_local_data, missing_data_error, read_json,
                            write_json)

PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<bos>", "<eos>"
SPECIALS = (PAD, UNK, BOS, EOS)
PAD_ID, UNK_ID, BOS_ID, EOS_ID = range(4)
GLUE = "##"
DATASETS = ("multi30k", "tatoeba")
SPLITS = ("train", "valid", "test")
MULTI30K_FILES = {"train": "train", "valid": "val", "test": "test_2016_flickr"}
MULTI30K_URL = "https://raw.githubusercontent.com/multi30k/dataset/master/data/task1/raw/{name}"
TATOEBA_URL = "https://www.manythings.org/anki/fra-eng.zip"   # today a newer, larger release than the
#                                                            2019 copy in shared/data: its split differs
TATOEBA_SPLIT_SEED = 1234          # the split never depends on --seed: every run sees the same test set
TATOEBA_HELD_OUT = 3000            # English sentences in valid and in test each

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
        return cls(list(SPECIALS) + [t for t, n in counts.most_common() if n >= min_freq], min_freq)

    def encode(self, tokens: Sequence[str]) -> list[int]:
        return [self.stoi.get(token, UNK_ID) for token in tokens]

    def decode(self, ids: Sequence[int]) -> list[str]:
        """Ids to tokens, stopping at <eos> and dropping <bos>/<pad>."""
        tokens = []
        for i in ids:
            if i == EOS_ID:
                break
            if i not in (PAD_ID, BOS_ID):
                tokens.append(self.itos[i])
        return tokens

    def to_dict(self) -> dict:
        return {"min_freq": self.min_freq, "itos": self.itos}

    @classmethod
    def from_dict(cls, data: dict) -> "Vocabulary":
        return cls(list(data["itos"]), int(data.get("min_freq", 1)))


def save_vocabularies(path: Path, src: Vocabulary, tgt: Vocabulary) -> None:
    write_json(path, {"tokenizer": "words and marks, '##' = glued to the previous token",
                      "source": src.to_dict(), "target": tgt.to_dict()})


def load_vocabularies(path: str | Path) -> tuple[Vocabulary, Vocabulary]:
    data = read_json(path, "vocabulary file")
    try:
        return Vocabulary.from_dict(data["source"]), Vocabulary.from_dict(data["target"])
    except (KeyError, TypeError):
        raise UserError(f"vocabulary file {path} lacks 'source'/'target' entries; "
                        "regenerate it with train.py") from None


# ----------------------------------------------------------------------------- corpora
Pairs = list[tuple[str, str]]


def split_lines(text: str) -> list[str]:
    """Lines split at "\n" only (str.splitlines would also split at \x0c, \x85, \u2028 ...: line i must stay line i)."""
    lines = text.split("\n")
    return lines[:-1] if lines and lines[-1] == "" else lines


def _read_lines(path: Path) -> list[str]:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8", newline="\n") as f:
            return split_lines(f.read())
    except (OSError, UnicodeDecodeError, EOFError) as err:
        raise UserError(f"cannot read {path} ({err}); is it a UTF-8 (gzip) text file?") from None


def read_parallel(src_path: Path, tgt_path: Path) -> Pairs:
    """Two line-aligned files -> pairs; different line counts or an empty line is an error naming the file."""
    src, tgt = _read_lines(src_path), _read_lines(tgt_path)
    if not src:
        raise UserError(f"{src_path} is empty; it must hold one sentence per line")
    if len(src) != len(tgt):
        raise UserError(f"{src_path} has {len(src):,} lines but {tgt_path} has {len(tgt):,}: "
                        "the files must be line-aligned (line i translates line i)")
    for path, lines in ((src_path, src), (tgt_path, tgt)):
        for number, line in enumerate(lines, 1):
            if not line.strip():
                raise UserError(f"{path}, line {number}: empty sentence; every line must hold one")
    return list(zip(src, tgt))


def load_multi30k(data_dir: str | None, split: str) -> Pairs:
    names = [f"{MULTI30K_FILES[split]}.{lang}.gz" for lang in ("en", "fr")]
    folder = find_local_data("multi30k", names, data_dir)
    if folder is None:
        folder = cache_dir("multi30k")
        try:
            for name in names:
                download(MULTI30K_URL.format(name=name), folder / name)
        except Exception as err:  # noqa: BLE001 - any network failure ends in the same one-line message
            raise missing_data_error("multi30k", names, data_dir, str(err)) from None
    return read_parallel(folder / names[0], folder / names[1])


def read_tatoeba(path: Path) -> Pairs:
    """`english<TAB>french[<TAB>attribution]` lines; a malformed one names its line."""
    pairs = []
    for number, line in enumerate(_read_lines(path), 1):
        fields = line.split("\t")
        if len(fields) < 2 or not fields[0].strip() or not fields[1].strip():
            raise UserError(f"{path}, line {number}: expected 'english<TAB>french', got {line[:60]!r}")
        pairs.append((fields[0], fields[1]))
    return pairs


def load_tatoeba(data_dir: str | None, split: str) -> Pairs:
    folder = find_local_data("fra_eng_tatoeba", ["fra.txt.gz"], data_dir)
    if folder is not None:
        pairs = read_tatoeba(folder / "fra.txt.gz")
    else:
        cached = cache_dir("fra_eng_tatoeba") / "fra.txt"
        try:
            if not cached.is_file():
                archive = download(TATOEBA_URL, cached.with_name("fra-eng.zip"))
                with zipfile.ZipFile(archive) as z:
                    tmp = cached.with_name(f".fra.txt.tmp{os.getpid()}")
                    tmp.write_bytes(z.read("fra.txt"))
                    os.replace(tmp, cached)       # atomic: an interrupted unzip never looks finished
        except Exception as err:  # noqa: BLE001
            raise missing_data_error("fra_eng_tatoeba", ["fra.txt.gz"], data_dir, str(err)) from None
        pairs = read_tatoeba(cached)
    return split_by_source(pairs)[split]


def split_by_source(pairs: Pairs, held_out: int = TATOEBA_HELD_OUT,
                    seed: int = TATOEBA_SPLIT_SEED) -> dict[str, Pairs]:
    """A fixed-seed split by English sentence: all translations of one sentence land in one split."""
    sources = sorted({src for src, _ in pairs})
    random.Random(seed).shuffle(sources)
    held_out = min(held_out, len(sources) // 4)
    where = {src: "valid" for src in sources[:held_out]}
    where.update({src: "test" for src in sources[held_out: 2 * held_out]})
    out: dict[str, Pairs] = {split: [] for split in SPLITS}
    for pair in pairs:
        out[where.get(pair[0], "train")].append(pair)
    return out


def load_pairs(dataset: str, split: str, data_dir: str | None) -> Pairs:
    """Raw (english, french) sentence pairs of one split."""
    if dataset not in DATASETS:
        raise UserError(f"unknown dataset {dataset!r}; choose one of {', '.join(DATASETS)}")
    if split not in SPLITS:
        raise UserError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    return load_multi30k(data_dir, split) if dataset == "multi30k" else load_tatoeba(data_dir, split)


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
