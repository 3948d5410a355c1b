"""Attention functions: how much each source word matters for the word being written now.

Every variant scores the decoder's query q (B, Q) against each encoder annotation h_j (B, S, M),
turns the scores into weights with a softmax over the real (unpadded) source positions, and returns
the weighted average of the annotations, the context vector:

    e_j = score(q, h_j);   a = softmax(e) over j with mask_j = 1;   c = sum_j a_j h_j

    bahdanau      score = v^T tanh(W q + U h_j)         additive (Bahdanau et al. 2015), q = s_{t-1}
    luong_dot     score = q^T h_j                        multiplicative (Luong et al. 2015), q = s_t
    luong_general score = q^T W h_j
    luong_concat  score = v^T tanh(W [q; h_j])           = v^T tanh(W_q q + W_h h_j)

The parts that depend only on the source (U h_j, W h_j) are computed once per sentence in
`prepare`, not at every decoder step.
"""
from __future__ import annotations

import torch
import torch.nn as nn

ATTENTION_TYPES = ("bahdanau", "luong_dot", "luong_general", "luong_concat", "none")


def masked_softmax(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Softmax over the last axis where mask is True; padded positions get exactly zero weight."""
    return torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=-1)


class AdditiveAttention(nn.Module):
    """score(q, h_j) = v^T tanh(W q + U h_j): Bahdanau's, and Luong's `concat` (the same form)."""

    def __init__(self, query_dim: int, memory_dim: int, attention_dim: int):
        super().__init__()
        self.query_proj = nn.Linear(query_dim, attention_dim, bias=False)      # W
        self.key_proj = nn.Linear(memory_dim, attention_dim)                  # U (and the bias)
        self.v = nn.Linear(attention_dim, 1, bias=False)

    def prepare(self, memory: torch.Tensor) -> torch.Tensor:
        return self.key_proj(memory)                                           # (B, S, A)

    def forward(self, query: torch.Tensor, keys: torch.Tensor, memory: torch.Tensor,
                mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        energy = torch.tanh(keys + self.query_proj(query).unsqueeze(1))       # (B, S, A)
        weights = masked_softmax(self.v(energy).squeeze(-1), mask)            # (B, S)
        context = torch.bmm(weights.unsqueeze(1), memory).squeeze(1)           # (B, M)
        return context, weights


class MultiplicativeAttention(nn.Module):
    """score(q, h_j) = q^T W h_j (`general`), or q^T h_j (`dot`, W = I: needs Q == M)."""

    def __init__(self, query_dim: int, memory_dim: int, general: bool):
        super().__init__()
        if not general and query_dim != memory_dim:
            raise ValueError(f"dot attention needs query_dim == memory_dim, got {query_dim} and {memory_dim}")
        self.key_proj = nn.Linear(memory_dim, query_dim, bias=False) if general else None

    def prepare(self, memory: torch.Tensor) -> torch.Tensor:
        return memory if self.key_proj is None else self.key_proj(memory)      # (B, S, Q)

    def forward(self, query: torch.Tensor, keys: torch.Tensor, memory: torch.Tensor,
                mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        scores = torch.bmm(keys, query.unsqueeze(-1)).squeeze(-1)             # (B, S)
        weights = masked_softmax(scores, mask)                                 # (B, S)
        context = torch.bmm(weights.unsqueeze(1), memory).squeeze(1)           # (B, M)
        return context, weights


def make_attention(kind: str, query_dim: int, memory_dim: int, attention_dim: int) -> nn.Module | None:
    """The attention module for `--attention_type` (None for the no-attention baseline)."""
    if kind in ("bahdanau", "luong_concat"):
        return AdditiveAttention(query_dim, memory_dim, attention_dim)
    if kind in ("luong_dot", "luong_general"):
        return MultiplicativeAttention(query_dim, memory_dim, general=kind == "luong_general")
    if kind == "none":
        return None
    raise ValueError(f"unknown attention type {kind!r}; choose one of {ATTENTION_TYPES}")
