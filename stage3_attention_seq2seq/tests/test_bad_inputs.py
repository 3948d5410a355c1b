"""Every bad input a learner can give stage 3's programs ends in one line on stderr and exit status 2 (or, at the
interactive prompt, in one line and the next prompt), and loses nothing written before.

Tables: flags of train.py / evaluate.py / translate.py / bench.py, data files, edited checkpoints and vocabularies,
--resume with other settings, a run folder in use, outputs that cannot be written, REPL lines. Then property-based
tests (hypothesis) throw arbitrary text and bytes at every text input: the tokenizer and vocabularies, the corpus
readers, the translate functions, the REPL, --input files and stdin."""
import gzip
import io
import json
import os
import shutil
import sys
from pathlib import Path
from unittest import mock

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scripts.common import UserError, load_checkpoint, run_main, save_checkpoint
from scripts.testing import TypedLines, fake_children, one_error_line, write_gz
from stage3_attention_seq2seq import bench, evaluate, train, translate, translator
from stage3_attention_seq2seq.data.translation import (SPECIALS, Vocabulary, detokenize, load_pairs,
                                                       load_vocabularies, tokenize)

TINY = ["--embed_dim", "16", "--hidden_dim", "16", "--attention_dim", "8", "--batch_size", "64", "--num_threads", "1",
        "--warmup_steps", "2", "--lr", "0.01", "--limit", "200", "--val_limit", "8"]
SENTENCE = "A dog is running in the park."
UNWRITABLE = "/proc/my_llm_no_such/x"          # nothing can be created under /proc, not even by root
HYPOTHESIS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def train_args(data, tmp, *extra):
    return ["--data_dir", str(data), "--out_dir", str(tmp / "run"), "--checkpoint", str(tmp / "ck" / "best.pt"),
            *TINY, *extra]


@pytest.fixture(scope="module")
def model(mt_data, tmp_path_factory):
    """A tiny trained model (a few steps: these tests check what is refused, not how well it translates)."""
    tmp = tmp_path_factory.mktemp("s3bad")
    with pytest.raises(SystemExit) as info:
        run_main(train.main, train_args(mt_data, tmp, "--epochs", "1", "--max_steps", "3"))
    assert info.value.code == 0
    return tmp / "ck" / "best.pt"


def one_line(err: str, *needles: str) -> None:
    """Exactly one error line on stderr naming what is wrong (besides the "model: ..." line translate.py and
    evaluate.py print once a model is loaded)."""
    one_error_line(None, err, *needles, besides=("model: ",))


def a_file_in_the_way(tmp_path) -> Path:
    """A regular file: a path below it can never be created (root or not)."""
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a folder\n")
    return blocker


# ----------------------------------------------------------------------------- flags
TRAIN_FLAGS = [
    (["--clip", "-1"], "--clip: must be 0 (off) or a number > 0"),
    (["--clip", "nan"], "--clip"),
    (["--limit", "-5"], "--limit: must be an integer >= 0"),
    (["--max_steps", "-1"], "--max_steps: must be an integer >= 0"),
    (["--lr", "0"], "--lr: must be a number in (0, 1]"),
    (["--lr", "inf"], "--lr"),
    (["--lr", "2"], "--lr"),
    (["--lr", "1e-320"], "--lr"),                                    # subnormal
    (["--epochs", "0"], "--epochs: must be an integer >= 1"),
    (["--epochs", "1.5"], "--epochs"),
    (["--epochs", "3²"], "--epochs"),
    (["--batch_size", "0"], "--batch_size"),
    (["--hidden_dim", str(10 ** 9)], "--hidden_dim: must be an integer in [1, 4096]"),
    (["--embed_dim", "0"], "--embed_dim"),
    (["--attention_dim", "99999"], "--attention_dim"),
    (["--dropout", "1"], "--dropout: must be a number in [0, 1)"),
    (["--dropout", "-0.1"], "--dropout"),
    (["--label_smoothing", "1"], "--label_smoothing"),
    (["--teacher_forcing", "2"], "--teacher_forcing: must be a number in [0, 1]"),
    (["--teacher_forcing_end", "nan"], "--teacher_forcing_end"),
    (["--warmup_steps", "-1"], "--warmup_steps"),
    (["--weight_decay", "-1"], "--weight_decay"),
    (["--weight_decay", "inf"], "--weight_decay"),
    (["--lr", "0.5", "--weight_decay", "2"], "--lr 0.5 times --weight_decay 2.0 must be below 1"),
    (["--min_freq", "0"], "--min_freq"),
    (["--max_len", "-1"], "--max_len: must be 0 (no limit) or an integer >= 1"),
    (["--val_limit", "-1"], "--val_limit"),
    (["--seed", "-1"], "--seed"),
    (["--seed", str(2 ** 64)], "--seed"),
    (["--num_threads", "-1"], "--num_threads"),
    (["--attention_type", "magic"], "invalid choice: 'magic'"),
    (["--impl", "cuda"], "--impl"),
    (["--dataset", "wmt"], "--dataset"),
    (["--preset", "huge"], "--preset"),
    (["--device", "tpu"], "--device"),
]


@pytest.mark.parametrize("argv, message", TRAIN_FLAGS)
def test_train_refuses_bad_flags(cli, tmp_path, argv, message):
    code, _, err = cli(train.main, ["--out_dir", tmp_path / "run", *argv])
    assert code == 2
    one_line(err, message)
    assert not (tmp_path / "run").exists()                      # refused before anything was written


