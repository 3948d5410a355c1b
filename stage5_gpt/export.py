"""Export a trained GPT-mini to Hugging Face `transformers`' GPT-2 format (stage 5).

    python export.py --checkpoint checkpoints/gpt_imdb_bpe.pt --out exported/imdb     # a BPE model
    python export.py --checkpoint checkpoints/gpt_shakespeare_char.pt --out exported/char
    python generate.py --init_from exported/imdb --prompt "This movie"                 # back into our own GPT
    python export.py --checkpoint checkpoints/gpt_imdb_bpe.pt --out exported/imdb \
        --gguf imdb.gguf --llama_cpp ~/llama.cpp                                      # and llama.cpp's GGUF

The folder is what `save_pretrained` writes, so any tool of that ecosystem reads it:

    from transformers import AutoModelForCausalLM, AutoTokenizer
    model = AutoModelForCausalLM.from_pretrained("exported/imdb")     # a GPT2LMHeadModel
    tokenizer = AutoTokenizer.from_pretrained("exported/imdb")        # a GPT2Tokenizer: our merges, our ids

What maps to what. GPT-mini was written with GPT-2's parameter names, so the model is GPT-2 itself:
- `wte`, `wpe`, `h.N.*`, `ln_f` become `transformer.wte`, ...; the output layer is tied to `wte`, as in GPT-2;
- GPT-2's `Conv1D` stores a weight as (in, out), `nn.Linear` as (out, in): c_attn, c_proj, c_fc are transposed;
- GPT-2 always has biases. A model trained with bias=False gets biases of zero, which changes no output; the
  config.json records `my_llm.bias = false`, so reading the folder back gives the model without them again;
- the activation is `gelu_pytorch_tanh`: the very function ours calls (GELU, tanh form); GPT-2's `gelu_new`
  computes the same formula in other steps, equal to ~1e-7;
- LayerNorm epsilon 1e-5, attention scaled by 1/sqrt(head size), learned positions: GPT-2's and ours alike.

The tokenizer: our byte-level BPE *is* GPT-2's algorithm (same pre-split, byte alphabet and id order), so it
becomes a GPT-2 tokenizer holding our merges: tokenizer.json for the `tokenizers` library, plus GPT-2's own
vocab.json and merges.txt. A character model gets a `tokenizers` vocabulary of its characters (a BPE without
merges: each character one token, the same ids as ours). Every export is read back with `transformers` and
compared with our model before the program ends (`--no-verify` skips that). Two differences remain, both outside
ordinary text: ours encodes a pre-split piece longer than 256 characters (300 letters with no space or punctuation)
in 256-character chunks (see bpe.MAX_PIECE), `tokenizers` in one go, so their ids can differ there; and a character
the character vocabulary lacks is refused by ours and dropped by transformers.

GGUF (llama.cpp): `--gguf FILE --llama_cpp DIR` runs llama.cpp's own convert_hf_to_gguf.py on the folder. That
converter recognises a BPE tokenizer's pre-split by hashing the ids it gives a test text, from a list of published
tokenizers; ours was trained here, so it is not on the list, and the plain command stops with "BPE pre-tokenizer
was not recognized". Our pre-split *is* GPT-2's regular expression, so the converter is told "gpt-2" (the one
line it cannot know). A character vocabulary is not byte-level, which llama.cpp's GPT-2 reader assumes: refused.

Not exported, each refused in one line: a quantized checkpoint (export the float one it came from) and a
fine-tuned classifier (GPT-2's sequence-classification head has no bias and finds the last token through
padding, so ours does not map onto it exactly).
"""
from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

import torch

from scripts.common import (ArgParser, UserError, add_checkpoint_arg, add_common_args, check_writable, display_path,
                            hardware, load_checkpoint, path_arg, refuse_common_flags, refuse_replacing, run_main,
                            set_threads)
from stage5_gpt.data.bpe import EOT, GPT2_SPLIT_PATTERN, ByteLevelBPE, CharTokenizer
from stage5_gpt.models.gpt import GPT, HF_TRANSPOSED, GPTConfig
from stage5_gpt.models.hf import quiet_transformers
from stage5_gpt.models.quant import refuse_quantized

