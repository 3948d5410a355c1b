"""Quantize a trained GPT-mini (stage 5) after training: int8 weights and activations, or bf16 / fp16 weights.

    python quantize.py --checkpoint checkpoints/gpt_shakespeare_char.pt                 # -> int8_gpt_...pt beside it
    python quantize.py --checkpoint checkpoints/gpt_shakespeare_char.pt --method bf16   # -> bf16_gpt_...pt
    python quantize.py --checkpoint checkpoints/ft_imdb_full.pt --out /tmp/imdb_int8.pt # a fine-tuned classifier
    python generate.py --checkpoint checkpoints/int8_gpt_shakespeare_char.pt --prompt "ROMEO:"
    python evaluate.py --checkpoint checkpoints/int8_gpt_shakespeare_char.pt

The output is a checkpoint like any other of this stage (same model kind, config and tokenizer), so
generate.py and evaluate.py take it with --checkpoint. int8 (models/quant.py): every Linear layer's weight as
int8 with one scale per output channel, the tied embedding / output matrix once, the inputs of each layer
quantized per token as it runs. The file says how it was made (its "quantization" record: method, bits, the
source checkpoint and its SHA-256). A quantized checkpoint is for inference: fine-tuning or resuming from it is
refused.

`measure()` is what bench.py calls: sizes, validation loss, generation speed and IMDb accuracy of float32,
int8 (ours), bf16 and PyTorch's own dynamic quantization.
"""
from __future__ import annotations

import argparse
import io
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from scripts.common import (ArgParser, UserError, add_common_args, check_writable, checkpoint_header,
                            display_path, file_sha256, load_checkpoint, path_arg, refuse_common_flags, refuse_replacing,
                            run_main, save_checkpoint, set_threads)
from stage5_gpt.finetune import model_from_checkpoint
from stage5_gpt.models import quant

STAGE = "stage5_gpt"
STAGE_DIR = Path(__file__).resolve().parent
MODELS = ["gpt", "gpt_classifier"]
# what a quantized checkpoint keeps of its source besides the weights: what the model is and how far it trained
# (not the optimizer or the run's random state: nothing trains from it)
KEPT = ("config", "dataset", "tokenizer", "tokenizer_fingerprint", "args", "finetune", "step", "epoch",
        "best_val_loss", "history")
BITS = {"int8": 8, "bf16": 16, "fp16": 16}


def build_parser() -> argparse.ArgumentParser:
    p = ArgParser(description="Quantize a trained GPT-mini checkpoint: int8 (ours), or bf16 / fp16 weights "
                              "(stage 5).")
    p.add_argument("--checkpoint", "--model_path", dest="checkpoint", type=path_arg, required=True,
                   help="a float checkpoint written by train.py or finetune.py")
    p.add_argument("--method", default="int8", choices=list(quant.METHODS),
                   help="int8: int8 per-channel weights and per-token activations; bf16 / fp16: half-precision "
                        "weights")
    p.add_argument("--out", type=path_arg, default=None,
                   help="where the quantized checkpoint goes (default: beside --checkpoint, <method>_<name>.pt)")
    # the course's one dialect: --data_dir, --device, --seed and --num_threads everywhere; quantizing reads no data
    # set, runs on the CPU and draws no random number, so main() refuses the first three when typed
    add_common_args(p)
    return p


def default_out(source: Path, method: str) -> Path:
    """<method>_<name>.pt beside the source: the prefix keeps it out of the programs' default model (the newest
    checkpoints/gpt_*.pt), so a quantized copy is loaded only when named with --checkpoint."""
    return source.with_name(f"{method}_{source.name}")


def check_output(source: Path, out: Path) -> None:
    """The output must be another file than the input (also through a link), writable, and not a run's last.pt
    (which --resume would take for a training state)."""
    if out.resolve() == source.resolve() or (out.exists() and os.path.samefile(out, source)):
        raise UserError(f"--out {out} is the --checkpoint file; writing there would replace the float model: give "
                        "another --out")
    if out.name == "last.pt":
        raise UserError(f"--out {out}: last.pt is a run's resumable state, and a quantized model cannot be "
                        "trained on; give another name")
    refuse_replacing(out, "--out", lambda path: quant.quantization_of(path) is not None, "a quantized checkpoint")
    check_writable(out, "--out")


def load_float(path: Path) -> tuple[dict[str, Any], torch.nn.Module]:
    """A float checkpoint of this stage and its model, every part checked (config, tokenizer, fine-tuning record,
    weights); a quantized one is refused."""
    ckpt = load_checkpoint(path, STAGE, MODELS)
    quant.refuse_quantized(path, "--checkpoint", "quantize", ckpt)
    model, _ = model_from_checkpoint(ckpt, path)
    return ckpt, model.eval()


