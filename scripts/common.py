"""Infrastructure shared by every stage, written once.

What lives here (and nowhere else):
- the command line: `ArgParser` (one-line errors), `add_common_args`, `run_main` (exit codes);
- seeds, threads and `--device auto|cpu|cuda|mps`; bf16 autocast where the hardware has it;
- logging to the console and to `<run dir>/train.log`;
- checkpoints: atomic save, safe load (`weights_only=True`), stage/model checks, RNG state for resume;
- `metrics.json` files, in the one format the README tables are made from;
- finding a data set: `--data_dir`, then `$MY_LLM_DATA`, then a download.

Errors a user can cause are raised as `UserError`; `run_main` prints them as one line on stderr
and exits with status 2. A traceback always means a bug.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import functools
import hashlib
import json
import logging
import math
import os
import platform
import random
import shlex
import signal
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

REPO_ROOT = Path(__file__).resolve().parent.parent
DATA_ENV = "MY_LLM_DATA"
EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


class UserError(Exception):
    """A mistake the user can fix: a bad path, malformed data, a wrong checkpoint, a bad value."""


class ChildFailed(Exception):
    """A program this one started (bench.py runs train.py) failed and has already said why on stderr: end with its
    exit status and no second line."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


class TrainingInterrupted(Exception):
    """Ctrl-C arrived during training and a resumable checkpoint is safely on disk."""


# ----------------------------------------------------------------------------- command line
class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """`--help` shows every option's allowed values (a scripts.checks.Range type says them) and default, and keeps
    the description's line breaks (its examples)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        help_text = action.help or ""
        describe = getattr(action.type, "describe", None)
        if callable(describe) and describe() not in help_text:
            help_text += f" (allowed: {describe()})"
        # a default of None means "chosen by the program" (the help says how); booleans show as --x / --no-x
        if action.default is None or action.default is argparse.SUPPRESS or "%(default)" in help_text:
            return help_text
        return help_text + " (default: %(default)s)" if action.option_strings or action.nargs in ("?", "*") \
            else help_text


class ArgParser(argparse.ArgumentParser):
    """argparse, but a bad flag ends in one line on stderr (not a usage dump) and exit status 2, and
    `--help` shows every default."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USER_ERROR, f"error: {message} (see {self.prog} --help)\n")


def add_common_args(parser: argparse.ArgumentParser, seed_help: str = "random seed") -> None:
    """The flags every program of the course takes, in their own group at the end of `--help`."""
    from scripts.checks import SEED, THREADS  # noqa: PLC0415 - checks.py imports this module

    group = parser.add_argument_group("data and hardware")
    group.add_argument("--data_dir", type=path_arg, default=None,
                       help=f"folder holding the data sets (default: ${DATA_ENV}, else download)")
    group.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"],
                       help="where to run: auto picks cuda, then mps, then cpu")
    group.add_argument("--seed", type=SEED, default=0, help=seed_help)
    group.add_argument("--num_threads", type=THREADS, default=0,
                       help="CPU threads for torch (0: torch's default, one per core)")


def refuse_common_flags(args: Any, program: str) -> None:
    """For a program that works on the CPU from a checkpoint alone (quantize, export): add_common_args's
    --data_dir, --seed and --device would mean nothing there, so typing them is refused rather than ignored."""
    unused = [flag for flag, typed in (("--data_dir", args.data_dir is not None), ("--seed", args.seed != 0),
                                        ("--device", args.device not in ("auto", "cpu"))) if typed]
    if unused:
        verb = "does" if len(unused) == 1 else "do"
        raise UserError(f"{', '.join(unused)} {verb} not apply: {program} works on the CPU from the checkpoint alone")


def path_arg(text: str) -> str:
    """An argparse `type=` for a path: an empty or blank one (an unset shell variable, `--out_dir "$RUN"`) is
    refused rather than read as "not given", which would write into the default folder."""
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty path; give a file or folder name (is a shell variable unset?)")
    return text


def add_checkpoint_arg(parser: argparse.ArgumentParser | argparse._ArgumentGroup, default: str | None,
                       help: str = "trained model to load") -> None:
    """`--checkpoint PATH`, the one name for "a trained model" in every stage (`--model_path`, the
    original course's spelling, is the same option)."""
    parser.add_argument("--checkpoint", "--model_path", dest="checkpoint", type=path_arg, default=default, help=help)


def add_output_args(parser: argparse.ArgumentParser, checkpoint_help: str, out_dir_help: str) -> None:
    """The "output and resume" group of every training program: where the best model goes (`--checkpoint`),
    the run folder (`--out_dir`: log, history, curves, metrics.json, last.pt), and `--resume` from its last.pt.
    The defaults are chosen by the program from its other flags, so each help says what they are."""
    output = parser.add_argument_group("output and resume")
    add_checkpoint_arg(output, None, checkpoint_help)
    output.add_argument("--out_dir", type=path_arg, default=None, help=out_dir_help)
    output.add_argument("--resume", action="store_true", help="continue from <out_dir>/last.pt")
    output.add_argument("--restart", action="store_true",
                        help="start over in a run folder whose last run was interrupted (its last.pt is replaced)")


