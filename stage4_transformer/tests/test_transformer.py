"""The from-scratch Transformer against PyTorch's modules, with copied weights, padding and causal masks."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from stage4_transformer.models.transformer import (PAD_ID, DecoderLayer, EncoderLayer, MultiHeadAttention,
                                                   Transformer, TransformerConfig, causal_mask, fast_dropout,
                                                   scaled_dot_product_attention, sinusoidal_encoding)

D, H, FF = 16, 4, 32


def padding(lengths: list[int], total: int) -> torch.Tensor:
    """(B, 1, S) key mask, True on real positions."""
    return (torch.arange(total).unsqueeze(0) < torch.tensor(lengths).unsqueeze(1)).unsqueeze(1)


def test_written_out_attention_equals_torch_sdpa_with_masks():
    torch.manual_seed(0)
    q, k, v = torch.randn(2, 3, 5, 8), torch.randn(2, 3, 7, 8), torch.randn(2, 3, 7, 8)
    mask = padding([7, 4], 7).unsqueeze(1)                                        # (B, 1, 1, S)
    ours, weights = scaled_dot_product_attention(q, k, v, mask)
    torch.testing.assert_close(ours, F.scaled_dot_product_attention(q, k, v, attn_mask=mask))
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 3, 5))
    assert torch.all(weights[1, :, :, 4:] == 0)
    causal = causal_mask(5).unsqueeze(0)
    ours, _ = scaled_dot_product_attention(q, q, v[:, :, :5], causal)
    torch.testing.assert_close(ours, F.scaled_dot_product_attention(q, q, v[:, :, :5], is_causal=True))


@pytest.mark.parametrize("use_sdpa", [False, True])
def test_multi_head_attention_matches_nn_multihead_attention(use_sdpa):
    torch.manual_seed(0)
    ours, theirs = MultiHeadAttention(D, H, use_sdpa=use_sdpa), nn.MultiheadAttention(D, H, batch_first=True)
    ours.load_state_dict(theirs.state_dict())
    query, memory = torch.randn(2, 5, D, requires_grad=True), torch.randn(2, 6, D)
    mask = padding([6, 3], 6)
    out, _ = ours(query, memory, mask)
    ref, ref_weights = theirs(query, memory, memory, key_padding_mask=~mask.squeeze(1))
    torch.testing.assert_close(out, ref)
    _, weights = ours(query, memory, mask, need_weights=True)
    torch.testing.assert_close(weights.mean(1), ref_weights)                     # nn averages over heads
    out.sum().backward()
    grads = [p.grad.clone() for p in ours.parameters()]
    ref.sum().backward()
    for grad, param in zip(grads, theirs.parameters()):
        torch.testing.assert_close(grad, param.grad)


@pytest.mark.parametrize("norm_first", [False, True])
def test_encoder_layer_matches_nn_transformer_encoder_layer(norm_first):
    torch.manual_seed(0)
    ours = EncoderLayer(D, H, FF, 0.0, norm_first)
    theirs = nn.TransformerEncoderLayer(D, H, FF, 0.0, batch_first=True, norm_first=norm_first)
    ours.load_state_dict(theirs.state_dict())
    x, mask = torch.randn(2, 6, D), padding([6, 2], 6)
    out, ref = ours(x, mask), theirs(x, src_key_padding_mask=~mask.squeeze(1))
    keep = mask.squeeze(1).unsqueeze(-1)                                          # nn's fast path zeroes padding
    torch.testing.assert_close(out * keep, ref * keep)
    (out * keep).sum().backward()
    (ref * keep).sum().backward()
    for (name, param), twin in zip(ours.named_parameters(), theirs.parameters()):
        torch.testing.assert_close(param.grad, twin.grad, msg=name)


@pytest.mark.parametrize("norm_first", [False, True])
def test_decoder_layer_matches_nn_transformer_decoder_layer(norm_first):
    torch.manual_seed(0)
    ours = DecoderLayer(D, H, FF, 0.0, norm_first)
    theirs = nn.TransformerDecoderLayer(D, H, FF, 0.0, batch_first=True, norm_first=norm_first)
    ours.load_state_dict(theirs.state_dict())
    x, memory, memory_mask = torch.randn(2, 5, D), torch.randn(2, 6, D), padding([6, 3], 6)
    out = ours(x, memory, causal_mask(5), memory_mask)
    ref = theirs(x, memory, tgt_mask=~causal_mask(5).squeeze(0), memory_key_padding_mask=~memory_mask.squeeze(1))
    torch.testing.assert_close(out, ref)
    out.sum().backward()
    ref.sum().backward()
    for (name, param), twin in zip(ours.named_parameters(), theirs.parameters()):
        torch.testing.assert_close(param.grad, twin.grad, msg=name)


def torch_names(name: str) -> str:
    """Our parameter name -> the nn.Transformer model's."""
    for ours, theirs in (("encoder_layers.", "transformer.encoder.layers."),
                         ("decoder_layers.", "transformer.decoder.layers."),
                         ("encoder_norm.", "transformer.encoder.norm."),
                         ("decoder_norm.", "transformer.decoder.norm.")):
        name = name.replace(ours, theirs)
    return name


