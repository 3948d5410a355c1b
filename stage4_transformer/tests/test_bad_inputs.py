"""Whatever a learner types or points the stage 4 programs at ends in one line on stderr and exit status 2 (or, at
the interactive prompt, in one line and the next prompt): flags out of range, text that is not UTF-8, odd data files,
edited checkpoints and vocabularies, folders that cannot be written, a second training into a busy run folder.
Nothing written before is lost. Property-based tests throw arbitrary text at the prompt, the tokenizer and the
translator."""
import builtins
import contextlib
import copy
import gzip
import io
import json
import os
import random
import shutil
import socket
import sys
from pathlib import Path
from unittest import mock

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scripts.common import UserError, checkpoint_header
from scripts.testing import caption, fake_children, one_error_line
from stage4_transformer import bench, evaluate, train, train_classifier, translate
from stage4_transformer.data.batches import encode_pairs
from stage4_transformer.data.subword import SubwordVocab
from stage4_transformer.models.transformer import Transformer, TransformerConfig
from stage4_transformer.translator import MODEL_NAME, STAGE, load_model, translate_sentences

CPU = torch.device("cpu")
TINY = ["--d_model", "16", "--n_heads", "2", "--layers", "1", "--d_ff", "32", "--vocab_size", "120",
        "--max_tokens", "512", "--warmup_steps", "2", "--num_threads", "1"]
# any character, lone surrogates (bytes that were not UTF-8) and control characters included
ANY_TEXT = st.text(st.characters(blacklist_categories=()), max_size=200)


def one_line(result, *words):
    """`cli`'s result: exit status 2 and exactly one line on stderr that says each of `words`."""
    one_error_line(result[0], result[2], *words)


# ----------------------------------------------------------------------------- a tiny model, saved as train.py does
def tiny_vocab(size=120, seed=0):
    rng = random.Random(seed)
    return SubwordVocab.train((text for _ in range(300) for text in caption(rng)), size, min_frequency=1,
                              split_punctuation=True)


def tiny_payload(vocab):
    torch.manual_seed(0)
    config = TransformerConfig(src_vocab_size=len(vocab), tgt_vocab_size=len(vocab), d_model=16, n_heads=2,
                               n_encoder_layers=1, n_decoder_layers=1, d_ff=32, dropout=0.0, max_len=40,
                               output_ids=list(range(len(vocab))))
    model = Transformer(config)
    return {**checkpoint_header(STAGE, MODEL_NAME), "config": config.to_dict(), "dataset": "multi30k",
            "vocab": vocab.to_json(), "args": {}, "epoch": 1, "best_val_bleu": 1.0, "history": [],
            "model_state": {k: v.clone() for k, v in model.state_dict().items()}}


@pytest.fixture(scope="module")
def payload():
    return tiny_payload(tiny_vocab())


