"""Decoding: greedy search and beam search, both over whole batches of sentences.

Greedy takes the most likely word at each step. Beam search keeps the `beam_size` best partial
translations of each sentence (by total log-probability); a hypothesis that has written <eos> stays
in its beam with its score frozen (it can only be extended by <pad>, at no cost). At the end the
hypotheses are ranked by score / lp(length), GNMT's length penalty (Wu et al. 2016):

    lp(n) = ((5 + n) / 6) ** alpha        alpha = 0: raw log-probability (favours short output)

Neither search may write <pad> or <bos>.
"""
from __future__ import annotations

import torch

from stage3_attention_seq2seq.data.translation import BOS_ID, EOS_ID, PAD_ID
from stage3_attention_seq2seq.models.seq2seq import Seq2Seq


def default_max_len(src: torch.Tensor) -> int:
    """A French caption is rarely more than 1.5 times as long as its English source, plus a margin."""
    return int(1.5 * src.size(1)) + 10


def length_penalty(lengths: torch.Tensor, alpha: float) -> torch.Tensor:
    return ((5.0 + lengths) / 6.0) ** alpha


def _forbid_specials(logp: torch.Tensor) -> torch.Tensor:
    logp[:, PAD_ID] = float("-inf")
    logp[:, BOS_ID] = float("-inf")
    return logp


@torch.no_grad()
def greedy_decode(model: Seq2Seq, src: torch.Tensor, max_len: int | None = None,
                  return_attention: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """src (B, S) -> word ids (B, L) ending in <eos> then <pad>, and attention weights (B, L, S) if asked."""
    max_len = max_len or default_max_len(src)
    memory, state = model.encode(src, src != PAD_ID)
    prev = torch.full((src.size(0),), BOS_ID, dtype=torch.long, device=src.device)
    finished = torch.zeros_like(prev, dtype=torch.bool)
    words, weights = [], []
    for _ in range(max_len):
        out, state, attention = model.step(model.embed(prev), state, memory)
        prev = _forbid_specials(model.log_probs(out)).argmax(-1).masked_fill(finished, PAD_ID)   # (B,)
        words.append(prev)
        if return_attention and attention is not None:
            weights.append(attention)
        finished |= prev == EOS_ID
        if finished.all():
            break
    return torch.stack(words, 1), (torch.stack(weights, 1) if weights else None)


@torch.no_grad()
def beam_search(model: Seq2Seq, src: torch.Tensor, beam_size: int = 5, alpha: float = 1.0,
                max_len: int | None = None, return_attention: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """src (B, S) -> the best hypothesis per sentence (B, L), and its attention weights (B, L, S) if asked."""
    max_len = max_len or default_max_len(src)
    batch, k, device = src.size(0), beam_size, src.device
    memory, state = model.encode(src, src != PAD_ID)
    rows = torch.arange(batch, device=device).repeat_interleave(k)             # beam b of sentence i: row i*k+b
    memory, state = memory.index_select(rows), state.index_select(rows)
    scores = torch.full((batch, k), float("-inf"), device=device)
    scores[:, 0] = 0.0                                                          # one live hypothesis to start
    prev = torch.full((batch * k,), BOS_ID, dtype=torch.long, device=device)
    finished = torch.zeros(batch * k, dtype=torch.bool, device=device)
    lengths = torch.zeros(batch * k, device=device)
    history = torch.empty(batch * k, 0, dtype=torch.long, device=device)
    attention_history = torch.empty(batch * k, 0, src.size(1), device=device)
    offsets = (torch.arange(batch, device=device) * k).unsqueeze(1)             # (B, 1)
    for _ in range(max_len):
        out, state, attention = model.step(model.embed(prev), state, memory)
        logp = _forbid_specials(model.log_probs(out))                           # (B*k, V)
        logp[finished] = float("-inf")                                          # finished: only <pad>, free
        logp[finished, PAD_ID] = 0.0
        vocab = logp.size(-1)
        candidates = (scores.view(-1, 1) + logp).view(batch, k * vocab)          # (B, k*V)
        scores, flat = candidates.topk(k, dim=1)                                # (B, k)
        parent = (offsets + flat // vocab).view(-1)                             # (B*k,) row each came from
        prev = (flat % vocab).view(-1)
        state = state.index_select(parent)
        history = torch.cat([history[parent], prev.unsqueeze(1)], dim=1)
        if return_attention and attention is not None:
            attention_history = torch.cat([attention_history[parent], attention[parent].unsqueeze(1)], dim=1)
        was_finished = finished[parent]
        lengths = lengths[parent] + (~was_finished).float()
        finished = was_finished | (prev == EOS_ID)
        if finished.all():
            break
    ranked = (scores.view(-1) / length_penalty(lengths, alpha)).view(batch, k)
    best = offsets.squeeze(1) + ranked.argmax(1)                                # (B,)
    weights = attention_history[best] if return_attention and attention_history.size(1) else None
    return history[best], weights