def test_train_refuses_output_paths_that_make_no_sense(cli, tmp_path):
    code, _, err = cli(train.main, ["--out_dir", tmp_path / "run", "--checkpoint", tmp_path])
    assert code == 2
    one_line(err, "--checkpoint", "is a folder")
    code, _, err = cli(train.main, ["--out_dir", tmp_path / "run", "--checkpoint", tmp_path / "run" / "last.pt"])
    assert code == 2
    one_line(err, "the run's own last.pt")


EVALUATE_FLAGS = [
    (["--beam_size", "0"], "--beam_size: must be an integer in [1, 64]"),
    (["--beam_size", "65"], "--beam_size"),
    (["--beam_size", "5²"], "--beam_size"),
    (["--alpha", "nan"], "--alpha: must be 0 (no length penalty) or a number in (0, 10]"),
    (["--alpha", "-1"], "--alpha"),
    (["--alpha", "11"], "--alpha"),
    (["--batch_size", "0"], "--batch_size"),
    (["--limit", "-1"], "--limit"),
    (["--split", "dev"], "--split"),
    (["--dataset", "wmt"], "--dataset"),
    (["--seed", "99999999999999999999999"], "--seed"),
    (["--out_dir", ""], "--out_dir: an empty path"),              # an unset shell variable: not "the default"
    (["--metrics_out", " "], "--metrics_out: an empty path"),
]


@pytest.mark.parametrize("argv, message", EVALUATE_FLAGS)
def test_evaluate_refuses_bad_flags(cli, argv, message):
    code, _, err = cli(evaluate.main, argv)
    assert code == 2
    one_line(err, message)


def test_evaluate_refuses_outputs_it_could_not_write_before_scoring(model, mt_data, tmp_path, cli):
    blocker = a_file_in_the_way(tmp_path)
    for argv, name in ((["--out_dir", blocker / "e"], "--out_dir"), (["--out_dir", UNWRITABLE], "--out_dir"),
                       (["--out_dir", tmp_path / "e", "--metrics_out", blocker / "m.json"], "--metrics_out"),
                       (["--out_dir", tmp_path / "e", "--metrics_out", tmp_path], "--metrics_out")):
        code, out, err = cli(evaluate.main, ["--checkpoint", model, "--data_dir", mt_data, *argv])
        assert code == 2 and "scoring" not in out                # refused before any sentence was translated
        one_line(err, name)
    assert not (tmp_path / "e").exists()


TRANSLATE_FLAGS = [
    ([SENTENCE, "--beam_size", "0"], ["--beam_size"]),
    ([SENTENCE, "--beam_size", "²"], ["--beam_size"]),
    ([SENTENCE, "--alpha", "inf"], ["--alpha"]),
    ([SENTENCE, "--batch_size", "-3"], ["--batch_size"]),
    ([], ["give one of: a sentence, --input FILE, or --interactive"]),
    ([SENTENCE, "--interactive"], ["give one of"]),
    (["--input", "x.txt", "--heatmap", "x.png"], ["--heatmap draws one sentence"]),
    ([SENTENCE, "--output", "x.txt"], ["--output holds the translations of --input FILE"]),
    ([SENTENCE, "--heatmap", "map.jpg"], ["--heatmap 'map.jpg': the file name must end in .png, .pdf, .svg"]),
    ([SENTENCE, "--heatmap", UNWRITABLE + ".png"], ["--heatmap", "cannot be written"]),
    ([SENTENCE, "--heatmap", "a\x00b.png"], ["--heatmap", "cannot be written"]),
    (["--input", "/nonexistent/in.txt"], ["--input /nonexistent/in.txt does not exist"]),
    (["word " * 300], ["the sentence has 300 words and marks; this model translates at most 200"]),
    ([""], ["empty sentence"]),                                  # checked before the model loads (no "model:" line)
    (["  ", "\t"], ["empty sentence"]),
    (["--input", ""], ["--input", "an empty path"]),            # an unset shell variable
    (["--input", "x.txt", "--output", " "], ["--output", "an empty path"]),
    ([SENTENCE, "--heatmap", ""], ["--heatmap", "an empty path"]),
]


@pytest.mark.parametrize("argv, messages", TRANSLATE_FLAGS)
def test_translate_refuses_bad_flags_before_loading_a_model(cli, argv, messages):
    code, _, err = cli(translate.main, ["--checkpoint", "/nonexistent/never_loaded.pt", *argv])
    assert code == 2
    one_line(err, *messages)


def test_translate_refuses_unwritable_outputs(model, tmp_path, cli):
    blocker = a_file_in_the_way(tmp_path)
    (tmp_path / "in.txt").write_text(SENTENCE + "\n")
    for argv, name in (([SENTENCE, "--heatmap", blocker / "map.png"], "--heatmap"),
                       ([SENTENCE, "--heatmap", tmp_path], "--heatmap"),
                       (["--input", tmp_path / "in.txt", "--output", blocker / "out.txt"], "--output"),
                       (["--input", tmp_path / "in.txt", "--output", UNWRITABLE], "--output")):
        code, out, err = cli(translate.main, ["--checkpoint", model, *argv])
        assert code == 2 and out == ""
        one_line(err, name)
    assert blocker.read_text() == "a file, not a folder\n"


