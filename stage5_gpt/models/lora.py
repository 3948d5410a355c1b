"""LoRA: low-rank adaptation of a frozen Linear layer (Hu et al., 2021), written from tensor operations.

    y = W x + b + (alpha / r) * B (A x)        W (out, in) frozen;  A (r, in), B (out, r) trained

B starts at zero, so at the start the adapted model is exactly the pretrained one; A starts random so
the gradient reaching B is not zero. Only r * (in + out) numbers per layer are trained instead of
in * out. After training, `merge` folds the update into the weight, W' = W + (alpha / r) B A, and the
model runs at its original cost with no extra layer.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn as nn


class LoRALinear(nn.Module):
    """A frozen nn.Linear plus a trainable low-rank update (see the module docstring for the equation)."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float, dropout: float = 0.0) -> None:
        super().__init__()
        if rank < 1:
            raise ValueError(f"LoRA rank must be at least 1, got {rank}")
        self.base = base
        self.base.weight.requires_grad_(False)
        if self.base.bias is not None:
            self.base.bias.requires_grad_(False)
        self.rank, self.alpha, self.scaling = rank, alpha, alpha / rank
        self.lora_A = nn.Parameter(torch.empty(rank, base.in_features))   # (r, in)
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, rank))  # (out, r): zero, so no change at first
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))            # as nn.Linear initialises its weight
        self.dropout = nn.Dropout(dropout)
        self.merged = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base(x)
        if self.merged:
            return out
        update = self.dropout(x) @ self.lora_A.t() @ self.lora_B.t()     # (..., out), through rank r
        return out + self.scaling * update

    def delta_weight(self) -> torch.Tensor:
        """The update as a full matrix: (alpha / r) B A, shape (out, in)."""
        return self.scaling * (self.lora_B @ self.lora_A)

    @torch.no_grad()
    def merge(self) -> None:
        """W <- W + (alpha / r) B A: the same outputs, without the extra matmuls."""
        if not self.merged:
            self.base.weight += self.delta_weight().to(self.base.weight.dtype)
            self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        if self.merged:
            self.base.weight -= self.delta_weight().to(self.base.weight.dtype)
            self.merged = False


def add_lora(model: nn.Module, rank: int, alpha: float, targets: Sequence[str] = ("c_attn", "c_proj"),
             dropout: float = 0.0) -> list[str]:
    """Freeze every parameter of `model`, then wrap each nn.Linear whose name ends in one of `targets`
    (e.g. "c_attn" matches "h.0.attn.c_attn") in a LoRALinear. Returns the wrapped names.
    Weight tying is untouched: the tied embedding stays frozen."""
    for param in model.parameters():
        param.requires_grad_(False)
    names = [name for name, module in model.named_modules()
             if isinstance(module, nn.Linear) and name.split(".")[-1] in targets]
    if not names:
        raise ValueError(f"no nn.Linear named {list(targets)} in the model")
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, LoRALinear(getattr(parent, child), rank, alpha, dropout))
    return names


def merge_lora(model: nn.Module) -> int:
    """Fold every LoRA update into its weight and put the plain nn.Linear back; returns how many."""
    wrapped = [(name, module) for name, module in model.named_modules() if isinstance(module, LoRALinear)]
    for name, module in wrapped:
        module.merge()
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, module.base)
    return len(wrapped)


def trainable_fraction(model: nn.Module) -> tuple[int, int]:
    """(trainable parameters, all parameters), each shared tensor counted once."""
    params = {id(p): p for p in model.parameters()}.values()
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)
