"""Serve the playground: `python -m scripts.playground` (or `make play`), then open http://127.0.0.1:8000.

    python -m scripts.playground                    # the models under this checkout, on 127.0.0.1:8000
    python -m scripts.playground --port 8080 --open # another port, and open the page in the browser
    python -m scripts.playground --host 0.0.0.0     # reachable from other machines (a warning says what that means)
"""
from __future__ import annotations

import argparse
import ipaddress
import sys
import webbrowser
from pathlib import Path
from typing import Sequence

from scripts.checks import Range
from scripts.common import ArgParser, UserError, get_device, path_arg, run_main, set_threads

ROOT = Path(__file__).resolve().parents[2]
PORT = Range(int, lo=1, hi=65535)


def build_parser() -> argparse.ArgumentParser:
    p = ArgParser(description="The course's playground: every stage's trained models side by side, in the browser.")
    p.add_argument("--port", type=PORT, default=8000, help="TCP port to listen on")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on; anything but a loopback address lets other machines use your models")
    p.add_argument("--root", type=path_arg, default=ROOT, help="course checkout whose stage folders hold the models")
    p.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda", "mps"], help="where models run")
    p.add_argument("--num_threads", type=Range(int, lo=0, hi=1024, zero_means="torch's default"), default=0,
                   help="torch CPU threads")
    p.add_argument("--open", action=argparse.BooleanOptionalAction, default=False,
                   help="open the page in the default browser")
    return p


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not any((Path(args.root) / stage).is_dir() for stage in ("stage1_mlp", "stage5_gpt")):
        raise UserError(f"--root {args.root} is not a course checkout (no stage1_mlp/ or stage5_gpt/ in it)")
    set_threads(args.num_threads)
    device = get_device(args.device)
    if not is_loopback(args.host):
        print(f"warning: listening on {args.host}: anyone who can reach this machine on port {args.port} can use "
              "your models and read your runs' results; there is no password", file=sys.stderr)
    import uvicorn

    from scripts.playground.server import create_app
    app = create_app(Path(args.root), device)
    url = f"http://{'127.0.0.1' if args.host in ('0.0.0.0', '::') else args.host}:{args.port}/"
    print(f"playground: {url}  (Ctrl-C stops it)", file=sys.stderr, flush=True)
    if args.open:
        webbrowser.open(url)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


if __name__ == "__main__":
    run_main(main)
