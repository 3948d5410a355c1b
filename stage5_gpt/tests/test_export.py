"""export.py: a tiny BPE model and a tiny character model, trained by train.py, exported to transformers' GPT-2
format and loaded back with the Auto classes (local files only): the same token ids, the same logits, the same
200 greedy tokens as generate.py, and our own loader reads the export back to the very same model. Bad input."""
import io
import json
import os
import shutil
from pathlib import Path

import pytest
import torch
import transformers

from scripts.common import checkpoint_header, load_checkpoint, save_checkpoint
from scripts.testing import one_error_line
from stage5_gpt import export, generate, train
from stage5_gpt.data.bpe import EOT
from stage5_gpt.finetune import model_from_checkpoint
from stage5_gpt.models.hf import load_gpt2
from stage5_gpt.tests.conftest import tiny_args


# a context of 256 holds a prompt and 200 new tokens: transformers' GPT-2 has no sliding window beyond it
SHAPE = ("--block_size", "256", "--n_layer", "2", "--n_embd", "32", "--max_steps", "40", "--eval_interval", "40")
PROMPTS = ["ROMEO:\n", "The king", "JULIET:\nWhat, my lord?\n\n"]
BPE_TEXTS = ["Hello  world\n\n\tça va? naïve — “quoted” 🙂 日本語", f"end.{EOT}Next doc's start: it'll be 42 km",
             "   leading spaces\r\nand CRLF\n", "", "x" * 300, "ROMEO:\nThe king's lord!  \n \n"]
CHAR_TEXTS = ["ROMEO:\nWhat, my lord?\n\n", "  two  spaces; and: punctuation!?", "", "KING HENRY:\n"]


def train_run(lm_data, out, *flags):
    from scripts.common import run_main

    with pytest.raises(SystemExit) as info:
        run_main(train.main, [str(a) for a in tiny_args(lm_data, out, *SHAPE, *flags)])
    assert info.value.code == 0
    return out / "best.pt"


@pytest.fixture(scope="module")
def bpe_checkpoint(lm_data, tmp_path_factory):
    """A byte-level BPE model (300 tokens, <|endoftext|> among them) trained without biases, as the course's are."""
    return train_run(lm_data, tmp_path_factory.mktemp("bpe"), "--preset", "gutenberg", "--vocab_size", "300",
                     "--no-bias")


@pytest.fixture(scope="module")
def char_checkpoint(lm_data, tmp_path_factory):
    """A character model with biases (so both kinds of GPT-2 biases are covered)."""
    return train_run(lm_data, tmp_path_factory.mktemp("char"), "--bias")


def exported(checkpoint, folder, cli):
    code, out, err = cli(export.main, ["--checkpoint", checkpoint, "--out", folder, "--num_threads", "1"])
    assert code == 0, err
    assert "largest logit difference" in out and "greedy 50 tokens the same" in out, out
    return folder


def ours(checkpoint):
    model, tokenizer = model_from_checkpoint(load_checkpoint(checkpoint, "stage5_gpt"), checkpoint)
    return model.eval(), tokenizer


def our_greedy(model, tokenizer, prompt, new_tokens=200):
    """generate.py's own path: stream() at temperature 0, the KV cache on."""
    settings = {"max_new_tokens": new_tokens, "temperature": 0.0, "top_k": 0, "top_p": 1.0, "seed": 0}
    ids, _ = generate.stream(model, tokenizer, tokenizer.encode(prompt), settings, True, torch.device("cpu"),
                             out=io.StringIO())
    return ids


