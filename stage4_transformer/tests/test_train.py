"""train.py on tiny data: it learns, writes its files, refuses bad flags, and resumes exactly after Ctrl-C."""
import json
import os
import signal

import pytest
import torch

from scripts.common import amp_name, load_checkpoint, save_checkpoint
from stage4_transformer import train
from stage4_transformer.translator import load_model, translate_sentences

TINY = ["--d_model", "64", "--n_heads", "4", "--layers", "2", "--d_ff", "128", "--vocab_size", "200",
        "--max_tokens", "512", "--warmup_steps", "20", "--lr", "2e-3", "--dropout", "0.1", "--num_threads", "1"]


def train_args(data, tmp_path, *extra):
    return ["--data_dir", str(data), "--out_dir", str(tmp_path / "run"), "--checkpoint",
            str(tmp_path / "ck" / "best.pt"), *TINY, *extra]


@pytest.mark.parametrize("impl", ["scratch", "torch"])
def test_training_learns_the_tiny_captions(mt_data, tmp_path, cli, impl):
    # 8 epochs at the default peak lr: with punctuation split off, the 200-piece vocabulary takes a few more epochs;
    # the torch case also trains with the softmax over every piece (--output_vocab all, the default before round 10)
    softmax = ["--output_vocab", "all"] if impl == "torch" else []
    code, _, err = cli(train.main, train_args(mt_data, tmp_path, "--impl", impl, "--epochs", "8", "--lr", "3e-3",
                                              *softmax))
    assert code == 0, err
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert history[-1]["val_bleu"] > 30 > history[0]["val_bleu"] and "tgt_tokens_per_s" in history[0]
    model, vocab, _ = load_model(tmp_path / "ck" / "best.pt", torch.device("cpu"))
    assert model.config.impl == impl and (tmp_path / "ck" / "best.tokenizer.json").is_file()
    assert (model.config.output_ids is None) == bool(softmax)
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
    (["--lr", "0"], "--lr must be > 0"),
    (["--average_last", "-1"], "--average_last must be >= 0"),
    (["--attention_dropout", "1.5"], "--attention_dropout must be in [0, 1)"),
    (["--bpe_dropout", "-0.1"], "--bpe_dropout must be in [0, 1)"),
    (["--decoder_layers", "0"], "--decoder_layers must be at least 1"),
    (["--layers", "0"], "--layers must be at least 1"),
    (["--impl", "torch", "--activation_dropout", "0"], "need --impl scratch"),
    (["--impl", "torch", "--fast_dropout", "1"], "--fast_dropout 1 needs --impl scratch"),
    (["--impl", "torch", "--norm", "scale"], "--fix_norm 1 need --impl scratch"),
    (["--impl", "torch", "--fix_norm", "1"], "--fix_norm 1 need --impl scratch"),
    (["--norm", "batch"], "invalid choice: 'batch'"),
    (["--split_punctuation", "0", "--join_elisions", "1"], "--join_elisions 1 needs --split_punctuation 1"),
    (["--word_dropout", "1"], "--word_dropout must be in [0, 1)"),
    (["--target_word_dropout", "-0.5"], "--target_word_dropout must be in [0, 1)"),
    (["--output_vocab", "source"], "invalid choice: 'source'"),
])
def test_bad_flags_are_one_line(cli, argv, message):
    code, _, err = cli(train.main, argv)
    assert code == 2 and message in err and err.count("\n") == 1


@pytest.mark.parametrize("impl, dropouts, fast", [("scratch", (0.1, 0.0, 0.0), 1), ("torch", (0.1, 0.1, 0.1), 0)])
def test_dropout_defaults_follow_the_implementation(impl, dropouts, fast):
    # scratch: dropout only at the paper's places, with the fast CPU masks; nn.Transformer has one rate and
    # draws its own masks, so its defaults must not trip the checks that refuse those flags with --impl torch
    args = train.resolve_args(train.build_parser().parse_args(["--impl", impl]))
    assert (args.dropout, args.attention_dropout, args.activation_dropout) == dropouts and args.fast_dropout == fast


def test_word_dropout_hides_only_real_pieces():
    torch.manual_seed(0)
    tokens = torch.tensor([[2, 5, 6, 7, 8, 3, 0, 0]] * 4000)                  # <bos> 4 pieces <eos> <pad> <pad>
    dropped = train.word_dropout(tokens, 0.25)
    changed = dropped != tokens
    assert not changed[:, [0, 5, 6, 7]].any()                                # specials and padding untouched
    assert bool((dropped[changed] == 1).all())                               # the rest become <unk>
    assert abs(changed.float().sum().item() / (4000 * 4) - 0.25) < 0.02
    assert train.word_dropout(tokens, 0.0) is tokens                         # off: the batch as it was