@pytest.fixture(scope="module")
def tiny_model(payload, tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "tiny.pt"
    torch.save(payload, path)
    model, vocab, _ = load_model(path, CPU)
    return path, model, vocab


# ----------------------------------------------------------------------------- flags
@pytest.mark.parametrize("program, argv, flag", [
    # silent wrong training: each of these used to start a run
    (train, ["--clip", "-1"], "--clip"), (train, ["--limit", "-5"], "--limit"), (train, ["--max_steps", "-1"],
                                                                                   "--max_steps"),
    (train, ["--lr", "0"], "--lr"), (train, ["--lr", "nan"], "--lr"), (train, ["--lr", "inf"], "--lr"),
    (train, ["--lr", "1e-320"], "--lr"), (train, ["--epochs", "0"], "--epochs"), (train, ["--epochs", "²"], "--epochs"),
    (train, ["--epochs", "2.5"], "--epochs"), (train, ["--d_model", str(10 ** 9)], "--d_model"),
    (train, ["--d_model", "30", "--n_heads", "4"], "--n_heads"), (train, ["--d_model", "31", "--n_heads", "1"],
                                                                  "--d_model"),
    (train, ["--n_heads", "0"], "--n_heads"), (train, ["--max_len", "0"], "--max_len"),
    (train, ["--max_len", str(10 ** 6)], "--max_len"), (train, ["--dropout", "1"], "--dropout"),
    (train, ["--label_smoothing", "1"], "--label_smoothing"), (train, ["--warmup_steps", "-1"], "--warmup_steps"),
    (train, ["--weight_decay", "-1"], "--weight_decay"), (train, ["--lr", "0.5", "--weight_decay", "2"],
                                                          "--weight_decay"),
    (train, ["--vocab_size", "10"], "--vocab_size"), (train, ["--max_tokens", "0"], "--max_tokens"),
    (train, ["--average_last", "-1"], "--average_last"), (train, ["--seed", str(2 ** 64)], "--seed"),
    (train, ["--num_threads", "-1"], "--num_threads"),
    (translate, ["--beam_size", "0", "hi"], "--beam_size"), (translate, ["--beam_size", "²", "hi"], "--beam_size"),
    (translate, ["--beam_size", "65", "hi"], "--beam_size"), (translate, ["--alpha", "nan", "hi"], "--alpha"),
    (translate, ["--alpha", "-1", "hi"], "--alpha"), (translate, ["--alpha", "1e-320", "hi"], "--alpha"),
    (translate, ["--batch_size", "0", "hi"], "--batch_size"),
    (translate, ["--batch_size", str(10 ** 6), "hi"], "--batch_size"),
    (evaluate, ["--limit", "-5"], "--limit"), (evaluate, ["--beam_size", "0"], "--beam_size"),
    (evaluate, ["--alpha", "inf"], "--alpha"), (evaluate, ["--batch_size", "0"], "--batch_size"),
    (train_classifier, ["--clip", "-1"], "--clip"), (train_classifier, ["--limit", "-5"], "--limit"),
    (train_classifier, ["--lr", "0"], "--lr"), (train_classifier, ["--patience", "0"], "--patience"),
    (train_classifier, ["--val_fraction", "1"], "--val_fraction"), (train_classifier, ["--epochs", "0"], "--epochs"),
    (train_classifier, ["--d_model", "31", "--n_heads", "1"], "--d_model"),
    (train_classifier, ["--dropout", "1"], "--dropout"), (train_classifier, ["--max_len", "0"], "--max_len"),
    (train_classifier, ["--batch_size", "-3"], "--batch_size"),
    (bench, ["--num_threads", "-1"], "--num_threads"),
    # the rest of train_classifier.py's flags
    (train_classifier, ["--layers", "0"], "--layers"), (train_classifier, ["--n_heads", "0"], "--n_heads"),
    (train_classifier, ["--d_ff", "0"], "--d_ff"), (train_classifier, ["--vocab_size", "10"], "--vocab_size"),
    (train_classifier, ["--max_len", str(10 ** 6)], "--max_len"), (train_classifier, ["--lr", "nan"], "--lr"),
    (train_classifier, ["--val_fraction", "-0.1"], "--val_fraction"),
    (train_classifier, ["--dataset", "wikipedia"], "--dataset"), (train_classifier, ["--device", "tpu"], "--device"),
    (train_classifier, ["--seed", "-1"], "--seed"), (train_classifier, ["--resume", "--restart"], "--restart"),
    # and evaluate.py's
    (evaluate, ["--beam_size", "65"], "--beam_size"), (evaluate, ["--alpha", "-1"], "--alpha"),
    (evaluate, ["--split", "dev"], "--split"), (evaluate, ["--dataset", "wmt"], "--dataset"),
    (evaluate, ["--batch_size", str(10 ** 6)], "--batch_size"), (evaluate, ["--limit", "2.5"], "--limit"),
    # an empty path (an unset shell variable) is refused, not read as "the default"
    (translate, ["--input", ""], "--input"), (translate, ["--input", "x.en", "--output", " "], "--output"),
    (translate, ["A dog.", "--heatmap", ""], "--heatmap"), (evaluate, ["--out_dir", ""], "--out_dir"),
    (evaluate, ["--metrics_out", ""], "--metrics_out"), (evaluate, ["--checkpoint", ""], "--checkpoint"),
    (train_classifier, ["--out_dir", ""], "--out_dir"), (train_classifier, ["--checkpoint", " "], "--checkpoint"),
    (train_classifier, ["--data_dir", ""], "--data_dir"), (bench, ["--data_dir", ""], "--data_dir"),
    (bench, ["--data_dir", "/nonexistent/data"], "--data_dir"),
    # --tables_only runs nothing: a flag of a run is refused, not ignored
    (bench, ["--tables_only", "--parts", "quick"], "--tables_only"), (bench, ["--tables_only", "--data_dir", "/tmp"],
                                                                      "--tables_only"),
    (bench, ["--tables_only", "--num_threads", "1"], "--tables_only"),
    # translate.py's sentence and outputs, checked before a model loads
    (translate, [""], "empty sentence"), (translate, [" ", "\t"], "empty sentence"),
    (translate, ["A dog.", "--output", "x.fr"], "--output"),
])
def test_a_bad_flag_is_one_line_before_any_work(cli, program, argv, flag):
    one_line(cli(program.main, argv), flag)


def test_help_says_the_allowed_values(cli):
    code, out, _ = cli(train.main, ["--help"])
    assert code == 0 and "allowed: 0 (off) or a number > 0" in " ".join(out.split())
    code, out, _ = cli(train_classifier.main, ["--help"])
    assert code == 0 and "allowed: a number in (0, 1)" in " ".join(out.split())


def test_clip_zero_turns_clipping_off(monkeypatch, mt_data, tmp_path, cli):
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", mock.Mock(side_effect=AssertionError("clipped")))
    code, _, err = cli(train.main, ["--data_dir", mt_data, "--out_dir", tmp_path / "run", "--checkpoint",
                                    tmp_path / "best.pt", *TINY, "--clip", "0", "--max_steps", "1", "--limit", "60",
                                    "--val_limit", "3", "--epochs", "1", "--average_last", "0"])
    assert code == 0, err


def test_an_empty_sentence_is_refused_before_the_model_line(tiny_model, cli):
    for argv in ([""], ["   "], [" ", "\t"]):
        code, out, err = cli(translate.main, ["--checkpoint", tiny_model[0], *argv])
        one_error_line(code, err, "empty sentence")             # one line in all: no "model: ..." before it
        assert out == ""


def test_output_that_is_the_input_file_is_refused(cli, tmp_path, monkeypatch):
    source = tmp_path / "in.en"
    source.write_text("A dog runs.\n")
    (tmp_path / "symlink.en").symlink_to(source)
    os.link(source, tmp_path / "hardlink.en")
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path)
    for output in (source, "in.en", "./sub/../in.en", tmp_path / "symlink.en", tmp_path / "hardlink.en"):
        code, out, err = cli(translate.main, ["--checkpoint", "/nonexistent/never_loaded.pt", "--input", "in.en",
                                              "--output", output])
        one_error_line(code, err, f"--output {output} is the --input file")
        assert out == ""
    assert source.read_text() == "A dog runs.\n"


