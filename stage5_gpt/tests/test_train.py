"""train.py, evaluate.py and generate.py end to end on tiny data: smoke, exact resume, DDP, bad input."""
import io
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from scripts.common import checkpoint_header, load_checkpoint, save_checkpoint
from stage5_gpt import evaluate, generate, train
from scripts.testing import ctrl_c_after_steps
from stage5_gpt.tests.conftest import tiny_args

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def char_run(lm_data, tmp_path_factory):
    """One finished tiny char-level run, shared by the tests that only read it."""
    out = tmp_path_factory.mktemp("char_run")
    from scripts.common import run_main

    with pytest.raises(SystemExit) as info:
        run_main(train.main, [str(a) for a in tiny_args(lm_data, out, "--dropout", "0.1")])
    assert info.value.code == 0
    return out


def test_training_writes_checkpoints_metrics_and_curves(char_run):
    metrics = json.loads((char_run / "run" / "metrics.json").read_text())
    assert metrics["stage"] == "stage5_gpt" and metrics["dataset"] == "shakespeare"
    assert metrics["metrics"]["steps"] == 12 and metrics["metrics"]["train_tokens_per_s"] > 0
    assert 0 < metrics["metrics"]["mfu"] < 1 and metrics["metrics"]["flops_per_token"] > 0
    history = json.loads((char_run / "run" / "history.json").read_text())
    assert [row["step"] for row in history["evals"]] == [6, 12]
    assert [step for step, _ in history["curve"]] == list(range(1, 13))
    assert (char_run / "run" / "curves.png").is_file() and (char_run / "best.pt").is_file()
    log = (char_run / "run" / "train.log").read_text()
    assert "tokens/s" in log and "MFU" in log
    tokenizer = json.loads(next((char_run / "cache").glob("*/tokenizer.json")).read_text())
    assert tokenizer["type"] == "char"


def test_the_loss_goes_down(lm_data, tmp_path, cli):
    code, _, err = cli(train.main, tiny_args(lm_data, tmp_path, "--max_steps", "60", "--eval_interval", "30",
                                             "--lr", "1e-2", "--min_lr", "1e-3"))
    assert code == 0, err
    evals = json.loads((tmp_path / "run" / "history.json").read_text())["evals"]
    vocab = load_checkpoint(tmp_path / "best.pt", "stage5_gpt")["config"]["vocab_size"]
    # a model that knows nothing scores ln(vocab) (about 3.6 here); 60 steps learn the letter frequencies and more
    assert evals[-1]["val_loss"] < evals[0]["val_loss"] and evals[-1]["val_loss"] < math.log(vocab) - 0.6


def test_evaluate_scores_every_validation_token(char_run, lm_data, cli, tmp_path):
    out = tmp_path / "m.json"
    code, stdout, err = cli(evaluate.main, ["--checkpoint", char_run / "best.pt", "--data_dir", lm_data,
                                            "--metrics_out", out, "--device", "cpu"])
    assert code == 0, err
    metrics = json.loads(out.read_text())["metrics"]
    text = (lm_data / "tiny_shakespeare" / "input.txt").read_text()
    val = text[int(0.9 * len(text)):]
    assert metrics["tokens"] == len(val) - 1 and metrics["bytes"] == len(val)
    assert metrics["bits_per_byte"] == pytest.approx(metrics["loss"] * metrics["tokens"] / len(val) / math.log(2))
    assert "bits/byte" in stdout


def test_generate_same_text_with_and_without_the_kv_cache(char_run, cli):
    argv = ["--checkpoint", char_run / "best.pt", "--prompt", "ROMEO:", "--max_new_tokens", "40",
            "--temperature", "0", "--device", "cpu"]
    code, cached, err = cli(generate.main, argv)
    assert code == 0, err
    code, uncached, err = cli(generate.main, [*argv, "--no-kv_cache"])
    assert code == 0, err
    assert cached == uncached and cached.startswith("ROMEO:") and len(cached) > 40


