"""Whatever a learner types or points the stage 1 programs at ends in one line on stderr and exit status 2 (or, at
the interactive prompt, in one line and the next prompt): flags out of range and combinations that make no sense,
text that is not UTF-8, odd data files, edited checkpoints and vocabularies, folders that cannot be written, a second
training into a busy run folder or checkpoint, --resume with other model settings. Nothing written before is lost.
Property-based tests throw arbitrary lines at the classifier's prompt and arbitrary text and bytes at the tokenizer,
the vocabulary reader, the classifier and the data readers."""
import contextlib
import copy
import gzip
import io
import json
import os
import shutil
import socket
import sys

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scripts.common import UserError, run_main, save_checkpoint
from scripts.testing import TypedLines, ctrl_c_after_steps, one_error_line
from stage1_mlp import bench, evaluate, train
from scripts.classification_data import train_val_split
from stage1_mlp.data.features import TOKEN_PATTERN, Featurizer, tokenize

SMALL = ["--buckets", "2000", "--embed_dim", "16", "--hidden_dim", "16", "--num_threads", "1", "--min_freq", "1"]
# any character, lone surrogates (bytes that were not UTF-8) and control characters included
ANY_TEXT = st.text(st.characters(blacklist_categories=()), max_size=200)
JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                    max_leaves=12)
FEW = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def one_line(result, *words):
    """`cli`'s result: exit status 2 and exactly one line on stderr that says each of `words`."""
    one_error_line(result[0], result[2], *words)


def train_args(data, folder, *extra):
    return ["--data_dir", str(data), "--out_dir", str(folder / "run"), "--checkpoint", str(folder / "ck" / "best.pt"),
            *SMALL, "--epochs", "1", *extra]


@pytest.fixture(scope="module")
def trained(tiny_data, tmp_path_factory):
    """A run folder (last.pt) and its best checkpoint, trained once for the whole module."""
    folder = tmp_path_factory.mktemp("trained")
    with pytest.raises(SystemExit) as info:
        run_main(train.main, train_args(tiny_data, folder))
    assert info.value.code == 0
    return folder


@pytest.fixture
def run_copy(trained, tmp_path):
    """A copy of the trained run and checkpoint, for a test that may change them."""
    shutil.copytree(trained, tmp_path, dirs_exist_ok=True)
    return tmp_path


@pytest.fixture(scope="module")
def clf(trained):
    return evaluate.Classifier(trained / "ck" / "best.pt", torch.device("cpu"))


# ----------------------------------------------------------------------------- train.py flags
TRAIN_FLAGS = [  # (flags, what the one line must say)
    (["--limit", "-5"], "--limit"), (["--max_steps", "-1"], "--max_steps"), (["--lr", "0"], "--lr"),
    (["--lr", "-0.001"], "--lr"), (["--lr", "nan"], "--lr"), (["--lr", "inf"], "--lr"), (["--lr", "1e-320"], "--lr"),
    (["--lr", "5"], "--lr"), (["--epochs", "0"], "--epochs"), (["--epochs", "1.5"], "--epochs"),
    (["--epochs", "9" * 30], "--epochs"), (["--batch_size", "0"], "--batch_size"),
    (["--batch_size", "²"], "--batch_size"),
    (["--embed_dim", "0"], "--embed_dim"), (["--embed_dim", "100000"], "--embed_dim"),
    (["--hidden_dim", "-1"], "--hidden_dim"), (["--dropout", "1"], "--dropout"), (["--dropout", "-0.1"], "--dropout"),
    (["--dropout", "nan"], "--dropout"), (["--ngrams", "0"], "--ngrams"), (["--ngrams", "6"], "--ngrams"),
    (["--buckets", "0"], "--buckets"), (["--buckets", "1000000000"], "--buckets"),
    (["--buckets", "16000000", "--embed_dim", "64"], "--buckets 16,000,000 x --embed_dim 64"),
    (["--min_freq", "0"], "--min_freq"), (["--patience", "0"], "--patience"),
    (["--val_fraction", "0"], "--val_fraction"),
    (["--val_fraction", "1"], "--val_fraction"), (["--val_fraction", "-inf"], "--val_fraction"),
    (["--seed", "-1"], "--seed"), (["--seed", str(2 ** 64)], "--seed"), (["--num_threads", "-1"], "--num_threads"),
    (["--preset", "slow"], "--preset"), (["--impl", "numpy"], "--impl"), (["--device", "tpu"], "--device"),
    (["--dataset", "mnist"], "--dataset"), (["--out_dir", "run\udcff"], "not valid UTF-8"),
    (["--out_dir", ""], "--out_dir"), (["--checkpoint", " "], "--checkpoint"), (["--data_dir", ""], "--data_dir"),
]


