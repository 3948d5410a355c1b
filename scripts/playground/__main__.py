"""Serve the playground: `python -m scripts.playground` (or `make play`), then open http://127.0.0.1:8000.

    python -m scripts.playground                    # the models under this checkout, on 127.0.0.1:8000
    python -m scripts.playground --port 8080 --open # another port, and open the page in the browser
    python -m scripts.playground --host 0.0.0.0     # reachable from other machines (a warning says what that means)
"""
from __future__ import annotations

import argparse
import errno
import ipaddress
import socket
import sys
import webbrowser
from pathlib import Path
from typing import Sequence

from scripts.checks import Range
from scripts.common import ArgParser, UserError, get_device, path_arg, run_main, set_threads

ROOT = Path(__file__).resolve().parents[2]
PORT = Range(int, lo=1, hi=65535)


def build_parser() -> argparse.ArgumentParser:
    p = ArgParser(prog="python -m scripts.playground",
                  description="The course's playground: every stage's trained models side by side, in the browser.")
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


def check_address(host: str, port: int) -> None:
    """The address must resolve and the port be free, said in one line before anything is printed or loaded."""
    if not host.strip():
        raise UserError("--host is empty; give an address such as 127.0.0.1 (this machine only)")
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except (socket.gaierror, UnicodeError):
        raise UserError(f"--host {host!r} is not an address of this machine; use 127.0.0.1") from None
    with socket.socket(family, kind, proto) as probe:
        try:
            probe.bind(address)
        except OSError as err:
            hint = "another program (a playground already running?) uses it; pass another --port" \
                if err.errno == errno.EADDRINUSE else err.strerror
            raise UserError(f"cannot listen on {host} port {port}: {hint}") from None


def page_url(host: str, port: int) -> str:
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    return f"http://[{shown}]:{port}/" if ":" in shown else f"http://{shown}:{port}/"


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    check_address(args.host, args.port)
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
    url = page_url(args.host, args.port)
    print(f"playground: {url}  (Ctrl-C stops it)", file=sys.stderr, flush=True)
    if args.open:
        webbrowser.open(url)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


if __name__ == "__main__":
    run_main(main)
