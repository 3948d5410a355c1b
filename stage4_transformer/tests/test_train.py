"""train.py on tiny data: it learns, writes its files, refuses bad flags, and resumes exactly after Ctrl-C."""
import json
import os
import signal
import subprocess
import sys

import pytest
import torch

from scripts.common import amp_name, load_checkpoint
from stage4_transformer import train
from stage4_transformer.translator import load_model, translate_sentences

TINY = ["--d_model", "64", "--n_heads", "4", "--layers", "2", "--d_ff", "128", "--vocab_size", "200",
        "--max_tokens", "512", "--warmup_steps", "20", "--lr", "2e-3", "--dropout", "0.1", "--num_threads", "1"]


def train_args(data, tmp_path, *extra):
    return ["--data_dir", str(data), "--out_dir", str(tmp_path / "run"), "--checkpoint",
            str(tmp_path / "ck" / "best.pt"), *TINY, *extra]


@pytest.mark.parametrize("impl", ["scratch", "torch"])
def test_training_learns_the_tiny_captions(mt_data, tmp_path, cli, impl):
    # 8 epochs at the default peak lr: with punctuation split off, the 200-piece vocabulary takes a few more epochs
    code, _, err = cli(train.main, train_args(mt_data, tmp_path, "--impl", impl, "--epochs", "8", "--lr", "3e-3"))
    assert code == 0, err
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert history[-1]["val_bleu"] > 30 > history[0]["val_bleu"] and "tgt_tokens_per_s" in history[0]
    model, vocab, _ = load_model(tmp_path / "ck" / "best.pt", torch.device("cpu"))
    assert model.config.impl == impl and (tmp_path / "ck" / "best.tokenizer.json").is_file()
    assert 4 < len(model.config.output_ids) < len(vocab)           # the softmax covers the target side's pieces
    assert translate_sentences(model, vocab, ["A dog is running."], torch.device("cpu"))[0].strip()


@pytest.mark.parametrize("bf16, amp, epochs", [(True, True, train.EPOCHS_BF16), (True, False, train.EPOCHS_FLOAT32),
                                               (False, True, train.EPOCHS_FLOAT32)])
def test_default_epochs_follow_the_training_precision(monkeypatch, bf16, amp, epochs):
    monkeypatch.setattr("scripts.common.cpu_has_bf16", lambda: bf16)
    assert train.default_epochs(torch.device("cpu"), amp) == epochs
    assert train.EPOCHS_BF16 > train.EPOCHS_FLOAT32


@pytest.mark.parametrize("argv, depth", [([], (2, 3)), (["--layers", "3"], (3, 3)),
                                         (["--layers", "4", "--decoder_layers", "1"], (4, 1)),
                                         (["--decoder_layers", "2"], (2, 2)), (["--encoder_layers", "1"], (1, 3))])
def test_layer_flags(argv, depth):
    """Default 2 encoder + 3 decoder layers; --layers N sets both; --encoder_layers / --decoder_layers win."""
    args = train.resolve_args(train.build_parser().parse_args(argv))
    assert (args.encoder_layers, args.decoder_layers) == depth


def test_a_run_without_epochs_records_the_default_it_used(mt_data, tmp_path, cli, monkeypatch):
    code, _, err = cli(train.main, train_args(mt_data, tmp_path, "--max_steps", "2", "--limit", "100",
                                              "--val_limit", "5", "--average_last", "0"))
    assert code == 0, err
    saved = load_checkpoint(tmp_path / "run" / "last.pt", train.STAGE)["args"]["epochs"]
    assert saved == train.default_epochs(torch.device("cpu"), True)
    assert f"{saved} epochs" in (tmp_path / "run" / "train.log").read_text()
    # --resume without --epochs keeps the run's own length, even where the default differs (another machine)
    monkeypatch.setattr(train, "default_epochs", lambda device, amp: 3)
    code, _, err = cli(train.main, train_args(mt_data, tmp_path, "--max_steps", "3", "--limit", "100",
                                              "--val_limit", "5", "--average_last", "0", "--resume"))
    assert code == 0, err
    assert load_checkpoint(tmp_path / "run" / "last.pt", train.STAGE)["args"]["epochs"] == saved