STAGE = "stage5_gpt"
EXPORT_FORMAT = "my_llm-export-v1"
# what this program writes: with --force only these are replaced in a folder that holds other files too
EXPORT_FILES = ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
                "special_tokens_map.json", "vocab.json", "merges.txt")
ACTIVATION = "gelu_pytorch_tanh"
VERIFY_TEXT = "ROMEO:\nWhat light through yonder window breaks?\n\nJULIET:\nIt is the east."


def build_parser() -> argparse.ArgumentParser:
    p = ArgParser(description="Export a trained GPT-mini to Hugging Face transformers' GPT-2 format (stage 5).")
    add_checkpoint_arg(p, None, "a checkpoint written by train.py (or finetune.py's text-to-text model)")
    p.add_argument("--out", type=path_arg, default=None, help="the folder to write (new, or empty)")
    p.add_argument("--force", action="store_true",
                   help="write into a folder that already holds files (only the export's own files are replaced)")
    p.add_argument("--gguf", type=path_arg, default=None,
                   help="also write this GGUF file for llama.cpp (needs --llama_cpp)")
    p.add_argument("--llama_cpp", type=path_arg, default=None,
                   help="a llama.cpp checkout: its convert_hf_to_gguf.py writes the --gguf file")
    p.add_argument("--gguf_type", default="f32", choices=["f32", "f16", "bf16", "q8_0"],
                   help="the GGUF weights' type (f32: the same numbers as ours)")
    p.add_argument("--verify", action=argparse.BooleanOptionalAction, default=True,
                   help="load the export with transformers and compare its logits and greedy tokens with ours")
    add_common_args(p)      # the course's one dialect: --data_dir, --device, --seed and --num_threads everywhere
    return p


# ----------------------------------------------------------------------------- our model -> GPT-2
def hf_config(config: GPTConfig, tokenizer: ByteLevelBPE | CharTokenizer) -> dict[str, Any]:
    """GPT2Config's arguments for our config. Dropout is 0: an export is for inference."""
    eot = tokenizer.eot_id
    # n_ctx: OpenAI's GPT-2 configs carry it beside n_positions, and llama.cpp's converter reads it
    return dict(vocab_size=config.vocab_size, n_positions=config.block_size, n_ctx=config.block_size,
                n_embd=config.n_embd, n_layer=config.n_layer, n_head=config.n_head, n_inner=4 * config.n_embd,
                activation_function=ACTIVATION, layer_norm_epsilon=1e-5, scale_attn_weights=True,
                resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, tie_word_embeddings=True,
                bos_token_id=eot, eos_token_id=eot, pad_token_id=None,
                my_llm={"format": EXPORT_FORMAT, "bias": config.bias, "tokenizer": tokenizer.to_dict()["type"],
                        "tokenizer_fingerprint": tokenizer.fingerprint()})


def hf_state(model: GPT, hf_names: dict[str, torch.Size]) -> dict[str, torch.Tensor]:
    """Our state dict under GPT-2's names and layouts (the reverse of `load_hf_gpt2_state`): the `transformer.`
    prefix, Conv1D's transposed weights, and zeros for each bias GPT-2 has and a bias=False model lacks.
    `hf_names`: GPT-2's parameter names and shapes, to check every one is filled with the right shape."""
    state = {}
    for name, tensor in model.state_dict().items():
        if name == "lm_head.weight":           # tied: GPT-2 makes lm_head from wte itself
            continue
        tensor = tensor.detach().float()
        state[f"transformer.{name}"] = tensor.t().contiguous() if name.endswith(HF_TRANSPOSED) else tensor.clone()
    for name, shape in hf_names.items():
        if name not in state and name != "lm_head.weight" and name.endswith(".bias"):
            state[name] = torch.zeros(shape)   # bias=False: a zero bias adds nothing
    missing = sorted(set(hf_names) - set(state) - {"lm_head.weight"})
    unexpected = sorted(set(state) - set(hf_names))
    wrong = [name for name in state if name in hf_names and state[name].shape != hf_names[name]]
    if missing or unexpected or wrong:   # a bug, not a user error: the two architectures drifted apart
        raise RuntimeError(f"GPT-2 mapping: missing {missing[:3]}, unexpected {unexpected[:3]}, shapes {wrong[:3]}")
    state["lm_head.weight"] = state["transformer.wte.weight"]
    return state