def test_command_line_text_that_is_not_utf8_is_refused(model, cli):
    undecodable = b"A dog \xff\xfe".decode("utf-8", "surrogateescape")      # how Python passes such bytes in argv
    code, _, err = cli(translate.main, ["--checkpoint", model, undecodable])
    assert code == 2
    one_line(err, "command-line argument 3 is not valid UTF-8")


def test_bench_refuses_bad_flags(cli, tmp_path):
    for argv, message in ((["--compare_epochs", "0"], "--compare_epochs"), (["--num_threads", "-2"], "--num_threads"),
                          (["--parts", "everything"], "--parts"), (["--data_dir", ""], "--data_dir: an empty path"),
                          (["--data_dir", tmp_path / "nope", "--parts", "quick"], "--data_dir"),
                          (["--tables_only", "--compare_epochs", "3"], "--tables_only runs nothing"),
                          (["--tables_only", "--parts", "main"], "--tables_only runs nothing"),
                          (["--tables_only", "--num_threads", "1"], "--tables_only runs nothing"),
                          (["--parts", "quick", "--compare_epochs", "3"], "--compare_epochs applies to --parts")):
        code, _, err = cli(bench.main, argv)
        assert code == 2
        one_line(err, message)


def test_an_empty_sentence_is_refused_before_the_model_line(model, cli):
    for argv in ([""], ["   "], [" ", "\t"]):
        code, out, err = cli(translate.main, ["--checkpoint", model, *argv])
        one_error_line(code, err, "empty sentence")             # one line in all: no "model: ..." before it
        assert out == ""


def test_a_sentence_of_unknown_words_only_is_translated(model, cli):
    code, out, err = cli(translate.main, ["--checkpoint", model, "qwerty zxcv"])
    assert code == 0 and out.strip(), err                        # the model's guess is the answer
    assert "note: none of the words of 'qwerty zxcv'" in err and "error" not in err


def test_output_that_is_the_input_file_is_refused(cli, tmp_path, monkeypatch):
    source = tmp_path / "in.en"
    source.write_text(SENTENCE + "\n")
    (tmp_path / "symlink.en").symlink_to(source)
    os.link(source, tmp_path / "hardlink.en")
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path)
    for output in (source, "in.en", "./sub/../in.en", tmp_path / "symlink.en", tmp_path / "hardlink.en"):
        code, out, err = cli(translate.main, ["--checkpoint", "/nonexistent/never_loaded.pt", "--input", "in.en",
                                              "--output", output])
        one_error_line(code, err, f"--output {output} is the --input file")
        assert out == ""
    assert source.read_text() == SENTENCE + "\n"


def test_bench_publishes_results_of_the_reference_data_only(mt_data, cli, monkeypatch):
    """A copy of Multi30k that is not the shared one (a 50-line one trains and scores without an error) is refused
    before any part runs, naming the file; README.md and results/ keep their bytes. (Tests that run the bench on
    tiny data call its parts, or monkeypatch check_reference_data.)"""
    commands = fake_children(monkeypatch, 0)
    readme, overview = (bench.STAGE_DIR / "README.md").read_bytes(), (bench.RESULTS / "overview.json").read_bytes()
    for parts in (["quick"], ["heatmaps", "lengths"]):
        code, _, err = cli(bench.main, ["--parts", *parts, "--data_dir", mt_data])
        one_error_line(code, err, str(mt_data / "multi30k" / "train.en.gz"), "not the reference copy", "train.py")
    assert commands == []
    assert (bench.STAGE_DIR / "README.md").read_bytes() == readme
    assert (bench.RESULTS / "overview.json").read_bytes() == overview


def test_bench_accepts_the_reference_data(real_data, cli, monkeypatch):
    monkeypatch.setattr(bench, "quick_part", lambda extra: sys.exit(5))
    code, _, err = cli(bench.main, ["--parts", "quick", "--data_dir", real_data])
    assert (code, err) == (5, "")


def test_bench_stops_at_a_failed_program_without_a_second_line(cli, monkeypatch):
    commands = fake_children(monkeypatch, 2)            # train.py has said why, in its one line
    code, out, err = cli(bench.main, ["--parts", "main"])
    assert (code, err) == (2, "") and len(commands) == 1 and "train.py" in out
    fake_children(monkeypatch, -9)                       # killed (out of memory): it could say nothing itself
    code, _, err = cli(bench.main, ["--parts", "quick"])
    one_error_line(code, err, "train.py was stopped by signal 9")


# ----------------------------------------------------------------------------- data files
def copy_data(mt_data, tmp_path) -> Path:
    root = tmp_path / "data"
    shutil.copytree(mt_data, root)
    return root


