"""Recurrent language model (char or word level) and the sampling it generates text with."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F

from stage2_rnn_lstm.models.cells import ScratchRecurrent, State

TORCH_RNNS = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}
IMPLS = ("scratch", "torch")
PROMPT_CHUNK = 512       # a long prompt is read this many tokens at a time (the state carries over)


@dataclass
class LMConfig:
    vocab_size: int
    model_type: str = "lstm"     # rnn | lstm | gru
    impl: str = "scratch"        # scratch (models/cells.py) | torch (nn.LSTM ...)
    embed_dim: int = 512
    hidden_dim: int = 512
    num_layers: int = 2
    dropout: float = 0.2
    tie_weights: bool = False

    def __post_init__(self) -> None:
        """Refuse what no model can be built from (a config edited by hand, or saved by another version)."""
        if self.model_type not in TORCH_RNNS:
            raise ValueError(f"model_type {self.model_type!r} is not one of {', '.join(TORCH_RNNS)}")
        if self.impl not in IMPLS:
            raise ValueError(f"impl {self.impl!r} is not one of {', '.join(IMPLS)}")
        for name in ("vocab_size", "embed_dim", "hidden_dim", "num_layers"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.tie_weights and self.embed_dim != self.hidden_dim:
            raise ValueError("tie_weights needs embed_dim == hidden_dim")

    def to_dict(self) -> dict:
        return asdict(self)

    def num_parameters(self) -> int:
        """How many parameters the model of this config has, counted on the meta device (no memory used)."""
        with torch.device("meta"):
            return sum(p.numel() for p in RNNLanguageModel(self).parameters())


def make_recurrent(model_type: str, impl: str, input_size: int, hidden_size: int, num_layers: int,
                   dropout: float) -> nn.Module:
    """The recurrent core, from scratch or PyTorch's; both take and return (B, T, .) tensors."""
    if impl == "scratch":
        return ScratchRecurrent(model_type, input_size, hidden_size, num_layers, dropout)
    return TORCH_RNNS[model_type](input_size, hidden_size, num_layers, dropout=dropout if num_layers > 1 else 0.0,
                                  batch_first=True)


class RNNLanguageModel(nn.Module):
    """Embedding -> dropout -> stacked RNN/LSTM/GRU -> dropout -> linear decoder over the vocabulary.

        e_t = E[x_t];   h_t = RNN(e_t, h_{t-1});   p(x_{t+1} | x_<=t) = softmax(W h_t + b)

    With `tie_weights` the decoder reuses the embedding matrix (W = E; Press & Wolf 2017), which
    needs embed_dim == hidden_dim and saves V*H parameters.
    """

    def __init__(self, config: LMConfig):
        super().__init__()
        if config.tie_weights and config.embed_dim != config.hidden_dim:
            raise ValueError("tie_weights needs embed_dim == hidden_dim")
        self.config = config
        self.embedding = nn.Embedding(config.vocab_size, config.embed_dim)
        self.rnn = make_recurrent(config.model_type, config.impl, config.embed_dim, config.hidden_dim,
                                  config.num_layers, config.dropout)
        self.dropout = nn.Dropout(config.dropout)
        self.decoder = nn.Linear(config.hidden_dim, config.vocab_size)
        nn.init.uniform_(self.embedding.weight, -0.1, 0.1)
        if config.tie_weights:
            self.decoder.weight = self.embedding.weight

    def forward(self, tokens: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        """tokens (B, T) -> logits (B, T, V), final state."""
        embedded = self.dropout(self.embedding(tokens))          # (B, T, E)
        outputs, state = self.rnn(embedded, state)               # (B, T, H)
        return self.decoder(self.dropout(outputs)), state        # (B, T, V)

    @torch.no_grad()
    def generate(self, prompt: torch.Tensor, steps: int, temperature: float = 1.0, top_k: int = 0,
                 top_p: float = 1.0, generator: torch.Generator | None = None) -> Iterator[int]:
        """Yield `steps` sampled token ids, one at a time (so callers can stream them).

        The prompt (T,) is read once, PROMPT_CHUNK tokens at a time (so a long one needs no more memory than a
        short one); then each step feeds only the newest token and the carried state.
        """
        if prompt.numel() == 0:
            raise ValueError("generate needs a prompt of at least one token")
        self.eval()
        state = None
        for start in range(0, prompt.numel(), PROMPT_CHUNK):
            logits, state = self(prompt[None, start:start + PROMPT_CHUNK], state)
        for step in range(steps):
            token = sample_next(logits[0, -1], temperature, top_k, top_p, generator)
            yield token
            if step + 1 < steps:
                logits, state = self(torch.tensor([[token]], device=prompt.device), state)


def sample_next(logits: torch.Tensor, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
                generator: torch.Generator | None = None) -> int:
    """Draw one token id from logits (V,).

    temperature 0 is greedy (argmax); top_k keeps the k most likely tokens; top_p (nucleus) keeps the
    smallest set of most likely tokens whose probabilities add up to at least p.
    """
    if temperature <= 0:
        return int(logits.argmax())
    probs = next_token_probs(logits, temperature, top_k, top_p)
    return int(torch.multinomial(probs.cpu(), 1, generator=generator))


def next_token_probs(logits: torch.Tensor, temperature: float = 1.0, top_k: int = 0,
                     top_p: float = 1.0) -> torch.Tensor:
    """The distribution sample_next draws from, (V,): softmax(logits / temperature) after the top-k and top-p cuts
    (temperature 0: all the mass on the likeliest token)."""
    if temperature <= 0:
        return F.one_hot(logits.argmax(), logits.numel()).float()
    logits = logits.float() / temperature
    if 0 < top_k < logits.numel():
        kth = torch.topk(logits, top_k).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = logits.sort(descending=True)
        cumulative = F.softmax(sorted_logits, dim=-1).cumsum(-1)
        drop = cumulative - F.softmax(sorted_logits, dim=-1) >= top_p   # keep up to and including the crossing
        drop[0] = False                                                  # the most likely token always stays
        logits = logits.masked_fill(torch.zeros_like(drop).scatter(0, order, drop), float("-inf"))
    return F.softmax(logits, dim=-1)
