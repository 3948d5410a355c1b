"""A Transformer-encoder text classifier: the stage's encoder layers, then masked mean pooling and a
linear layer (the same test sets as stage 1's MLP and stage 2's LSTM).

    h = LayerNorm(EncoderLayer^N(Embed(x) * sqrt(d) + PE))      (B, T, D)
    p(y | x) = softmax(W mean_{t: real} h_t + b)
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn

from stage4_transformer.models.transformer import PAD_ID, EncoderLayer, PositionalEncoding


@dataclass
class ClassifierConfig:
    vocab_size: int
    num_classes: int
    d_model: int = 128
    n_heads: int = 4
    layers: int = 2
    d_ff: int = 512
    dropout: float = 0.1
    max_len: int = 512

    def to_dict(self) -> dict:
        return asdict(self)


class TransformerClassifier(nn.Module):
    def __init__(self, config: ClassifierConfig):
        super().__init__()
        self.config = c = config
        self.embedding = nn.Embedding(c.vocab_size, c.d_model, padding_idx=PAD_ID)
        nn.init.normal_(self.embedding.weight, std=c.d_model ** -0.5)
        self.positions = PositionalEncoding(c.d_model, c.max_len)
        self.dropout = nn.Dropout(c.dropout)
        self.layers = nn.ModuleList(EncoderLayer(c.d_model, c.n_heads, c.d_ff, c.dropout, norm_first=True,
                                                 use_sdpa=False) for _ in range(c.layers))
        self.norm = nn.LayerNorm(c.d_model)
        self.head = nn.Linear(c.d_model, c.num_classes)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (B, T), right-padded with 0 -> class scores (B, C)."""
        mask = tokens != PAD_ID                                                  # (B, T)
        x = self.dropout(self.positions(self.embedding(tokens) * math.sqrt(self.config.d_model)))
        for layer in self.layers:
            x = layer(x, mask.unsqueeze(1))
        x = self.norm(x) * mask.unsqueeze(-1)                                    # padding contributes nothing
        pooled = x.sum(1) / mask.sum(1, keepdim=True).clamp(min=1)               # (B, D) mean over real tokens
        return self.head(self.dropout(pooled))