def test_outputs_are_checked_before_the_model_loads_and_scores(cli, tmp_path, monkeypatch):
    monkeypatch.setattr(translate, "load_model", mock.Mock(side_effect=AssertionError("loaded a model")))
    monkeypatch.setattr(evaluate, "load_model", mock.Mock(side_effect=AssertionError("loaded a model")))
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    source = tmp_path / "in.en"
    source.write_text("A dog runs.\n")
    ckpt = ["--checkpoint", tmp_path / "never_loaded.pt"]
    (tmp_path / "never_loaded.pt").write_bytes(b"")
    one_line(cli(translate.main, [*ckpt, "--input", source, "--output", tmp_path]), "--output", "is a folder")
    one_line(cli(translate.main, [*ckpt, "--input", source, "--output", blocker / "x"]), "--output", str(blocker))
    one_line(cli(translate.main, [*ckpt, "A dog.", "--heatmap", "/proc/my_llm_no/x.png"]), "--heatmap")
    one_line(cli(evaluate.main, [*ckpt, "--out_dir", blocker / "eval"]), "--out_dir", str(blocker))
    one_line(cli(evaluate.main, [*ckpt, "--out_dir", tmp_path / "eval", "--metrics_out", tmp_path]),
             "--metrics_out", "is a folder")
    assert not (tmp_path / "eval").exists()


def test_bench_publishes_results_of_the_reference_data_only(mt_data, tiny_data, cli, monkeypatch):
    """A copy of the data that is not the shared one (a 50-line Multi30k trains and scores without an error) is
    refused before any part runs, naming the file; README.md and results/ keep their bytes. (Tests that run the
    bench on tiny data call its parts, or monkeypatch check_reference_data.)"""
    commands = fake_children(monkeypatch, 0)
    monkeypatch.setattr(bench, "speed", lambda *args, **kwargs: pytest.fail("a part ran before the check"))
    readme, overview = (bench.STAGE_DIR / "README.md").read_bytes(), (bench.RESULTS / "overview.json").read_bytes()
    for parts in (["quick"], ["heatmaps", "speed"]):
        one_line(cli(bench.main, ["--parts", *parts, "--data_dir", mt_data]),
                 str(mt_data / "multi30k" / "train.en.gz"), "not the reference copy", "train.py")
    one_line(cli(bench.main, ["--parts", "classify", "--data_dir", tiny_data]),
             str(tiny_data / "imdb" / "train.jsonl.gz"), "not the reference copy")
    assert commands == []
    assert (bench.STAGE_DIR / "README.md").read_bytes() == readme
    assert (bench.RESULTS / "overview.json").read_bytes() == overview


def test_bench_accepts_the_reference_data(real_data, cli, monkeypatch):
    monkeypatch.setattr(bench, "quick_run", lambda extra: sys.exit(5))
    code, _, err = cli(bench.main, ["--parts", "quick", "classify", "--data_dir", real_data])
    assert (code, err) == (5, "")


def test_bench_stops_at_a_failed_program_without_a_second_line(cli, monkeypatch):
    commands = fake_children(monkeypatch, 2)            # translate.py has said why, in its one line
    code, out, err = cli(bench.main, ["--parts", "heatmaps"])
    assert (code, err) == (2, "") and len(commands) == 1 and "translate.py" in out
    fake_children(monkeypatch, -9)                       # killed (out of memory): it could say nothing itself
    code, _, err = cli(bench.main, ["--parts", "quick"])
    one_error_line(code, err, "train.py was stopped by signal 9")


# ----------------------------------------------------------------------------- text that is not UTF-8
def test_an_argument_that_is_not_utf8_is_one_line(cli):
    one_line(cli(translate.main, ["A dog \udcff runs."]), "not valid UTF-8")


