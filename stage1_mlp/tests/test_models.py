"""The hand-written model against torch: outputs, every gradient, and the optimizer, to a tolerance."""
import pytest
import torch
import torch.nn.functional as F

from stage1_mlp.models.config import MLPConfig
from stage1_mlp.models.mlp_scratch import ScratchAdam, ScratchMLP, softmax_cross_entropy
from stage1_mlp.models.mlp_torch import SparseDenseAdam, TorchMLP
from stage1_mlp.train import train_step

torch.set_default_dtype(torch.float32)


def make_batch(num_features: int, batch: int, seed: int = 0, empty_bag: bool = False):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, 12, (batch,), generator=g)
    if empty_bag:
        lengths[1] = 0
    ids = torch.randint(0, num_features, (int(lengths.sum()),), generator=g)  # repeats across bags on purpose
    offsets = torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)[:-1]])
    labels = torch.randint(0, 3, (batch,), generator=g)
    return ids, offsets, labels


def twin_models(config: MLPConfig, dtype=torch.float64):
    torch.manual_seed(0)
    reference = TorchMLP(config).to(dtype)
    scratch = ScratchMLP(config)
    scratch.load_state_dict({k: v.detach().clone() for k, v in reference.state_dict().items()})
    return reference, scratch


CONFIG = MLPConfig(num_features=50, num_classes=3, embed_dim=8, hidden_dim=6, dropout=0.0)


def test_cross_entropy_and_its_gradient_match_autograd():
    logits = torch.randn(7, 4, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, 4, (7,))
    loss, dlogits = softmax_cross_entropy(logits.detach() * 1, labels)
    reference = F.cross_entropy(logits, labels)
    reference.backward()
    torch.testing.assert_close(loss, reference.detach())
    torch.testing.assert_close(dlogits, logits.grad)
    # huge logits: the max-shift keeps it finite
    big_loss, _ = softmax_cross_entropy(torch.tensor([[1000.0, -1000.0]]), torch.tensor([1]))
    assert torch.isfinite(big_loss) and big_loss.item() == pytest.approx(2000.0)


@pytest.mark.parametrize("empty_bag", [False, True])
def test_forward_matches_embedding_bag_mlp(empty_bag):
    reference, scratch = twin_models(CONFIG)
    ids, offsets, _ = make_batch(CONFIG.num_features, 5, empty_bag=empty_bag)
    reference.eval()
    scratch.eval()
    torch.testing.assert_close(scratch(ids, offsets), reference(ids, offsets))


@pytest.mark.parametrize("dropout", [0.0, 0.5])
def test_every_gradient_matches_autograd(dropout):
    config = MLPConfig(**{**CONFIG.to_dict(), "dropout": dropout})
    reference, scratch = twin_models(config)
    ids, offsets, labels = make_batch(config.num_features, 6, seed=1, empty_bag=True)
    logits, cache = scratch.forward(ids, offsets)  # training mode: draws a dropout mask

    # autograd through the torch modules, with the very same dropout mask
    h = reference.embedding(ids, offsets)
    z = F.relu(reference.fc1(h)) * cache.mask
    ref_logits = reference.fc2(z)
    ref_loss = F.cross_entropy(ref_logits, labels)
    ref_loss.backward()

    loss, dlogits = softmax_cross_entropy(logits, labels)
    grads = scratch.backward(dlogits, cache)
    torch.testing.assert_close(loss, ref_loss.detach())
    for name, param in reference.named_parameters():
        if name == "embedding.weight":
            rows, values = grads[name]
            dense = torch.zeros_like(param).index_add_(0, rows, values)
            assert set(rows.tolist()) == set(ids.tolist())  # only the rows the batch used
            torch.testing.assert_close(dense, param.grad.to_dense())
        else:
            torch.testing.assert_close(grads[name], param.grad, msg=name)


def test_scratch_adam_matches_torch_adam_and_sparse_adam_over_steps():
    reference, scratch = twin_models(CONFIG)
    start = scratch.params["embedding.weight"].clone()
    reference.train(False)
    optimizer = SparseDenseAdam(reference, lr=0.01)
    adam = ScratchAdam(scratch.params, lr=0.01)
    scratch.eval()
    for step in range(5):
        ids, offsets, labels = make_batch(CONFIG.num_features, 4, seed=10 + step)
        train_step("torch", reference, optimizer, ids, offsets, labels)
        train_step("scratch", scratch, adam, ids, offsets, labels)
    for name, value in reference.state_dict().items():
        torch.testing.assert_close(scratch.params[name], value, msg=name)
    # the lazy update leaves never-used rows exactly where they started
    used = torch.cat([make_batch(CONFIG.num_features, 4, seed=10 + step)[0] for step in range(5)]).unique()
    unused = torch.ones(CONFIG.num_features, dtype=torch.bool)
    unused[used] = False
    assert unused.any() and torch.equal(scratch.params["embedding.weight"][unused], start[unused])
    assert adam.t == 5


def test_training_mode_dropout_scales_kept_units():
    config = MLPConfig(**{**CONFIG.to_dict(), "dropout": 0.5})
    scratch = ScratchMLP(config, torch.Generator().manual_seed(0))
    ids, offsets, _ = make_batch(config.num_features, 64)
    _, cache = scratch.forward(ids, offsets)
    assert set(cache.mask.unique().tolist()) <= {0.0, 2.0}
    assert 0.3 < (cache.mask > 0).float().mean() < 0.7
    scratch.eval()
    _, cache = scratch.forward(ids, offsets)
    assert torch.all(cache.mask == 1)


def test_both_implementations_learn_a_separable_toy_task():
    """Words 0-9 mean class 0, words 10-19 class 1: a few steps of either should get it right."""
    config = MLPConfig(num_features=20, num_classes=2, embed_dim=8, hidden_dim=8, dropout=0.0)
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 2, (64,), generator=g)
    ids = (torch.randint(0, 10, (64, 5), generator=g) + 10 * labels[:, None]).flatten()
    offsets = torch.arange(0, 64 * 5, 5)
    torch.manual_seed(0)
    reference = TorchMLP(config)
    optimizer = SparseDenseAdam(reference, lr=0.05)
    scratch = ScratchMLP(config)
    adam = ScratchAdam(scratch.params, lr=0.05)
    for _ in range(30):
        train_step("torch", reference, optimizer, ids, offsets, labels)
        train_step("scratch", scratch, adam, ids, offsets, labels)
    assert (reference(ids, offsets).argmax(1) == labels).all()
    assert (scratch(ids, offsets).argmax(1) == labels).all()