@pytest.mark.parametrize("flags, says", TRAIN_FLAGS, ids=[" ".join(f)[:40] for f, _ in TRAIN_FLAGS])
def test_train_flag_out_of_range_is_refused_before_any_work(tiny_data, tmp_path, cli, flags, says):
    one_line(cli(train.main, train_args(tiny_data, tmp_path, *flags)), says)
    assert not (tmp_path / "run").exists() and not (tmp_path / "ck").exists()   # nothing started


TRAIN_DATA_CHECKS = [  # flags that parse but leave nothing to learn from: refused once the data is read
    (["--limit", "1"], "leaves none to train on"), (["--val_fraction", "0.9999"], "leaves none to train on"),
    (["--limit", "2"], "--limit 2 with --val_fraction 0.1 leaves training documents of one class only"),
    (["--min_freq", "100000"], "--min_freq 100,000 keeps no word"),
]


@pytest.mark.parametrize("flags, says", TRAIN_DATA_CHECKS, ids=[" ".join(f) for f, _ in TRAIN_DATA_CHECKS])
def test_train_flags_that_leave_nothing_to_learn(tiny_data, tmp_path, cli, flags, says):
    one_line(cli(train.main, train_args(tiny_data, tmp_path, *flags)), says)
    assert not (tmp_path / "run" / "last.pt").exists() and not (tmp_path / "ck" / "best.pt").exists()


def test_a_validation_split_that_leaves_one_class_to_train_on(tmp_path, cli):
    """The file has both classes (load_split checks that), but the only positive review goes to validation."""
    rows = [{"text": "a fine film", "label": 1}] + [{"text": f"a dull film {i}", "label": 0} for i in range(19)]
    path = write_split(tmp_path / "data", "imdb", gzip.compress("".join(json.dumps(r) + "\n" for r in rows).encode()))
    seed = next(seed for seed in range(100) if 0 in train_val_split(20, 0.5, seed)[1].tolist())
    one_line(cli(train.main, train_args(tmp_path / "data", tmp_path, "--val_fraction", "0.5", "--seed", str(seed))),
             str(path), "--val_fraction 0.5", "one class only ('negative')")
    assert not (tmp_path / "run").exists()


def test_train_checkpoint_path_that_makes_no_sense(tiny_data, tmp_path, cli):
    one_line(cli(train.main, [*train_args(tiny_data, tmp_path), "--checkpoint", str(tmp_path)]), "is a folder")
    one_line(cli(train.main, [*train_args(tiny_data, tmp_path), "--checkpoint", str(tmp_path / "run" / "last.pt")]),
             "resumable state")


def test_limit_beyond_the_data_uses_it_all_and_says_so(tiny_data, tmp_path, cli):
    code, out, err = cli(train.main, train_args(tiny_data, tmp_path, "--limit", "100000", "--max_steps", "1"))
    assert code == 0, err
    assert "--limit 100,000 is more than the 400 training documents" in out


def test_a_diverging_loss_stops_in_one_line_and_keeps_the_best_model(run_copy, tiny_data, cli, monkeypatch):
    best, last = run_copy / "ck" / "best.pt", run_copy / "run" / "last.pt"
    before = best.read_bytes(), last.read_bytes()
    monkeypatch.setattr(train, "train_step", lambda *args: float("nan"))
    one_line(cli(train.main, train_args(tiny_data, run_copy, "--epochs", "2", "--resume")), "diverged", "--lr")
    assert (best.read_bytes(), last.read_bytes()) == before