def test_a_prompt_longer_than_the_context_is_cut_and_said(char_run, cli):
    code, out, err = cli(generate.main, ["--checkpoint", char_run / "best.pt", "--prompt", "the king " * 10,
                                         "--max_new_tokens", "5", "--device", "cpu"])
    assert code == 0 and "longer than the model's context of 16" in err


@pytest.mark.parametrize("argv, message", [
    (["--prompt", "  "], "--prompt is empty"),
    (["--prompt", "ROMEO: ☃"], "☃"),
    (["--top_p", "0"], "--top_p: must be a number in (0, 1]"),
    (["--temperature", "-1"], "--temperature: must be 0 (greedy) or a number in [0.01, 100]"),
    (["--temperature", "nan"], "--temperature: must be 0 (greedy) or a number in [0.01, 100]"),
    (["--top_k", "-1"], "--top_k: must be an integer in [0,"),
    (["--max_new_tokens", "0"], "--max_new_tokens: must be an integer in [1,"),
    (["--num_samples", "0"], "--num_samples: must be an integer in [1, 1000]"),
])
def test_bad_generation_input_is_one_line(char_run, cli, argv, message):
    code, _, err = cli(generate.main, ["--checkpoint", char_run / "best.pt", "--device", "cpu", *argv])
    assert code == 2 and message in err and err.count("\n") == 1


def test_interactive_survives_empty_lines_bad_settings_and_ends_on_eof(char_run, monkeypatch, cli):
    lines = ["", ":temperature 0", ":top_k x", ":bogus", ":settings", ":max_new_tokens 5", "ROMEO:", "☃", ""]
    monkeypatch.setattr(sys, "stdin", io.StringIO("\n".join(lines)))
    code, out, err = cli(generate.main, ["--checkpoint", char_run / "best.pt", "--interactive", "--device", "cpu"])
    assert code == 0, err
    assert "empty line" in out and "(:top_k kept 0" in out and "unknown command :bogus" in out
    assert "temperature 0.0" in out and "tokens/s]" in out and "☃" in out


def test_interactive_commands_echo_what_they_set(char_run, monkeypatch, cli):
    """The course-wide :commands and their short forms, plus this program's :cache; each says what it did."""
    lines = [":t 0", ":k 5", ":p 0.5", ":n 4", ":seed 3", ":cache off", ":cache maybe", ":temperature 500", ":beam 2",
             ":help", ":s", "ROMEO:", ":q", "never read"]
    monkeypatch.setattr(sys, "stdin", io.StringIO("\n".join(lines)))
    code, out, err = cli(generate.main, ["--checkpoint", char_run / "best.pt", "--interactive", "--device", "cpu"])
    assert code == 0, err
    for echo in ("temperature = 0.0", "top_k = 5", "top_p = 0.5", "max_new_tokens = 4", "seed = 3", "cache = off"):
        assert echo in out, echo
    assert "(:cache kept off" in out and "(:temperature kept 0.0" in out and "(:beam does not apply here" in out
    assert ":cache VALUE" in out and ":task" in out and ":quit" in out                    # :help
    assert "temperature 0.0, top_k 5, top_p 0.5, max_new_tokens 4, seed 3, cache off" in out   # :s
    assert "never read" not in out


def test_model_path_is_the_checkpoint_flag_and_kv_cache_can_be_named(char_run, lm_data, cli, tmp_path):
    argv = ["--prompt", "ROMEO:", "--max_new_tokens", "8", "--temperature", "0", "--device", "cpu"]
    code, by_checkpoint, err = cli(generate.main, ["--checkpoint", char_run / "best.pt", *argv])
    assert code == 0, err
    code, by_model_path, err = cli(generate.main, ["--model_path", char_run / "best.pt", "--kv_cache", *argv])
    assert code == 0 and by_model_path == by_checkpoint, err
    code, out, err = cli(evaluate.main, ["--model_path", char_run / "best.pt", "--data_dir", lm_data, "--limit", "2000",
                                         "--metrics_out", tmp_path / "m.json", "--device", "cpu"])
    assert code == 0 and json.loads((tmp_path / "m.json").read_text())["checkpoint"] == str(char_run / "best.pt")