def hf_model(model: GPT, tokenizer: ByteLevelBPE | CharTokenizer) -> Any:
    """A `transformers` GPT2LMHeadModel holding our weights."""
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(**hf_config(model.config, tokenizer))
    with torch.random.fork_rng(devices=[]):   # its random initialisation is overwritten; keep the caller's RNG
        hf = GPT2LMHeadModel(config)
    hf.load_state_dict(hf_state(model, {k: v.shape for k, v in hf.state_dict().items()}), strict=True)
    hf.generation_config.pad_token_id = tokenizer.eot_id   # generate() pads with it in a batch (GPT-2's habit)
    return hf.eval()


def hf_tokenizer(tokenizer: ByteLevelBPE | CharTokenizer, block_size: int) -> Any:
    """A `transformers` tokenizer with our ids: GPT2Tokenizer with our merges, or a plain character vocabulary."""
    if isinstance(tokenizer, CharTokenizer):
        from tokenizers import Tokenizer, decoders, models
        from transformers import PreTrainedTokenizerFast

        # a BPE with no merges and no pre-split: every character is looked up on its own, id = our id
        backend = Tokenizer(models.BPE(vocab={char: i for i, char in enumerate(tokenizer.chars)}, merges=[]))
        backend.decoder = decoders.Fuse()   # decode: characters side by side, no spaces between
        return PreTrainedTokenizerFast(tokenizer_object=backend, clean_up_tokenization_spaces=False,
                                       model_max_length=block_size)
    from transformers import GPT2Tokenizer

    if tokenizer.pattern.pattern != GPT2_SPLIT_PATTERN.pattern:
        raise UserError("this tokenizer pre-splits with its own pattern, not GPT-2's; GPT-2's tokenizer cannot "
                        "reproduce its ids")
    vocab = {tokenizer.token_str(i): i for i in range(tokenizer.vocab_size)}
    merges = [(tokenizer.token_str(left), tokenizer.token_str(right)) for left, right in tokenizer.merges]
    eot = EOT if tokenizer.eot_id is not None else None
    hf = GPT2Tokenizer(vocab=vocab, merges=merges, unk_token=eot, bos_token=eot, eos_token=eot,
                       model_max_length=block_size, clean_up_tokenization_spaces=False)
    others = [token for token in tokenizer.special_tokens if token != EOT]
    if others:
        hf.add_special_tokens({"additional_special_tokens": others})
    return hf


# ----------------------------------------------------------------------------- checkpoint -> folder
def load_exportable(path: str | Path) -> tuple[GPT, ByteLevelBPE | CharTokenizer, dict[str, Any]]:
    """Our GPT and tokenizer from a checkpoint, or a one-line refusal of what cannot be exported."""
    from stage5_gpt.finetune import model_from_checkpoint   # imports the training code: only when exporting

    ckpt = load_checkpoint(path, STAGE)
    state = ckpt.get("model_state")
    int8 = isinstance(state, dict) and any(getattr(t, "dtype", None) == torch.int8 for t in state.values())
    refuse_quantized(path, "--checkpoint", "export", ckpt)   # the export holds the float32 model, exactly
    if int8:   # int8 weights without quantize.py's record: an edited or foreign file
        raise UserError(f"{path} holds int8 (quantized) weights; the export holds the float32 model, exactly: "
                        "export the float checkpoint they were made from")
    if ckpt.get("model") == "gpt_classifier":
        raise UserError(f"{path} is a fine-tuned classifier: transformers' GPT2ForSequenceClassification has a head "
                        "without bias that finds the last token through padding, so ours does not map exactly; "
                        "export the base model it was fine-tuned from")
    if ckpt.get("model") != "gpt":
        raise UserError(f"{path} holds a {ckpt.get('model')!r} model; only stage 5's GPT (train.py) can be exported")
    model, tokenizer = model_from_checkpoint(ckpt, path)
    return model.float().eval(), tokenizer, ckpt


