"""Every bad input a learner can give stage 2, in one table per program: each ends in exactly one line on stderr
naming the option or the file, exit status 2, before any work starts and without touching what was saved before;
the prompt loop answers every line and goes on. Property-based tests then throw arbitrary text and bytes at the
readers, the vocabulary and the generator."""
import contextlib
import gzip
import hashlib
import io
import json
import os
import shutil
import socket
import sys
import tempfile
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scripts.common import UserError, run_main, save_checkpoint, set_seed
from scripts.testing import TypedLines, one_error_line, write_imdb
from stage2_rnn_lstm import bench, evaluate, generate, train, train_classifier
from stage2_rnn_lstm.data import corpus
from stage2_rnn_lstm.data.corpus import Vocabulary, load_corpus
from stage2_rnn_lstm.models.rnn_lm import LMConfig, RNNLanguageModel
from stage2_rnn_lstm.tests.conftest import write_lm_data

TINY = ["--embed_dim", "16", "--hidden_dim", "16", "--batch_size", "4", "--seq_len", "16", "--num_threads", "1",
        "--warmup_steps", "2"]
RUN = ["--epochs", "1", "--max_steps", "6", "--limit", "3000", "--lr", "0.01"]     # the trained fixture's flags


def lm_args(data, folder, *extra):
    return ["--data_dir", str(data), "--out_dir", str(folder / "run"), "--checkpoint", str(folder / "ck" / "best.pt"),
            *TINY, *extra]


one_line_error = one_error_line       # exit status 2, exactly one line on stderr, holding every needle


@pytest.fixture(scope="module")
def trained(lm_data, tmp_path_factory):
    """A tiny char model: <folder>/ck/best.pt and the run folder <folder>/run (with last.pt)."""
    folder = tmp_path_factory.mktemp("trained")
    with pytest.raises(SystemExit) as info:
        run_main(train.main, lm_args(lm_data, folder, *RUN))
    assert info.value.code == 0
    return folder


def copy_of(trained, tmp_path):
    """A copy of the trained run to edit or refuse; returns its folder."""
    shutil.copytree(trained, tmp_path / "copy")
    return tmp_path / "copy"


def file_bytes(folder):
    return {p.name: p.read_bytes() for p in (folder / "run" / "last.pt", folder / "ck" / "best.pt")}


# ----------------------------------------------------------------------------- train.py: flags
@pytest.mark.parametrize("extra, message", [
    # silent wrong training: each of these once trained something else than asked, and said nothing
    (["--clip", "-1"], "argument --clip: must be 0 (off) or a number > 0"),
    (["--clip", "nan"], "argument --clip: must be 0 (off) or a number > 0"),
    (["--limit", "-5"], "argument --limit: must be an integer >= 0"),
    (["--max_steps", "-1"], "argument --max_steps: must be an integer >= 0"),
    (["--lr", "0"], "argument --lr: must be a number in (0, 1]"),
    (["--lr", "inf"], "argument --lr: must be a number in (0, 1]"),
    (["--lr", "1e-320"], "argument --lr: must be a number in (0, 1]"),
    (["--lr", "1e308"], "argument --lr: must be a number in (0, 1]"),       # once a traceback inside AdamW
    (["--lr", "1e30"], "argument --lr: must be a number in (0, 1]"),        # once an OverflowError in exp(loss)
    (["--weight_decay", "1e308"], "--lr 0.003 times --weight_decay 1e+308 must be below 1"),
    (["--lr", "0.5", "--weight_decay", "2"], "--lr 0.5 times --weight_decay 2 must be below 1"),
    (["--weight_decay", "-1"], "argument --weight_decay: must be a number >= 0"),
    (["--warmup_steps", "-1"], "argument --warmup_steps: must be an integer >= 0"),
    (["--epochs", "0"], "argument --epochs: must be an integer >= 1"),
    (["--epochs", "2.5"], "argument --epochs: must be an integer >= 1"),
    (["--epochs", "²"], "argument --epochs: must be an integer >= 1"),
    (["--batch_size", "-4"], "argument --batch_size: must be an integer >= 1"),
    (["--seq_len", "0"], "argument --seq_len: must be an integer >= 1"),
    (["--embed_dim", "0"], "argument --embed_dim: must be an integer in [1, 2**16]"),
    (["--hidden_dim", str(10 ** 9)], "argument --hidden_dim: must be an integer in [1, 2**16]"),
    (["--num_layers", "1000"], "argument --num_layers: must be an integer in [1, 64]"),
    (["--dropout", "nan"], "argument --dropout: must be a number in [0, 1)"),
    (["--dropout", "-0.1"], "argument --dropout: must be a number in [0, 1)"),
    (["--seed", str(2 ** 64)], "argument --seed"),
    (["--num_threads", "-1"], "argument --num_threads"),
    (["--model_type", "transformer"], "invalid choice: 'transformer'"),
    (["--out_dir", "run\udcff"], "is not valid UTF-8"),
    # combinations that make no sense
    (["--dataset", "ptb", "--vocab_type", "char"], "--dataset ptb goes with --vocab_type word"),
    (["--preset", "quick", "--vocab_type", "word"], "--preset quick trains a char model"),
    (["--tie_weights", "--embed_dim", "8"], "--tie_weights needs --embed_dim == --hidden_dim"),
    (["--checkpoint", "{tmp}/run/last.pt"], "is the run's own last.pt"),
    (["--checkpoint", "{tmp}"], "is a folder"),
    # sizes that cannot fit in memory, refused before anything is allocated
    (["--hidden_dim", "20000", "--embed_dim", "20000"], "parameters, more than"),
    (["--hidden_dim", "10000", "--num_layers", "1", "--seq_len", "3000"], "--batch_size 4 x --seq_len 3000 tokens"),
    # more than the text holds
    (["--limit", "3"], "the first 3 tokens (--limit 3) has 3 tokens, too few for --batch_size 4"),
    (["--limit", "400", "--seq_len", "100"], "--seq_len 100 is longer than each of the --batch_size 4 streams of "
                                             "the first 400 tokens (--limit 400) (99 tokens to predict each); use "
                                             "--seq_len 99 or less"),
    (["--batch_size", "100000"], "the train text of shakespeare (input.txt, first 90%)"),
])
def test_train_refuses_bad_flags(lm_data, tmp_path, cli, extra, message):
    extra = [a.replace("{tmp}", str(tmp_path)) for a in extra]
    code, _, err = cli(train.main, lm_args(lm_data, tmp_path, *extra))
    one_line_error(code, err, message)
    assert not (tmp_path / "ck" / "best.pt").exists()