def test_corrupt_and_odd_data_files_name_the_file(mt_data, tmp_path, cli):
    """Each broken copy of the data, through train.py: one line naming the file (and line); no run folder left."""
    cases = []
    tiny = tmp_path / "tiny"                         # a Tatoeba file of 3 lines: too few sentences for three splits
    (tiny / "fra_eng_tatoeba").mkdir(parents=True)
    write_gz(tiny / "fra_eng_tatoeba" / "fra.txt.gz", ["Go.\tVa !", "Hi.\tSalut !", "Run!\tCours !"])
    cases.append((["--dataset", "tatoeba", "--data_dir", tiny], ["fra.txt.gz holds 3 distinct English sentences"]))
    damaged = copy_data(mt_data, tmp_path / "damaged")
    raw = (damaged / "multi30k" / "train.en.gz").read_bytes()
    (damaged / "multi30k" / "train.en.gz").write_bytes(raw[: len(raw) // 2])
    cases.append((["--data_dir", damaged], ["train.en.gz is not a complete gzip file"]))
    latin1 = copy_data(mt_data, tmp_path / "latin1")
    lines = gzip.decompress((latin1 / "multi30k" / "train.fr.gz").read_bytes()).split(b"\n")
    lines[4] = "Un garçon.".encode("latin-1")
    (latin1 / "multi30k" / "train.fr.gz").write_bytes(gzip.compress(b"\n".join(lines)))
    cases.append((["--data_dir", latin1], ["train.fr.gz, line 5: byte 0xe7 is not valid UTF-8"]))
    notab = copy_data(mt_data, tmp_path / "notab")
    rows = gzip.decompress((notab / "fra_eng_tatoeba" / "fra.txt.gz").read_bytes()).decode().split("\n")
    rows[6] = "no tab on this line"
    (notab / "fra_eng_tatoeba" / "fra.txt.gz").write_bytes(gzip.compress("\n".join(rows).encode()))
    cases.append((["--dataset", "tatoeba", "--data_dir", notab], ["fra.txt.gz, line 7: expected 'english<TAB>french'"]))
    empty = copy_data(mt_data, tmp_path / "emptyline")
    lines = gzip.decompress((empty / "multi30k" / "val.en.gz").read_bytes()).split(b"\n")
    lines[2] = b"   "
    (empty / "multi30k" / "val.en.gz").write_bytes(gzip.compress(b"\n".join(lines)))
    cases.append((["--data_dir", empty], ["val.en.gz, line 3: empty sentence"]))
    lacking = copy_data(mt_data, tmp_path / "lacking")
    (lacking / "multi30k" / "val.fr.gz").unlink()
    cases.append((["--data_dir", lacking], ["lacks val.fr.gz"]))
    for argv, messages in cases:
        code, _, err = cli(train.main, [*argv, "--out_dir", tmp_path / "run", "--checkpoint", tmp_path / "b.pt",
                                        "--num_threads", "1"])
        assert code == 2, err
        one_line(err, *messages)
        assert not (tmp_path / "b.pt").exists()


def test_a_huge_test_sentence_is_refused_by_evaluate(model, mt_data, tmp_path, cli):
    data = copy_data(mt_data, tmp_path)
    for lang in ("en", "fr"):
        path = data / "multi30k" / f"test_2016_flickr.{lang}.gz"
        lines = gzip.decompress(path.read_bytes()).decode().split("\n")
        lines[3] = "dog " * 5000
        path.write_bytes(gzip.compress("\n".join(lines).encode()))
    code, _, err = cli(evaluate.main, ["--checkpoint", model, "--data_dir", data, "--out_dir", tmp_path / "e"])
    assert code == 2
    one_line(err, "multi30k test pair 4 has 5,000 words and marks")


def test_a_giant_word_in_the_training_data_stays_unknown():
    vocab = Vocabulary.build([["a", "x" * 5000], ["a", "x" * 5000]], min_freq=1)
    assert vocab.itos == [*SPECIALS, "a"]
    assert Vocabulary.from_dict(vocab.to_dict()).itos == vocab.itos      # what is saved always loads again


def test_min_freq_that_keeps_no_word_is_refused(mt_data, tmp_path, cli):
    code, _, err = cli(train.main, train_args(mt_data, tmp_path, "--min_freq", "100000"))
    assert code == 2
    one_line(err, "no word is seen --min_freq 100000 times")


# ----------------------------------------------------------------------------- checkpoints edited by hand
def edited(model, tmp_path, change) -> Path:
    ckpt = load_checkpoint(model, translator.STAGE)
    change(ckpt)
    path = tmp_path / "edited.pt"
    save_checkpoint(path, ckpt)
    return path


def set_in(key, name, value):
    return lambda ckpt: ckpt[key].__setitem__(name, value)


def itos(key, make):
    return lambda ckpt: ckpt[key].__setitem__("itos", make(ckpt[key]["itos"]))


CHECKPOINT_EDITS = [
    ("config missing a key", lambda c: c["config"].pop("hidden_dim"), "missing hidden_dim"),
    ("config with an extra key", set_in("config", "num_layers", 2), "unknown num_layers"),
    ("absurd size", set_in("config", "hidden_dim", 10 ** 9), "hidden_dim = '1000000000'"),
    ("size above the model limit", set_in("config", "embed_dim", 100_000), "embed_dim = '100000'"),
    ("size within limits, weights not", set_in("config", "hidden_dim", 4096), "has shape"),
    ("zero size", set_in("config", "attention_dim", 0), "attention_dim must be between 1 and 4096"),
    ("NaN dropout", set_in("config", "dropout", float("nan")), "dropout = 'nan'"),
    ("unknown attention type", set_in("config", "attention_type", "luong_magic"), "unknown attention type"),
    ("config not a dict", lambda c: c.__setitem__("config", [1, 2]), "no config dict"),
    ("unknown data set", lambda c: c.__setitem__("dataset", "wmt14"), "names the data set 'wmt14'"),
    ("no data set", lambda c: c.pop("dataset"), "names the data set 'None'"),
    ("source vocabulary shorter", itos("src_vocab", lambda v: v[:-1]), "its source vocabulary has"),
    ("target vocabulary longer", itos("tgt_vocab", lambda v: v + ["zzz"]), "its target vocabulary has"),
    ("duplicate token", itos("src_vocab", lambda v: v[:-1] + [v[4]]), "twice"),
    ("specials missing", itos("tgt_vocab", lambda v: v[1:] + ["zzz"]), "must start with"),
    ("token not a string", itos("src_vocab", lambda v: v[:-1] + [7]), "entry"),
    ("empty token", itos("src_vocab", lambda v: v[:-1] + [""]), "entry"),
    ("itos not a list", set_in("src_vocab", "itos", "abc"), "source vocabulary is not a dict"),
    ("min_freq not an integer", set_in("tgt_vocab", "min_freq", "2"), "min_freq '2'"),
    ("vocabulary missing", lambda c: c.pop("tgt_vocab"), "target vocabulary is not a dict"),
    ("weights missing", lambda c: c.__setitem__("model_state", {k: v for k, v in list(c["model_state"].items())[1:]}),
     "is missing"),
    ("weights not tensors", lambda c: c.__setitem__("model_state", {"a": 1}), "no dict of tensors"),
    ("extra weights", lambda c: c["model_state"].__setitem__("extra.weight", torch.zeros(2)),
     "unexpected extra.weight"),
    ("another model of the stage", lambda c: c.__setitem__("model", "transformer"), "holds a 'transformer' model"),
]


@pytest.mark.parametrize("what, change, message", CHECKPOINT_EDITS, ids=[c[0] for c in CHECKPOINT_EDITS])
def test_edited_checkpoints_are_refused_before_building(model, tmp_path, cli, what, change, message):
    path = edited(model, tmp_path, change)
    with mock.patch.object(torch.nn.Module, "load_state_dict", side_effect=AssertionError("loaded weights")):
        code, _, err = cli(translate.main, ["--checkpoint", path, SENTENCE])
    assert code == 2
    one_line(err, str(path), message)


def test_edited_checkpoint_through_evaluate_too(model, mt_data, tmp_path, cli):
    path = edited(model, tmp_path, set_in("config", "src_vocab_size", 10 ** 9))
    code, _, err = cli(evaluate.main, ["--checkpoint", path, "--data_dir", mt_data, "--out_dir", tmp_path / "e"])
    assert code == 2
    one_line(err, str(path), "src_vocab_size")


VOCAB_FILES = [
    ("not JSON", "{oops", "is not valid JSON"),
    ("not a dict", "[1, 2]", "lacks 'source'/'target'"),
    ("no target", '{"source": {"itos": []}}', "lacks 'source'/'target'"),
    ("duplicate", json.dumps({"source": {"itos": [*SPECIALS, "a", "a"]}, "target": {"itos": [*SPECIALS, "b"]}}),
     "holds 'a' twice"),
    ("number token", json.dumps({"source": {"itos": [*SPECIALS, 3]}, "target": {"itos": [*SPECIALS, "b"]}}),
     "entry 4 is not a token"),
    ("specials", json.dumps({"source": {"itos": ["a", *SPECIALS]}, "target": {"itos": [*SPECIALS, "b"]}}),
     "must start with"),
    ("min_freq", json.dumps({"source": {"itos": [*SPECIALS, "a"], "min_freq": -1},
                             "target": {"itos": [*SPECIALS, "b"]}}), "min_freq '-1'"),
]


@pytest.mark.parametrize("what, text, message", VOCAB_FILES, ids=[v[0] for v in VOCAB_FILES])
def test_vocabulary_files_edited_by_hand(tmp_path, what, text, message):
    path = tmp_path / "v.vocab.json"
    path.write_text(text)
    with pytest.raises(UserError, match=message) as info:
        load_vocabularies(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)
    path.write_bytes(b'{"source": "\xff"}')
    with pytest.raises(UserError, match="line 1: byte 0xff is not valid UTF-8"):
        load_vocabularies(path)


# ----------------------------------------------------------------------------- resume, run folder, lost work
def test_resume_with_other_model_settings_is_refused_and_keeps_last_pt(mt_data, tmp_path, cli):
    assert cli(train.main, train_args(mt_data, tmp_path, "--epochs", "1", "--max_steps", "2"))[0] == 0
    last = tmp_path / "run" / "last.pt"
    before = last.read_bytes()
    for argv, message in ((["--hidden_dim", "32"], "--hidden_dim 16 (now 32)"),
                          (["--attention_type", "luong_dot"], "--attention_type bahdanau (now luong_dot)"),
                          (["--attention_dim", "4"], "--attention_dim 8 (now 4)"),
                          (["--dropout", "0.5"], "--dropout"),
                          (["--no-tie_embeddings"], "--tie_embeddings True (now False)"),
                          (["--impl", "torch"], "--impl scratch (now torch)")):
        code, _, err = cli(train.main, train_args(mt_data, tmp_path, "--epochs", "2", "--resume", *argv))
        assert code == 2
        one_line(err, "--resume", message)
    # a last.pt whose config was edited (its flags unchanged) is refused before anything is built from it
    ckpt = load_checkpoint(last, translator.STAGE)
    ckpt["config"]["hidden_dim"] = 10 ** 9
    save_checkpoint(last, ckpt)
    code, _, err = cli(train.main, train_args(mt_data, tmp_path, "--epochs", "2", "--resume"))
    assert code == 2
    one_line(err, str(last), "hidden_dim")
    ckpt["config"]["hidden_dim"], ckpt["config"]["attention_dim"] = 16, 4
    ckpt["model_state"] = translator.Seq2Seq(translator.Seq2SeqConfig(**ckpt["config"])).state_dict()
    save_checkpoint(last, ckpt)
    code, _, err = cli(train.main, train_args(mt_data, tmp_path, "--epochs", "2", "--resume"))
    assert code == 2
    one_line(err, "--resume", "attention_dim 4 (flags make 8)")
    ckpt = load_checkpoint(last, translator.STAGE)
    ckpt["optimizer_state"] = {"state": {}, "param_groups": []}
    ckpt["config"]["attention_dim"] = 8
    ckpt["model_state"] = load_checkpoint(tmp_path / "ck" / "best.pt", translator.STAGE)["model_state"]
    save_checkpoint(last, ckpt)
    code, _, err = cli(train.main, train_args(mt_data, tmp_path, "--epochs", "2", "--resume"))
    assert code == 2
    one_line(err, "--resume", "cannot be resumed")
    assert before != last.read_bytes()                            # (the edits above were ours)


EDITED_COUNTERS = [
    ("global_step", -3, "global_step is '-3', not an integer"),
    ("epoch", "1", "epoch is '1', not an integer"),
    ("history", {"a": 1}, "history is"),
    ("wall_seconds", "abc", "wall_seconds is 'abc', not a number"),
    ("wall_seconds", float("nan"), "wall_seconds is nan"),
    ("wall_seconds", None, "wall_seconds is 'None'"),
    ("epoch", 99, "cannot reach: the file was edited"),
    ("global_step", 10**9, "cannot reach: the file was edited"),
    ("batch_in_epoch", 10**9, "cannot reach: the file was edited"),
]


@pytest.mark.parametrize("key, value, message", EDITED_COUNTERS, ids=[f"{k}={v!r}" for k, v, _ in EDITED_COUNTERS])
def test_resume_refuses_a_last_pt_with_edited_counters(model, mt_data, tmp_path, cli, key, value, message):
    shutil.copytree(model.parent.parent / "run", tmp_path / "run", ignore=shutil.ignore_patterns("run.lock"))
    last = tmp_path / "run" / "last.pt"
    ckpt = load_checkpoint(last, translator.STAGE)
    ckpt[key] = value
    save_checkpoint(last, ckpt)
    before = last.read_bytes()
    code, _, err = cli(train.main, train_args(mt_data, tmp_path, "--epochs", "2", "--resume"))
    one_error_line(code, err, "--resume:", str(last), message)
    assert last.read_bytes() == before


def test_a_run_folder_in_use_is_refused_and_the_best_model_kept(mt_data, tmp_path, cli):
    assert cli(train.main, train_args(mt_data, tmp_path, "--epochs", "1", "--max_steps", "2"))[0] == 0
    best, vocab = tmp_path / "ck" / "best.pt", tmp_path / "ck" / "best.vocab.json"
    kept = best.read_bytes(), vocab.read_bytes()
    holder = {"pid": os.getppid(), "host": os.uname().nodename, "command": "python train.py", "started": "now"}
    (tmp_path / "run" / "run.lock").write_text(json.dumps(holder))
    code, _, err = cli(train.main, train_args(mt_data, tmp_path, "--epochs", "1", "--max_steps", "2"))
    assert code == 2
    one_line(err, "is in use by process", str(os.getppid()))
    assert (best.read_bytes(), vocab.read_bytes()) == kept


def test_outputs_that_cannot_be_written_lose_nothing(mt_data, tmp_path, cli):
    assert cli(train.main, train_args(mt_data, tmp_path, "--epochs", "1", "--max_steps", "2"))[0] == 0
    best, vocab = tmp_path / "ck" / "best.pt", tmp_path / "ck" / "best.vocab.json"
    kept = best.read_bytes(), vocab.read_bytes()
    blocker = a_file_in_the_way(tmp_path)
    for argv in (["--out_dir", blocker / "run"], ["--out_dir", UNWRITABLE], ["--checkpoint", blocker / "best.pt"]):
        code, _, err = cli(train.main, [*train_args(mt_data, tmp_path, "--max_steps", "2", "--min_freq", "1"), *argv])
        assert code == 2
        one_line(err, "cannot use")
    # a new run that fails on its data (or is stopped before its first epoch) leaves the old model's vocabulary
    code, _, err = cli(train.main, [*train_args(mt_data, tmp_path, "--min_freq", "1", "--max_len", "1")])
    assert code == 2
    one_line(err, "no training pairs left")
    assert (best.read_bytes(), vocab.read_bytes()) == kept


# ----------------------------------------------------------------------------- the interactive prompt
def session(model, monkeypatch, cli, lines, *flags):
    monkeypatch.setattr("sys.stdin", TypedLines(lines))
    code, out, err = cli(translate.main, ["--checkpoint", model, "--interactive", *flags])
    assert code == 0, err
    return out, err


REPL_LINES = [
    (":beam ²", "(:beam kept 5: beam must be an integer"),
    (":beam 1e3", "(:beam kept 5"),
    (":beam 99999999999999999999999999", "(:beam kept 5"),
    (":alpha nan", "(:alpha kept 1.0"),
    (":alpha 1e-320", "(:alpha kept 1.0"),
    (":alpha -inf", "(:alpha kept 1.0"),
    (":alpha", "alpha = 1.0  (:alpha VALUE sets it)"),
    (":temperature nan", "(:temperature does not apply here"),
    (":seed 99999999999999999999999", "(:seed does not apply here"),
    (":", "(unknown command :; type :help)"),
    ("::::", "(unknown command ::::; type :help)"),
    (":heatmap " + UNWRITABLE + ".png", "(:heatmap kept off: :heatmap /proc/my_llm_no_such/x.png cannot be written"),
    (":heatmap map.gif", "(:heatmap kept off: :heatmap 'map.gif': the file name must end in .png"),
    (":heatmap a\x00.png", "(:heatmap kept off"),
    ("\x00\x01\x1b[31m", "fr> "),                  # words the model does not know: translated all the same
    ("\u202e\u200b\ufeff", "fr> "),
    ("dog " * 5000, "(that sentence has 5,000 words and marks"),
    ("   ", "(empty line"),
    ("🐕 " + SENTENCE, "fr> "),
]


def test_the_prompt_survives_every_line(model, monkeypatch, cli):
    out, _ = session(model, monkeypatch, cli, [line for line, _ in REPL_LINES] + [":settings"])
    for line, answer in REPL_LINES:
        assert answer in out, (line, answer)
    assert out.rstrip().endswith("en> beam 5, alpha 1.0\nen>")            # nothing refused changed a setting


def test_prompt_heatmap_that_becomes_unwritable_keeps_the_translation(model, tmp_path, monkeypatch, cli):
    picture = tmp_path / "later" / "map.png"

    def lines():
        yield f":heatmap {picture}"
        (tmp_path / "later").write_text("now a file is in the way\n")   # the folder can no longer be made
        yield SENTENCE

    out, _ = session(model, monkeypatch, cli, lines())
    assert f"heatmap = {picture}" in out and "fr> " in out
    assert out.index("fr> ") < out.index("(cannot write the heatmap")


def test_prompt_line_with_undecodable_bytes(model, monkeypatch, cli):
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b"A dog \xff\xfe is running.\n:q\n"),
                                                      encoding="utf-8", errors="strict"))
    code, out, err = cli(translate.main, ["--checkpoint", model, "--interactive"])
    assert code == 0, err
    assert "not valid UTF-8" in out + err and "fr> " in out


