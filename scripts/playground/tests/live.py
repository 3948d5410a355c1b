"""A real playground server for the tests: uvicorn in a background thread on a free 127.0.0.1 port."""
from __future__ import annotations

import socket
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import uvicorn

from scripts.playground.server import create_app

# the tiny course's models (tiny_models.py) the API tests talk to
GPT = "stage5_gpt/checkpoints/gpt_shakespeare_char.pt"
LSTM = "stage2_rnn_lstm/checkpoints/best_lstm_char.pt"
MULTI = "stage5_gpt/checkpoints/ft_multi_full.pt"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serve(root: Path) -> Iterator[tuple[str, object]]:
    """(base URL, the app) of a server over `root`, stopped on exit."""
    app = create_app(root)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the playground server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{server.config.port}", app
    finally:
        server.should_exit = True
        thread.join(timeout=10)
