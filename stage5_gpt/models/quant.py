"""Post-training int8 quantization of GPT-mini, written out from tensor operations.

Weights, symmetric and per output channel (one scale per row of a Linear's (out, in) weight):

    s_j   = max_k |W_jk| / 127                       one float scale per output channel j
    Q_jk  = clamp(round(W_jk / s_j), -127, 127)      int8
    W_jk ~ s_j Q_jk,   |W_jk - s_j Q_jk| <= s_j / 2  (rounding to the nearest step of size s_j)

Activations, dynamic and per token (computed afresh at every call, one scale per row of the input):

    a_t   = max_k |x_tk| / 127,   X_tk = round(x_tk / a_t)      int8, |x_tk - a_t X_tk| <= a_t / 2

The product then runs on integers, exact in int32, and one multiplication restores the units:

    y_tj = a_t s_j sum_k X_tk Q_jk + b_j

Symmetric (no zero point) keeps that sum a plain integer matmul; 127 rather than 128 keeps +-max both
representable. Per-channel scales matter because rows of a trained weight differ in size: one scale for the
whole matrix would spend most of the 255 levels of the small rows on values they never take.

The GPT's output layer shares its matrix with the token embedding (weight tying). That matrix is quantized
once, per row: a row is one token's embedding (what the lookup reads) and one output channel of the LM head
(what the per-channel scale is for), so one int8 table and one scale per token serve both uses, and the file
holds the matrix once, as the float model does. The position embeddings, LayerNorms and biases stay float32:
they are a few percent of the weights and quantizing them would save little.

bf16 / fp16 weights (`cast_state`) are the simple baseline: half the bytes, each weight rounded to 8 (bf16) or
11 (fp16) significant bits, nothing else changed.
"""
from __future__ import annotations

import copy
import warnings
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from stage5_gpt.models.gpt import GPT

QMAX = 127                      # symmetric int8: [-127, 127], so that -max and +max are both levels
HALF_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
METHODS = ("int8", *HALF_DTYPES)