# ----------------------------------------------------------------------------- --input files and stdin
def test_input_files_odd_and_broken(model, tmp_path, cli):
    cases = [
        (b"A dog.\n\xe9t\xe9\n", ["in.txt, line 2: byte 0xe9 is not valid UTF-8"]),
        (b"A dog.\n" + b"dog " * 1000 + b"\n", ["--input", "in.txt, line 2 has 1,000 words and marks"]),
    ]
    for data, messages in cases:
        (tmp_path / "in.txt").write_bytes(data)
        code, out, err = cli(translate.main, ["--checkpoint", model, "--input", tmp_path / "in.txt"])
        assert code == 2 and out == ""
        one_line(err, *messages)
    (tmp_path / "in.txt.gz").write_bytes(gzip.compress(b"A dog.\n")[:-6])
    code, _, err = cli(translate.main, ["--checkpoint", model, "--input", tmp_path / "in.txt.gz"])
    assert code == 2
    one_line(err, "in.txt.gz is not a complete gzip file")
    # empty lines, blank lines, control characters and CRLF endings: one output line per input line
    (tmp_path / "odd.txt").write_bytes(b"\n   \nA dog.\r\n\x00\x07\n\xe2\x80\xae\n")
    code, out, err = cli(translate.main, ["--checkpoint", model, "--input", tmp_path / "odd.txt"])
    assert code == 0, err
    assert len(out.split("\n")) == 6 and out.split("\n")[:2] == ["", ""]


