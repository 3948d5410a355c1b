"""Reading the course's two English-French translation corpora: Multi30k and Tatoeba.

Shared by every stage that translates (the attention seq2seq of stage 3, the Transformer of stage 4,
the multi-task GPT of stage 5), so they all read the same files the same way and are scored on the
same test sentences.

- multi30k: image captions, train 29,000 / valid (val) 1,014 / test (test_2016_flickr) 1,000 pairs;
- tatoeba: manythings.org's fra-eng pairs (167,130 in the 2019 release), split here with a fixed seed,
  grouped by English sentence so that no source sentence is in two splits.

A loader looks for a local copy first (`--data_dir`, then `$MY_LLM_DATA`; the formats are those of
`../shared/data/multi30k` and `../shared/data/fra_eng_tatoeba`), then downloads from the publisher.
Files must be line-aligned; an empty line or a malformed row names its file and line.
`corpus_scores` is how every stage scores a translation: sacreBLEU and chrF, with their signatures.
"""
from __future__ import annotations

import os
import random
import zipfile
from pathlib import Path
from typing import Any, Sequence

import sacrebleu

from scripts.common import UserError, cache_dir, download, find_local_data, missing_data_error, read_text

DATASETS = ("multi30k", "tatoeba")
SPLITS = ("train", "valid", "test")
MULTI30K_FILES = {"train": "train", "valid": "val", "test": "test_2016_flickr"}
# downloads come from pinned commits of the repositories the shared copies were taken from (their MANIFEST.md),
# each checked against the sha256 of the shared copy: a download is byte for byte the data set the README measures
MULTI30K_URL = ("https://raw.githubusercontent.com/multi30k/dataset/a3d2e0d26b56f3846f66a952536ffed4e401d05a/"
                "data/task1/raw/{name}")
MULTI30K_SHA256 = {
    "train.en.gz": "d79cfa999dd4c51d2cb42499b6796d5a882c3a8a961923c25a898c90f8bbd56f",
    "train.fr.gz": "622e75069e9f4c577425c4f277116ce66e63a2401c0a2312d90073cb12379a3c",
    "val.en.gz": "14f7d25ddd868909a9213e361768460edcacdd6ab9d1e77b92560dc10c10dc28",
    "val.fr.gz": "ca3106f1a72390591d25f6c45cb4cd39dec4cd3f123e099748a3ce5256c160e9",
    "test_2016_flickr.en.gz": "611d361c6334bc7246101d48097c13cf5c4413c5befc793cc629934359d532d9",
    "test_2016_flickr.fr.gz": "6d326e188d259fb1d04ac19eae3af956559b3a0b93d7635e56c90987c40c8b90",
}
TATOEBA_URL = "https://raw.githubusercontent.com/modelexlab/data/adddaf33ac35572bcfeb421efec29435e7ea9332/fra-eng.zip"
TATOEBA_SHA256 = "161c93f18da3a7e6df611ed961426613260de8af06ccf8c79c977afe5135ac44"   # manythings.org's 2019 release
TATOEBA_MIN_SOURCES = 40           # distinct English sentences: enough for a train, a valid and a test split
TATOEBA_SPLIT_SEED = 1234          # the split never depends on --seed: every run sees the same test set
TATOEBA_HELD_OUT = 3000            # English sentences in valid and in test each


Pairs = list[tuple[str, str]]


def split_lines(text: str) -> list[str]:
    """Lines split at "\n" only (str.splitlines would also split at \x0c, \x85, \u2028 ...: line i must stay line i)."""
    lines = text.split("\n")
    return lines[:-1] if lines and lines[-1] == "" else lines


def _read_lines(path: Path) -> list[str]:
    return split_lines(read_text(path, "corpus file"))


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
                download(MULTI30K_URL.format(name=name), folder / name, MULTI30K_SHA256[name])
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
    distinct = len({src for src, _ in pairs})
    if distinct < TATOEBA_MIN_SOURCES:
        raise UserError(f"{path} holds {distinct} distinct English sentences; a train, valid and test split need at "
                        f"least {TATOEBA_MIN_SOURCES}: is it truncated?")
    return pairs


def load_tatoeba(data_dir: str | None, split: str) -> Pairs:
    folder = find_local_data("fra_eng_tatoeba", ["fra.txt.gz"], data_dir)
    if folder is not None:
        pairs = read_tatoeba(folder / "fra.txt.gz")
    else:
        cached = cache_dir("fra_eng_tatoeba") / "fra.txt"
        try:
            if not cached.is_file():
                archive = download(TATOEBA_URL, cached.with_name("fra-eng.zip"), TATOEBA_SHA256)
                with zipfile.ZipFile(archive) as z:
                    tmp = cached.with_name(f".fra.txt.tmp{os.getpid()}")
                    tmp.write_bytes(z.read("fra-eng/fra.txt"))
                    os.replace(tmp, cached)       # atomic: an interrupted unzip never looks finished
        except Exception as err:  # noqa: BLE001
            raise missing_data_error("fra_eng_tatoeba", ["fra.txt.gz"], data_dir, str(err)) from None
        pairs = read_tatoeba(cached)
    return split_by_source(pairs)[split]


def split_by_source(pairs: Pairs, held_out: int = TATOEBA_HELD_OUT,
                    seed: int = TATOEBA_SPLIT_SEED) -> dict[str, Pairs]:
    """A fixed-seed split by English sentence: all translations of one sentence land in one split."""
    sources = sorted({src for src, _ in pairs})
    if len(sources) < TATOEBA_MIN_SOURCES:   # read_tatoeba refuses such files first, naming them
        raise UserError(f"{len(sources)} distinct English sentences cannot make three splits")
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


def corpus_scores(hypotheses: Sequence[str], references: Sequence[str]) -> dict[str, Any]:
    """sacreBLEU (13a tokenisation, cased, as published numbers use) and chrF, with their signatures.

    Both take detokenised text: the model's output as a reader would see it, and the raw references."""
    bleu, chrf = sacrebleu.metrics.BLEU(), sacrebleu.metrics.CHRF()
    bleu_score = bleu.corpus_score(list(hypotheses), [list(references)])
    chrf_score = chrf.corpus_score(list(hypotheses), [list(references)])
    return {"bleu": round(bleu_score.score, 2), "chrf": round(chrf_score.score, 2),
            "bleu_signature": str(bleu.get_signature()), "chrf_signature": str(chrf.get_signature()),
            "bleu_detail": str(bleu_score)}
