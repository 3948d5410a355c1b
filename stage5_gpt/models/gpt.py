"""GPT-mini: a decoder-only Transformer language model, written out from tensor operations.

    h_0 = W_te[x] + W_pe[0..T-1]                        token + learned position embeddings
    h_l = h_{l-1} + Attn(LN(h_{l-1}))                   causal multi-head self-attention (pre-LN)
    h_l = h_l + MLP(LN(h_l)),  MLP(z) = W_2 GELU(W_1 z) position-wise feed-forward, 4x wide
    p(x_{t+1} | x_<=t) = softmax(LN(h_L) W_te^T)        the output layer shares the embedding (weight tying)

The parameter names follow GPT-2's (`c_attn`, `c_proj`, `c_fc`, `ln_1`, ...), so GPT-2 weights from
Hugging Face `transformers` load with a transpose and nothing else (`load_hf_gpt2_state`).

Decoding keeps a cache of the keys and values of every position already seen (`KVCache`), so each new
token costs one position of work instead of the whole context again.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F

ATTENTION_IMPLS = ("manual", "sdpa")


@dataclass
class GPTConfig:
    vocab_size: int
    block_size: int = 256       # context length: the most positions the model ever sees at once
    n_layer: int = 6
    n_head: int = 6
    n_embd: int = 384
    dropout: float = 0.0        # on the embeddings and on each residual branch
    attn_dropout: float = 0.0   # on the attention weights (costly on CPU: the fused kernel has no dropout there)
    bias: bool = True           # biases in Linear and LayerNorm, as GPT-2 has them
    attention: str = "sdpa"     # "manual": softmax(QK^T/sqrt(d))V written out; "sdpa": F.scaled_dot_product_attention

    def __post_init__(self) -> None:
        # a config read from an edited checkpoint reaches here too: refuse what cannot be built, in words
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("dropout", "attn_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd {self.n_embd} is not divisible by n_head {self.n_head}")
        if self.attention not in ATTENTION_IMPLS:
            raise ValueError(f"attention must be one of {ATTENTION_IMPLS}, got {self.attention!r}")

    def to_dict(self) -> dict:
        return asdict(self)


class KVCache:
    """Keys and values of the positions seen so far, for one layer: preallocated (B, nh, block_size, hs)."""

    def __init__(self, batch: int, config: GPTConfig, device: torch.device, dtype: torch.dtype) -> None:
        shape = (batch, config.n_head, config.block_size, config.n_embd // config.n_head)
        self.key = torch.zeros(shape, device=device, dtype=dtype)
        self.value = torch.zeros(shape, device=device, dtype=dtype)
        self.length = 0  # positions filled

    def append(self, key: torch.Tensor, value: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store the new positions' keys and values; return all of them so far."""
        start, end = self.length, self.length + key.size(2)
        self.key[:, :, start:end] = key
        self.value[:, :, start:end] = value
        self.length = end
        return self.key[:, :, :end], self.value[:, :, :end]


