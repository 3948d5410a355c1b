"""The bag-of-n-grams MLP from scratch: forward, backward and Adam written out, no autograd.

Every gradient below is derived in docs/stage1_mlp.md (section "反向传播"), equation by equation;
the tests check each one against autograd, and `ScratchAdam` against `torch.optim.Adam` / `SparseAdam`.
Tensors are plain torch tensors used as fast arrays: nothing here has `requires_grad`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from stage1_mlp.models.config import EMBED_INIT, MLPConfig

Grads = dict[str, torch.Tensor | tuple[torch.Tensor, torch.Tensor]]


def softmax_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean cross-entropy of softmax(logits) and its gradient with respect to the logits.

        p = softmax(logits)                    (subtract the row max first: same p, no overflow)
        L = -(1/B) * sum_i log p[i, y_i]
        dL/dlogits = (p - onehot(y)) / B
    """
    shifted = logits - logits.max(dim=1, keepdim=True).values        # (B, C)
    log_probs = shifted - shifted.exp().sum(dim=1, keepdim=True).log()
    batch = logits.shape[0]
    loss = -log_probs[torch.arange(batch), labels].mean()
    dlogits = log_probs.exp()
    dlogits[torch.arange(batch), labels] -= 1.0
    return loss, dlogits / batch


@dataclass
class ForwardCache:
    """What the backward pass needs from the forward pass."""

    ids: torch.Tensor      # (N,) feature ids of the whole batch
    bag: torch.Tensor      # (N,) which document each id belongs to
    lengths: torch.Tensor  # (B,) features per document (at least 1, to divide by)
    h: torch.Tensor        # (B, D) mean embedding
    a: torch.Tensor        # (B, H) pre-activation of the hidden layer
    mask: torch.Tensor     # (B, H) dropout mask, already scaled by 1/(1-p)
    z: torch.Tensor        # (B, H) hidden layer after ReLU and dropout