# ----------------------------------------------------------------------------- --resume
RESUME_CHANGES = [  # (changed flags, what the one line must say)
    (["--impl", "scratch"], "--impl torch (now scratch)"), (["--lr", "0.002"], "--lr 0.001 (now 0.002)"),
    (["--embed_dim", "8"], "--embed_dim 16 (now 8)"), (["--hidden_dim", "8"], "--hidden_dim"),
    (["--ngrams", "2"], "--ngrams 3 (now 2)"), (["--buckets", "3000"], "--buckets"),
    (["--min_freq", "2"], "--min_freq"),
    (["--limit", "300"], "--limit"), (["--seed", "1"], "--seed"), (["--batch_size", "32"], "--batch_size"),
    (["--dropout", "0.1"], "--dropout"), (["--val_fraction", "0.2"], "--val_fraction"),
    (["--preset", "quick"], "--lr 0.001 (now 0.004)"), (["--dataset", "ag_news"], "trained on imdb, not ag_news"),
]


@pytest.mark.parametrize("flags, says", RESUME_CHANGES, ids=[" ".join(f) for f, _ in RESUME_CHANGES])
def test_resume_refuses_changed_model_settings_and_keeps_the_run(run_copy, tiny_data, cli, flags, says):
    last, best = run_copy / "run" / "last.pt", run_copy / "ck" / "best.pt"
    before = last.read_bytes(), best.read_bytes()
    argv = train_args(tiny_data, run_copy, "--epochs", "2", "--resume")
    for flag in flags[::2]:          # the changed flag replaces the one train_args gives
        if flag in argv:
            del argv[argv.index(flag):argv.index(flag) + 2]
    one_line(cli(train.main, [*argv, *flags]), says)
    assert (last.read_bytes(), best.read_bytes()) == before


def edit(ckpt, change):
    ckpt = copy.deepcopy(ckpt)
    change(ckpt)
    return ckpt


CHECKPOINT_EDITS = {  # name -> (change, what the one line must say)
    "config key missing": (lambda c: c["config"].pop("dropout"), "missing dropout"),
    "extra config key": (lambda c: c["config"].update(layers=2), "unknown layers"),
    "absurd size": (lambda c: c["config"].update(embed_dim=10 ** 9), "embed_dim"),
    "absurd table": (lambda c: c["config"].update(num_features=2 ** 24, embed_dim=1024), "embedding table"),
    "bool size": (lambda c: c["config"].update(hidden_dim=True), "hidden_dim"),
    "dropout 1.5": (lambda c: c["config"].update(dropout=1.5), "dropout"),
    "unknown model type": (lambda c: c.update(impl="cnn"), "unknown type 'cnn'"),
    "vocabulary shorter": (lambda c: c["featurizer"].update(itos=c["featurizer"]["itos"][:-3]), "vocabulary"),
    "vocabulary longer": (lambda c: c["featurizer"]["itos"].append("zzzz"), "vocabulary"),
    "buckets changed": (lambda c: c["featurizer"].update(buckets=3000), "vocabulary"),
    "vocabulary not a list": (lambda c: c["featurizer"].update(itos="abc"), "'itos'"),
    "word twice": (lambda c: c["featurizer"]["itos"].__setitem__(2, c["featurizer"]["itos"][1]), "twice"),
    "ngrams huge": (lambda c: c["featurizer"].update(ngrams=10 ** 6), "'ngrams'"),
    "no featurizer": (lambda c: c.pop("featurizer"), "not a stage 1 vocabulary"),
    "another token pattern": (lambda c: c["featurizer"].update(token_pattern=r"\w+"), "made by another tokenizer"),
    "a pattern that does not compile": (lambda c: c["featurizer"].update(token_pattern="(["), "another tokenizer"),
    "not lowercased": (lambda c: c["featurizer"].update(lowercase=False), "another tokenizer"),
    "lowercase 1": (lambda c: c["featurizer"].update(lowercase=1), "another tokenizer"),
    "no token pattern": (lambda c: c["featurizer"].pop("token_pattern"), "token_pattern 'None'"),
    "classes missing": (lambda c: c.pop("classes"), "class names"),
    "weights missing": (lambda c: c["model_state"].pop("fc2.bias"), "fc2.bias is missing"),
    "weights reshaped": (lambda c: c["model_state"].update({"fc1.bias": torch.zeros(3)}), "fc1.bias has shape"),
    "weights not finite": (lambda c: c["model_state"]["fc1.bias"].fill_(float("nan")), "holds NaN or infinite values"),
    "weights as integers": (lambda c: c["model_state"].update({"fc2.bias": torch.zeros(2, dtype=torch.long)}),
                            "fc2.bias"),
    "no data set": (lambda c: c.pop("dataset"), "which data set"),
    "another stage": (lambda c: c.update(stage="stage2_rnn_lstm"), "made by stage2_rnn_lstm"),
}


