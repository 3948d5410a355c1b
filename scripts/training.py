"""Resume and Ctrl-C for a training loop, written once so each stage's `train.py` shows only the learning.

A training loop that can be stopped and resumed must save, besides the model, everything that decides
what happens next: the optimizer's moments, the step and epoch counters, the best score so far, the
history, and the state of every random number generator. `ResumableRun` keeps those in one dict
(`run.state`) and writes them to `<out_dir>/last.pt`:

    run = ResumableRun(args, STAGE, MODEL_NAME, out_dir / "last.pt", must_match=["model_type", "lr"],
                       state={"step": 0, "epoch": 0, "best_val_loss": math.inf, "history": []})
    vocab = Vocabulary.from_dict(run.resume["vocab"]) if run.resume else Vocabulary.build(...)
    model, optimizer = ...
    run.attach(model, optimizer, payload=lambda: {**checkpoint_header(...), "config": ..., "vocab": ...})
    with run:                                   # the first Ctrl-C now asks the loop to stop at a safe point
        while run.state["step"] < total:
            ...forward, backward, step...
            run.state["step"] += 1
            run.step_done(f"step {run.state['step']}")   # after Ctrl-C: save last.pt, exit 130
            if evaluating: ...; run.save()

The run folder is locked while the process runs (`RunLock`): a second training into it is refused.
`--resume` then refuses a checkpoint of another stage, model, data set or of other `must_match` settings,
restores the model, optimizer, counters and RNG state, and the run continues bit for bit as if never
stopped (each stage has a test for that).
"""
from __future__ import annotations

import argparse
import atexit
import json
import math
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from scripts.common import (StopOnInterrupt, UserError, check_finite, command_line, display_path, load_resume,
                            rng_state, save_checkpoint, set_rng_state)
from scripts.monitor import process_alive, read_progress


class RunLock:
    """One process at a time per run folder: `<out_dir>/run.lock` names the holder (pid, host, command, start).

    A second training into the same folder would interleave its log with the first, and whichever saved last
    would own the "best" checkpoint, so it is refused with one line. A lock left by a process that is gone
    (killed, or the machine went down) is taken over, with a note. The lock is released when the process ends."""

    NAME = "run.lock"

    def __init__(self, folder: Path, name: str = NAME, advice: str = "train into another --out_dir") -> None:
        self.path = Path(folder) / name
        self.advice = advice
        self.held = False

    @classmethod
    def for_checkpoint(cls, checkpoint: Path) -> "RunLock":
        """The lock on a best-checkpoint file: two runs with different run folders but one --checkpoint would
        otherwise overwrite each other's best model."""
        checkpoint = Path(checkpoint)
        return cls(checkpoint.parent, f".{checkpoint.name}.lock", "pass another --checkpoint")

    def holder(self) -> dict[str, Any] | None:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def acquire(self) -> "RunLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        me = {"pid": os.getpid(), "host": socket.gethostname(), "command": command_line(),
              "started": time.strftime("%Y-%m-%dT%H:%M:%S")}
        while True:
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self.holder()
                if holder is None or (holder.get("host") == me["host"] and (
                        holder.get("pid") == me["pid"] or not process_alive(holder.get("pid")))):
                    if holder is not None and holder.get("pid") != me["pid"]:
                        print(f"note: {display_path(self.path)} was left by process {holder.get('pid')}, which is "
                              "gone; taking the run folder over", file=sys.stderr)
                    self.path.unlink(missing_ok=True)       # stale, unreadable, or our own from an earlier main()
                    continue
                where = "" if holder.get("host") == me["host"] else f" on {holder.get('host')}"
                used = display_path(self.path.parent if self.path.name == self.NAME else
                                    self.path.with_name(self.path.name[1:].removesuffix(".lock")))
                raise UserError(f"{used} is in use by process {holder.get('pid')}{where} "
                                f"(`{holder.get('command')}`, since {holder.get('started')}); wait for it to end, "
                                f"stop it, or {self.advice} (delete {display_path(self.path)} if that run is over)")
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(me, f)
            self.held = True
            atexit.register(self.release)
            return self

    def release(self) -> None:
        """Remove the lock if this process still holds it."""
        if self.held:
            self.held = False
            holder = self.holder()
            if holder is not None and holder.get("pid") == os.getpid():
                self.path.unlink(missing_ok=True)


