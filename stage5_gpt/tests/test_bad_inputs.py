"""Bad input of every kind, for every program of stage 5: each ends in exactly one line on stderr naming the option or
file, with exit status 2, before any work starts and without losing what was there; the interactive loops survive any
line; the tokenizers and readers take any text or bytes."""
import contextlib
import gzip
import hashlib
import json
import logging
import socket
import sys
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scripts.common import UserError, checkpoint_header, read_text, run_main, save_checkpoint
from scripts.testing import TypedLines, one_error_line
from stage5_gpt import bench, evaluate, finetune, generate, train
from stage5_gpt.data import corpus
from stage5_gpt.data import tasks as T
from stage5_gpt.data.bpe import EOT, ByteLevelBPE, CharTokenizer, load_tokenizer
from stage5_gpt.models.gpt import GPT, GPTConfig
from stage5_gpt.tests.conftest import tiny_args

STAGE = "stage5_gpt"
CHARS = sorted(set("abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ.,:;!?'\n"))
BPE_TEXT = ("the king and the queen shall speak of love and death, " * 40 + "Café naïve “quoted” ") * 3
HYPOTHESIS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def checkpoint(model, tokenizer, model_name="gpt", **extra) -> dict:
    return {**checkpoint_header(STAGE, model_name), "config": model_config(model), "dataset": "shakespeare",
            "tokenizer": tokenizer.to_dict(), "tokenizer_fingerprint": tokenizer.fingerprint(), "args": {},
            "model_state": {k: v.clone() for k, v in model.state_dict().items()}, **extra}


def model_config(model) -> dict:
    gpt = model.gpt if hasattr(model, "gpt") else model
    return gpt.config.to_dict()


@pytest.fixture(scope="module")
def char_model(tmp_path_factory) -> Path:
    """A tiny char-level GPT checkpoint (random weights: the checks, not the text, are tested here)."""
    torch.manual_seed(0)
    tokenizer = CharTokenizer(CHARS)
    model = GPT(GPTConfig(vocab_size=tokenizer.vocab_size, block_size=16, n_layer=1, n_head=2, n_embd=16))
    path = tmp_path_factory.mktemp("char_model") / "gpt.pt"
    save_checkpoint(path, checkpoint(model, tokenizer))
    return path


@pytest.fixture(scope="module")
def bpe_model(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    tokenizer = ByteLevelBPE.train(BPE_TEXT, 300)
    model = GPT(GPTConfig(vocab_size=tokenizer.vocab_size, block_size=32, n_layer=1, n_head=2, n_embd=16))
    path = tmp_path_factory.mktemp("bpe_model") / "gpt.pt"
    save_checkpoint(path, checkpoint(model, tokenizer, dataset="gutenberg"))
    return path


@pytest.fixture(scope="module")
def classifier(bpe_model) -> Path:
    """A tiny fine-tuned IMDb classifier checkpoint, as finetune.py writes it."""
    ckpt = torch.load(bpe_model, weights_only=True)
    tokenizer = load_tokenizer(ckpt["tokenizer"])
    model = T.GPTClassifier(GPT(GPTConfig(**ckpt["config"])), 2)
    info = {"kind": "head", "tasks": ["imdb"], "classes": {"imdb": ["neg", "pos"]}, "method": "full",
            "scratch": False, "base": "tiny", "max_len": 32, "prompts": {"imdb": T.PROMPTS["imdb"]},
            "ag_news_source": "official", "trainable_params": 1, "lora": None}
    path = bpe_model.parent / "classifier.pt"
    save_checkpoint(path, checkpoint(model, tokenizer, "gpt_classifier", dataset="imdb", finetune=info))
    return path


def edited(path: Path, tmp_path: Path, edit) -> Path:
    """A copy of checkpoint `path` changed by `edit(ckpt)`."""
    ckpt = torch.load(path, weights_only=True)
    edit(ckpt)
    out = tmp_path / f"edited_{path.name}"
    save_checkpoint(out, ckpt)
    return out


# ----------------------------------------------------------------------------- train.py flags
TRAIN_FLAGS = [
    (["--clip", "-1"], "--clip"), (["--limit", "-5"], "--limit"), (["--max_steps", "-1"], "--max_steps"),
    (["--max_steps", "0"], "--max_steps"), (["--lr", "0"], "--lr"), (["--lr", "nan"], "--lr"),
    (["--lr", "inf"], "--lr"), (["--lr", "1e-320"], "--lr"), (["--min_lr", "0.5", "--lr", "0.01"], "--min_lr"),
    (["--dropout", "1"], "--dropout"), (["--attn_dropout", "-0.1"], "--attn_dropout"), (["--beta2", "1"], "--beta2"),
    (["--weight_decay", "-0.1"], "--weight_decay"), (["--n_embd", "30", "--n_head", "4"], "--n_embd"),
    (["--n_layer", "²"], "--n_layer"), (["--n_head", "0"], "--n_head"), (["--block_size", "1"], "--block_size"),
    (["--block_size", "1000000000"], "--block_size"), (["--n_embd", "1000000000"], "--n_embd"),
    (["--batch_size", "0"], "--batch_size"), (["--grad_accum", "0"], "--grad_accum"),
    (["--eval_interval", "0"], "--eval_interval"), (["--eval_iters", "-3"], "--eval_iters"),
    (["--log_interval", "-1"], "--log_interval"), (["--warmup_steps", "100"], "--warmup_steps"),
    (["--warmup_steps", "-1"], "--warmup_steps"), (["--peak_tflops", "-1"], "--peak_tflops"),
    (["--vocab_size", "300"], "--vocab_size"), (["--tokenizer", "bpe", "--vocab_size", "100"], "--vocab_size"),
    (["--bpe_train_chars", "-1"], "--bpe_train_chars"), (["--seed", str(2 ** 64)], "--seed"),
    (["--num_threads", "-1"], "--num_threads"), (["--init_from", "no_such_model"], "--init_from"),
    (["--limit", "10"], "--limit"), (["--lr", "0.001", "--min_lr", "nan"], "--min_lr"),
    (["--dataset", "imdb", "--tokenizer", "char"], "--tokenizer bpe"), (["--dataset", "imdb"], "--dataset imdb"),
]


@pytest.mark.parametrize("flags, name", TRAIN_FLAGS, ids=[" ".join(f) for f, _ in TRAIN_FLAGS])
def test_train_refuses_bad_flags_in_one_line(lm_data, tmp_path, cli, flags, name):
    code, _, err = cli(train.main, tiny_args(lm_data, tmp_path, *flags))
    one_error_line(code, err, name)
    assert not (tmp_path / "best.pt").exists()


def test_train_says_imdb_needs_bpe(char_model, tiny_data, tmp_path, cli):
    assert "--dataset imdb needs bpe" in " ".join(train.build_parser().format_help().split())
    # a character model to start from cannot spell the reviews either: said before any training, naming both flags
    code, _, err = cli(train.main, tiny_args(tiny_data, tmp_path, "--dataset", "imdb", "--init_from", char_model))
    one_error_line(code, err, "--init_from", "--dataset imdb", "'<'")
    assert not (tmp_path / "best.pt").exists()


def test_train_refuses_resume_with_other_model_settings(lm_data, tmp_path, cli):
    code, _, err = cli(train.main, tiny_args(lm_data, tmp_path, "--max_steps", "3", "--eval_interval", "3"))
    assert code == 0, err
    last, best = tmp_path / "run" / "last.pt", tmp_path / "best.pt"
    before = last.read_bytes(), best.read_bytes()
    for flags, name in ((["--n_embd", "32"], "--n_embd"), (["--clip", "0.5"], "--clip"), (["--lr", "0.01"], "--lr")):
        code, _, err = cli(train.main, tiny_args(lm_data, tmp_path, "--max_steps", "3", "--resume", *flags))
        one_error_line(code, err, name, "--resume")
    assert (last.read_bytes(), best.read_bytes()) == before


def test_train_refuses_an_edited_last_pt(lm_data, tmp_path, cli):
    code, _, err = cli(train.main, tiny_args(lm_data, tmp_path, "--max_steps", "3", "--eval_interval", "3"))
    assert code == 0, err
    last = tmp_path / "run" / "last.pt"
    ckpt = torch.load(last, weights_only=True)
    ckpt["model_state"]["wte.weight"] = ckpt["model_state"]["wte.weight"][:5]
    save_checkpoint(last, ckpt)
    code, _, err = cli(train.main, tiny_args(lm_data, tmp_path, "--max_steps", "3", "--eval_interval", "3", "--resume"))
    one_error_line(code, err, "last.pt", "wte.weight")
    ckpt = torch.load(last, weights_only=True)
    ckpt["model_state"]["wte.weight"] = torch.load(tmp_path / "best.pt", weights_only=True)["model_state"][
        "wte.weight"]
    ckpt["step"] = 10**9         # beyond the run: it would "resume" and train nothing
    save_checkpoint(last, ckpt)
    code, _, err = cli(train.main, tiny_args(lm_data, tmp_path, "--max_steps", "3", "--eval_interval", "3", "--resume"))
    one_error_line(code, err, "says step 1,000,000,000, but the run has only 3 steps")


def test_a_run_folder_in_use_is_refused(lm_data, tmp_path, cli):
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.lock").write_text(json.dumps({"pid": 1, "host": socket.gethostname(), "command": "train.py",
                                              "started": "now"}))
    code, _, err = cli(train.main, tiny_args(lm_data, tmp_path))
    one_error_line(code, err, "in use")


