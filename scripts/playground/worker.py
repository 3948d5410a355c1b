"""One thread that runs every model call of the playground, and lets generations take turns token by token.

Why one thread: PyTorch runs a CPU operation on a team of OpenMP threads owned by the thread that calls it. One
calling thread keeps one team busy and spinning, as in generate.py; many request threads each bring a team of
their own, the teams outnumber the cores, and each operation then waits for sleeping threads to wake (measured on
2 cores: the stage 5 char model streamed at less than half of generate.py's speed from request threads).

How requests share it: a one-off call (load a model, classify, translate, a next-token distribution) runs whole;
generations are stepped in turn, one token each per round, so four streams all advance and a new request waits
at most one token of each running one. A stream whose client went away is dropped at its next turn.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from concurrent.futures import Future
from typing import Any, Callable, Iterator

import torch

from scripts.common import UserError

FLUSH_SECONDS = 0.02      # a stream's tokens are handed over at most every 20 ms (the first one at once): fewer
#                           wake-ups of the web server's thread, still a smooth stream to the eye
log = logging.getLogger("playground")
Deliver = Callable[[list[dict[str, Any]], bool], None]     # (events, finished)


class Stream:
    def __init__(self, events: Iterator[dict[str, Any]], deliver: Deliver, stop: threading.Event):
        self.events, self.deliver, self.stop = events, deliver, stop
        self.pending: list[dict[str, Any]] = []
        self.flushed = 0.0
        self.sent_any = False

    def step(self) -> bool:
        """Advance by one event; False once the stream is over (finished, failed or abandoned)."""
        if self.stop.is_set():
            self.events.close()
            return False
        try:
            self.pending.append(next(self.events))
        except StopIteration:
            self.flush(finished=True)
            return False
        except UserError as err:
            self.pending.append({"event": "error", "error": " ".join(str(err).split())})
            self.flush(finished=True)
            return False
        except Exception as err:  # a bug: shown in the page and logged with its traceback
            log.exception("generation failed")
            self.pending.append({"event": "error", "error": f"internal error: {type(err).__name__}: {err}"})
            self.flush(finished=True)
            return False
        now = time.perf_counter()
        if not self.sent_any or now - self.flushed >= FLUSH_SECONDS:
            self.flush()
        return True

    def flush(self, finished: bool = False) -> None:
        self.deliver(self.pending, finished)
        self.pending, self.flushed, self.sent_any = [], time.perf_counter(), True


class ModelWorker:
    """The thread that owns the models: `call` runs a function there, `open_stream` steps an iterator there."""

    def __init__(self) -> None:
        self.jobs: queue.SimpleQueue = queue.SimpleQueue()
        self.active = 0                        # streams being stepped now (the tests watch a cancelled one go)
        self.thread = threading.Thread(target=self.loop, daemon=True, name="models")
        self.thread.start()

    def call(self, fn: Callable[..., Any], *args: Any) -> Future:
        future: Future = Future()
        self.jobs.put((fn, args, future))
        return future

    def open_stream(self, events: Iterator[dict[str, Any]], deliver: Deliver, stop: threading.Event) -> None:
        self.jobs.put(Stream(events, deliver, stop))

    def loop(self) -> None:
        torch.set_grad_enabled(False)          # inference only, in this thread (the setting is per thread)
        streams: list[Stream] = []
        while True:
            try:
                job = self.jobs.get(block=not streams)      # idle: wait for work; busy: just look
            except queue.Empty:
                job = None
            while job is not None:
                self.take(job, streams)
                try:
                    job = self.jobs.get_nowait()
                except queue.Empty:
                    job = None
            self.active = len(streams)
            streams = [s for s in streams if s.step()]
            self.active = len(streams)

    @staticmethod
    def take(job: Any, streams: list[Stream]) -> None:
        if isinstance(job, Stream):
            streams.append(job)
            return
        fn, args, future = job
        if not future.set_running_or_notify_cancel():
            return
        try:
            future.set_result(fn(*args))
        except BaseException as err:  # handed to the caller, who answers the request with it
            future.set_exception(err)