def test_an_input_file_that_is_not_utf8_names_its_line(tiny_model, tmp_path, cli):
    bad = tmp_path / "in.en"
    bad.write_bytes(b"A dog runs.\nA cat \xff sleeps.\n")
    one_line(cli(translate.main, ["--checkpoint", tiny_model[0], "--input", bad]), str(bad), "line 2")


def test_standard_input_that_is_not_utf8_is_translated_with_a_note(tiny_model, monkeypatch, cli):
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"A dog \xff runs.\n\nTwo men.\n"), "utf-8"))
    code, out, err = cli(translate.main, ["--checkpoint", tiny_model[0], "--input", "-", "--beam_size", "1"])
    assert code == 0, err
    assert len(out.split("\n")) == 4 and "not valid UTF-8" in err


def test_the_prompt_survives_bytes_that_are_not_utf8(tiny_model, capsys):
    out = run_prompt(tiny_model, ["A dog \udcff runs.", "\udcff", ":beam \udcff", "Two men."])
    assert out.count("fr> ") == 3 and "not valid UTF-8" in out


@pytest.mark.parametrize("damage", ["not utf8", "bad gzip", "empty line", "uneven"])
def test_a_damaged_corpus_file_is_one_line_naming_it(mt_data, tmp_path, cli, damage):
    data = tmp_path / "data"
    shutil.copytree(mt_data, data)
    path = data / "multi30k" / "train.en.gz"
    lines = gzip.decompress(path.read_bytes()).split(b"\n")
    if damage == "not utf8":
        lines[7] = b"A man \xff\xfe runs."
    elif damage == "empty line":
        lines[7] = b""
    elif damage == "uneven":
        lines = lines[:-5]
    path.write_bytes(gzip.compress(b"\n".join(lines)))
    if damage == "bad gzip":
        path.write_bytes(path.read_bytes()[:200])
    one_line(cli(train.main, ["--data_dir", data, "--out_dir", tmp_path / "run", "--checkpoint",
                               tmp_path / "best.pt", *TINY]), "train.en.gz")


# ----------------------------------------------------------------------------- edited checkpoints and vocabularies
def vocab_edit(change):
    def edit(ckpt):
        data = json.loads(ckpt["vocab"])
        change(data["model"], data)
        ckpt["vocab"] = json.dumps(data)
    return edit


def set_config(**values):
    return lambda ckpt: ckpt["config"].update(values)


CHECKPOINT_EDITS = {
    "missing config key": (lambda ckpt: ckpt["config"].pop("max_len"), "missing max_len"),
    "extra config key": (set_config(rotary=True), "unknown rotary"),
    "absurd d_model": (set_config(d_model=10 ** 9), "d_model"),
    "absurd max_len": (set_config(max_len=10 ** 7), "max_len"),
    "zero heads": (set_config(n_heads=0), "n_heads"),
    "unknown model type": (set_config(impl="rnn"), "impl"),
    "dropout out of range": (set_config(dropout=1.5), "dropout"),
    "output ids out of range": (set_config(output_ids=[0, 1, 2, 3, 10 ** 6]), "output_ids"),
    "output ids not ascending": (set_config(output_ids=[0, 1, 2, 3, 9, 8]), "output_ids"),
    "vocabulary longer than the model": (set_config(src_vocab_size=100, tgt_vocab_size=100,
                                                                output_ids=[0, 1, 2, 3]), "entries"),
    "vocabulary shorter than the model": (lambda ckpt: ckpt.update(vocab=tiny_vocab(110, seed=1).to_json()),
                                          "entries"),
    "vocab: duplicate id": (vocab_edit(lambda m, d: m["vocab"].update({"▁man": 4})), "ids"),
    "vocab: id out of range": (vocab_edit(lambda m, d: m["vocab"].update({"▁man": 10 ** 6})), "ids"),
    "vocab: merge of unknown pieces": (vocab_edit(lambda m, d: m["merges"].append(["zz", "qq"])), "merge"),
    "vocab: id that is a string": (vocab_edit(lambda m, d: m["vocab"].update({"▁man": "7"})), "ids"),
    "vocab: a normalizer added": (vocab_edit(lambda m, d: d.update(normalizer={"type": "Lowercase"})), "normalizer"),
    "vocab: not JSON": (lambda ckpt: ckpt.update(vocab="{nope"), "subword vocabulary"),
    "vocab: not text": (lambda ckpt: ckpt.update(vocab=[1, 2]), "subword vocabulary"),
    "weights: wrong shape": (lambda ckpt: ckpt["model_state"].update({"generator.bias": torch.zeros(3)}),
                             "generator.bias"),
    "weights: missing": (lambda ckpt: ckpt["model_state"].pop("encoder_norm.weight"), "encoder_norm.weight"),
    "no data set": (lambda ckpt: ckpt.pop("dataset"), "data set"),
    "another stage": (lambda ckpt: ckpt.update(stage="stage3_attention_seq2seq"), "stage3"),
}


