"""The from-scratch recurrent parts against nn.GRUCell / nn.GRU, attention masking, and the searches."""
import itertools

import pytest
import torch
import torch.nn as nn

from stage3_attention_seq2seq.data.translation import BOS_ID, EOS_ID, PAD_ID
from stage3_attention_seq2seq.models.attention import ATTENTION_TYPES, make_attention, masked_softmax
from stage3_attention_seq2seq.models.rnn import GRUCell, GRULayer
from stage3_attention_seq2seq.models.search import beam_search, greedy_decode, length_penalty
from stage3_attention_seq2seq.models.seq2seq import Seq2Seq, Seq2SeqConfig


def test_gru_cell_matches_torch_outputs_and_gradients():
    torch.manual_seed(0)
    ours, theirs = GRUCell(5, 7), nn.GRUCell(5, 7)
    theirs.load_state_dict(ours.state_dict())
    x, h = torch.randn(4, 5), torch.randn(4, 7)
    out_ours, out_theirs = ours(x, h), theirs(x, h)
    torch.testing.assert_close(out_ours, out_theirs)
    out_ours.pow(2).sum().backward()
    out_theirs.pow(2).sum().backward()
    for name, param in ours.named_parameters():
        torch.testing.assert_close(param.grad, getattr(theirs, name).grad, msg=name)


def test_bidirectional_layer_matches_nn_gru_on_a_packed_padded_batch():
    torch.manual_seed(0)
    lengths = torch.tensor([6, 2, 4])
    x = torch.randn(3, 6, 5, requires_grad=True)
    mask = torch.arange(6).unsqueeze(0) < lengths.unsqueeze(1)
    ours, theirs = GRULayer(5, 4, bidirectional=True), nn.GRU(5, 4, batch_first=True, bidirectional=True)
    ours.load_from_torch(theirs)
    out, final = ours(x, mask)
    packed = nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    ref_packed, ref_final = theirs(packed)
    ref, _ = nn.utils.rnn.pad_packed_sequence(ref_packed, batch_first=True, total_length=6)
    torch.testing.assert_close(out * mask.unsqueeze(-1), ref)                 # padding positions aside
    torch.testing.assert_close(final, ref_final)
    (out * mask.unsqueeze(-1)).sum().backward(retain_graph=True)
    grad_ours = x.grad.clone()
    x.grad = None
    ref.sum().backward()
    torch.testing.assert_close(grad_ours, x.grad)
    for suffix, cell in (("", ours.forward_cell), ("_reverse", ours.backward_cell)):
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            torch.testing.assert_close(getattr(cell, name).grad, getattr(theirs, f"{name}_l0{suffix}").grad,
                                       msg=name + suffix)


def test_scratch_and_torch_encoders_agree_with_copied_weights():
    torch.manual_seed(0)
    config = dict(src_vocab_size=20, tgt_vocab_size=15, embed_dim=8, hidden_dim=6, attention_dim=5, dropout=0.0)
    scratch = Seq2Seq(Seq2SeqConfig(**config, impl="scratch")).eval()
    torched = Seq2Seq(Seq2SeqConfig(**config, impl="torch")).eval()
    state = scratch.state_dict()
    for suffix, cell in (("", "forward_cell"), ("_reverse", "backward_cell")):
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            state[f"encoder.rnn.{name}_l0{suffix}"] = state.pop(f"encoder.rnn.{cell}.{name}")
    torched.load_state_dict(state)
    src = torch.tensor([[5, 6, 7, EOS_ID], [8, EOS_ID, PAD_ID, PAD_ID]])
    tgt = torch.tensor([[4, 5, EOS_ID], [6, EOS_ID, PAD_ID]])
    out_scratch, out_torch = scratch(src, tgt), torched(src, tgt)
    torch.testing.assert_close(out_scratch, out_torch)
    out_scratch.pow(2).sum().backward()
    out_torch.pow(2).sum().backward()
    torched_params = dict(torched.named_parameters())
    for name, param in scratch.named_parameters():
        twin = name
        for suffix, cell in (("", "forward_cell"), ("_reverse", "backward_cell")):
            for weight in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                twin = twin.replace(f"encoder.rnn.{cell}.{weight}", f"encoder.rnn.{weight}_l0{suffix}")
        torch.testing.assert_close(param.grad, torched_params[twin].grad, msg=name)


