"""A stage 1 model read back from a checkpoint, trusting nothing in it.

evaluate.py loads best_model.pt and train.py --resume loads last.pt through `load_model`. A checkpoint can be
edited by hand or come from another version of the course: every field is checked against what is about to be
built (the config's keys and sizes, the model type, the vocabulary against the embedding table, the weights'
names, shapes and numbers) and a mismatch is refused in one line naming the file, before any large allocation.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from scripts.common import UserError, check_vocab_fits, config_from_checkpoint, model_from_checkpoint
from stage1_mlp.data.features import Featurizer
from stage1_mlp.models.config import LIMITS, MLPConfig
from stage1_mlp.models.mlp_scratch import ScratchMLP
from stage1_mlp.models.mlp_torch import TorchMLP

IMPLS = ("torch", "scratch")    # torch: nn + autograd; scratch: the hand-written backward pass


@dataclass
class SavedModel:
    """What a checkpoint says about its model, checked: enough to rebuild it and to read text for it."""

    impl: str
    config: MLPConfig
    featurizer: Featurizer
    classes: list[str]


def build_model(impl: str, config: MLPConfig) -> Any:
    return TorchMLP(config) if impl == "torch" else ScratchMLP(config)


def read_saved_model(path: Path | str, ckpt: dict[str, Any]) -> SavedModel:
    """The checked description of the model in `ckpt` (a checkpoint of this stage, from `load_checkpoint`)."""
    impl = ckpt.get("impl")
    if impl not in IMPLS:
        raise UserError(f"{path} holds a model of unknown type {str(impl)[:20]!r} (this version builds "
                        f"{' or '.join(IMPLS)}); retrain the model")
    config = config_from_checkpoint(path, ckpt.get("config"), MLPConfig, limits=LIMITS)
    featurizer = Featurizer.from_dict(ckpt.get("featurizer"), str(path))
    check_vocab_fits(path, featurizer.num_features, config.num_features, "vocabulary (words and n-gram buckets)")
    classes = ckpt.get("classes")
    if not (isinstance(classes, list) and len(classes) == config.num_classes
            and all(isinstance(name, str) and 0 < len(name) <= 100 for name in classes)):
        raise UserError(f"{path}: its class names do not fit the model, which has {config.num_classes} classes; "
                        "retrain the model")
    return SavedModel(impl, config, featurizer, list(classes))


def load_model(path: Path | str, ckpt: dict[str, Any], device: torch.device) -> tuple[SavedModel, Any]:
    """The model saved in `ckpt`, on `device`, after every check of `read_saved_model` and of its weights."""
    saved = read_saved_model(path, ckpt)
    state = ckpt.get("model_state")
    model = model_from_checkpoint(path, lambda: build_model(saved.impl, saved.config), state)
    # names, shapes and finiteness checked there; the numbers must also be what training writes: float32
    for name, tensor in state.items():
        if tensor.dtype != torch.float32:
            raise UserError(f"{path}: the saved weight {name} is not float32 numbers ({tensor.dtype}); retrain the "
                            "model")
    return saved, model.to(device)
