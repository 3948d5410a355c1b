"""train.py, evaluate.py and translate.py end to end on tiny data, and every bad input."""
import gzip
import json
import os
import shutil
import signal
from pathlib import Path

import pytest
import torch

from scripts.common import checkpoint_header, load_checkpoint, save_checkpoint
from scripts.testing import TypedLines
from stage3_attention_seq2seq import evaluate, train, translate, translator

TINY = ["--embed_dim", "32", "--hidden_dim", "32", "--attention_dim", "16", "--batch_size", "32",
        "--num_threads", "1", "--warmup_steps", "5", "--lr", "0.01", "--dropout", "0.1"]


def train_args(data, tmp_path, *extra):
    return ["--data_dir", str(data), "--out_dir", str(tmp_path / "run"), "--checkpoint",
            str(tmp_path / "ck" / "best.pt"), *TINY, *extra]


@pytest.fixture(scope="module")
def trained(mt_data, tmp_path_factory):
    """A Bahdanau model trained long enough on the tiny captions to translate them."""
    from scripts.common import run_main
    tmp = tmp_path_factory.mktemp("s3")
    with pytest.raises(SystemExit) as info:
        run_main(train.main, train_args(mt_data, tmp, "--epochs", "8"))
    assert info.value.code == 0
    return tmp / "ck" / "best.pt"


def test_training_learns_and_evaluate_scores_with_sacrebleu(trained, mt_data, tmp_path, cli):
    history = json.loads((trained.parent.parent / "run" / "history.json").read_text())
    assert history[-1]["val_bleu"] > 50 > history[0]["val_bleu"]
    log = (trained.parent.parent / "run" / "train.log").read_text()
    assert "target tokens/s" in log
    assert log.count(f"en: {train.SAMPLE_SENTENCE}\nfr: ") == 8             # one sample translation per epoch
    assert (trained.parent / "best.vocab.json").is_file()
    code, out, err = cli(evaluate.main, ["--model_path", trained, "--data_dir", mt_data, "--out_dir", tmp_path / "e",
                                         "--num_threads", "1"])      # --model_path: the same option as --checkpoint
    assert code == 0, err
    assert "nrefs:1|case:mixed|eff:no|tok:13a" in out                     # sacrebleu's signature is printed
    metrics = json.loads((tmp_path / "e" / "metrics.json").read_text())
    m = metrics["metrics"]
    assert metrics["split"] == "test_2016_flickr" and m["bleu_beam"] > 50 and m["bleu_greedy"] > 50
    assert m["sentences_per_s_beam"] > 0 and 0 < m["chrf_beam"] <= 100
    lines = (tmp_path / "e" / "translations.txt").read_text().splitlines()
    assert len(lines) == 40 and all(line.strip() for line in lines)


def test_a_run_can_be_watched_while_it_trains(mt_data, tmp_path, cli):
    """history.json, curves.png, TensorBoard events and progress.json exist after the first evaluation."""
    code, out, err = cli(train.main, train_args(mt_data, tmp_path, "--epochs", "3", "--max_steps", "10",
                                                "--limit", "200", "--val_limit", "10"))
    assert code == 0, err
    run = tmp_path / "run"
    history = json.loads((run / "history.json").read_text())
    assert [row["epoch"] for row in history] == [1, 2] and history[0]["steps"] == 7     # stopped in epoch 2
    assert (run / "curves.png").stat().st_size > 1000 and list(run.glob("events.out.tfevents.*"))
    progress = json.loads((run / "progress.json").read_text())
    assert progress["state"] == "finished" and progress["step"] == progress["total_steps"] == 10
    assert progress["model"] == json.loads((run / "metrics.json").read_text())["model"] == "bahdanau_scratch"
    assert "sample at step 7:" in (run / "train.log").read_text()


def resolved(*argv):
    return train.resolve_args(train.build_parser().parse_args(list(argv)))


