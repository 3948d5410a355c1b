"""int8 quantization (models/quant.py, quantize.py): the error bounds of its equations, the layers against their
float originals and against PyTorch's quantize_dynamic, the checkpoint round trip, generate.py and evaluate.py on
a quantized checkpoint, and every bad input in one line."""
import copy
import hashlib
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from scripts.common import checkpoint_header, newest_model, save_checkpoint
from scripts.testing import one_error_line
from stage5_gpt import evaluate, finetune, generate, quantize, train
from stage5_gpt.data import tasks as T
from stage5_gpt.data.bpe import ByteLevelBPE, CharTokenizer
from stage5_gpt.models import quant
from stage5_gpt.models.gpt import GPT, GPTConfig

STAGE = "stage5_gpt"
CHARS = sorted(set("abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ.,:;!?'\n"))
BPE_TEXT = ("the king and the queen shall speak of love and death, " * 40 + "a good film, a bad film. ") * 3
EPS = 1e-6


def trained_like(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random weights of a trained model's size (std 0.02 init leaves logits near zero, which tests nothing):
    rows of different sizes, so per-channel scales matter."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.dim() == 2:
                param.copy_(torch.randn_like(param) * torch.rand(param.size(0), 1) * 0.3)
    return model.eval()


def payload(model: nn.Module, tokenizer, model_name: str = "gpt", **extra) -> dict:
    gpt = model.gpt if hasattr(model, "gpt") else model
    return {**checkpoint_header(STAGE, model_name), "config": gpt.config.to_dict(), "dataset": "shakespeare",
            "tokenizer": tokenizer.to_dict(), "tokenizer_fingerprint": tokenizer.fingerprint(), "args": {},
            "model_state": {k: v.clone() for k, v in model.state_dict().items()}, **extra}


@pytest.fixture(scope="module")
def char_ckpt(tmp_path_factory) -> Path:
    tokenizer = CharTokenizer(CHARS)
    model = trained_like(GPT(GPTConfig(vocab_size=tokenizer.vocab_size, block_size=16, n_layer=2, n_head=2,
                                       n_embd=32)))
    path = tmp_path_factory.mktemp("quant") / "gpt.pt"
    save_checkpoint(path, payload(model, tokenizer))
    return path


@pytest.fixture(scope="module")
def classifier_ckpt(tmp_path_factory) -> Path:
    """A tiny fine-tuned IMDb classifier, as finetune.py writes it."""
    tokenizer = ByteLevelBPE.train(BPE_TEXT, 300)
    model = trained_like(T.GPTClassifier(GPT(GPTConfig(vocab_size=tokenizer.vocab_size, block_size=32, n_layer=1,
                                                       n_head=2, n_embd=16)), 2))
    info = {"kind": "head", "tasks": ["imdb"], "classes": {"imdb": ["neg", "pos"]}, "method": "full",
            "scratch": False, "base": "tiny", "max_len": 32, "prompts": {"imdb": T.PROMPTS["imdb"]},
            "ag_news_source": "official", "trainable_params": 1, "lora": None}
    path = tmp_path_factory.mktemp("quant_cls") / "classifier.pt"
    save_checkpoint(path, payload(model, tokenizer, "gpt_classifier", dataset="imdb", finetune=info))
    return path


@pytest.fixture(scope="module")
def int8_ckpt(char_ckpt) -> Path:
    out = char_ckpt.with_name("gpt_int8.pt")
    quantize.quantize_file(char_ckpt, "int8", out)
    return out


def load(path: Path) -> nn.Module:
    ckpt = torch.load(path, weights_only=True)
    return finetune.model_from_checkpoint(ckpt, path)[0].eval()


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ----------------------------------------------------------------------------- the equations
def test_per_channel_quantization_error_is_at_most_half_a_step():
    torch.manual_seed(0)
    w = torch.randn(64, 48) * torch.rand(64, 1) * 3
    w[5] = 0.0                                                 # a row of zeros is represented exactly
    q, scale = quant.quantize_per_channel(w)
    assert q.dtype == torch.int8 and scale.shape == (64,) and int(q.abs().max()) <= 127
    err = (w - quant.dequantize(q, scale)).abs()
    assert (err <= scale[:, None] / 2 + EPS).all()
    assert (q.abs().amax(1)[torch.arange(64) != 5] == 127).all()    # each row's largest weight is +-127
    assert (quant.dequantize(q, scale)[5] == 0).all()


def test_per_token_quantization_error_is_at_most_half_a_step():
    torch.manual_seed(1)
    x = torch.randn(10, 33) * torch.rand(10, 1) * 50
    x[3] = 0.0
    q, scale = quant.quantize_per_token(x)
    assert q.dtype == torch.int8 and scale.shape == (10, 1) and int(q.abs().max()) <= 127
    assert ((x - q.float() * scale).abs() <= scale / 2 + EPS).all()
    assert (q[3] == 0).all()


def test_int8_matmul_is_exact():
    a = torch.randint(-127, 128, (5, 40), dtype=torch.int8)
    b = torch.randint(-127, 128, (7, 40), dtype=torch.int8)
    assert torch.equal(quant.int8_matmul(a, b), a.int() @ b.int().t())


@pytest.mark.parametrize("rows", [1, 3, 70])
def test_quant_linear_is_within_the_bound_of_its_two_roundings(rows):
    """|y^ - y| <= s/2 sum|x| + a/2 sum|w| + in a s / 4 per output, from x^ = x + e, w^ = w + d, |e| <= a/2,
    |d| <= s/2: y^ - y = sum (x d + e w + e d)."""
    torch.manual_seed(rows)
    linear = nn.Linear(48, 24)
    with torch.no_grad():
        linear.weight.mul_(torch.rand(24, 1) * 10)
    x = torch.randn(2, rows, 48) * 3
    ours = quant.QuantLinear.from_float(linear)
    with torch.no_grad():
        y, y_q = linear(x), ours(x)
    a = x.abs().amax(-1, keepdim=True) / 127                                   # (2, rows, 1)
    s = ours.scale                                                              # (24,)
    bound = s / 2 * x.abs().sum(-1, keepdim=True) + a / 2 * linear.weight.abs().sum(1) + 48 * a * s / 4
    assert y_q.shape == y.shape and ((y_q - y).abs() <= bound + 1e-4).all()
    assert torch.allclose(ours.weight, quant.dequantize(ours.qweight, ours.scale))


def test_quantized_gpt_logits_are_close_and_the_tied_table_is_one():
    torch.manual_seed(0)
    model = trained_like(GPT(GPTConfig(vocab_size=50, block_size=16, n_layer=2, n_head=2, n_embd=32)))
    x = torch.randint(0, 50, (3, 16))
    with torch.no_grad():
        ref, _ = model(x)
        qmodel = quant.quantize_model(copy.deepcopy(model))
        out, _ = qmodel(x)
    assert qmodel.lm_head.qweight is qmodel.wte.qweight and qmodel.lm_head.scale is qmodel.wte.scale
    assert {type(m) for m in qmodel.modules()} & {nn.Linear} == set()
    # two layers of roundings compound: about 3% of the logits' range here (each layer's own bound is tested above)
    assert (out - ref).abs().max() <= 0.06 * ref.abs().max()
    assert (out.argmax(-1) == ref.argmax(-1)).float().mean() >= 0.9
    assert quant.parameter_count(qmodel) == model.num_params()


def test_close_to_pytorchs_quantize_dynamic():
    """PyTorch's default dynamic quantization rounds more coarsely than ours (one weight scale per matrix, and
    activations per tensor on 7 bits: fbgemm's reduce_range), about 6-10% of the float logits' range here against
    our 3%: the two stay within 15% of each other, and ours is the closer to float on average."""
    model = trained_like(GPT(GPTConfig(vocab_size=50, block_size=16, n_layer=2, n_head=2, n_embd=32)))
    x = torch.randint(0, 50, (3, 16))
    with torch.no_grad():
        ref, _ = model(x)
        ours, _ = quant.quantize_model(copy.deepcopy(model))(x)
        theirs, _ = quant.pytorch_dynamic(model)(x)
    scale = ref.abs().max()
    assert (ours - theirs).abs().max() <= 0.15 * scale
    assert (ours - ref).abs().mean() <= (theirs - ref).abs().mean()


def test_fused_int8_linear_gives_the_eager_numbers():
    """quant.fuse compiles int8_linear (torch.compile, Inductor's C++ loops): the same int8 values and the same
    products, up to float rounding of the rescale, for several numbers of rows through one compiled kernel."""
    torch.manual_seed(0)
    model = quant.quantize_model(nn.Sequential(nn.Linear(48, 40), nn.GELU(), nn.Linear(40, 24, bias=False)))
    fused = quant.fuse(copy.deepcopy(model))
    assert all(m.kernel is not quant.int8_linear for m in fused.modules() if isinstance(m, quant.QuantLinear))
    with torch.no_grad():
        for rows in (64, 5, 1):
            x = torch.randn(rows, 48) * 3
            assert torch.allclose(fused(x), model(x), rtol=1e-5, atol=1e-5), rows


# ----------------------------------------------------------------------------- checkpoints
def test_int8_checkpoint_round_trip_is_exact(char_ckpt, int8_ckpt):
    ckpt = torch.load(int8_ckpt, weights_only=True)
    assert ckpt["format"] == "my_llm-checkpoint-v1" and ckpt["stage"] == STAGE and ckpt["model"] == "gpt"
    record = ckpt["quantization"]
    assert record["method"] == "int8" and record["bits"] == 8 and record["source_sha256"] == digest(char_ckpt)
    expected = quant.quantize_model(load(char_ckpt)).state_dict()
    loaded = load(int8_ckpt)
    for name, tensor in loaded.state_dict().items():
        assert tensor.dtype == expected[name].dtype and torch.equal(tensor, expected[name]), name
    assert loaded.lm_head.qweight is loaded.wte.qweight
    x = torch.randint(0, 40, (2, 16))
    with torch.no_grad():
        assert torch.equal(loaded(x)[0], quant.quantize_model(load(char_ckpt))(x)[0])
    float_bytes = char_ckpt.stat().st_size
    assert int8_ckpt.stat().st_size < float_bytes / 2          # tiny model: the config and tokenizer weigh too


@pytest.mark.parametrize("method", ["bf16", "fp16"])
def test_half_precision_checkpoint_loads_as_float32(char_ckpt, tmp_path, method):
    out = tmp_path / f"gpt_{method}.pt"
    quantize.quantize_file(char_ckpt, method, out)
    dtype = quant.HALF_DTYPES[method]
    assert all(v.dtype == dtype for v in torch.load(out, weights_only=True)["model_state"].values())
    model, ref = load(out), load(char_ckpt)
    x = torch.randint(0, 40, (2, 16))
    with torch.no_grad():
        a, b = model(x)[0], ref(x)[0]
    assert model.lm_head.weight.dtype == torch.float32 and (a - b).abs().max() <= 0.02 * b.abs().max()
    state = torch.load(out, weights_only=True)["model_state"]       # the tied matrix is stored once, as in float
    assert state["wte.weight"].untyped_storage().data_ptr() == state["lm_head.weight"].untyped_storage().data_ptr()
    assert out.stat().st_size < 0.55 * char_ckpt.stat().st_size


def test_quantize_cli_default_name_and_sizes(char_ckpt, tmp_path, cli):
    source = tmp_path / "gpt.pt"
    source.write_bytes(char_ckpt.read_bytes())
    code, out, err = cli(quantize.main, ["--checkpoint", source])
    assert code == 0, err
    assert (tmp_path / "int8_gpt.pt").is_file() and "smaller" in out


def test_quantize_never_replaces_a_file_it_did_not_write(char_ckpt, int8_ckpt, tmp_path, cli):
    victim = tmp_path / "trained.pt"
    victim.write_bytes(char_ckpt.read_bytes())
    notes = tmp_path / "notes.txt"
    notes.write_text("mine")
    for out in (victim, notes):
        code, _, err = cli(quantize.main, ["--checkpoint", char_ckpt, "--out", out])
        one_error_line(code, err, "already exists", "not a quantized checkpoint")
    assert victim.read_bytes() == char_ckpt.read_bytes() and notes.read_text() == "mine"
    code, _, err = cli(quantize.main, ["--checkpoint", char_ckpt, "--out", f"{tmp_path / 'newdir'}/"])
    one_error_line(code, err, "names a folder")
    assert not (tmp_path / "newdir").exists()
    again = tmp_path / "again.pt"                    # an earlier quantized output is replaced, as a rerun expects
    again.write_bytes(int8_ckpt.read_bytes())
    code, _, err = cli(quantize.main, ["--checkpoint", char_ckpt, "--out", again, "--method", "bf16"])
    assert code == 0, err
    assert quant.quantization_of(again)["method"] == "bf16"


def test_evaluate_metrics_out_never_replaces_a_checkpoint(int8_ckpt, lm_data, tmp_path, cli):
    target = tmp_path / "model.pt"
    target.write_bytes(int8_ckpt.read_bytes())
    code, _, err = cli(evaluate.main, ["--checkpoint", target, "--limit", "200", "--metrics_out", target,
                                       "--data_dir", lm_data, "--device", "cpu"])
    one_error_line(code, err, "--metrics_out", "not a JSON file")
    assert target.read_bytes() == int8_ckpt.read_bytes()


def test_the_default_quantized_name_is_not_the_default_model(char_ckpt, tmp_path, cli, monkeypatch):
    """generate.py without --checkpoint keeps loading the newest float model, not its quantized copy."""
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    source = folder / "gpt_shakespeare_char.pt"
    source.write_bytes(char_ckpt.read_bytes())
    code, _, err = cli(quantize.main, ["--checkpoint", source])
    assert code == 0, err
    assert (folder / "int8_gpt_shakespeare_char.pt").is_file()
    assert newest_model(tmp_path, train.BEST_MODELS, train.RUN_MODELS) == source


def test_classifier_quantizes_and_classifies(classifier_ckpt, tmp_path, cli):
    out = tmp_path / "classifier_int8.pt"
    code, _, err = cli(quantize.main, ["--checkpoint", classifier_ckpt, "--out", out])
    assert code == 0, err
    model = load(out)
    assert isinstance(model, T.GPTClassifier) and isinstance(model.head, quant.QuantLinear)
    code, text, err = cli(generate.main, ["--checkpoint", out, "--prompt", "a good film", "--device", "cpu"])
    assert code == 0 and ("neg" in text or "pos" in text), err


def test_generate_and_evaluate_run_on_an_int8_checkpoint(int8_ckpt, lm_data, tmp_path, cli):
    code, text, err = cli(generate.main, ["--checkpoint", int8_ckpt, "--prompt", "ROMEO:", "--max_new_tokens", "40",
                                          "--seed", "1", "--device", "cpu", "--num_threads", "1"])
    assert code == 0 and text.startswith("ROMEO:") and len(text) > 40, err
    code, text, err = cli(evaluate.main, ["--checkpoint", int8_ckpt, "--data_dir", lm_data, "--limit", "2000",
                                          "--metrics_out", tmp_path / "m.json", "--device", "cpu"])
    assert code == 0 and "loss" in text, err


def test_evaluate_scores_a_quantized_classifier(classifier_ckpt, tiny_data, tmp_path, cli):
    out = tmp_path / "classifier_int8.pt"
    quantize.quantize_file(classifier_ckpt, "int8", out)
    code, text, err = cli(evaluate.main, ["--checkpoint", out, "--data_dir", tiny_data, "--limit", "20",
                                          "--out_dir", tmp_path / "eval", "--device", "cpu"])
    assert code == 0 and "accuracy" in text, err


# ----------------------------------------------------------------------------- bad input
def tampered(int8_ckpt: Path, tmp_path: Path, edit) -> Path:
    ckpt = torch.load(int8_ckpt, weights_only=True)
    edit(ckpt["model_state"])
    out = tmp_path / "tampered.pt"
    save_checkpoint(out, ckpt)
    return out


def untie(state: dict, key: str, value) -> None:
    """Change a tensor, in both places when it is the tied table (so that only the change itself is wrong)."""
    for name in [key] + ([key.replace("wte.", "lm_head.")] if key.startswith("wte.") else []):
        state[name] = value


TAMPERING = {
    "scale missing": (lambda s: s.pop("h.0.attn.c_attn.scale"), "h.0.attn.c_attn.scale is missing"),
    "scale of the wrong shape": (lambda s: s.__setitem__("h.1.mlp.c_fc.scale", torch.ones(3)), "shape"),
    "scale of the wrong dtype": (lambda s: s.__setitem__("h.0.mlp.c_proj.scale", s["h.0.mlp.c_proj.scale"].double()),
                                 "float64"),
    "weight of the wrong dtype": (lambda s: s.__setitem__("h.0.attn.c_proj.qweight",
                                                          s["h.0.attn.c_proj.qweight"].float()), "float32"),
    "NaN scale": (lambda s: s["h.0.attn.c_attn.scale"].__setitem__(0, float("nan")), "positive finite"),
    "zero scale": (lambda s: untie(s, "wte.scale", torch.zeros_like(s["wte.scale"])), "positive finite"),
    "-128": (lambda s: s["h.1.attn.c_attn.qweight"].__setitem__((0, 0), -128), "-128"),
    "tied table differs": (lambda s: s.__setitem__("lm_head.qweight", torch.zeros_like(s["wte.qweight"])),
                           "share one table"),
}


@pytest.mark.parametrize("case", list(TAMPERING))
def test_tampered_int8_checkpoint_is_refused_in_one_line(int8_ckpt, tmp_path, cli, case):
    edit, needle = TAMPERING[case]
    path = tampered(int8_ckpt, tmp_path, edit)
    code, out, err = cli(generate.main, ["--checkpoint", path, "--prompt", "ROMEO:", "--max_new_tokens", "5"])
    one_error_line(code, err, str(path), needle, "quantize")
    assert out == ""


def test_quantizing_a_quantized_checkpoint_is_refused(int8_ckpt, tmp_path, cli):
    out = tmp_path / "twice.pt"
    code, _, err = cli(quantize.main, ["--checkpoint", int8_ckpt, "--out", out])
    one_error_line(code, err, "is a quantized checkpoint", "quantize the float checkpoint", "gpt.pt")
    assert not out.exists()


def test_quantize_refuses_bad_outputs_and_inputs(char_ckpt, tmp_path, cli):
    before = digest(char_ckpt)
    (tmp_path / "file").write_text("x")
    other_stage = tmp_path / "other.pt"
    save_checkpoint(other_stage, {**checkpoint_header("stage4_transformer", "transformer"), "model_state": {}})
    cases = [(["--out", char_ckpt], "is the --checkpoint file"),
             (["--out", tmp_path / "file" / "out.pt"], "cannot be written"),
             (["--out", tmp_path], "is a folder"),
             (["--out", tmp_path / "last.pt"], "last.pt"),
             (["--method", "int4"], "--method")]
    for flags, needle in cases:
        code, _, err = cli(quantize.main, ["--checkpoint", char_ckpt, *flags])
        one_error_line(code, err, needle)
    for source, needle in ((other_stage, "stage4_transformer"), (tmp_path / "none.pt", "does not exist"),
                           (tmp_path / "file", "not a readable checkpoint")):
        code, _, err = cli(quantize.main, ["--checkpoint", source, "--out", tmp_path / "q.pt"])
        one_error_line(code, err, needle)
    assert digest(char_ckpt) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "other.pt"]


