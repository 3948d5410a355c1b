"""One command-line dialect across the course: every program's parser, help text and REPL follow the same rules.

The rules (CONVENTIONS.md, "Programs"): `--checkpoint` reads a trained model everywhere (`--model_path` is the
same option); on/off options are `--x/--no-x`; every program takes --data_dir, --device, --seed and
--num_threads; `--help` shows every default and never tells history; every interactive program reads its
lines through scripts.repl.Repl, so the same `:commands` work in every stage; and every program runs from
the repo root, from its stage folder and as a module, with no file editing the import path.
"""
from __future__ import annotations

import argparse
import importlib
import re
import subprocess
import sys
from pathlib import Path

import pytest

from scripts.common import REPO_ROOT, ArgParser
from scripts.repl import ALIASES, COMMANDS, Repl

STAGES = ["stage1_mlp", "stage2_rnn_lstm", "stage3_attention_seq2seq", "stage4_transformer", "stage5_gpt"]
PROGRAMS = sorted(f"{stage}.{path.stem}" for stage in STAGES for path in (REPO_ROOT / stage).glob("*.py")
                  if path.stem != "__init__" and "def build_parser" in path.read_text(encoding="utf-8"))
# the programs that load a trained model (train.py writes one; --checkpoint there names where)
READERS = [p for p in PROGRAMS if p.rsplit(".", 1)[1] in ("evaluate", "generate", "translate")]
# what an import hack looks like (spelled in pieces so that this file does not match itself)
IMPORT_HACKS = ("sys." + "path", "noqa: " + "E402")
HISTORY_WORDS = re.compile(r"\b(round|rounds|issue|issues|floor|floors|session|sessions)\b", re.IGNORECASE)


def parser_of(program: str) -> argparse.ArgumentParser:
    return importlib.import_module(program).build_parser()