def test_an_unwritable_run_folder_keeps_the_previous_best_model(lm_data, tmp_path, cli):
    best = tmp_path / "best.pt"
    best.write_bytes(b"the previous best model")
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    args = tiny_args(lm_data, tmp_path)
    args[args.index("--out_dir") + 1] = blocker / "run"
    code, _, err = cli(train.main, args)
    one_error_line(code, err, "a_file")
    assert best.read_bytes() == b"the previous best model"


# ----------------------------------------------------------------------------- data files and token caches
@pytest.mark.parametrize("content, name", [
    (b"ROMEO: caf\xe9\n" * 200, "line 1"), (b"too short\n", "characters"),
], ids=["not-utf8", "tiny"])
def test_train_refuses_a_bad_shakespeare_file(tmp_path, cli, content, name):
    (tmp_path / "data" / "tiny_shakespeare").mkdir(parents=True)
    (tmp_path / "data" / "tiny_shakespeare" / "input.txt").write_bytes(content)
    code, _, err = cli(train.main, tiny_args(tmp_path / "data", tmp_path))
    one_error_line(code, err, name)


def test_train_refuses_a_damaged_gzip(lm_data, tmp_path, cli):
    folder = tmp_path / "data" / "gutenberg_en"
    folder.mkdir(parents=True)
    for split in ("train", "valid"):
        data = (lm_data / "gutenberg_en" / f"{split}.txt.gz").read_bytes()
        (folder / f"{split}.txt.gz").write_bytes(data[: len(data) // 2])
    code, _, err = cli(train.main, tiny_args(tmp_path / "data", tmp_path, "--preset", "gutenberg", "--vocab_size",
                                             "300"))
    one_error_line(code, err, "train.txt.gz", "gzip")


@pytest.fixture
def cached_run(lm_data, tmp_path, cli):
    """A finished tiny run's token cache folder (tokenizer.json, train.bin, ...) and the flags that use it."""
    args = tiny_args(lm_data, tmp_path, "--max_steps", "1", "--eval_interval", "1", "--warmup_steps", "0")
    code, _, err = cli(train.main, args)
    assert code == 0, err
    return next((tmp_path / "cache").iterdir()), [*args, "--out_dir", tmp_path / "run2"]


def test_a_token_cache_with_ids_beyond_the_tokenizer_is_refused(cached_run, cli):
    folder, args = cached_run
    ids = np.fromfile(folder / "train.bin", dtype=np.uint16)
    ids[7] = 999
    ids.tofile(folder / "train.bin")
    code, _, err = cli(train.main, args)
    one_error_line(code, err, "train.bin", "999")


def test_a_token_cache_built_from_other_text_is_refused(cached_run, lm_data, tmp_path, cli):
    """A cache made from one copy of the data is never read for another --data_dir (a truncated one here)."""
    folder, args = cached_run
    other = tmp_path / "other" / "tiny_shakespeare"
    other.mkdir(parents=True)
    (other / "input.txt").write_text((lm_data / "tiny_shakespeare" / "input.txt").read_text()[:5000])
    args[args.index("--data_dir") + 1] = other.parent
    code, _, err = cli(train.main, args)
    one_error_line(code, err, str(folder), "--data_dir", "5,000 bytes", "--cache_dir")


def test_a_token_cache_without_its_source_is_refused(cached_run, cli):
    folder, args = cached_run
    meta = json.loads((folder / "meta.json").read_text())
    del meta["source"]
    (folder / "meta.json").write_text(json.dumps(meta))
    code, _, err = cli(train.main, args)
    one_error_line(code, err, str(folder), "does not record")


@pytest.mark.parametrize("edit, name", [
    (lambda t: {**t, "chars": t["chars"][:-1]}, "does not match"),
    (lambda t: {**t, "chars": t["chars"] + t["chars"][:1]}, "distinct"),
    (lambda t: {**t, "chars": 5}, "tokenizer.json"),
    (lambda t: [1, 2], "tokenizer.json"),
], ids=["shorter", "duplicate", "wrong-type", "not-a-dict"])
def test_a_token_cache_with_an_edited_tokenizer_is_refused(cached_run, cli, edit, name):
    folder, args = cached_run
    path = folder / "tokenizer.json"
    path.write_text(json.dumps(edit(json.loads(path.read_text()))))
    code, _, err = cli(train.main, args)
    one_error_line(code, err, name)


BPE_EDITS = [
    (lambda t: {**t, "merges": t["merges"] + [["no", "such"]]}, "merge #"),
    (lambda t: {**t, "merges": t["merges"] + t["merges"][:1]}, "appears twice"),
    (lambda t: {**t, "merges": [[1, 2]]}, "merge #0"),
    (lambda t: {**t, "merges": "x"}, "'merges'"),
    (lambda t: {**t, "special_tokens": {EOT: "a"}}, "integers"),
    (lambda t: {**t, "special_tokens": {EOT: 5}}, "special token ids"),
    (lambda t: {**t, "vocab_size": 7}, "vocab_size"),
    (lambda t: {**t, "pattern": "("}, "tokenizer file"),
    (lambda t: {**t, "type": "wordpiece"}, "type"),
]


@pytest.mark.parametrize("edit, name", BPE_EDITS, ids=[n for _, n in BPE_EDITS])
def test_generate_refuses_an_edited_tokenizer_file(bpe_model, tmp_path, cli, edit, name):
    tokenizer = torch.load(bpe_model, weights_only=True)["tokenizer"]
    path = tmp_path / "tok.json"
    path.write_text(json.dumps(edit(tokenizer)))
    code, _, err = cli(generate.main, ["--checkpoint", bpe_model, "--tokenizer", path, "--max_new_tokens", "2"])
    one_error_line(code, err, name, "tok.json")


def test_a_damaged_task_token_cache_is_refused(tmp_path):
    tokenizer = ByteLevelBPE.train(BPE_TEXT, 300)
    data = T.TaskData("imdb", ["a good film", "a bad film"], labels=[1, 0], classes=["neg", "pos"])
    T.tokenize(tokenizer, data, tmp_path)
    path = next(tmp_path.glob("*.npz"))
    for content in (b"not a zip", None):
        if content is None:
            np.savez(path, flat=np.array([1, 2, 99999]), offsets=np.array([0, 1, 3]))
        else:
            path.write_bytes(content)
        with pytest.raises(UserError, match=str(path.name)):
            T.tokenize(tokenizer, T.TaskData("imdb", data.texts, labels=[1, 0], classes=data.classes), tmp_path)


# ----------------------------------------------------------------------------- edited checkpoints
CHECKPOINT_EDITS = [
    (lambda c: c["config"].pop("bias"), "missing bias"),
    (lambda c: c["config"].update(rotary=True), "unknown rotary"),
    (lambda c: c["config"].update(n_embd=10 ** 9), "n_embd"),
    (lambda c: c["config"].update(n_head=0), "n_head"),
    (lambda c: c["config"].update(dropout=float("nan")), "dropout"),
    (lambda c: c["config"].update(attention="flash"), "attention"),
    (lambda c: c["config"].update(n_layer="4"), "n_layer"),
    (lambda c: c.update(model="rnn"), "'rnn'"),
    (lambda c: c["model_state"].pop("ln_f.weight"), "ln_f.weight"),
    (lambda c: c.update(tokenizer={**c["tokenizer"], "chars": c["tokenizer"]["chars"][:-3]}), "fingerprint"),
    (lambda c: c.update(tokenizer=CharTokenizer(CHARS[:-3]).to_dict(),
                        tokenizer_fingerprint=CharTokenizer(CHARS[:-3]).fingerprint()), "entries"),
    (lambda c: c.update(tokenizer={"type": "char", "chars": ["a", "a"], "format": "stage5-char-v1"}), "distinct"),
    (lambda c: c.update(config=[1, 2]), "config"),
    (lambda c: c.pop("tokenizer"), "no tokenizer"), (lambda c: c.update(tokenizer=None), "no tokenizer"),
    (lambda c: c.update(tokenizer="tok.json"), "no tokenizer"),
    (lambda c: c.pop("tokenizer_fingerprint"), "no tokenizer_fingerprint"),
]


@pytest.mark.parametrize("edit, name", CHECKPOINT_EDITS, ids=[n for _, n in CHECKPOINT_EDITS])
@pytest.mark.parametrize("program", ["generate", "evaluate", "finetune", "train"])
def test_edited_checkpoints_are_refused_before_building(char_model, lm_data, tmp_path, cli, edit, name, program):
    path = edited(char_model, tmp_path, edit)
    argv = {"generate": (generate.main, ["--checkpoint", path, "--max_new_tokens", "2"]),
            "evaluate": (evaluate.main, ["--checkpoint", path, "--data_dir", lm_data, "--metrics_out",
                                         tmp_path / "m.json"]),
            "finetune": (finetune.main, ["--base", path, "--out_dir", tmp_path / "run", "--checkpoint",
                                         tmp_path / "ft.pt"]),
            "train": (train.main, tiny_args(lm_data, tmp_path, "--init_from", path))}[program]
    # refused before a model is built (an absurd size would allocate gigabytes), on the meta device or not
    with mock.patch.object(GPT, "__init__", side_effect=AssertionError("built")) if "n_embd" in name else \
            contextlib.nullcontext():
        code, _, err = cli(*argv)
    one_error_line(code, err, name, path.name)
    assert not (tmp_path / "ft.pt").exists() and not (tmp_path / "m.json").exists()


FINETUNE_INFO_EDITS = [
    (lambda i: i.update(kind="prompt"), "kind"), (lambda i: i.update(tasks=["sentiment"]), "tasks"),
    (lambda i: i.update(tasks="imdb"), "tasks"), (lambda i: i.update(classes={"imdb": ["pos"]}), "classes"),
    (lambda i: i.update(classes={"imdb": "neg,pos"}), "classes"), (lambda i: i.update(max_len=10 ** 6), "max_len"),
    (lambda i: i.pop("method"), "method"), (lambda i: i.update(ag_news_source="web"), "ag_news_source"),
    (lambda i: i.update(method="prefix"), "method"), (lambda i: i.update(scratch="yes"), "scratch"),
    (lambda i: i.update(base=None), "base"), (lambda i: i.update(trainable_params="all"), "trainable_params"),
]


@pytest.mark.parametrize("edit, name", FINETUNE_INFO_EDITS, ids=[n for _, n in FINETUNE_INFO_EDITS])
@pytest.mark.parametrize("program", [generate.main, evaluate.main], ids=["generate", "evaluate"])
def test_edited_fine_tuning_records_are_refused(classifier, tmp_path, cli, edit, name, program):
    path = edited(classifier, tmp_path, lambda c: edit(c["finetune"]))
    argv = ["--checkpoint", path, "--prompt", "a film"] if program is generate.main else ["--checkpoint", path]
    code, _, err = cli(program, argv)
    one_error_line(code, err, name, path.name)


@pytest.mark.parametrize("edit", [lambda c: c.pop("dataset"), lambda c: c.update(dataset=["shakespeare"]),
                                  lambda c: c.update(dataset="poetry")], ids=["missing", "a-list", "unknown"])
def test_evaluate_refuses_a_checkpoint_that_does_not_name_its_data_set(char_model, lm_data, tmp_path, cli, edit):
    path = edited(char_model, tmp_path, edit)
    code, _, err = cli(evaluate.main, ["--checkpoint", path, "--data_dir", lm_data, "--metrics_out",
                                       tmp_path / "m.json"])
    one_error_line(code, err, path.name, "--dataset or --text_file")
    # the text to score named on the command line, the entry is not needed
    code, _, err = cli(evaluate.main, ["--checkpoint", path, "--data_dir", lm_data, "--dataset", "shakespeare",
                                       "--limit", "200", "--metrics_out", tmp_path / "m.json"])
    assert code == 0, err


@pytest.mark.parametrize("edit", [lambda c: c.pop("args"), lambda c: c.update(args=5)], ids=["missing", "an-int"])
def test_a_checkpoint_without_its_training_flags_still_loads(char_model, lm_data, tmp_path, cli, edit):
    """The flags it was trained with (args) only describe the model: generate.py and evaluate.py do without them."""
    path = edited(char_model, tmp_path, edit)
    code, _, err = cli(generate.main, ["--checkpoint", path, "--max_new_tokens", "2"])
    assert code == 0, err
    code, _, err = cli(evaluate.main, ["--checkpoint", path, "--data_dir", lm_data, "--limit", "200",
                                       "--metrics_out", tmp_path / "m.json"])
    assert code == 0, err


def test_a_classifier_with_another_number_of_classes_is_refused(classifier, tmp_path, cli):
    path = edited(classifier, tmp_path, lambda c: c["finetune"]["classes"].update(imdb=["a", "b", "c"]))
    code, _, err = cli(generate.main, ["--checkpoint", path, "--prompt", "a film"])
    one_error_line(code, err, "head.", path.name)


# ----------------------------------------------------------------------------- generate.py, evaluate.py, bench.py
GENERATE_FLAGS = [
    (["--temperature", "nan"], "--temperature"), (["--temperature", "-1"], "--temperature"),
    (["--temperature", "1e-320"], "--temperature"), (["--top_p", "0"], "--top_p"), (["--top_p", "1.5"], "--top_p"),
    (["--top_k", "-1"], "--top_k"), (["--max_new_tokens", "0"], "--max_new_tokens"),
    (["--max_new_tokens", "10000000"], "--max_new_tokens"), (["--num_samples", "0"], "--num_samples"),
    (["--seed", "-1"], "--seed"), (["--seed", str(2 ** 70)], "--seed"), (["--task", "imdb"], "task"),
    (["--tokenizer", "no_such.json"], "no_such.json"), (["--prompt", "ROMEO: ☃"], "'☃'"),
    (["--prompt", "   "], "--prompt"), (["--device", "tpu"], "--device"),
]


@pytest.mark.parametrize("flags, name", GENERATE_FLAGS, ids=[" ".join(f) for f, _ in GENERATE_FLAGS])
def test_generate_refuses_bad_flags_in_one_line(char_model, cli, flags, name):
    code, out, err = cli(generate.main, ["--checkpoint", char_model, "--max_new_tokens", "3", *flags])
    one_error_line(code, err, name)


def test_generate_interactive_answers_the_prompt_first(char_model, classifier, cli):
    """--interactive --prompt X: X is answered as if typed first, then the keyboard is read (here: end of input)."""
    with mock.patch.object(sys, "stdin", TypedLines(["ba"])):
        code, out, err = cli(generate.main, ["--checkpoint", char_model, "--interactive", "--prompt", "ab",
                                             "--max_new_tokens", "2"])
    assert code == 0, err
    assert "> ab\nab" in out and "> ba" in out and out.index("> ab") < out.index("> ba")   # (input() echoes no pipe)
    with mock.patch.object(sys, "stdin", TypedLines([])):
        code, out, err = cli(generate.main, ["--checkpoint", classifier, "--interactive", "--prompt", "a good film"])
    assert code == 0, err
    assert "> a good film\n" in out and ("neg (" in out or "pos (" in out)


@pytest.mark.parametrize("flags, name", [(["--num_samples", "2"], "--num_samples"), (["--prompt", " "], "--prompt")])
def test_generate_interactive_refuses_what_it_would_ignore(char_model, cli, flags, name):
    code, _, err = cli(generate.main, ["--checkpoint", char_model, "--interactive", *flags])
    one_error_line(code, err, name)


def test_generate_refuses_text_that_is_not_utf8(char_model, cli):
    code, _, err = cli(generate.main, ["--checkpoint", char_model, "--prompt", b"caf\xe9".decode("utf-8",
                                                                                                  "surrogateescape")])
    one_error_line(code, err, "UTF-8")


EVALUATE_FLAGS = [(["--batch_size", "0"], "--batch_size"), (["--limit", "-1"], "--limit"),
                  (["--text_file", "no_such.txt"], "no_such.txt"), (["--limit", "1"], "too short")]


@pytest.mark.parametrize("flags, name", EVALUATE_FLAGS, ids=[" ".join(f) for f, _ in EVALUATE_FLAGS])
def test_evaluate_refuses_bad_flags_in_one_line(char_model, lm_data, tmp_path, cli, flags, name):
    code, _, err = cli(evaluate.main, ["--checkpoint", char_model, "--data_dir", lm_data, "--metrics_out",
                                       tmp_path / "m.json", *flags])
    one_error_line(code, err, name)


def test_evaluate_writes_a_language_models_metrics_into_out_dir(char_model, lm_data, tmp_path, cli):
    code, out, err = cli(evaluate.main, ["--checkpoint", char_model, "--data_dir", lm_data, "--out_dir",
                                         tmp_path / "ev", "--limit", "2000"])
    assert code == 0, err
    assert (tmp_path / "ev" / "metrics.json").is_file() and str(tmp_path / "ev" / "metrics.json") in out


@pytest.mark.parametrize("model, flags, name", [
    ("lm", ["--out_dir", "ev", "--metrics_out", "m.json"], "not both"),
    ("classifier", ["--metrics_out", "m.json"], "--metrics_out applies only"),
], ids=["lm-both", "classifier-metrics-out"])
def test_evaluate_refuses_an_output_flag_it_would_ignore(char_model, classifier, tmp_path, cli, model, flags, name):
    path = char_model if model == "lm" else classifier
    code, _, err = cli(evaluate.main, ["--checkpoint", path, *[str(tmp_path / f) if f[0] != "-" else f
                                                               for f in flags]])
    one_error_line(code, err, name)
    assert not list(tmp_path.iterdir())


def test_evaluate_names_the_line_of_a_text_file_that_is_not_utf8(char_model, tmp_path, cli):
    path = tmp_path / "text.txt"
    path.write_bytes(b"good text\n" * 3 + b"caf\xe9\n")
    code, _, err = cli(evaluate.main, ["--checkpoint", char_model, "--text_file", path, "--metrics_out",
                                       tmp_path / "m.json"])
    one_error_line(code, err, "text.txt", "line 4")


def test_bench_refuses_bad_flags(cli):
    code, _, err = cli(bench.main, ["--num_threads", "-2", "--tables_only"])
    one_error_line(code, err, "--num_threads")


# ----------------------------------------------------------------------------- finetune.py
FINETUNE_FLAGS = [
    (["--clip", "-1"], "--clip"), (["--lr", "0"], "--lr"), (["--lr", "nan"], "--lr"), (["--limit", "-5"], "--limit"),
    (["--eval_limit", "-1"], "--eval_limit"), (["--epochs", "0"], "--epochs"), (["--batch_size", "0"], "--batch_size"),
    (["--lora_rank", "0"], "--lora_rank"), (["--lora_alpha", "0"], "--lora_alpha"), (["--warmup", "1"], "--warmup"),
    (["--dropout", "-0.5"], "--dropout"), (["--lora_dropout", "1"], "--lora_dropout"),
    (["--max_len", "4"], "--max_len"),
    (["--max_len", "-1"], "--max_len"), (["--train_blocks", "0"], "--train_blocks"),
    (["--log_interval", "0"], "--log_interval"), (["--weight_decay", "inf"], "--weight_decay"),
    (["--eval_batch_size", "0"], "--eval_batch_size"), (["--task", "multi", "--tasks", "imdb,bogus"], "bogus"),
    (["--task", "multi", "--tasks", ","], "--tasks"), (["--task", "multi", "--tasks", "imdb,imdb"], "--tasks"),
    (["--task", "multi", "--method", "head"], "--method"), (["--scratch", "--method", "lora"], "--scratch"),
    (["--task", "sentiment"], "--task"), (["--base", "no_such.pt"], "no_such.pt"),
    (["--method", "head", "--lora_rank", "4"], "--lora_rank applies only with --method lora"),
    (["--lora_alpha", "8"], "--lora_alpha"), (["--method", "last_blocks", "--lora_targets", "c_fc"], "--lora_targets"),
    (["--method", "head", "--lora_dropout", "0.1"], "--lora_dropout"),
    (["--method", "lora", "--train_blocks", "1"], "--train_blocks applies only with --method last_blocks"),
    (["--tasks", "imdb,translate"], "--tasks applies only with --task multi"),
    (["--ag_news_source", "test_carveout"], "--ag_news_source applies only"),
    (["--task", "multi", "--tasks", "imdb,translate", "--ag_news_source", "official"], "--ag_news_source"),
]


@pytest.mark.parametrize("flags, name", FINETUNE_FLAGS, ids=[" ".join(f) for f, _ in FINETUNE_FLAGS])
def test_finetune_refuses_bad_flags_in_one_line(bpe_model, tmp_path, cli, flags, name):
    code, _, err = cli(finetune.main, ["--base", bpe_model, "--out_dir", tmp_path / "run", "--checkpoint",
                                       tmp_path / "ft.pt", "--device", "cpu", *flags])
    one_error_line(code, err, name)
    assert not (tmp_path / "ft.pt").exists()


def test_finetune_fills_in_the_defaults_of_the_other_methods_flags():
    """The flags of one method default to None so that a typed one can be refused with another method; left out,
    they take their defaults whatever the method (--resume compares them with the saved run's)."""
    for method in finetune.METHODS:
        args = finetune.resolve_args(finetune.build_parser().parse_args(["--method", method]))
        assert (args.train_blocks, args.lora_rank, args.lora_alpha, args.lora_targets, args.lora_dropout,
                args.tasks) == (2, 8, 16.0, "c_attn,c_proj", 0.0, "imdb,ag_news,translate")


def test_finetune_refuses_training_data_of_one_class(bpe_model, tiny_data, tmp_path, cli):
    code, _, err = cli(finetune.main, ["--base", bpe_model, "--data_dir", tiny_data, "--out_dir", tmp_path / "run",
                                       "--checkpoint", tmp_path / "ft.pt", "--cache_dir", "", "--limit", "1",
                                       "--device", "cpu"])
    one_error_line(code, err, "--limit 1", "one class", "imdb")
    assert not (tmp_path / "ft.pt").exists()


def tiny_finetune(bpe_model, tiny_data, tmp_path, *extra) -> list:
    return ["--base", bpe_model, "--data_dir", tiny_data, "--out_dir", tmp_path / "run", "--checkpoint",
            tmp_path / "ft.pt", "--cache_dir", "", "--limit", "8", "--eval_limit", "4", "--epochs", "1",
            "--batch_size", "4", "--max_len", "16", "--device", "cpu", "--num_threads", "1", *extra]


def test_finetune_resume_refuses_other_settings_and_an_edited_last_pt(bpe_model, tiny_data, tmp_path, cli):
    code, _, err = cli(finetune.main, tiny_finetune(bpe_model, tiny_data, tmp_path))
    assert code == 0, err
    last, best = tmp_path / "run" / "last.pt", tmp_path / "ft.pt"
    before = last.read_bytes(), best.read_bytes()
    for flags, name in ((["--lr", "0.01"], "--lr"), (["--max_len", "32"], "--max_len"), (["--clip", "0"], "--clip"),
                        (["--seed", "9"], "--seed"), (["--eval_limit", "2"], "--eval_limit")):
        code, _, err = cli(finetune.main, tiny_finetune(bpe_model, tiny_data, tmp_path, "--resume", *flags))
        one_error_line(code, err, "--resume", name)
    assert (last.read_bytes(), best.read_bytes()) == before
    ckpt = torch.load(last, weights_only=True)
    ckpt["step"] = -3
    save_checkpoint(last, ckpt)
    code, _, err = cli(finetune.main, tiny_finetune(bpe_model, tiny_data, tmp_path, "--resume"))
    one_error_line(code, err, "--resume", "last.pt")
    assert best.read_bytes() == before[1]


@pytest.mark.parametrize("edit, name", [
    (lambda c: c.update(step=10**9), "step 1000000000"), (lambda c: c.update(best_epoch=7), "best epoch 7"),
], ids=["step-beyond-the-end", "best-epoch-never-reached"])
def test_finetune_resume_refuses_impossible_counters(bpe_model, tiny_data, tmp_path, cli, edit, name):
    code, _, err = cli(finetune.main, tiny_finetune(bpe_model, tiny_data, tmp_path))
    assert code == 0, err
    last, best = tmp_path / "run" / "last.pt", tmp_path / "ft.pt"
    ckpt = torch.load(last, weights_only=True)
    edit(ckpt)
    save_checkpoint(last, ckpt)
    before = best.read_bytes()
    code, _, err = cli(finetune.main, tiny_finetune(bpe_model, tiny_data, tmp_path, "--resume"))
    assert one_error_line(code, err, name).startswith("error: --resume:")
    assert best.read_bytes() == before


def test_a_refused_rerun_leaves_the_interrupted_runs_log_alone(bpe_model, tiny_data, tmp_path, cli):
    code, _, err = cli(finetune.main, tiny_finetune(bpe_model, tiny_data, tmp_path))
    assert code == 0, err
    progress = tmp_path / "run" / "progress.json"
    progress.write_text(json.dumps({**json.loads(progress.read_text()), "state": "interrupted"}))   # as after Ctrl-C
    log = (tmp_path / "run" / "train.log").read_bytes()
    code, _, err = cli(finetune.main, tiny_finetune(bpe_model, tiny_data, tmp_path))
    one_error_line(code, err, "--resume", "--restart")
    assert (tmp_path / "run" / "train.log").read_bytes() == log


@pytest.mark.parametrize("program, flag", [(finetune.main, "--base"), (train.main, "--init_from")],
                         ids=["finetune", "train"])
def test_a_gpt2_folder_without_weights_is_one_line_naming_its_flag(lm_data, tmp_path, cli, program, flag):
    """transformers' own log lines about the config must not come before the error."""
    folder = tmp_path / "hf"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "gpt2", "n_layer": 1, "n_head": 2, "n_embd": 32,
                                                    "n_positions": 64, "vocab_size": 300}))
    said = []   # transformers logs to a handler of its own (bound to the real stderr), so listen on its logger
    listener = logging.Handler()
    listener.emit = said.append
    logging.getLogger("transformers").addHandler(listener)
    try:
        code, _, err = cli(program, [flag, folder, "--data_dir", lm_data, "--out_dir", tmp_path / "run",
                                     "--checkpoint", tmp_path / "ft.pt", "--device", "cpu"])
    finally:
        logging.getLogger("transformers").removeHandler(listener)
    assert one_error_line(code, err, str(folder)).startswith(f"error: {flag} ")
    assert not said, [record.getMessage() for record in said]