def check_best_path(best: Path, last_path: Path) -> None:
    """The file the best model goes to must be one a checkpoint can replace: not a folder, not the run's last.pt,
    not another kind of file (a train.log given by mistake). Checked before any work, not at the first save."""
    if best.is_dir():
        raise UserError(f"--checkpoint {best} is a folder; give a file name such as {best / 'best.pt'}")
    if best.resolve() == Path(last_path).resolve():
        raise UserError(f"--checkpoint {best} is the run's own last.pt; give another file name")
    if best.is_file() and best.suffix != ".pt":
        raise UserError(f"--checkpoint {best} is an existing file that is not a checkpoint (.pt); writing the model "
                        "there would replace it: give another file name")


def refuse_to_replace_unfinished(last_path: Path, restart: bool) -> None:
    """A run stopped by Ctrl-C (or killed) can go on with --resume; the same command without it would start over
    and replace that run's last.pt at its first save. Refused in one line unless the user says --restart."""
    if restart or not Path(last_path).is_file():
        return
    try:
        progress = read_progress(Path(last_path).parent)
    except UserError:
        return      # an unreadable progress.json says nothing either way
    if progress is None or progress.get("state") not in ("interrupted", "stopped"):
        return
    step, total = progress.get("step"), progress.get("total_steps")
    where = f" at step {step:,} of {total:,}" if isinstance(step, int) and isinstance(total, int) else ""
    raise UserError(f"{display_path(Path(last_path).parent)} holds a run that was {progress['state']}{where}; "
                    "add --resume to continue it, or --restart to start over (its last.pt is then replaced)")


def check_optimizer(optimizer: torch.optim.Optimizer, fresh: dict[str, Any]) -> None:
    """After loading a saved optimizer state: its settings must be of the kinds a fresh optimizer has (betas a pair,
    numbers finite) and every per-parameter tensor (Adam's moments) the shape of its parameter and finite. torch
    only notices a wrong one at the first step, with a traceback in the middle of the run."""
    for group, new_group in zip(fresh["param_groups"], optimizer.param_groups):
        for key, value in group.items():
            if key == "params":
                continue
            saved = new_group.get(key)
            if isinstance(value, (tuple, list)):
                ok = isinstance(saved, (tuple, list)) and len(saved) == len(value) and all(
                    isinstance(v, (int, float)) and math.isfinite(v) for v in saved)
            elif isinstance(value, (int, float)) and not isinstance(value, bool):
                ok = isinstance(saved, (int, float)) and not isinstance(saved, bool) and math.isfinite(saved)
            else:
                ok = True
            if not ok:
                raise ValueError(f"optimizer setting {key} = {str(saved)[:30]}")
    for group in optimizer.param_groups:
        for param in group["params"]:
            for key, tensor in optimizer.state.get(param, {}).items():
                if not isinstance(tensor, torch.Tensor) or tensor.dim() == 0:
                    continue        # the step count
                if tensor.shape != param.shape or (tensor.is_floating_point() and not torch.isfinite(tensor).all()):
                    raise ValueError(f"optimizer state {key} of shape {list(tensor.shape)} for a parameter of shape "
                                     f"{list(param.shape)}, or not finite")


def check_counter(path: Path, key: str, saved: Any, start: Any) -> None:
    """A counter or score restored from last.pt must be of the kind a fresh run starts with (an int step, a float
    loss; None where a fresh run has None) and counts must not be negative: else the file was edited."""
    if start is None:
        return
    if isinstance(saved, float) and (math.isnan(saved) or math.isinf(saved) and math.isfinite(start)):
        raise UserError(f"--resume: {path}: {key} is {saved} (the file was edited, or the run diverged); start a "
                        "new run with another --out_dir")
    kind = (int, float) if isinstance(start, float) else type(start)
    if not isinstance(saved, kind) or isinstance(saved, bool) and not isinstance(start, bool) or (
            isinstance(start, int) and not isinstance(start, bool) and saved < 0):
        noun = {int: "an integer", float: "a number", list: "a list", dict: "a dict"}.get(type(start),
                                                                                           type(start).__name__)
        raise UserError(f"--resume: {path}: {key} is {str(saved)[:20]!r}, not {noun} (the file was edited); start "
                        "a new run with another --out_dir")