def test_presets_fill_the_unset_flags_and_name_the_outputs():
    quick = resolved("--preset", "quick")
    assert {key: getattr(quick, key) for key in train.PRESETS["quick"]} == train.PRESETS["quick"]
    assert Path(quick.checkpoint).name == "best_attention_model_quick.pt"
    assert Path(quick.out_dir).name == "bahdanau_multi30k_quick"
    mixed = resolved("--preset", "quick", "--epochs", "5", "--lr", "0.001")     # a flag given wins over the preset
    assert (mixed.epochs, mixed.lr, mixed.hidden_dim) == (5, 0.001, train.PRESETS["quick"]["hidden_dim"])
    default = resolved()
    assert {key: getattr(default, key) for key in train.PRESETS["default"]} == train.PRESETS["default"]
    assert (default.epochs, default.lr, default.hidden_dim, default.min_freq) == (16, 2e-3, 128, 2)
    assert Path(default.checkpoint).name == "best_attention_model.pt" and Path(default.out_dir).name == \
        "bahdanau_multi30k"
    # every attention type, data set and preset writes its own files: none overwrites another's model
    names = {(Path(a.checkpoint).name, Path(a.out_dir).name) for a in (
        resolved("--dataset", "tatoeba"), resolved("--dataset", "tatoeba", "--preset", "quick"),
        resolved("--attention_type", "luong_dot"), resolved("--attention_type", "luong_dot", "--preset", "quick"))}
    assert names == {("best_attention_model_tatoeba.pt", "bahdanau_tatoeba"),
                     ("best_attention_model_tatoeba_quick.pt", "bahdanau_tatoeba_quick"),
                     ("best_luong_dot_model.pt", "luong_dot_multi30k"),
                     ("best_luong_dot_model_quick.pt", "luong_dot_multi30k_quick")}


def test_programs_load_the_newest_model_without_checkpoint(trained, mt_data, tmp_path, monkeypatch, cli):
    stage = tmp_path / "stage"
    monkeypatch.setattr(translator, "STAGE_DIR", stage)
    code, _, err = cli(translate.main, ["A dog."])
    assert code == 2 and "no trained model" in err and "python stage3_attention_seq2seq/train.py --preset quick" in err
    # only a run's last.pt (stopped, or still training): it is loaded, and the program says so
    run = stage / "runs" / "bahdanau_multi30k_quick"
    run.mkdir(parents=True)
    shutil.copy(trained.parent.parent / "run" / "last.pt", run / "last.pt")
    code, out, err = cli(translate.main, ["A dog is running in the park."])
    assert code == 0 and out.strip() == "Un chien court dans le parc."
    assert f"model: {run / 'last.pt'} (the latest state of a run; preset default, epoch 8 of 8, step " in err
    assert "bahdanau attention on multi30k, best val BLEU" in err
    # a best checkpoint is preferred to a run's last.pt
    best = stage / "checkpoints" / "best_attention_model_quick.pt"
    best.parent.mkdir()
    shutil.copy(trained, best)
    code, out, err = cli(evaluate.main, ["--data_dir", mt_data, "--out_dir", tmp_path / "e", "--limit", "4",
                                         "--beam_size", "2", "--num_threads", "1"])
    assert code == 0, err
    assert out.startswith(f"model: {best} (best checkpoint; preset default, epoch ")
    assert json.loads((tmp_path / "e" / "metrics.json").read_text())["checkpoint"] == str(best)
    code, _, err = cli(evaluate.main, ["--checkpoint", tmp_path / "nope.pt"])      # a typo names the newest model
    assert code == 2 and f"the newest model of this stage is {best}" in err and err.count("\n") == 1
    assert evaluate.eval_name(run / "last.pt") == "bahdanau_multi30k_quick_last"
    assert evaluate.eval_name(best) == "best_attention_model_quick"