@pytest.mark.parametrize("locked", ["run/run.lock", ".ft.pt.lock"], ids=["out_dir", "checkpoint"])
def test_finetune_refuses_a_run_folder_or_checkpoint_in_use(bpe_model, tiny_data, tmp_path, cli, locked):
    lock = tmp_path / locked
    lock.parent.mkdir(parents=True, exist_ok=True)
    lock.write_text(json.dumps({"pid": 1, "host": socket.gethostname(), "command": "finetune.py", "started": "now"}))
    code, _, err = cli(finetune.main, tiny_finetune(bpe_model, tiny_data, tmp_path))
    one_error_line(code, err, "in use")
    assert not (tmp_path / "run" / "train.log").exists() and not (tmp_path / "ft.pt").exists()


EMPTY_PATHS = [(finetune.main, "--out_dir"), (finetune.main, "--checkpoint"), (finetune.main, "--base"),
               (train.main, "--out_dir"), (train.main, "--init_from"), (train.main, "--cache_dir"),
               (evaluate.main, "--metrics_out"), (evaluate.main, "--text_file"), (evaluate.main, "--tokenizer"),
               (evaluate.main, "--init_from"), (evaluate.main, "--out_dir"), (generate.main, "--tokenizer"),
               (generate.main, "--init_from"), (generate.main, "--checkpoint"), (bench.main, "--data_dir"),
               (bench.main, "--collect"), (bench.main, "--base"), (bench.main, "--nanogpt_dir")]