def quantized_checkpoint(ckpt: dict[str, Any], model: torch.nn.Module, method: str, source: Path) -> dict[str, Any]:
    """The payload of the quantized checkpoint: the source's description, the new weights, the record."""
    if method == "int8":
        qmodel = quant.quantize_model(model)
        state = {k: v.detach().cpu() for k, v in qmodel.state_dict().items()}
        layers, kept = quant.quantized_names(qmodel), "position embeddings, LayerNorms, biases (float32)"
    else:
        state = quant.cast_state({k: v.detach().cpu() for k, v in model.state_dict().items()}, method)
        layers, kept = [], "every weight, rounded to " + method
    record = {"method": method, "bits": BITS[method],
              "weights": "symmetric int8, one scale per output channel (row)" if method == "int8" else method,
              "activations": "symmetric int8, one scale per token, computed at each call" if method == "int8"
              else "float32", "per_channel": method == "int8", "layers": layers, "kept": kept,
              "tied": "wte and lm_head share one int8 table" if method == "int8" else None,
              "source": str(source), "source_sha256": file_sha256(source), "source_bytes": source.stat().st_size}
    return {**checkpoint_header(STAGE, ckpt["model"]), **{k: ckpt[k] for k in KEPT if k in ckpt},
            "model_state": state, "quantization": record}


def quantize_file(source: Path, method: str, out: Path) -> dict[str, Any]:
    """Quantize the checkpoint `source` into `out` (checked first); returns the sizes."""
    check_output(source, out)
    ckpt, model = load_float(source)
    float_bytes = quant.state_bytes({k: v.float() if v.is_floating_point() else v
                                     for k, v in model.state_dict().items()})
    payload = quantized_checkpoint(ckpt, model, method, source)
    save_checkpoint(out, payload)
    return {"source": str(source), "out": str(out), "method": method, "source_bytes": source.stat().st_size,
            "out_bytes": out.stat().st_size, "float32_weights_bytes": float_bytes,
            "weights_bytes": quant.state_bytes(payload["model_state"])}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    refuse_common_flags(args, "quantize.py")
    set_threads(args.num_threads)
    source = Path(args.checkpoint)
    if args.out and str(args.out).endswith(("/", os.sep)):     # Path() would drop the slash and write a file
        raise UserError(f"--out {args.out} names a folder; give the file to write, such as "
                        f"{Path(args.out) / default_out(source, args.method).name}")
    out = Path(args.out) if args.out else default_out(source, args.method)
    sizes = quantize_file(source, args.method, out)
    print(f"{args.method}: {out} ({sizes['out_bytes']:,} bytes; the float checkpoint {sizes['source_bytes']:,})")
    print(f"weights: float32 {sizes['float32_weights_bytes']:,} bytes -> {args.method} {sizes['weights_bytes']:,} "
          f"bytes, {sizes['float32_weights_bytes'] / sizes['weights_bytes']:.2f}x smaller")
    return 0


# ----------------------------------------------------------------------------- measurements (bench.py)
def load_any(path: Path, device: torch.device) -> tuple[torch.nn.Module, Any, dict[str, Any]]:
    ckpt = load_checkpoint(path, STAGE, MODELS)
    model, tokenizer = model_from_checkpoint(ckpt, path)
    return model.to(device).eval(), tokenizer, ckpt


def val_loss(model: torch.nn.Module, ids: np.ndarray, device: torch.device, batch_size: int) -> float:
    from stage5_gpt.evaluate import score  # noqa: PLC0415 - evaluate.py imports this stage's programs

    nats, count = score(model, ids, batch_size, device, False)
    return nats / count


def tokens_per_s(models: dict[str, torch.nn.Module], tokenizer: Any, device: torch.device, new_tokens: int,
                 repeats: int, prompt: str) -> dict[str, float]:
    """Batch-1 generation speed of each model through generate.py's own path (stream: KV cache, sampling at
    generate.py's default settings, decoding), the models taking turns so that a change in the machine's load
    falls on all of them; the median of `repeats` runs each."""
    from stage5_gpt.generate import FREE_TEXT_TEMPERATURE, stream  # noqa: PLC0415

    ids = tokenizer.encode(prompt)
    settings = {"max_new_tokens": new_tokens, "temperature": FREE_TEXT_TEMPERATURE, "top_k": 0, "top_p": 0.95,
                "seed": 1}
    speeds: dict[str, list[float]] = {name: [] for name in models}
    for name, model in models.items():      # a warm-up run each
        stream(model, tokenizer, ids, {**settings, "max_new_tokens": 20}, True, device, io.StringIO())
    for _ in range(repeats):
        for name, model in models.items():
            _, speed = stream(model, tokenizer, ids, settings, True, device, io.StringIO())
            speeds[name].append(speed)
    return {name: statistics.median(values) for name, values in speeds.items()}


