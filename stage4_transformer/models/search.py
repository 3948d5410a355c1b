"""Greedy and beam search for the Transformer, batched, with cached keys and values.

Without a cache, step t re-runs the decoder over the whole prefix (t positions, O(t^2) attention in
total per step). With it, each layer keeps the keys and values of the positions already written and a
step feeds only the newest word: one position of work per layer. The cross-attention keys and values
come from the encoder output and are computed once. `use_cache=False` is the slow path, kept so the
tests can show both give the same words, and for the nn.Transformer model (which has no cache).

Beam search is the one of stage 3: the k best hypotheses by total log-probability, finished ones kept
with a frozen score, ranked by score / lp(length), lp(n) = ((5 + n) / 6) ** alpha, at the end.
"""
from __future__ import annotations

import torch

from stage4_transformer.data.subword import BOS_ID, EOS_ID, PAD_ID
from stage4_transformer.models.transformer import Transformer


def default_max_len(src: torch.Tensor) -> int:
    return int(1.5 * src.size(1)) + 10


def length_penalty(lengths: torch.Tensor, alpha: float) -> torch.Tensor:
    return ((5.0 + lengths) / 6.0) ** alpha


class Stepper:
    """Next-word log-probabilities for a batch of growing prefixes, with or without the cache."""

    def __init__(self, model: Transformer, src: torch.Tensor, use_cache: bool, repeat: int = 1):
        self.model = model
        memory, mask = model.encode(src)
        self.memory, self.mask = memory.repeat_interleave(repeat, 0), mask.repeat_interleave(repeat, 0)
        self.use_cache = use_cache and model.config.impl == "scratch"
        self.cache: list[dict] | None = [{} for _ in range(model.config.n_decoder_layers)] if self.use_cache else None
        self.prefix = torch.full((self.memory.size(0), 1), BOS_ID, dtype=torch.long, device=src.device)

    def log_probs(self) -> torch.Tensor:
        """(N, V) for the word after the current prefixes."""
        if self.use_cache:
            step = self.prefix.size(1) - 1
            hidden = self.model.decode(self.prefix[:, -1:], self.memory, self.mask, self.cache, start=step)
        else:
            hidden = self.model.decode(self.prefix, self.memory, self.mask)
        logp = self.model.full_vocab(torch.log_softmax(self.model.output(hidden[:, -1]).float(), dim=-1))
        logp[:, PAD_ID] = float("-inf")                                          # never write <pad> or <bos>
        logp[:, BOS_ID] = float("-inf")
        return logp

    def advance(self, words: torch.Tensor, rows: torch.Tensor | None = None) -> None:
        """Append words (N,) to the prefixes, after keeping prefix `rows` (beam search's reordering)."""
        if rows is not None:
            self.prefix = self.prefix[rows]
            for layer in self.cache or []:
                for name in ("key", "value"):
                    layer["self"][name] = layer["self"][name][rows]
        self.prefix = torch.cat([self.prefix, words.unsqueeze(1)], dim=1)


@torch.no_grad()
def greedy_decode(model: Transformer, src: torch.Tensor, max_len: int | None = None,
                  use_cache: bool = True) -> torch.Tensor:
    """src (B, S) -> word ids (B, L), each row ending in <eos> then <pad>."""
    max_len = max_len or default_max_len(src)
    stepper = Stepper(model, src, use_cache)
    finished = torch.zeros(src.size(0), dtype=torch.bool, device=src.device)
    words = []
    for _ in range(max_len):
        word = stepper.log_probs().argmax(-1).masked_fill(finished, PAD_ID)
        words.append(word)
        finished |= word == EOS_ID
        if finished.all():
            break
        stepper.advance(word)
    return torch.stack(words, 1)


@torch.no_grad()
def beam_search(model: Transformer, src: torch.Tensor, beam_size: int = 5, alpha: float = 1.0,
                max_len: int | None = None, use_cache: bool = True) -> torch.Tensor:
    """src (B, S) -> the best hypothesis per sentence (B, L)."""
    max_len = max_len or default_max_len(src)
    batch, k, device = src.size(0), beam_size, src.device
    stepper = Stepper(model, src, use_cache, repeat=k)
    scores = torch.full((batch, k), float("-inf"), device=device)
    scores[:, 0] = 0.0
    finished = torch.zeros(batch * k, dtype=torch.bool, device=device)
    lengths = torch.zeros(batch * k, device=device)
    history = torch.empty(batch * k, 0, dtype=torch.long, device=device)
    offsets = (torch.arange(batch, device=device) * k).unsqueeze(1)
    for _ in range(max_len):
        logp = stepper.log_probs()                                               # (B*k, V)
        logp[finished] = float("-inf")
        logp[finished, PAD_ID] = 0.0
        vocab = logp.size(-1)
        scores, flat = (scores.view(-1, 1) + logp).view(batch, k * vocab).topk(k, dim=1)
        parent = (offsets + flat // vocab).view(-1)
        words = (flat % vocab).view(-1)
        history = torch.cat([history[parent], words.unsqueeze(1)], dim=1)
        was_finished = finished[parent]
        lengths = lengths[parent] + (~was_finished).float()
        finished = was_finished | (words == EOS_ID)
        if finished.all():
            break
        stepper.advance(words, parent)
    ranked = (scores.view(-1) / length_penalty(lengths, alpha)).view(batch, k)
    return history[offsets.squeeze(1) + ranked.argmax(1)]
