"""The Transformer (Vaswani et al. 2017) from tensor operations: attention, multi-head attention,
positional encodings, encoder and decoder layers (post-LN as in the paper, or pre-LN), the full
encoder-decoder, and a cache of keys and values for fast decoding.

Parameter names and layouts follow PyTorch's own modules (`in_proj_weight`, `out_proj`, `linear1`,
`norm1`, ...), so the tests copy weights between this file and `nn.MultiheadAttention`,
`nn.TransformerEncoderLayer` and `nn.TransformerDecoderLayer` and compare outputs and gradients.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

PAD_ID = 0
UNK_ID = 1                      # as in data/subword.py


@dataclass
class TransformerConfig:
    src_vocab_size: int
    tgt_vocab_size: int
    d_model: int = 256
    n_heads: int = 4
    n_encoder_layers: int = 3
    n_decoder_layers: int = 3
    d_ff: int = 1024
    dropout: float = 0.1                 # on sublayer outputs and embeddings (the paper's "residual dropout")
    attention_dropout: float | None = None    # on the attention weights (None: same as dropout)
    activation_dropout: float | None = None   # inside the feed-forward block, after ReLU (None: same as dropout)
    max_len: int = 256
    norm_first: bool = True              # pre-LN; False: post-LN as in the paper
    positional: str = "sinusoidal"       # or "learned"
    share_embeddings: bool = True        # one matrix for source, target and output (a joint subword vocabulary)
    impl: str = "scratch"                # or "torch": the same model on nn.Transformer
    use_sdpa: bool = False               # scratch attention through F.scaled_dot_product_attention
    fast_dropout: bool = False           # dropout masks from random bytes on the CPU (`fast_dropout`)
    output_ids: list[int] | None = field(default=None, repr=False)   # the pieces the softmax covers,
    #                                      ascending, the specials 0-3 first (None: all; `Transformer.output`)

    def to_dict(self) -> dict:
        return asdict(self)


# ----------------------------------------------------------------------------- dropout
def fast_dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Inverted dropout: zero each element with probability p, scale the rest by 1 / (1 - p).

    Same as F.dropout, except on the CPU: there torch samples a Bernoulli mask one number at a time,
    and torch.profiler shows that sampling as the costliest op of this model's training step on the
    2-core CPU. Here each element gets one random byte instead, four from each 32-bit draw; p is
    rounded to a multiple of 1/256 (0.2 -> 51/256 = 0.199). Speed: `bench.py --parts speed`.
    """
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu":
        return F.dropout(x, p, training)
    drop = round(p * 256)                                                        # bytes below this are dropped
    n = x.numel()
    bytes_ = torch.empty((n + 3) // 4, dtype=torch.int32).random_(-2 ** 31, 2 ** 31).view(torch.uint8)
    keep = bytes_[:n].view(x.shape) >= drop
    return torch.where(keep, x * (256 / (256 - drop)), 0.0)


def pick(value: float | None, default: float) -> float:
    return default if value is None else value


class Dropout(nn.Module):
    """nn.Dropout, or with .fast the CPU mask of `fast_dropout` above (Transformer sets it from --fast_dropout)."""

    def __init__(self, p: float):
        super().__init__()
        self.p, self.fast = p, False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (fast_dropout if self.fast else F.dropout)(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"


# ----------------------------------------------------------------------------- attention
def scaled_dot_product_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                                 mask: torch.Tensor | None = None, dropout: float = 0.0,
                                 training: bool = False, fast: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention(Q, K, V) = softmax(Q K^T / sqrt(d_k)) V, written out.

    query (..., T, d_k), key (..., S, d_k), value (..., S, d_v); mask broadcastable to (..., T, S),
    True where attending is allowed. Returns the output (..., T, d_v) and the weights (..., T, S).
    Dividing by sqrt(d_k) keeps the scores' variance near 1 whatever d_k is, so the softmax does not
    saturate (and its gradient vanish) as heads get wider.
    """
    scores = query @ key.transpose(-2, -1) / math.sqrt(query.size(-1))          # (..., T, S)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = torch.softmax(scores, dim=-1)
    return (fast_dropout if fast else F.dropout)(weights, dropout, training) @ value, weights


class MultiHeadAttention(nn.Module):
    """MultiHead(Q, K, V) = Concat(head_1, ..., head_h) W^O,  head_i = Attention(Q W_i^Q, K W_i^K, V W_i^V).

    The h projections of size d_model/h are done as one (3 d_model, d_model) matrix, `in_proj_weight`,
    laid out as in nn.MultiheadAttention (rows: W^Q, then W^K, then W^V).
    """

    def __init__(self, d_model: int, n_heads: int, dropout: float = 0.0, use_sdpa: bool = True):
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model {d_model} is not divisible by n_heads {n_heads}")
        self.d_model, self.n_heads, self.dropout, self.use_sdpa = d_model, n_heads, dropout, use_sdpa
        self.keep_weights = False          # True: every call stores its attention weights in .last_weights
        self.fast_dropout = False          # True: dropout on the weights through `fast_dropout`
        self.last_weights: torch.Tensor | None = None
        self.in_proj_weight = nn.Parameter(torch.empty(3 * d_model, d_model))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * d_model))
        self.out_proj = nn.Linear(d_model, d_model)
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.out_proj.bias)

    def split_heads(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, _ = x.shape
        return x.view(batch, length, self.n_heads, -1).transpose(1, 2)          # (B, h, L, d_k)

    def project(self, x: torch.Tensor, which: slice) -> torch.Tensor:
        return F.linear(x, self.in_proj_weight[which], self.in_proj_bias[which])

    def project_kv(self, memory: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values of `memory` (B, S, D), split into heads: (B, h, S, d_k) each."""
        d = self.d_model
        key, value = self.project(memory, slice(d, 3 * d)).chunk(2, dim=-1)
        return self.split_heads(key), self.split_heads(value)

    def forward(self, query: torch.Tensor, key_value: torch.Tensor | None = None, mask: torch.Tensor | None = None,
                cache: dict | None = None, need_weights: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """query (B, T, D) attends to key_value (B, S, D) (itself when None). mask: (B or 1, 1 or T, S), True = allowed.

        cache (decoding one position at a time): for self-attention the new key/value are appended
        to cache["key"]/cache["value"]; for cross-attention they are computed once and kept.
        """
        d = self.d_model
        if key_value is None:                                                    # self-attention
            q, k, v = self.project(query, slice(0, 3 * d)).chunk(3, dim=-1)
            q, k, v = self.split_heads(q), self.split_heads(k), self.split_heads(v)
            if cache is not None:
                if "key" in cache:
                    k = torch.cat([cache["key"], k], dim=2)                     # (B, h, t, d_k)
                    v = torch.cat([cache["value"], v], dim=2)
                cache["key"], cache["value"] = k, v
        else:                                                                    # cross-attention
            q = self.split_heads(self.project(query, slice(0, d)))
            if cache is not None and "key" in cache:
                k, v = cache["key"], cache["value"]
            else:
                k, v = self.project_kv(key_value)
                if cache is not None:
                    cache["key"], cache["value"] = k, v
        head_mask = mask.unsqueeze(1) if mask is not None else None              # (B, 1, T or 1, S)
        dropout = self.dropout if self.training else 0.0
        need_weights = need_weights or self.keep_weights
        if self.use_sdpa and not need_weights:
            out, weights = F.scaled_dot_product_attention(q, k, v, attn_mask=head_mask, dropout_p=dropout), None
        else:
            out, weights = scaled_dot_product_attention(q, k, v, head_mask, dropout, self.training,
                                                        self.fast_dropout)
        if self.keep_weights:
            self.last_weights = weights.detach()                                 # (B, h, T, S)
        out = out.transpose(1, 2).reshape(query.size(0), query.size(1), d)       # (B, T, D): heads concatenated
        return self.out_proj(out), weights


# ----------------------------------------------------------------------------- positions
def sinusoidal_encoding(max_len: int, d_model: int) -> torch.Tensor:
    """PE(pos, 2i) = sin(pos / 10000^(2i/d)),  PE(pos, 2i+1) = cos(pos / 10000^(2i/d)): (max_len, d_model)."""
    position = torch.arange(max_len, dtype=torch.float32).unsqueeze(1)           # (L, 1)
    frequency = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32) * (-math.log(10000.0) / d_model))
    encoding = torch.zeros(max_len, d_model)
    encoding[:, 0::2] = torch.sin(position * frequency)
    encoding[:, 1::2] = torch.cos(position * frequency)
    return encoding


class PositionalEncoding(nn.Module):
    """Adds position information to the (scaled) embeddings: fixed sinusoids, or a learned table."""

    def __init__(self, d_model: int, max_len: int, kind: str = "sinusoidal"):
        super().__init__()
        self.kind = kind
        if kind == "sinusoidal":
            self.register_buffer("table", sinusoidal_encoding(max_len, d_model), persistent=False)
        elif kind == "learned":
            self.table = nn.Parameter(torch.randn(max_len, d_model) * 0.02)
        else:
            raise ValueError(f"unknown positional encoding {kind!r}; choose sinusoidal or learned")

    def forward(self, x: torch.Tensor, start: int = 0) -> torch.Tensor:
        """x (B, L, D) holds positions start .. start + L - 1."""
        if start + x.size(1) > self.table.size(0):
            raise ValueError(f"sequence of {start + x.size(1)} positions is longer than max_len {self.table.size(0)}")
        return x + self.table[start: start + x.size(1)]


# ----------------------------------------------------------------------------- layers
class EncoderLayer(nn.Module):
    """x + SelfAttention(x), then x + FFN(x), FFN(x) = W_2 ReLU(W_1 x + b_1) + b_2, each with LayerNorm:
    post-LN  x = LN(x + Sublayer(x))   (the paper);    pre-LN  x = x + Sublayer(LN(x))   (trains more easily)."""

    def __init__(self, d_model: int, n_heads: int, d_ff: int, dropout: float, norm_first: bool, use_sdpa: bool = True,
                 attention_dropout: float | None = None, activation_dropout: float | None = None):
        super().__init__()
        self.norm_first = norm_first
        self.self_attn = MultiHeadAttention(d_model, n_heads, pick(attention_dropout, dropout), use_sdpa)
        self.linear1, self.linear2 = nn.Linear(d_model, d_ff), nn.Linear(d_ff, d_model)
        self.norm1, self.norm2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.dropout, self.activation_dropout = Dropout(dropout), Dropout(pick(activation_dropout, dropout))

    def feed_forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear2(self.activation_dropout(F.relu(self.linear1(x))))

    def attend(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        return self.self_attn(x, mask=mask)[0]

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        if self.norm_first:
            x = x + self.dropout(self.attend(self.norm1(x), mask))
            return x + self.dropout(self.feed_forward(self.norm2(x)))
        x = self.norm1(x + self.dropout(self.attend(x, mask)))
        return self.norm2(x + self.dropout(self.feed_forward(x)))


class DecoderLayer(nn.Module):
    """Masked self-attention (each position sees itself and the ones before), cross-attention to the
    encoder output, then the feed-forward block; residuals and LayerNorm as in EncoderLayer."""

    def __init__(self, d_model: int, n_heads: int, d_ff: int, dropout: float, norm_first: bool, use_sdpa: bool = True,
                 attention_dropout: float | None = None, activation_dropout: float | None = None):
        super().__init__()
        self.norm_first = norm_first
        self.self_attn = MultiHeadAttention(d_model, n_heads, pick(attention_dropout, dropout), use_sdpa)
        self.multihead_attn = MultiHeadAttention(d_model, n_heads, pick(attention_dropout, dropout), use_sdpa)
        self.linear1, self.linear2 = nn.Linear(d_model, d_ff), nn.Linear(d_ff, d_model)
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(d_model), nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.dropout, self.activation_dropout = Dropout(dropout), Dropout(pick(activation_dropout, dropout))

    def feed_forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear2(self.activation_dropout(F.relu(self.linear1(x))))

    def forward(self, x: torch.Tensor, memory: torch.Tensor, self_mask: torch.Tensor | None,
                memory_mask: torch.Tensor | None, cache: dict | None = None) -> torch.Tensor:
        self_cache = cache.setdefault("self", {}) if cache is not None else None
        cross_cache = cache.setdefault("cross", {}) if cache is not None else None
        blocks = [lambda h: self.self_attn(h, mask=self_mask, cache=self_cache)[0],
                  lambda h: self.multihead_attn(h, memory, memory_mask, cache=cross_cache)[0],
                  self.feed_forward]
        for block, norm in zip(blocks, (self.norm1, self.norm2, self.norm3)):
            x = x + self.dropout(block(norm(x))) if self.norm_first else norm(x + self.dropout(block(x)))
        return x


# ----------------------------------------------------------------------------- the model
def check_torch_impl(dropout: float, attention_dropout: float | None, activation_dropout: float | None) -> None:
    """What the nn.Transformer model cannot do (ValueError): train.py asks before any data loads."""
    if pick(attention_dropout, dropout) != dropout or pick(activation_dropout, dropout) != dropout:
        raise ValueError("nn.Transformer has one dropout rate; --attention_dropout/--activation_dropout need "
                         "--impl scratch")


def check_output_ids(output_ids: Any, vocab_size: int) -> None:
    """The pieces the softmax covers must be integers ascending from the specials 0-3, inside the vocabulary
    (ValueError otherwise: a checkpoint edited by hand, or built for another vocabulary)."""
    ids = list(output_ids) if isinstance(output_ids, (list, tuple)) else None
    if not ids or not all(type(i) is int for i in ids) or ids[:4] != [0, 1, 2, 3] \
            or any(b <= a for a, b in zip(ids, ids[1:])) or ids[-1] >= vocab_size:
        raise ValueError("output_ids must ascend from the specials 0-3 and lie in the target vocabulary")


def torch_encoder(c: TransformerConfig) -> nn.TransformerEncoder:
    """nn.Transformer's own encoder, built as nn.Transformer builds it (same parameters, same random draws), but
    with nested tensors off where torch cannot use them anyway (pre-LN, or an odd number of heads): built with them
    on, it warns at every construction that it will not use them."""
    layer = nn.TransformerEncoderLayer(c.d_model, c.n_heads, c.d_ff, c.dropout, batch_first=True,
                                       norm_first=c.norm_first)
    nested = not c.norm_first and c.n_heads % 2 == 0
    return nn.TransformerEncoder(layer, c.n_encoder_layers, nn.LayerNorm(c.d_model), enable_nested_tensor=nested)


def causal_mask(length: int, device: torch.device | None = None) -> torch.Tensor:
    """(1, T, T): position t may attend to positions 0..t (True on and below the diagonal)."""
    return torch.ones(length, length, dtype=torch.bool, device=device).tril().unsqueeze(0)


class Transformer(nn.Module):
    """Encoder-decoder Transformer for translation.

        x = Dropout(Embed(tokens) * sqrt(d_model) + PE)
        encoder: N x EncoderLayer, then LayerNorm          -> memory (B, S, D)
        decoder: N x DecoderLayer(memory), then LayerNorm  -> h (B, T, D)
        p(y_t | y_<t, x) = softmax(h_t W_emb^T + b)        (output matrix = target embedding)

    The final LayerNorms are needed by pre-LN (its residual stream is never normalised otherwise);
    nn.Transformer always has them, so this model does too, post-LN included, and the two match exactly.
    """

    def __init__(self, config: TransformerConfig):
        super().__init__()
        self.config = c = config
        self.src_embed = nn.Embedding(c.src_vocab_size, c.d_model, padding_idx=PAD_ID)
        self.tgt_embed = self.src_embed if c.share_embeddings else nn.Embedding(c.tgt_vocab_size, c.d_model,
                                                                                   padding_idx=PAD_ID)
        for embedding in {id(self.src_embed): self.src_embed, id(self.tgt_embed): self.tgt_embed}.values():
            nn.init.normal_(embedding.weight, std=c.d_model ** -0.5)   # times sqrt(d_model): unit-size inputs
            nn.init.zeros_(embedding.weight[PAD_ID])
        self.positions = PositionalEncoding(c.d_model, c.max_len, c.positional)
        self.dropout = Dropout(c.dropout)
        if c.impl == "scratch":
            extra = dict(attention_dropout=c.attention_dropout, activation_dropout=c.activation_dropout)
            self.encoder_layers = nn.ModuleList(EncoderLayer(c.d_model, c.n_heads, c.d_ff, c.dropout, c.norm_first,
                                                             c.use_sdpa, **extra) for _ in range(c.n_encoder_layers))
            self.decoder_layers = nn.ModuleList(DecoderLayer(c.d_model, c.n_heads, c.d_ff, c.dropout, c.norm_first,
                                                             c.use_sdpa, **extra) for _ in range(c.n_decoder_layers))
            self.encoder_norm, self.decoder_norm = nn.LayerNorm(c.d_model), nn.LayerNorm(c.d_model)
        elif c.impl == "torch":
            check_torch_impl(c.dropout, c.attention_dropout, c.activation_dropout)
            self.transformer = nn.Transformer(c.d_model, c.n_heads, c.n_encoder_layers, c.n_decoder_layers, c.d_ff,
                                              c.dropout, batch_first=True, norm_first=c.norm_first,
                                              custom_encoder=torch_encoder(c))
        else:
            raise ValueError(f"unknown impl {c.impl!r}; choose scratch or torch")
        self.generator = nn.Linear(c.d_model, c.tgt_vocab_size)
        self.generator.weight = self.tgt_embed.weight
        if c.output_ids is not None:
            check_output_ids(c.output_ids, c.tgt_vocab_size)    # on the list: the model may be built on "meta"
            ids = torch.tensor(c.output_ids, dtype=torch.long)
            position = torch.full((c.tgt_vocab_size,), UNK_ID, dtype=torch.long)   # a piece not covered: <unk>
            position[ids] = torch.arange(len(ids))
            self.register_buffer("output_id_list", ids, persistent=False)           # softmax position -> piece id
            self.register_buffer("output_position", position, persistent=False)    # piece id -> softmax position
        for module in self.modules():                  # --fast_dropout 1: every dropout of the scratch model
            if isinstance(module, Dropout):
                module.fast = c.fast_dropout
            elif isinstance(module, MultiHeadAttention):
                module.fast_dropout = c.fast_dropout

    def embed(self, tokens: torch.Tensor, embedding: nn.Embedding, start: int = 0) -> torch.Tensor:
        """Dropout(Embed(tokens) * sqrt(d_model) + PE) for positions start .. start + T - 1."""
        return self.dropout(self.positions(embedding(tokens) * math.sqrt(self.config.d_model), start))

    def output(self, hidden: torch.Tensor) -> torch.Tensor:
        """Logits h W^T + b over the target vocabulary, W = the target embedding matrix.

        With config.output_ids only over those pieces (the rows of W and b they pick, in that order):
        a joint vocabulary's English-only pieces are never a right answer, and each costs a column of the
        largest matrix product. `output_targets` maps labels to these positions, `full_vocab` maps back.
        """
        weight, bias = self.tgt_embed.weight, self.generator.bias
        if self.config.output_ids is not None:
            weight, bias = weight[self.output_id_list], bias[self.output_id_list]
        return F.linear(hidden, weight, bias)

    def output_targets(self, tokens: torch.Tensor) -> torch.Tensor:
        """Target piece ids -> positions in `output`'s logits (a piece outside output_ids: <unk>'s)."""
        return tokens if self.config.output_ids is None else self.output_position[tokens]

    def full_vocab(self, scores: torch.Tensor) -> torch.Tensor:
        """(N, V_out) scores over output_ids -> (N, V) over the whole vocabulary, -inf for the pieces left out."""
        if self.config.output_ids is None:
            return scores
        full = scores.new_full((*scores.shape[:-1], self.config.tgt_vocab_size), float("-inf"))
        return full.index_copy_(-1, self.output_id_list, scores)

    def encode(self, src: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """src (B, S) -> memory (B, S, D) and the key mask (B, 1, S), True on real tokens."""
        mask = (src != PAD_ID).unsqueeze(1)
        x = self.embed(src, self.src_embed)
        if self.config.impl == "torch":
            return self.transformer.encoder(x, src_key_padding_mask=~mask.squeeze(1)), mask
        for layer in self.encoder_layers:
            x = layer(x, mask)
        return self.encoder_norm(x), mask

    def decode(self, tgt_in: torch.Tensor, memory: torch.Tensor, memory_mask: torch.Tensor,
               cache: list[dict] | None = None, start: int = 0) -> torch.Tensor:
        """Decoder states (B, T, D) for the target inputs tgt_in (B, T) at positions start..start+T-1.

        With `cache` (one dict per layer), earlier positions' keys and values are reused, so a step
        that feeds only the newest word costs one position, not the whole prefix.
        """
        x = self.embed(tgt_in, self.tgt_embed, start)
        self_mask = None if cache is not None and tgt_in.size(1) == 1 else causal_mask(tgt_in.size(1), tgt_in.device)
        if self.config.impl == "torch":
            if cache is not None:
                raise ValueError("the nn.Transformer model decodes without a cache")
            return self.transformer.decoder(x, memory, tgt_mask=~self_mask.squeeze(0),
                                            memory_key_padding_mask=~memory_mask.squeeze(1))
        for i, layer in enumerate(self.decoder_layers):
            x = layer(x, memory, self_mask, memory_mask, cache[i] if cache is not None else None)
        return self.decoder_norm(x)

    @torch.no_grad()
    def cross_attention(self, src: torch.Tensor, tgt_in: torch.Tensor) -> torch.Tensor:
        """Every decoder layer's cross-attention weights for a given output: (layers, B, heads, T, S)."""
        if self.config.impl != "scratch":
            raise ValueError("attention maps come from the scratch model (--impl scratch)")
        layers = [layer.multihead_attn for layer in self.decoder_layers]
        for attention in layers:
            attention.keep_weights = True
        try:
            self.forward(src, tgt_in)
            return torch.stack([attention.last_weights for attention in layers])
        finally:
            for attention in layers:
                attention.keep_weights, attention.last_weights = False, None

    def forward(self, src: torch.Tensor, tgt_in: torch.Tensor) -> torch.Tensor:
        """Logits (B, T, V) for the next word after each prefix of tgt_in (<bos> y_1 ... y_{T-1});
        with config.output_ids V is their number (labels through `output_targets`)."""
        memory, memory_mask = self.encode(src)
        return self.output(self.decode(tgt_in, memory, memory_mask))
