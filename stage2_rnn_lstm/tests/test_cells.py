"""The scratch cells and stacks against nn.RNN/nn.LSTM/nn.GRU with copied weights: outputs, states, gradients."""
import pytest
import torch
import torch.nn as nn

from stage2_rnn_lstm.models.cells import CELLS, ScratchRecurrent, detach_state

TORCH_CELLS = {"rnn": nn.RNNCell, "lstm": nn.LSTMCell, "gru": nn.GRUCell}
TORCH_STACKS = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}


def random_state(mode, layers, batch, hidden, generator):
    h = torch.randn(layers, batch, hidden, generator=generator, dtype=torch.float64)
    if mode == "lstm":
        return h, torch.randn(layers, batch, hidden, generator=generator, dtype=torch.float64)
    return h


@pytest.mark.parametrize("mode", ["rnn", "lstm", "gru"])
def test_single_cell_matches_torch_cell(mode):
    torch.manual_seed(0)
    ours, theirs = CELLS[mode](5, 7).double(), TORCH_CELLS[mode](5, 7).double()
    ours.load_state_dict(theirs.state_dict())  # same parameter names and gate order
    x = torch.randn(3, 5, dtype=torch.float64)
    state = (torch.randn(3, 7, dtype=torch.float64), torch.randn(3, 7, dtype=torch.float64)) if mode == "lstm" \
        else torch.randn(3, 7, dtype=torch.float64)
    mine, ref = ours(x, state), theirs(x, state)
    if mode == "lstm":
        for a, b in zip(mine, ref):
            torch.testing.assert_close(a, b)
    else:
        torch.testing.assert_close(mine, ref)


@pytest.mark.parametrize("mode", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("layers, batch, steps", [(1, 1, 1), (2, 3, 7), (3, 4, 12)])
def test_stack_matches_torch_outputs_states_and_gradients(mode, layers, batch, steps):
    g = torch.Generator().manual_seed(layers * 100 + steps)
    torch.manual_seed(1)
    reference = TORCH_STACKS[mode](6, 8, layers, batch_first=True).double()
    ours = ScratchRecurrent(mode, 6, 8, layers).double()
    ours.load_from_torch(reference)
    x = torch.randn(batch, steps, 6, generator=g, dtype=torch.float64, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_(True)
    state = random_state(mode, layers, batch, 8, g)

    out, final = ours(x, state)
    out_ref, final_ref = reference(x_ref, state)
    torch.testing.assert_close(out, out_ref)
    for a, b in zip(final if mode == "lstm" else [final], final_ref if mode == "lstm" else [final_ref]):
        torch.testing.assert_close(a, b)

    # gradients of a loss that uses every output and the final state
    weights = torch.randn(out.shape, generator=g, dtype=torch.float64)
    def loss_of(output, fin):
        h = fin[0] if mode == "lstm" else fin
        return (output * weights).sum() + h.pow(2).sum()
    loss_of(out, final).backward()
    loss_of(out_ref, final_ref).backward()
    torch.testing.assert_close(x.grad, x_ref.grad)
    for k, cell in enumerate(ours.cells):
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            torch.testing.assert_close(getattr(cell, name).grad, getattr(reference, f"{name}_l{k}").grad,
                                       msg=f"{mode} layer {k} {name}")


def test_zero_initial_state_and_detach():
    stack = ScratchRecurrent("lstm", 4, 5, 2)
    out, (h, c) = stack(torch.randn(2, 3, 4))
    assert out.shape == (2, 3, 5) and h.shape == c.shape == (2, 2, 5)
    assert all(not t.requires_grad for t in detach_state((h, c)))
    torch.testing.assert_close(out[:, -1], h[-1])  # the top layer's last output is its final hidden state


def test_dropout_between_layers_only_in_training():
    stack = ScratchRecurrent("gru", 4, 5, 2, dropout=0.5)
    x = torch.randn(2, 6, 4)
    stack.eval()
    torch.testing.assert_close(stack(x)[0], stack(x)[0])
    stack.train()
    torch.manual_seed(0)
    first = stack(x)[0]
    torch.manual_seed(1)
    assert not torch.allclose(first, stack(x)[0])