@pytest.mark.parametrize("kind, impl", [("luong_dot", "torch"), ("luong_general", "scratch"),
                                        ("luong_concat", "scratch"), ("none", "torch")])
def test_every_attention_type_trains(mt_data, tmp_path, cli, kind, impl):
    code, _, err = cli(train.main, train_args(mt_data, tmp_path, "--attention_type", kind, "--impl", impl,
                                              "--epochs", "1", "--max_steps", "6", "--teacher_forcing_end", "0.5"))
    assert code == 0, err
    assert load_checkpoint(tmp_path / "ck" / "best.pt", "stage3_attention_seq2seq")["config"]["attention_type"] == kind


def test_translate_a_sentence_with_heatmap(trained, tmp_path, cli):
    code, out, err = cli(translate.main, ["--model_path", trained, "A dog is running in the park.",
                                          "--heatmap", tmp_path / "map.png"])
    assert code == 0, err
    assert out.strip() == "Un chien court dans le parc."
    assert (tmp_path / "map.png").stat().st_size > 1000
    code, out, err = cli(translate.main, ["--checkpoint", trained, "A", "zebra", "is", "eating.", "--beam_size", "1"])
    assert code == 0 and "unknown words read as <unk>: zebra" in err and out.strip()


def test_translate_a_file_keeps_line_alignment(trained, tmp_path, cli):
    (tmp_path / "in.txt").write_text("A man is sitting.\n\nA girl is playing in the snow.\n")
    code, _, err = cli(translate.main, ["--checkpoint", trained, "--input", tmp_path / "in.txt",
                                        "--output", tmp_path / "out.txt"])
    assert code == 0, err
    assert (tmp_path / "out.txt").read_text().splitlines() == ["Un homme est assis.", "",
                                                               "Une fille joue dans la neige."]
    code, _, err = cli(translate.main, ["--checkpoint", trained, "--input", tmp_path / "nope.txt"])
    assert code == 2 and "nope.txt does not exist" in err
    code, _, err = cli(translate.main, ["--checkpoint", trained, "--input", tmp_path / "in.txt", "--output", tmp_path])
    assert code == 2 and "--output" in err and "is a folder" in err and error_lines(err) == 1
    code, _, err = cli(translate.main, ["--checkpoint", trained, "--input", tmp_path / "in.txt", "--heatmap", "x.png"])
    assert code == 2 and "--heatmap draws one sentence" in err


def error_lines(err):
    """Lines on stderr besides the "model: ..." line translate.py prints once it has loaded the model."""
    lines = [line for line in err.splitlines() if not line.startswith("model: ")]
    assert lines[-1].startswith("error: "), err
    return len(lines)


def fake_keyboard(monkeypatch, lines):
    monkeypatch.setattr("sys.stdin", TypedLines(lines))


def test_interactive_session_survives_bad_input(trained, monkeypatch, cli):
    fake_keyboard(monkeypatch, ["", "qwerty zxcv", ":beam x", ":beam 0", ":b 1", ":settings", "A woman is eating.",
                                KeyboardInterrupt, ":alpha nan", ":alpha 0.6", ":temperature 0.5", ":nonsense"])
    code, out, err = cli(translate.main, ["--checkpoint", trained, "--interactive"])
    assert code == 0, err
    assert "(empty line" in out and "note: none of the words of 'qwerty zxcv'" in err   # translated all the same
    assert out.count("fr> ") == 2
    assert out.count("(:beam kept 5: beam must be an integer in [1, 64], got ") == 2     # 'x' and 0
    assert "beam = 1" in out and "beam 1, alpha 1.0" in out
    assert "fr> Une femme mange." in out
    assert "(:alpha kept 1.0: alpha must be 0 (no length penalty) or a number in (0, 10]" in out
    assert "alpha = 0.6" in out
    assert "(:temperature does not apply here" in out and "(unknown command :nonsense; type :help)" in out