def test_clip_0_means_no_clipping_not_no_training(lm_data, tmp_path, cli):
    """--clip 0 (off) once scaled every gradient to zero: the run reported success and had learnt nothing."""
    code, _, err = cli(train.main, lm_args(lm_data, tmp_path, "--clip", "0", *RUN))
    assert code == 0, err
    ckpt = torch.load(tmp_path / "ck" / "best.pt", weights_only=True)
    set_seed(0)
    untrained = RNNLanguageModel(LMConfig(**ckpt["config"]))
    saved = ckpt["model_state"]
    assert all(not torch.equal(value, saved[name]) for name, value in untrained.state_dict().items())


def nan_loss_in(monkeypatch, module, after_calls=0):
    """Make the training loss of `module` (train or train_classifier) NaN from its call number `after_calls` on
    (the validation loss, summed, is left alone)."""
    real, calls = module.F.cross_entropy, []

    def cross_entropy(*args, **kwargs):
        loss = real(*args, **kwargs)
        if "reduction" in kwargs:
            return loss
        calls.append(1)
        return loss * float("nan") if len(calls) > after_calls else loss
    monkeypatch.setattr(module.F, "cross_entropy", cross_entropy)


@pytest.mark.parametrize("where", ["training", "validation"])
def test_a_loss_that_becomes_nan_stops_the_run_and_keeps_the_saved_models(lm_data, trained, tmp_path, monkeypatch,
                                                                         cli, where):
    """--lr 1e308 once crashed inside AdamW; a diverging run must end in one line naming --lr, and neither last.pt
    nor the best checkpoint of the run before may be written over with NaN weights."""
    folder = copy_of(trained, tmp_path)
    before = file_bytes(folder)
    if where == "training":
        nan_loss_in(monkeypatch, train)
    else:
        monkeypatch.setattr(train, "evaluate_stream", lambda *args: float("nan"))
    code, _, err = cli(train.main, lm_args(lm_data, folder, *RUN))
    one_line_error(code, err, f"the {where} loss became nan at step", "use a smaller --lr (now 0.01)")
    assert file_bytes(folder) == before


def test_perplexity_of_a_huge_loss_is_inf_not_an_overflow():
    assert train.perplexity(1e30) == float("inf") and train.perplexity(710) == float("inf")
    assert abs(train.perplexity(2.0) - 7.389056) < 1e-6
    row = train.epoch_row({"epoch": 0, "global_step": 1, "epoch_loss_sum": 5.0, "epoch_tokens": 1,
                           "train_seconds": 1.0}, 1e4, 10, 1.0, 0.1)
    assert row["val_ppl"] == float("inf") and row["val_loss"] == 1e4


# ----------------------------------------------------------------------------- train.py: data files
def corrupt(kind):
    """Functions that spoil a copy of the tiny corpora in `root`; each returns what the error must name."""
    def shakespeare(text: bytes):
        def spoil(root):
            (root / "tiny_shakespeare" / "input.txt").write_bytes(text)
            return "input.txt"
        return spoil

    def ptb(split: str, data: bytes, gz: bool = True, expected: str = ""):
        def spoil(root):
            path = root / "ptb" / f"ptb.{split}.txt.gz"
            path.write_bytes(gzip.compress(data) if gz else data)
            return expected or path.name
        return spoil

    many_chars = "".join(chr(0x10000 + i) for i in range(120_000)).encode()     # 90% of them in train
    return {
        "shakespeare_not_utf8": shakespeare(b"First Citizen:\nBefore we\n proceed \xff any further\n" * 40),
        "shakespeare_tiny": shakespeare(b"To be or not"),
        "shakespeare_too_many_symbols": shakespeare(many_chars),
        "ptb_damaged_gzip": ptb("train", gzip.compress(b" a b c \n" * 500)[:-30], gz=False),
        "ptb_not_gzip": ptb("valid", b"plain text, not gzip\n", gz=False),
        "ptb_not_utf8": ptb("test", b" a b \n c \xfe d \n"),
        "ptb_empty_line": ptb("train", b" a b \n\n c d \n", expected="ptb.train.txt.gz:2: empty line"),
        "ptb_tiny_valid": ptb("valid", b" a b \n", expected="the valid text of ptb (ptb.valid.txt) has 3 tokens"),
        "ptb_too_many_words": ptb("train", " ".join(f"w{i}" for i in range(100_001)).encode() + b"\n",
                                  expected="distinct words, more than the 100,000"),
    }[kind]


@pytest.mark.parametrize("kind", ["shakespeare_not_utf8", "shakespeare_tiny", "shakespeare_too_many_symbols",
                                  "ptb_damaged_gzip", "ptb_not_gzip", "ptb_not_utf8", "ptb_empty_line",
                                  "ptb_tiny_valid", "ptb_too_many_words"])
def test_train_refuses_broken_data_files(tmp_path, cli, kind):
    root = write_lm_data(tmp_path / "data")
    needle = corrupt(kind)(root)
    vocab = ["--vocab_type", "word"] if kind.startswith("ptb") else []
    code, _, err = cli(train.main, lm_args(root, tmp_path, *vocab))
    one_line_error(code, err, needle)