def run_main(main: Callable[[Sequence[str] | None], Any], argv: Sequence[str] | None = None) -> None:
    """Run an entry point and turn the ways it can end into exit codes.

    UserError or OSError (a path that cannot be written or read) -> one line on stderr, exit 2;
    TrainingInterrupted / Ctrl-C -> exit 130. Library warnings raised on the way are held back and shown when
    the program ends normally, so an error is always exactly one line (no warning printed before it).
    Text comes in as UTF-8 (`text_policy`): an argument that is not valid UTF-8 is refused in one line; stdin
    turns undecodable bytes into U+FFFD, and what is printed never fails on a character the terminal lacks.
    """
    text_policy()
    args = list(sys.argv[1:] if argv is None else argv)
    with warnings.catch_warnings(record=True) as held:
        try:
            for number, arg in enumerate(args, 1):
                check_utf8(arg, f"command-line argument {number}")
            check_same_checkout()
            code = main(args)
        except UserError as err:
            fail(str(err), EXIT_USER_ERROR)
        except ChildFailed as err:
            sys.exit(err.code if isinstance(err.code, int) and 0 < err.code < 256 else EXIT_USER_ERROR)
        except TrainingInterrupted as err:
            show_warnings(held)
            fail(f"{err}", EXIT_INTERRUPTED, prefix="interrupted")
        except KeyboardInterrupt:
            show_warnings(held)
            fail("", EXIT_INTERRUPTED, prefix="interrupted")
        except BrokenPipeError:  # output piped into a reader that stopped early (`| head`): not an error of ours
            try:  # point stdout at /dev/null so the interpreter's final flush does not fail again
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            except (OSError, ValueError):
                pass
            sys.exit(1)
        except OSError as err:   # a folder that cannot be written, a full disk, a path that is a file...
            fail(os_error_line(err), EXIT_USER_ERROR)
        except MemoryError:
            fail(OUT_OF_MEMORY, EXIT_USER_ERROR)
        except RuntimeError as err:     # torch's allocators say it this way (CPU) or as torch.OutOfMemoryError (GPU)
            if not (isinstance(err, getattr(torch, "OutOfMemoryError", ())) or "can't allocate memory" in str(err)):
                raise
            fail(OUT_OF_MEMORY, EXIT_USER_ERROR)
        show_warnings(held)
    sys.exit(code or 0)


OUT_OF_MEMORY = "out of memory; use a smaller --batch_size or model, or --limit the data"


def check_same_checkout() -> None:
    """A program of one checkout must run the shared code of that checkout. With two clones and one virtual
    environment (the course installed in editable mode from the other clone), `scripts` would silently come from
    the other one."""
    script = Path(sys.argv[0]).resolve() if sys.argv and sys.argv[0].endswith(".py") else None
    if script is None or not script.is_file() or not (script.parent.parent / "scripts" / "common.py").is_file():
        return      # run as a module, from a notebook or a test: nothing to compare
    if script.parent.parent != REPO_ROOT:
        raise UserError(f"{script} belongs to the checkout {script.parent.parent}, but Python imports the course's "
                        f"shared code from {REPO_ROOT}; run `pip install -e .` in {script.parent.parent} "
                        "(or use a virtual environment of its own)")


def fail(message: str, code: int, prefix: str = "error") -> None:
    """End the program with one line on stderr (newlines inside `message` folded into it)."""
    line = " ".join(message.split()) if message else ""
    print(f"{prefix}: {line}" if line else prefix, file=sys.stderr)
    sys.exit(code)


def show_warnings(held: list[warnings.WarningMessage]) -> None:
    """Print the warnings `run_main` held back, the way Python would have printed them."""
    for w in held:
        print(warnings.formatwarning(w.message, w.category, w.filename, w.lineno).rstrip(), file=sys.stderr)


# ----------------------------------------------------------------------------- text in and out
def text_policy() -> None:
    """The course's one rule for text streams: stdin undecodable bytes become U+FFFD (`clean_text` then says so);
    stdout and stderr write any character (as a backslash escape where the terminal's encoding lacks it)."""
    for stream, errors in ((sys.stdin, "replace"), (sys.stdout, "backslashreplace"), (sys.stderr, "backslashreplace")):
        try:
            stream.reconfigure(errors=errors)      # type: ignore[union-attr]
        except (AttributeError, ValueError, io.UnsupportedOperation):
            pass    # not a text file (a test's stand-in, a closed stream): nothing to set


def check_utf8(text: str, what: str) -> str:
    """`text` unchanged, or a UserError when it holds bytes that were not valid UTF-8 (Python keeps those
    as lone surrogates in sys.argv and os.environ)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        raise UserError(f"{what} is not valid UTF-8 text (byte {ord(text[err.start]) - 0xDC00:#04x} at character "
                        f"{err.start + 1}); retype it or convert it with iconv") from None
    return text


def clean_text(text: str, what: str = "the input", say: Callable[[str], None] | None = None) -> str:
    """Text a user typed or pasted, made safe to encode: lone surrogates (undecodable bytes) and U+FFFD
    replacement characters are reported once through `say` (stderr by default); surrogates become U+FFFD."""
    fixed = "".join("\ufffd" if "\ud800" <= c <= "\udfff" else c for c in text) if _has_surrogates(text) else text
    if "\ufffd" in fixed:
        (say or (lambda m: print(m, file=sys.stderr)))(
            f"(note: {what} held bytes that are not valid UTF-8; they were replaced by \ufffd)")
    return fixed


def _has_surrogates(text: str) -> bool:
    try:
        text.encode("utf-8")
        return False
    except UnicodeEncodeError:
        return True


def decode_utf8(data: bytes, path: Path | str, what: str = "file") -> str:
    """`data` (a file's bytes) as UTF-8 text, or a UserError naming the file, line and byte that are not."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise UserError(f"{what} {path}, line {line}: byte {data[err.start]:#04x} is not valid UTF-8; "
                        "save the file as UTF-8") from None