def test_interactive_heatmap_and_help(trained, tmp_path, monkeypatch, cli):
    picture = tmp_path / "map.png"
    fake_keyboard(monkeypatch, [":help", ":heatmap", f":heatmap {picture}", "A dog is running in the park.",
                                ":heatmap off", ":s", ":q"])
    code, out, err = cli(translate.main, ["--checkpoint", trained, "--interactive", "--no-unk_replace"])
    assert code == 0, err
    assert ":beam VALUE" in out and ":alpha VALUE" in out and ":heatmap" in out and ":quit" in out
    assert "heatmap = off  (:heatmap FILE.png" in out and f"heatmap = {picture}" in out
    assert "fr> Un chien court dans le parc." in out and picture.stat().st_size > 1000
    assert "attention heatmap:" in err and "heatmap = off\nen> beam 5, alpha 1.0" in out


@pytest.mark.parametrize("argv, message", [
    ([""], "empty sentence"),
    ([], "give one of: a sentence, --input FILE, or --interactive"),
    (["A dog.", "--beam_size", "0"], "--beam_size: must be an integer in [1, 64], got '0'"),
    (["A dog.", "--alpha", "-1"], "--alpha: must be 0 (no length penalty) or a number in (0, 10], got '-1'"),
])
def test_translate_bad_input_is_one_line(trained, cli, argv, message):
    code, _, err = cli(translate.main, ["--checkpoint", trained, *argv])
    assert code == 2 and message in err and error_lines(err) == 1


def test_no_attention_model_has_no_heatmap(mt_data, tmp_path, cli):
    assert cli(train.main, train_args(mt_data, tmp_path, "--attention_type", "none", "--max_steps", "2"))[0] == 0
    code, _, err = cli(translate.main, ["--checkpoint", tmp_path / "ck" / "best.pt", "A dog.", "--heatmap",
                                        tmp_path / "x.png"])
    assert code == 2 and "no attention weights to draw" in err


def test_wrong_and_broken_checkpoints(trained, tmp_path, cli):
    other = tmp_path / "stage2.pt"
    save_checkpoint(other, {**checkpoint_header("stage2_rnn_lstm", "rnn_lm"), "model_state": {}})
    code, _, err = cli(evaluate.main, ["--checkpoint", other])
    assert code == 2 and "made by stage2_rnn_lstm" in err and err.count("\n") == 1
    cut = tmp_path / "cut.pt"
    cut.write_bytes(trained.read_bytes()[:4000])
    code, _, err = cli(translate.main, ["--checkpoint", cut, "A dog."])
    assert code == 2 and "not a readable checkpoint" in err and err.count("\n") == 1
    code, _, err = cli(evaluate.main, ["--checkpoint", tmp_path / "missing.pt"])
    assert code == 2 and "does not exist" in err


def test_missing_and_misaligned_data(mt_data, tmp_path, monkeypatch, cli):
    monkeypatch.delenv("MY_LLM_DATA", raising=False)
    (tmp_path / "empty").mkdir()
    code, _, err = cli(train.main, ["--data_dir", tmp_path / "empty", "--out_dir", tmp_path / "r"])
    assert code == 2 and "empty/multi30k lacks train.en.gz, train.fr.gz" in err and err.count("\n") == 1
    bad = tmp_path / "bad" / "multi30k"
    bad.mkdir(parents=True)
    for name in ("train", "val", "test_2016_flickr"):
        for lang in ("en", "fr"):
            (bad / f"{name}.{lang}.gz").write_bytes((mt_data / "multi30k" / f"{name}.{lang}.gz").read_bytes())
    with gzip.open(bad / "train.fr.gz", "wt", encoding="utf-8") as f:
        f.write("Un chien.\n")
    code, _, err = cli(train.main, ["--data_dir", tmp_path / "bad", "--out_dir", tmp_path / "r"])
    assert code == 2 and "the files must be line-aligned" in err and err.count("\n") == 1
    code, _, err = cli(train.main, ["--data_dir", mt_data, "--out_dir", tmp_path / "r", "--max_len", "2"])
    assert code == 2 and "no training pairs left" in err