def test_on_off_flags_take_both_forms(lm_data, tmp_path, cli):
    for flag, field in (("--bias", True), ("--no-bias", False)):
        out = tmp_path / flag
        code, _, err = cli(train.main, tiny_args(lm_data, out, flag, "--max_steps", "2", "--eval_interval", "2",
                                                 "--no-amp"))
        assert code == 0, err
        saved = load_checkpoint(out / "best.pt", "stage5_gpt")
        assert saved["config"]["bias"] is field and saved["args"]["amp"] is False
        assert ("c_attn.bias" in " ".join(saved["model_state"])) is field
    parser = train.build_parser()
    assert parser.parse_args([]).amp is None                      # unset: the preset decides
    assert train.resolve_args(parser.parse_args(["--preset", "baby"])).amp is False
    assert train.resolve_args(parser.parse_args(["--preset", "baby", "--amp"])).amp is True
    assert parser.parse_args(["--compile"]).compile is True and parser.parse_args([]).compile is False
    code, _, err = cli(train.main, ["--amp", "1"])
    assert code == 2 and "unrecognized arguments: 1" in err


def test_a_tokenizer_that_does_not_match_the_checkpoint_is_refused(char_run, lm_data, tmp_path, cli):
    from stage5_gpt.data.bpe import CharTokenizer

    other = tmp_path / "other.json"
    CharTokenizer.train("abcdef xyz\n").save(other)
    code, _, err = cli(generate.main, ["--checkpoint", char_run / "best.pt", "--tokenizer", other, "--device", "cpu"])
    assert code == 2 and "is not the tokenizer" in err
    own = next((char_run / "cache").glob("*/tokenizer.json"))
    code, _, err = cli(generate.main, ["--checkpoint", char_run / "best.pt", "--tokenizer", own, "--prompt", "ROMEO:",
                                       "--max_new_tokens", "3", "--device", "cpu"])
    assert code == 0, err


def test_checkpoints_of_another_stage_or_truncated_are_refused(char_run, tmp_path, cli):
    other = tmp_path / "stage4.pt"
    save_checkpoint(other, {**checkpoint_header("stage4_transformer", "transformer"), "model_state": {}})
    code, _, err = cli(generate.main, ["--checkpoint", other, "--device", "cpu"])
    assert code == 2 and "stage4_transformer" in err and err.count("\n") == 1
    truncated = tmp_path / "cut.pt"
    truncated.write_bytes((char_run / "best.pt").read_bytes()[:2000])
    code, _, err = cli(evaluate.main, ["--checkpoint", truncated, "--device", "cpu"])
    assert code == 2 and "not a readable checkpoint" in err
    code, _, err = cli(generate.main, ["--checkpoint", tmp_path / "missing.pt", "--device", "cpu"])
    assert code == 2 and "does not exist" in err


def test_missing_data_and_bad_flags(tmp_path, monkeypatch, cli):
    monkeypatch.delenv("MY_LLM_DATA", raising=False)
    (tmp_path / "empty").mkdir()
    code, _, err = cli(train.main, tiny_args(tmp_path / "empty", tmp_path))
    assert code == 2 and "tiny_shakespeare" in err and err.count("\n") == 1
    code, _, err = cli(train.main, tiny_args(tmp_path / "empty", tmp_path, "--n_embd", "15"))
    assert code == 2 and "divisible" in err
    code, _, err = cli(train.main, ["--preset", "huge"])
    assert code == 2 and "invalid choice" in err


