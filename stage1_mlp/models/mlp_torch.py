"""The bag-of-n-grams MLP with `torch.nn` and autograd: the version you would write at work."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from stage1_mlp.models.config import EMBED_INIT, MLPConfig


class TorchMLP(nn.Module):
    """Mean of n-gram embeddings, one hidden ReLU layer, linear output.

        h      = (1/|d|) * sum_{g in d} E[g]        EmbeddingBag(mode="mean")
        z      = dropout(relu(W1 h + b1))
        logits = W2 z + b2

    The embedding gradient is sparse (only the rows a batch touches), so it is trained with
    `torch.optim.SparseAdam` and the dense layers with `torch.optim.Adam` (see `SparseDenseAdam`).
    Parameter names match `ScratchMLP`, so weights copy between the two.
    """

    def __init__(self, config: MLPConfig):
        super().__init__()
        self.config = config
        self.embedding = nn.EmbeddingBag(config.num_features, config.embed_dim, mode="mean", sparse=True)
        self.fc1 = nn.Linear(config.embed_dim, config.hidden_dim)
        self.fc2 = nn.Linear(config.hidden_dim, config.num_classes)
        self.dropout = nn.Dropout(config.dropout)
        # U(-0.1, 0.1): large enough that the mean of a few hundred rows is not ~0 at the start,
        # so Adam's small steps separate the classes within the first epoch
        nn.init.uniform_(self.embedding.weight, -EMBED_INIT, EMBED_INIT)

    def forward(self, ids: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        h = self.embedding(ids, offsets)              # (B, embed_dim)
        z = self.dropout(F.relu(self.fc1(h)))         # (B, hidden_dim)
        return self.fc2(z)                            # (B, num_classes)


class SparseDenseAdam:
    """`torch.optim.SparseAdam` for the (huge, sparsely used) embedding table and `torch.optim.Adam` for the
    dense layers, driven as one optimizer: `zero_grad()`, `step()`, `state_dict()`, `load_state_dict()`.

    `torch.optim.Adam` refuses sparse gradients and `SparseAdam` refuses dense ones, hence two of them.
    """

    def __init__(self, model: TorchMLP, lr: float):
        dense = [p for name, p in model.named_parameters() if not name.startswith("embedding.")]
        self.optimizers = [torch.optim.SparseAdam([model.embedding.weight], lr=lr), torch.optim.Adam(dense, lr=lr)]

    def zero_grad(self) -> None:
        for optimizer in self.optimizers:
            optimizer.zero_grad(set_to_none=True)

    def step(self) -> None:
        for optimizer in self.optimizers:
            optimizer.step()

    def state_dict(self) -> list[dict]:
        return [optimizer.state_dict() for optimizer in self.optimizers]

    def load_state_dict(self, state: list[dict]) -> None:
        """Restore both optimizers; moments that do not fit the parameters (an edited or foreign checkpoint) are a
        ValueError here, not a failure at the next step."""
        if not isinstance(state, list) or len(state) != len(self.optimizers):
            raise ValueError(f"expected the states of {len(self.optimizers)} optimizers")
        for optimizer, saved in zip(self.optimizers, state):
            optimizer.load_state_dict(saved)
            for param, moments in optimizer.state.items():
                if any(value.shape != param.shape for name, value in moments.items() if name != "step"):
                    raise ValueError("the saved Adam moments do not fit the model's parameters")
