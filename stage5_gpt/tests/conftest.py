"""Tiny data sets in the real formats, and the flags of a model small enough to train in a second."""
import gzip
import random
from pathlib import Path

import pytest

WORDS = ("the king queen lord my good sir what thou art not shall be love death night day come go "
         "speak hear heart blood noble sweet fair true").split()


def play(rng: random.Random, lines: int) -> str:
    out = []
    for _ in range(lines):
        speaker = rng.choice(["ROMEO", "JULIET", "KING HENRY", "First Citizen"])
        speech = " ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 12)))
        out.append(f"{speaker}:\n{speech.capitalize()}{rng.choice('.,!?;')}\n")
    return "\n".join(out)


@pytest.fixture(scope="session")
def lm_data(tmp_path_factory) -> Path:
    """A data folder with tiny_shakespeare/input.txt (about 40 KB) and gutenberg_en/{train,valid}.txt.gz."""
    root = tmp_path_factory.mktemp("lm_data")
    rng = random.Random(0)
    (root / "tiny_shakespeare").mkdir()
    (root / "tiny_shakespeare" / "input.txt").write_text(play(rng, 700), encoding="utf-8")
    (root / "gutenberg_en").mkdir()
    for split, books in (("train", 4), ("valid", 1)):
        text = "".join(play(rng, 150) + "Café, naïve — “quoted”.\n" + "\n<|endoftext|>\n" for _ in range(books))
        with gzip.open(root / "gutenberg_en" / f"{split}.txt.gz", "wt", encoding="utf-8") as f:
            f.write(text)
    return root


def tiny_args(data: Path, out: Path, *extra) -> list[str]:
    """train.py flags for a model of a few thousand parameters, 12 steps."""
    return ["--data_dir", data, "--out_dir", out / "run", "--checkpoint", out / "best.pt", "--cache_dir", out / "cache",
            "--n_layer", "1", "--n_head", "2", "--n_embd", "16", "--block_size", "16", "--batch_size", "4",
            "--max_steps", "12", "--eval_interval", "6", "--eval_iters", "2", "--warmup_steps", "2",
            "--log_interval", "3", "--num_threads", "1", "--device", "cpu", *extra]