def test_finetune_refuses_a_quantized_base(int8_ckpt, tiny_data, tmp_path, cli):
    code, _, err = cli(finetune.main, ["--base", int8_ckpt, "--task", "imdb", "--data_dir", tiny_data,
                                       "--out_dir", tmp_path / "run", "--checkpoint", tmp_path / "ft.pt"])
    one_error_line(code, err, "--base", "quantized", "float checkpoint")
    assert not (tmp_path / "ft.pt").exists()


def test_train_refuses_to_start_from_a_quantized_checkpoint(int8_ckpt, lm_data, tmp_path, cli):
    code, _, err = cli(train.main, ["--init_from", int8_ckpt, "--data_dir", lm_data, "--max_steps", "2",
                                    "--out_dir", tmp_path / "run", "--checkpoint", tmp_path / "gpt.pt"])
    one_error_line(code, err, "--init_from", "quantized", "float checkpoint")
    assert not (tmp_path / "gpt.pt").exists()


def test_measure_reports_what_bench_reads(char_ckpt, classifier_ckpt, lm_data, tiny_data, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    for folder in (lm_data / "tiny_shakespeare", tiny_data / "imdb"):
        (data / folder.name).symlink_to(folder)
    result = quantize.measure(char_ckpt, classifier_ckpt, data, num_threads=1, new_tokens=8, repeats=1,
                              imdb_limit=20, work_dir=tmp_path / "work", fused=False, log=lambda _: None)
    for key in ("float32", "int8", "bf16", "pytorch_int8"):
        assert result["val_loss"][key] > 0 and result["state_bytes"][key] > 0
    assert set(result["tokens_per_s"]) == set(result["scoring_tokens_per_s"]) == {"float32", "int8", "pytorch_int8"}
    assert min(result["scoring_tokens_per_s"].values()) > 0 and result["scoring_int8_vs_pytorch"] > 0
    calls = result["operator_calls_per_token"]      # quantizing each layer's input costs extra operator calls
    assert calls["int8"] > calls["float32"] > 0 and calls["pytorch_int8"] > 0
    assert result["state_bytes"]["float32"] / result["state_bytes"]["int8"] > 2.5
    assert abs(result["val_loss_rel_change_int8"]) < 0.05
    imdb = result["imdb"]
    assert imdb["test_size"] == 20 and 0 <= imdb["accuracy_int8"] <= 1 and imdb["size_ratio_int8"] > 1
    assert sorted(p.name for p in (tmp_path / "work").iterdir()) == ["bf16_gpt.pt", "int8_classifier.pt",
                                                                      "int8_gpt.pt"]


def test_multitask_model_quantizes_and_answers_its_task(classifier_ckpt, tmp_path, cli):
    ckpt = torch.load(classifier_ckpt, weights_only=True)
    state = {k.removeprefix("gpt."): v for k, v in ckpt["model_state"].items() if k.startswith("gpt.")}
    multi = {**ckpt, "model": "gpt", "model_state": state,
             "finetune": {**ckpt["finetune"], "kind": "prompt", "tasks": ["imdb"]}}
    source, out = tmp_path / "multi.pt", tmp_path / "multi_int8.pt"
    save_checkpoint(source, multi)
    code, _, err = cli(quantize.main, ["--checkpoint", source, "--out", out])
    assert code == 0, err
    code, text, err = cli(generate.main, ["--checkpoint", out, "--task", "imdb", "--prompt", "a good film",
                                          "--max_new_tokens", "4", "--device", "cpu"])
    assert code == 0 and "imdb:" in text, err
