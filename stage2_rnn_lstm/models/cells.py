"""Recurrent cells from tensor operations, and a multi-layer stack of them.

Each cell holds the same four tensors as its PyTorch twin (`nn.RNNCell`, `nn.LSTMCell`, `nn.GRUCell`),
with the gates stacked in PyTorch's order, so weights copy across unchanged (see `load_from_torch`).

Speed: the input half of every gate, x_t W_ih^T + b_ih, does not depend on the previous step, so
`ScratchRecurrent` computes it for all time steps in one large matrix product ("fused gate matmul")
and only h_{t-1} W_hh^T is left inside the time loop: one matrix product per step for all gates.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn

State = torch.Tensor | tuple[torch.Tensor, torch.Tensor]


class _Cell(nn.Module):
    """Shared parameters: weight_ih (G*H, I), weight_hh (G*H, H), bias_ih, bias_hh (G*H,)."""

    gates = 1

    def __init__(self, input_size: int, hidden_size: int):
        super().__init__()
        self.input_size, self.hidden_size = input_size, hidden_size
        size = self.gates * hidden_size
        self.weight_ih = nn.Parameter(torch.empty(size, input_size))
        self.weight_hh = nn.Parameter(torch.empty(size, hidden_size))
        self.bias_ih = nn.Parameter(torch.empty(size))
        self.bias_hh = nn.Parameter(torch.empty(size))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """U(-1/sqrt(H), 1/sqrt(H)) for every tensor, as PyTorch's recurrent modules do."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        for weight in self.parameters():
            nn.init.uniform_(weight, -bound, bound)

    def project_input(self, x: torch.Tensor) -> torch.Tensor:
        """x W_ih^T + b_ih for any leading shape: (..., I) -> (..., G*H)."""
        return x @ self.weight_ih.T + self.bias_ih

    def forward(self, x: torch.Tensor, state: State) -> State:
        """One step from the raw input x (B, I), like nn.*Cell."""
        return self.step(self.project_input(x), state)

    def step(self, x_proj: torch.Tensor, state: State) -> State:
        raise NotImplementedError


class RNNCell(_Cell):
    """Elman RNN:  h_t = tanh(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh)."""

    gates = 1

    def step(self, x_proj: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x_proj + h @ self.weight_hh.T + self.bias_hh)          # (B, H)


class LSTMCell(_Cell):
    """LSTM (Hochreiter & Schmidhuber 1997, with a forget gate), gates in PyTorch's order i, f, g, o:

        i = sigma(W_ii x + b_ii + W_hi h + b_hi)      input gate
        f = sigma(W_if x + b_if + W_hf h + b_hf)      forget gate
        g = tanh (W_ig x + b_ig + W_hg h + b_hg)      candidate cell
        o = sigma(W_io x + b_io + W_ho h + b_ho)      output gate
        c' = f * c + i * g                            the cell: an additive path through time
        h' = o * tanh(c')
    """

    gates = 4

    def step(self, x_proj: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        h, c = state
        gates = x_proj + h @ self.weight_hh.T + self.bias_hh                     # (B, 4H), one matmul
        i, f, g, o = gates.chunk(4, dim=1)                                       # each (B, H)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        return h, c


class GRUCell(_Cell):
    """GRU (Cho et al. 2014), gates in PyTorch's order r, z, n:

        r = sigma(W_ir x + b_ir + W_hr h + b_hr)      reset gate
        z = sigma(W_iz x + b_iz + W_hz h + b_hz)      update gate
        n = tanh (W_in x + b_in + r * (W_hn h + b_hn))  candidate
        h' = (1 - z) * n + z * h
    """

    gates = 3

    def step(self, x_proj: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        x_r, x_z, x_n = x_proj.chunk(3, dim=1)                                   # each (B, H)
        h_r, h_z, h_n = (h @ self.weight_hh.T + self.bias_hh).chunk(3, dim=1)    # one matmul for all gates
        r = torch.sigmoid(x_r + h_r)
        z = torch.sigmoid(x_z + h_z)
        n = torch.tanh(x_n + r * h_n)
        return (1 - z) * n + z * h


CELLS = {"rnn": RNNCell, "lstm": LSTMCell, "gru": GRUCell}


class ScratchRecurrent(nn.Module):
    """A stack of cells unrolled over time; the same interface as nn.RNN/nn.LSTM/nn.GRU(batch_first=True).

    forward(x (B, T, I), state) -> (outputs of the top layer (B, T, H), final state)
    state: h (L, B, H) for rnn/gru, (h, c) for lstm. Dropout is applied between layers, not after the last.
    """

    def __init__(self, mode: str, input_size: int, hidden_size: int, num_layers: int = 1, dropout: float = 0.0):
        super().__init__()
        self.mode, self.hidden_size, self.num_layers = mode, hidden_size, num_layers
        cell = CELLS[mode]
        self.cells = nn.ModuleList(cell(input_size if k == 0 else hidden_size, hidden_size) for k in range(num_layers))
        self.dropout = nn.Dropout(dropout)

    def init_state(self, batch: int, device: torch.device | None = None, dtype: torch.dtype | None = None) -> State:
        zeros = torch.zeros(self.num_layers, batch, self.hidden_size, device=device, dtype=dtype)
        return (zeros, zeros.clone()) if self.mode == "lstm" else zeros

    def forward(self, x: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        if state is None:
            state = self.init_state(x.shape[0], x.device, x.dtype)
        finals = []
        for k, cell in enumerate(self.cells):
            layer_state = (state[0][k], state[1][k]) if self.mode == "lstm" else state[k]
            x_proj = cell.project_input(x)                        # (B, T, G*H): every step at once
            outputs = []
            # unbind (not x_proj[:, t]) so the backward pass stacks the step gradients once
            for x_t in x_proj.unbind(dim=1):
                layer_state = cell.step(x_t, layer_state)
                outputs.append(layer_state[0] if self.mode == "lstm" else layer_state)
            x = torch.stack(outputs, dim=1)                        # (B, T, H)
            if k < self.num_layers - 1:
                x = self.dropout(x)
            finals.append(layer_state)
        if self.mode == "lstm":
            return x, (torch.stack([h for h, _ in finals]), torch.stack([c for _, c in finals]))
        return x, torch.stack(finals)

    def load_from_torch(self, module: nn.RNNBase) -> None:
        """Copy the weights of nn.RNN/nn.LSTM/nn.GRU (weight_ih_l{k}, ...) into the cells."""
        with torch.no_grad():
            for k, cell in enumerate(self.cells):
                for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                    getattr(cell, name).copy_(getattr(module, f"{name}_l{k}"))


def detach_state(state: State) -> State:
    """Cut the graph between batches (truncated BPTT) but keep the values."""
    return tuple(s.detach() for s in state) if isinstance(state, tuple) else state.detach()