def operator_calls_per_token(model: torch.nn.Module, ids: list[int], steps: int = 10) -> float:
    """How many PyTorch operators (aten and quantized kernels, nested calls included) one generated token costs:
    generating 1 + steps tokens minus generating 1, over steps. At batch 1 a small model's step is mostly the
    fixed cost of these calls, so the count explains its tokens/s where the matmuls themselves do not."""
    def calls(n: int) -> int:
        with torch.inference_mode(), torch.profiler.profile() as prof:
            for _ in model.generate(torch.tensor([ids]), n):
                pass
        return sum(event.count for event in prof.key_averages())
    return (calls(1 + steps) - calls(1)) / steps


def batched_tokens_per_s(models: dict[str, torch.nn.Module], ids: np.ndarray, device: torch.device,
                         batch_size: int, repeats: int, batches: int = 4) -> dict[str, float]:
    """Scoring speed, the batched side of inference (evaluate.py's pass: `batch_size` windows of a full block
    each, every position at once): tokens/s over the first `batches` batches of `ids`, the models taking turns,
    the median of `repeats` runs each (after one warm-up run)."""
    from stage5_gpt.evaluate import score  # noqa: PLC0415 - evaluate.py imports this stage's programs

    block = next(iter(models.values())).config.block_size
    part = ids[: batches * batch_size * block + 1]
    speeds: dict[str, list[float]] = {name: [] for name in models}
    for round_ in range(repeats + 1):
        for name, model in models.items():
            tick = time.perf_counter()
            _, count = score(model, part, batch_size, device, False)
            if round_:
                speeds[name].append(count / (time.perf_counter() - tick))
    return {name: statistics.median(values) for name, values in speeds.items()}