def stdin_bytes(monkeypatch, data: bytes) -> None:
    """stdin as Python makes it on Linux: UTF-8, lines ending at "\n" only (run_main sets errors="replace")."""
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(data), encoding="utf-8", errors="strict",
                                                      newline="\n"))


def test_input_from_stdin(model, monkeypatch, cli):
    stdin_bytes(monkeypatch, b"A dog is running.\n\nA man \xff\xfe is sitting.\n")
    code, out, err = cli(translate.main, ["--checkpoint", model, "--input", "-"])
    assert code == 0, err
    assert len(out.splitlines()) == 3 and out.splitlines()[1] == ""
    assert "(note: stdin held bytes that are not valid UTF-8; they were replaced by \ufffd)" in err
    stdin_bytes(monkeypatch, b"A dog.\n" + b"x " * 100_000)
    code, _, err = cli(translate.main, ["--checkpoint", model, "--input", "-"])
    assert code == 2
    one_line(err, "stdin, line 2 has 100,000 words and marks")


# ----------------------------------------------------------------------------- property-based
@pytest.fixture(scope="module")
def loaded(model):
    return translator.load_model(model, torch.device("cpu"))


@HYPOTHESIS
@given(st.text())
def test_tokenizer_and_vocabulary_take_any_text(text):
    tokens = tokenize(text)
    assert detokenize(tokens) == " ".join(detokenize(tokens).split())
    vocab = Vocabulary.build([tokens], min_freq=1)
    ids = vocab.encode(tokens)
    assert all(0 <= i < len(vocab) for i in ids)
    assert vocab.decode(ids + [10 ** 6, -5]) is not None