def check_against_transformers(folder, model, tokenizer, texts):
    hf_tok = transformers.AutoTokenizer.from_pretrained(folder, local_files_only=True)
    hf = transformers.AutoModelForCausalLM.from_pretrained(folder, local_files_only=True).eval()
    assert type(hf).__name__ == "GPT2LMHeadModel"
    # (a) the tokenizer: the same ids, and decoding gives the text back
    for text in texts:
        ids = hf_tok(text)["input_ids"]
        assert ids == tokenizer.encode(text), text
        assert hf_tok.decode(ids) == text
    # (b) the logits, over a batch
    idx = torch.tensor([tokenizer.encode(PROMPTS[2] * 4)[:60], tokenizer.encode(PROMPTS[0] * 30)[:60]])
    with torch.no_grad():
        torch.testing.assert_close(hf(idx).logits, model(idx)[0], atol=1e-5, rtol=1e-5)
    # (c) greedy generation: 200 new tokens from each prompt, token for token
    for prompt in PROMPTS:
        prompt_ids = torch.tensor([tokenizer.encode(prompt)])
        with torch.no_grad():
            theirs = hf.generate(prompt_ids, attention_mask=torch.ones_like(prompt_ids), max_new_tokens=200,
                                 do_sample=False, pad_token_id=0)[0, prompt_ids.size(1):].tolist()
        mine = our_greedy(model, tokenizer, prompt)
        assert theirs == mine, prompt
        assert len(mine) == 200 or mine[-1] == tokenizer.eot_id


def check_round_trip(folder, checkpoint, model, tokenizer, cli):
    """(d) our loader reads the export back: the same state dict, tokenizer and tokens (generate.py --init_from)."""
    back, back_tokenizer = load_gpt2(str(folder))
    mine, theirs = model.state_dict(), back.state_dict()
    assert list(mine) == list(theirs) and all(torch.equal(mine[k], theirs[k]) for k in mine)
    assert back.config.bias == model.config.bias and back_tokenizer.fingerprint() == tokenizer.fingerprint()
    flags = ["--prompt", PROMPTS[0], "--temperature", "0", "--max_new_tokens", "40", "--device", "cpu"]
    _, from_checkpoint, _ = cli(generate.main, ["--checkpoint", checkpoint, *flags])
    code, from_export, err = cli(generate.main, ["--init_from", folder, *flags])
    assert code == 0 and from_export == from_checkpoint, err


def test_bpe_model_in_transformers_and_back(bpe_checkpoint, tmp_path, cli):
    folder = exported(bpe_checkpoint, tmp_path / "bpe", cli)
    names = {p.name for p in folder.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "vocab.json",
            "merges.txt"} <= names
    config = json.loads((folder / "config.json").read_text())
    model, tokenizer = ours(bpe_checkpoint)
    assert config["my_llm"]["bias"] is False and config["eos_token_id"] == tokenizer.eot_id
    check_against_transformers(folder, model, tokenizer, BPE_TEXTS)
    check_round_trip(folder, bpe_checkpoint, model, tokenizer, cli)
    # GPT-2's own two files alone also make the tokenizer (what GPT2Tokenizer of any version reads)
    files = tmp_path / "files"
    files.mkdir()
    for name in ("vocab.json", "merges.txt"):
        shutil.copy(folder / name, files / name)
    gpt2_tok = transformers.GPT2Tokenizer.from_pretrained(files, local_files_only=True)
    assert all(gpt2_tok(text)["input_ids"] == tokenizer.encode(text) for text in BPE_TEXTS)


def test_char_model_in_transformers_and_back(char_checkpoint, tmp_path, cli):
    folder = exported(char_checkpoint, tmp_path / "char", cli)
    assert not (folder / "vocab.json").exists()
    model, tokenizer = ours(char_checkpoint)
    assert model.config.bias and json.loads((folder / "config.json").read_text())["my_llm"]["tokenizer"] == "char"
    assert json.loads((folder / "tokenizer_config.json").read_text())["tokenizer_class"] == "PreTrainedTokenizerFast"
    check_against_transformers(folder, model, tokenizer, CHAR_TEXTS)
    check_round_trip(folder, char_checkpoint, model, tokenizer, cli)


def test_measure_reports_each_prompt(bpe_checkpoint):
    result = export.measure(bpe_checkpoint, PROMPTS, new_tokens=20)
    assert result["all_same"] and result["max_logit_diff"] < 1e-5 and result["tokenizer"] == "byte_bpe"
    assert [row["prompt"] for row in result["prompts"]] == PROMPTS
    assert all(row["same_tokens"] and row["first_mismatch"] is None and row["new_tokens"] == 20
               for row in result["prompts"])
    assert result["folder_bytes"] == sum(result["files"].values()) > 0 and result["export_seconds"] > 0
    assert {"checkpoint", "notes", "new_tokens", "transformers", "torch", "hardware", "threads"} <= set(result)


