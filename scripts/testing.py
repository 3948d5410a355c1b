"""Shared pytest fixtures, loaded as a plugin (`-p scripts.testing` in pyproject.toml): where the real
data sets are (if anywhere), and tiny data sets in the real formats, so every stage's scripts can be
exercised in seconds."""
import csv
import gzip
import json
import os
import random
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def real_data_dir() -> Path | None:
    """`$MY_LLM_DATA`, else `../shared/data` beside the checkout; None when neither exists."""
    for candidate in (os.environ.get("MY_LLM_DATA"), ROOT.parent / "shared" / "data"):
        if candidate and Path(candidate).is_dir():
            return Path(candidate)
    return None


@pytest.fixture
def real_data() -> Path:
    path = real_data_dir()
    if path is None:
        pytest.skip("real data sets not found: set MY_LLM_DATA to the folder holding imdb/, ag_news/, ...")
    return path


@pytest.fixture
def cli(capsys):
    """Run an entry point as the shell would (through run_main): returns (exit status, stdout, stderr)."""
    from scripts.common import run_main

    def run(main, argv):
        with pytest.raises(SystemExit) as info:
            run_main(main, [str(a) for a in argv])
        out = capsys.readouterr()
        return info.value.code, out.out, out.err
    return run


def one_error_line(code: int | None, err: str, *needles: str, besides: tuple[str, ...] = ()) -> str:
    """The course's rule for an error a user caused: exit status 2 (unless `code` is None: not checked) and exactly
    one line on stderr, "error: ...", saying each of `needles`. `besides` names the starts of informational lines
    a program may print before it (translate.py's "model: ..." line). Returns the error line."""
    lines = [line for line in err.splitlines() if not line.startswith(besides)] if besides else err.splitlines()
    assert code is None or code == 2, err
    assert len(lines) == 1 and lines[0].startswith("error: ") and err.endswith("\n"), err
    for needle in needles:
        assert str(needle) in lines[0], (needle, err)
    return lines[0]


def execute_notebook(path: Path, env: dict[str, str], monkeypatch) -> str:
    """Execute a notebook top to bottom (as CI does) with extra environment; returns its printed text."""
    import nbformat
    from nbclient import NotebookClient

    for key, value in {**env, "MPLBACKEND": "Agg"}.items():
        monkeypatch.setenv(key, str(value))
    notebook = nbformat.read(path, as_version=4)
    NotebookClient(notebook, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    return "".join(o.get("text", "") for c in notebook.cells if c.cell_type == "code" for o in c.outputs)


def ctrl_c_after_steps(monkeypatch, steps: int, optimizer: type | None = None):
    """Press Ctrl-C (SIGINT to this process) right after the `steps`-th step of `optimizer` (AdamW by default),
    as a learner would in the middle of a run; returns a function that puts the real step back."""
    import signal

    import torch

    optimizer = optimizer or torch.optim.AdamW
    real_step = optimizer.step
    calls = {"n": 0}

    def step_then_ctrl_c(self, *args, **kwargs):
        result = real_step(self, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] == steps:
            os.kill(os.getpid(), signal.SIGINT)
        return result
    monkeypatch.setattr(optimizer, "step", step_then_ctrl_c)
    return lambda: monkeypatch.setattr(optimizer, "step", real_step)


def fake_children(monkeypatch, code: int) -> list:
    """Programs a bench starts (through scripts/report.run_script's subprocess.run), each ending at once with
    `code` (2: it printed its one-line error; -9: killed); returns the commands they were given."""
    import subprocess

    commands = []

    def fake_run(cmd, *args, **kwargs):
        commands.append(cmd)
        return subprocess.CompletedProcess(cmd, code)
    monkeypatch.setattr(subprocess, "run", fake_run)
    return commands


class TypedLines:
    """Stands in for sys.stdin, so `input()` reads these lines; an exception class in the list is raised instead
    (KeyboardInterrupt: Ctrl-C at the prompt); after the last line, end of input (Ctrl-D)."""

    def __init__(self, lines):
        self.lines = iter(lines)

    def readline(self):
        line = next(self.lines, None)
        if isinstance(line, type):
            raise line
        return "" if line is None else line + "\n"


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    """Tests never touch the network: a missing data set must fail fast, not wait for retries."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("MY_LLM_OFFLINE", "1")

POSITIVE = "great wonderful moving brilliant superb loved charming delightful".split()
NEGATIVE = "awful boring terrible waste dull worst bad stupid".split()
FILLER = "the film movie a plot actors story it was and this of scene".split()
TOPICS = [
    "election minister president war talks government".split(),
    "game season coach team win match".split(),
    "shares profit market company stocks oil".split(),
    "software internet computer space research chip".split(),
]


def sentiment_text(rng: random.Random, label: int) -> str:
    words = [rng.choice(FILLER) for _ in range(rng.randint(8, 20))]
    words += [rng.choice(POSITIVE if label else NEGATIVE) for _ in range(3)]
    rng.shuffle(words)
    return " ".join(words).capitalize() + ".<br /><br />" + rng.choice(FILLER) + "!"


def write_imdb(folder: Path, n_train: int = 400, n_test: int = 100, seed: int = 0) -> Path:
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("test", n_test)):
        with gzip.open(folder / f"{split}.jsonl.gz", "wt", encoding="utf-8") as f:
            for i in range(n):
                label = i % 2
                row = {"id": i, "rating": 8 if label else 2, "label": label,
                       "sentiment": "pos" if label else "neg", "text": sentiment_text(rng, label)}
                f.write(json.dumps(row) + "\n")
    return folder


def write_ag_news(folder: Path, n_train: int = 200, n_test: int = 80, seed: int = 0) -> Path:
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("test", n_test)):
        with open(folder / f"{split}.csv", "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f, quoting=csv.QUOTE_ALL)
            for i in range(n):
                label = i % 4
                title = " ".join(rng.choice(TOPICS[label]) for _ in range(3)).title()
                body = " ".join(rng.choice(FILLER + TOPICS[label]) for _ in range(15))
                writer.writerow([str(label + 1), title, body + " \\n It #39;s news."])
    (folder / "classes.txt").write_text("World\nSports\nBusiness\nSci/Tech\n")
    return folder


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """A data folder laid out like ../shared/data: imdb/ and ag_news/ (with a train split)."""
    root = tmp_path_factory.mktemp("data")
    write_imdb(root / "imdb")
    write_ag_news(root / "ag_news")
    return root


# ----------------------------------------------------------------------------- translation corpora
# Tiny Multi30k (multi30k/*.{en,fr}.gz) and Tatoeba (fra_eng_tatoeba/fra.txt.gz) in the real formats:
# captions built from a few phrases, so a small model learns to translate them in seconds.
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