@pytest.mark.parametrize("program, flag", EMPTY_PATHS,
                         ids=[f"{p.__module__.split('.')[-1]} {f}" for p, f in EMPTY_PATHS])
def test_an_empty_path_is_refused(cli, program, flag):
    """An unset shell variable (`--out_dir "$RUN"`) is not read as "not given": that would write elsewhere."""
    code, _, err = cli(program, [flag, ""])
    one_error_line(code, err, flag, "empty path")


BENCH_FLAGS = [
    (["--base", "x.pt"], "--base applies to --parts finetune"), (["--parts", "quick", "--device", "cuda"], "--device"),
    (["--parts", "quick", "--runs", "imdb_full"], "--runs"),
    (["--parts", "char", "--nanogpt_dir", "."], "--nanogpt_dir"),
    (["--parts", "baby", "--nanogpt_dir", "."], "not a nanoGPT checkout"),
    (["--parts", "finetune", "--base", "no_such.pt", "--runs", "imdb_full"], "no_such.pt"),
    (["--parts", "finetune", "--runs", "imdb_full_adapted", "--base", "gpt2"], "gpu_base_imdb.pt"),
    (["--parts", "finetune", "--collect", "."], "--collect"), (["--tables_only", "--parts", "quick"], "--tables_only"),
    (["--parts", "finetune", "--device", "tpu"], "--device"),
]