def read_bytes(path: Path | str, what: str = "file", limit: int = 4 << 30) -> bytes:
    """A file's bytes, gunzipped when its name ends in .gz; a damaged gzip stream or a file larger than `limit`
    is a UserError naming it."""
    import gzip  # noqa: PLC0415
    import zlib  # noqa: PLC0415

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what} {path} does not exist")
    if path.stat().st_size > limit:
        raise UserError(f"{what} {path} is {path.stat().st_size:,} bytes, more than the {limit:,} this reader takes")
    if path.suffix != ".gz":
        return path.read_bytes()
    try:
        with gzip.open(path, "rb") as f:
            data = f.read(limit + 1)
    except (gzip.BadGzipFile, EOFError, zlib.error) as err:
        raise UserError(f"{what} {path} is not a complete gzip file ({err}); download or copy it again") from None
    if len(data) > limit:
        raise UserError(f"{what} {path} unpacks to more than {limit:,} bytes; is it the right file?")
    return data


def read_text(path: Path | str, what: str = "file", limit: int = 4 << 30) -> str:
    """A UTF-8 text file (gzipped or not), every way it can be broken reported in one line naming it."""
    return decode_utf8(read_bytes(path, what, limit), path, what)


def os_error_line(err: OSError) -> str:
    """An OSError as one line naming the path and the reason: "cannot use /ro/run/train.log: Permission denied"."""
    reason = err.strerror or str(err) or type(err).__name__
    if err.filename is None:
        return f"{reason} ({type(err).__name__}); check the paths and the free disk space"
    names = f"{err.filename}" + (f" -> {err.filename2}" if err.filename2 else "")
    return f"cannot use {names}: {reason}; choose another path or fix its permissions"


def command_line() -> str:
    """The command that started this process, as a user would retype it from the repo root."""
    script = Path(sys.argv[0]).resolve()
    try:
        shown = str(script.relative_to(REPO_ROOT))
    except ValueError:
        shown = sys.argv[0]
    return "python " + shlex.join([shown, *sys.argv[1:]])


class StopOnInterrupt:
    """While training, turn the first Ctrl-C into a request the loop answers at a safe point.

    The loop checks `.requested` after each optimizer step, saves a resumable checkpoint, and raises
    `TrainingInterrupted` (exit 130). A second Ctrl-C aborts at once, as usual.
    Stopping between steps, never inside one, is what keeps the saved state consistent.
    """

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None

    def _handler(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print("\nCtrl-C: saving a resumable checkpoint after this step (press again to abort)", file=sys.stderr)

    def stop_if_requested(self, save: Callable[[], None], where: str) -> None:
        """Call at a safe point (between optimizer steps): after a Ctrl-C, save and stop with exit 130."""
        if self.requested:
            save()
            raise TrainingInterrupted(f"saved {where}; run the same command with --resume to continue")

    def __enter__(self) -> "StopOnInterrupt":
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handler)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


# ----------------------------------------------------------------------------- runtime set-up
def set_seed(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and every GPU)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def warmup_cosine(step: int, total: int, warmup: int, peak: float, final: float) -> float:
    """The learning rate at optimizer step `step` (counted from 0): a linear warm-up to `peak` over
    `warmup` steps, then half a cosine from `peak` down to `final` at step `total`, flat after that.

    A function of the step alone, so a resumed run follows exactly the schedule of an uninterrupted one.
    """
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return final + (peak - final) * 0.5 * (1.0 + math.cos(math.pi * progress))


def set_threads(num_threads: int) -> None:
    if num_threads > 0:
        torch.set_num_threads(num_threads)


def get_device(name: str = "auto") -> torch.device:
    """`auto` picks cuda, then mps, then cpu; asking for one that is absent is a user error."""
    cuda = torch.cuda.is_available()
    mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    if name == "auto":
        return torch.device("cuda" if cuda else "mps" if mps else "cpu")
    if name == "cuda" and not cuda:
        raise UserError("--device cuda was asked for but no CUDA GPU is visible; use --device auto or cpu")
    if name == "mps" and not mps:
        raise UserError("--device mps was asked for but MPS is not available; use --device auto or cpu")
    if name not in ("cpu", "cuda", "mps"):
        raise UserError(f"unknown --device {name!r}; choose auto, cpu, cuda or mps")
    return torch.device(name)


