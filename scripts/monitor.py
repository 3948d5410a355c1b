"""Training you can watch, written once for every stage's `train.py`.

A learner should see, while a run trains, how far it is and how long it will take, whether the loss falls, and
what the model can already do. `TrainingMonitor` gives every stage the same four windows on a run:

- one progress bar for the whole run (not one per epoch): steps done of all steps, ETA, running loss, throughput;
- TensorBoard event files in the run folder (`tensorboard --logdir stage2_rnn_lstm/runs`): the loss at every step,
  every evaluation's numbers, and the samples as text;
- `history.json` and `curves.png` rewritten at every evaluation, so they can be opened while the run goes on;
- `progress.json`: where the run is (running / finished / interrupted / failed, step of total, process id),
  which `scripts/reference.py compare` reads to judge a run that has not finished.

    monitor = TrainingMonitor(out_dir, stage=STAGE, model="lstm_char", dataset="shakespeare", device=device,
                              total_steps=total, done_steps=state["step"], unit="tokens")
    with monitor:                                       # marks the run finished, interrupted or failed on exit
        for batch in ...:
            loss = ...
            monitor.step(loss.item(), items=tokens_in_batch, epoch=f"{epoch}/{epochs}")
            if time_to_evaluate:
                with monitor.evaluating():              # time spent here is left out of the ETA and throughput
                    row = {...}; history.append(row)
                monitor.evaluated(row, history, panels=[["train_loss", "val_loss"]], sample=model_sample)
"""
from __future__ import annotations

import contextlib
import logging
import math
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch
from tqdm import tqdm

from scripts.common import EXIT_INTERRUPTED, TrainingInterrupted, UserError, command_line, hardware, write_json
from scripts.plots import plot_curves

PROGRESS_FORMAT = "my_llm-progress-v1"
EMA = 0.98          # the bar's running loss: an exponential moving average over about the last 50 steps


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