class ScratchMLP:
    """Same model as `TorchMLP`, with the backward pass written by hand.

        h      = (1/|d|) * sum_{g in d} E[g]        embedding_bag_mean
        a      = h W1^T + b1                         (B, H)
        z      = relu(a) * m,  m ~ Bernoulli(1-p)/(1-p) while training
        logits = z W2^T + b2                         (B, C)
    """

    def __init__(self, config: MLPConfig, generator: torch.Generator | None = None):
        self.config = config
        self.training = True
        self.params = self.init_params(config, generator)

    @staticmethod
    def init_params(config: MLPConfig, generator: torch.Generator | None) -> dict[str, torch.Tensor]:
        """The same distributions as `TorchMLP`: U(-0.1, 0.1) for the table, U(+-1/sqrt(fan_in)) for layers."""
        def uniform(shape: tuple[int, ...], bound: float) -> torch.Tensor:
            return (torch.rand(shape, generator=generator) * 2 - 1) * bound

        d, hdim, c = config.embed_dim, config.hidden_dim, config.num_classes
        return {
            "embedding.weight": uniform((config.num_features, d), EMBED_INIT),
            "fc1.weight": uniform((hdim, d), 1 / math.sqrt(d)),
            "fc1.bias": uniform((hdim,), 1 / math.sqrt(d)),
            "fc2.weight": uniform((c, hdim), 1 / math.sqrt(hdim)),
            "fc2.bias": uniform((c,), 1 / math.sqrt(hdim)),
        }

    # -- nn.Module-like conveniences, so train.py treats both implementations alike
    def train(self, mode: bool = True) -> "ScratchMLP":
        self.training = mode
        return self

    def eval(self) -> "ScratchMLP":
        return self.train(False)

    def to(self, device: torch.device) -> "ScratchMLP":
        self.params = {k: v.to(device) for k, v in self.params.items()}
        return self

    def state_dict(self) -> dict[str, torch.Tensor]:
        return dict(self.params)

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        if set(state) != set(self.params):
            raise KeyError(f"parameters {sorted(state)} do not match {sorted(self.params)}")
        for name, value in state.items():
            if self.params[name].shape != value.shape:
                raise KeyError(f"parameter {name} has shape {tuple(value.shape)}, "
                               f"expected {tuple(self.params[name].shape)}")
            self.params[name] = value.to(self.params[name].device).clone()

    def parameters(self) -> list[torch.Tensor]:
        return list(self.params.values())

    def __call__(self, ids: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        return self.forward(ids, offsets)[0]

    # -- the maths
    def forward(self, ids: torch.Tensor, offsets: torch.Tensor,
                mask: torch.Tensor | None = None) -> tuple[torch.Tensor, ForwardCache]:
        """Logits (B, C) and the cache for `backward`. `offsets` are bag starts, as for `nn.EmbeddingBag`."""
        p = self.params
        batch = offsets.shape[0]
        ends = torch.cat([offsets[1:], offsets.new_tensor([ids.shape[0]])])
        counts = ends - offsets                                           # (B,)
        bag = torch.repeat_interleave(torch.arange(batch, device=ids.device), counts)  # (N,)
        lengths = counts.clamp(min=1).to(p["fc1.weight"].dtype)           # empty bag -> zero vector
        summed = torch.zeros(batch, self.config.embed_dim, dtype=lengths.dtype, device=ids.device)
        summed.index_add_(0, bag, p["embedding.weight"][ids])             # (B, D)
        h = summed / lengths[:, None]                                     # (B, D)
        a = h @ p["fc1.weight"].T + p["fc1.bias"]                         # (B, H)
        if mask is None:
            keep = 1.0 - self.config.dropout
            if self.training and self.config.dropout > 0:
                mask = (torch.rand_like(a) < keep).to(a.dtype) / keep
            else:
                mask = torch.ones_like(a)
        z = a.clamp(min=0) * mask                                         # (B, H)
        logits = z @ p["fc2.weight"].T + p["fc2.bias"]                    # (B, C)
        return logits, ForwardCache(ids, bag, lengths, h, a, mask, z)

    def backward(self, dlogits: torch.Tensor, cache: ForwardCache) -> Grads:
        """Gradients of the loss for every parameter, given dL/dlogits (B, C).

        The embedding gradient is returned sparse, as (rows, values): only rows the batch used.
        """
        p = self.params
        grads: Grads = {
            "fc2.weight": dlogits.T @ cache.z,                            # (C, H)
            "fc2.bias": dlogits.sum(0),                                   # (C,)
        }
        dz = dlogits @ p["fc2.weight"]                                    # (B, H)
        da = dz * cache.mask * (cache.a > 0)                              # through dropout and ReLU
        grads["fc1.weight"] = da.T @ cache.h                              # (H, D)
        grads["fc1.bias"] = da.sum(0)                                     # (H,)
        dh = da @ p["fc1.weight"]                                         # (B, D)
        # each feature of document b receives dh[b] / |d_b|; a row used twice sums its two shares
        per_feature = (dh / cache.lengths[:, None])[cache.bag]            # (N, D)
        rows, inverse = torch.unique(cache.ids, return_inverse=True)
        values = torch.zeros(rows.shape[0], dh.shape[1], dtype=dh.dtype, device=dh.device)
        values.index_add_(0, inverse, per_feature)                        # (R, D)
        grads["embedding.weight"] = (rows, values)
        return grads


class ScratchAdam:
    """Adam (Kingma & Ba, 2015), written out; the same numbers as `torch.optim.Adam`.

        m = b1 m + (1-b1) g            v = b2 v + (1-b2) g^2
        theta -= lr/(1-b1^t) * m / (sqrt(v)/sqrt(1-b2^t) + eps)

    A sparse gradient `(rows, values)` gets the *lazy* update of `torch.optim.SparseAdam`: only the
    given rows' moments and weights change, with eps added before the bias correction:

        theta[r] -= lr * sqrt(1-b2^t)/(1-b1^t) * m[r] / (sqrt(v[r]) + eps)

    Without it, every step would touch all ~2 million rows of the embedding table.
    """

    def __init__(self, params: dict[str, torch.Tensor], lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        self.params = params
        self.lr, self.betas, self.eps = lr, betas, eps
        self.t = 0
        self.m = {k: torch.zeros_like(v) for k, v in params.items()}
        self.v = {k: torch.zeros_like(v) for k, v in params.items()}

    def step(self, grads: Grads) -> None:
        b1, b2 = self.betas
        self.t += 1
        bc1, bc2 = 1 - b1 ** self.t, 1 - b2 ** self.t
        for name, grad in grads.items():
            param, m, v = self.params[name], self.m[name], self.v[name]
            if isinstance(grad, tuple):  # sparse rows: lazy update
                rows, values = grad
                m_rows = m[rows].mul_(b1).add_(values, alpha=1 - b1)
                v_rows = v[rows].mul_(b2).addcmul_(values, values, value=1 - b2)
                m[rows], v[rows] = m_rows, v_rows
                step_size = self.lr * math.sqrt(bc2) / bc1
                param.index_add_(0, rows, m_rows / (v_rows.sqrt() + self.eps), alpha=-step_size)
            else:
                m.mul_(b1).add_(grad, alpha=1 - b1)
                v.mul_(b2).addcmul_(grad, grad, value=1 - b2)
                denom = v.sqrt() / math.sqrt(bc2) + self.eps
                param.addcdiv_(m, denom, value=-self.lr / bc1)

    def state_dict(self) -> dict:
        return {"t": self.t, "m": self.m, "v": self.v, "lr": self.lr, "betas": list(self.betas), "eps": self.eps}

    def load_state_dict(self, state: dict) -> None:
        """Restore a saved run exactly (moments on the parameters' device, and its lr/betas/eps). Moments that do
        not fit the parameters (an edited or foreign checkpoint) are a ValueError here, not a failure steps later."""
        for key in ("m", "v"):
            saved = state[key]
            if set(saved) != set(self.params) or any(saved[k].shape != p.shape for k, p in self.params.items()):
                raise ValueError(f"the saved Adam moments '{key}' do not fit the model's parameters")
        self.t = int(state["t"])
        self.lr, self.betas, self.eps = float(state["lr"]), tuple(state["betas"]), float(state["eps"])
        self.m = {k: t.to(self.params[k].device).clone() for k, t in state["m"].items()}
        self.v = {k: t.to(self.params[k].device).clone() for k, t in state["v"].items()}