def test_missing_data_names_where_it_looked(tmp_path, monkeypatch, cli):
    monkeypatch.delenv("MY_LLM_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    code, _, err = cli(train.main, ["--out_dir", tmp_path / "run", "--checkpoint", tmp_path / "best.pt"])
    one_line_error(code, err, "no local copy of tiny_shakespeare (input.txt)", "MY_LLM_OFFLINE")
    (tmp_path / "partial" / "ptb").mkdir(parents=True)
    (tmp_path / "partial" / "ptb" / "ptb.train.txt.gz").write_bytes(gzip.compress(b" a b \n"))
    code, _, err = cli(train.main, ["--vocab_type", "word", "--data_dir", tmp_path / "partial", "--out_dir",
                                    tmp_path / "run"])
    one_line_error(code, err, "lacks ptb.valid.txt.gz, ptb.test.txt.gz of ptb")


# ----------------------------------------------------------------------------- downloads are verified
def test_download_with_the_wrong_bytes_is_refused_and_not_kept(tmp_path, monkeypatch):
    monkeypatch.delenv("MY_LLM_OFFLINE", raising=False)
    monkeypatch.delenv("MY_LLM_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    (tmp_path / "served").mkdir()
    (tmp_path / "served" / "input.txt").write_text("Not Shakespeare at all.\n" * 100)
    monkeypatch.setattr(corpus, "SHAKESPEARE_URL", (tmp_path / "served" / "input.txt").as_uri())
    with pytest.raises(UserError, match="has sha256 .*expected 86c4e6aa9db7c042"):
        load_corpus("shakespeare", None)
    for split in ("train", "valid", "test"):
        (tmp_path / "served" / f"ptb.{split}.txt").write_text(" a b c \n" * 50)
    monkeypatch.setattr(corpus, "PTB_URL", (tmp_path / "served").as_uri() + "/ptb.{split}.txt")
    with pytest.raises(UserError, match="no local copy of ptb.*expected fcea919f6cf83f35"):
        load_corpus("ptb", None)
    assert not any((tmp_path / "cache").rglob("*.txt*"))     # nothing half-checked is left to be read later


def test_download_with_the_right_bytes_is_read(real_data, tmp_path, monkeypatch):
    """The pinned checksums are those of the real files (PTB's of the unzipped text the URL serves)."""
    monkeypatch.delenv("MY_LLM_OFFLINE", raising=False)
    monkeypatch.delenv("MY_LLM_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    (tmp_path / "served").mkdir()
    for split in ("train", "valid", "test"):
        data = gzip.decompress((real_data / "ptb" / f"ptb.{split}.txt.gz").read_bytes())
        assert hashlib.sha256(data).hexdigest() == corpus.PTB_SHA256[split]
        (tmp_path / "served" / f"ptb.{split}.txt").write_bytes(data)
    monkeypatch.setattr(corpus, "PTB_URL", (tmp_path / "served").as_uri() + "/ptb.{split}.txt")
    splits, kind = load_corpus("ptb", None)
    assert kind == "word" and len(splits["valid"]) == 73_760
    monkeypatch.setattr(corpus, "SHAKESPEARE_URL", (real_data / "tiny_shakespeare" / "input.txt").as_uri())
    chars, kind = load_corpus("shakespeare", None)
    assert kind == "char" and len(chars["train"]) + len(chars["valid"]) == 1_115_394
    assert (tmp_path / "cache" / "my_llm" / "tiny_shakespeare" / "input.txt").is_file()


# ----------------------------------------------------------------------------- train.py: resume, lock, output
@pytest.mark.parametrize("extra, message", [
    (["--hidden_dim", "32", "--embed_dim", "32"], "--hidden_dim 16 (now 32)"),
    (["--model_type", "gru"], "--model_type lstm (now gru)"),
    (["--lr", "0.02"], "--lr 0.01 (now 0.02)"),
    (["--clip", "0"], "--clip 1.0 (now 0.0)"),
    (["--vocab_type", "word"], "was trained on shakespeare, not ptb"),
])
def test_resume_with_changed_settings_is_refused(lm_data, trained, tmp_path, cli, extra, message):
    folder = copy_of(trained, tmp_path)
    before = file_bytes(folder)
    code, _, err = cli(train.main, lm_args(lm_data, folder, *RUN, *extra, "--resume"))
    one_line_error(code, err, message)
    assert file_bytes(folder) == before


def edit_last(change):
    def edit(path):
        ckpt = torch.load(path, weights_only=True)
        change(ckpt)
        save_checkpoint(path, ckpt)
    return edit


@pytest.mark.parametrize("change, message", [
    (lambda c: c["vocab"]["itos"].append(c["vocab"]["itos"][1]), "twice"),
    (lambda c: c["vocab"].update(kind="word"), "is not one word"),
    (lambda c: c.pop("vocab"), "is not a stage 2 vocabulary file"),
    (lambda c: c["model_state"].update({"decoder.bias": torch.zeros(3)}), "decoder.bias has shape [3]"),
    (lambda c: c["model_state"].pop("decoder.bias"), "decoder.bias is missing"),
    (lambda c: c.update(hidden=(torch.zeros(2, 4, 99), torch.zeros(2, 4, 99))), "hidden state does not fit"),
    (lambda c: c.update(hidden=torch.zeros(2, 4, 16)), "hidden state does not fit"),
    (lambda c: c.pop("global_step"), "global_step is 'None', not an integer"),
    (lambda c: c.update(epoch="1"), "epoch is '1', not an integer"),
    (lambda c: c.update(best_val_loss=[]), "best_val_loss is '[]', not a number"),
    (lambda c: c.update(optimizer_state={}), "cannot be resumed"),
    (lambda c: c.update(rng_state={"python": 3}), "cannot be resumed"),
])
def test_resume_from_an_edited_last_pt_is_refused(lm_data, trained, tmp_path, cli, change, message):
    folder = copy_of(trained, tmp_path)
    edit_last(change)(folder / "run" / "last.pt")
    before = file_bytes(folder)
    code, _, err = cli(train.main, lm_args(lm_data, folder, *RUN, "--resume"))
    one_line_error(code, err, message, "last.pt")
    assert file_bytes(folder) == before


def test_resume_with_other_text_is_refused_unless_last_pt_predates_fingerprints(lm_data, trained, tmp_path, cli):
    other = write_lm_data(tmp_path / "other")
    with open(other / "tiny_shakespeare" / "input.txt", "a") as f:
        f.write("KING RICHARD III:\nNow is the winter of our discontent.\n")
    folder = copy_of(trained, tmp_path)
    before = file_bytes(folder)
    argv = lm_args(other, folder, *RUN, "--resume")
    code, _, err = cli(train.main, argv)
    one_line_error(code, err, "--resume:", "was trained on other shakespeare text", f"--data_dir {lm_data}",
                   f"than --data_dir {other} holds now")
    assert file_bytes(folder) == before
    code, _, err = cli(train.main, lm_args(lm_data, folder, *RUN, "--resume"))      # its own data: goes on
    assert code == 0, err
    edit_last(lambda c: c.pop("data"))(folder / "run" / "last.pt")      # a last.pt saved before fingerprints
    code, _, err = cli(train.main, argv)
    assert code == 0, err


def test_resume_without_a_run_is_refused(lm_data, tmp_path, cli):
    code, _, err = cli(train.main, lm_args(lm_data, tmp_path, "--resume"))
    one_line_error(code, err, "no resumable checkpoint")


def test_second_training_into_a_busy_run_folder_is_refused(lm_data, trained, tmp_path, cli):
    folder = copy_of(trained, tmp_path)
    holder = {"pid": os.getppid(), "host": socket.gethostname(), "command": "python train.py", "started": "now"}
    (folder / "run" / "run.lock").write_text(json.dumps(holder))
    before = file_bytes(folder)
    code, _, err = cli(train.main, lm_args(lm_data, folder, *RUN))
    one_line_error(code, err, f"is in use by process {os.getppid()}")
    assert file_bytes(folder) == before
    # another run folder, but the same --checkpoint: its best model would be overwritten by either run
    (folder / "run" / "run.lock").unlink()
    (folder / "ck" / ".best.pt.lock").write_text(json.dumps(holder))
    code, _, err = cli(train.main, lm_args(lm_data, folder, *RUN, "--out_dir", folder / "other_run"))
    one_line_error(code, err, f"is in use by process {os.getppid()}", "pass another --checkpoint")
    assert file_bytes(folder) == before


def test_unwritable_output_loses_nothing(lm_data, trained, tmp_path, cli):
    folder = copy_of(trained, tmp_path)
    before = file_bytes(folder)
    (tmp_path / "a_file").write_text("")
    argv = lm_args(lm_data, folder, *RUN)
    code, _, err = cli(train.main, argv + ["--out_dir", tmp_path / "a_file" / "run"])
    one_line_error(code, err, "cannot use", "a_file")
    code, _, err = cli(train.main, argv + ["--out_dir", tmp_path / "new_run", "--checkpoint",
                                           tmp_path / "a_file" / "best.pt"])
    one_line_error(code, err, "cannot use", "a_file")
    assert file_bytes(folder) == before


# ----------------------------------------------------------------------------- checkpoints edited by hand
def edited(change):
    """Functions that write an edited copy of a checkpoint: change(ckpt) edits the loaded dict in place."""
    def write(source, dest):
        ckpt = torch.load(source, weights_only=True)
        change(ckpt)
        save_checkpoint(dest, ckpt)
    return write


def raw(data):
    def write(source, dest):
        dest.write_bytes(data(source.read_bytes()))
    return write


def untied_decoder(ckpt):
    ckpt["config"]["tie_weights"] = True


CHECKPOINT_EDITS = {
    "config_missing_key": (edited(lambda c: c["config"].pop("dropout")), "missing dropout"),
    "config_extra_key": (edited(lambda c: c["config"].update(n_heads=8)), "unknown n_heads"),
    "config_not_a_dict": (edited(lambda c: c.update(config=[1, 2])), "no config dict"),
    "absurd_size": (edited(lambda c: c["config"].update(hidden_dim=10 ** 9)), "hidden_dim = '1000000000'"),
    "absurd_vocab": (edited(lambda c: c["config"].update(vocab_size=10 ** 6)), "vocab_size = '1000000'"),
    "size_not_the_weights": (edited(lambda c: c["config"].update(hidden_dim=32)), "do not fit the saved config"),
    "string_size": (edited(lambda c: c["config"].update(num_layers="2")), "num_layers = '2'"),
    "nan_dropout": (edited(lambda c: c["config"].update(dropout=float("nan"))), "dropout = 'nan'"),
    "dropout_1": (edited(lambda c: c["config"].update(dropout=1.5)), "dropout must be in [0, 1)"),
    "unknown_model_type": (edited(lambda c: c["config"].update(model_type="transformer")),
                           "model_type 'transformer' is not one of rnn, lstm, gru"),
    "unknown_impl": (edited(lambda c: c["config"].update(impl="cuda")), "impl 'cuda' is not one of"),
    "tie_weights_flipped": (edited(untied_decoder), "the saved embedding and decoder differ"),
    "vocab_shorter": (edited(lambda c: c["vocab"]["itos"].pop()), "entries but the model was built for"),
    "vocab_longer": (edited(lambda c: c["vocab"]["itos"].append("€")), "entries but the model was built for"),
    "vocab_duplicate": (edited(lambda c: c["vocab"]["itos"].__setitem__(-1, c["vocab"]["itos"][1])), "twice"),
    "vocab_no_unk": (edited(lambda c: c["vocab"]["itos"].__setitem__(0, "¤")), "has no <unk> entry"),
    "vocab_entry_not_text": (edited(lambda c: c["vocab"]["itos"].__setitem__(3, 7)), "entry 3, '7', is not one char"),
    "vocab_missing": (edited(lambda c: c.pop("vocab")), "is not a stage 2 vocabulary file"),
    "vocab_of_words": (edited(lambda c: c["vocab"].update(kind="word")), "is not one word"),
    "unknown_dataset": (edited(lambda c: c.update(dataset="wikitext")), "trained on 'wikitext'"),
    "weights_missing": (edited(lambda c: c.pop("model_state")), "no dict of tensors"),
    "weight_reshaped": (edited(lambda c: c["model_state"].update({"decoder.bias": torch.zeros(5)})),
                        "decoder.bias has shape [5]"),
    "weight_nan": (edited(lambda c: c["model_state"]["decoder.bias"].fill_(float("nan"))),
                   "the weight decoder.bias holds NaN or infinite values"),
    "weight_extra": (edited(lambda c: c["model_state"].update({"head.weight": torch.zeros(2)})),
                     "unexpected head.weight"),
    "another_model": (edited(lambda c: c.update(model="rnn_classifier")), "holds a 'rnn_classifier' model"),
    "another_stage": (edited(lambda c: c.update(stage="stage1_mlp")), "made by stage1_mlp"),
    "no_header": (edited(lambda c: c.pop("format")), "is not a my_llm checkpoint"),
    "truncated": (raw(lambda b: b[: len(b) // 2]), "is not a readable checkpoint"),
    "random_bytes": (raw(lambda b: os.urandom(2000)), "is not a readable checkpoint"),
}


@pytest.mark.parametrize("name", sorted(CHECKPOINT_EDITS))
@pytest.mark.parametrize("program", ["evaluate", "generate"])
def test_edited_checkpoints_are_refused_in_one_line(trained, lm_data, tmp_path, cli, name, program):
    write, message = CHECKPOINT_EDITS[name]
    path = tmp_path / "edited.pt"
    write(trained / "ck" / "best.pt", path)
    argv = ["--checkpoint", path, "--num_threads", "1"]
    if program == "evaluate":
        code, _, err = cli(evaluate.main, argv + ["--data_dir", lm_data, "--out_dir", tmp_path / "eval"])
        assert not (tmp_path / "eval").exists()
    else:
        code, _, err = cli(generate.main, argv + ["--prompt", "First", "--max_new_tokens", "3"])
    one_line_error(code, err, message, path)


# ----------------------------------------------------------------------------- evaluate.py and generate.py flags
@pytest.mark.parametrize("extra, message", [
    (["--batch_size", "0"], "argument --batch_size: must be an integer >= 1"),
    (["--seq_len", "-1"], "argument --seq_len: must be an integer >= 1"),
    (["--seq_len", "1e3"], "argument --seq_len: must be an integer >= 1"),
    (["--split", "test"], "shakespeare has no test split; use --split valid"),
    (["--batch_size", "100000"], "the valid text of shakespeare (input.txt, last 10%) has"),
    (["--checkpoint", "{tmp}/nothing.pt"], "nothing.pt does not exist"),
    (["--metrics_out", "{tmp}/a_file/metrics.json"], "cannot use"),
    (["--vocab", "{tmp}/nothing.json"], "vocabulary {tmp}/nothing.json does not exist"),
    (["--out_dir", ""], "argument --out_dir: an empty path"),
    (["--metrics_out", " "], "argument --metrics_out: an empty path"),
    (["--vocab", ""], "argument --vocab: an empty path"),
])
def test_evaluate_refuses_bad_flags(trained, lm_data, tmp_path, cli, extra, message):
    (tmp_path / "a_file").write_text("")
    extra = [a.replace("{tmp}", str(tmp_path)) for a in extra]
    code, _, err = cli(evaluate.main, ["--checkpoint", trained / "ck" / "best.pt", "--data_dir", lm_data,
                                       "--out_dir", tmp_path / "eval", "--num_threads", "1", *extra])
    one_line_error(code, err, message.replace("{tmp}", str(tmp_path)))


@pytest.mark.parametrize("extra, message", [
    (["--temperature", "nan"], "--temperature must be 0 (greedy) or a number in [0.01, 100]"),
    (["--temperature", "inf"], "--temperature must be"),
    (["--temperature", "1e-320"], "--temperature must be"),
    (["--top_k", "-1"], "--top_k must be an integer in [0, 1000000]"),
    (["--top_p", "1.5"], "--top_p must be a number in (0, 1]"),
    (["--top_p", "nan"], "--top_p must be a number in (0, 1]"),
    (["--max_new_tokens", "1000000"], "--max_new_tokens must be an integer in [1, 10000]"),
    (["--max_new_tokens", "²"], "argument --max_new_tokens/--length: invalid int value: '²'"),
    (["--seed", str(2 ** 64)], "argument --seed: must be an integer in [0, 4294967295]"),
    (["--prompt", ""], "--prompt is empty"),
    (["--prompt", "x" * 20_001], "the prompt has 20,001 chars; at most 20,000"),
    (["--prompt", "ROMEO\udcff"], "command-line argument 4 is not valid UTF-8"),
    (["--vocab", ""], "argument --vocab: an empty path"),
])
def test_generate_refuses_bad_flags(trained, cli, extra, message):
    code, _, err = cli(generate.main, ["--checkpoint", trained / "ck" / "best.pt", *extra])
    one_line_error(code, err, message)


@pytest.mark.parametrize("content, message", [
    (b"\xff\xfe{}", "line 1: byte 0xff is not valid UTF-8"),
    (b'{"itos": ["<unk>", "a"', "is not valid JSON"),
    (b"[1, 2]", "is not a stage 2 vocabulary file"),
    (b'{"format": "stage2-vocabulary-v1", "kind": "char", "itos": "abc"}', "needs a list of 1 to 100,000 tokens"),
    (b'{"format": "stage2-vocabulary-v1", "kind": "bytes", "itos": ["<unk>"]}', "has kind 'bytes'"),
    (b'{"format": "stage2-vocabulary-v1", "kind": "char", "itos": ["<unk>", "ab"]}', "entry 1, 'ab', is not one char"),
    (b'{"format": "stage2-vocabulary-v1", "kind": "char", "itos": ["<unk>", null]}', "entry 1, 'None'"),
    (b'{"format": "stage2-vocabulary-v1", "kind": "char", "itos": ["a", "b"]}', "has no <unk> entry"),
    (b'{"format": "stage2-vocabulary-v1", "kind": "char", "itos": ["<unk>", "a", "b"]}', "does not match"),
])
def test_vocabulary_files_edited_by_hand(trained, tmp_path, cli, content, message):
    path = tmp_path / "vocab.json"
    path.write_bytes(content)
    code, _, err = cli(generate.main, ["--checkpoint", trained / "ck" / "best.pt", "--vocab", path])
    one_line_error(code, err, message, path)


# ----------------------------------------------------------------------------- the prompt loop
NASTY_LINES = [":temperature nan", ":temperature 1e-320", ":t inf", ":t -0.5", ":seed 18446744073709551616",
               ":seed -1", ":beam ²", ":top_k ²", ":n 10²", ":n 1e3", ":top_p -0", ":top_p 1e-310", ":", "::",
               ": ", ":help me", ":settings now", ":TEMP 0.5", "\x00\x01\x1b[2J", "\t", "\u202e\u0301", "ab\udcff",
               "🙂 ñ 漢字", "x" * 30_000, ":k " + "9" * 5000, ":max_new_tokens 3"]


def test_prompt_loop_survives_every_line(trained, monkeypatch, cli):
    monkeypatch.setattr("sys.stdin", TypedLines([*NASTY_LINES, "First", ":q"]))
    code, out, err = cli(generate.main, ["--checkpoint", trained / "ck" / "best.pt", "--interactive",
                                         "--max_new_tokens", "4"])
    assert code == 0 and err == "", err
    assert "(:temperature kept 0.8: temperature must be" in out and "(:seed kept 0:" in out
    assert "(:beam does not apply here" in out and "(:top_k kept 0:" in out and "(unknown command :" in out
    assert "at most 20,000 are read" in out and "replaced by \ufffd" in out and "max_new_tokens = 3" in out
    assert out.rstrip().endswith(">") and "> First" in out


# ----------------------------------------------------------------------------- train_classifier.py and bench.py
@pytest.mark.parametrize("extra, message", [
    (["--clip", "-1"], "argument --clip: must be 0 (off) or a number > 0"),
    (["--lr", "0"], "argument --lr: must be a number in (0, 1]"),
    (["--lr", "1e308"], "argument --lr: must be a number in (0, 1]"),     # once trained to NaN and exited 0
    (["--limit", "-5"], "argument --limit: must be an integer >= 0"),
    (["--val_fraction", "0"], "argument --val_fraction: must be a number in (0, 1)"),
    (["--val_fraction", "1"], "argument --val_fraction: must be a number in (0, 1)"),
    (["--vocab_size", "2"], "argument --vocab_size: must be an integer in [3, 1000000]"),
    (["--max_len", "0"], "argument --max_len: must be an integer in [1, 100000]"),
    (["--patience", "0"], "argument --patience: must be an integer >= 1"),
    (["--epochs", "0"], "argument --epochs: must be an integer >= 1"),
    (["--dropout", "1"], "argument --dropout: must be a number in [0, 1)"),
    (["--hidden_dim", str(10 ** 6)], "argument --hidden_dim: must be an integer in [1, 2**16]"),
    (["--num_layers", "0"], "argument --num_layers: must be an integer in [1, 64]"),
    (["--batch_size", "0"], "argument --batch_size: must be an integer >= 1"),
    (["--limit", "1"], "leaves none to train on"),
    (["--limit", "2", "--val_fraction", "0.5"], "leave 1 training text, all of one class; use a larger --limit"),
    (["--out_dir", ""], "argument --out_dir: an empty path"),
    (["--hidden_dim", "20000", "--embed_dim", "20000", "--num_layers", "2"], "parameters, more than"),
    (["--checkpoint", "{tmp}"], "is a folder"),
    (["--checkpoint", "{tmp}/run/last.pt"], "is the run's own last.pt"),
    (["--resume"], "no resumable checkpoint"),
])
def test_train_classifier_refuses_bad_flags(tiny_data, tmp_path, cli, extra, message):
    extra = [a.replace("{tmp}", str(tmp_path)) for a in extra]
    code, _, err = cli(train_classifier.main, ["--data_dir", tiny_data, "--out_dir", tmp_path / "run", "--checkpoint",
                                               tmp_path / "ck" / "clf.pt", "--num_threads", "1", *extra])
    one_line_error(code, err, message)


def test_train_classifier_bad_rows_and_resume_with_changed_settings(tiny_data, tmp_path, cli):
    bad = tmp_path / "bad" / "imdb"
    write_imdb(bad, n_train=50, n_test=10)
    rows = gzip.decompress((bad / "train.jsonl.gz").read_bytes()).decode().splitlines()
    rows[6] = json.dumps({"text": "fine", "label": 7})
    (bad / "train.jsonl.gz").write_bytes(gzip.compress(("\n".join(rows) + "\n").encode()))
    code, _, err = cli(train_classifier.main, ["--data_dir", tmp_path / "bad", "--out_dir", tmp_path / "r0"])
    one_line_error(code, err, "train.jsonl.gz:7: label 7 is not 0 or 1")

    argv = ["--data_dir", tiny_data, "--out_dir", tmp_path / "run", "--checkpoint", tmp_path / "ck" / "clf.pt",
            "--embed_dim", "8", "--hidden_dim", "8", "--epochs", "1", "--limit", "60", "--num_threads", "1"]
    code, _, err = cli(train_classifier.main, argv)
    assert code == 0, err
    before = (tmp_path / "run" / "last.pt").read_bytes(), (tmp_path / "ck" / "clf.pt").read_bytes()
    for extra, message in ((["--hidden_dim", "16"], "--hidden_dim 8 (now 16)"), (["--clip", "0"], "--clip 1.0 (now")):
        code, _, err = cli(train_classifier.main, argv + [*extra, "--epochs", "2", "--resume"])
        one_line_error(code, err, message)
    ckpt = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    for change, message in (({"vocab": ckpt["vocab"][1:]}, "the saved vocabulary is not a list of <pad>, <unk>"),
                            ({"optimizer_state": {}}, "cannot be resumed"), ({"bad_epochs": -1}, "bad_epochs is '-1'"),
                            ({"model_state": {}}, "embedding.weight is missing")):
        save_checkpoint(tmp_path / "run" / "last.pt", {**ckpt, **change})
        code, _, err = cli(train_classifier.main, argv + ["--epochs", "2", "--resume"])
        one_line_error(code, err, message, "last.pt")
    assert (tmp_path / "ck" / "clf.pt").read_bytes() == before[1]


def test_train_classifier_stops_when_the_loss_becomes_nan(tiny_data, tmp_path, monkeypatch, cli):
    """--lr 1e308 once trained to NaN, exited 0 and reported a test accuracy."""
    argv = ["--data_dir", tiny_data, "--out_dir", tmp_path / "run", "--checkpoint", tmp_path / "ck" / "clf.pt",
            "--embed_dim", "8", "--hidden_dim", "8", "--epochs", "1", "--limit", "60", "--num_threads", "1"]
    code, _, err = cli(train_classifier.main, argv)
    assert code == 0, err
    saved = [tmp_path / "run" / "last.pt", tmp_path / "ck" / "clf.pt", tmp_path / "run" / "metrics.json"]
    before = [path.read_bytes() for path in saved]
    nan_loss_in(monkeypatch, train_classifier)
    code, _, err = cli(train_classifier.main, argv + ["--lr", "1"])
    one_line_error(code, err, "the training loss became nan at epoch 1, batch 1", "use a smaller --lr (now 1)")
    assert [path.read_bytes() for path in saved] == before      # no model, no test score written


def test_train_classifier_resume_with_other_texts_is_refused(tiny_data, tmp_path, cli):
    other = write_imdb(tmp_path / "other" / "imdb", seed=1).parent
    argv = ["--out_dir", tmp_path / "run", "--checkpoint", tmp_path / "ck" / "clf.pt", "--embed_dim", "8",
            "--hidden_dim", "8", "--epochs", "1", "--limit", "60", "--num_threads", "1"]
    code, _, err = cli(train_classifier.main, ["--data_dir", tiny_data, *argv])
    assert code == 0, err
    before = (tmp_path / "run" / "last.pt").read_bytes()
    code, _, err = cli(train_classifier.main, ["--data_dir", other, *argv, "--epochs", "2", "--resume"])
    one_line_error(code, err, "--resume:", "was trained on other imdb texts", f"--data_dir {tiny_data}",
                   f"than --data_dir {other} holds now")
    assert (tmp_path / "run" / "last.pt").read_bytes() == before


def test_bench_stops_with_the_failed_programs_own_line(lm_data, tmp_path, capfd):
    """A program bench.py runs says why it failed in one line; bench.py adds none and exits with its status."""
    with pytest.raises(SystemExit) as info:
        run_main(lambda argv: bench.quick(["--data_dir", str(lm_data)], train_extra=["--lr", "2"],
                                          stage_dir=tmp_path / "stage", results=tmp_path), [])
    err = capfd.readouterr().err
    one_line_error(info.value.code, err, "argument --lr: must be a number in (0, 1], got '2'")


@pytest.mark.parametrize("argv, message", [
    (["--num_threads", "-1"], "argument --num_threads"),
    (["--parts", "everything"], "invalid choice: 'everything'"),
    (["--data_dir", ""], "argument --data_dir: an empty path"),
    (["--tables_only", "--parts", "char"], "--tables_only runs nothing"),
    (["--tables_only", "--num_threads", "1"], "--tables_only runs nothing"),
    (["--tables_only", "--data_dir", "/tmp"], "--tables_only runs nothing"),
])
def test_bench_refuses_bad_flags(cli, argv, message):
    one_line_error(*cli(bench.main, argv)[::2], message)


@pytest.mark.parametrize("parts, file", [(["quick"], "tiny_shakespeare/input.txt"), (["word"], "ptb/ptb.train.txt.gz"),
                                         (["speed", "char"], "tiny_shakespeare/input.txt")])
def test_bench_publishes_results_of_the_reference_data_only(lm_data, cli, monkeypatch, parts, file):
    """A copy that is not the shared one (a truncated Shakespeare trains and scores without an error) is refused
    before any part runs, naming the file; README.md and results/ keep their bytes. (Tests that run the bench on
    tiny data call its parts, or monkeypatch check_reference_data.)"""
    monkeypatch.setattr(bench, "run", lambda *args, **kwargs: pytest.fail("ran on unchecked data"))
    monkeypatch.setattr(bench, "speed", lambda *args, **kwargs: pytest.fail("a part ran before the check"))
    readme, overview = (bench.STAGE_DIR / "README.md").read_bytes(), (bench.RESULTS / "overview.json").read_bytes()
    one_line_error(*cli(bench.main, ["--parts", *parts, "--data_dir", lm_data])[::2],
                   f"{lm_data / file} is not the reference copy", "train.py")
    assert (bench.STAGE_DIR / "README.md").read_bytes() == readme
    assert (bench.RESULTS / "overview.json").read_bytes() == overview


def test_bench_accepts_the_reference_data(real_data, cli, monkeypatch):
    started = []
    monkeypatch.setattr(bench, "quick", lambda extra: started.append(extra) or sys.exit(5))
    monkeypatch.setattr(bench, "language_model", lambda *args: started.append(args) or sys.exit(5))
    for part in ("quick", "word"):
        code, _, err = cli(bench.main, ["--parts", part, "--data_dir", real_data])
        assert (code, err) == (5, "")
    assert len(started) == 2


# ----------------------------------------------------------------------------- property-based: any text, any bytes
@pytest.fixture(scope="module")
def loaded(trained):
    model, vocab, _ = evaluate.load_language_model(trained / "ck" / "best.pt", None, torch.device("cpu"))
    return model, vocab


LINE = st.one_of(
    st.text(max_size=200),
    st.builds(lambda command, value: f":{command} {value}",
              st.sampled_from(["temperature", "t", "top_k", "k", "top_p", "p", "max_new_tokens", "n", "seed", "beam",
                               "settings", "help", "bogus", ""]),
              st.one_of(st.text(max_size=30), st.integers().map(str), st.floats().map(str))),
    st.sampled_from(NASTY_LINES[:-3]))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lines=st.lists(LINE, max_size=8))
def test_prompt_loop_answers_any_lines(loaded, lines):
    model, vocab = loaded
    typed = iter([*lines, ":max_new_tokens 2", "end"])

    def read(prompt):
        line = next(typed, None)
        if line is None:
            raise EOFError
        return line

    with contextlib.redirect_stdout(io.StringIO()):
        settings_ = {"temperature": 0.8, "top_k": 0, "top_p": 1.0, "max_new_tokens": 2, "seed": 0}
        # a typed :max_new_tokens could ask for 10,000 tokens; the session still answers, just more slowly
        assert generate.interactive(model, vocab, settings_, torch.device("cpu"), read=read) == 0


@settings(max_examples=100, deadline=None)
@given(text=st.text(max_size=300))
def test_generate_continues_any_text(loaded, text):
    model, vocab = loaded
    settings_ = {"temperature": 0.8, "top_k": 0, "top_p": 1.0, "max_new_tokens": 2, "seed": 0}
    out = io.StringIO()
    try:
        generate.stream(model, vocab, text, settings_, out, torch.device("cpu"))
    except UserError as err:
        assert "prompt" in str(err)
        return
    assert text in out.getvalue()
    ids = vocab.encode(vocab.split(text))
    assert ids.numel() == 0 or 0 <= int(ids.min()) <= int(ids.max()) < len(vocab)


@settings(max_examples=80, deadline=None)
@given(shakespeare=st.binary(max_size=3000), ptb=st.binary(max_size=600), gz=st.booleans())
def test_corpus_readers_take_any_bytes(shakespeare, ptb, gz):
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        (root / "tiny_shakespeare").mkdir()
        (root / "tiny_shakespeare" / "input.txt").write_bytes(shakespeare)
        (root / "ptb").mkdir()
        for split in ("train", "valid", "test"):
            (root / "ptb" / f"ptb.{split}.txt.gz").write_bytes(gzip.compress(ptb) if gz else ptb)
        for dataset in ("shakespeare", "ptb"):
            try:
                splits, kind = load_corpus(dataset, folder)
            except UserError as err:
                assert folder in str(err) and "\n" not in str(err)
                continue
            assert all(isinstance(t, str) and t for tokens in splits.values() for t in tokens)


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
                    max_leaves=12)
VOCAB_DICT = st.fixed_dictionaries({"format": st.just("stage2-vocabulary-v1"),
                                    "kind": st.sampled_from(["char", "word", "bytes"]) | JSON,
                                    "itos": st.lists(st.text(max_size=3) | JSON, max_size=8)
                                    .map(lambda itos: ["<unk>", *itos])})


@settings(max_examples=150, deadline=None)
@given(obj=JSON | VOCAB_DICT, text=st.text(max_size=50))
def test_vocabulary_from_any_json(obj, text):
    try:
        vocab = Vocabulary.from_dict(obj, "v.json")
    except UserError as err:
        assert str(err).startswith("v.json") and "\n" not in str(err)
        return
    ids = vocab.encode(vocab.split(text))
    assert ids.numel() == 0 or int(ids.max()) < len(vocab)
    assert isinstance(vocab.decode(ids), str)


CONFIG_VALUES = st.one_of(st.none(), st.booleans(), st.integers(-5, 40), st.integers(), st.floats(),
                          st.text(max_size=12), st.sampled_from(["rnn", "lstm", "gru", "torch", "scratch"]),
                          st.lists(st.integers(), max_size=2))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(changes=st.dictionaries(st.sampled_from(list(LMConfig.__dataclass_fields__) + ["extra"]), CONFIG_VALUES,
                               min_size=1, max_size=3))
def test_checkpoint_config_with_any_values(trained, changes):
    ckpt = torch.load(trained / "ck" / "best.pt", weights_only=True)
    original = dict(ckpt["config"])
    ckpt["config"].update(changes)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "edited.pt"
        save_checkpoint(path, ckpt)
        try:
            model, vocab, _ = evaluate.load_language_model(path, None, torch.device("cpu"))
        except UserError as err:
            assert str(path) in str(err) and "\n" not in str(err)
            return
    # what loads is the saved model: only the dropout rate (unused when generating or scoring) may have changed
    assert all(changes[k] == original[k] for k in changes if k != "dropout")