@pytest.mark.parametrize("case", sorted(CHECKPOINT_EDITS))
def test_an_edited_checkpoint_is_refused_before_the_model_is_built(payload, tmp_path, cli, monkeypatch, case):
    edit, words = CHECKPOINT_EDITS[case]
    ckpt = copy.deepcopy(payload)
    edit(ckpt)
    path = tmp_path / "edited.pt"
    torch.save(ckpt, path)
    real_init = Transformer.__init__

    def guarded_init(self, config):     # a model is built only on the meta device (no memory) before the checks end
        assert config.d_model < 10 ** 6 and config.max_len < 10 ** 6, "built from an absurd config"
        real_init(self, config)
    monkeypatch.setattr(Transformer, "__init__", guarded_init)
    one_line(cli(translate.main, ["--checkpoint", path, "A dog runs."]), str(path), words)


@pytest.mark.parametrize("case", ["absurd d_model", "vocabulary longer than the model", "weights: missing",
                                  "unknown model type"])
def test_an_edited_checkpoint_is_refused_by_evaluate_too(payload, tmp_path, mt_data, cli, case):
    edit, words = CHECKPOINT_EDITS[case]
    ckpt = copy.deepcopy(payload)
    edit(ckpt)
    path = tmp_path / "edited.pt"
    torch.save(ckpt, path)
    code, out, err = cli(evaluate.main, ["--checkpoint", path, "--data_dir", mt_data, "--out_dir", tmp_path / "e"])
    one_error_line(code, err, str(path), words)
    assert "greedy" not in out and not (tmp_path / "e").exists()


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04 truncated", os.urandom(300)])
def test_a_file_that_is_no_checkpoint_is_one_line(tmp_path, cli, content):
    path = tmp_path / "broken.pt"
    path.write_bytes(content)
    one_line(cli(evaluate.main, ["--checkpoint", path]), str(path))


@settings(max_examples=60, deadline=None)
@given(path=st.sampled_from([("model", "vocab"), ("model", "merges"), ("model",), ("added_tokens",),
                             ("pre_tokenizer",), ("decoder",), ()]),
       value=st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
                          lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner,
                                                                                       max_size=3), max_leaves=6))
def test_a_vocabulary_edited_anyhow_loads_checked_or_is_refused(path, value):
    data = json.loads(VOCAB_JSON)
    node = data
    for key in path[:-1]:
        node = node[key]
    if path:
        node[path[-1]] = value
    else:
        data = value
    try:
        vocab = SubwordVocab.from_json(json.dumps(data))
    except UserError as err:
        assert "\n" not in str(err)
        return
    ids = vocab.encode("A man is running in the park.")      # a vocabulary that loads gives ids it has rows for
    assert all(0 <= i < len(vocab) for i in ids)


VOCAB_JSON = tiny_vocab().to_json()


# ----------------------------------------------------------------------------- output folders and run folders
def test_an_unwritable_checkpoint_folder_loses_nothing(mt_data, tmp_path, cli):
    best = tmp_path / "ck" / "best.pt"
    best.parent.mkdir()
    best.write_bytes(b"the previous best model")
    best.with_suffix(".tokenizer.json").write_bytes(b"its vocabulary")
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    one_line(cli(train.main, ["--data_dir", mt_data, "--out_dir", blocker / "run", "--checkpoint", best, *TINY]),
             str(blocker))
    assert best.read_bytes() == b"the previous best model"
    assert best.with_suffix(".tokenizer.json").read_bytes() == b"its vocabulary"
    one_line(cli(train.main, ["--data_dir", mt_data, "--out_dir", tmp_path / "run", "--checkpoint",
                               blocker / "best.pt", *TINY]), str(blocker))


def test_unwritable_outputs_of_translate_and_evaluate(tiny_model, mt_data, tmp_path, cli):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    source = tmp_path / "in.en"
    source.write_text("A dog runs.\n")
    one_line(cli(translate.main, ["--checkpoint", tiny_model[0], "--input", source, "--output",
                                   blocker / "out.fr"]), "--output")
    one_line(cli(translate.main, ["--checkpoint", tiny_model[0], "A dog.", "--heatmap", blocker / "map.png"]),
             "heatmap")
    one_line(cli(evaluate.main, ["--checkpoint", tiny_model[0], "--data_dir", mt_data, "--limit", "3",
                                  "--beam_size", "2", "--out_dir", blocker / "eval"]), str(blocker))


@pytest.mark.parametrize("program", [train, train_classifier])
def test_a_busy_run_folder_is_refused(program, tmp_path, tiny_data, mt_data, cli):
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.lock").write_text(json.dumps({"pid": 1, "host": socket.gethostname(), "command": "python train.py",
                                              "started": "now"}))
    data = mt_data if program is train else tiny_data
    one_line(cli(program.main, ["--data_dir", data, "--out_dir", run, "--checkpoint", tmp_path / "best.pt"]),
             "in use")