def test_masked_softmax_sums_to_one_and_ignores_padding():
    scores = torch.randn(3, 5)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 0, 0, 0, 0]], dtype=torch.bool)
    weights = masked_softmax(scores, mask)
    torch.testing.assert_close(weights.sum(-1), torch.ones(3))
    assert torch.all(weights[~mask] == 0) and weights[2, 0] == 1


@pytest.mark.parametrize("kind", [k for k in ATTENTION_TYPES if k != "none"])
def test_attention_weights_sum_to_one_and_padding_changes_nothing(kind):
    torch.manual_seed(0)
    attention = make_attention(kind, 8, 8, 6)
    memory = torch.randn(2, 5, 8)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], dtype=torch.bool)
    query = torch.randn(2, 8)
    context, weights = attention(query, attention.prepare(memory), memory, mask)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2))
    assert torch.all(weights[~mask] == 0)
    garbage = memory.clone()
    garbage[1, 3:] = 1e3                                                         # whatever sits in the padding
    context2, weights2 = attention(query, attention.prepare(garbage), garbage, mask)
    torch.testing.assert_close(context2, context)
    torch.testing.assert_close(weights2, weights)


def tiny_model(kind: str = "bahdanau", vocab: int = 12, seed: int = 0) -> Seq2Seq:
    torch.manual_seed(seed)
    model = Seq2Seq(Seq2SeqConfig(vocab, vocab, kind, "scratch", 8, 6, 5, dropout=0.0)).eval()
    with torch.no_grad():  # sharper distributions than the init gives, so the searches really differ
        model.generator.bias.normal_(0, 2.0)
    return model


@pytest.mark.parametrize("kind", ATTENTION_TYPES)
def test_forward_shapes_and_teacher_forcing(kind):
    model = tiny_model(kind)
    src = torch.tensor([[5, 6, 7, EOS_ID], [8, EOS_ID, PAD_ID, PAD_ID]])
    tgt = torch.tensor([[4, 5, EOS_ID], [6, EOS_ID, PAD_ID]])
    logits = model(src, tgt)
    assert logits.shape == (2, 3, 12)
    model.train()
    torch.manual_seed(1)
    sampled = model(src, tgt, teacher_forcing=0.0)                              # runs on its own guesses
    assert sampled.shape == logits.shape and torch.isfinite(sampled).all()


@torch.no_grad()
def sequence_score(model: Seq2Seq, src: torch.Tensor, words: list[int]) -> float:
    """Total log-probability of `words` (a complete hypothesis) given src (1, S)."""
    memory, state = model.encode(src, src != PAD_ID)
    prev, total = BOS_ID, 0.0
    for word in words:
        out, state, _ = model.step(model.embed(torch.tensor([prev])), state, memory)
        logp = model.log_probs(out)[0]
        total += float(logp[word])
        prev = word
    return total


def test_beam_search_finds_the_brute_force_best_on_a_tiny_vocabulary():
    """With a beam wide enough to keep every hypothesis, beam search is exhaustive: same best as brute force."""
    model = tiny_model(vocab=6)                           # specials 0-3 and two words, 4 and 5
    src = torch.tensor([[4, 5, 4, EOS_ID]])
    max_len, alpha = 4, 1.0
    allowed = [1, EOS_ID, 4, 5]                           # <unk>, <eos> and the words (never <pad>/<bos>)
    best, best_words = float("-inf"), None
    for n in range(1, max_len + 1):
        for words in itertools.product(allowed, repeat=n):
            if EOS_ID in words[:-1] or (n < max_len and words[-1] != EOS_ID):
                continue                                  # <eos> only at the end; shorter ones must end with it
            score = sequence_score(model, src, list(words)) / float(length_penalty(torch.tensor(float(n)), alpha))
            if score > best:
                best, best_words = score, list(words)
    found, _ = beam_search(model, src, beam_size=128, alpha=alpha, max_len=max_len)
    found = [w for w in found[0].tolist() if w != PAD_ID]
    assert found == best_words