def test_an_existing_folder_is_kept_unless_forced(bpe_checkpoint, tmp_path, cli):
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    (folder / "vocab.json").write_text("{}")     # a stale file of an earlier export
    code, _, err = cli(export.main, ["--checkpoint", bpe_checkpoint, "--out", folder])
    one_error_line(code, err, "is not empty", "--force")
    assert sorted(p.name for p in folder.iterdir()) == ["notes.txt", "vocab.json"]
    code, _, err = cli(export.main, ["--checkpoint", bpe_checkpoint, "--out", folder, "--force", "--no-verify"])
    assert code == 0, err
    assert (folder / "notes.txt").read_text() == "mine" and (folder / "config.json").is_file()
    assert json.loads((folder / "vocab.json").read_text()) != {}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]   # no staging folder left behind


def tampered(checkpoint, tmp_path, name, **changes):
    ckpt = torch.load(checkpoint, map_location="cpu", weights_only=True)
    ckpt.update(changes)
    save_checkpoint(tmp_path / name, ckpt)
    return tmp_path / name


def int8_weights(checkpoint, tmp_path):
    """A quantized checkpoint without the record: its weights are int8."""
    ckpt = torch.load(checkpoint, map_location="cpu", weights_only=True)
    ckpt["model_state"]["h.0.mlp.c_fc.weight"] = ckpt["model_state"]["h.0.mlp.c_fc.weight"].to(torch.int8)
    save_checkpoint(tmp_path / "int8.pt", ckpt)
    return tmp_path / "int8.pt"


def test_bad_input_is_one_line(bpe_checkpoint, tmp_path, cli):
    (tmp_path / "a_file").write_text("x")
    other_stage = tmp_path / "other.pt"
    save_checkpoint(other_stage, {**checkpoint_header("stage4_transformer", "transformer"), "model_state": {}})
    cases = [
        (["--checkpoint", bpe_checkpoint, "--out", tmp_path / "a_file" / "sub"], ["cannot be written"]),
        (["--checkpoint", bpe_checkpoint, "--out", tmp_path / "a_file"], ["is a file"]),
        (["--checkpoint", bpe_checkpoint], ["--out"]),
        (["--checkpoint", other_stage, "--out", tmp_path / "x"], ["stage4_transformer"]),
        (["--checkpoint", tmp_path / "missing.pt", "--out", tmp_path / "x"], ["does not exist"]),
        (["--checkpoint", tampered(bpe_checkpoint, tmp_path, "q.pt", quantization={"scheme": "int8"}),
          "--out", tmp_path / "x"], ["quantized", "export the float checkpoint"]),
        (["--checkpoint", int8_weights(bpe_checkpoint, tmp_path), "--out", tmp_path / "x"], ["quantized"]),
        (["--checkpoint", tampered(bpe_checkpoint, tmp_path, "c.pt", model="gpt_classifier"),
          "--out", tmp_path / "x"], ["classifier", "GPT2ForSequenceClassification"]),
    ]
    for argv, needles in cases:
        code, _, err = cli(export.main, argv)
        one_error_line(code, err, *needles)
    assert not (tmp_path / "x").exists()


def test_tokenizer_files_from_another_export_are_refused(bpe_checkpoint, tmp_path, cli):
    folder = exported(bpe_checkpoint, tmp_path / "bpe", cli)
    config = json.loads((folder / "config.json").read_text())
    config["my_llm"]["tokenizer_fingerprint"] = "0" * 16      # as if vocab.json and merges.txt came from elsewhere
    (folder / "config.json").write_text(json.dumps(config))
    code, _, err = cli(generate.main, ["--init_from", folder, "--prompt", "x", "--device", "cpu"])
    one_error_line(code, err, "--init_from", "not the ones export.py wrote")