@HYPOTHESIS
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
                    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
                    max_leaves=20),
       st.lists(st.text(max_size=8), max_size=8))
def test_vocabulary_from_any_json(data, words):
    words = [*SPECIALS, *words]
    for candidate in (data, {"itos": data}, {"itos": words}, {"itos": words, "min_freq": data}):
        try:
            vocab = Vocabulary.from_dict(candidate)
        except UserError as err:
            assert "\n" not in str(err)
        else:
            assert len(set(vocab.itos)) == len(vocab) and vocab.itos[:4] == list(SPECIALS)


@HYPOTHESIS
@given(st.binary(max_size=300), st.binary(max_size=300), st.sampled_from(["multi30k", "tatoeba"]))
def test_corpus_readers_take_any_bytes(tmp_path, en, fr, dataset):
    folder = tmp_path / "hyp"
    (folder / "multi30k").mkdir(parents=True, exist_ok=True)
    (folder / "fra_eng_tatoeba").mkdir(parents=True, exist_ok=True)
    for name in ("train", "val", "test_2016_flickr"):
        (folder / "multi30k" / f"{name}.en.gz").write_bytes(gzip.compress(en))
        (folder / "multi30k" / f"{name}.fr.gz").write_bytes(gzip.compress(fr))
    (folder / "fra_eng_tatoeba" / "fra.txt.gz").write_bytes(en[:5] + fr)             # not even gzip, most often
    try:
        pairs = load_pairs(dataset, "train", str(folder))
    except UserError as err:
        assert "\n" not in str(err)
    else:
        assert all(isinstance(s, str) and isinstance(t, str) for s, t in pairs)