def test_target_pieces_are_the_specials_and_the_target_side():
    examples = [([9, 8, 3], [5, 6, 3]), ([8, 3], [7, 5, 3])]
    assert train.target_pieces(examples) == [0, 1, 2, 3, 5, 6, 7]
    assert train.target_pieces(examples, {9, 4}) == [0, 1, 2, 3, 4, 5, 6, 7, 9]


@pytest.mark.parametrize("decay_vectors", [True, False])
def test_weight_decay_groups(decay_vectors):
    from stage4_transformer.models.transformer import Transformer, TransformerConfig
    model = Transformer(TransformerConfig(30, 30, d_model=16, n_heads=4, d_ff=32, norm="scale"))
    groups = train.param_groups(model, 0.1, decay_vectors)
    ids = [id(p) for group in groups for p in group["params"]]
    assert sorted(ids) == sorted(id(p) for p in model.parameters())           # each parameter exactly once
    decayed = {id(p) for group in groups if group["weight_decay"] == 0.1 for p in group["params"]}
    assert id(model.src_embed.weight) in decayed and id(model.encoder_layers[0].linear1.weight) in decayed
    for vector in (model.encoder_layers[0].linear1.bias, model.encoder_norm.g, model.generator.bias):
        assert (id(vector) in decayed) == decay_vectors


def test_checkpoint_averaging_is_the_mean_of_the_last_epochs(mt_data, tmp_path, cli, monkeypatch):
    seen = []
    real_add = train.add_weights

    def remember(state, model):
        seen.append({k: v.detach().clone() for k, v in model.state_dict().items()})
        real_add(state, model)
    monkeypatch.setattr(train, "add_weights", remember)
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


@pytest.mark.parametrize("bpe_dropout, extra", [
    ("0", []), ("0.1", ["--norm", "scale", "--fix_norm", "1", "--decay_vectors", "0"]),
    ("0", ["--word_dropout", "0.1", "--target_word_dropout", "0.1"])])
def test_ctrl_c_then_resume_is_exact(mt_data, tmp_path, cli, monkeypatch, bpe_dropout, extra):
    # every case has the default softmax over the target side only; the second also covers two AdamW parameter
    # groups, ScaleNorm's scalar g and a target-side softmax that includes BPE-dropout's pieces across a resume;
    # the third the word-dropout draws (the global RNG, saved in last.pt)
    common = ["--epochs", "2", "--limit", "200", "--val_limit", "10", "--bpe_dropout", bpe_dropout, *extra]
    assert cli(train.main, train_args(mt_data, tmp_path / "a", *common))[0] == 0
    uninterrupted = load_checkpoint(tmp_path / "a" / "run" / "last.pt", "stage4_transformer")
    real_step, calls = torch.optim.AdamW.step, {"n": 0}

    def step_then_ctrl_c(self, *args, **kwargs):
        result = real_step(self, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] == uninterrupted["batches_per_epoch"] + 2:
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
    code, _, err = cli(train.main, train_args(mt_data, tmp_path / "b", *common, "--d_model", "32", "--resume"))
    assert code == 2 and "--d_model 64 (now 32)" in err
    code, _, err = cli(train.main, train_args(mt_data, tmp_path / "b", *common, "--join_elisions", "1", "--resume"))
    assert code == 2 and "--join_elisions 0 (now 1)" in err
    old = load_checkpoint(tmp_path / "b" / "run" / "last.pt", "stage4_transformer")
    del old["args"]["join_elisions"]                          # saved before --join_elisions existed: it was 0
    for key in ("norm", "fix_norm", "decay_vectors", "word_dropout", "target_word_dropout") if not extra else ():
        del old["args"][key]  # before these flags: LayerNorm, plain embeddings, decay on everything, whole inputs
    save_checkpoint(tmp_path / "b" / "run" / "last.pt", old)
    code, _, err = cli(train.main, train_args(mt_data, tmp_path / "b", *common, "--resume"))
    assert code == 0, err                                     # so the same command still resumes
    if "--norm" in extra:
        code, _, err = cli(train.main, train_args(mt_data, tmp_path / "b", *common, "--norm", "layer", "--resume"))
        assert code == 2 and "--norm scale (now layer)" in err
    model, vocab, _ = load_model(tmp_path / "b" / "ck" / "best.pt", torch.device("cpu"))
    ids = model.config.output_ids                              # the piece list travels in the checkpoint
    assert ids[:4] == [0, 1, 2, 3] and ids == sorted(ids) and len(ids) < len(vocab)
    src, tgt = torch.tensor([[5, 6, 3]]), torch.tensor([[2, 7]])
    assert model(src, tgt).shape == (1, 2, len(ids))
    assert len(translate_sentences(model, vocab, ["A dog is running."], torch.device("cpu"))) == 1
    old = load_checkpoint(tmp_path / "b" / "run" / "last.pt", "stage4_transformer")
    del old["args"]["split_punctuation"]                      # saved before the flag existed: spaces only
    save_checkpoint(tmp_path / "b" / "run" / "last.pt", old)
    code, _, err = cli(train.main, train_args(mt_data, tmp_path / "b", *common, "--resume"))
    assert code == 2 and "--split_punctuation 0 (now 1)" in err and err.count("\n") == 1
    if not extra:     # a last.pt from before --output_vocab computed the softmax over every piece: not today's default
        old["args"]["split_punctuation"] = 1
        del old["args"]["output_vocab"]
        save_checkpoint(tmp_path / "b" / "run" / "last.pt", old)
        code, _, err = cli(train.main, train_args(mt_data, tmp_path / "b", *common, "--resume"))
        assert code == 2 and "--output_vocab all (now target)" in err and err.count("\n") == 1