FAKE_CONVERTER = """
import sys
class Model:   # llama.cpp's converter refuses a BPE pre-split it does not know
    def get_vocab_base_pre(self, tokenizer):
        raise NotImplementedError("BPE pre-tokenizer was not recognized")
def main():
    if "--help" in sys.argv:
        return
    value = {flag: sys.argv[sys.argv.index(flag) + 1] for flag in ("--outfile", "--outtype")}
    open(value["--outfile"], "w").write(" ".join([Model().get_vocab_base_pre(None), value["--outtype"], sys.argv[1]]))
"""


def test_gguf_goes_through_llama_cpps_converter_told_gpt2(bpe_checkpoint, char_checkpoint, tmp_path, cli):
    """The plumbing, with a stand-in for llama.cpp's convert_hf_to_gguf.py: it is run on the export, with the
    pre-split named "gpt-2"; and what cannot work is refused before anything is written."""
    fake = tmp_path / "llama.cpp"
    fake.mkdir()
    (fake / "convert_hf_to_gguf.py").write_text(FAKE_CONVERTER)
    code, out, err = cli(export.main, ["--checkpoint", bpe_checkpoint, "--out", tmp_path / "bpe", "--no-verify",
                                       "--gguf", tmp_path / "m.gguf", "--llama_cpp", fake, "--gguf_type", "f16"])
    assert code == 0, err
    assert (tmp_path / "m.gguf").read_text() == f"gpt-2 f16 {tmp_path / 'bpe'}" and "llama-cli -m" in out
    notes, before = tmp_path / "notes.txt", bpe_checkpoint.read_bytes()
    notes.write_text("mine")
    cases = [(["--checkpoint", bpe_checkpoint, "--gguf", tmp_path / "a.gguf"], ["--llama_cpp"]),
             (["--checkpoint", bpe_checkpoint, "--gguf", tmp_path / "a.gguf", "--llama_cpp", tmp_path],
              ["convert_hf_to_gguf.py"]),
             (["--checkpoint", char_checkpoint, "--gguf", tmp_path / "a.gguf", "--llama_cpp", fake],
              ["character model", "byte-level BPE"]),
             (["--checkpoint", bpe_checkpoint, "--gguf", bpe_checkpoint, "--llama_cpp", fake],    # the input itself
              ["already exists", "not a GGUF file"]),
             (["--checkpoint", bpe_checkpoint, "--gguf", notes, "--llama_cpp", fake], ["not a GGUF file"])]
    for argv, needles in cases:
        code, _, err = cli(export.main, [*argv, "--out", tmp_path / "x"])
        one_error_line(code, err, *needles)
    assert not (tmp_path / "x").exists() and not (tmp_path / "a.gguf").exists()
    assert notes.read_text() == "mine" and bpe_checkpoint.read_bytes() == before


@pytest.mark.slow   # needs a built llama.cpp checkout (LLAMA_CPP=...): run with -m slow where there is one
def test_gguf_in_llama_cpp(bpe_checkpoint, tmp_path, cli):
    """The real llama.cpp: convert, then run its greedy llama-simple and compare the text with generate.py's."""
    assert os.environ.get("LLAMA_CPP"), "set LLAMA_CPP to a llama.cpp checkout with build/bin/llama-simple built"
    root = Path(os.environ["LLAMA_CPP"])
    code, _, err = cli(export.main, ["--checkpoint", bpe_checkpoint, "--out", tmp_path / "bpe", "--no-verify",
                                     "--gguf", tmp_path / "m.gguf", "--llama_cpp", root])
    assert code == 0, err
    assert (tmp_path / "m.gguf").read_bytes()[:4] == b"GGUF"
    model, tokenizer = ours(bpe_checkpoint)
    rows = export.compare_gguf(tmp_path / "m.gguf", root, model, tokenizer, PROMPTS, 50)
    assert [row["prompt"] for row in rows] == list(PROMPTS)
    for row in rows:
        assert row["same_text"] and row["tokens_agreed"] == row["new_tokens"] > 0, row
        assert row["top2_logit_gap_where_parted"] is None
