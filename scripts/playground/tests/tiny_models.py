"""A tiny course: every stage's models, trained for seconds on tiny data, in a folder laid out like the repository.

    from scripts.playground.tests.tiny_models import build_course
    root = build_course(Path("/tmp/course"))      # root/stage1_mlp/checkpoints/best_model.pt, ...

The playground's tests, its benchmark and its screenshots need real checkpoints of every kind the catalog lists,
without hours of training. Each model here is made by the stage's own program (its `main(argv)`, in this process),
on tiny data files written in the real formats by scripts/testing.py's writers, with tiny sizes, one thread and as
few steps as give a valid checkpoint. Every file lands where the stage's programs write it by default (the
checkpoint names and run folders below are those defaults), so the catalog finds them as it finds a learner's.
Nothing is cached outside `root`; the build takes well under a minute on one CPU core.
"""
from __future__ import annotations

import contextlib
import inspect
import logging
import os
import random
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch

# Shakespeare-like lines for the character models (stage 2's LSTM, stage 5's GPT): a few speakers and words
SPEAKERS = ["ROMEO", "JULIET", "KING HENRY", "First Citizen", "MENENIUS"]
WORDS = ("the king queen lord my good sir what thou art not shall be love death night day come go speak hear heart "
         "blood noble sweet fair true").split()
# every program on the CPU, one thread, in float32 (no bf16 autocast where it has one): the same models everywhere
CPU = ["--num_threads", "1", "--device", "cpu"]


def shakespeare_text(lines: int = 600, seed: int = 0) -> str:
    """About 35 KB in tiny Shakespeare's layout: a speaker's name and a colon, a speech, a blank line."""
    rng = random.Random(seed)
    speeches = []
    for _ in range(lines):
        speech = " ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 12)))
        speeches.append(f"{rng.choice(SPEAKERS)}:\n{speech.capitalize()}{rng.choice('.,!?;')}\n")
    return "\n".join(speeches)


def write_data(folder: Path) -> Path:
    """Tiny IMDb, AG News, Multi30k, Tatoeba and tiny Shakespeare, laid out like ../shared/data."""
    from scripts.testing import write_ag_news, write_imdb, write_translation_data

    write_imdb(folder / "imdb")
    write_ag_news(folder / "ag_news")
    write_translation_data(folder)
    (folder / "tiny_shakespeare").mkdir(parents=True, exist_ok=True)
    (folder / "tiny_shakespeare" / "input.txt").write_text(shakespeare_text(), encoding="utf-8")
    return folder


