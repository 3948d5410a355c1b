"""GPT-mini against PyTorch's built-ins and GPT-2 (transformers), and its KV cache against no cache."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from stage5_gpt.models.gpt import GPT, Block, CausalSelfAttention, GPTConfig, load_hf_gpt2_state, sample_next


def small_config(**kw) -> GPTConfig:
    base = dict(vocab_size=50, block_size=16, n_layer=2, n_head=4, n_embd=32, dropout=0.0)
    return GPTConfig(**{**base, **kw})


def causal(T: int) -> torch.Tensor:
    return torch.triu(torch.full((T, T), float("-inf")), diagonal=1)


def test_attention_matches_nn_multihead_attention():
    torch.manual_seed(0)
    config = small_config()
    ours = CausalSelfAttention(config)
    theirs = nn.MultiheadAttention(config.n_embd, config.n_head, batch_first=True)
    with torch.no_grad():
        theirs.in_proj_weight.copy_(ours.c_attn.weight)     # both stack W_q, W_k, W_v as (3d, d)
        theirs.in_proj_bias.copy_(ours.c_attn.bias)
        theirs.out_proj.weight.copy_(ours.c_proj.weight)
        theirs.out_proj.bias.copy_(ours.c_proj.bias)
    x = torch.randn(3, 10, config.n_embd, requires_grad=True)
    for impl in ("manual", "sdpa"):
        ours.attention = impl
        y_ours = ours(x)
        y_theirs, _ = theirs(x, x, x, attn_mask=causal(10), need_weights=False)
        torch.testing.assert_close(y_ours, y_theirs, atol=1e-5, rtol=1e-4)
        g_ours, = torch.autograd.grad(y_ours.square().sum(), x)
        g_theirs, = torch.autograd.grad(y_theirs.square().sum(), x)
        torch.testing.assert_close(g_ours, g_theirs, atol=1e-5, rtol=1e-4)


def test_block_matches_pre_ln_transformer_encoder_layer():
    torch.manual_seed(1)
    config = small_config()
    ours = Block(config)
    theirs = nn.TransformerEncoderLayer(config.n_embd, config.n_head, 4 * config.n_embd, dropout=0.0,
                                        activation=lambda z: F.gelu(z, approximate="tanh"), batch_first=True,
                                        norm_first=True)
    pairs = {"self_attn.in_proj_weight": "attn.c_attn.weight", "self_attn.in_proj_bias": "attn.c_attn.bias",
             "self_attn.out_proj.weight": "attn.c_proj.weight", "self_attn.out_proj.bias": "attn.c_proj.bias",
             "linear1.weight": "mlp.c_fc.weight", "linear1.bias": "mlp.c_fc.bias",
             "linear2.weight": "mlp.c_proj.weight", "linear2.bias": "mlp.c_proj.bias",
             "norm1.weight": "ln_1.weight", "norm1.bias": "ln_1.bias", "norm2.weight": "ln_2.weight",
             "norm2.bias": "ln_2.bias"}
    ours_state = ours.state_dict()
    theirs.load_state_dict({k: ours_state[v] for k, v in pairs.items()})
    x = torch.randn(2, 12, config.n_embd, requires_grad=True)
    y_ours = ours(x)
    y_theirs = theirs(x, src_mask=causal(12), is_causal=True)
    torch.testing.assert_close(y_ours, y_theirs, atol=1e-5, rtol=1e-4)
    g_ours, = torch.autograd.grad(y_ours.sum(), x)
    g_theirs, = torch.autograd.grad(y_theirs.sum(), x)
    torch.testing.assert_close(g_ours, g_theirs, atol=1e-5, rtol=1e-4)


def test_manual_and_sdpa_attention_give_the_same_model():
    torch.manual_seed(2)
    model = GPT(small_config())
    idx = torch.randint(0, 50, (3, 16))
    model.set_attention("manual")
    logits_manual, loss_manual = model(idx, idx)
    grads_manual = torch.autograd.grad(loss_manual, list(model.parameters()))
    model.set_attention("sdpa")
    logits_sdpa, loss_sdpa = model(idx, idx)
    grads_sdpa = torch.autograd.grad(loss_sdpa, list(model.parameters()))
    torch.testing.assert_close(logits_manual, logits_sdpa, atol=1e-5, rtol=1e-4)
    for a, b in zip(grads_manual, grads_sdpa):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_causality_a_later_token_never_changes_earlier_logits():
    torch.manual_seed(3)
    model = GPT(small_config()).eval()
    idx = torch.randint(0, 50, (1, 12))
    changed = idx.clone()
    changed[0, 8] = (idx[0, 8] + 1) % 50
    a, _ = model(idx)
    b, _ = model(changed)
    torch.testing.assert_close(a[:, :8], b[:, :8])
    assert not torch.allclose(a[:, 8:], b[:, 8:])


@pytest.mark.parametrize("impl", ["manual", "sdpa"])
def test_kv_cache_logits_equal_full_forward(impl):
    torch.manual_seed(4)
    model = GPT(small_config(attention=impl)).eval()
    idx = torch.randint(0, 50, (2, 14))
    full, _ = model(idx)
    caches = model.new_caches(2, torch.device("cpu"))
    first, _ = model(idx[:, :5], caches=caches)          # prefill 5 positions at once
    steps = [model(idx[:, t: t + 1], caches=caches)[0] for t in range(5, 9)]
    rest, _ = model(idx[:, 9:], caches=caches)           # several new positions after a filled cache
    torch.testing.assert_close(torch.cat([first, *steps, rest], dim=1), full, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("prompt_len", [3, 20])
def test_greedy_generation_is_the_same_with_and_without_cache(prompt_len):
    """Also past the context (16): both paths slide the window the same way. A 20-token prompt is cut."""
    torch.manual_seed(5)
    model = GPT(small_config()).eval()
    idx = torch.randint(0, 50, (2, prompt_len))
    cached = torch.stack(list(model.generate(idx, 40, temperature=0.0, use_cache=True)), dim=1)
    uncached = torch.stack(list(model.generate(idx, 40, temperature=0.0, use_cache=False)), dim=1)
    assert torch.equal(cached, uncached)


def test_sampling_with_the_same_seed_repeats_and_filters_work():
    torch.manual_seed(6)
    model = GPT(small_config()).eval()
    idx = torch.zeros(1, 1, dtype=torch.long)
    runs = [torch.cat(list(model.generate(idx, 20, 1.0, top_k=5, top_p=0.9,
                                          generator=torch.Generator().manual_seed(7)))) for _ in range(2)]
    assert torch.equal(runs[0], runs[1])
    logits = torch.tensor([[0.0, 3.0, 1.0, 2.0]])
    assert sample_next(logits, 0.0).item() == 1
    assert sample_next(logits, 1.0, top_k=1).item() == 1
    assert sample_next(logits, 1.0, top_p=0.01).item() == 1
    draws = {sample_next(logits, 1.0, top_k=2, generator=torch.Generator().manual_seed(s)).item() for s in range(50)}
    assert draws == {1, 3}


def test_weight_tying_parameter_count_and_flops():
    config = small_config()
    model = GPT(config)
    assert model.lm_head.weight is model.wte.weight
    d, L, V, T = config.n_embd, config.n_layer, config.vocab_size, config.block_size
    per_block = 4 * d * d + 4 * d + 8 * d * d + 5 * d + 4 * d      # attention, MLP, two LayerNorms
    assert model.num_params() == V * d + T * d + L * per_block + 2 * d
    assert model.flops_per_token() == 6 * (model.num_params() - T * d) + 12 * L * d * T


def test_gpt2_weights_from_transformers_give_the_same_logits():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(8)
    hf_config = transformers.GPT2Config(vocab_size=97, n_positions=32, n_embd=48, n_layer=3, n_head=4,
                                        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    hf_model = transformers.GPT2LMHeadModel(hf_config).eval()
    from stage5_gpt.models.gpt import config_from_hf_gpt2

    model = GPT(config_from_hf_gpt2(hf_config.to_dict())).eval()
    load_hf_gpt2_state(model, hf_model.state_dict())
    assert model.num_params() == sum(p.numel() for p in hf_model.parameters())
    idx = torch.randint(0, 97, (2, 32))
    with torch.no_grad():
        expected = hf_model(idx).logits
        for impl in ("manual", "sdpa"):
            model.set_attention(impl)
            torch.testing.assert_close(model(idx)[0], expected, atol=1e-4, rtol=1e-4)
        # greedy continuation through our KV cache agrees with transformers' own generate
        hf_out = hf_model.generate(idx[:1, :5], max_new_tokens=10, do_sample=False, pad_token_id=0)[0, 5:]
    ours = torch.cat(list(model.generate(idx[:1, :5], 10, temperature=0.0)))
    assert torch.equal(ours, hf_out)


def test_after_the_window_slides_the_model_sees_exactly_the_newer_half():
    """Context 16, prompt 3: at 17 tokens the window keeps the last 8, so token 17 is the greedy choice
    for tokens 9..16 alone, fed fresh to the model (with and without the cache)."""
    torch.manual_seed(9)
    model = GPT(small_config()).eval()
    prompt = torch.randint(0, 50, (1, 3))
    for use_cache in (True, False):
        new = torch.stack(list(model.generate(prompt, 20, temperature=0.0, use_cache=use_cache)), dim=1)
        full = torch.cat([prompt, new], dim=1)
        with torch.no_grad():
            assert model(full[:, 9:17])[0][0, -1].argmax() == full[0, 17]
            assert model(full[:, :16])[0][0, -1].argmax() == full[0, 16]   # before the slide: all 16 positions


def test_top_p_keeps_the_smallest_set_reaching_p():
    logits = torch.tensor([[0.0, 3.0, 1.0, 2.0]])       # probabilities 0.03, 0.64, 0.09, 0.24
    draws = {sample_next(logits, 1.0, top_p=0.8, generator=torch.Generator().manual_seed(s)).item() for s in range(60)}
    assert draws == {1, 3}
    draws = {sample_next(logits, 1.0, top_p=0.9, generator=torch.Generator().manual_seed(s)).item() for s in range(80)}
    assert draws == {1, 2, 3}


def test_next_token_probs_is_what_sample_next_draws_from():
    from stage5_gpt.models.gpt import next_token_probs
    logits = torch.tensor([[2.0, 1.0, 0.5, -1.0]])
    assert next_token_probs(logits, 0.0).tolist() == [[1.0, 0.0, 0.0, 0.0]]
    probs = next_token_probs(logits, 1.0, top_k=2)
    assert torch.allclose(probs.sum(-1), torch.ones(1)) and (probs[0, 2:] == 0).all()
    assert torch.allclose(next_token_probs(logits, 1.0), logits.softmax(-1))
    draws = [sample_next(logits, 0.7, top_p=0.9, generator=torch.Generator().manual_seed(s)).item() for s in range(300)]
    allowed = set(next_token_probs(logits, 0.7, top_p=0.9)[0].nonzero().flatten().tolist())
    assert set(draws) <= allowed and len(set(draws)) > 1