@pytest.mark.parametrize("argv, message", [
    (["--d_model", "30", "--n_heads", "4"], "--d_model 30 must be divisible by --n_heads 4"),
    (["--positional", "rotary"], "invalid choice: 'rotary'"),
    (["--lr", "0"], "--lr: must be a number in (0, 1]"),
    (["--average_last", "-1"], "--average_last: must be an integer >= 0"),
    (["--attention_dropout", "1.5"], "--attention_dropout: must be a number in [0, 1)"),
    (["--label_smoothing", "-0.1"], "--label_smoothing: must be a number in [0, 1)"),
    (["--decoder_layers", "0"], "--decoder_layers: must be an integer in [1, 64]"),
    (["--layers", "0"], "--layers: must be an integer in [1, 64]"),
    (["--impl", "torch", "--activation_dropout", "0"], "need --impl scratch"),
    (["--impl", "torch", "--fast_dropout"], "--fast_dropout needs --impl scratch"),
    (["--norm_first", "0"], "unrecognized arguments: 0"),                  # on/off flags are --x / --no-x now
    (["--no-amp", "1"], "unrecognized arguments: 1"),
])
def test_bad_flags_are_one_line(cli, argv, message):
    code, _, err = cli(train.main, argv)
    assert code == 2 and message in err and err.count("\n") == 1


@pytest.mark.parametrize("impl, dropouts, fast", [("scratch", (0.1, 0.0, 0.0), True),
                                                  ("torch", (0.1, 0.1, 0.1), False)])
def test_dropout_defaults_follow_the_implementation(impl, dropouts, fast):
    # scratch: dropout only at the paper's places, with the fast CPU masks; nn.Transformer has one rate and
    # draws its own masks, so its defaults must not trip the checks that refuse those flags with --impl torch
    args = train.resolve_args(train.build_parser().parse_args(["--impl", impl]))
    assert (args.dropout, args.attention_dropout, args.activation_dropout) == dropouts and args.fast_dropout is fast


@pytest.mark.parametrize("flag, default", [("norm_first", True), ("share_embeddings", True), ("use_sdpa", False),
                                           ("fast_dropout", True), ("split_punctuation", True), ("amp", True)])
def test_on_off_flags_take_both_spellings(flag, default):
    parse = train.build_parser().parse_args
    assert getattr(train.resolve_args(parse([])), flag) is default
    assert getattr(parse([f"--{flag}"]), flag) is True and getattr(parse([f"--no-{flag}"]), flag) is False


def test_help_shows_every_default_and_no_history(cli):
    code, out, _ = cli(train.main, ["--help"])
    assert code == 0 and "--no-norm_first" in out and "--model_path" in out
    assert "(default: the preset's: default 0.003; quick" in " ".join(out.split())
    for word in ("round", "issue", "floor", "session", "readme"):
        assert word not in out.lower(), word


def test_target_pieces_are_the_specials_and_the_target_side():
    examples = [([9, 8, 3], [5, 6, 3]), ([8, 3], [7, 5, 3])]
    assert train.target_pieces(examples) == [0, 1, 2, 3, 5, 6, 7]


def test_checkpoint_averaging_is_the_mean_of_the_last_epochs(mt_data, tmp_path, cli, monkeypatch):
    seen = []
    real_add = train.WeightAverage.add

    def remember(self, model):
        seen.append({k: v.detach().clone() for k, v in model.state_dict().items()})
        real_add(self, model)
    monkeypatch.setattr(train.WeightAverage, "add", remember)
    argv = train_args(mt_data, tmp_path, "--epochs", "3", "--average_last", "2", "--limit", "200", "--val_limit", "10")
    assert cli(train.main, argv)[0] == 0
    assert len(seen) == 2                                   # epochs 2 and 3
    written = json.loads((tmp_path / "run" / "metrics.json").read_text())
    metrics = written["metrics"]
    assert metrics["averaged_epochs"] == [2, 3] and metrics["averaged_val_bleu"] is not None
    assert written["amp"] == amp_name(torch.device("cpu"))        # bf16 autocast or float32, as the machine allows
    last = load_checkpoint(tmp_path / "run" / "last.pt", "stage4_transformer")
    for name, value in seen[-1].items():                     # last.pt: the last epoch itself, not the average
        assert torch.equal(last["model_state"][name], value), name
        assert torch.allclose(last["weight_sum"][name], seen[0][name].float() + value.float())
    best = load_checkpoint(tmp_path / "ck" / "best.pt", "stage4_transformer")
    if last["averaged"]["kept"]:
        assert best["averaged_epochs"] == [2, 3]
        for name, value in seen[-1].items():
            assert torch.allclose(best["model_state"][name].float(), (seen[0][name].float() + value.float()) / 2)
    else:
        assert "averaged_epochs" not in best