class ResumableRun:
    """The `--resume` / Ctrl-C bookkeeping of one training run (see the module docstring)."""

    def __init__(self, args: argparse.Namespace, stage: str, model: str, last_path: Path, state: dict[str, Any],
                 must_match: Sequence[str] = (), map_location: str | torch.device = "cpu") -> None:
        self.last_path = Path(last_path)
        self.state = dict(state)
        if args.resume and getattr(args, "restart", False):
            raise UserError("--resume continues the run, --restart starts it over: choose one")
        # the run folder is this process's until it ends (in a data-parallel run, the first process holds it)
        self.lock = RunLock(self.last_path.parent).acquire() if os.environ.get("RANK", "0") == "0" else None
        if not args.resume:
            refuse_to_replace_unfinished(self.last_path, getattr(args, "restart", False))
        best = getattr(args, "checkpoint", None)      # the best model's file, when the program has resolved it
        if isinstance(best, (str, Path)):
            check_best_path(Path(best), self.last_path)
        self.best_lock = (RunLock.for_checkpoint(Path(best)).acquire()
                          if isinstance(best, (str, Path)) and self.lock is not None else None)
        # None without --resume; else the checked checkpoint (same stage, model, --dataset and must_match)
        self.resume = load_resume(self.last_path, stage, model, args, must_match, map_location=map_location)
        self._interrupt = StopOnInterrupt()
        self._model: torch.nn.Module | None = None
        self._optimizer: Any = None
        self._payload: Callable[[], dict[str, Any]] = dict
        self._extra: Callable[[], dict[str, Any]] = dict

    def attach(self, model: torch.nn.Module, optimizer: Any, payload: Callable[[], dict[str, Any]],
               extra_state: Callable[[], dict[str, Any]] | None = None) -> bool:
        """Register what `save` writes, and on `--resume` restore the model, optimizer, counters and RNGs.

        `optimizer` is anything with `state_dict()` / `load_state_dict()` (a torch optimizer, or a hand-written
        one such as stage 1's). `payload()` gives the stage's own checkpoint fields (header, config, vocabulary, args);
        `extra_state()` any further state to save (the stage restores it from `run.resume` itself).
        Returns True when a run was resumed. Call it after the model is built (building draws from the RNG)."""
        self._model, self._optimizer, self._payload = model, optimizer, payload
        self._extra = extra_state or dict
        if self.resume is None:
            return False
        state = {key: self.resume.get(key) for key in self.state}
        for key, start in self.state.items():
            check_counter(self.last_path, key, state[key], start)
        try:
            check_finite(self.last_path, self.resume["model_state"])
            model.load_state_dict(self.resume["model_state"])
            fresh = optimizer.state_dict()
            optimizer.load_state_dict(self.resume["optimizer_state"])
            if isinstance(optimizer, torch.optim.Optimizer):
                check_optimizer(optimizer, fresh)
            set_rng_state(self.resume["rng_state"])
        except (KeyError, TypeError, ValueError, RuntimeError, IndexError, AttributeError) as err:
            reason = " ".join(f"{type(err).__name__}: {err}".split())[:120]
            raise UserError(f"--resume: {self.last_path} cannot be resumed ({reason}); it was edited or made by "
                            "another version; start a new run with another --out_dir") from None
        self.state = state
        return True

    def checkpoint(self) -> dict[str, Any]:
        """What last.pt holds: the stage's payload, the model, the counters, the optimizer and the RNG state."""
        assert self._model is not None and self._optimizer is not None, "call attach() first"
        return {**self._payload(), "model_state": {k: v.detach().cpu() for k, v in self._model.state_dict().items()},
                **self.state, "optimizer_state": self._optimizer.state_dict(), "rng_state": rng_state(),
                **self._extra()}

    def save(self) -> None:
        """Write last.pt atomically (a crash while writing leaves the previous one whole)."""
        save_checkpoint(self.last_path, self.checkpoint())

    @property
    def stop_requested(self) -> bool:
        return self._interrupt.requested

    def step_done(self, where: str) -> None:
        """Call between optimizer steps: after a Ctrl-C, save last.pt and end the program with exit status 130."""
        self._interrupt.stop_if_requested(self.save, f"{self.last_path} at {where}")

    def __enter__(self) -> "ResumableRun":
        self._interrupt.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._interrupt.__exit__(*exc)