@pytest.mark.parametrize("name", list(CHECKPOINT_EDITS))
def test_evaluate_refuses_an_edited_checkpoint(trained, tmp_path, cli, name):
    change, says = CHECKPOINT_EDITS[name]
    path = tmp_path / "edited.pt"
    save_checkpoint(path, edit(torch.load(trained / "ck" / "best.pt", weights_only=True), change))
    one_line(cli(evaluate.main, ["--checkpoint", str(path), "--text", "a wonderful film"]), str(path), says)


@pytest.mark.parametrize("name", ["config key missing", "absurd size", "unknown model type", "vocabulary shorter",
                                  "weights reshaped", "weights not finite", "another token pattern"])
def test_resume_refuses_an_edited_last_checkpoint(run_copy, tiny_data, cli, name):
    change, says = CHECKPOINT_EDITS[name]
    last = run_copy / "run" / "last.pt"
    save_checkpoint(last, edit(torch.load(last, weights_only=True), change))
    best = (run_copy / "ck" / "best.pt").read_bytes()
    one_line(cli(train.main, train_args(tiny_data, run_copy, "--epochs", "2", "--resume")), "last.pt", says)
    assert (run_copy / "ck" / "best.pt").read_bytes() == best


RESUME_STATE_EDITS = {
    "optimizer moments reshaped": lambda c: c["optimizer_state"][1]["state"][0].update(exp_avg=torch.zeros(3)),
    "one optimizer missing": lambda c: c["optimizer_state"].pop(),
    "counter not a number": lambda c: c.update(global_step="many"),
    "counter missing": lambda c: c.pop("best_epoch"),
}


@pytest.mark.parametrize("name", list(RESUME_STATE_EDITS))
def test_resume_refuses_an_edited_training_state(run_copy, tiny_data, cli, name):
    last = run_copy / "run" / "last.pt"
    save_checkpoint(last, edit(torch.load(last, weights_only=True), RESUME_STATE_EDITS[name]))
    one_line(cli(train.main, train_args(tiny_data, run_copy, "--epochs", "2", "--resume")), "--resume: ", "last.pt",
             "start a new run")


def test_resume_of_a_scratch_run_refuses_edited_adam_moments(tiny_data, tmp_path, cli):
    """The hand-written Adam checks its saved moments as torch's optimizers do."""
    assert cli(train.main, train_args(tiny_data, tmp_path, "--impl", "scratch", "--max_steps", "2"))[0] == 0
    last = tmp_path / "run" / "last.pt"
    save_checkpoint(last, edit(torch.load(last, weights_only=True),
                               lambda c: c["optimizer_state"]["m"].update({"fc1.bias": torch.zeros(3)})))
    one_line(cli(train.main, train_args(tiny_data, tmp_path, "--impl", "scratch", "--epochs", "2", "--resume")),
             "Adam moments")


# ----------------------------------------------------------------------------- evaluate.py flags and outputs
EVALUATE_FLAGS = [
    (["--limit", "-1"], "--limit"), (["--batch_size", "0"], "--batch_size"), (["--batch_size", "1e3"], "--batch_size"),
    (["--latency_samples", "0"], "--latency_samples"), (["--text", "good", "--interactive"], "exclude each other"),
    (["--text", "good", "--limit", "5"], "--limit only apply to the test-set evaluation"),
    (["--interactive", "--dataset", "imdb", "--metrics_out", "m.json"], "--dataset, --metrics_out"),
    (["--text", "   "], "--text is empty"), (["--text", "... ;;"], "no words to classify"),
    (["--text", "bad \udcff bytes"], "not valid UTF-8"), (["--seed", "2**32"], "--seed"),
    (["--metrics_out", ""], "--metrics_out"), (["--out_dir", "  "], "--out_dir"),
    (["--checkpoint", ""], "--checkpoint"),
]