@functools.lru_cache(maxsize=None)
def cpu_has_bf16() -> bool:
    """True on CPUs with native bfloat16 matrix instructions (Intel AMX or AVX512-BF16, read from /proc/cpuinfo
    once per process). Elsewhere bf16 matmuls are emulated and slower than float32, so autocast stays off there."""
    try:
        flags = next((line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")), "")
    except OSError:
        return False
    return bool({"amx_bf16", "avx512_bf16"} & set(flags.split()))


def uses_bf16(device: torch.device, enabled: bool = True) -> bool:
    """Whether `autocast` computes in bf16 here: on CUDA, and on CPUs with native bf16 (unless --no-amp)."""
    return enabled and (device.type == "cuda" or (device.type == "cpu" and cpu_has_bf16()))


def autocast(device: torch.device, enabled: bool = True) -> contextlib.AbstractContextManager:
    """bf16 autocast where `uses_bf16`: matmuls in bfloat16, softmax, norms and losses in float32.
    No loss scaling is needed, since bf16 has float32's exponent range."""
    return torch.autocast(device.type, dtype=torch.bfloat16) if uses_bf16(device, enabled) else contextlib.nullcontext()


def amp_name(device: torch.device, enabled: bool = True) -> str:
    """What `autocast` does on this device, for the log: 'bf16 autocast' or 'float32'."""
    return "bf16 autocast" if uses_bf16(device, enabled) else "float32"


def hardware(device: torch.device | str = "cpu") -> str:
    """A one-line description of the machine, for results tables."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads"


class _TqdmHandler(logging.StreamHandler):
    """Console handler that writes around an active tqdm bar instead of through it."""

    def emit(self, record: logging.LogRecord) -> None:
        from tqdm import tqdm

        tqdm.write(self.format(record), file=sys.stdout)


def setup_logging(run_dir: Path | None, name: str = "my_llm", filename: str = "train.log") -> logging.Logger:
    """Log to the console and, when `run_dir` is given, to `run_dir/filename` (appended)."""
    logger = logging.getLogger(name)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    console = _TqdmHandler()
    console.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(console)
    if run_dir is not None:
        run_dir.mkdir(parents=True, exist_ok=True)
        file_handler = logging.FileHandler(run_dir / filename, encoding="utf-8")
        file_handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%d %H:%M:%S"))
        logger.addHandler(file_handler)
    return logger


# ----------------------------------------------------------------------------- checkpoints
def rng_state() -> dict[str, Any]:
    """Every RNG a training loop may touch, as plain values and tensors (weights_only-safe)."""
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "python": [list(v) if isinstance(v, tuple) else v for v in random.getstate()],
        "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), *rest))
    # a checkpoint loaded with map_location="cuda" brings these byte tensors to the GPU; RNG states live on the CPU
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Write atomically: a temporary file in the same folder, then renamed over `path`.

    A crash (or Ctrl-C) while writing leaves the previous checkpoint untouched: the rename is the
    only step that changes `path`, and it either happens whole or not at all.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(payload, f)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def checkpoint_header(stage: str, model: str) -> dict[str, Any]:
    """What every checkpoint says about itself, so a wrong one is refused clearly."""
    return {
        "format": "my_llm-checkpoint-v1",
        "stage": stage,
        "model": model,
        "versions": {"torch": str(torch.__version__), "numpy": np.__version__, "python": platform.python_version()},
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


def unreadable_kind(path: str | Path, err: Exception) -> str:
    """Why torch.load could not read `path`, as one word its callers put in their own language (torch's own
    messages run to paragraphs): "empty", "truncated" (a cut zip), "unsafe" (Python objects a safe load refuses),
    "foreign" (bytes that are no PyTorch file), or "other"."""
    text = " ".join(str(err).split())
    try:
        if Path(path).stat().st_size == 0:
            return "empty"
    except OSError:
        pass
    if "Unsupported global" in text:
        return "unsafe"
    if any(word in text for word in ("PytorchStreamReader", "zip archive", "miniz", "central directory")) \
            or "truncated" in text.lower() or isinstance(err, (OSError, EOFError)):   # OSError: mmap of a cut file
        return "truncated"
    if any(word in text for word in ("Weights only load failed", "invalid load key", "magic number", "zipfile")):
        return "foreign"
    return "other"


def short_message(err: Exception, limit: int = 100) -> str:
    """The first line of an exception's message, cut at a word within `limit` characters."""
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return text if len(text) <= limit else text[:limit].rsplit(" ", 1)[0] + " ..."


UNREADABLE = {"empty": "an empty file (0 bytes), not a PyTorch checkpoint",
              "truncated": "truncated or corrupt: not a complete PyTorch file",
              "unsafe": "it holds Python objects a safe load refuses to run: not a checkpoint of this course",
              "foreign": "not a PyTorch checkpoint: its bytes are not one a safe load can read"}


def checkpoint_entry(path: str | Path, key: str) -> Any:
    """One top-level entry of a checkpoint, read memory-mapped (no weight is copied); None when the file has no
    such entry or cannot be read (the program's own loading then says what is wrong)."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001 - any unreadable file: reported by the normal loading, in its words
        return None
    return ckpt.get(key) if isinstance(ckpt, dict) else None


def load_checkpoint(path: str | Path, stage: str, models: Sequence[str] | None = None,
                    map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint safely (`weights_only=True`) and check it belongs to `stage` (and `models`)."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"checkpoint {path} is a folder; pass the .pt file in it")
    if not path.is_file():
        raise UserError(f"checkpoint {path} does not exist; train a model first or pass the right path")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # truncated zip, random bytes, a pickle with code in it...
        reason = UNREADABLE.get(unreadable_kind(path, err)) or f"truncated or corrupt? {short_message(err)}"
        raise UserError(f"{path} is not a readable checkpoint ({reason}); "
                        "retrain or point to another file") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != "my_llm-checkpoint-v1":
        raise UserError(f"{path} is not a my_llm checkpoint; point to a file written by this course's train.py")
    if ckpt.get("stage") != stage:
        raise UserError(f"{path} was made by {ckpt.get('stage')} ({ckpt.get('model')}), "
                        f"not by {stage}; use a checkpoint trained by {stage}/train.py")
    if models is not None and ckpt.get("model") not in models:
        wanted = " or ".join(repr(m) for m in sorted(models))
        raise UserError(f"{path} holds a {ckpt.get('model')!r} model; this program expects a {wanted} model")
    return ckpt


MAX_CONFIG_INT = 1 << 24     # no size in the course's configs comes near it (vocabularies ~50k, widths ~1k)


def config_from_checkpoint(path: Path | str, saved: Any, config_cls: type, limits: dict[str, int] | None = None,
                           optional: Sequence[str] = ()) -> Any:
    """The model config saved in a checkpoint, rebuilt as `config_cls` (a dataclass) after checking it: a dict with
    exactly the dataclass's fields (those in `optional` may be missing: checkpoints older than the field), each of
    the field's type, every number finite and non-negative, every integer at most `limits[name]` (default
    MAX_CONFIG_INT). An edited checkpoint or one from another version is refused in one line, before a single
    tensor is allocated from its sizes."""
    import dataclasses  # noqa: PLC0415
    import typing  # noqa: PLC0415

    def bad(reason: str) -> UserError:
        return UserError(f"{path} holds a model config that this version cannot build ({reason}); "
                         "retrain the model or use the checkpoint with the version of the course that made it")

    if not isinstance(saved, dict):
        raise bad("no config dict")
    hints = typing.get_type_hints(config_cls)
    fields = {f.name: f for f in dataclasses.fields(config_cls)}
    missing = sorted(set(fields) - set(saved) - set(optional))
    extra = sorted(set(saved) - set(fields))
    if missing or extra:
        raise bad("; ".join(part for part in (f"missing {', '.join(missing)}" if missing else "",
                                              f"unknown {', '.join(map(str, extra))}" if extra else "") if part))
    for name, value in saved.items():
        kind = hints.get(name)
        if kind is bool:
            ok = isinstance(value, bool)
        elif kind is int:
            ok = isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= (limits or {}).get(
                name, MAX_CONFIG_INT)
        elif kind is float:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= 0
        elif kind is str:
            ok = isinstance(value, str) and len(value) < 200
        else:
            ok = True   # other kinds (Optional, tuples) are checked by the stage that uses them
        if not ok:
            raise bad(f"{name} = {str(value)[:40]!r}")
    try:
        return config_cls(**saved)
    except (TypeError, ValueError) as err:    # the dataclass's own __post_init__ checks
        raise bad(" ".join(str(err).split())[:120]) from None


def model_from_checkpoint(path: Path | str, build: Callable[[], torch.nn.Module], state: Any) -> torch.nn.Module:
    """`build()` with the weights `state` loaded, after checking on the meta device (where building allocates no
    memory) that the model it builds has exactly the saved tensors' names and shapes. A config edited to absurd
    sizes, or weights that do not belong to it, end in one line naming the first difference."""
    def bad(reason: str) -> UserError:
        return UserError(f"{path}: the saved weights do not fit the saved config ({reason}); retrain the model")

    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise bad("no dict of tensors")
    try:
        with torch.device("meta"):
            expected = {name: tuple(t.shape) for name, t in build().state_dict().items()}
    except (TypeError, ValueError, RuntimeError, AssertionError, ArithmeticError, LookupError,
            NotImplementedError) as err:     # whatever a config the model's checks missed makes __init__ raise
        raise bad(" ".join(str(err).split())[:120] or type(err).__name__) from None
    saved = {name: tuple(t.shape) for name, t in state.items()}
    for name in sorted(set(expected) | set(saved)):
        if name not in saved:
            raise bad(f"{name} is missing")
        if name not in expected:
            raise bad(f"unexpected {name}")
        if saved[name] != expected[name]:
            raise bad(f"{name} has shape {list(saved[name])}, the config makes {list(expected[name])}")
    check_finite(path, state)
    model = build()
    model.load_state_dict(state)
    return model


def check_finite(path: Path | str, state: dict[str, torch.Tensor]) -> None:
    """Every floating-point weight must be a finite number: a model with NaN or inf in it answers nothing sensible
    (a BLEU of 0, an empty translation, a sampler that fails)."""
    for name, tensor in state.items():
        if isinstance(tensor, torch.Tensor) and tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise UserError(f"{path}: the weight {name} holds NaN or infinite values (a diverged run, or an edited "
                            "file); retrain the model with a smaller --lr")


def check_vocab_fits(path: Path | str, vocab_size: int, model_size: int, what: str = "vocabulary") -> None:
    """The saved vocabulary must have exactly as many entries as the model has rows for tokens: with fewer, the
    model could emit ids nothing decodes; with more, the vocabulary could produce ids the model cannot embed."""
    if vocab_size != model_size:
        raise UserError(f"{path}: its {what} has {vocab_size:,} entries but the model was built for {model_size:,}; "
                        "the checkpoint was edited or pieced together; retrain the model")


def newest_model(stage_dir: Path, best: Sequence[str], runs: Sequence[str]) -> Path | None:
    """The model a program loads when no --checkpoint is given: the newest file matching the `best` globs (the
    best checkpoints train.py writes, under `stage_dir`), else the newest matching `runs` (a run's last.pt: a run
    stopped before its first evaluation, or still going). None when the stage has trained nothing yet."""
    for patterns in (best, runs):
        found = {p for pattern in patterns for p in Path(stage_dir).glob(pattern) if p.is_file()}
        if found:
            return max(found, key=lambda p: (p.stat().st_mtime, str(p)))
    return None


def find_model(given: str | None, stage_dir: Path, best: Sequence[str], runs: Sequence[str],
               train_hint: str) -> Path:
    """The checkpoint to load: `--checkpoint` when given (a missing one names the newest model there is), else
    `newest_model`; `train_hint` is the command that trains one, for the error when there is none."""
    if given:
        path = Path(given)
        if path.is_file():
            return path
        if path.is_dir():
            inside = sorted(p.name for p in path.glob("*.pt"))[:3]
            raise UserError(f"checkpoint {path} is a folder; pass a .pt file" + (f" such as {path / inside[0]}"
                                                                                 if inside else ""))
        other = newest_model(stage_dir, best, runs)
        hint = (f"the newest model of this stage is {display_path(other)} (leave out --checkpoint to load it)"
                if other else f"train one first: {train_hint}")
        raise UserError(f"checkpoint {path} does not exist; {hint}")
    path = newest_model(stage_dir, best, runs)
    if path is None:
        raise UserError(f"no trained model in {display_path(Path(stage_dir) / 'checkpoints')} or "
                        f"{display_path(Path(stage_dir) / 'runs')}; train one first: {train_hint}")
    return path


def inside(root: Path, path: Path) -> bool:
    """Whether `path`, with every link followed, lies under `root`: what a server may read when it is asked for
    files by name (a link inside the course pointing elsewhere is not followed out)."""
    try:
        Path(path).resolve().relative_to(Path(root).resolve())
    except (ValueError, OSError):
        return False
    return True


def display_path(path: Path) -> str:
    """`path` relative to the current folder when it lies below it, else absolute: short and unambiguous."""
    path = Path(path).absolute()
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def training_progress(ckpt: dict[str, Any]) -> str:
    """How far the model of a checkpoint trained, from the counters the stages save: "epoch 3 of 7, val loss
    1.512", "step 1,250 of 4,000"..."""
    args = ckpt.get("args") if isinstance(ckpt.get("args"), dict) else {}
    parts = []
    if isinstance(args.get("preset"), str):
        parts.append(f"preset {args['preset']}")
    epoch, epochs = ckpt.get("epoch"), args.get("epochs")
    if isinstance(epoch, int):
        parts.append(f"epoch {epoch}" + (f" of {epochs}" if isinstance(epochs, int) and epochs > 0 else ""))
    step = next((ckpt[k] for k in ("step", "global_step") if isinstance(ckpt.get(k), int)), None)
    total = args.get("max_steps")
    if step is not None:
        parts.append(f"step {step:,}" + (f" of {total:,}" if isinstance(total, int) and total > 0 else ""))
    for key in ("best_val_loss", "val_loss"):
        value = ckpt.get(key)
        if isinstance(value, float) and math.isfinite(value):
            parts.append(f"val loss {value:.3f}")
            break
    return ", ".join(parts)


def describe_model(path: Path, ckpt: dict[str, Any]) -> str:
    """The line a program prints about the model it loaded: which file, what kind, how far it trained."""
    kind = "the latest state of a run" if Path(path).name == "last.pt" else "best checkpoint"
    progress = training_progress(ckpt)
    return f"model: {display_path(path)} ({kind}{'; ' + progress if progress else ''})"


def load_resume(last_path: Path, stage: str, model: str, args: Any, must_match: Sequence[str] = (),
                map_location: str | torch.device = "cpu",
                before_flag: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """The checkpoint `--resume` continues from (None without --resume), after checking that it exists,
    was made by this stage's `model`, on the same --dataset, and with the same values of `must_match`
    (the flags that decide the data order, the model or the schedule). `before_flag` gives, for a flag added
    later, the behaviour of checkpoints saved before it existed (they lack it in their args)."""
    if not args.resume:
        return None
    if not Path(last_path).is_file():
        raise UserError(f"--resume: no resumable checkpoint at {last_path}; train without --resume first")
    resume = load_checkpoint(last_path, stage, [model], map_location=map_location)
    if resume.get("dataset") != args.dataset:
        raise UserError(f"--resume: {last_path} was trained on {resume.get('dataset')}, not {args.dataset}")
    if not isinstance(resume.get("args"), dict):
        raise UserError(f"--resume: {last_path} holds no settings (args); it was edited or made by another version; "
                        "start a new run with another --out_dir")
    saved = {**(before_flag or {}), **resume["args"]}
    changed = [f"--{k} {saved.get(k)} (now {getattr(args, k)})" for k in must_match if saved.get(k) != getattr(args, k)]
    if changed:
        raise UserError(f"--resume: {last_path} was trained with {', '.join(changed)}; resume with the same flags, "
                        "or start a new run with another --out_dir")
    return resume


# ----------------------------------------------------------------------------- metrics files
def write_metrics(path: Path, *, stage: str, model: str, dataset: str, split: str, metrics: dict[str, Any],
                  params: int, seconds: float, seconds_key: str, device: torch.device | str,
                  extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write `metrics.json` in the course-wide format that README tables are built from."""
    refuse_replacing(path, "the metrics file", is_json_file, "a JSON file")
    if seconds_key == "eval_seconds" and Path(path).is_file():     # never replace a training's own record
        try:
            previous = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            previous = None
        if isinstance(previous, dict) and "train_seconds" in previous:
            raise UserError(f"{path} is a training run's metrics.json; write the evaluation elsewhere "
                            "(another --out_dir or --metrics_out)")
    payload: dict[str, Any] = {
        "stage": stage,
        "model": model,
        "dataset": dataset,
        "split": split,
        "metrics": metrics,
        "params": int(params),
        seconds_key: round(float(seconds), 3),
        "device": str(device),
        "hardware": hardware(device),
        "torch": torch.__version__,
        "command": command_line(),
    }
    if extra:
        payload.update(extra)
    write_json(path, payload)
    return payload


def check_output_is_not_input(input_name: str | None, output_name: str | None) -> None:
    """--output must be another file than --input (also through a symbolic or hard link): writing the results
    there would replace what the program reads."""
    if not input_name or input_name == "-" or not output_name:
        return
    try:
        same = os.path.samefile(input_name, output_name)
    except (OSError, ValueError):       # one of them does not exist (yet): not the same file
        return
    if same:
        raise UserError(f"--output {output_name} is the --input file; writing there would replace the text it "
                        "reads: give another --output")


def refuse_replacing(path: str | Path, name: str, ours: Callable[[Path], bool], what: str) -> None:
    """An output file that already exists is replaced only when `ours(path)` says it is `what` this program
    writes there (its own earlier output); anything else (a trained checkpoint, the input itself, a file of the
    learner's) is refused in one line, so a mistyped path never costs a model."""
    path = Path(path)
    if path.is_file() and not ours(path):
        raise UserError(f"{name} {path} already exists and is not {what}; it would be replaced: give another "
                        f"{name} (or move that file away)")


def is_json_file(path: Path) -> bool:
    try:
        json.loads(Path(path).read_text(encoding="utf-8"))
        return True
    except (OSError, ValueError):
        return False


def check_json_out(path: str | Path, name: str) -> Path:
    """A JSON output (--metrics_out...): writable, and not replacing a file that is not JSON (a checkpoint)."""
    refuse_replacing(path, name, is_json_file, "a JSON file")
    return check_writable(path, name)


def check_writable(path: str | Path, name: str, folder: bool = False) -> Path:
    """Refuse, before any work, an output path that cannot be written (a folder in the way, a parent that is a
    file, no permission, a name too long...), so a long evaluation or translation never ends in a lost result.
    Probes by creating (and removing) a file: in the folder that will hold the output, or in its nearest existing
    ancestor when that folder is still to be made. An existing file is opened for appending and left unchanged."""
    path = Path(path)
    try:
        if folder:
            target = path
        else:
            if path.is_dir():
                raise UserError(f"{name} {path} is a folder; give a file name")
            target = path.parent
        existing = next(p for p in [target.absolute(), *target.absolute().parents] if p.exists())
        if not existing.is_dir():
            raise UserError(f"{name} {path} cannot be written ({existing} is not a folder)")
        if not folder and existing == target.absolute():
            created = not path.exists()
            with open(path, "ab"):
                pass
            if created:
                path.unlink()
        else:
            with tempfile.TemporaryFile(dir=existing):
                pass
    except (OSError, ValueError) as err:       # ValueError: a NUL character in the path
        reason = getattr(err, "strerror", None) or str(err)
        raise UserError(f"{name} {str(path)[:200]} cannot be written ({reason})") from None
    return path


def write_text(path: Path, text: str) -> None:
    """Write UTF-8 text atomically (temporary file, then rename): never a half-written file at `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json(path: Path, obj: Any) -> None:
    """Write JSON atomically (temporary file, then rename)."""
    write_text(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def read_json(path: str | Path, what: str = "file") -> Any:
    """Parse a JSON file a user pointed to; a missing or malformed one is a UserError naming it."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what} {path} does not exist")
    text = read_text(path, what, limit=1 << 30)
    try:
        return json.loads(text)
    except (json.JSONDecodeError, RecursionError) as err:
        raise UserError(f"{what} {path} is not valid JSON ({str(err)[:80]}); regenerate it") from None


# ----------------------------------------------------------------------------- data sets
def data_bases(data_dir: str | None) -> list[Path]:
    """The folders to look in, as absolute paths: `--data_dir` alone when it is given (a folder the user
    named is never silently swapped for another), else `$MY_LLM_DATA`.

    A relative `--data_dir` means relative to the folder the command is typed in. A relative `$MY_LLM_DATA`
    may have been exported in another folder than the one a program now runs in (the README exports it in the
    repo root, then a learner `cd`s into a stage folder): it is taken relative to the current folder if that
    exists, else relative to the repo root."""
    if data_dir is not None:
        path = Path(data_dir).expanduser().resolve()
        if not path.is_dir():
            raise UserError(f"--data_dir {data_dir} is not a folder ({path}); pass the folder that holds the data sets")
        return [path]
    env = os.environ.get(DATA_ENV)
    if not env:
        return []
    path = Path(env).expanduser()
    if path.is_absolute():
        return [path]
    tried = [(Path.cwd() / path).resolve(), (REPO_ROOT / path).resolve()]
    return [next((p for p in tried if p.is_dir()), tried[0])]


def data_candidates(name: str, data_dir: str | None) -> list[Path]:
    """Folders that may hold data set `name`: under each of `data_bases`, the folder `name/` and the base itself
    (a base may be the folder of all data sets, `.../data` holding `name/`, or `name/` itself)."""
    return [folder for base in data_bases(data_dir) for folder in (base / name, base)]


def find_local_data(name: str, files: Sequence[str], data_dir: str | None) -> Path | None:
    """The first candidate folder holding every one of `files`, or None (then the caller downloads).

    With `--data_dir`, a folder without the files is an error naming what is missing: the user pointed at that
    copy, so it is never silently replaced by `$MY_LLM_DATA`, a cache or a download."""
    for folder in data_candidates(name, data_dir):
        if all((folder / f).is_file() for f in files):
            return folder
    if data_dir is None:
        return None
    folders = data_candidates(name, data_dir)
    folder = next((f for f in folders if any((f / n).is_file() for n in files)), folders[0])
    missing = [f for f in files if not (folder / f).is_file()]
    raise UserError(f"--data_dir: {folder} lacks {', '.join(missing)} of {name}; copy "
                    f"{'it' if len(missing) == 1 else 'them'} there, or leave out --data_dir to use ${DATA_ENV} "
                    "or a download")


def missing_data_error(name: str, files: Sequence[str], data_dir: str | None, download_error: str) -> UserError:
    looked = [str(p) for p in data_candidates(name, data_dir)] or [f"(nowhere: no --data_dir and no ${DATA_ENV})"]
    return UserError(f"no local copy of {name} ({', '.join(files)}) in {', '.join(looked)}, and the download "
                     f"failed ({download_error}); pass --data_dir or set {DATA_ENV} to the folder holding {name}/")


def cache_dir(name: str) -> Path:
    """Where downloads of data set `name` go: `$XDG_CACHE_HOME/my_llm/name` (default ~/.cache/my_llm/name)."""
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "my_llm" / name


def file_sha256(path: str | Path) -> str:
    """The sha256 of a file, read in blocks (a checkpoint or a data set need not fit in memory twice)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def download(url: str, dest: Path, sha256: str | None = None, timeout: float = 30.0) -> Path:
    """Fetch `url` to `dest`, atomically (a partial download never looks like a finished file) and, when `sha256`
    is given, verified: a file whose checksum differs is deleted and refused (ValueError), so a truncated,
    tampered or changed upstream file is never read as the data set. A `dest` already there was verified when
    it was written."""
    import urllib.request  # noqa: PLC0415

    dest = Path(dest)
    if dest.is_file():
        return dest
    if os.environ.get("MY_LLM_OFFLINE"):
        raise ConnectionError("MY_LLM_OFFLINE is set")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.part{os.getpid()}")
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(tmp, "wb") as f:
            while chunk := response.read(1 << 20):
                f.write(chunk)
                digest.update(chunk)
        if sha256 is not None and digest.hexdigest() != sha256:
            raise ValueError(f"{url} has sha256 {digest.hexdigest()[:16]}..., expected {sha256[:16]}... "
                             "(changed upstream or damaged in transit)")
        os.replace(tmp, dest)
    finally:
        if tmp.exists():
            tmp.unlink()
    return dest


# a bench publishes the course's results (README tables, results/): only from the reference copies of the data
REFUSAL = ("bench.py publishes the course's results and needs the reference copy; train on your own data with "
           "train.py")


def check_reference_data(name: str, pins: dict[str, str | None], data_dir: str | None, unpacked: bool = False,
                         download_checked: bool = True) -> None:
    """Refuse, before any part runs, data that is not the reference copy: a bench publishes the course's results
    (README tables, results/), and a truncated copy trains and scores without an error, on the wrong data.
    `pins`: each file the parts read -> sha256 of the shared copy (of the unpacked text when `unpacked`; None: no
    reference copy exists). A file that would be downloaded is checked by the download itself when
    `download_checked`; else it cannot be checked before it is used, and is refused too."""
    folder = find_local_data(name, list(pins), data_dir)
    if folder is None:
        if download_checked:
            return
        raise UserError(f"no local copy of {name} ({', '.join(pins)}), and a download cannot be checked first: "
                        f"{REFUSAL} (in --data_dir or ${DATA_ENV})")
    for filename, sha256 in pins.items():
        path = folder / filename
        if unpacked:
            digest = hashlib.sha256(read_bytes(path, f"{name} file")).hexdigest()
        else:
            digest = file_sha256(path)
        if digest != sha256:
            why = "no reference copy of it exists" if sha256 is None else "its sha256 differs"
            raise UserError(f"{path} is not the reference copy of {name} ({why}): {REFUSAL}")


def count_params(module_or_tensors: Any) -> int:
    tensors = module_or_tensors.parameters() if hasattr(module_or_tensors, "parameters") else module_or_tensors
    return sum(t.numel() for t in tensors)