def check_out(out: Path, force: bool) -> None:
    """Refuse, before any work, a folder that cannot be written or that already holds files (unless --force)."""
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; give a folder to write the export into")
    check_writable(out, "--out", folder=True)
    if out.is_dir() and any(out.iterdir()) and not force:
        raise UserError(f"--out {out} is not empty; choose a new folder, or add --force to replace the export's "
                        "files in it")


def export(checkpoint: str | Path, out: str | Path, force: bool = False,
           loaded: tuple[GPT, Any, dict[str, Any]] | None = None) -> dict[str, Any]:
    """Write the checkpoint's model and tokenizer to `out` with transformers' save_pretrained (`loaded`: what
    load_exportable gave for it, when the caller has it already).

    Everything is written to a temporary folder beside `out` first and moved in at the end, so a failure
    half-way leaves `out` as it was. Returns what was written and the notes a user should read."""
    out = Path(out)
    check_out(out, force)
    model, tokenizer, ckpt = loaded or load_exportable(checkpoint)
    notes = []
    if ckpt.get("finetune"):
        notes.append("a fine-tuned multi-task model: the weights are exported, its tasks' prompt format "
                     "(finetune.py) is not part of GPT-2's files")
    if not model.config.bias:
        notes.append("trained without biases: GPT-2's biases are written as zeros (no output changes); "
                     "config.json says my_llm.bias = false")
    if isinstance(tokenizer, CharTokenizer):
        notes.append("character model: transformers drops characters outside the vocabulary, where ours refuses "
                     "them")
    else:
        notes.append("a piece of over 256 characters without a space or punctuation (never in prose) may get other "
                     "ids in transformers: ours encodes it in chunks")
    with quiet_transformers():
        hf = hf_model(model, tokenizer)
        tok = hf_tokenizer(tokenizer, model.config.block_size)
        parent = out.absolute().parent
        parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=parent, prefix=f".{out.name}.tmp") as tmp:
            staging = Path(tmp) / "export"
            hf.save_pretrained(staging)
            tok.save_pretrained(staging)
            if isinstance(tokenizer, ByteLevelBPE):    # GPT-2's own files, for GPT2Tokenizer of every version
                tok.backend_tokenizer.model.save(str(staging))
            else:   # the class name every transformers version knows (version 5 writes its new TokenizersBackend)
                config_path = staging / "tokenizer_config.json"
                config_path.write_text(json.dumps({**json.loads(config_path.read_text(encoding="utf-8")),
                                                   "tokenizer_class": "PreTrainedTokenizerFast"}, indent=2))
            readable(staging)
            move_in(staging, out)
    files = {p.name: p.stat().st_size for p in sorted(out.iterdir()) if p.name in EXPORT_FILES}
    return {"out": str(out), "files": files, "bytes": sum(files.values()), "notes": notes,
            "tokenizer": "char" if isinstance(tokenizer, CharTokenizer) else "byte_bpe"}


def readable(folder: Path) -> None:
    """Give the files the permissions the user's umask asks for (transformers writes the weights as 0600)."""
    umask = os.umask(0)
    os.umask(umask)
    for path in folder.iterdir():
        path.chmod(0o666 & ~umask)


def move_in(staging: Path, out: Path) -> None:
    """Put the staged files at `out`: a rename when `out` is new or empty; otherwise (--force) replace the
    export's own files and leave the others alone."""
    if not out.exists() or not any(out.iterdir()):
        if out.exists():
            out.rmdir()
        staging.rename(out)
        return
    for name in EXPORT_FILES:   # stale ones too: a char export must not sit beside an old vocab.json
        (out / name).unlink(missing_ok=True)
    for path in staging.iterdir():
        shutil.move(str(path), out / path.name)