@pytest.mark.parametrize("flags, says", EVALUATE_FLAGS, ids=[" ".join(f)[:40] for f, _ in EVALUATE_FLAGS])
def test_evaluate_flag_out_of_range(trained, cli, flags, says):
    one_line(cli(evaluate.main, ["--checkpoint", str(trained / "ck" / "best.pt"), *flags]), says)


def test_evaluate_output_that_cannot_be_written_is_said_before_the_evaluation(trained, tiny_data, tmp_path, cli):
    (tmp_path / "file").write_text("a file, not a folder")
    base = ["--checkpoint", str(trained / "ck" / "best.pt"), "--data_dir", str(tiny_data), "--latency_samples", "1"]
    for flags in (["--out_dir", str(tmp_path / "file" / "eval")], ["--metrics_out", str(tmp_path / "file" / "m.json")]):
        one_line(cli(evaluate.main, [*base, *flags]), str(tmp_path / "file"))
    one_line(cli(evaluate.main, [*base, "--metrics_out", str(tmp_path)]), "--metrics_out", "is a folder")


# ----------------------------------------------------------------------------- data files
def write_split(root, dataset, data: bytes):
    folder = root / dataset
    folder.mkdir(parents=True, exist_ok=True)
    name = "train.jsonl.gz" if dataset == "imdb" else "train.csv"
    (folder / name).write_bytes(data)
    if dataset == "ag_news":
        (folder / "test.csv").write_bytes(b"")
    return folder / name


IMDB_ROW = json.dumps({"text": "a fine film", "label": 1}).encode()
DATA_FILES = {  # name -> (data set, file bytes, what the one line must say)
    "damaged gzip": ("imdb", gzip.compress(IMDB_ROW * 50)[:-20], "not a complete gzip file"),
    "not gzip": ("imdb", b"plain text", "not a complete gzip file"),
    "not UTF-8": ("imdb", gzip.compress(IMDB_ROW + b"\n" + b'{"text": "caf\xe9", "label": 0}\n'), "line 2"),
    "bad label": ("imdb", gzip.compress(b'{"text": "x", "label": 7}\n'), ":1: label 7"),
    "empty": ("imdb", gzip.compress(b""), "holds no rows"),
    "one row": ("imdb", gzip.compress(IMDB_ROW + b"\n"), "holds only texts of class 1"),
    "two rows": ("imdb", gzip.compress(IMDB_ROW + b"\n" + IMDB_ROW.replace(b'"label": 1', b'"label": 0') + b"\n"),
                 "leaves training documents of one class only"),
    "csv class": ("ag_news", b'"9","title","text"\n', "class '9'"),
    "csv fields": ("ag_news", b'"1","title"\n', "expected 3 fields"),
    "csv unclosed quote": ("ag_news", b'"1","t","' + b"x" * 1_000_001, "not a valid CSV row"),
}


@pytest.mark.parametrize("name", list(DATA_FILES))
def test_odd_data_file_names_the_file(tmp_path, cli, name):
    dataset, data, says = DATA_FILES[name]
    path = write_split(tmp_path / "data", dataset, data)
    argv = train_args(tmp_path / "data", tmp_path, "--dataset", dataset)
    one_line(cli(train.main, argv), str(path), says)


