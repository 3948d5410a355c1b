"""Start from OpenAI's GPT-2 weights, through Hugging Face `transformers`.

`--init_from gpt2` (or gpt2-medium, gpt2-large, gpt2-xl) downloads them when online; `--init_from FOLDER`
reads a local copy saved with `save_pretrained` (config.json, model.safetensors, vocab.json, merges.txt).
The weights go into our own `GPT` class (`load_hf_gpt2_state`) and the vocabulary into our own
`ByteLevelBPE`, so everything after loading runs the course's code, not the library's.
"""
from __future__ import annotations

import os
import socket
from pathlib import Path

from scripts.common import UserError
from stage5_gpt.data.bpe import ByteLevelBPE
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
              flag: str = "--init_from") -> tuple[GPT, ByteLevelBPE]:
    """Our GPT holding GPT-2's weights, and GPT-2's tokenizer as our ByteLevelBPE; errors name `flag`, the option
    that gave `source`."""
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
        from transformers.utils import logging as hf_logging

        # transformers logs its remarks on a config (not Python warnings, which run_main holds back): quiet them,
        # so a folder it cannot load ends in our one error line, not in its log lines first
        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()
        try:
            hf_model = GPT2LMHeadModel.from_pretrained(source, local_files_only=offline)
        finally:
            hf_logging.set_verbosity(verbosity)
        vocab_file, merges_file = _tokenizer_files(source, offline, flag)
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
        model = GPT(config)
        load_hf_gpt2_state(model, hf_model.state_dict())
    except ValueError as err:
        raise UserError(f"{flag} {source}: {err}") from None
    tokenizer = ByteLevelBPE.from_gpt2_files(vocab_file, merges_file)
    if tokenizer.vocab_size != config.vocab_size:
        raise UserError(f"{flag} {source}: the tokenizer has {tokenizer.vocab_size} tokens but the model "
                        f"{config.vocab_size}; the folder mixes two models")
    return model, tokenizer
