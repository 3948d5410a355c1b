"""An LSTM text classifier: the recurrent answer to stage 1's bag of n-grams, on the same test sets."""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn as nn

from stage2_rnn_lstm.models.rnn_lm import make_recurrent


@dataclass
class ClassifierConfig:
    vocab_size: int
    num_classes: int
    model_type: str = "lstm"
    impl: str = "torch"
    embed_dim: int = 128
    hidden_dim: int = 256
    num_layers: int = 1
    dropout: float = 0.3

    def to_dict(self) -> dict:
        return asdict(self)


class RNNClassifier(nn.Module):
    """Read the text left to right, then pool the hidden states of the real (non-padding) tokens:

        h_1..h_T = LSTM(E[x_1..x_T]);   v = [max_t h_t ; mean_t h_t];   logits = W dropout(v) + b

    Padding sits at the end of each row, so a left-to-right RNN never reads it before a real token;
    the mask only keeps it out of the pooling. Max pooling lets one strong phrase anywhere count.
    """

    def __init__(self, config: ClassifierConfig):
        super().__init__()
        self.config = config
        self.embedding = nn.Embedding(config.vocab_size, config.embed_dim, padding_idx=0)
        self.rnn = make_recurrent(config.model_type, config.impl, config.embed_dim, config.hidden_dim,
                                  config.num_layers, config.dropout)
        self.dropout = nn.Dropout(config.dropout)
        self.head = nn.Linear(2 * config.hidden_dim, config.num_classes)

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """tokens (B, T) padded with 0, lengths (B,) -> logits (B, C)."""
        outputs, _ = self.rnn(self.dropout(self.embedding(tokens)))             # (B, T, H)
        mask = torch.arange(tokens.shape[1], device=tokens.device)[None, :] < lengths[:, None]  # (B, T)
        masked = outputs.masked_fill(~mask[..., None], float("-inf"))
        pooled_max = masked.max(dim=1).values                                   # (B, H)
        pooled_mean = (outputs * mask[..., None]).sum(1) / lengths[:, None].clamp(min=1)  # (B, H)
        return self.head(self.dropout(torch.cat([pooled_max, pooled_mean], dim=1)))