def reference_beam_search(model: Seq2Seq, src: torch.Tensor, k: int, alpha: float, max_len: int) -> list[int]:
    """The algorithm of models/search.py for one sentence, in plain Python lists: keep the k best hypotheses
    by total log-probability; a finished one (ends in <eos>) stays, frozen; rank by score / lp(length) at the end."""
    beams = [(0.0, [], False)]                                  # (score, words, finished)
    for _ in range(max_len):
        candidates = []
        for score, words, finished in beams:
            if finished:
                candidates.append((score, words, True))
                continue
            logp = sequence_log_probs(model, src, words)
            for word in range(logp.numel()):
                if word not in (PAD_ID, BOS_ID):
                    candidates.append((score + float(logp[word]), words + [word], word == EOS_ID))
        beams = sorted(candidates, key=lambda c: -c[0])[:k]
        if all(finished for _, _, finished in beams):
            break
    return max(beams, key=lambda b: b[0] / float(length_penalty(torch.tensor(float(len(b[1]))), alpha)))[1]


@torch.no_grad()
def sequence_log_probs(model: Seq2Seq, src: torch.Tensor, words: list[int]) -> torch.Tensor:
    """log p(next word | words, src), (V,)."""
    memory, state = model.encode(src, src != PAD_ID)
    for prev in [BOS_ID] + words:
        out, state, _ = model.step(model.embed(torch.tensor([prev])), state, memory)
    return model.log_probs(out)[0]


@pytest.mark.parametrize("beam_size, alpha", [(2, 1.0), (3, 0.0), (4, 0.6)])
def test_batched_beam_search_equals_the_plain_reference(beam_size, alpha):
    model = tiny_model(vocab=9, seed=5)
    src = torch.tensor([[4, 5, 6, 7, EOS_ID], [8, 4, EOS_ID, PAD_ID, PAD_ID]])
    found, _ = beam_search(model, src, beam_size=beam_size, alpha=alpha, max_len=6)
    for i in range(2):
        length = int((src[i] != PAD_ID).sum())
        expected = reference_beam_search(model, src[i: i + 1, :length], beam_size, alpha, max_len=6)
        assert [w for w in found[i].tolist() if w != PAD_ID] == expected


def test_beam_of_one_is_greedy_and_batching_changes_nothing():
    model = tiny_model(vocab=12, seed=3)
    src = torch.tensor([[5, 6, 7, 8, EOS_ID], [9, 10, EOS_ID, PAD_ID, PAD_ID], [4, EOS_ID, PAD_ID, PAD_ID, PAD_ID]])
    greedy, greedy_attention = greedy_decode(model, src, max_len=7, return_attention=True)
    beam1, _ = beam_search(model, src, beam_size=1, alpha=0.0, max_len=7)
    assert torch.equal(greedy[:, : beam1.size(1)], beam1)
    torch.testing.assert_close(greedy_attention.sum(-1)[greedy != PAD_ID],
                               torch.ones(int((greedy != PAD_ID).sum())))
    batched, batched_attention = beam_search(model, src, beam_size=4, max_len=7, return_attention=True)
    for i in range(3):
        length = int((src[i] != PAD_ID).sum())
        alone, alone_attention = beam_search(model, src[i: i + 1, :length], beam_size=4, max_len=7,
                                             return_attention=True)
        words = [w for w in alone[0].tolist() if w != PAD_ID]
        assert [w for w in batched[i].tolist() if w != PAD_ID] == words
        torch.testing.assert_close(batched_attention[i, : len(words), :length], alone_attention[0, : len(words)])