@pytest.mark.parametrize("flags, name", BENCH_FLAGS, ids=[" ".join(f) for f, _ in BENCH_FLAGS])
def test_bench_refuses_flags_that_would_be_ignored_or_fail_late(cli, monkeypatch, tmp_path, flags, name):
    monkeypatch.setattr(bench, "IMDB_BASE", tmp_path / "gpu_base_imdb.pt")
    monkeypatch.setattr(bench, "RESULTS", tmp_path / "results")
    monkeypatch.chdir(tmp_path)
    code, _, err = cli(bench.main, flags)
    one_error_line(code, err, name)
    assert not (tmp_path / "results").exists()


def test_bench_ends_with_a_failed_programs_own_line(capfd, monkeypatch, tmp_path):
    """train.py's one-line error (from its own process: capfd) is the only one: bench.py adds none and exits with
    its status (ChildFailed)."""
    monkeypatch.setattr(bench, "STAGE_DIR", tmp_path)
    monkeypatch.setattr(bench, "RESULTS", tmp_path / "results")
    with pytest.raises(SystemExit) as info:
        run_main(bench.main, ["--parts", "quick", "--data_dir", str(tmp_path / "no_data")])
    one_error_line(info.value.code, capfd.readouterr().err, "no_data")


@pytest.mark.parametrize("flags, name", [(["--method", "lora", "--lora_rank", "64"], "--lora_rank"),
                                         (["--method", "last_blocks", "--train_blocks", "3"], "--train_blocks"),
                                         (["--method", "lora", "--lora_targets", "wte"], "--lora_targets")])