def steps(root: Path, data: Path) -> list[tuple[str, Callable[[Sequence[str]], Any], list[str]]]:
    """(what, the program's main, its argv) for each model, in the order they are built (stage 5's fine-tuned
    models start from the BPE GPT trained before them). Checkpoint and run names are the programs' defaults."""
    from stage1_mlp import train as s1_train
    from stage2_rnn_lstm import train as s2_train, train_classifier as s2_classifier
    from stage3_attention_seq2seq import train as s3_train
    from stage4_transformer import train as s4_train, train_classifier as s4_classifier
    from stage5_gpt import finetune as s5_finetune, train as s5_train

    def where(stage: str, checkpoint: str, run: str) -> list[str]:
        return ["--data_dir", str(data), "--checkpoint", str(root / stage / "checkpoints" / checkpoint),
                "--out_dir", str(root / stage / "runs" / run), *CPU]

    s5 = root / "stage5_gpt"
    gpt_tiny = ["--n_layer", "1", "--n_head", "2", "--n_embd", "16", "--block_size", "32", "--batch_size", "4",
                "--max_steps", "6", "--eval_interval", "3", "--eval_iters", "1", "--warmup_steps", "1",
                "--no-amp", "--cache_dir", str(s5 / "data_cache")]
    finetune_tiny = ["--base", str(s5 / "checkpoints" / "gpt_imdb_bpe.pt"), "--epochs", "1", "--batch_size", "8",
                     "--eval_batch_size", "16", "--limit", "24", "--eval_limit", "8", "--max_len", "64",
                     "--lr", "3e-3", "--no-amp", "--cache_dir", str(s5 / "data_cache" / "tasks")]
    return [
        ("stage 1 MLP classifier", s1_train.main,
         [*where("stage1_mlp", "best_model.pt", "imdb_torch"), "--epochs", "3", "--buckets", "2000",
          "--embed_dim", "16", "--hidden_dim", "16", "--min_freq", "1", "--lr", "0.01"]),
        ("stage 2 char LSTM", s2_train.main,
         [*where("stage2_rnn_lstm", "best_lstm_char.pt", "lstm_char_torch"), "--epochs", "1", "--embed_dim", "16",
          "--hidden_dim", "32", "--num_layers", "1", "--batch_size", "16", "--seq_len", "32", "--warmup_steps", "5",
          "--lr", "0.01"]),
        ("stage 2 LSTM classifier", s2_classifier.main,
         [*where("stage2_rnn_lstm", "best_classifier_imdb.pt", "classify_imdb"), "--epochs", "3", "--patience", "3",
          "--embed_dim", "16", "--hidden_dim", "16", "--batch_size", "16", "--lr", "0.01"]),
        ("stage 3 attention seq2seq", s3_train.main,
         [*where("stage3_attention_seq2seq", "best_attention_model.pt", "bahdanau_multi30k"), "--epochs", "5",
          "--embed_dim", "32", "--hidden_dim", "32", "--attention_dim", "16", "--batch_size", "32",
          "--warmup_steps", "5", "--lr", "0.01", "--dropout", "0.1", "--val_limit", "8"]),
        ("stage 4 Transformer translator", s4_train.main,
         [*where("stage4_transformer", "best_transformer.pt", "transformer_scratch_multi30k"), "--epochs", "8",
          "--d_model", "64", "--n_heads", "4", "--layers", "2", "--d_ff", "128", "--vocab_size", "200",
          "--max_tokens", "512", "--warmup_steps", "20", "--lr", "3e-3", "--dropout", "0.1", "--val_limit", "8",
          "--average_last", "0", "--no-amp"]),
        ("stage 4 Transformer classifier", s4_classifier.main,
         [*where("stage4_transformer", "best_classifier_imdb.pt", "classify_imdb"), "--epochs", "3",
          "--patience", "3", "--d_model", "32", "--n_heads", "2", "--layers", "1", "--d_ff", "64",
          "--vocab_size", "300", "--batch_size", "16", "--lr", "3e-3", "--no-amp"]),
        ("stage 5 char GPT", s5_train.main,
         [*where("stage5_gpt", "gpt_shakespeare_char.pt", "gpt_shakespeare_char"), *gpt_tiny, "--max_steps", "60",
          "--eval_interval", "30", "--lr", "1e-2", "--min_lr", "1e-3"]),
        ("stage 5 BPE GPT (the base of fine-tuning)", s5_train.main,
         [*where("stage5_gpt", "gpt_imdb_bpe.pt", "gpt_imdb_bpe"), *gpt_tiny, "--preset", "imdb",
          "--vocab_size", "300", "--block_size", "64"]),
        ("stage 5 fine-tuned classifier", s5_finetune.main,
         [*where("stage5_gpt", "ft_imdb_full.pt", "ft_imdb_full"), *finetune_tiny, "--task", "imdb"]),
        ("stage 5 multi-task GPT", s5_finetune.main,
         [*where("stage5_gpt", "ft_multi_full.pt", "ft_multi_full"), *finetune_tiny, "--task", "multi",
          "--epochs", "4", "--limit", "200", "--lr", "1e-2"]),    # enough to write French-looking words
    ]