# ----------------------------------------------------------------------------- --resume
@pytest.fixture(scope="module")
def stopped_run(mt_data, tmp_path_factory):
    """A tiny run stopped after one step (one epoch, validated): its last.pt to resume from."""
    from scripts.common import run_main
    folder = tmp_path_factory.mktemp("resume")
    argv = ["--data_dir", str(mt_data), "--out_dir", str(folder / "run"), "--checkpoint", str(folder / "best.pt"),
            *TINY, "--epochs", "2", "--limit", "60", "--val_limit", "3", "--average_last", "0"]
    with pytest.raises(SystemExit) as info, contextlib.redirect_stdout(io.StringIO()):
        run_main(train.main, [*argv, "--max_steps", "1"])
    assert info.value.code == 0
    return folder, argv


@pytest.mark.parametrize("flags, named", [(["--d_model", "32"], "--d_model"),
                                          (["--no-share_embeddings"], "--share_embeddings"),
                                          (["--clip", "0.5"], "--clip"), (["--label_smoothing", "0"],
                                                                          "--label_smoothing")])
def test_resume_refuses_changed_settings(stopped_run, cli, flags, named):
    folder, argv = stopped_run
    before = (folder / "run" / "last.pt").read_bytes()
    one_line(cli(train.main, [*argv, *flags, "--resume"]), named)
    assert (folder / "run" / "last.pt").read_bytes() == before


@pytest.mark.parametrize("case", ["vocab: duplicate id", "absurd d_model", "weights: wrong shape"])
def test_resume_refuses_an_edited_last_checkpoint(stopped_run, tmp_path, cli, case):
    folder, argv = stopped_run
    run = tmp_path / "run"
    shutil.copytree(folder / "run", run, ignore=shutil.ignore_patterns("run.lock"))
    ckpt = torch.load(run / "last.pt", weights_only=True)
    CHECKPOINT_EDITS[case][0](ckpt)
    torch.save(ckpt, run / "last.pt")
    before = (run / "last.pt").read_bytes()
    one_line(cli(train.main, [*argv, "--out_dir", run, "--resume"]), "last.pt")
    assert (run / "last.pt").read_bytes() == before


EDITED_COUNTERS = [("global_step", -1, "global_step"), ("epoch", "1", "epoch"), ("history", None, "history"),
                   ("averaged", [], "averaged"), ("wall_seconds", float("nan"), "wall_seconds"),
                   ("weight_count", "2", "weight_count"), ("weight_count", 1, "weight_sum"),
                   ("weight_sum", {"x": torch.zeros(2)}, "weight_sum")]


@pytest.mark.parametrize("key, value, named", EDITED_COUNTERS, ids=[f"{k}={v!r}" for k, v, _ in EDITED_COUNTERS])
def test_resume_refuses_edited_counters(stopped_run, tmp_path, cli, key, value, named):
    folder, argv = stopped_run
    run = tmp_path / "run"
    shutil.copytree(folder / "run", run, ignore=shutil.ignore_patterns("run.lock"))
    ckpt = torch.load(run / "last.pt", weights_only=True)
    ckpt[key] = value
    torch.save(ckpt, run / "last.pt")
    before = (run / "last.pt").read_bytes()
    one_line(cli(train.main, [*argv, "--out_dir", run, "--resume"]), "--resume", named)
    assert (run / "last.pt").read_bytes() == before


def test_classifier_resume_refuses_changes_and_edits(tiny_data, tmp_path, cli):
    argv = ["--data_dir", tiny_data, "--out_dir", tmp_path / "run", "--checkpoint", tmp_path / "clf.pt",
            "--d_model", "16", "--n_heads", "2", "--layers", "1", "--d_ff", "32", "--epochs", "2", "--patience", "2",
            "--vocab_size", "150", "--batch_size", "32", "--limit", "60", "--num_threads", "1"]
    code, _, err = cli(train_classifier.main, [*argv, "--epochs", "1"])
    assert code == 0, err
    last = tmp_path / "run" / "last.pt"
    one_line(cli(train_classifier.main, [*argv, "--dropout", "0.3", "--resume"]), "--dropout")
    original = torch.load(last, weights_only=True)
    ckpt = copy.deepcopy(original)
    vocab_edit(lambda m, d: m["merges"].append(["zz", "qq"]))(ckpt)
    torch.save(ckpt, last)
    before = last.read_bytes()
    one_line(cli(train_classifier.main, [*argv, "--resume"]), "last.pt", "merge")
    assert last.read_bytes() == before
    for key, value in (("step", -4), ("best_val_acc", "high"), ("bad_epochs", 1.5)):
        ckpt = {**original, key: value}
        torch.save(ckpt, last)
        one_line(cli(train_classifier.main, [*argv, "--resume"]), "--resume:", key)
    for flags, named in ((["--lr", "0.01"], "--lr"), (["--vocab_size", "140"], "--vocab_size"),
                         (["--max_len", "64"], "--max_len")):
        one_line(cli(train_classifier.main, [*argv, *flags, "--resume"]), "--resume", named)
    one_line(cli(train_classifier.main, [*argv, "--limit", "1", "--out_dir", tmp_path / "one"]), "--limit")
    one_line(cli(train_classifier.main, [*argv, "--limit", "2", "--val_fraction", "0.5", "--out_dir",
                                         tmp_path / "two"]), "--limit 2", "one class")