def quantize_per_channel(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(out, in) float weight -> (int8 Q (out, in), float32 scale s (out,)) with W ~ s[:, None] * Q.

    s_j = max_k |W_jk| / 127 (a row of zeros gets s_j = 1: any scale represents it exactly),
    Q_jk = clamp(round(W_jk / s_j), -127, 127); the error |W - s Q| is at most s_j / 2 per element."""
    weight = weight.detach().float()
    scale = weight.abs().amax(dim=1) / QMAX                          # (out,)
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    q = torch.round(weight / scale[:, None]).clamp(-QMAX, QMAX).to(torch.int8)   # (out, in)
    return q, scale


def dequantize(q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """int8 Q (rows, cols) and per-row scale (rows,) -> the float matrix they stand for, s[:, None] * Q."""
    return q.float() * scale[:, None]


def quantize_per_token(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, in) float activations -> (int8 X (N, in), float32 scale a (N, 1)), x ~ a * X, |x - a X| <= a / 2.

    a_t = max_k |x_tk| / 127 per row (a row of zeros gets a tiny scale and quantizes to zeros). No clamp is
    needed: |x_tk| / a_t <= 127 by the choice of a_t, and rounding cannot pass 127."""
    scale = x.abs().amax(dim=-1, keepdim=True).clamp_(min=1e-12).div_(QMAX)    # (N, 1)
    q = torch.div(x, scale).round_().to(torch.int8)                            # (N, in)
    return q, scale


def int8_matmul(x_q: torch.Tensor, w_q: torch.Tensor) -> torch.Tensor:
    """(N, in) int8 @ (out, in)^T int8 -> (N, out) int32, the exact integer sums.

    On the CPU, torch._int_mm runs oneDNN's s8 x s8 -> s32 matmul (VNNI instructions where the CPU has them)
    and reads the weight as int8. Measured for this model's shapes (torch 2.13, 1 thread): at batch 1 it takes
    about as long as the float32 matmul (16 vs 13 us for 256 -> 768; 176 vs 317 us for an 8192-token LM head)
    and a third of dequantize-then-matmul, whose float copy of the weight alone costs 28 us at every call; with
    4096 rows (evaluation) it is 4x faster than float32 (4.5 vs 18 ms). So int8 it is. What int8 does not win
    back at batch 1 is the quantizing of the input and the rescaling of the output: a handful of elementwise
    operations, each its own pass and dispatch in eager PyTorch, where quantize_dynamic does them inside one
    fbgemm call. Elsewhere (CUDA wants at least 17 rows and sizes in multiples of 8; MPS has no int8 matmul)
    the same integers are multiplied in float32: exact while in * 127^2 < 2^24, i.e. up to 1040 inputs."""
    if x_q.device.type == "cpu":
        return torch._int_mm(x_q, w_q.t())
    return (x_q.float() @ w_q.float().t()).round_().to(torch.int32)


def int8_linear(x: torch.Tensor, qweight: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """(N, in) float rows through an int8 layer (bias aside): quantize each row, multiply in integers, restore
    the units with two broadcast products (not x_scale * scale first: that outer product is an (N, out) pass of
    its own). In eager PyTorch each step is its own operator and its own pass over memory; `fuse` compiles this
    function so that the steps around the integer matmul run as fused loops."""
    x_q, x_scale = quantize_per_token(x)                                 # (N, in) int8, (N, 1)
    return int8_matmul(x_q, qweight).mul(x_scale).mul_(scale)           # (N, out) float32


class QuantLinear(nn.Module):
    """A Linear layer with int8 weights and per-output-channel scales, and int8 activations quantized per token
    at every call (see the module docstring):

        y = a s^T * (X Q^T) + b,   X, a = quantize_per_token(x),   Q, s = quantize_per_channel(W)

    `qweight` (int8, (out, in)) and `scale` (float32, (out,)) are buffers, so state_dict saves them and no
    optimizer ever sees them: a quantized model is for inference."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.register_buffer("qweight", torch.zeros(out_features, in_features, dtype=torch.int8))
        self.register_buffer("scale", torch.ones(out_features))
        self.register_buffer("bias", torch.zeros(out_features) if bias else None)
        self.kernel = int8_linear            # `fuse` swaps in a compiled copy

    @classmethod
    def from_float(cls, linear: nn.Linear) -> "QuantLinear":
        module = cls(linear.in_features, linear.out_features, linear.bias is not None)
        q, scale = quantize_per_channel(linear.weight)
        module.qweight, module.scale = q, scale
        if linear.bias is not None:
            module.bias = linear.bias.detach().float().clone()
        return module

    @classmethod
    def tied_to(cls, embedding: "QuantEmbedding") -> "QuantLinear":
        """The LM head of a tied GPT: the same int8 table and scales as the token embedding (no copy)."""
        module = cls(embedding.embedding_dim, embedding.num_embeddings, bias=False)
        module.qweight, module.scale = embedding.qweight, embedding.scale
        return module

    @property
    def weight(self) -> torch.Tensor:
        """The float weight this layer stands for, s[:, None] * Q, computed when asked (for code that reads a
        Linear's weight, such as the comparisons in the tests)."""
        return dequantize(self.qweight, self.scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        y = self.kernel(x.reshape(-1, self.in_features).float(), self.qweight, self.scale)    # (N, out)
        if self.bias is not None:
            y = y.add_(self.bias)
        return y.view(*shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, " \
               f"bias={self.bias is not None}, int8 per-channel weights, int8 per-token activations"


class QuantEmbedding(nn.Module):
    """A token embedding stored as int8 rows with one scale per row: E[i] ~ s_i Q_i (the lookup dequantizes only
    the rows it reads)."""

    def __init__(self, num_embeddings: int, embedding_dim: int) -> None:
        super().__init__()
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        self.register_buffer("qweight", torch.zeros(num_embeddings, embedding_dim, dtype=torch.int8))
        self.register_buffer("scale", torch.ones(num_embeddings))

    @classmethod
    def from_float(cls, embedding: nn.Embedding) -> "QuantEmbedding":
        module = cls(embedding.num_embeddings, embedding.embedding_dim)
        module.qweight, module.scale = quantize_per_channel(embedding.weight)
        return module

    @property
    def weight(self) -> torch.Tensor:
        return dequantize(self.qweight, self.scale)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return F.embedding(idx, self.qweight).float() * self.scale[idx].unsqueeze(-1)    # (..., C)


def quantize_model(model: nn.Module) -> nn.Module:
    """Replace, in place, every nn.Linear of `model` (a GPT, or a classifier holding one) by a QuantLinear; a GPT
    whose LM head is tied to its token embedding gets one int8 table for both (QuantEmbedding + a tied
    QuantLinear). Returns the model, in eval mode."""
    for gpt in [m for m in model.modules() if isinstance(m, GPT)]:
        if isinstance(gpt.wte, nn.Embedding) and gpt.lm_head.weight is gpt.wte.weight:
            gpt.wte = QuantEmbedding.from_float(gpt.wte)
            gpt.lm_head = QuantLinear.tied_to(gpt.wte)
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.Linear:
                setattr(parent, name, QuantLinear.from_float(child))
    return model.eval()


def fuse(model: nn.Module) -> nn.Module:
    """Run every QuantLinear of `model` through a torch.compile'd int8_linear (in place; returns the model).

    Inductor turns the elementwise steps (absolute value, row maximum, divide, round, convert to int8; then the
    two rescaling products) into a couple of generated C++ loops around the integer matmul, one pass over the
    rows each instead of one per step: by hand, this is what fbgemm's dynamic quantized linear does inside
    quantize_dynamic. It pays when many rows go through at once (scoring, a long prompt); at batch 1 the compiled
    call costs about what the eager steps do. The first calls compile (tens of seconds; a C++ compiler is
    needed); dynamic=True keeps one compiled kernel for the different numbers of rows."""
    kernel = torch.compile(int8_linear, dynamic=True)
    for module in model.modules():
        if isinstance(module, QuantLinear):
            module.kernel = kernel
    return model


def quantized_names(model: nn.Module) -> list[str]:
    """The names of the modules that hold int8 weights."""
    return [name for name, m in model.named_modules() if isinstance(m, (QuantLinear, QuantEmbedding))]


def parameter_count(model: nn.Module) -> int:
    """The model's weights and biases, float or int8 (a tied matrix once); the scales are not counted."""
    return sum(p.numel() for p in model.parameters()) + sum(
        b.numel() for name, b in model.named_buffers() if name.endswith(("qweight", ".bias")))


def cast_state(state: dict[str, torch.Tensor], method: str) -> dict[str, torch.Tensor]:
    """The bf16 / fp16 baseline: every floating-point tensor cast to half precision (tied tensors stay tied)."""
    dtype = HALF_DTYPES[method]
    cast: dict[tuple, torch.Tensor] = {}
    out = {}
    for name, tensor in state.items():
        if tensor.is_floating_point():
            # tied tensors (wte and lm_head) are distinct tensor objects over one storage: key by what they view
            key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape),
                   tuple(tensor.stride()))
            if key not in cast:
                cast[key] = tensor.detach().to(dtype)
            out[name] = cast[key]
        else:
            out[name] = tensor
    return out


def pytorch_dynamic(model: nn.Module) -> nn.Module:
    """PyTorch's own post-training dynamic int8 quantization of every nn.Linear of a copy of `model`:
    torch.ao.quantization.quantize_dynamic with its default settings (per-tensor int8 weights, activations
    quantized per tensor at each call, fbgemm/x86 kernels). torch 2.13 still ships it but marks it deprecated in
    favour of the separate torchao package; the warning is silenced here because the comparison is the point."""
    from torch.ao.quantization import quantize_dynamic  # noqa: PLC0415 - only the comparisons need it

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantized = quantize_dynamic(copy.deepcopy(model).eval(), {nn.Linear}, dtype=torch.qint8)
    return quantized


def state_bytes(state: dict[str, Any]) -> int:
    """Bytes of a state dict as torch.save writes it (shared tensors once)."""
    import io  # noqa: PLC0415

    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.tell()


# ----------------------------------------------------------------------------- checkpoints
def check_record(where: str, record: Any) -> str:
    """The method of a checkpoint's quantization record (what quantize.py wrote), or a one-line refusal."""
    from scripts.common import UserError  # noqa: PLC0415 - the model code itself needs nothing of scripts/

    if not isinstance(record, dict) or record.get("method") not in METHODS:
        method = record.get("method") if isinstance(record, dict) else record
        raise UserError(f"{where}: its quantization record is damaged or from another version (method "
                        f"{str(method)[:20]!r}); quantize the float checkpoint again with quantize.py")
    return record["method"]


def check_int8_state(where: str, state: Any, skeleton: nn.Module) -> None:
    """The int8 tensors and scales of a quantized checkpoint against the model its config makes (`skeleton`,
    built on the meta device): each present, of its dtype and shape, scales finite and positive, weights within
    [-127, 127], and a tied table identical in its two places. One line names the first problem."""
    from scripts.common import UserError  # noqa: PLC0415

    def bad(reason: str) -> UserError:
        return UserError(f"{where}: its int8 weights are damaged ({reason}); quantize the float checkpoint again "
                         "with quantize.py")

    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise bad("no dict of tensors")
    for name in quantized_names(skeleton):
        module = skeleton.get_submodule(name)
        for key, dtype in (("qweight", torch.int8), ("scale", torch.float32)):
            tensor, shape = state.get(f"{name}.{key}"), tuple(getattr(module, key).shape)
            if tensor is None:
                raise bad(f"{name}.{key} is missing")
            if tensor.dtype != dtype:
                raise bad(f"{name}.{key} is {str(tensor.dtype).removeprefix('torch.')}, not "
                          f"{str(dtype).removeprefix('torch.')}")
            if tuple(tensor.shape) != shape:
                raise bad(f"{name}.{key} has shape {list(tensor.shape)}, the config makes {list(shape)}")
        scale = state[f"{name}.scale"]
        if not (torch.isfinite(scale).all() and (scale > 0).all()):
            raise bad(f"{name}.scale holds a value that is not a positive finite number")
        if (state[f"{name}.qweight"] == -QMAX - 1).any():
            raise bad(f"{name}.qweight holds -128, outside the symmetric range [-127, 127]")
    for gpt_name, gpt in skeleton.named_modules():
        if isinstance(gpt, GPT) and isinstance(gpt.lm_head, QuantLinear) and isinstance(gpt.wte, QuantEmbedding):
            prefix = f"{gpt_name}." if gpt_name else ""
            if not all(torch.equal(state[f"{prefix}wte.{key}"], state[f"{prefix}lm_head.{key}"])
                       for key in ("qweight", "scale")):
                raise bad(f"{prefix}lm_head and {prefix}wte share one table, but the file holds two different ones")


def model_from_quantized(where: str, build: Any, ckpt: dict[str, Any]) -> nn.Module:
    """The model of a quantized checkpoint: `build()` makes the float model of its config (a GPT or a classifier),
    everything is checked before a real tensor is allocated, then the weights are loaded. int8: the model with
    QuantLinear layers; bf16 / fp16: the float32 model with the half-precision weights (rounded once, computed
    in float32: on a CPU, half-precision arithmetic is no faster at batch 1 and loses precision on the way)."""
    from scripts.common import UserError  # noqa: PLC0415
    from scripts.common import model_from_checkpoint as checked_model  # noqa: PLC0415

    method = check_record(where, ckpt.get("quantization"))
    state = ckpt.get("model_state")
    if method in HALF_DTYPES:
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise UserError(f"{where}: the saved weights are not a dict of tensors; quantize the float checkpoint "
                            "again with quantize.py")
        odd = next((k for k, v in state.items() if v.is_floating_point() and v.dtype != HALF_DTYPES[method]), None)
        if odd:
            raise UserError(f"{where}: {odd} is {str(state[odd].dtype).removeprefix('torch.')}, but the file says "
                            f"{method}; quantize the float checkpoint again with quantize.py")
        return checked_model(where, build, {k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    with torch.device("meta"):
        skeleton = quantize_model(build())
    check_int8_state(where, state, skeleton)
    model = checked_model(where, lambda: quantize_model(build()), state)
    for gpt in [m for m in model.modules() if isinstance(m, GPT)]:   # load_state_dict copied into shared storage
        if isinstance(gpt.lm_head, QuantLinear) and isinstance(gpt.wte, QuantEmbedding):
            gpt.lm_head.qweight, gpt.lm_head.scale = gpt.wte.qweight, gpt.wte.scale
    return model.eval()


def quantization_of(path: Any) -> dict[str, Any] | None:
    """The quantization record of the checkpoint at `path`, or None (not quantized, or not readable: the
    program's own loading then says what is wrong). Reads the file memory-mapped: no weight is copied."""
    from scripts.common import checkpoint_entry  # noqa: PLC0415

    return checkpoint_entry(path, "quantization")


def refuse_quantized(path: Any, flag: str, action: str, ckpt: dict[str, Any] | None = None) -> None:
    """A quantized checkpoint is for inference: training from it (fine-tuning, --init_from, --resume) would train
    rounded weights, and int8 ones cannot take gradients. One line, naming the float checkpoint to use. `ckpt`:
    the checkpoint when the caller has loaded it already (else its record is read from `path`)."""
    from scripts.common import UserError  # noqa: PLC0415

    record = ckpt.get("quantization") if ckpt is not None else quantization_of(path)
    if record is not None:
        method = record.get("method") if isinstance(record, dict) else "?"
        source = record.get("source") if isinstance(record, dict) else None
        raise UserError(f"{flag} {path} is a quantized checkpoint ({str(method)[:10]}), for inference only; "
                        f"{action} the float checkpoint{f' it was made from ({source})' if source else ''} instead")
