"""Pretraining text, tokenised once into memory-mapped arrays of token ids, and random training windows.

- `shakespeare`: tiny Shakespeare (1.1 MB), first 90% train and last 10% validation (as nanoGPT splits it);
- `gutenberg`: 105 English books for training, 6 other books for validation (about 70 MB),
  the books separated by the special token `<|endoftext|>`;
- `imdb`: the text of the IMDb training reviews without their labels, each followed by `<|endoftext|>`, split
  as fine-tuning splits them (the same 90/10 train/validation reviews); the test reviews are never read. It is
  for *continued* pretraining (`train.py --init_from <checkpoint> --dataset imdb`): a base model reads the
  kind of text it will later classify before it sees a single label.

`prepare` tokenises a split once and writes `train.bin` / `val.bin` (uint16 ids, or uint32 for a
vocabulary over 65,536) beside the tokenizer's JSON in a cache folder. Training then reads random
windows straight from the memory map: a corpus of any size costs no RAM, and a second run starts at once.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import re
import time
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import torch

from scripts.classification_data import load_split, train_val_split
from scripts.common import (UserError, cache_dir, data_candidates, download, file_sha256, find_local_data,
                            missing_data_error, read_json, read_text, write_json)
from stage5_gpt.data.bpe import ByteLevelBPE, CharTokenizer, load_tokenizer

STAGE_DIR = Path(__file__).resolve().parents[1]
DATA_CACHE = STAGE_DIR / "data_cache"
EOT = "<|endoftext|>"
# downloads are pinned to one commit and verified against a checksum: a changed or damaged file is refused, never
# trained on (the shared copies in ../shared/data were made from exactly these files)
SHAKESPEARE_URL = ("https://raw.githubusercontent.com/karpathy/char-rnn/6f9487a6fe5b420b7ca9afb0d7c078e37c1d1b4e/"
                   "data/tinyshakespeare/input.txt")
SHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
# the books of gutenberg_en, as kept in a course repository's test data (gutenberg_en/MANIFEST.md): raw Project
# Gutenberg files, each cleaned here and checked against the sha256 of its cleaned text in the shared copy
GUTENBERG_URL = "https://raw.githubusercontent.com/RU-ECE/ECE451-Parallel/c58dca3a6abedd8041057571c247e9a393cc3b4d/{path}"
GUTENBERG_BOOKS = Path(__file__).resolve().parent / "gutenberg_books.json"   # the 111 books: number, title, split,
#                                                                               source_path, sha256 of the clean text
PG_START = re.compile(r"^\*\*\* ?START OF (THE|THIS) PROJECT GUTENBERG EBOOK.*$", re.M | re.I)
PG_END = re.compile(r"^(\*\*\* ?END OF (THE|THIS) PROJECT GUTENBERG|End of (the )?Project Gutenberg|"
                    r"The Project Gutenberg Etext of)", re.M | re.I)
DATASETS = {"shakespeare": ("tiny_shakespeare", ["input.txt"]),
            "gutenberg": ("gutenberg_en", ["train.txt.gz", "valid.txt.gz"]),
            "imdb": ("imdb", ["train.jsonl.gz"])}
# the fixed 90/10 train/validation split of a labelled training set, as in stages 1, 2 and 4; fine-tuning
# (data/tasks.py) uses the same one, so continued pretraining on IMDb text never reads a validation review
VAL_FRACTION, SPLIT_SEED = 0.1, 0


def _read(path: Path) -> str:
    """A data file's text; a damaged gzip, bytes that are not UTF-8 (named with their line) or an unreadable file
    end in one line naming it."""
    return read_text(path, "data file")


def clean_gutenberg(raw: str) -> str:
    """One book's text without Project Gutenberg's header and licence: between the START and END lines,
    NFC-normalised, LF line ends, no leading or trailing blank lines (the recipe of gutenberg_en/MANIFEST.md)."""
    text = unicodedata.normalize("NFC", raw.lstrip("\ufeff").replace("\r\n", "\n").replace("\r", "\n"))
    start = PG_START.search(text)
    if start:
        text = text[start.end():]
    end = PG_END.search(text)
    if end:
        text = text[: end.start()]
    return text.strip("\n") + "\n"


def download_gutenberg(folder: Path) -> Path:
    """Rebuild gutenberg_en/{train,valid}.txt.gz from the pinned source files: every book of GUTENBERG_BOOKS,
    cleaned, checked against its pinned sha256, in Gutenberg-number order, each followed by a line <|endoftext|>.
    The result is the shared copy byte for byte, or a ValueError naming the book that differs."""
    books = json.loads(GUTENBERG_BOOKS.read_text(encoding="utf-8"))
    for split, name in (("train", "train.txt.gz"), ("valid", "valid.txt.gz")):
        if (folder / name).is_file():
            continue
        parts = []
        for book in sorted((b for b in books if b["split"] == split), key=lambda b: b["pg_id"]):
            parts.append(gutenberg_book(book, folder / "books") + "\n" + EOT + "\n")
        tmp = folder / f".{name}.part"
        with gzip.open(tmp, "wt", encoding="utf-8") as f:
            f.write("".join(parts))
        tmp.replace(folder / name)
    return folder


def gutenberg_book(book: dict, folder: Path) -> str:
    """One book's cleaned text, downloaded into `folder` and verified: a text whose sha256 differs from the pinned
    one is refused (and its download deleted, so the next try fetches it again)."""
    raw = download(GUTENBERG_URL.format(path=book["source_path"]), folder / Path(book["source_path"]).name)
    text = clean_gutenberg(raw.read_bytes().decode("utf-8", errors="replace"))
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    if digest != book["sha256"]:
        raw.unlink()
        raise ValueError(f"book #{book['pg_id']} ({book['source_path']}) cleans to sha256 {digest[:16]}..., "
                         f"expected {book['sha256'][:16]}... (changed upstream or damaged in transit)")
    return text


def load_text(dataset: str, data_dir: str | None) -> dict[str, str]:
    """{"train": text, "val": text}."""
    if dataset not in DATASETS:
        raise UserError(f"unknown dataset {dataset!r}; choose one of {sorted(DATASETS)}")
    name, files = DATASETS[dataset]
    if dataset == "imdb":
        return imdb_text(data_dir)
    folder = find_local_data(name, files, data_dir)
    if dataset == "shakespeare":
        if folder is None:
            try:
                folder = download(SHAKESPEARE_URL, cache_dir(name) / "input.txt", sha256=SHAKESPEARE_SHA256).parent
            except Exception as err:  # noqa: BLE001 - any network failure means "no copy"
                raise missing_data_error(name, files, data_dir, str(err)) from None
        text = _read(folder / "input.txt")
        cut = int(0.9 * len(text))
        splits = {"train": text[:cut], "val": text[cut:]}
    else:
        if folder is None:
            try:
                folder = download_gutenberg(cache_dir(name))
            except Exception as err:  # noqa: BLE001 - any network failure means "no copy"
                raise missing_data_error(name, files, data_dir, str(err)) from None
        splits = {"train": _read(folder / "train.txt.gz"), "val": _read(folder / "valid.txt.gz")}
    for split, text in splits.items():
        if len(text) < 1000:
            raise UserError(f"{dataset} {split} split holds only {len(text)} characters; is the file truncated?")
    return splits


def imdb_text(data_dir: str | None) -> dict[str, str]:
    """The IMDb training reviews' text, no labels, each review followed by <|endoftext|>: the 90/10
    train/validation split fine-tuning uses. The test reviews are never read."""
    reviews = load_split("imdb", "train", data_dir).texts
    train_idx, val_idx = train_val_split(len(reviews), VAL_FRACTION, SPLIT_SEED)
    return {split: "".join(reviews[i] + EOT for i in indices.tolist())
            for split, indices in (("train", train_idx), ("val", val_idx))}


def train_tokenizer(kind: str, splits: dict[str, str], vocab_size: int = 0,
                    max_chars: int = 0) -> CharTokenizer | ByteLevelBPE:
    """A character vocabulary of the whole text (both splits, as nanoGPT does: only the set of characters,
    so a validation character unseen in training cannot break encoding), or a byte-level BPE trained on the
    first `max_chars` of the training text (bytes cover any character, so it never needs the other split)."""
    if kind == "char":
        return CharTokenizer.train(splits["train"] + splits["val"])
    if kind == "bpe":
        text = splits["train"]
        return ByteLevelBPE.train(text[:max_chars] if max_chars else text, vocab_size, special_tokens=(EOT,))
    raise UserError(f"unknown tokenizer {kind!r}; choose char or bpe")


@dataclass
class TokenData:
    """The token ids of both splits (memory-mapped) and the tokenizer that made them."""

    train: np.ndarray
    val: np.ndarray
    tokenizer: CharTokenizer | ByteLevelBPE
    folder: Path


def ids_dtype(vocab_size: int) -> type:
    """The smallest unsigned integer type that holds every token id."""
    return np.uint16 if vocab_size <= 65536 else np.uint32


def _write_ids(path: Path, ids: list[int], dtype: type) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    np.asarray(ids, dtype=dtype).tofile(tmp)
    tmp.replace(path)


def prepare(dataset: str, data_dir: str | None,
            make_tokenizer: Callable[[dict[str, str]], CharTokenizer | ByteLevelBPE],
            cache_name: str, limit: int = 0, log: Callable[[str], None] = print,
            cache_root: Path | None = None) -> TokenData:
    """Tokenise `dataset` once into `<cache_root>/<cache_name>/` and memory-map it.

    `make_tokenizer(splits)` builds the tokenizer the first time, from the whole text (before `limit` cuts
    the training split); later runs reuse the saved one, so every checkpoint trained on this folder shares
    the same ids. Delete the folder to start over.
    """
    if dataset not in DATASETS:
        raise UserError(f"unknown dataset {dataset!r}; choose one of {sorted(DATASETS)}")
    data_candidates(DATASETS[dataset][0], data_dir)   # a --data_dir that is not a folder is an error, cache or not
    folder = (cache_root or DATA_CACHE) / (cache_name + (f"-limit{limit}" if limit else ""))
    meta_path = folder / "meta.json"
    if meta_path.is_file():
        meta = read_json(meta_path, "token cache metadata")
        tokenizer = load_tokenizer(folder / "tokenizer.json")
        if not isinstance(meta, dict) or meta.get("tokenizer") != tokenizer.fingerprint() or not all(
                isinstance(meta.get(f"{split}_tokens"), int) for split in ("train", "val")):
            raise UserError(f"token cache {folder} does not match its tokenizer.json; delete the folder and rerun")
        check_source(folder, meta, dataset, data_dir)
        dtype = ids_dtype(tokenizer.vocab_size)
        arrays = {}
        for split in ("train", "val"):
            path = folder / f"{split}.bin"
            if not path.is_file() or path.stat().st_size != meta[f"{split}_tokens"] * np.dtype(dtype).itemsize:
                raise UserError(f"token cache {folder} is incomplete ({path.name}); delete the folder and rerun")
            arrays[split] = np.memmap(path, dtype=dtype, mode="r") if meta[f"{split}_tokens"] else np.zeros(0, dtype)
            check_ids(arrays[split], tokenizer.vocab_size, path)
        return TokenData(arrays["train"], arrays["val"], tokenizer, folder)

    splits = load_text(dataset, data_dir)
    folder.mkdir(parents=True, exist_ok=True)
    tick = time.time()
    tokenizer = make_tokenizer(splits)
    if limit:
        splits["train"] = splits["train"][:limit]
    log(f"tokenizer: {tokenizer.vocab_size:,} tokens, trained in {time.time() - tick:.1f} s")
    tokenizer.save(folder / "tokenizer.json")
    dtype = ids_dtype(tokenizer.vocab_size)
    meta = {"dataset": dataset, "tokenizer": tokenizer.fingerprint(), "vocab_size": tokenizer.vocab_size,
            "source": source_identity(dataset, data_dir)}
    for split, text in splits.items():
        tick = time.time()
        ids = tokenizer.encode(text)
        _write_ids(folder / f"{split}.bin", ids, dtype)
        meta[f"{split}_chars"], meta[f"{split}_tokens"] = len(text), len(ids)
        meta[f"{split}_bytes"] = len(text.encode("utf-8"))
        log(f"{dataset} {split}: {len(text):,} characters -> {len(ids):,} tokens in {time.time() - tick:.1f} s")
    write_json(meta_path, meta)   # written last: its presence means the folder is complete
    return prepare(dataset, data_dir, make_tokenizer, cache_name, limit, log, cache_root)


def source_identity(dataset: str, data_dir: str | None) -> dict[str, dict[str, int | str]] | None:
    """{file name: {"bytes": size, "sha256": digest}} of the data files `dataset` is read from, or None when there
    is no local copy (IMDb read through Hugging Face datasets). A token cache keeps it in its meta.json, so a cache
    built from one copy of the text is never read for another (say a 12-character input.txt given by --data_dir)."""
    name, files = DATASETS[dataset]
    if dataset == "imdb":
        files = ["train.jsonl.gz"]                      # the only file imdb_text reads
    folder = find_local_data(name, files, data_dir) or cache_dir(name)   # no local copy: where a download lands
    if not all((folder / f).is_file() for f in files):
        return None
    identity = {}
    for f in files:
        identity[f] = {"bytes": (folder / f).stat().st_size, "sha256": file_sha256(folder / f)}
    return identity


def check_source(folder: Path, meta: dict, dataset: str, data_dir: str | None) -> None:
    """Refuse a token cache built from other files than the ones this run would read (a cache without a record of
    its source predates the check and cannot be trusted either). With no local copy at all there is nothing to
    compare, and the cache is all there is."""
    current = source_identity(dataset, data_dir)
    if current is None or meta.get("source") == current:
        return
    where = f"--data_dir {data_dir}" if data_dir else "the data"
    if not isinstance(meta.get("source"), dict):
        raise UserError(f"token cache {folder} does not record which {dataset} files it was built from; delete the "
                        "folder and rerun (or give another --cache_dir)")
    sizes = ", ".join(f"{name}: {entry['bytes']:,} bytes" for name, entry in current.items())
    raise UserError(f"token cache {folder} was built from other {dataset} text than {where} now holds ({sizes}); "
                    "give another --cache_dir, or delete the folder and rerun")


def check_ids(ids: np.ndarray, vocab_size: int, path: Path) -> None:
    """Every id of a token cache must be one its tokenizer has: an id beyond it would index past the model's
    embedding (a crash) or, worse, stand for a token of another tokenizer. One pass over the memory map (a second
    for 70 million tokens)."""
    top = int(ids.max()) if len(ids) else -1
    if top >= vocab_size:
        raise UserError(f"token cache {path} holds id {top}, but its tokenizer has only {vocab_size:,} tokens (ids "
                        f"0..{vocab_size - 1}); the cache belongs to another tokenizer or is damaged: delete "
                        f"{path.parent} and rerun")


def windows(data: np.ndarray, starts: Sequence[int], length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs (B, length) and targets (B, length), the same windows shifted by one: each window of
    length + 1 ids is read from the (memory-mapped) array once and split."""
    rows = torch.stack([torch.from_numpy(data[s: s + length + 1].astype(np.int64)) for s in starts])
    return rows[:, :-1], rows[:, 1:]


def sequential_windows(data: np.ndarray, block_size: int,
                       batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Every token of `data` predicted once, as (inputs, targets) batches of non-overlapping windows (the last
    one shorter): for the exact loss over a whole split, rather than an estimate from random windows."""
    n = len(data) - 1                       # the last token is only ever a target
    full = n // block_size
    for first in range(0, full, batch_size):
        yield windows(data, [i * block_size for i in range(first, min(full, first + batch_size))], block_size)
    if n % block_size:
        yield windows(data, [full * block_size], n % block_size)