# ----------------------------------------------------------------------------- the prompt, and arbitrary text
def run_prompt(tiny_model, lines):
    """translate.py --interactive on the tiny model, reading `lines`; returns what it printed."""
    path, model, vocab = tiny_model
    args = translate.build_parser().parse_args(["--interactive", "--beam_size", "2"])
    out = io.StringIO()
    with mock.patch.object(builtins, "input", side_effect=[*lines, EOFError]), contextlib.redirect_stdout(out):
        assert translate.interactive(model, vocab, args, CPU) == 0
    return out.getvalue()


@pytest.mark.parametrize("line", [":beam ²", ":beam 0", ":beam 99999999999999999999999", ":alpha nan", ":alpha 1e-320",
                                  ":alpha -1", ":seed 99999999999999999999999", ":", ": ", ":temperature 2",
                                  "\x00\x01\x1b[31m", "word " * 5000, "\u202e\u0301\ufffd", "$5 and $6"])
def test_the_prompt_answers_every_line(tiny_model, line):
    out = run_prompt(tiny_model, [line, ":settings"])
    assert "beam 2, alpha 1.0" in out           # a bad value kept the setting as it was


def test_the_heatmap_command_refuses_paths_it_cannot_write(tiny_model, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a_file").write_text("")
    out = run_prompt(tiny_model, [":heatmap a_file/map.png", "A dog runs.", ":heatmap map.xyz", "A dog runs.",
                                  ":heatmap nul\x00.png", "A $5 dog.", ":heatmap ok.png", "It costs $5 and $6."])
    # map.xyz is refused when typed (so a_file/map.png stays, and fails again at the next sentence)
    assert "must end in" in out and out.count("cannot write the heatmap") == 4 and (tmp_path / "ok.png").is_file()


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=st.lists(st.one_of(ANY_TEXT, st.builds(lambda c, v: f":{c} {v}", st.sampled_from(
    ["beam", "b", "alpha", "seed", "temperature", "top_k", "settings", "help", "nope", ""]), ANY_TEXT)),
    max_size=4))
def test_the_prompt_survives_any_line(tiny_model, lines):
    lines = [line for line in lines if not line.lstrip().lower().startswith((":heatmap", ":q", ":exit"))]
    run_prompt(tiny_model, lines)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(texts=st.lists(ANY_TEXT, min_size=1, max_size=4), beam=st.integers(1, 3))
def test_any_text_translates(tiny_model, texts, beam):
    _, model, vocab = tiny_model
    out = translate_sentences(model, vocab, texts, CPU, beam_size=beam, batch_size=2)
    assert len(out) == len(texts) and all(isinstance(t, str) for t in out)


@settings(max_examples=150, deadline=None)
@given(text=ANY_TEXT)
def test_any_text_encodes_to_ids_the_vocabulary_has(text):
    vocab = TEXT_VOCAB
    ids = vocab.encode(text)
    assert all(0 <= i < len(vocab) for i in ids)
    assert isinstance(vocab.decode(ids), str)
    assert all(0 <= i < len(vocab) for i in train_classifier.encode([text], vocab, 8)[0])
    assert encode_pairs([(text, text)], vocab, 0)[0][0][-1] == 3     # ends in <eos>


TEXT_VOCAB = SubwordVocab.from_json(VOCAB_JSON)


@settings(max_examples=60, deadline=None)
@given(data=st.binary(max_size=300))
def test_any_bytes_as_an_input_file_are_text_or_one_line(data):
    path = Path(os.environ.get("TMPDIR", "/tmp")) / f"s4_bytes_{os.getpid()}.en"
    path.write_bytes(data)
    try:
        text = translate.read_input(str(path))
        assert isinstance(text, str)
    except UserError as err:
        assert "\n" not in str(err) and str(path) in str(err)
    finally:
        path.unlink()


# ----------------------------------------------------------------------------- probe 2: configs, counters, folders
def test_a_config_too_short_for_a_sentence_is_refused(payload, tmp_path, mt_data, cli):
    ckpt = copy.deepcopy(payload)
    ckpt["config"]["max_len"] = 1
    path = tmp_path / "short.pt"
    torch.save(ckpt, path)
    code, out, err = cli(translate.main, ["--checkpoint", path, "A dog."])
    one_error_line(code, err, str(path), "max_len")
    code, out, err = cli(evaluate.main, ["--checkpoint", path, "--data_dir", mt_data, "--limit", "2",
                                         "--out_dir", tmp_path / "e"])
    one_error_line(code, err, str(path), "max_len")
    assert "model:" not in out


