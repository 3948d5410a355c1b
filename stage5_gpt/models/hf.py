"""Start from OpenAI's GPT-2 weights, through Hugging Face `transformers`.

`--init_from gpt2` (or gpt2-medium, gpt2-large, gpt2-xl) downloads them when online; `--init_from FOLDER`
reads a local copy saved with `save_pretrained` (config.json, model.safetensors, vocab.json, merges.txt).
The weights go into our own `GPT` class (`load_hf_gpt2_state`) and the vocabulary into our own
`ByteLevelBPE`, so everything after loading runs the course's code, not the library's.

A folder written by `export.py` reads back to exactly the model exported: its config.json carries a `my_llm`
record, so a model trained without biases comes back without them (GPT-2's zero biases are dropped), and a
character model gets its `CharTokenizer` back from tokenizer.json.
"""
from __future__ import annotations

import contextlib
import json
import os
import socket
from pathlib import Path
from typing import Any, Iterator

import torch

from scripts.common import UserError
from stage5_gpt.data.bpe import ByteLevelBPE, CharTokenizer
from stage5_gpt.models.gpt import GPT, config_from_hf_gpt2, load_hf_gpt2_state

GPT2_NAMES = ("gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl", "openai-community/gpt2")


def hub_offline() -> bool:
    """True when the Hugging Face Hub is out of reach: HF_HUB_OFFLINE is set, or huggingface.co does not answer
    within 3 seconds (asked directly unless a proxy is configured). Then only the local cache is read, and a
    missing model is one clear error instead of minutes of retries."""
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        return True
    if any(os.environ.get(name) for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return False   # the proxy decides; let the library try
    try:
        socket.create_connection(("huggingface.co", 443), timeout=3).close()
    except OSError:
        return True
    return False


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """No log remarks and no progress bars from transformers. Its remarks on a config are log lines, not Python
    warnings (which run_main holds back), so without this a folder it cannot load would print them before our one
    error line; and a program's own lines should be its output."""
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def _tokenizer_files(source: str, offline: bool = False, flag: str = "--init_from") -> tuple[Path, Path]:
    folder = Path(source)
    if folder.is_dir():
        files = folder / "vocab.json", folder / "merges.txt"
        if not all(f.is_file() for f in files):
            raise UserError(f"{flag} {source}: the folder has no vocab.json and merges.txt (GPT-2's tokenizer); "
                            "save it with GPT2TokenizerFast.save_pretrained beside the model")
        return files
    from huggingface_hub import hf_hub_download   # only when downloading

    return tuple(Path(hf_hub_download(source, name, local_files_only=offline))   # type: ignore[return-value]
                 for name in ("vocab.json", "merges.txt"))


def load_gpt2(source: str, attention: str = "sdpa", dropout: float = 0.0,
              flag: str = "--init_from") -> tuple[GPT, ByteLevelBPE | CharTokenizer]:
    """Our GPT holding GPT-2's weights, and GPT-2's tokenizer as our ByteLevelBPE (an exported character model: its
    CharTokenizer); errors name `flag`, the option that gave `source`."""
    if not Path(source).is_dir() and source not in GPT2_NAMES:
        raise UserError(f"{flag} {source!r} is neither a folder nor one of {', '.join(GPT2_NAMES[:4])}")
    offline = not Path(source).is_dir() and hub_offline()
    not_cached = UserError(f"{flag} {source}: huggingface.co cannot be reached (or HF_HUB_OFFLINE is set) and "
                           f"{source} is not in the local Hugging Face cache; go online once to download it, or pass "
                           "a folder saved with transformers' save_pretrained")
    if offline:
        from huggingface_hub import try_to_load_from_cache   # small; saves importing transformers for nothing

        if not isinstance(try_to_load_from_cache(source, "config.json"), str):
            raise not_cached
    try:
        from transformers import GPT2LMHeadModel   # a large import, only when asked for

        with quiet_transformers():
            hf_model = GPT2LMHeadModel.from_pretrained(source, local_files_only=offline)
        record = getattr(hf_model.config, "my_llm", None)   # written by export.py
        char_export = isinstance(record, dict) and record.get("tokenizer") == "char"
        vocab_file, merges_file = (None, None) if char_export else _tokenizer_files(source, offline, flag)
    except UserError:
        raise
    except Exception as err:  # noqa: BLE001 - offline, a missing file, a model of another kind
        if offline:
            raise not_cached from None
        reason = str(err).strip().splitlines()[0][:160] if str(err).strip() else type(err).__name__
        raise UserError(f"{flag} {source}: cannot load GPT-2 weights ({reason}); go online, or pass a "
                        "folder saved with transformers' save_pretrained") from None
    try:
        config = config_from_hf_gpt2(hf_model.config.to_dict(), attention)
        config.dropout = dropout
        state = hf_model.state_dict()
        if isinstance(record, dict) and record.get("bias") is False and _zero_biases(state):
            config.bias = False     # exported from a model without biases: drop GPT-2's zeros again
            state = {name: tensor for name, tensor in state.items() if not _is_bias(name)}
        model = GPT(config)
        load_hf_gpt2_state(model, state)
    except ValueError as err:
        raise UserError(f"{flag} {source}: {err}") from None
    if char_export:
        tokenizer: ByteLevelBPE | CharTokenizer = _char_tokenizer(Path(source) / "tokenizer.json", flag)
    else:
        tokenizer = ByteLevelBPE.from_gpt2_files(vocab_file, merges_file)
    if tokenizer.vocab_size != config.vocab_size:
        raise UserError(f"{flag} {source}: the tokenizer has {tokenizer.vocab_size} tokens but the model "
                        f"{config.vocab_size}; the folder mixes two models")
    saved = record.get("tokenizer_fingerprint") if isinstance(record, dict) else None
    if saved is not None and saved != tokenizer.fingerprint():
        raise UserError(f"{flag} {source}: the tokenizer files are not the ones export.py wrote with this model "
                        "(edited, or copied from another export); export again")
    return model, tokenizer


def _is_bias(name: str) -> bool:
    return name.endswith(".bias") and not name.endswith((".attn.bias", ".attn.masked_bias"))   # not mask buffers


def _zero_biases(state: dict[str, torch.Tensor]) -> bool:
    """True when every bias is zero: nothing changed them since export.py wrote them (else they are kept)."""
    return all(not tensor.any() for name, tensor in state.items() if _is_bias(name))


def _char_tokenizer(path: Path, flag: str) -> CharTokenizer:
    """The CharTokenizer of a character model export.py wrote: tokenizer.json holds a BPE without merges whose
    vocabulary is the characters, each at its id."""
    def bad(problem: str) -> UserError:
        return UserError(f"{flag} {path}: not the character vocabulary export.py writes ({problem}); export again")

    try:
        model: Any = json.loads(path.read_text(encoding="utf-8")).get("model")
    except (OSError, ValueError, AttributeError) as err:
        raise bad(str(err).splitlines()[0][:80] if str(err) else type(err).__name__) from None
    vocab = model.get("vocab") if isinstance(model, dict) else None
    if not isinstance(vocab, dict) or model.get("merges") or sorted(vocab.values()) != list(range(len(vocab))):
        raise bad("expected a vocabulary with ids 0..n-1 and no merges")
    try:
        return CharTokenizer([char for char, _ in sorted(vocab.items(), key=lambda item: item[1])])
    except UserError as err:
        raise bad(str(err)) from None
