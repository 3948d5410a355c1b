"""Tiny translation corpora in the real formats (multi30k/*.{en,fr}.gz, fra_eng_tatoeba/fra.txt.gz)."""
import gzip
import random
from pathlib import Path

import pytest

SUBJECTS = [("A man", "Un homme"), ("A woman", "Une femme"), ("A dog", "Un chien"), ("A child", "Un enfant"),
            ("Two men", "Deux hommes"), ("A girl", "Une fille")]
VERBS = [("is running", "court"), ("is sitting", "est assis"), ("is playing", "joue"), ("is eating", "mange")]
PLACES = [("in the park", "dans le parc"), ("on the street", "dans la rue"), ("near the water", "près de l'eau"),
          ("in the snow", "dans la neige"), ("", "")]


def caption(rng: random.Random) -> tuple[str, str]:
    (se, sf), (ve, vf), (pe, pf) = rng.choice(SUBJECTS), rng.choice(VERBS), rng.choice(PLACES)
    return " ".join(w for w in (se, ve, pe) if w) + ".", " ".join(w for w in (sf, vf, pf) if w) + "."


def write_gz(path: Path, lines: list[str]) -> None:
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write("".join(line + "\n" for line in lines))


def write_translation_data(root: Path, seed: int = 0) -> Path:
    rng = random.Random(seed)
    folder = root / "multi30k"
    folder.mkdir(parents=True, exist_ok=True)
    for name, size in (("train", 600), ("val", 40), ("test_2016_flickr", 40)):
        pairs = [caption(rng) for _ in range(size)]
        write_gz(folder / f"{name}.en.gz", [e for e, _ in pairs])
        write_gz(folder / f"{name}.fr.gz", [f for _, f in pairs])
    (root / "fra_eng_tatoeba").mkdir(parents=True, exist_ok=True)
    write_gz(root / "fra_eng_tatoeba" / "fra.txt.gz", [f"{e}\t{f}" for e, f in (caption(rng) for _ in range(900))])
    return root


@pytest.fixture(scope="session")
def mt_data(tmp_path_factory) -> Path:
    return write_translation_data(tmp_path_factory.mktemp("mt_data"))