IMPOSSIBLE_COUNTERS = {
    "batch past the epoch's": ("c['batch_in_epoch'] = 999", "batch_in_epoch"),
    "global_step too large": ("c['global_step'] = 10 ** 9", "global_step"),
    "epoch beyond --epochs": ("c['epoch'] = 99", "epoch 99"),
    "epoch 0 after one epoch": ("c['epoch'] = 0", "epoch 0"),
    "batch past the epoch's, steps to match": ("c['batch_in_epoch'] += 999; c['global_step'] += 999",
                                               "batch_in_epoch"),
    "steps more than the epochs hold": ("c['global_step'] += 999; c['history'][-1]['steps'] += 999", "global_step"),
    "history edited": ("c['history'][0]['val_bleu'] = 'high'", "history"),
    "optimizer state emptied": ("c['optimizer_state']['state'] = {}", "optimizer state is empty"),
}


@pytest.mark.parametrize("case", sorted(IMPOSSIBLE_COUNTERS))
def test_resume_refuses_impossible_counters(stopped_run, tmp_path, cli, case):
    folder, argv = stopped_run
    run = tmp_path / "run"
    shutil.copytree(folder / "run", run, ignore=shutil.ignore_patterns("run.lock"))
    c = torch.load(run / "last.pt", weights_only=True)
    exec(IMPOSSIBLE_COUNTERS[case][0])
    torch.save(c, run / "last.pt")
    before = (run / "last.pt").read_bytes()
    code, _, err = cli(train.main, [*argv, "--out_dir", run, "--resume"])
    one_error_line(code, err, IMPOSSIBLE_COUNTERS[case][1])
    assert err.startswith("error: --resume:") and (run / "last.pt").read_bytes() == before


def test_resume_refuses_a_run_with_nothing_left_to_train(stopped_run, tmp_path, cli):
    folder, argv = stopped_run      # one epoch of two done, at step 1
    run = tmp_path / "run"
    shutil.copytree(folder / "run", run, ignore=shutil.ignore_patterns("run.lock"))
    one_line(cli(train.main, [*argv, "--out_dir", run, "--resume", "--epochs", "1"]), "--resume:", "finished")
    one_line(cli(train.main, [*argv, "--out_dir", run, "--resume", "--max_steps", "1"]), "--resume:", "finished")


def test_the_vocabulary_beside_the_checkpoint_cannot_be_a_folder(mt_data, tmp_path, cli):
    (tmp_path / "best.tokenizer.json").mkdir()
    one_line(cli(train.main, ["--data_dir", mt_data, "--out_dir", tmp_path / "run", "--checkpoint",
                              tmp_path / "best.pt", *TINY]), "--checkpoint", "best.tokenizer.json")
    assert not (tmp_path / "run").exists()
    one_line(cli(train.main, ["--data_dir", mt_data, "--out_dir", tmp_path / "x.tokenizer.json", "--checkpoint",
                              tmp_path / "x.pt", *TINY]), "--checkpoint", "--out_dir")


def test_evaluate_refuses_a_training_run_folder(stopped_run, tiny_model, tmp_path, mt_data, cli):
    folder, _ = stopped_run
    run = tmp_path / "run"
    shutil.copytree(folder / "run", run, ignore=shutil.ignore_patterns("run.lock"))
    (run / "metrics.json").write_text(json.dumps({"train_seconds": 1.0}))
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    argv = ["--checkpoint", tiny_model[0], "--data_dir", mt_data, "--limit", "2", "--beam_size", "2"]
    code, out, err = cli(evaluate.main, [*argv, "--out_dir", run])
    one_error_line(code, err, "--out_dir", "training run folder")
    assert "model:" not in out and {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before
    one_line(cli(evaluate.main, [*argv, "--out_dir", tmp_path / "e", "--metrics_out", run / "metrics.json"]),
             "--metrics_out", "training")
    busy = tmp_path / "busy"       # a live process (this test's parent) holds the folder
    busy.mkdir()
    (busy / "run.lock").write_text(json.dumps({"pid": os.getppid(), "host": socket.gethostname(),
                                               "command": "python train.py", "started": "now"}))
    one_line(cli(evaluate.main, [*argv, "--out_dir", busy]), "--out_dir", "in use")
    assert sorted(p.name for p in busy.iterdir()) == ["run.lock"]


def test_translate_says_what_it_does_with_folders_and_long_lines(tiny_model, tmp_path, cli, capsys, monkeypatch):
    path = tiny_model[0]
    one_line(cli(translate.main, ["--checkpoint", path, "--input", tmp_path]), "--input", "is a folder")
    one_line(cli(translate.main, ["--checkpoint", path, "A dog.", "--heatmap", tmp_path]), "--heatmap", "folder")
    one_line(cli(translate.main, ["--checkpoint", path, "A dog.", "--heatmap", tmp_path / "map"]), "--heatmap",
             ".png")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "maps").mkdir()
    capsys.readouterr()
    out = run_prompt(tiny_model, [":heatmap maps", "A dog runs.", "word " * 20000])
    assert "it is a folder" in out and not list(tmp_path.glob("*.png"))
    assert "only its beginning is translated" in capsys.readouterr().err