def measure(checkpoint: Path, classifier: Path | None = None, data_dir: Path | None = None, *,
            num_threads: int = 2, new_tokens: int = 500, repeats: int = 5, batch_size: int = 16,
            imdb_limit: int = 0, cache_dir: Path | None = None, work_dir: Path | None = None,
            fused: bool = True, log: Any = print) -> dict[str, Any]:
    """Quantize `checkpoint` (a char or BPE language model) to int8 and bf16 and compare with float32 and with
    PyTorch's quantize_dynamic: file sizes, validation loss over the whole validation split, batch-1 generation
    tokens/s. With `classifier` (a fine-tuned IMDb checkpoint), its IMDb test accuracy in float32 and int8
    (imdb_limit: that many test reviews, a balanced sample; 0: all 25,000). The quantized files go to `work_dir`
    (default: a temporary folder, removed after). Returns a dict (see the report keys at the end)."""
    from stage5_gpt.data import tasks as T  # noqa: PLC0415
    from stage5_gpt.data.corpus import load_text  # noqa: PLC0415

    set_threads(num_threads)
    device = torch.device("cpu")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(work_dir) if work_dir else Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        files = {"float32": Path(checkpoint)}
        sizes = {}
        for method in ("int8", "bf16"):
            files[method] = folder / default_out(Path(checkpoint), method).name
            sizes[method] = quantize_file(Path(checkpoint), method, files[method])
        models, ckpts = {}, {}
        for name, path in files.items():
            models[name], tokenizer, ckpts[name] = load_any(path, device)
        models["pytorch_int8"] = quant.pytorch_dynamic(models["float32"])
        file_bytes = {name: path.stat().st_size for name, path in files.items()}
        # the weights alone, as each file holds them (a bf16 model computes in float32 once loaded), and PyTorch's
        # quantized model's state dict (its int8 weights packed for fbgemm, the tied embedding left float32)
        state_bytes = {name: quant.state_bytes(ckpt["model_state"]) for name, ckpt in ckpts.items()}
        state_bytes["pytorch_int8"] = quant.state_bytes(models["pytorch_int8"].state_dict())
        log(f"sizes (file bytes): {file_bytes}; state dicts: {state_bytes}")

        dataset = ckpts["float32"].get("dataset")
        prompt = "ROMEO:" if dataset == "shakespeare" else "The"
        text = load_text(dataset, str(data_dir) if data_dir else None)["val"]
        ids = np.asarray(tokenizer.encode(text), dtype=np.int64)
        losses = {}
        for name, model in models.items():
            tick = time.time()
            losses[name] = val_loss(model, ids, device, batch_size)
            log(f"val loss {name}: {losses[name]:.4f} ({time.time() - tick:.0f} s)")
        speed_models = {k: models[k] for k in ("float32", "int8", "pytorch_int8")}
        speeds = tokens_per_s(speed_models, tokenizer, device, new_tokens, repeats, prompt)
        log(f"tokens/s: {speeds}")
        scoring_models, compile_seconds = dict(speed_models), None
        if fused:   # ours again, its steps around the integer matmul compiled into fused loops (quant.fuse)
            scoring_models["int8_fused"] = quant.fuse(load_any(files["int8"], device)[0])
            block = scoring_models["int8_fused"].config.block_size
            tick = time.perf_counter()
            with torch.no_grad():   # the first call compiles
                scoring_models["int8_fused"](torch.as_tensor(ids[:batch_size * block]).view(batch_size, block))
            compile_seconds = time.perf_counter() - tick
            log(f"torch.compile of int8_linear: {compile_seconds:.0f} s")
        batched = batched_tokens_per_s(scoring_models, ids, device, batch_size, repeats)
        calls = {name: operator_calls_per_token(model, tokenizer.encode(prompt))
                 for name, model in speed_models.items()}
        log(f"operator calls per generated token: {calls}")
        log(f"scoring tokens/s (batch {batch_size}): {batched}")
        result: dict[str, Any] = {
            "checkpoint": display_path(checkpoint), "dataset": dataset, "val_tokens": int(len(ids) - 1),
            "file_bytes": file_bytes, "state_bytes": state_bytes,
            "size_ratio_int8": file_bytes["float32"] / file_bytes["int8"],
            "size_ratio_bf16": file_bytes["float32"] / file_bytes["bf16"],
            "weights_ratio_int8": sizes["int8"]["float32_weights_bytes"] / sizes["int8"]["weights_bytes"],
            "val_loss": losses,
            "val_loss_rel_change_int8": losses["int8"] / losses["float32"] - 1,
            "val_loss_rel_change_pytorch_int8": losses["pytorch_int8"] / losses["float32"] - 1,
            "tokens_per_s": speeds, "speed_int8_vs_float32": speeds["int8"] / speeds["float32"],
            "speed_int8_vs_pytorch": speeds["int8"] / speeds["pytorch_int8"],
            "speed_pytorch_vs_float32": speeds["pytorch_int8"] / speeds["float32"],
            "operator_calls_per_token": calls, "scoring_tokens_per_s": batched, "scoring_batch_size": batch_size,
            "scoring_int8_vs_float32": batched["int8"] / batched["float32"],
            "scoring_int8_vs_pytorch": batched["int8"] / batched["pytorch_int8"],
            "fused_compile_seconds": compile_seconds,
            "new_tokens": new_tokens, "repeats": repeats, "num_threads": num_threads,
            "load_average": os.getloadavg(), "torch": torch.__version__,
        }
        if classifier is not None:
            result["imdb"] = measure_classifier(Path(classifier), folder, data_dir, imdb_limit, batch_size,
                                                cache_dir, log, T)
    return result


def measure_classifier(path: Path, folder: Path, data_dir: Path | None, limit: int, batch_size: int,
                       cache_dir: Path | None, log: Any, T: Any) -> dict[str, Any]:
    """IMDb test accuracy of the float32 classifier and of its int8 quantization, scored as finetune.py and
    evaluate.py score it (tasks.evaluate_task, the texts cut to the model's max_len)."""
    device = torch.device("cpu")
    out = folder / default_out(path, "int8").name
    sizes = quantize_file(path, "int8", out)
    result: dict[str, Any] = {"checkpoint": display_path(path), "file_bytes": {"float32": sizes["source_bytes"],
                                                                      "int8": sizes["out_bytes"]}}
    result["size_ratio_int8"] = sizes["source_bytes"] / sizes["out_bytes"]
    for name, file in (("float32", path), ("int8", out)):
        model, tokenizer, ckpt = load_any(file, device)
        info = ckpt["finetune"]
        data = T.tokenize(tokenizer, T.load_task("imdb", "test", str(data_dir) if data_dir else None,
                                                 info["ag_news_source"], limit),
                          str(cache_dir) if cache_dir else None)
        tick = time.time()
        metrics = T.evaluate_task(info["kind"], model, tokenizer, data, info["max_len"], 64, device, False,
                                  latency_samples=20)
        result[f"accuracy_{name}"] = metrics["accuracy"]
        result[f"seconds_{name}"] = time.time() - tick
        result["test_size"] = len(data)
        log(f"IMDb test accuracy {name}: {100 * metrics['accuracy']:.2f}% on {len(data):,} reviews "
            f"({result[f'seconds_{name}']:.0f} s)")
    result["accuracy_change_points"] = 100 * (result["accuracy_int8"] - result["accuracy_float32"])
    return result


if __name__ == "__main__":
    run_main(main)