class TrainingMonitor:
    """The progress bar, TensorBoard events, history.json/curves.png and progress.json of one run (module doc)."""

    def __init__(self, out_dir: str | Path, *, stage: str, model: str, dataset: str, device: torch.device | str,
                 total_steps: int, done_steps: int = 0, unit: str = "tokens", desc: str = "training",
                 title: str = "", log: logging.Logger | None = None, enabled: bool = True,
                 tensorboard: bool = True) -> None:
        """`total_steps` counts the optimizer steps of the whole run; `done_steps` those already done (a resumed
        run). `unit` names what `step(items=...)` counts, for the throughput (tokens, samples, sentences).
        `log` (the stage's logger) also gets the samples, so they land in train.log.
        `enabled=False` (the other processes of a data-parallel run) makes every method do nothing."""
        self.enabled = enabled
        self.out_dir = Path(out_dir)
        self.unit, self.title = unit, title
        self.step_no, self.total_steps = int(done_steps), int(total_steps)
        self.running_loss: float | None = None
        self._items = 0
        self._seconds = 0.0           # training time of this process, evaluations left out
        self._tick = time.perf_counter()
        self.header = {"format": PROGRESS_FORMAT, "stage": stage, "model": model, "dataset": dataset,
                       "device": str(device), "hardware": hardware(device), "torch": torch.__version__,
                       "command": command_line(), "pid": os.getpid(), "host": socket.gethostname(),
                       "started": time.strftime("%Y-%m-%dT%H:%M:%S")}
        self.log = log
        self.bar: Any = None
        self.writer: Any = None
        self._closed = False
        if not enabled:
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.bar = tqdm(total=self.total_steps, initial=self.step_no, desc=desc, unit="step", disable=None,
                        dynamic_ncols=True, smoothing=0.05, file=sys.stdout)
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            if not self.step_no:    # a fresh run in a used folder: the old run's events would mix with the new ones
                for old in self.out_dir.glob("events.out.tfevents.*"):
                    old.unlink()

            # purge_step: a resumed run drops the events a stopped run wrote past its last checkpoint
            purge = self.step_no + 1 if self.step_no else None
            self.writer = SummaryWriter(log_dir=str(self.out_dir), purge_step=purge)
        self.write_progress("running")

    # ------------------------------------------------------------------------- during training
    def step(self, loss: float, items: int = 0, epoch: str | None = None, **scalars: float) -> None:
        """One optimizer step done: its loss, how many `unit`s it processed, the epoch ("3/7") to show, and any
        other numbers for TensorBoard (e.g. lr=..., grad_norm=...)."""
        if not math.isfinite(loss):     # diverged: nothing learnt after this step could be trusted, or saved
            raise UserError(f"the training loss became {loss} at step {self.step_no + 1:,}: training diverged; "
                            "train again with a smaller --lr (the checkpoints keep the state from before)")
        if not self.enabled:
            return
        now = time.perf_counter()
        self._seconds += now - self._tick
        self._tick = now
        self.step_no += 1
        self._items += items
        self.running_loss = loss if self.running_loss is None else EMA * self.running_loss + (1 - EMA) * loss
        postfix = {}
        if epoch is not None:
            postfix["epoch"] = epoch
        postfix["loss"] = f"{self.running_loss:.3f}" if self.running_loss is not None else "nan"
        if self._items and self._seconds > 0:
            postfix[f"{self.unit}/s"] = f"{self._items / self._seconds:,.0f}"
        self.bar.set_postfix(postfix, refresh=False)
        self.bar.update(1)
        if self.writer is not None:
            self.writer.add_scalar("train/loss", loss, self.step_no)
            for name, value in scalars.items():
                if is_number(value):
                    self.writer.add_scalar(f"train/{name}", value, self.step_no)

    @property
    def throughput(self) -> float:
        """`unit`s per second of training in this process so far (evaluations left out)."""
        return self._items / self._seconds if self._seconds > 0 else 0.0

    @contextlib.contextmanager
    def evaluating(self) -> Iterator[None]:
        """Wrap evaluations (and checkpoint writes): their time counts neither in the throughput nor in the ETA."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self._tick += time.perf_counter() - start
            if self.bar is not None:
                self.bar.unpause()

    def evaluated(self, row: dict[str, Any], history: Any = None, panels: Sequence[Sequence[str]] = (),
                  x: str = "epoch", sample: str | None = None, plot: Callable[[Path], None] | None = None) -> None:
        """After an evaluation: its numbers to TensorBoard, history.json rewritten with `history`, curves.png
        redrawn (from `panels` of history keys against `x`, or by `plot(path)`), the sample printed and logged."""
        if not self.enabled:
            return
        if self.writer is not None:
            for name, value in row.items():
                if is_number(value) and name not in ("epoch", "step", "steps"):
                    self.writer.add_scalar(f"eval/{name}", value, self.step_no)
            if sample:
                # TensorBoard renders text as Markdown: indent it four spaces to keep line breaks and spaces
                self.writer.add_text("sample", "\n".join("    " + line for line in sample.splitlines()), self.step_no)
            self.writer.flush()
        if history is not None:
            write_json(self.out_dir / "history.json", history)
            if plot is not None:
                plot(self.out_dir / "curves.png")
            elif panels and isinstance(history, list):
                plot_curves(history, self.out_dir / "curves.png", panels, title=self.title, x=x)
        if sample:
            text = f"sample at step {self.step_no:,}:\n{sample.rstrip()}"
            if self.log is not None:
                self.log.info(text)
            else:
                tqdm.write(text, file=sys.stdout)
        self.write_progress("running")

    # ------------------------------------------------------------------------- the run's state
    def write_progress(self, state: str) -> None:
        """progress.json: the run's state, how far it got, and the header `compare` needs."""
        if not self.enabled:
            return
        write_json(self.out_dir / "progress.json", {
            **self.header, "state": state, "step": self.step_no, "total_steps": self.total_steps,
            "running_loss": self.running_loss, f"{self.unit}_per_s": round(self.throughput, 1),
            "updated": time.strftime("%Y-%m-%dT%H:%M:%S")})

    def close(self, state: str = "finished") -> None:
        """Close the bar and the event file, and mark the run `state` in progress.json (once)."""
        if not self.enabled or self._closed:
            return
        self._closed = True
        if self.bar is not None:
            self.bar.close()
        if self.writer is not None:
            self.writer.close()
        self.write_progress(state)

    def __enter__(self) -> "TrainingMonitor":
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None or (exc_type is SystemExit and exc.code in (0, None)):
            state = "finished"
        elif issubclass(exc_type, (KeyboardInterrupt, TrainingInterrupted)) or (
                exc_type is SystemExit and exc.code == EXIT_INTERRUPTED):
            state = "interrupted"   # Ctrl-C: ResumableRun saved last.pt and raised TrainingInterrupted (exit 130)
        else:
            state = "failed"
        self.close(state)


def read_progress(folder: Path) -> dict[str, Any] | None:
    """A run folder's progress.json, with "state" corrected to "stopped" when it says running but its process is
    gone (killed, or the machine went down); None when the folder has none."""
    from scripts.common import read_json

    path = Path(folder) / "progress.json"
    if not path.is_file():
        return None
    progress = read_json(path, "run progress")
    if not isinstance(progress, dict) or progress.get("format") != PROGRESS_FORMAT:
        return None
    if progress.get("state") == "running" and progress.get("host") == socket.gethostname() \
            and not process_alive(progress.get("pid")):
        progress["state"] = "stopped"
    return progress


def process_alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True         # exists, owned by someone else
    return True
