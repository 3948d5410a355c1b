"""Tiny language-modelling corpora in the real formats (tiny_shakespeare/input.txt, ptb/ptb.*.txt.gz)."""
import gzip
import random
from pathlib import Path

import pytest

LINES = ["First Citizen:", "Before we proceed any further, hear me speak.", "", "All:", "Speak, speak.", "",
         "First Citizen:", "You are all resolved rather to die than to famish?", ""]
WORDS = "the company said its profit rose N N in the quarter while shares fell <unk> market".split()


def write_lm_data(root: Path, seed: int = 0) -> Path:
    rng = random.Random(seed)
    (root / "tiny_shakespeare").mkdir(parents=True, exist_ok=True)
    text = "\n".join(LINES[i % len(LINES)] for i in range(900)) + "\n"
    (root / "tiny_shakespeare" / "input.txt").write_text(text)
    (root / "ptb").mkdir(parents=True, exist_ok=True)
    for split, lines in (("train", 400), ("valid", 60), ("test", 60)):
        with gzip.open(root / "ptb" / f"ptb.{split}.txt.gz", "wt") as f:
            for _ in range(lines):
                f.write(" " + " ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 12))) + " \n")
    return root


@pytest.fixture(scope="session")
def lm_data(tmp_path_factory) -> Path:
    return write_lm_data(tmp_path_factory.mktemp("lm_data"))
