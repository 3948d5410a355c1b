"""Encoder-decoder with attention (Bahdanau et al. 2015; Luong et al. 2015), and the no-attention baseline.

Encoder: embeddings, then a bidirectional GRU; annotation h_j = [->h_j; <-h_j] for each source word
(the "memory", (B, S, M) with M = 2 * hidden_dim). Its summary, [->h_last; <-h_first], sets the
decoder's first state s_0 = tanh(W_init summary).

Decoder, one target word per step (y_{t-1} is the previous word, e its embedding):

  attend first (bahdanau, and none):              attend after (luong_*, with input feeding):
    c_t = attention(s_{t-1}, h)                     s_t = GRU([e(y_{t-1}); o_{t-1}], s_{t-1})
    s_t = GRU([e(y_{t-1}); c_t], s_{t-1})           c_t = attention(s_t, h)
    o_t = tanh(W_o [s_t; c_t; e(y_{t-1})])          o_t = tanh(W_o [s_t; c_t])

  and p(y_t | y_<t, x) = softmax(W_out o_t). With `none`, c_t is the summary vector at every step:
  the whole sentence must squeeze through that one fixed vector (the bottleneck attention removes).
  W_out shares its matrix with the target embeddings (tie_embeddings), so o_t has embed_dim entries.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from stage3_attention_seq2seq.data.translation import BOS_ID, MAX_TOKENS, MIN_TOKENS, PAD_ID
from stage3_attention_seq2seq.models.attention import ATTENTION_TYPES, make_attention
from stage3_attention_seq2seq.models.rnn import GRUCell, GRULayer

# the largest sizes a config may ask for: far above the course's models (vocabularies of ~10k-30k words, widths of
# 64-256), far below what would exhaust memory by mistake (an edited checkpoint, a typo in --hidden_dim)
MAX_DIM = 4096
MIN_VOCAB, MAX_VOCAB = MIN_TOKENS, MAX_TOKENS     # the four special tokens and at least one word; data/translation.py


@dataclass
class Seq2SeqConfig:
    src_vocab_size: int
    tgt_vocab_size: int
    attention_type: str = "bahdanau"
    impl: str = "scratch"            # scratch: models/rnn.py; torch: nn.GRU / nn.GRUCell
    embed_dim: int = 256
    hidden_dim: int = 128            # per encoder direction; the decoder state has 2 * hidden_dim
    attention_dim: int = 256         # size of the additive attention's hidden layer
    dropout: float = 0.3
    tie_embeddings: bool = True

    def __post_init__(self) -> None:
        if self.attention_type not in ATTENTION_TYPES:
            raise ValueError(f"unknown attention type {self.attention_type!r}; choose one of {ATTENTION_TYPES}")
        if self.impl not in ("scratch", "torch"):
            raise ValueError(f"unknown impl {self.impl!r}; choose scratch or torch")
        for name in ("src_vocab_size", "tgt_vocab_size"):
            if not MIN_VOCAB <= getattr(self, name) <= MAX_VOCAB:
                raise ValueError(f"{name} must be between {MIN_VOCAB} and {MAX_VOCAB}, got {getattr(self, name)}")
        for name in ("embed_dim", "hidden_dim", "attention_dim"):
            if not 1 <= getattr(self, name) <= MAX_DIM:
                raise ValueError(f"{name} must be between 1 and {MAX_DIM}, got {getattr(self, name)}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Memory:
    """What the decoder reads at every step: the annotations, their attention keys, the source mask."""

    annotations: torch.Tensor   # (B, S, M)
    keys: torch.Tensor | None   # (B, S, A) precomputed part of the scores (None: no attention)
    mask: torch.Tensor          # (B, S) True on real source tokens
    summary: torch.Tensor       # (B, M) the fixed sentence vector

    def index_select(self, index: torch.Tensor) -> "Memory":
        """Rows `index` (beam search keeps beam_size copies of each sentence)."""
        pick = lambda x: None if x is None else x.index_select(0, index)  # noqa: E731
        return Memory(pick(self.annotations), pick(self.keys), pick(self.mask), pick(self.summary))


@dataclass
class DecoderState:
    hidden: torch.Tensor                 # (B, Hd) s_t
    feed: torch.Tensor                   # (B, E) o_t, fed back in by Luong's input feeding
    attention: list[torch.Tensor] = field(default_factory=list)

    def index_select(self, index: torch.Tensor) -> "DecoderState":
        return DecoderState(self.hidden.index_select(0, index), self.feed.index_select(0, index))


class Encoder(nn.Module):
    """Embeddings -> dropout -> bidirectional GRU (from scratch, or nn.GRU on a packed sequence)."""

    def __init__(self, config: Seq2SeqConfig):
        super().__init__()
        self.embedding = nn.Embedding(config.src_vocab_size, config.embed_dim, padding_idx=PAD_ID)
        self.dropout = nn.Dropout(config.dropout)
        if config.impl == "scratch":
            self.rnn = GRULayer(config.embed_dim, config.hidden_dim, bidirectional=True)
        else:
            self.rnn = nn.GRU(config.embed_dim, config.hidden_dim, batch_first=True, bidirectional=True)

    def forward(self, src: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """src (B, S) -> annotations (B, S, 2H), summary [->h_last; <-h_first] (B, 2H)."""
        embedded = self.dropout(self.embedding(src))                          # (B, S, E)
        if isinstance(self.rnn, GRULayer):
            annotations, final = self.rnn(embedded, mask)                      # (B, S, 2H), (2, B, H)
        else:
            lengths = mask.sum(1).cpu()
            packed = nn.utils.rnn.pack_padded_sequence(embedded, lengths, batch_first=True, enforce_sorted=False)
            out, final = self.rnn(packed)
            annotations, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=src.size(1))
        return annotations, torch.cat([final[0], final[1]], dim=-1)


class Seq2Seq(nn.Module):
    def __init__(self, config: Seq2SeqConfig):
        super().__init__()
        self.config = config
        memory_dim = hidden = 2 * config.hidden_dim
        self.attend_first = config.attention_type in ("bahdanau", "none")
        self.encoder = Encoder(config)
        self.init_state = nn.Linear(memory_dim, hidden)                       # W_init
        self.embedding = nn.Embedding(config.tgt_vocab_size, config.embed_dim, padding_idx=PAD_ID)
        self.dropout = nn.Dropout(config.dropout)
        self.attention = make_attention(config.attention_type, hidden, memory_dim, config.attention_dim)
        feed_dim = memory_dim if self.attend_first else config.embed_dim       # c_t, or o_{t-1}
        cell = GRUCell if config.impl == "scratch" else nn.GRUCell
        self.cell = cell(config.embed_dim + feed_dim, hidden)
        readout_in = hidden + memory_dim + (config.embed_dim if self.attend_first else 0)
        self.readout = nn.Linear(readout_in, config.embed_dim)               # W_o
        self.generator = nn.Linear(config.embed_dim, config.tgt_vocab_size)   # W_out
        if config.tie_embeddings:
            self.generator.weight = self.embedding.weight
        for embedding in (self.embedding, self.encoder.embedding):
            # N(0, 1/E), not nn.Embedding's N(0, 1): as the output matrix, N(0, 1) rows would give
            # logits of size ~sqrt(E) at the start and a first loss far above log(V)
            nn.init.normal_(embedding.weight, std=config.embed_dim ** -0.5)
            nn.init.zeros_(embedding.weight[PAD_ID])

    # ---------------------------------------------------------------- the two halves
    def encode(self, src: torch.Tensor, mask: torch.Tensor) -> tuple[Memory, DecoderState]:
        annotations, summary = self.encoder(src, mask)
        keys = self.attention.prepare(annotations) if self.attention is not None else None
        hidden = torch.tanh(self.init_state(summary))                         # s_0 (B, Hd)
        feed = annotations.new_zeros(src.size(0), self.config.embed_dim)
        return Memory(annotations, keys, mask, summary), DecoderState(hidden, feed)

    def attend(self, query: torch.Tensor, memory: Memory) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.attention is None:
            return memory.summary, None
        return self.attention(query, memory.keys, memory.annotations, memory.mask)

    def embed(self, words: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.embedding(words))                            # (..., E)

    def step(self, embedded: torch.Tensor, state: DecoderState, memory: Memory) -> tuple[torch.Tensor, DecoderState,
                                                                                           torch.Tensor | None]:
        """One decoder step from the embedded previous words (B, E): readout o_t (B, E), new state,
        attention weights (B, S)."""
        if self.attend_first:
            context, weights = self.attend(state.hidden, memory)              # c_t from s_{t-1}
            hidden = self.cell(torch.cat([embedded, context], -1), state.hidden)
            out = torch.tanh(self.readout(torch.cat([hidden, context, embedded], -1)))
        else:
            hidden = self.cell(torch.cat([embedded, state.feed], -1), state.hidden)
            context, weights = self.attend(hidden, memory)                    # c_t from s_t
            out = torch.tanh(self.readout(torch.cat([hidden, context], -1)))
        return out, DecoderState(hidden, out), weights

    def log_probs(self, out: torch.Tensor) -> torch.Tensor:
        return F.log_softmax(self.generator(out), dim=-1)

    # ---------------------------------------------------------------- training
    def forward(self, src: torch.Tensor, tgt: torch.Tensor, teacher_forcing: float = 1.0) -> torch.Tensor:
        """Logits (B, T, V) for the target words tgt (B, T); the decoder's input at step t is tgt[:, t-1]
        with probability `teacher_forcing`, else the model's own previous guess (scheduled sampling)."""
        mask = src != PAD_ID
        memory, state = self.encode(src, mask)
        gold = torch.cat([torch.full_like(tgt[:, :1], BOS_ID), tgt[:, :-1]], dim=1)   # (B, T) inputs: <bos> y_1 ...
        gold_embedded = self.embed(gold).unbind(1)                              # embed all at once: one backward
        outs = []
        embedded = gold_embedded[0]
        for t in range(tgt.size(1)):
            out, state, _ = self.step(embedded, state, memory)
            outs.append(out)
            if t + 1 == tgt.size(1):
                break
            embedded = gold_embedded[t + 1]
            if teacher_forcing < 1.0:  # scheduled sampling, decided per sentence and word
                with torch.no_grad():
                    guess = self.generator(out).argmax(-1)                     # (B,)
                use_gold = torch.rand(guess.shape, device=guess.device) < teacher_forcing
                embedded = torch.where(use_gold.unsqueeze(-1), embedded, self.embed(guess))
        return self.generator(self.dropout(torch.stack(outs, dim=1)))         # (B, T, V)
