"""LoRA: no change at the start, merged equals unmerged, gradients only where they should be, a small budget."""
import pytest
import torch
import torch.nn as nn

from stage5_gpt.models.gpt import GPT, GPTConfig
from stage5_gpt.models.lora import LoRALinear, add_lora, merge_lora, trainable_fraction


def small_gpt() -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=60, block_size=16, n_layer=2, n_head=4, n_embd=32, dropout=0.0)).eval()


def test_a_fresh_adapter_changes_nothing_and_matches_its_equation():
    torch.manual_seed(1)
    base = nn.Linear(8, 5)
    layer = LoRALinear(base, rank=2, alpha=4.0)
    x = torch.randn(3, 8)
    torch.testing.assert_close(layer(x), base(x))          # B = 0 at the start
    with torch.no_grad():
        layer.lora_B.normal_()
    expected = x @ base.weight.t() + base.bias + 2.0 * (x @ layer.lora_A.t() @ layer.lora_B.t())
    torch.testing.assert_close(layer(x), expected)


def test_merged_and_unmerged_models_give_the_same_logits():
    model = small_gpt()
    idx = torch.randint(0, 60, (2, 16))
    before, _ = model(idx)
    names = add_lora(model, rank=4, alpha=8.0)
    assert sorted(n.split(".")[-1] for n in names) == ["c_attn", "c_attn", "c_proj", "c_proj", "c_proj", "c_proj"]
    torch.testing.assert_close(model(idx)[0], before)       # still the pretrained model
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, LoRALinear):
                module.lora_B.normal_(std=0.05)
    unmerged, _ = model(idx)
    assert not torch.allclose(unmerged, before, atol=1e-3)
    assert merge_lora(model) == 6
    assert not any(isinstance(m, LoRALinear) for m in model.modules())
    torch.testing.assert_close(model(idx)[0], unmerged, atol=1e-5, rtol=1e-4)
    assert set(model.state_dict()) == set(small_gpt().state_dict())   # loads like any GPT checkpoint


def test_only_the_adapters_learn():
    model = small_gpt()
    add_lora(model, rank=2, alpha=2.0, targets=("c_attn",))
    idx = torch.randint(0, 60, (2, 16))
    _, loss = model(idx, idx)
    loss.backward()
    for name, param in model.named_parameters():
        if "lora_" in name:
            assert param.requires_grad and (param.grad is not None)
        else:
            assert not param.requires_grad and param.grad is None, name
    a = next(m for m in model.modules() if isinstance(m, LoRALinear))
    assert a.lora_B.grad.abs().sum() > 0                     # A is random, so B gets a gradient at once


def test_lora_trains_under_two_percent_of_a_gpt_mini():
    model = GPT(GPTConfig(vocab_size=8192, block_size=512, n_layer=6, n_head=6, n_embd=384))   # the GPU base's shape
    add_lora(model, rank=8, alpha=16.0)
    trainable, total = trainable_fraction(model)
    # per block, r * (in + out) for attn.c_attn (384 -> 1152), attn.c_proj (384 -> 384), mlp.c_proj (1536 -> 384)
    assert trainable == 6 * 8 * ((384 + 3 * 384) + (384 + 384) + (4 * 384 + 384))
    assert trainable / total < 0.02


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="rank"):
        LoRALinear(nn.Linear(4, 4), rank=0, alpha=1.0)
    with pytest.raises(ValueError, match="no nn.Linear named"):
        add_lora(small_gpt(), rank=2, alpha=2.0, targets=("q_proj",))