def causal_mask(q_len: int, k_len: int, device: torch.device) -> torch.Tensor:
    """(q_len, k_len) booleans, True where attending is allowed. The queries are the last q_len of k_len
    positions, so query i may see keys 0 .. k_len - q_len + i."""
    offset = k_len - q_len
    return torch.ones(q_len, k_len, dtype=torch.bool, device=device).tril(diagonal=offset)


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention where position t sees only positions <= t.

        Q, K, V = x W_q, x W_k, x W_v     (one matmul: c_attn, 3 * n_embd outputs)
        head_i  = softmax(Q_i K_i^T / sqrt(d_head) + M) V_i,   M = -inf above the diagonal
        out     = concat(head_1 .. head_h) W_o                 (c_proj)
    """

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.n_head, self.n_embd = config.n_head, config.n_embd
        self.attention = config.attention
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.attn_dropout = nn.Dropout(config.attn_dropout)
        self.resid_dropout = nn.Dropout(config.dropout)
        self.attn_dropout_p = config.attn_dropout
        self.last_weights: torch.Tensor | None = None  # (B, nh, T, T), kept when record_weights is set
        self.record_weights = False

    def forward(self, x: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        B, T, C = x.shape
        hs = C // self.n_head
        query, key, value = self.c_attn(x).split(self.n_embd, dim=2)
        query = query.view(B, T, self.n_head, hs).transpose(1, 2)      # (B, nh, T, hs)
        key = key.view(B, T, self.n_head, hs).transpose(1, 2)          # (B, nh, T, hs)
        value = value.view(B, T, self.n_head, hs).transpose(1, 2)      # (B, nh, T, hs)
        if cache is not None:
            key, value = cache.append(key, value)                      # (B, nh, S, hs), S = cached + T
        S = key.size(2)
        if self.attention == "sdpa" and not self.record_weights:
            # one fused kernel; a plain causal mask when queries and keys cover the same positions
            mask = None if S == T or T == 1 else causal_mask(T, S, x.device)
            y = F.scaled_dot_product_attention(query, key, value, attn_mask=mask, is_causal=S == T and T > 1,
                                               dropout_p=self.attn_dropout_p if self.training else 0.0)
        else:
            scores = query @ key.transpose(-2, -1) / math.sqrt(hs)      # (B, nh, T, S)
            scores = scores.masked_fill(~causal_mask(T, S, x.device), float("-inf"))
            weights = F.softmax(scores.float(), dim=-1).to(query.dtype)
            if self.record_weights:
                self.last_weights = weights.detach()
            y = self.attn_dropout(weights) @ value                       # (B, nh, T, hs)
        y = y.transpose(1, 2).contiguous().view(B, T, C)               # (B, T, C): heads side by side
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    """Position-wise feed-forward: W_2 GELU(W_1 x), 4x wider in the middle (GELU with GPT-2's tanh form)."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.gelu = nn.GELU(approximate="tanh")
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class Block(nn.Module):
    """Pre-LN Transformer block: x + Attn(LN(x)), then x + MLP(LN(x)). Normalising before each sub-layer
    keeps an identity path from input to output, which is why deep pre-LN stacks train without warm-up tricks."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), cache)
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    """The decoder-only language model (see the module docstring for its equations)."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)   # token embeddings (shared with the output)
        self.wpe = nn.Embedding(config.block_size, config.n_embd)   # learned position embeddings
        self.drop = nn.Dropout(config.dropout)
        self.h = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.lm_head.weight = self.wte.weight                        # weight tying: one matrix, two uses
        self.apply(self._init_weights)
        # GPT-2: scale the projections that write into the residual stream by 1/sqrt(2 * n_layer),
        # so the stream's variance does not grow with depth
        for name, param in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(param, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def num_params(self, non_embedding: bool = False) -> int:
        """Parameters, counting the tied matrix once; non_embedding leaves out both embedding tables."""
        total = sum(p.numel() for p in self.parameters())
        if non_embedding:
            total -= self.wte.weight.numel() + self.wpe.weight.numel()
        return total

    def flops_per_token(self, seq_len: int | None = None) -> float:
        """Training FLOPs per token (forward + backward), as in the PaLM paper's appendix B:
        6 N for the weight matmuls (N: parameters without the position table; the tied output layer counts)
        plus 12 L d T for attention scores and the weighted sum over T positions."""
        T = seq_len or self.config.block_size
        n = self.num_params() - self.wpe.weight.numel()
        return 6 * n + 12 * self.config.n_layer * self.config.n_embd * T

    def hidden(self, idx: torch.Tensor, caches: list[KVCache] | None = None) -> torch.Tensor:
        """idx (B, T) token ids -> the final hidden states (B, T, C), after the last LayerNorm.
        With caches, idx holds only the new positions; they continue where the caches stop.
        Fine-tuning puts a classification head on these (stage5_gpt/finetune.py)."""
        B, T = idx.shape
        start = caches[0].length if caches else 0
        if start + T > self.config.block_size:
            raise ValueError(f"{start + T} positions do not fit the context of {self.config.block_size}")
        pos = torch.arange(start, start + T, device=idx.device)          # (T,)
        x = self.drop(self.wte(idx) + self.wpe(pos))                       # (B, T, C)
        for i, block in enumerate(self.h):
            x = block(x, caches[i] if caches else None)
        return self.ln_f(x)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None,
                caches: list[KVCache] | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """idx (B, T) token ids -> logits (B, T, vocab) and, with targets, the mean cross-entropy
        (targets of -1 are ignored). With caches, idx holds only the new positions."""
        logits = self.lm_head(self.hidden(idx, caches))                    # (B, T, vocab)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=-1)
        return logits, loss

    def new_caches(self, batch: int, device: torch.device, dtype: torch.dtype = torch.float32) -> list[KVCache]:
        return [KVCache(batch, self.config, device, dtype) for _ in self.h]

    def set_attention(self, impl: str) -> None:
        """Switch every layer between the written-out attention and F.scaled_dot_product_attention."""
        if impl not in ATTENTION_IMPLS:
            raise ValueError(f"attention must be one of {ATTENTION_IMPLS}, got {impl!r}")
        self.config.attention = impl
        for block in self.h:
            block.attn.attention = impl

    @torch.no_grad()
    def generate(self, idx: torch.Tensor, max_new_tokens: int, temperature: float = 1.0, top_k: int = 0,
                 top_p: float = 1.0, use_cache: bool = True, generator: torch.Generator | None = None,
                 stop_token: int | None = None) -> Iterator[torch.Tensor]:
        """Yield one new token per step, (B,) ids, sampling from the model's next-token distribution.

        Context window: the model sees at most block_size positions. When the text outgrows that, both
        paths drop the older half and go on from the last block_size // 2 tokens (the cached path refills
        its cache from them once, then continues one position per step). Using the same window with and
        without the cache is what makes the two paths give identical tokens.
        """
        block = self.config.block_size
        tokens = idx
        window_start = max(0, tokens.size(1) - block)
        caches = None
        for _ in range(max_new_tokens):
            if tokens.size(1) - window_start > block:      # the window is full: keep its newer half
                window_start = tokens.size(1) - max(1, block // 2)
                caches = None
            if use_cache:
                if caches is None:   # (re)fill the cache with the whole window
                    # the cache holds activations: their dtype is the embeddings' (wpe is never quantized)
                    caches = self.new_caches(tokens.size(0), tokens.device, self.wpe.weight.dtype)
                    logits, _ = self(tokens[:, window_start:], caches=caches)
                else:                # one new position
                    logits, _ = self(tokens[:, -1:], caches=caches)
            else:
                logits, _ = self(tokens[:, window_start:])
            next_token = sample_next(logits[:, -1, :], temperature, top_k, top_p, generator)   # (B,)
            tokens = torch.cat([tokens, next_token[:, None]], dim=1)
            yield next_token
            if stop_token is not None and bool((next_token == stop_token).all()):
                return


def sample_next(logits: torch.Tensor, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """(B, vocab) logits -> (B,) ids. temperature 0 is greedy; top_k keeps the k likeliest tokens;
    top_p keeps the smallest set whose probability reaches p (nucleus sampling)."""
    if temperature <= 0:
        return logits.argmax(dim=-1)
    probs = next_token_probs(logits, temperature, top_k, top_p)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def next_token_probs(logits: torch.Tensor, temperature: float = 1.0, top_k: int = 0,
                     top_p: float = 1.0) -> torch.Tensor:
    """The distribution sample_next draws from, (B, vocab): softmax(logits / temperature) after the top-k and
    top-p cuts (temperature 0: all the mass on the likeliest token)."""
    if temperature <= 0:
        return F.one_hot(logits.argmax(dim=-1), logits.size(-1)).float()
    logits = logits.float() / temperature
    if top_k and top_k < logits.size(-1):
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]          # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        drop = cumulative - sorted_logits.softmax(dim=-1) >= top_p      # tokens past the nucleus
        drop[:, 0] = False                                               # the likeliest token always stays
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    return logits.softmax(dim=-1)


# ----------------------------------------------------------------------------- GPT-2 weights
HF_TRANSPOSED = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")


def config_from_hf_gpt2(hf_config: dict, attention: str = "sdpa") -> GPTConfig:
    """Our config for a Hugging Face GPT2Config (as a dict, e.g. read from its config.json). Settings our
    model does not have (another activation, MLP width or LayerNorm epsilon) are refused, not ignored."""
    unsupported = {"activation_function": ("gelu_new", "gelu_pytorch_tanh"), "n_inner": (None, 4 * hf_config["n_embd"]),
                   "layer_norm_epsilon": (1e-5,), "scale_attn_by_inverse_layer_idx": (False,),
                   "reorder_and_upcast_attn": (False,)}
    for key, allowed in unsupported.items():
        if key in hf_config and hf_config[key] not in allowed:
            raise ValueError(f"this GPT-2 has {key}={hf_config[key]!r}; GPT-mini supports only {allowed[0]!r}")
    return GPTConfig(vocab_size=hf_config["vocab_size"], block_size=hf_config["n_positions"],
                     n_layer=hf_config["n_layer"], n_head=hf_config["n_head"], n_embd=hf_config["n_embd"],
                     dropout=0.0, bias=True, attention=attention)


def load_hf_gpt2_state(model: GPT, hf_state: dict[str, torch.Tensor]) -> None:
    """Copy a `transformers` GPT2LMHeadModel state dict into `model`.

    Names differ only by the `transformer.` prefix, and GPT-2's `Conv1D` stores its weights as
    (in, out), the transpose of `nn.Linear`'s (out, in)."""
    ours = model.state_dict()
    theirs = {k.removeprefix("transformer."): v for k, v in hf_state.items()
              if not k.endswith((".attn.bias", ".attn.masked_bias"))}   # old checkpoints keep mask buffers
    theirs.pop("lm_head.weight", None)                                  # tied to wte
    missing = sorted(set(ours) - set(theirs) - {"lm_head.weight"})
    unexpected = sorted(set(theirs) - set(ours))
    if missing or unexpected:
        raise ValueError(f"GPT-2 state dict does not match: missing {missing[:3]}, unexpected {unexpected[:3]}")
    theirs = {name: tensor.t() if name.endswith(HF_TRANSPOSED) else tensor for name, tensor in theirs.items()}
    for name, tensor in theirs.items():   # every shape first, so a mismatch leaves the model untouched
        if ours[name].shape != tensor.shape:
            raise ValueError(f"{name}: GPT-2 has shape {tuple(tensor.shape)}, ours {tuple(ours[name].shape)}")
    with torch.no_grad():
        for name, tensor in theirs.items():
            ours[name].copy_(tensor)