def options(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {s: a for a in parser._actions for s in a.option_strings}


def test_every_stage_has_its_programs():
    names = {p.rsplit(".", 1)[1] for p in PROGRAMS}
    assert {"train", "evaluate", "generate", "translate"} <= names
    assert len(READERS) >= 7, READERS


@pytest.mark.parametrize("program", PROGRAMS)
def test_parser_follows_the_dialect(program):
    parser = parser_of(program)
    assert isinstance(parser, ArgParser), f"{program}: use scripts.common.ArgParser (one-line errors, defaults)"
    opts = options(parser)
    for flag in ("--data_dir", "--device", "--seed", "--num_threads"):
        assert flag in opts, f"{program} lacks {flag} (scripts.common.add_common_args)"
    for action in parser._actions:
        if action.choices is not None and sorted(action.choices) == [0, 1]:
            pytest.fail(f"{program} {action.option_strings}: on/off options are --x/--no-x, not 0/1")
        text = f"{action.help or ''}"
        assert not HISTORY_WORDS.search(text), f"{program} {action.option_strings}: help tells history: {text!r}"
    assert not HISTORY_WORDS.search(parser.description or ""), f"{program}: description tells history"


@pytest.mark.parametrize("program", [p for p in PROGRAMS if p.endswith(".train")])
def test_train_programs_share_their_flags(program):
    opts = options(parser_of(program))
    for flag in ("--lr", "--batch_size", "--out_dir", "--resume", "--checkpoint", "--max_steps"):
        assert flag in opts, f"{program} lacks {flag}"


@pytest.mark.parametrize("program", READERS)
def test_readers_take_checkpoint_and_model_path(program):
    opts = options(parser_of(program))
    assert "--checkpoint" in opts and "--model_path" in opts, f"{program}: use scripts.common.add_checkpoint_arg"
    assert opts["--checkpoint"] is opts["--model_path"]
    assert opts["--checkpoint"].dest == "checkpoint"


def test_help_shows_defaults():
    parser = parser_of("stage2_rnn_lstm.train")
    text = parser.format_help()
    assert "(default: 0)" in text  # --seed, --num_threads...


@pytest.mark.parametrize("program", [p for p in PROGRAMS if "--interactive" in options(parser_of(p))])
def test_interactive_programs_use_the_shared_repl(program):
    source = (REPO_ROOT / Path(*program.split("."))).with_suffix(".py").read_text(encoding="utf-8")
    assert "Repl(" in source, f"{program}: read interactive lines through scripts.repl.Repl"


def test_repl_command_names_and_short_forms():
    said: list[str] = []
    repl = Repl({"temperature": 0.8, "top_k": 0, "top_p": 1.0, "max_new_tokens": 100, "seed": 0, "beam": 1},
                say=said.append)
    for line, echo in [(":temperature 0.5", "temperature = 0.5"), (":temp 0", "temperature = 0.0"),
                       (":t 1", "temperature = 1.0"), (":k 5", "top_k = 5"), (":p 0.9", "top_p = 0.9"),
                       (":length 50", "max_new_tokens = 50"), (":n 60", "max_new_tokens = 60"),
                       (":seed 3", "seed = 3"), (":beam_size 4", "beam = 4"), (":b 2", "beam = 2")]:
        assert repl.command(line) and said[-1] == echo, (line, said[-1])
    for line in (":temperature nan", ":temperature 1e-300", ":top_k ５", ":seed 99999999999999999999",
                 ":beam 0", ":top_p 0", ":max_new_tokens -1", ":temperature", ":settings", ":help", ":nonsense",
                 ":", ":top_k 1e3"):
        assert repl.command(line)
    assert repl.settings == {"temperature": 1.0, "top_k": 5, "top_p": 0.9, "max_new_tokens": 60, "seed": 3, "beam": 2}
    assert not repl.command(":quit") and not repl.command(":q") and not repl.command(":exit")
    assert set(COMMANDS) == {ALIASES.get(a, a) for a in COMMANDS}


def test_repl_loop_survives_any_line():
    lines = iter(["", "   ", ":help", "hello", ":temperature inf", "boom", "\udcff", ":quit"])
    said: list[str] = []
    answered: list[str] = []

    def answer(line: str) -> None:
        if line == "boom":
            from scripts.common import UserError
            raise UserError("cannot answer that")
        answered.append(line)

    def read(prompt: str) -> str:
        line = next(lines)
        if line == "\udcff":
            raise UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte")
        return line

    assert Repl({"temperature": 0.8}, say=said.append).loop(answer, "banner", read=read) == 0
    assert answered == ["hello"]
    assert "(cannot answer that)" in said and any("not valid UTF-8" in s for s in said)


def test_no_import_hacks():
    offenders = []
    for path in [*REPO_ROOT.glob("stage*/**/*.py"), *REPO_ROOT.glob("scripts/**/*.py"),
                 *REPO_ROOT.glob("stage*/*.ipynb")]:
        if ".venv" in path.parts:
            continue
        text = path.read_text(encoding="utf-8")
        if any(hack in text for hack in IMPORT_HACKS):
            offenders.append(str(path.relative_to(REPO_ROOT)))
    assert not offenders, f"files editing the import path or silencing E402: {offenders}"


@pytest.mark.parametrize("stage", STAGES)
def test_programs_run_from_the_stage_folder_and_as_modules(stage):
    """`cd stageN && python train.py --help` and `python -m stageN.train --help` both work (the editable install
    makes the packages importable from anywhere)."""
    for program in [p for p in PROGRAMS if p.startswith(stage + ".")]:
        name = program.rsplit(".", 1)[1]
        run = subprocess.run([sys.executable, f"{name}.py", "--help"], cwd=REPO_ROOT / stage, capture_output=True,
                             text=True, timeout=120)
        assert run.returncode == 0 and "usage:" in run.stdout, (program, run.stderr[-500:])
    run = subprocess.run([sys.executable, "-m", f"{stage}.train", "--help"], cwd=REPO_ROOT.parent,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and "usage:" in run.stdout, run.stderr[-500:]
