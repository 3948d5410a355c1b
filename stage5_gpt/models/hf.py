"""Start from OpenAI's GPT-2 weights, through Hugging Face `transformers`.

`--init_from gpt2` (or gpt2-medium, gpt2-large, gpt2-xl) downloads them when online; `--init_from FOLDER`
reads a local copy saved with `save_pretrained` (config.json, model.safetensors, vocab.json, merges.txt).
The weights go into our own `GPT` class (`load_hf_gpt2_state`) and the vocabulary into our own
`ByteLevelBPE`, so everything after loading runs the course's code, not the library's.
"""
from __future__ import annotations

from pathlib import Path

from scripts.common import UserError
from stage5_gpt.data.bpe import ByteLevelBPE
from stage5_gpt.models.gpt import GPT, config_from_hf_gpt2, load_hf_gpt2_state

GPT2_NAMES = ("gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl", "openai-community/gpt2")


def _tokenizer_files(source: str) -> tuple[Path, Path]:
    folder = Path(source)
    if folder.is_dir():
        files = folder / "vocab.json", folder / "merges.txt"
        if not all(f.is_file() for f in files):
            raise UserError(f"--init_from {source}: the folder has no vocab.json and merges.txt (GPT-2's tokenizer); "
                            "save it with GPT2TokenizerFast.save_pretrained beside the model")
        return files
    from huggingface_hub import hf_hub_download   # only when downloading

    return Path(hf_hub_download(source, "vocab.json")), Path(hf_hub_download(source, "merges.txt"))


def load_gpt2(source: str, attention: str = "sdpa", dropout: float = 0.0) -> tuple[GPT, ByteLevelBPE]:
    """Our GPT holding GPT-2's weights, and GPT-2's tokenizer as our ByteLevelBPE."""
    if not Path(source).is_dir() and source not in GPT2_NAMES:
        raise UserError(f"--init_from {source!r} is neither a folder nor one of {', '.join(GPT2_NAMES[:4])}")
    try:
        from transformers import GPT2LMHeadModel   # a large import, only when asked for

        hf_model = GPT2LMHeadModel.from_pretrained(source)
        vocab_file, merges_file = _tokenizer_files(source)
    except UserError:
        raise
    except Exception as err:  # noqa: BLE001 - offline, a missing file, a model of another kind
        reason = str(err).strip().splitlines()[0][:160] if str(err).strip() else type(err).__name__
        raise UserError(f"--init_from {source}: cannot load GPT-2 weights ({reason}); go online, or pass a "
                        "folder saved with transformers' save_pretrained") from None
    try:
        config = config_from_hf_gpt2(hf_model.config.to_dict(), attention)
        config.dropout = dropout
        model = GPT(config)
        load_hf_gpt2_state(model, hf_model.state_dict())
    except ValueError as err:
        raise UserError(f"--init_from {source}: {err}") from None
    tokenizer = ByteLevelBPE.from_gpt2_files(vocab_file, merges_file)
    if tokenizer.vocab_size != config.vocab_size:
        raise UserError(f"--init_from {source}: the tokenizer has {tokenizer.vocab_size} tokens but the model "
                        f"{config.vocab_size}; the folder mixes two models")
    return model, tokenizer