def test_evaluate_scores_with_and_without_the_cache(mt_data, tmp_path, cli):
    from stage4_transformer import evaluate
    assert cli(train.main, train_args(mt_data, tmp_path, "--epochs", "3"))[0] == 0
    outputs = []
    for flag in ([], ["--no_kv_cache"]):
        out_dir = tmp_path / ("e" + str(len(flag)))
        code, out, err = cli(evaluate.main, ["--model_path", tmp_path / "ck" / "best.pt", "--data_dir", mt_data,
                                             "--out_dir", out_dir, "--beam_size", "3", "--num_threads", "1", *flag])
        assert code == 0, err
        assert "nrefs:1|case:mixed|eff:no|tok:13a" in out
        metrics = json.loads((out_dir / "metrics.json").read_text())
        assert metrics["split"] == "test_2016_flickr" and metrics["metrics"]["kv_cache"] == (not flag)
        outputs.append((out_dir / "translations.txt").read_text())
    assert outputs[0] == outputs[1] and len(outputs[0].splitlines()) == 40
    code, _, err = cli(evaluate.main, ["--model_path", tmp_path / "missing.pt"])
    assert code == 2 and "does not exist" in err


@pytest.fixture(scope="module")
def trained(mt_data, tmp_path_factory):
    from scripts.common import run_main
    tmp = tmp_path_factory.mktemp("s4")
    with pytest.raises(SystemExit) as info:
        run_main(train.main, train_args(mt_data, tmp, "--epochs", "6"))
    assert info.value.code == 0
    return tmp / "ck" / "best.pt"


def test_translate_sentence_heatmap_file_and_interactive(trained, tmp_path, cli, monkeypatch):
    from stage4_transformer import translate
    code, out, err = cli(translate.main, ["--model_path", trained, "A dog is running in the park.",
                                          "--heatmap", tmp_path / "map.png"])
    assert code == 0, err
    assert out.strip() and (tmp_path / "map.png").stat().st_size > 1000
    (tmp_path / "in.txt").write_text("A man is sitting.\n\nA girl is playing.\n")
    code, _, err = cli(translate.main, ["--model_path", trained, "--input", tmp_path / "in.txt",
                                        "--output", tmp_path / "out.txt"])
    lines = (tmp_path / "out.txt").read_text().splitlines()
    assert code == 0 and len(lines) == 3 and lines[1] == "" and lines[0] and lines[2]
    events = iter(["", ":beam 0", ":beam 2", "A dog is eating.", EOFError])

    def fake_input(prompt=""):
        event = next(events)
        if isinstance(event, type):
            raise event
        return event
    monkeypatch.setattr("builtins.input", fake_input)
    code, out, _ = cli(translate.main, ["--model_path", trained, "--interactive"])
    assert code == 0 and "error: empty sentence" in out and ":beam takes a positive" in out and "fr> " in out


@pytest.mark.parametrize("argv, message", [
    ([" "], "empty sentence"),
    ([], "give one of: a sentence, --input FILE, or --interactive"),
    (["--input", "x.txt", "--heatmap", "m.png"], "--heatmap draws one sentence"),
])
def test_translate_bad_input(trained, cli, argv, message):
    from stage4_transformer import translate
    code, _, err = cli(translate.main, ["--model_path", trained, *argv])
    assert code == 2 and message in err and err.count("\n") == 1