@pytest.mark.parametrize("argv, message", [
    (["--attention_type", "luong_magic"], "invalid choice: 'luong_magic'"),
    (["--teacher_forcing_end", "1.5"], "--teacher_forcing_end: must be a number in [0, 1]"),
    (["--dropout", "1"], "--dropout: must be a number in [0, 1)"),
    (["--limit", "-5"], "--limit: must be an integer >= 0"),
])
def test_train_bad_flags(cli, argv, message):
    code, _, err = cli(train.main, argv)
    assert code == 2 and message in err and err.count("\n") == 1


def test_ctrl_c_mid_epoch_then_resume_is_exact(mt_data, tmp_path, cli, monkeypatch):
    """Weights and curves after Ctrl-C + --resume equal an uninterrupted run's (dropout and sampling included)."""
    common = ["--epochs", "2", "--limit", "200", "--val_limit", "10", "--teacher_forcing_end", "0.5"]
    code, _, err = cli(train.main, train_args(mt_data, tmp_path / "a", *common))
    assert code == 0, err
    uninterrupted = load_checkpoint(tmp_path / "a" / "run" / "last.pt", "stage3_attention_seq2seq")

    real_step = torch.optim.AdamW.step
    calls = {"n": 0}

    def step_then_ctrl_c(self, *args, **kwargs):
        result = real_step(self, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 9:                                   # epoch 2, batch 2 of 7
            os.kill(os.getpid(), signal.SIGINT)
        return result
    monkeypatch.setattr(torch.optim.AdamW, "step", step_then_ctrl_c)
    code, _, err = cli(train.main, train_args(mt_data, tmp_path / "b", *common))
    assert code == 130 and "--resume" in err
    monkeypatch.setattr(torch.optim.AdamW, "step", real_step)
    saved = load_checkpoint(tmp_path / "b" / "run" / "last.pt", "stage3_attention_seq2seq")
    assert saved["global_step"] == 9 and saved["epoch"] == 1 and saved["batch_in_epoch"] == 2
    assert (tmp_path / "b" / "ck" / "best.pt").is_file()                  # epoch 1's best survived
    progress = json.loads((tmp_path / "b" / "run" / "progress.json").read_text())
    assert progress["state"] == "interrupted" and progress["step"] == 9
    assert [row["epoch"] for row in json.loads((tmp_path / "b" / "run" / "history.json").read_text())] == [1]

    code, _, err = cli(train.main, train_args(mt_data, tmp_path / "b", *common, "--resume"))
    assert code == 0, err
    assert json.loads((tmp_path / "b" / "run" / "progress.json").read_text())["state"] == "finished"
    resumed = load_checkpoint(tmp_path / "b" / "run" / "last.pt", "stage3_attention_seq2seq")
    for name, value in uninterrupted["model_state"].items():
        assert torch.equal(resumed["model_state"][name], value), name
    drop = ("tgt_tokens_per_s", "elapsed_s", "val_seconds")
    assert [{k: v for k, v in r.items() if k not in drop} for r in uninterrupted["history"]] == \
        [{k: v for k, v in r.items() if k not in drop} for r in resumed["history"]]


def test_resume_needs_a_run_of_the_same_dataset_and_flags(mt_data, tmp_path, cli):
    code, _, err = cli(train.main, train_args(mt_data, tmp_path, "--resume"))
    assert code == 2 and "no resumable checkpoint" in err
    assert cli(train.main, train_args(mt_data, tmp_path, "--max_steps", "1"))[0] == 0
    code, _, err = cli(train.main, train_args(mt_data, tmp_path, "--dataset", "tatoeba", "--resume"))
    assert code == 2 and "was trained on multi30k, not tatoeba" in err
    code, _, err = cli(train.main, train_args(mt_data, tmp_path, "--batch_size", "8", "--resume"))
    assert code == 2 and "--batch_size 32 (now 8)" in err and err.count("\n") == 1
    # a finished run resumed with more epochs carries on; its wall time adds up across the two sessions
    first = json.loads((tmp_path / "run" / "metrics.json").read_text())["train_seconds"]
    assert cli(train.main, train_args(mt_data, tmp_path, "--max_steps", "2", "--epochs", "2", "--resume"))[0] == 0
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["train_seconds"] > first


def test_tatoeba_trains_and_evaluates(mt_data, tmp_path, cli):
    assert cli(train.main, train_args(mt_data, tmp_path, "--dataset", "tatoeba", "--max_steps", "3",
                                      "--no-tie_embeddings"))[0] == 0
    assert load_checkpoint(tmp_path / "ck" / "best.pt", "stage3_attention_seq2seq")["config"]["tie_embeddings"] is False
    code, _, err = cli(evaluate.main, ["--checkpoint", tmp_path / "ck" / "best.pt", "--data_dir", mt_data,
                                       "--out_dir", tmp_path / "e", "--beam_size", "2", "--no-unk_replace"])
    assert code == 0, err
    metrics = json.loads((tmp_path / "e" / "metrics.json").read_text())
    assert metrics["dataset"] == "tatoeba" and metrics["metrics"]["unk_replace"] is False


@pytest.mark.parametrize("argv, message", [
    (["--unk_replace", "1"], "unrecognized arguments: 1"),          # on/off flags are --x / --no-x, not 0/1
    (["--beam_size", "65"], "--beam_size: must be an integer in [1, 64], got '65'"),
    (["--alpha", "nan"], "--alpha: must be 0 (no length penalty) or a number in (0, 10], got 'nan'"),
    (["--limit", "-1"], "--limit: must be an integer >= 0"),
])
def test_evaluate_bad_flags(cli, argv, message):
    code, _, err = cli(evaluate.main, argv)
    assert code == 2 and message in err and err.count("\n") == 1


def test_help_shows_defaults_in_groups_and_honest_seeds():
    text = " ".join(train.build_parser().format_help().split())        # the same whatever the terminal's width
    for default in ("(default: bahdanau)", "(default: the preset's: default 16, quick 3)",
                    "(default: the preset's: default 0.002, quick", "(default: the preset's: default 128, quick",
                    "(default: the preset's: default 200, quick", "--preset {default,quick}", "(default: default)"):
        assert default in text, default
    assert "--tie_embeddings, --no-tie_embeddings" in text and "(default: True)" in text
    body = text[text.index("options:"):]                               # after the usage lines
    assert body.index("--epochs") < body.index("model:") < body.index("--embed_dim") < body.index("training:")
    assert "checkpoints/best_attention_model.pt for bahdanau" in text and "initialisation, data order" in text
    assert "best_attention_model_quick.pt" in text
    for program in (translate, evaluate):
        text = " ".join(program.build_parser().format_help().split())
        assert "--checkpoint CHECKPOINT, --model_path CHECKPOINT" in text and "data order" not in text
        assert "--unk_replace, --no-unk_replace" in text and "(default: 5)" in text
        assert "default: the newest stage3_attention_seq2seq/checkpoints/*.pt" in text


@pytest.mark.parametrize("program", [train, evaluate, translate])
def test_help_states_every_default(program):
    """Every option's help shows its default, or says in words what the program chooses."""
    for action in program.build_parser()._actions:
        if action.dest == "help" or not action.option_strings:        # positional text has no default
            continue
        shown = program.build_parser()._get_formatter()._format_action(action)
        assert "(default:" in " ".join(shown.split()) or action.default is None and "default" in (action.help or ""), \
            f"{program.__name__} --{action.dest} does not state its default"