def folder_bytes(folder):
    return {path.relative_to(folder): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


@pytest.mark.parametrize("data_dir", ["missing", "file", "/proc", "empty", "one class"])
def test_bad_data_leaves_an_existing_run_folder_as_it_was(run_copy, cli, data_dir):
    """The data is read and checked before the run folder is touched: train.log gets no line, nothing is added."""
    (run_copy / "file").write_text("x")
    (run_copy / "empty").mkdir()
    write_split(run_copy / "one class", "imdb", gzip.compress(IMDB_ROW * 10))
    data = data_dir if data_dir.startswith("/") else str(run_copy / data_dir)
    before = folder_bytes(run_copy / "run"), folder_bytes(run_copy / "ck")
    for resume in ([], ["--resume"]):
        one_line(cli(train.main, train_args(data, run_copy, *resume)), data)
        assert (folder_bytes(run_copy / "run"), folder_bytes(run_copy / "ck")) == before


def test_data_dir_that_is_a_file_or_lacks_the_data_set(tmp_path, cli):
    (tmp_path / "file").write_text("x")
    one_line(cli(train.main, train_args(tmp_path / "file", tmp_path)), "--data_dir", "not a folder")
    (tmp_path / "data" / "imdb").mkdir(parents=True)
    one_line(cli(train.main, train_args(tmp_path / "data", tmp_path)), "lacks train.jsonl.gz")


# ----------------------------------------------------------------------------- folders: busy, unwritable
def hold_lock(path):
    """A lock file as a live training of another process (this test's parent) would leave it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"pid": os.getppid(), "host": socket.gethostname(), "command": "python train.py",
                                "started": "2026-01-01T00:00:00"}))


def test_a_second_training_into_a_busy_run_folder_or_checkpoint_is_refused(run_copy, tiny_data, cli):
    best = run_copy / "ck" / "best.pt"
    before = best.read_bytes()
    hold_lock(run_copy / "run" / "run.lock")
    one_line(cli(train.main, train_args(tiny_data, run_copy)), "in use by process")
    (run_copy / "run" / "run.lock").unlink()
    hold_lock(run_copy / "ck" / ".best.pt.lock")      # another run folder, the same best checkpoint
    one_line(cli(train.main, train_args(tiny_data, run_copy)), "best.pt is in use", "--checkpoint")
    assert best.read_bytes() == before


def test_a_new_run_into_an_interrupted_run_folder_needs_restart(tiny_data, tmp_path, cli, monkeypatch):
    """A run stopped by Ctrl-C goes on with --resume; the same command without it is refused (its last.pt would be
    replaced), unless --restart says so."""
    put_back = ctrl_c_after_steps(monkeypatch, 2, train.SparseDenseAdam)
    assert cli(train.main, train_args(tiny_data, tmp_path, "--batch_size", "32"))[0] == 130
    put_back()
    last = tmp_path / "run" / "last.pt"
    before = last.read_bytes()
    one_line(cli(train.main, train_args(tiny_data, tmp_path, "--batch_size", "32")), "interrupted", "--resume",
             "--restart")
    assert last.read_bytes() == before
    one_line(cli(train.main, train_args(tiny_data, tmp_path, "--resume", "--restart")), "choose one")
    code, _, err = cli(train.main, train_args(tiny_data, tmp_path, "--batch_size", "32", "--restart"))
    assert code == 0, err


def test_unwritable_outputs_end_in_one_line_and_keep_the_best_model(run_copy, tiny_data, cli):
    best = run_copy / "ck" / "best.pt"
    before = best.read_bytes()
    (run_copy / "file").write_text("a file, not a folder")
    argv = train_args(tiny_data, run_copy)
    argv[argv.index("--out_dir") + 1] = str(run_copy / "file" / "run")
    one_line(cli(train.main, argv), str(run_copy / "file"))
    argv = train_args(tiny_data, run_copy)
    argv[argv.index("--checkpoint") + 1] = str(run_copy / "file" / "best.pt")
    one_line(cli(train.main, argv), str(run_copy / "file"))
    assert best.read_bytes() == before


# ----------------------------------------------------------------------------- bench.py
@pytest.mark.parametrize("flags, says", [
    (["--num_threads", "-1"], "--num_threads"), (["--num_threads", "5000"], "--num_threads"),
    (["--tables_only", "--parts", "quick"], "--tables_only"), (["--data_dir", "/nonexistent/data"], "--data_dir"),
    (["--parts", "slow"], "--parts"), (["--data_dir", ""], "--data_dir"),
    (["--tables_only", "--parts", "default", "quick"], "--tables_only"),   # the default list, typed
    (["--tables_only", "--num_threads", "1"], "--tables_only runs nothing"),
    (["--tables_only", "--data_dir", "/tmp"], "--tables_only runs nothing"),
])
def test_bench_flags(cli, flags, says):
    one_line(cli(bench.main, flags), says)


def test_a_failed_run_of_bench_is_said_once_by_the_run_itself(tmp_path, capfd, monkeypatch):
    """train.py's own line is the only one: bench.py adds none (ChildFailed)."""
    real_quick = bench.run_quick
    monkeypatch.setattr(bench, "check_reference_data", lambda *args, **kwargs: None)   # let train.py find it
    monkeypatch.setattr(bench, "run_quick", lambda extra: real_quick(extra, outputs=tmp_path, results=tmp_path / "r"))
    (tmp_path / "empty").mkdir()
    readme = (bench.STAGE_DIR / "README.md").read_bytes()
    with pytest.raises(SystemExit) as info:     # capfd: the child's stderr is that of another process
        run_main(bench.main, ["--parts", "quick", "--data_dir", str(tmp_path / "empty"), "--num_threads", "1"])
    one_error_line(info.value.code, capfd.readouterr().err, "--data_dir", "lacks train.jsonl.gz")
    assert not (tmp_path / "r").exists() and (bench.STAGE_DIR / "README.md").read_bytes() == readme


def test_bench_publishes_results_of_the_reference_data_only(tiny_data, tmp_path, cli, monkeypatch):
    """A copy of the data that is not the shared one (here: the tiny test set) is refused before any run, naming the
    file; README.md and results/ keep their bytes. Tests that run the bench on tiny data monkeypatch the check."""
    monkeypatch.setattr(bench, "run_quick", lambda *args, **kwargs: pytest.fail("ran on unchecked data"))
    monkeypatch.setattr(bench, "run_one", lambda *args, **kwargs: pytest.fail("ran on unchecked data"))
    readme, overview = (bench.STAGE_DIR / "README.md").read_bytes(), (bench.RESULTS / "overview.json").read_bytes()
    one_line(cli(bench.main, ["--parts", "quick", "--data_dir", tiny_data]),
             str(tiny_data / "imdb" / "train.jsonl.gz"), "not the reference copy", "train.py")
    (tmp_path / "ag_news").mkdir()
    for name in ("train.csv", "test.csv"):
        shutil.copy(tiny_data / "ag_news" / name, tmp_path / "ag_news" / name)
    one_line(cli(bench.main, ["--parts", "default", "--dataset", "ag_news", "--data_dir", tmp_path]),
             "train.csv is not the reference copy", "no reference copy of it exists")
    assert (bench.STAGE_DIR / "README.md").read_bytes() == readme
    assert (bench.RESULTS / "overview.json").read_bytes() == overview


def test_bench_accepts_the_reference_data(real_data, cli, monkeypatch):
    started = []
    monkeypatch.setattr(bench, "run_quick", lambda extra: started.append(extra) or sys.exit(5))
    code, _, err = cli(bench.main, ["--parts", "quick", "--data_dir", real_data])
    assert (code, err) == (5, "") and started


def test_bench_refuses_edited_results_and_keeps_the_readme(tmp_path, cli, monkeypatch):
    results = tmp_path / "results"
    shutil.copytree(bench.RESULTS, results)
    data = json.loads((results / "imdb_torch_test.json").read_text())
    del data["metrics"]["accuracy"]
    (results / "imdb_torch_test.json").write_text(json.dumps(data))
    readme = bench.STAGE_DIR / "README.md"
    before = readme.read_bytes()
    monkeypatch.setattr(bench, "RESULTS", results)
    one_line(cli(bench.main, ["--tables_only"]), "results files", "incomplete or were edited")
    assert readme.read_bytes() == before


# ----------------------------------------------------------------------------- the interactive classifier
def type_lines(clf, lines):
    """Run the prompt on `lines` (then end of input); returns (exit status, what it printed)."""
    out, stdin = io.StringIO(), sys.stdin
    sys.stdin = TypedLines(lines)
    try:
        with contextlib.redirect_stdout(out):
            code = evaluate.interactive(clf)
    finally:
        sys.stdin = stdin
    return code, out.getvalue()


NASTY_LINES = [":", "::", ": :", ":temperature nan", ":temperature 1e-320", ":seed " + "9" * 40, ":beam ²", ":top_k -1",
               ":features", ":features \udcff\x00", ":features " + "not bad " * 5000, ":FEATURES good", ":help extra",
               ":settings now", "\x00\x01\x1b[31m", "\ufffd", "\udcff\udcfe", "a" * 200_000, "good " * 50_000,
               "\u202egood\u202c", "ｇｏｏｄ ＦＩＬＭ", "<br /><br />", "!!!???", "\t\r\v\f", "😀" * 100, "İ K ß"]


def test_the_prompt_survives_every_nasty_line(clf):
    code, out = type_lines(clf, [*NASTY_LINES, KeyboardInterrupt, "a brilliant superb film"])
    assert code == 0
    last_answer = out.split("> ")[-2]       # the text after the last prompt but one (the last met end of input)
    assert last_answer.startswith(("positive", "negative")) and "brilliant" not in last_answer


COMMANDS = st.sampled_from([":features", ":temperature", ":top_k", ":seed", ":beam", ":help", ":settings", ":", "::",
                            ":t", ":k", ":x"])
LINES = st.lists(st.one_of(ANY_TEXT, st.builds(lambda c, v: f"{c} {v}", COMMANDS, ANY_TEXT)), max_size=6)


@settings(max_examples=150, deadline=None)
@given(lines=LINES)
def test_the_prompt_answers_any_lines(clf, lines):
    code, _ = type_lines(clf, lines)
    assert code == 0


@settings(max_examples=150, deadline=None)
@given(text=ANY_TEXT)
def test_classify_and_features_take_any_text(clf, text):
    try:
        shown = evaluate.format_prediction(clf, text)
        assert shown.split()[0] in clf.classes
    except UserError as err:
        assert "no words" in str(err)
    assert isinstance(evaluate.describe_features(clf, text), str)
    tokens = tokenize(text)
    ids = clf.featurizer.features(tokens)
    assert all(isinstance(t, str) and t for t in tokens)
    assert ids.size == 0 or (0 <= ids.min() and ids.max() < clf.featurizer.num_features)


# ----------------------------------------------------------------------------- the vocabulary file
@pytest.fixture(scope="module")
def vocab_dict(trained):
    return json.loads((trained / "run" / "vocab.json").read_text())


@settings(max_examples=150, deadline=None)
@given(key=st.sampled_from(["format", "itos", "ngrams", "buckets", "lowercase", "token_pattern"]), value=JSON)
def test_a_vocabulary_with_any_field_edited_is_read_or_refused(vocab_dict, key, value):
    edited = {**vocab_dict, key: value}
    try:
        featurizer = Featurizer.from_dict(edited, "vocab.json")
    except UserError as err:
        assert str(err).startswith("vocab.json") and "\n" not in str(err)
        return
    assert featurizer.itos[0] == "<unk>" and 1 <= featurizer.ngrams <= 5 and featurizer.buckets >= 1
    assert featurizer.features(["a", "b", "c"]).max() < featurizer.num_features


def test_a_vocabulary_file_of_another_tokenizer_is_refused(vocab_dict, tmp_path):
    """The tokenizer fields are compared with this version's, never used: another pattern would give other words."""
    assert vocab_dict["token_pattern"] == TOKEN_PATTERN and vocab_dict["lowercase"] is True
    path = tmp_path / "vocab.json"
    for change in ({"token_pattern": "[a-z]+"}, {"token_pattern": "(["}, {"lowercase": False}, {"lowercase": "yes"}):
        path.write_text(json.dumps({**vocab_dict, **change}))
        with pytest.raises(UserError, match="another tokenizer") as info:
            Featurizer.load(path)
        assert str(info.value).startswith(str(path)) and "\n" not in str(info.value)


@FEW
@given(data=st.binary(max_size=300) | ANY_TEXT.map(lambda t: t.encode("utf-8", "surrogatepass")) | JSON.map(
    lambda v: json.dumps(v).encode()))
def test_a_vocabulary_file_of_any_bytes_is_read_or_refused(tmp_path, data):
    path = tmp_path / "vocab.json"
    path.write_bytes(data)
    try:
        Featurizer.load(path)
    except UserError as err:
        assert str(path) in str(err) and "\n" not in str(err)


# ----------------------------------------------------------------------------- the data readers, through train.py
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(dataset=st.sampled_from(["imdb", "ag_news"]), data=st.binary(max_size=200), packed=st.booleans())
def test_a_data_file_of_any_bytes_trains_or_ends_in_one_line(tmp_path, cli, dataset, data, packed):
    write_split(tmp_path / "data", dataset, gzip.compress(data) if packed and dataset == "imdb" else data)
    code, _, err = cli(train.main, train_args(tmp_path / "data", tmp_path, "--dataset", dataset, "--max_steps", "1"))
    assert code == 0 or (code == 2 and err.count("\n") == 1 and err.startswith("error: ")), err