def test_ctrl_c_then_resume_gives_the_uninterrupted_loss_curve(lm_data, tmp_path, cli, monkeypatch):
    """Bit-exact on CPU: the same losses at every step and the same final weights (dropout on)."""
    common = ["--dropout", "0.1", "--grad_accum", "2"]
    code, _, err = cli(train.main, tiny_args(lm_data, tmp_path / "a", *common))
    assert code == 0, err
    uninterrupted = load_checkpoint(tmp_path / "a" / "run" / "last.pt", "stage5_gpt")

    real_step = torch.optim.AdamW.step
    ctrl_c_after_steps(monkeypatch, 8)
    code, _, err = cli(train.main, tiny_args(lm_data, tmp_path / "b", *common))
    assert code == 130 and "--resume" in err
    monkeypatch.setattr(torch.optim.AdamW, "step", real_step)
    assert load_checkpoint(tmp_path / "b" / "run" / "last.pt", "stage5_gpt")["step"] == 8

    code, _, err = cli(train.main, tiny_args(lm_data, tmp_path / "b", *common, "--resume"))
    assert code == 0, err
    resumed = load_checkpoint(tmp_path / "b" / "run" / "last.pt", "stage5_gpt")
    assert resumed["curve"] == uninterrupted["curve"]
    for name, value in uninterrupted["model_state"].items():
        assert torch.equal(resumed["model_state"][name], value), name
    assert [r["val_loss"] for r in resumed["history"]] == [r["val_loss"] for r in uninterrupted["history"]]


def test_resume_with_other_flags_or_without_a_run_is_refused(char_run, lm_data, tmp_path, cli):
    code, _, err = cli(train.main, tiny_args(lm_data, tmp_path, "--resume"))
    assert code == 2 and "no resumable checkpoint" in err
    code, _, err = cli(train.main, tiny_args(lm_data, char_run, "--n_embd", "32", "--resume"))
    assert code == 2 and "--n_embd 16 (now 32)" in err


def test_bpe_on_gutenberg_format_trains_and_generates(lm_data, tmp_path, cli):
    code, _, err = cli(train.main, tiny_args(lm_data, tmp_path, "--preset", "gutenberg", "--vocab_size", "300"))
    assert code == 0, err
    code, out, err = cli(generate.main, ["--checkpoint", tmp_path / "best.pt", "--prompt", "Café",
                                         "--max_new_tokens", "8", "--device", "cpu"])
    assert code == 0 and out.startswith("Café"), err