@pytest.mark.parametrize("extra", [[], ["--no-norm_first", "--positional", "learned", "--no-share_embeddings"]])
def test_ctrl_c_then_resume_is_exact(mt_data, tmp_path, cli, monkeypatch, extra):
    # the default (the softmax over the target side only, fast dropout, the weight average), and a post-LN model with
    # a learned position table and a source embedding of its own
    common = ["--epochs", "2", "--limit", "200", "--val_limit", "10", *extra]
    assert cli(train.main, train_args(mt_data, tmp_path / "a", *common))[0] == 0
    uninterrupted = load_checkpoint(tmp_path / "a" / "run" / "last.pt", "stage4_transformer")
    real_step, calls = torch.optim.AdamW.step, {"n": 0}

    def step_then_ctrl_c(self, *args, **kwargs):
        result = real_step(self, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] == uninterrupted["history"][0]["steps"] + 2:           # in the second epoch
            os.kill(os.getpid(), signal.SIGINT)
        return result
    monkeypatch.setattr(torch.optim.AdamW, "step", step_then_ctrl_c)
    code, _, err = cli(train.main, train_args(mt_data, tmp_path / "b", *common))
    assert code == 130 and "--resume" in err
    monkeypatch.setattr(torch.optim.AdamW, "step", real_step)
    code, _, err = cli(train.main, train_args(mt_data, tmp_path / "b", *common, "--resume"))
    assert code == 0, err
    resumed = load_checkpoint(tmp_path / "b" / "run" / "last.pt", "stage4_transformer")
    for name, value in uninterrupted["model_state"].items():
        assert torch.equal(resumed["model_state"][name], value), name
    for name, value in uninterrupted["weight_sum"].items():
        assert torch.equal(resumed["weight_sum"][name], value), name
    assert [r["val_bleu"] for r in resumed["history"]] == [r["val_bleu"] for r in uninterrupted["history"]]
    assert resumed["wall_seconds"] > 0 and resumed["args"]["epochs"] == 2
    code, _, err = cli(train.main, train_args(mt_data, tmp_path / "b", *common, "--d_model", "32", "--resume"))
    assert code == 2 and "--d_model 64 (now 32)" in err and err.count("\n") == 1
    code, _, err = cli(train.main, train_args(mt_data, tmp_path / "b", *common, "--no-split_punctuation", "--resume"))
    assert code == 2 and "--split_punctuation True (now False)" in err and err.count("\n") == 1
    model, vocab, _ = load_model(tmp_path / "b" / "ck" / "best.pt", torch.device("cpu"))
    ids = model.config.output_ids                              # the piece list travels in the checkpoint
    assert ids[:4] == [0, 1, 2, 3] and ids == sorted(ids) and len(ids) < len(vocab)
    src, tgt = torch.tensor([[5, 6, 3]]), torch.tensor([[2, 7]])
    assert model(src, tgt).shape == (1, 2, len(ids))
    assert len(translate_sentences(model, vocab, ["A dog is running."], torch.device("cpu"))) == 1


def test_evaluate_scores_with_and_without_the_cache(mt_data, tmp_path, cli):
    from stage4_transformer import evaluate
    assert cli(train.main, train_args(mt_data, tmp_path, "--epochs", "3"))[0] == 0
    outputs = []
    for name, flags in (("checkpoint", []), ("model_path", ["--no-kv_cache"])):   # --model_path: the same option
        out_dir = tmp_path / name
        code, out, err = cli(evaluate.main, [f"--{name}", tmp_path / "ck" / "best.pt", "--data_dir", mt_data,
                                             "--out_dir", out_dir, "--beam_size", "3", "--num_threads", "1", *flags])
        assert code == 0, err
        assert "nrefs:1|case:mixed|eff:no|tok:13a" in out
        metrics = json.loads((out_dir / "metrics.json").read_text())
        assert metrics["split"] == "test_2016_flickr" and metrics["metrics"]["kv_cache"] == (not flags)
        assert metrics["checkpoint"] == str(tmp_path / "ck" / "best.pt")
        outputs.append((out_dir / "translations.txt").read_text())
    assert outputs[0] == outputs[1] and len(outputs[0].splitlines()) == 40
    for argv, message in ((["--checkpoint", tmp_path / "missing.pt"], "does not exist"),
                          (["--beam_size", "0"], "--beam_size: must be an integer in [1, 64], got '0'"),
                          (["--alpha", "nan"], "--alpha: must be a number in [0, 10], got 'nan'"),
                          (["--no_kv_cache"], "unrecognized arguments: --no_kv_cache")):
        code, _, err = cli(evaluate.main, argv)
        assert code == 2 and message in err and err.count("\n") == 1, err


