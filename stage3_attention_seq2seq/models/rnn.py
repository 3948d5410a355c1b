"""The recurrent parts written from tensor operations: a GRU cell and a (bidirectional) GRU layer over
padded batches.

The cell holds the same four tensors as `nn.GRUCell` (gates stacked in PyTorch's order r, z, n), so
weights copy across unchanged; the tests check outputs and gradients against `nn.GRUCell` and against
`nn.GRU` run on a packed sequence.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn


class GRUCell(nn.Module):
    """Gated recurrent unit (Cho et al. 2014), PyTorch's formulation:

        r  = sigma(W_ir x + b_ir + W_hr h + b_hr)           reset gate
        z  = sigma(W_iz x + b_iz + W_hz h + b_hz)           update gate
        n  = tanh (W_in x + b_in + r * (W_hn h + b_hn))     candidate state
        h' = (1 - z) * n + z * h
    """

    def __init__(self, input_size: int, hidden_size: int):
        super().__init__()
        self.input_size, self.hidden_size = input_size, hidden_size
        self.weight_ih = nn.Parameter(torch.empty(3 * hidden_size, input_size))
        self.weight_hh = nn.Parameter(torch.empty(3 * hidden_size, hidden_size))
        self.bias_ih = nn.Parameter(torch.empty(3 * hidden_size))
        self.bias_hh = nn.Parameter(torch.empty(3 * hidden_size))
        bound = 1.0 / math.sqrt(hidden_size)   # PyTorch's init for recurrent weights
        for weight in self.parameters():
            nn.init.uniform_(weight, -bound, bound)

    def project_input(self, x: torch.Tensor) -> torch.Tensor:
        """x W_ih^T + b_ih for any leading shape; it does not depend on h, so a layer does it for all steps at once."""
        return x @ self.weight_ih.T + self.bias_ih                              # (..., 3H)

    def step(self, x_proj: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """One step from the projected input (B, 3H) and the previous state (B, H)."""
        h_proj = h @ self.weight_hh.T + self.bias_hh                            # (B, 3H): one matmul for 3 gates
        x_r, x_z, x_n = x_proj.chunk(3, dim=-1)
        h_r, h_z, h_n = h_proj.chunk(3, dim=-1)
        r = torch.sigmoid(x_r + h_r)
        z = torch.sigmoid(x_z + h_z)
        n = torch.tanh(x_n + r * h_n)
        return (1 - z) * n + z * h                                              # (B, H)

    def forward(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """Like nn.GRUCell: raw input (B, I), state (B, H) -> new state (B, H)."""
        return self.step(self.project_input(x), h)


class GRULayer(nn.Module):
    """One GRU layer over a padded batch, optionally bidirectional.

    The backward direction must start at each sentence's own last word, not at the padding. Rather
    than reversing every sentence, the state is only updated where the mask is True:
    h_t = mask_t ? step(x_t, h_{t-1}) : h_{t-1}. Walking backwards, the pads come first and leave the
    zero state alone; walking forwards, the state stops changing after the last word, so the final
    state is that of the last real token, exactly what `nn.GRU` gives on a packed sequence.
    """

    def __init__(self, input_size: int, hidden_size: int, bidirectional: bool = True):
        super().__init__()
        self.hidden_size = hidden_size
        self.forward_cell = GRUCell(input_size, hidden_size)
        self.backward_cell = GRUCell(input_size, hidden_size) if bidirectional else None

    def _run(self, cell: GRUCell, x: torch.Tensor, mask: torch.Tensor,
             reverse: bool) -> tuple[torch.Tensor, torch.Tensor]:
        batch, steps, _ = x.shape
        x_proj = cell.project_input(x)                                          # (B, S, 3H): all steps in one matmul
        h = x.new_zeros(batch, self.hidden_size)
        outputs = [h] * steps
        time_steps = range(steps - 1, -1, -1) if reverse else range(steps)
        x_steps, m_steps = x_proj.unbind(1), mask.unsqueeze(-1).unbind(1)
        for t in time_steps:
            h = torch.where(m_steps[t], cell.step(x_steps[t], h), h)          # (B, H), frozen on padding
            outputs[t] = h
        return torch.stack(outputs, dim=1), h                                   # (B, S, H), (B, H)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, S, I), mask (B, S) -> outputs (B, S, D*H), final states (D, B, H) as nn.GRU orders them."""
        out_f, h_f = self._run(self.forward_cell, x, mask, reverse=False)
        if self.backward_cell is None:
            return out_f, h_f.unsqueeze(0)
        out_b, h_b = self._run(self.backward_cell, x, mask, reverse=True)
        return torch.cat([out_f, out_b], dim=-1), torch.stack([h_f, h_b])

    @torch.no_grad()
    def load_from_torch(self, gru: nn.GRU, layer: int = 0) -> None:
        """Copy one layer of an nn.GRU (weight_ih_l0, ..._reverse) into this one."""
        for cell, suffix in ((self.forward_cell, ""), (self.backward_cell, "_reverse")):
            if cell is None:
                continue
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                getattr(cell, name).copy_(getattr(gru, f"{name}_l{layer}{suffix}"))