def tiny_config(**overrides) -> TransformerConfig:
    return TransformerConfig(**{**dict(src_vocab_size=20, tgt_vocab_size=20, d_model=D, n_heads=H,
                                       n_encoder_layers=2, n_decoder_layers=2, d_ff=FF, dropout=0.0, max_len=32),
                                **overrides})


@pytest.mark.parametrize("norm_first, share", [(True, True), (False, False)])
def test_scratch_model_equals_the_nn_transformer_model(norm_first, share):
    torch.manual_seed(0)
    scratch = Transformer(tiny_config(norm_first=norm_first, share_embeddings=share))
    torched = Transformer(tiny_config(norm_first=norm_first, share_embeddings=share, impl="torch"))
    torched.load_state_dict({torch_names(k): v for k, v in scratch.state_dict().items()})
    src = torch.tensor([[5, 6, 7, 3, PAD_ID], [8, 9, 10, 11, 3]])
    tgt = torch.tensor([[2, 4, 5], [2, 6, 7]])
    out, ref = scratch(src, tgt), torched(src, tgt)
    torch.testing.assert_close(out, ref)
    out.sum().backward()
    ref.sum().backward()
    theirs = dict(torched.named_parameters())
    for name, param in scratch.named_parameters():
        torch.testing.assert_close(param.grad, theirs[torch_names(name)].grad, msg=name)


@pytest.mark.parametrize("overrides", [{}, {"norm_first": False, "positional": "learned"}])
def test_cached_decoding_equals_uncached(overrides):
    torch.manual_seed(0)
    model = Transformer(tiny_config(**overrides)).eval()
    src = torch.tensor([[5, 6, 7, 3, PAD_ID], [8, 9, 10, 11, 3]])
    tgt = torch.tensor([[2, 4, 5, 6, 7], [2, 6, 7, 8, 9]])
    memory, mask = model.encode(src)
    full = model.decode(tgt, memory, mask)
    cache = [{} for _ in model.decoder_layers]
    steps = [model.decode(tgt[:, t: t + 1], memory, mask, cache, start=t) for t in range(tgt.size(1))]
    torch.testing.assert_close(torch.cat(steps, dim=1), full)


def test_sinusoidal_encoding_values():
    table = sinusoidal_encoding(50, 8)
    assert table[0, 0::2].abs().max() == 0 and torch.all(table[0, 1::2] == 1)
    torch.testing.assert_close(table[7, 2], torch.sin(torch.tensor(7 / 10000 ** (2 / 8))))


def test_cached_and_uncached_search_write_the_same_words():
    from stage4_transformer.models.search import beam_search, greedy_decode
    torch.manual_seed(1)
    model = Transformer(tiny_config()).eval()
    with torch.no_grad():
        model.generator.bias.normal_(0, 2.0)            # sharper distributions: searches differ from each other
    src = torch.tensor([[5, 6, 7, 3, PAD_ID, PAD_ID], [8, 9, 10, 11, 12, 3], [13, 3, PAD_ID, PAD_ID, PAD_ID, PAD_ID]])
    assert torch.equal(greedy_decode(model, src, max_len=8), greedy_decode(model, src, max_len=8, use_cache=False))
    assert torch.equal(beam_search(model, src, 4, max_len=8), beam_search(model, src, 4, max_len=8, use_cache=False))
    torched = Transformer(tiny_config(impl="torch")).eval()
    torched.load_state_dict({torch_names(k): v for k, v in model.state_dict().items()})
    assert torch.equal(beam_search(torched, src, 4, max_len=8), beam_search(model, src, 4, max_len=8))