@pytest.fixture(scope="module")
def trained(mt_data, tmp_path_factory):
    from scripts.common import run_main
    tmp = tmp_path_factory.mktemp("s4")
    with pytest.raises(SystemExit) as info:
        run_main(train.main, train_args(mt_data, tmp, "--epochs", "6"))
    assert info.value.code == 0
    return tmp / "ck" / "best.pt"


def typed(monkeypatch, lines):
    """Feed `lines` to input(), then end the input as Ctrl-D does."""
    events = iter(lines)

    def fake_input(prompt=""):
        line = next(events, None)
        if line is None:
            raise EOFError
        return line
    monkeypatch.setattr("builtins.input", fake_input)


def test_translate_sentence_heatmap_and_file(trained, tmp_path, cli):
    from stage4_transformer import translate
    code, out, err = cli(translate.main, ["--checkpoint", trained, "A dog is running in the park.",
                                          "--heatmap", tmp_path / "map.png"])
    assert code == 0, err
    assert out.strip() and (tmp_path / "map.png").stat().st_size > 1000
    (tmp_path / "in.txt").write_text("A man is sitting.\n\nA girl is playing.\n")
    code, _, err = cli(translate.main, ["--model_path", trained, "--input", tmp_path / "in.txt",
                                        "--output", tmp_path / "out.txt"])
    lines = (tmp_path / "out.txt").read_text().splitlines()
    assert code == 0 and len(lines) == 3 and lines[1] == "" and lines[0] and lines[2]


def test_translate_interactive_commands(trained, tmp_path, cli, monkeypatch):
    from stage4_transformer import translate
    typed(monkeypatch, ["", ":beam 0", ":b 2", ":alpha -1", ":alpha 0.6", f":heatmap {tmp_path / 'typed.png'}",
                        "A dog is eating.", ":heatmap off", ":temperature 0.5", ":settings", ":help", ":nope",
                        "A man is sitting.", ":quit", "never read"])
    code, out, _ = cli(translate.main, ["--checkpoint", trained, "--interactive"])
    assert code == 0
    assert "(empty line: type some text, or :help)" in out
    assert "(:beam kept 5: beam must be an integer in [1, 64], got '0')" in out and "beam = 2" in out
    assert "(:alpha kept 1.0: alpha must be a number in [0, 10], got '-1')" in out
    assert "alpha = 0.6" in out and "heatmap = " in out and "heatmap off" in out
    assert (tmp_path / "typed.png").stat().st_size > 1000 and out.count("fr> ") == 2
    assert "(:temperature does not apply here" in out and "beam 2, alpha 0.6" in out
    assert ":heatmap" in out and ":quit" in out and "(unknown command :nope; type :help)" in out


@pytest.mark.parametrize("argv, message", [
    ([" "], "empty sentence"),
    ([], "give one of: a sentence, --input FILE, or --interactive"),
    (["--input", "x.txt", "--heatmap", "m.png"], "--heatmap draws one sentence"),
    (["--beam_size", "65", "Hello."], "--beam_size: must be an integer in [1, 64], got '65'"),
    (["--alpha", "inf", "Hello."], "--alpha: must be a number in [0, 10], got 'inf'"),
])
def test_translate_bad_input(trained, cli, argv, message):
    from stage4_transformer import translate
    code, _, err = cli(translate.main, ["--checkpoint", trained, *argv])
    assert code == 2 and message in err and err.count("\n") == 1


@pytest.mark.parametrize("program", ["train.py", "translate.py"])
def test_programs_run_from_the_repo_root_and_from_the_stage_folder(program):
    root = train.STAGE_DIR.parent
    for cwd, argv in ((root, [f"stage4_transformer/{program}"]), (train.STAGE_DIR, [program]),
                      (root, ["-m", f"stage4_transformer.{program[:-3]}"])):
        done = subprocess.run([sys.executable, *argv, "--help"], cwd=cwd, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0 and "--checkpoint" in done.stdout, (cwd, argv, done.stderr)