@HYPOTHESIS
@given(st.lists(st.text(max_size=200), min_size=1, max_size=4), st.integers(1, 4), st.booleans())
def test_translate_sentences_take_any_text(loaded, sentences, beam, unk_replace):
    model, src_vocab, tgt_vocab, _ = loaded
    results = translator.translate_sentences(model, src_vocab, tgt_vocab, sentences, torch.device("cpu"), beam,
                                             unk_replace=unk_replace, return_attention=True)
    assert len(results) == len(sentences) and all(isinstance(r.text, str) for r in results)


COMMANDS = [":beam", ":b", ":alpha", ":heatmap", ":seed", ":temperature", ":top_k", ":settings", ":help", ":", "::"]


@HYPOTHESIS
@given(st.lists(st.one_of(st.text(max_size=80), st.builds(lambda c, v: f"{c} {v}", st.sampled_from(COMMANDS),
                                                          st.text(max_size=30))), max_size=6))
def test_the_prompt_survives_any_lines(loaded, tmp_path, monkeypatch, lines):
    monkeypatch.chdir(tmp_path)                       # where a random ":heatmap NAME.png" would be drawn
    model, src_vocab, tgt_vocab, _ = loaded
    args = translate.build_parser().parse_args(["--interactive"])
    typed = iter([line for line in lines if ":q" not in line.lower() and ":exit" not in line.lower()])

    def read(prompt):
        line = next(typed, None)
        if line is None:
            raise EOFError
        return line

    with mock.patch("builtins.input", read):
        assert translate.interactive(model, src_vocab, tgt_vocab, args, torch.device("cpu")) == 0


@HYPOTHESIS
@given(st.binary(max_size=400))
def test_input_file_and_stdin_take_any_bytes(model, tmp_path, monkeypatch, cli, data):
    (tmp_path / "any.txt").write_bytes(data)
    for source in (tmp_path / "any.txt", "-"):
        stdin_bytes(monkeypatch, data)
        code, out, err = cli(translate.main, ["--checkpoint", model, "--input", source, "--beam_size", "2",
                                              "--num_threads", "1"])
        assert code in (0, 2), err
        if code == 2:
            one_line(err)
        else:
            assert out.count("\n") == len(translate.split_lines(data.decode("utf-8", "replace")))


@HYPOTHESIS
@given(st.text(min_size=1, max_size=100).filter(lambda s: not s.startswith("-")))
def test_translate_takes_any_sentence_on_the_command_line(model, cli, sentence):
    code, out, err = cli(translate.main, ["--checkpoint", model, "--beam_size", "2", "--num_threads", "1", sentence])
    assert code in (0, 2), err
    if code == 2:
        one_line(err)
    else:
        assert out.endswith("\n") and out.count("\n") == 1


def test_stdin_encoding_is_the_course_policy():
    """run_main reads stdin with errors='replace', so undecodable bytes never raise mid-read (a sanity check of the
    stand-in the tests above use: a strict TextIOWrapper, which text_policy reconfigures)."""
    stream = io.TextIOWrapper(io.BytesIO(b"\xff\n"), encoding="utf-8", errors="strict")
    with mock.patch.object(sys, "stdin", stream):
        from scripts.common import text_policy
        text_policy()
        assert sys.stdin.read() == "\ufffd\n"