def test_output_vocab_scores_only_the_chosen_pieces():
    # output_ids: the softmax's columns are the full model's columns for those pieces, labels map to their
    # positions (<pad> stays 0, the ignored index; a piece left out becomes <unk>), and search writes only them
    from stage4_transformer.models.search import beam_search, greedy_decode
    ids = [0, 1, 2, 3, 5, 7, 9, 12, 15]
    torch.manual_seed(1)
    full = Transformer(tiny_config()).eval()
    part = Transformer(tiny_config(output_ids=ids)).eval()
    part.load_state_dict(full.state_dict())               # the index buffers are not weights: same keys
    with torch.no_grad():
        full.generator.bias.normal_(0, 2.0)
        part.generator.bias.copy_(full.generator.bias)
    src = torch.tensor([[5, 6, 7, 3, PAD_ID], [8, 9, 10, 11, 3]])
    tgt = torch.tensor([[2, 5, 9], [2, 12, 7]])
    logits = part(src, tgt)
    assert logits.shape == (2, 3, len(ids))
    torch.testing.assert_close(logits, full(src, tgt)[..., ids])
    assert part.output_targets(torch.tensor([5, 9, PAD_ID, 3, 11])).tolist() == [4, 6, 0, 3, 1]
    wide = part.full_vocab(logits[:, -1])
    assert wide.shape == (2, 20) and torch.equal(wide[:, ids], logits[:, -1])
    assert bool(torch.isinf(wide[:, [4, 6, 8, 19]]).all())
    for words in (greedy_decode(part, src, max_len=8), beam_search(part, src, 3, max_len=8),
                  beam_search(part, src, 3, max_len=8, use_cache=False)):
        assert set(words.flatten().tolist()) <= set(ids)
    for bad in ([1, 2, 3, 5], [0, 1, 2, 3, 7, 5], [0, 1, 2, 3, 20]):
        with pytest.raises(ValueError, match="output_ids"):
            Transformer(tiny_config(output_ids=bad))


def test_cross_attention_maps_are_distributions_over_real_source_pieces():
    torch.manual_seed(0)
    model = Transformer(tiny_config()).eval()
    src = torch.tensor([[5, 6, 7, 3, PAD_ID], [8, 9, 10, 11, 3]])
    tgt = torch.tensor([[2, 4, 5], [2, 6, 7]])
    before = model(src, tgt)
    maps = model.cross_attention(src, tgt)
    assert maps.shape == (2, 2, H, 3, 5)                                           # layers, B, heads, T, S
    torch.testing.assert_close(maps.sum(-1), torch.ones(2, 2, H, 3))
    assert torch.all(maps[:, 0, :, :, 4] == 0)                                      # the pad column
    torch.testing.assert_close(model(src, tgt), before)                             # nothing left switched on


def test_fast_dropout_drops_p_of_the_elements_and_keeps_the_mean():
    torch.manual_seed(0)
    x = (torch.rand(400, 1000) + 1.0).requires_grad_()
    out = fast_dropout(x, 0.2, training=True)
    dropped = out == 0
    assert abs(dropped.float().mean().item() - 51 / 256) < 0.003               # p rounded to 51/256
    torch.testing.assert_close(out[~dropped], x[~dropped] * 256 / 205)          # inverted dropout's scale
    assert abs(out.mean().item() / x.mean().item() - 1) < 0.01
    out.sum().backward()
    torch.testing.assert_close(x.grad, (~dropped).float() * 256 / 205)         # gradient only through kept ones
    assert fast_dropout(x, 0.2, training=False) is x and fast_dropout(x, 0.0, training=True) is x
    torch.manual_seed(1)
    first = fast_dropout(x, 0.5, True)
    torch.manual_seed(1)
    assert torch.equal(first, fast_dropout(x, 0.5, True))                       # seeded: --resume stays exact
    assert 0.48 < (first == 0).float().mean().item() < 0.52


def test_attention_and_activation_dropout_rates_reach_their_modules():
    model = Transformer(tiny_config(dropout=0.3, attention_dropout=0.0, activation_dropout=0.1,
                                    n_encoder_layers=3, n_decoder_layers=1))
    assert len(model.encoder_layers) == 3 and len(model.decoder_layers) == 1
    layer = model.decoder_layers[0]
    assert (layer.dropout.p, layer.activation_dropout.p, layer.self_attn.dropout, layer.multihead_attn.dropout,
            model.dropout.p) == (0.3, 0.1, 0.0, 0.0, 0.3)
    assert Transformer(tiny_config(dropout=0.3)).encoder_layers[0].self_attn.dropout == 0.3   # unset: --dropout
    fast = Transformer(tiny_config(dropout=0.3, fast_dropout=True))
    assert all(m.fast for m in fast.modules() if hasattr(m, "fast")) and fast.decoder_layers[0].self_attn.fast_dropout
    assert not any(m.fast for m in model.modules() if hasattr(m, "fast"))       # default: torch's F.dropout
    with pytest.raises(ValueError, match="one dropout rate"):
        Transformer(tiny_config(impl="torch", dropout=0.3, attention_dropout=0.0))