# what build_course leaves, relative to root: each model's checkpoint (and the files its programs read beside it)
EXPECTED = [
    "stage1_mlp/checkpoints/best_model.pt", "stage1_mlp/checkpoints/best_model.vocab.json",
    "stage1_mlp/runs/imdb_torch/metrics.json",
    "stage2_rnn_lstm/checkpoints/best_lstm_char.pt", "stage2_rnn_lstm/checkpoints/char_vocabulary.json",
    "stage2_rnn_lstm/runs/lstm_char_torch/metrics.json",
    "stage2_rnn_lstm/checkpoints/best_classifier_imdb.pt", "stage2_rnn_lstm/runs/classify_imdb/metrics.json",
    "stage3_attention_seq2seq/checkpoints/best_attention_model.pt",
    "stage3_attention_seq2seq/runs/bahdanau_multi30k/metrics.json",
    "stage4_transformer/checkpoints/best_transformer.pt",
    "stage4_transformer/checkpoints/best_transformer.tokenizer.json",
    "stage4_transformer/runs/transformer_scratch_multi30k/metrics.json",
    "stage4_transformer/checkpoints/best_classifier_imdb.pt", "stage4_transformer/runs/classify_imdb/metrics.json",
    "stage5_gpt/checkpoints/gpt_shakespeare_char.pt", "stage5_gpt/runs/gpt_shakespeare_char/metrics.json",
    "stage5_gpt/checkpoints/gpt_imdb_bpe.pt", "stage5_gpt/runs/gpt_imdb_bpe/metrics.json",
    "stage5_gpt/checkpoints/ft_imdb_full.pt", "stage5_gpt/runs/ft_imdb_full/test_imdb.json",
    "stage5_gpt/checkpoints/ft_multi_full.pt", "stage5_gpt/runs/ft_multi_full/test_translate.json",
]


@contextlib.contextmanager
def quiet_and_offline(log_path: Path) -> Iterator[None]:
    """While the programs run: their console output (logs, progress bars) goes to `log_path`, no data set is
    downloaded, and the process's thread count and the course logger are put back afterwards."""
    saved_env = {key: os.environ.get(key) for key in ("MY_LLM_OFFLINE", "HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")}
    logger = logging.getLogger("my_llm")
    saved_handlers, saved_threads = list(logger.handlers), torch.get_num_threads()
    os.environ.update({key: "1" for key in saved_env})
    try:
        with open(log_path, "w", encoding="utf-8") as log, contextlib.redirect_stdout(log), \
                contextlib.redirect_stderr(log):
            yield
    finally:
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
            handler.close()
        for handler in saved_handlers:
            logger.addHandler(handler)
        torch.set_num_threads(saved_threads)
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def build_course(root: Path) -> Path:
    """Train every tiny model into `root`, a new or empty folder, and return it. A program that fails raises
    RuntimeError naming it and the end of what it printed (root/build.log holds all of it).

    A folder with files in it is refused (ValueError): the programs would resume or refuse its runs, and a
    learner's checkout given by mistake would have its models written over."""
    root = Path(root)
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise ValueError(f"build_course needs a new or empty folder; {root} is not one")
    root.mkdir(parents=True, exist_ok=True)
    data = write_data(root / "data")
    log_path = root / "build.log"
    timings, failure = [], None
    with quiet_and_offline(log_path):
        for what, main, argv in steps(root, data):
            started = time.perf_counter()
            print(f"=== {what}: {' '.join(argv)}", flush=True)
            saved_argv = sys.argv
            sys.argv = [inspect.getfile(main), *argv]      # the command the run records: the program's, not pytest's
            try:
                code = main(argv)
            except BaseException as err:   # a UserError, or SystemExit from argparse: say which model failed
                failure = (what, err)
                break
            finally:
                sys.argv = saved_argv
            if code not in (0, None):
                failure = (what, RuntimeError(f"exit status {code}"))
                break
            timings.append((what, time.perf_counter() - started))
    if failure is not None:
        what, err = failure
        tail = log_path.read_text(encoding="utf-8", errors="replace")[-2000:]
        raise RuntimeError(f"tiny course: {what} failed ({type(err).__name__}: {err}); the end of {log_path}:\n"
                           f"{tail}") from err
    missing = [name for name in EXPECTED if not (root / name).is_file()]
    if missing:
        raise RuntimeError(f"tiny course: the programs ran but left no {', '.join(missing)} (see {log_path})")
    (root / "build_times.txt").write_text("".join(f"{seconds:6.2f} s  {what}\n" for what, seconds in timings))
    return root


if __name__ == "__main__":     # python -m scripts.playground.tests.tiny_models FOLDER
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "tiny_course")
    tick = time.perf_counter()
    build_course(target)
    print(f"built {target} in {time.perf_counter() - tick:.1f} s")
    print((target / "build_times.txt").read_text(), end="")
