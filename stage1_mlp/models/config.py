"""The one config both MLP implementations share, so a checkpoint of either can rebuild it."""
from __future__ import annotations

from dataclasses import asdict, dataclass

EMBED_INIT = 0.1  # embedding rows start as U(-0.1, 0.1) in both implementations


@dataclass
class MLPConfig:
    num_features: int        # rows of the embedding table: words + n-gram hash buckets
    num_classes: int
    embed_dim: int = 32
    hidden_dim: int = 64
    dropout: float = 0.3

    def to_dict(self) -> dict:
        return asdict(self)