def test_finetune_refuses_settings_the_model_cannot_take(bpe_model, tiny_data, tmp_path, cli, flags, name):
    code, _, err = cli(finetune.main, ["--base", bpe_model, "--data_dir", tiny_data, "--out_dir", tmp_path / "run",
                                       "--checkpoint", tmp_path / "ft.pt", "--cache_dir", "", "--limit", "8",
                                       "--eval_limit", "8", "--device", "cpu", *flags])
    one_error_line(code, err, name)


# ----------------------------------------------------------------------------- pinned downloads
def test_the_shakespeare_download_is_pinned_and_verified(monkeypatch, tmp_path):
    calls = []
    monkeypatch.delenv("MY_LLM_DATA", raising=False)
    monkeypatch.setattr(corpus, "cache_dir", lambda name: tmp_path / name)
    monkeypatch.setattr(corpus, "download", lambda url, dest, sha256=None: calls.append((url, sha256)) or
                        (_ for _ in ()).throw(ConnectionError("offline")))
    with pytest.raises(UserError, match="offline"):
        corpus.load_text("shakespeare", None)
    assert calls == [(corpus.SHAKESPEARE_URL, "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed")]
    assert "6f9487a6fe5b420b7ca9afb0d7c078e37c1d1b4e" in corpus.SHAKESPEARE_URL