# ----------------------------------------------------------------------------- on to llama.cpp
# run in a child Python: llama.cpp's converter, told that our BPE's pre-split is GPT-2's (see the module docstring).
# The method is on `Model` in older llama.cpp and on `TextModel` in newer: patch whichever class defines it.
GGUF_SHIM = """
import sys
import convert_hf_to_gguf as convert    # found through PYTHONPATH: the llama.cpp checkout
for cls in list(vars(convert).values()):
    if isinstance(cls, type) and "get_vocab_base_pre" in vars(cls):
        cls.get_vocab_base_pre = lambda self, tokenizer: "gpt-2"
sys.argv[0] = convert.__file__
convert.main()
"""


def is_gguf(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(4) == b"GGUF"


def check_gguf_args(gguf: str | None, llama_cpp: str | None) -> Path | None:
    """--gguf and --llama_cpp, checked before any work: the converter is there, the file can be written."""
    if gguf is None:
        if llama_cpp is not None:
            raise UserError("--llama_cpp is only used with --gguf FILE")
        return None
    if llama_cpp is None:
        raise UserError("--gguf needs --llama_cpp DIR, a llama.cpp checkout (git clone "
                        "https://github.com/ggml-org/llama.cpp); its convert_hf_to_gguf.py writes the file")
    if not (Path(llama_cpp) / "convert_hf_to_gguf.py").is_file():
        raise UserError(f"--llama_cpp {llama_cpp} holds no convert_hf_to_gguf.py; give the folder of a llama.cpp "
                        "checkout")
    refuse_replacing(gguf, "--gguf", is_gguf, "a GGUF file")
    path = check_writable(gguf, "--gguf")
    run_converter(Path(llama_cpp), ["--help"])   # its imports (gguf, sentencepiece...) work: before the export
    return path


def to_gguf(folder: Path, gguf: Path, llama_cpp: Path, outtype: str = "f32") -> float:
    """Convert an export to GGUF with llama.cpp's converter; returns the seconds it took."""
    tick = time.perf_counter()
    run_converter(llama_cpp, [str(folder), "--outfile", str(gguf), "--outtype", outtype])
    return time.perf_counter() - tick


def run_converter(llama_cpp: Path, argv: list[str]) -> None:
    path = os.pathsep.join(p for p in (str(llama_cpp.absolute()), os.environ.get("PYTHONPATH", "")) if p)
    done = subprocess.run([sys.executable, "-c", GGUF_SHIM, *argv], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": path})
    if done.returncode != 0:
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        last = lines[-1][:200] if lines else f"exit status {done.returncode}"
        hint = ("; install its requirements: pip install -r requirements/requirements-convert_hf_to_gguf.txt"
                if "No module named" in last else "")
        raise UserError(f"llama.cpp's convert_hf_to_gguf.py failed: {last}{hint}")


# ----------------------------------------------------------------------------- checking the export
def ours_greedy(model: GPT, tokenizer: Any, prompt_ids: list[int], new_tokens: int) -> list[int]:
    """The tokens generate.py writes at temperature 0 (its stream path, with the KV cache)."""
    from stage5_gpt.generate import stream

    settings = {"max_new_tokens": new_tokens, "temperature": 0.0, "top_k": 0, "top_p": 1.0, "seed": 0}
    ids, _ = stream(model, tokenizer, prompt_ids, settings, True, torch.device("cpu"), out=io.StringIO())
    return ids


@torch.no_grad()
def hf_greedy(model: Any, prompt_ids: list[int], new_tokens: int) -> list[int]:
    """transformers' greedy generation (it stops after <|endoftext|>, as ours does)."""
    idx = torch.tensor([prompt_ids])
    with quiet_transformers():
        out = model.generate(idx, attention_mask=torch.ones_like(idx), max_new_tokens=new_tokens, do_sample=False,
                             pad_token_id=model.generation_config.pad_token_id or 0)
    return out[0, len(prompt_ids):].tolist()


def first_mismatch(a: list[int], b: list[int]) -> int | None:
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


def hf_ids(hf_tok: Any, text: str) -> list[int]:
    with quiet_transformers():       # it warns when the text is longer than the model's context: we cut it after
        return hf_tok(text)["input_ids"]


def compare(folder: Path, model: GPT, tokenizer: Any, prompts: Sequence[str], new_tokens: int) -> dict[str, Any]:
    """Load the export with transformers (Auto classes, local files only) and compare it with our model: the
    tokenizer's ids, the logits over the first prompt, and greedy tokens from each prompt."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with quiet_transformers():
        hf = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True).eval()
        hf_tok = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    block = model.config.block_size
    rows = []
    for prompt in prompts:
        keep = block // 2      # a long prompt keeps its end: half the context, so that half is left to generate
        ids = tokenizer.encode(prompt)[-keep:]
        room = min(new_tokens, block - len(ids))   # transformers' GPT-2 has no sliding window past its context
        ours = ours_greedy(model, tokenizer, ids, room)
        theirs = hf_greedy(hf, ids, room)
        rows.append({"prompt": prompt, "prompt_tokens": len(ids), "new_tokens": room,
                     "same_ids": hf_ids(hf_tok, prompt)[-keep:] == ids,
                     "same_tokens": ours == theirs, "first_mismatch": first_mismatch(ours, theirs),
                     "generated": len(ours)})
    probe = torch.tensor([tokenizer.encode(prompts[0])[-block:]])
    with torch.no_grad():
        diff = (model(probe)[0] - hf(probe).logits).abs().max().item()
    return {"max_logit_diff": diff, "prompts": rows,
            "all_same": all(r["same_tokens"] and r["same_ids"] for r in rows)}


def compare_gguf(gguf: Path, llama_cpp: Path, model: GPT, tokenizer: Any, prompts: Sequence[str],
                 new_tokens: int) -> list[dict[str, Any]]:
    """llama.cpp's greedy llama-simple on the GGUF file against our generate.py, prompt by prompt: whether the
    texts are equal, how many of our tokens llama.cpp wrote the same before they part, and there the gap between
    our two best logits (a near-tie is where float rounding in other kernels can pick the other token)."""
    simple = Path(llama_cpp) / "build" / "bin" / "llama-simple"
    if not simple.is_file():
        raise UserError(f"{simple} is not built: cmake --build {Path(llama_cpp) / 'build'} --target llama-simple")
    rows = []
    for prompt in prompts:
        ids = tokenizer.encode(prompt)
        room = min(new_tokens, model.config.block_size - len(ids))
        ours = [i for i in ours_greedy(model, tokenizer, ids, room) if i != tokenizer.eot_id]   # it prints no EOT
        done = subprocess.run([str(simple), "-m", str(gguf), "-n", str(room), prompt], capture_output=True,
                              text=True)
        if done.returncode != 0:
            raise UserError(f"llama-simple failed on {gguf}: {(done.stderr.strip().splitlines() or ['?'])[-1]}")
        theirs = done.stdout.removeprefix(prompt).removesuffix("\n")           # it ends with one newline
        agreed = 0
        while agreed < len(ours) and theirs.startswith(tokenizer.decode(ours[:agreed + 1])):
            agreed += 1
        margin = None
        if agreed < len(ours):
            with torch.no_grad():
                top = model(torch.tensor([ids + ours[:agreed]]))[0][0, -1].topk(2).values
            margin = float(top[0] - top[1])
        rows.append({"prompt": prompt, "new_tokens": len(ours), "same_text": theirs == tokenizer.decode(ours),
                     "tokens_agreed": agreed, "top2_logit_gap_where_parted": margin})
    return rows


def measure(checkpoint: Path, prompts: list[str], new_tokens: int = 200,
            llama_cpp: Path | None = None) -> dict[str, Any]:
    """For bench.py: export `checkpoint` to a temporary folder and compare transformers' greedy tokens with ours
    for each prompt. Keys: checkpoint, tokenizer, export_seconds, folder_bytes, files, notes, max_logit_diff,
    new_tokens, prompts (a row each: prompt, prompt_tokens, new_tokens compared, same_ids, same_tokens,
    first_mismatch (None when equal), generated), all_same, transformers, torch, hardware, threads. With
    `llama_cpp` (a built checkout) and a BPE model, also gguf: the f32 GGUF's greedy text in llama-simple against
    ours (compare_gguf's rows)."""
    import transformers
    from transformers import GPT2LMHeadModel, GPT2Tokenizer  # noqa: F401 - imported before the clock starts

    with tempfile.TemporaryDirectory() as tmp:
        tick = time.perf_counter()
        loaded = load_exportable(checkpoint)
        info = export(checkpoint, Path(tmp) / "export", loaded=loaded)
        seconds = time.perf_counter() - tick
        model, tokenizer, _ = loaded
        result = compare(Path(info["out"]), model, tokenizer, prompts, new_tokens)
        if llama_cpp is not None and isinstance(tokenizer, ByteLevelBPE):
            gguf = Path(tmp) / "model.gguf"
            to_gguf(Path(info["out"]), gguf, Path(llama_cpp))
            result["gguf"] = {"type": "f32", "llama_cpp": str(llama_cpp),
                              "prompts": compare_gguf(gguf, Path(llama_cpp), model, tokenizer, prompts, new_tokens)}
    return {"checkpoint": display_path(checkpoint), "tokenizer": info["tokenizer"], "export_seconds": round(seconds, 3),
            "folder_bytes": info["bytes"], "files": info["files"], "notes": info["notes"], "new_tokens": new_tokens,
            **result, "transformers": transformers.__version__, "torch": torch.__version__,
            "hardware": hardware("cpu"), "threads": torch.get_num_threads()}


# ----------------------------------------------------------------------------- the program
def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    refuse_common_flags(args, "export.py")
    if not args.checkpoint or not args.out:
        raise UserError("give the model and the folder: --checkpoint FILE.pt --out FOLDER")
    set_threads(args.num_threads)
    gguf = check_gguf_args(args.gguf, args.llama_cpp)
    tick = time.perf_counter()
    loaded = load_exportable(args.checkpoint)       # once: for the checks, the export and its verification
    model, tokenizer, _ = loaded
    if gguf is not None and isinstance(tokenizer, CharTokenizer):   # refused before the export, not after
        raise UserError(f"{args.checkpoint} is a character model: llama.cpp reads GPT-2 models with a byte-level "
                        "BPE vocabulary only; export it without --gguf")
    info = export(args.checkpoint, args.out, args.force, loaded)
    print(f"wrote {info['out']} in {time.perf_counter() - tick:.1f} s: "
          + ", ".join(f"{name} ({size / 1e6:.2f} MB)" for name, size in info["files"].items()))
    for note in info["notes"]:
        print(f"note: {note}")
    if args.verify:
        prompt = VERIFY_TEXT if isinstance(tokenizer, ByteLevelBPE) else "".join(
            c for c in VERIFY_TEXT if c in tokenizer.chars) or tokenizer.chars[0]
        result = compare(Path(info["out"]), model, tokenizer, [prompt], 50)
        row = result["prompts"][0]
        print(f"checked with transformers: largest logit difference {result['max_logit_diff']:.2g}; tokenizer ids "
              f"{'the same' if row['same_ids'] else 'DIFFERENT'}; greedy {row['new_tokens']} tokens "
              + ("the same" if row["same_tokens"] else f"DIFFERENT from token {row['first_mismatch']}"))
        if not result["all_same"]:
            print("error: transformers does not reproduce this model; please report it", file=sys.stderr)
            return 1
    if gguf is not None:
        seconds = to_gguf(Path(info["out"]), gguf, Path(args.llama_cpp), args.gguf_type)
        # -no-cnv: plain completion, also in a llama-cli that would start a chat (a model with a chat template)
        print(f"wrote {gguf} ({gguf.stat().st_size / 1e6:.2f} MB, {args.gguf_type}) in {seconds:.1f} s with "
              f"llama.cpp's converter; run it: llama-cli -m {gguf} -p \"...\" -n 200 --temp 0 -no-cnv")
    print(f"load it: AutoModelForCausalLM.from_pretrained({info['out']!r}), AutoTokenizer.from_pretrained(...); "
          f"back into ours: python stage5_gpt/generate.py --init_from {info['out']}")
    return 0


if __name__ == "__main__":
    run_main(main)