def test_ddp_two_processes_match_one_process_with_the_same_global_batch(lm_data, tmp_path):
    """torchrun, 2 processes, gloo on CPU: ranks stay identical (train.py checks it) and end where a single
    process with twice the gradient accumulation ends."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    same = ["--max_steps", "6", "--eval_interval", "6", "--dropout", "0"]   # dropout masks differ per process
    flags = [str(a) for a in tiny_args(lm_data, tmp_path / "ddp", *same)]
    ddp = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          str(ROOT / "stage5_gpt" / "train.py"), *flags], env=env, capture_output=True, text=True,
                         timeout=240)
    assert ddp.returncode == 0, ddp.stderr[-2000:]
    assert "parameters identical on all 2 processes" in ddp.stdout
    flags = [str(a) for a in tiny_args(lm_data, tmp_path / "one", *same, "--grad_accum", "2")]
    one = subprocess.run([sys.executable, str(ROOT / "stage5_gpt" / "train.py"), *flags], env=env,
                         capture_output=True, text=True, timeout=240)
    assert one.returncode == 0, one.stderr[-2000:]
    a = load_checkpoint(tmp_path / "ddp" / "run" / "last.pt", "stage5_gpt")
    b = load_checkpoint(tmp_path / "one" / "run" / "last.pt", "stage5_gpt")
    for name, value in a["model_state"].items():
        torch.testing.assert_close(value, b["model_state"][name], atol=1e-5, rtol=1e-4)
    assert [s for s, _ in a["curve"]] == [s for s, _ in b["curve"]]
    for (_, la), (_, lb) in zip(a["curve"], b["curve"]):
        assert la == pytest.approx(lb, abs=1e-4)


def test_init_from_a_local_gpt2_folder_trains_and_generates(lm_data, tmp_path, cli):
    """--init_from FOLDER: a transformers GPT-2 saved with save_pretrained, plus vocab.json and merges.txt
    (here a tiny random one with our own BPE's vocabulary written in GPT-2's format; nothing is downloaded)."""
    transformers = pytest.importorskip("transformers")
    from stage5_gpt.data.bpe import ByteLevelBPE
    from stage5_gpt.tests.test_bpe import write_gpt2_files

    text = (lm_data / "tiny_shakespeare" / "input.txt").read_text()
    bpe = ByteLevelBPE.train(text, 300)
    folder = tmp_path / "gpt2"
    folder.mkdir()
    write_gpt2_files(bpe, folder)
    config = transformers.GPT2Config(vocab_size=300, n_positions=64, n_embd=32, n_layer=2, n_head=2)
    transformers.GPT2LMHeadModel(config).save_pretrained(folder)
    code, out, err = cli(generate.main, ["--init_from", folder, "--prompt", "ROMEO:", "--max_new_tokens", "5",
                                         "--device", "cpu"])
    assert code == 0 and out.startswith("ROMEO:"), err
    code, _, err = cli(train.main, tiny_args(lm_data, tmp_path, "--init_from", folder, "--max_steps", "4",
                                             "--eval_interval", "4"))
    assert code == 0, err
    assert load_checkpoint(tmp_path / "best.pt", "stage5_gpt")["config"]["n_layer"] == 2
    code, _, err = cli(train.main, tiny_args(lm_data, tmp_path / "x", "--init_from", folder, "--block_size", "128"))
    assert code == 2 and "context of 64" in err
    code, _, err = cli(generate.main, ["--init_from", tmp_path / "nowhere", "--device", "cpu"])
    assert code == 2 and "neither a folder nor" in err


def test_resume_from_another_process_count_or_tokenizer_is_refused(char_run, lm_data, tmp_path, cli):
    last = load_checkpoint(char_run / "run" / "last.pt", "stage5_gpt")
    for change, message in (({"processes": 2}, "trained by 2 process(es), now 1"),
                            ({"tokenizer_fingerprint": "0" * 16}, "another tokenizer")):
        out = tmp_path / str(len(message))
        save_checkpoint(out / "run" / "last.pt", {**last, **change})
        code, _, err = cli(train.main, tiny_args(lm_data, out, "--dropout", "0.1", "--resume"))
        assert code == 2 and message in err and err.count("\n") == 1


def test_evaluate_a_text_file_and_refuse_bad_ones(char_run, tmp_path, cli):
    text = tmp_path / "t.txt"
    text.write_text("ROMEO:\nthe king shall speak.\n" * 20, encoding="utf-8")
    code, out, err = cli(evaluate.main, ["--checkpoint", char_run / "best.pt", "--text_file", text,
                                         "--metrics_out", tmp_path / "m.json", "--device", "cpu"])
    assert code == 0 and "bits/byte" in out, err
    code, _, err = cli(evaluate.main, ["--checkpoint", char_run / "best.pt", "--text_file", tmp_path / "no.txt"])
    assert code == 2 and "does not exist" in err
    (tmp_path / "bin.txt").write_bytes(b"\xff\xfe\x00bad")
    code, _, err = cli(evaluate.main, ["--checkpoint", char_run / "best.pt", "--text_file", tmp_path / "bin.txt"])
    assert code == 2 and "bin.txt, line 1" in err and "not valid UTF-8" in err


def test_pretraining_imports_no_fine_tuning_code():
    """train.py and data/corpus.py stand on their own; fine-tuning builds on them, not the other way round."""
    code = ("import sys, stage5_gpt.train, stage5_gpt.data.corpus; "
            "print(sorted(m for m in sys.modules if m in ('stage5_gpt.finetune', 'stage5_gpt.data.tasks')))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "[]", result.stderr


@pytest.mark.parametrize("program", ["train", "finetune", "generate", "evaluate", "bench"])
def test_every_program_runs_from_the_stage_folder(program):
    """Plain absolute imports of the installed course: a program runs from its own folder as from the repo root."""
    runs = [(ROOT / "stage5_gpt", [f"{program}.py"])]
    if program == "train":
        runs += [(ROOT, ["stage5_gpt/train.py"]), (ROOT, ["-m", "stage5_gpt.train"])]
    for cwd, argv in runs:
        result = subprocess.run([sys.executable, *argv, "--help"], cwd=cwd, capture_output=True, text=True,
                                timeout=120)
        assert result.returncode == 0 and "usage:" in result.stdout, (cwd, argv, result.stderr[-500:])