def test_every_gutenberg_book_is_pinned_to_a_commit_and_a_checksum():
    books = json.loads(corpus.GUTENBERG_BOOKS.read_text(encoding="utf-8"))
    assert len(books) == 111 and len({b["source_path"] for b in books}) == 111
    assert all(len(b["sha256"]) == 64 and b["source_path"].startswith("data/") for b in books)
    assert "c58dca3a6abedd8041057571c247e9a393cc3b4d" in corpus.GUTENBERG_URL


def test_a_gutenberg_book_is_verified_after_cleaning(monkeypatch, tmp_path):
    """Offline, with file:// URLs: a source file that cleans to the pinned text is accepted, a changed one refused
    (and deleted, so a later try downloads it again)."""
    monkeypatch.delenv("MY_LLM_OFFLINE", raising=False)
    raw = ("\ufeffThe Project Gutenberg eBook\r\n*** START OF THE PROJECT GUTENBERG EBOOK TEST ***\r\n\r\n"
           "Chapter 1\r\nIt was a dark night.\r\n\r\n*** END OF THE PROJECT GUTENBERG EBOOK TEST ***\r\nlicence\r\n")
    source = tmp_path / "upstream" / "data" / "books" / "pg1.txt"
    source.parent.mkdir(parents=True)
    source.write_text(raw, encoding="utf-8", newline="")
    clean = "Chapter 1\nIt was a dark night.\n"
    book = {"pg_id": 1, "split": "train", "source_path": "data/books/pg1.txt",
            "sha256": hashlib.sha256(clean.encode()).hexdigest()}
    monkeypatch.setattr(corpus, "GUTENBERG_URL", (tmp_path / "upstream").as_uri() + "/{path}")
    assert corpus.gutenberg_book(book, tmp_path / "books") == clean
    source.write_text(raw.replace("dark", "stormy"), encoding="utf-8")
    (tmp_path / "books" / "pg1.txt").unlink()
    with pytest.raises(ValueError, match="book #1"):
        corpus.gutenberg_book(book, tmp_path / "books")
    assert not (tmp_path / "books" / "pg1.txt").exists()
    # the whole corpus: its two files are the concatenation the shared copy is made of, or nothing
    monkeypatch.setattr(corpus, "GUTENBERG_BOOKS", tmp_path / "books.json")
    (tmp_path / "books.json").write_text(json.dumps([book, {**book, "split": "valid"}]))
    source.write_text(raw, encoding="utf-8")
    corpus.download_gutenberg(tmp_path / "corpus")
    with gzip.open(tmp_path / "corpus" / "train.txt.gz", "rt", encoding="utf-8") as f:
        assert f.read() == clean + "\n" + EOT + "\n"


# ----------------------------------------------------------------------------- the interactive loops, any line
LINES = st.one_of(
    st.text(max_size=300),
    st.sampled_from([":", ": ", ":temperature nan", ":temperature 1e-320", ":t -1", ":seed 99999999999999999999999",
                     ":beam ²", ":top_p 0", ":top_k -5", ":n 0", ":n 3", ":cache maybe", ":cache off", ":task x",
                     ":task imdb", ":task none", ":settings", ":help", ":unknown", "\x00\x1b[2J", "a" * 5000,
                     "\ud800 lone surrogate", "hello there", ":k 3", ":p 0.5", ":t 0"]),
    st.text(alphabet="abc :\n\t", max_size=50).map(lambda s: ":" + s),
)


@pytest.fixture(scope="module")
def loaded_char_model(char_model):
    args = generate.build_parser().parse_args(["--checkpoint", str(char_model), "--max_new_tokens", "3"])
    model, tokenizer, _ = generate.load_model(args, torch.device("cpu"))
    return model, tokenizer, args


@HYPOTHESIS
@given(lines=st.lists(LINES, max_size=6))
def test_the_generate_loop_survives_any_line(loaded_char_model, capsys, lines):
    model, tokenizer, args = loaded_char_model
    with mock.patch.object(sys, "stdin", TypedLines([*lines, ":n 3", "ab"])):
        assert generate.interactive(model, tokenizer, args, torch.device("cpu")) == 0
    capsys.readouterr()


@pytest.fixture(scope="module")
def loaded_classifier(classifier):
    args = generate.build_parser().parse_args(["--checkpoint", str(classifier)])
    model, tokenizer, _ = generate.load_model(args, torch.device("cpu"), classifier_ok=True)
    return model, tokenizer


@HYPOTHESIS
@given(lines=st.lists(LINES, max_size=6))
def test_the_classify_loop_survives_any_line(loaded_classifier, capsys, lines):
    model, tokenizer = loaded_classifier
    with mock.patch.object(sys, "stdin", TypedLines(lines)):
        assert generate.classify_loop(model, tokenizer, torch.device("cpu")) == 0
    capsys.readouterr()


# ----------------------------------------------------------------------------- any text, any bytes
BPE = ByteLevelBPE.train(BPE_TEXT, 300)


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=400), special=st.booleans())
def test_bpe_round_trip_of_any_text(text, special):
    text = text + EOT if special else text
    ids = BPE.encode(text)
    assert BPE.decode(ids) == text and all(0 <= i < BPE.vocab_size for i in ids)
    assert BPE.decode(BPE.encode(text, allowed_special=False)) == text


@settings(max_examples=100, deadline=None)
@given(text=st.text(max_size=200))
def test_char_tokenizer_encodes_or_refuses_any_text(text):
    tokenizer = CharTokenizer(CHARS)
    try:
        ids = tokenizer.encode(text)
    except UserError as err:
        assert "never saw" in str(err)
        return
    assert tokenizer.decode(ids) == text


def test_a_very_long_word_is_encoded_quickly():
    text = "x" * 200_000
    assert BPE.decode(BPE.encode(text)) == text


@HYPOTHESIS
@given(data=st.binary(max_size=3000))
def test_the_corpus_reader_takes_any_bytes(tmp_path_factory, data):
    root = tmp_path_factory.mktemp("bytes")
    (root / "tiny_shakespeare").mkdir()
    (root / "tiny_shakespeare" / "input.txt").write_bytes(data * 2)
    try:
        splits = corpus.load_text("shakespeare", str(root))
    except UserError as err:
        assert "input.txt" in str(err) or "characters" in str(err)
        return
    assert len(splits["train"]) + len(splits["val"]) == len(data.decode("utf-8") * 2)


@HYPOTHESIS
@given(data=st.one_of(st.binary(max_size=500), st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=10)),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=12).map(lambda obj: json.dumps(obj).encode())))
def test_tokenizer_files_of_any_content_load_or_are_refused_in_one_line(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    path.write_bytes(data)
    try:
        load_tokenizer(path)
    except UserError as err:
        assert str(path) in str(err)


@HYPOTHESIS
@given(data=st.binary(max_size=2000))
def test_task_token_caches_of_any_content_load_or_are_refused(tmp_path_factory, data):
    folder = tmp_path_factory.mktemp("npz")
    texts = ["a good film", "a bad film"]
    digest_data = T.TaskData("imdb", texts, labels=[1, 0], classes=["neg", "pos"])
    T.tokenize(BPE, digest_data, folder)
    path = next(folder.glob("*.npz"))
    path.write_bytes(data)
    try:
        T.tokenize(BPE, T.TaskData("imdb", texts, labels=[1, 0], classes=["neg", "pos"]), folder)
    except UserError as err:
        assert path.name in str(err)


@settings(max_examples=60, deadline=None)
@given(data=st.binary(max_size=400))
def test_text_files_of_any_bytes_are_read_or_refused(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("text") / "t.txt"
    path.write_bytes(data)
    try:
        text = read_text(path, "--text_file")
    except UserError as err:
        assert "t.txt" in str(err) and "line" in str(err)
        return
    assert BPE.decode(BPE.encode(text)) == text


def test_a_bpe_that_cannot_reach_its_vocab_size_says_so(lm_data, tmp_path, cli):
    """Too little training text for the merges asked for: the run goes on with the tokenizer it got, and says so."""
    code, _, err = cli(train.main, tiny_args(lm_data, tmp_path, "--tokenizer", "bpe", "--vocab_size", "600",
                                             "--bpe_train_chars", "50", "--max_steps", "2", "--eval_interval", "2"))
    assert code == 0, err
    assert "not --vocab_size 600: its training text has no more pairs to merge" in err


def test_bench_publishes_results_of_the_reference_data_only(cli, tmp_path, monkeypatch):
    """A truncated copy trains without an error: the bench refuses it before any part runs, naming the file."""
    (tmp_path / "tiny_shakespeare").mkdir()
    (tmp_path / "tiny_shakespeare" / "input.txt").write_text("First Citizen:\nSpeak.\n" * 200)
    monkeypatch.setattr(bench, "run", lambda *a: pytest.fail("a part ran"))
    code, _, err = cli(bench.main, ["--parts", "quick", "--data_dir", str(tmp_path)])
    one_error_line(code, err, "input.txt is not the reference copy of tiny_shakespeare (its sha256 differs)")


def test_bench_accepts_the_reference_data(cli, real_data, monkeypatch):
    ran = []
    monkeypatch.setattr(bench, "quick", lambda *a, **k: ran.append("quick"))
    monkeypatch.setattr(bench, "update_file", lambda *a, **k: False)
    monkeypatch.setattr(bench, "draw_curves", lambda: None)
    code, _, err = cli(bench.main, ["--parts", "quick", "--data_dir", str(real_data)])
    assert ran == ["quick"], err


@pytest.mark.parametrize("flag", [["--data_dir", "/nonexistent"], ["--num_threads", "2"]])
def test_bench_tables_only_refuses_flags_it_would_ignore(cli, flag):
    one_error_line(*cli(bench.main, ["--tables_only", *flag])[::2], "--tables_only runs nothing")
