"""How fast the playground serves: streaming speed against generate.py, time to the first token, four streams at
once, the page's first load, and why one thread calls the models. Writes scripts/playground/bench.json
and the tables in README.md and docs/serving.md.

    python scripts/playground/bench.py                 # about 2 minutes on 2 CPU cores
    python scripts/playground/bench.py --tables_only   # rewrite the README's table from bench.json

The model is stage 5's default char model (`python stage5_gpt/train.py`, checkpoints/gpt_shakespeare_char.pt).
The server runs as a learner starts it (`python -m scripts.playground`, its own process); this program is its
client, reading the stream as the page does. Speed pairs alternate generate.py and the page (A B A B ...), and
the ratio is taken pair by pair, so a machine that slows down during the run slows both sides of a pair.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Sequence

from scripts.checks import Range
from scripts.common import ArgParser, UserError, hardware, run_main, write_text

ROOT = Path(__file__).resolve().parents[2]
RESULTS = Path(__file__).resolve().parent / "bench.json"
README = ROOT / "README.md"
DOC = ROOT / "docs" / "serving.md"
MODEL = "stage5_gpt/checkpoints/gpt_shakespeare_char.pt"
PROMPT = "ROMEO:"
SAMPLING = {"temperature": 0.8, "top_k": 0, "top_p": 0.95}      # generate.py's defaults for free text
COMMAND = "python scripts/playground/bench.py"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def build_parser() -> argparse.ArgumentParser:
    p = ArgParser(description="Benchmark the playground server against generate.py (stage 5's char model).")
    p.add_argument("--pairs", type=Range(int, lo=1, hi=50), default=5, help="generate.py / page speed pairs")
    p.add_argument("--tokens", type=Range(int, lo=50, hi=2000), default=1000, help="new tokens per speed run")
    p.add_argument("--first_tokens", type=Range(int, lo=1, hi=200), default=20,
                   help="requests timed for the first token")
    p.add_argument("--port", type=Range(int, lo=1024, hi=65535), default=8777, help="port of the server it starts")
    p.add_argument("--tables_only", action="store_true", help="only rewrite the README's table from bench.json")
    return p


def start_server(port: int) -> subprocess.Popen:
    from scripts.playground.__main__ import check_address
    check_address("127.0.0.1", port)            # a server already there would be measured instead of a fresh one
    server = subprocess.Popen([sys.executable, "-m", "scripts.playground", "--port", str(port)], cwd=ROOT,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    import httpx
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise UserError(f"the playground server did not start: {server.stderr.read().strip()[-300:]}")
        try:
            httpx.get(f"http://127.0.0.1:{port}/api/models", timeout=5)
            return server
        except httpx.HTTPError:
            time.sleep(0.2)
    server.kill()
    raise UserError(f"the playground server did not answer on port {port} within 60 s")


def stream(url: str, tokens: int, seed: int) -> dict[str, float]:
    """One generation read as the page reads it: the client's tokens/s (from sending the request to the last
    token) and time to the first token, with the server's own figures."""
    import httpx
    body = {"model": MODEL, "prompt": PROMPT, "max_new_tokens": tokens, "seed": seed, "kv_cache": True, **SAMPLING}
    sent = time.perf_counter()
    first = last = None
    count, done = 0, {}
    with httpx.stream("POST", f"{url}/api/generate", json=body, timeout=120) as response:
        if response.status_code != 200:
            raise UserError(f"the server answered {response.status_code}: {response.read()[:200]!r}")
        event = None
        for line in response.iter_lines():
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: ") and event == "token":
                count += 1
                last = time.perf_counter()
                first = first or last
            elif line.startswith("data: ") and event == "done":
                done = json.loads(line[6:])
            elif line.startswith("data: ") and event == "error":
                raise UserError(f"the stream failed: {line[6:200]}")
    if count != tokens or first is None:
        raise UserError(f"the stream gave {count} tokens, not {tokens}")
    return {"tokens_per_s": count / (last - sent), "first_token_ms": (first - sent) * 1000,
            "server_tokens_per_s": done.get("tokens_per_second", 0.0)}


def generate_py(tokens: int, seed: int) -> float:
    """generate.py's own tokens/s for the same model and settings."""
    cmd = [sys.executable, "stage5_gpt/generate.py", "--checkpoint", MODEL, "--prompt", PROMPT, "--max_new_tokens",
           str(tokens), "--seed", str(seed)] + [x for k, v in SAMPLING.items() for x in (f"--{k}", str(v))]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    found = re.search(r"\[(\d+) tokens/s", done.stderr)
    if done.returncode != 0 or not found:
        raise UserError(f"generate.py failed: {done.stderr.strip()[-300:]}")
    return float(found.group(1))


def concurrent(url: str, tokens: int, streams: int = 4) -> dict[str, Any]:
    results: list[Any] = [None] * streams

    def one(i: int) -> None:
        try:
            results[i] = stream(url, tokens, seed=100 + i)
        except Exception as err:  # counted as a failed stream in the result, not raised from a thread
            results[i] = {"error": str(err)}

    start = time.perf_counter()
    threads = [threading.Thread(target=one, args=(i,)) for i in range(streams)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - start
    ok = [r for r in results if "error" not in r]
    return {"streams": streams, "tokens_each": tokens, "completed": len(ok), "errors": [r["error"] for r in results
            if "error" in r], "wall_seconds": round(seconds, 2),
            "total_tokens_per_s": round(len(ok) * tokens / seconds, 1),
            "per_stream_tokens_per_s": [round(r["tokens_per_s"], 1) for r in ok]}


def page_load(url: str) -> dict[str, Any]:
    """The page's first load in a fresh headless Chromium: the load event, and the model list arriving."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        return {"measured": False, "why": "no chromium on this machine (apt-get install -y chromium)"}
    from playwright.sync_api import sync_playwright
    loads, lists = [], []
    with sync_playwright() as pw:
        for _ in range(5):
            chromium = pw.chromium.launch(executable_path=browser, args=CHROMIUM_ARGS)
            page = chromium.new_page()
            with page.expect_response(lambda r: r.url.endswith("/api/models")):
                page.goto(url + "/", wait_until="load")
            listed = page.evaluate("performance.now()")
            timing = page.evaluate("JSON.stringify(performance.getEntriesByType('navigation')[0])")
            loads.append(json.loads(timing)["loadEventEnd"])
            lists.append(listed)
            chromium.close()
    return {"measured": True, "browser": subprocess.run([browser, "--version"], capture_output=True,
                                                         text=True).stdout.strip(),
            "load_event_ms": summary(loads), "models_listed_ms": summary(lists)}


def calling_threads(tokens: int) -> dict[str, float]:
    """Why the server runs every model call on one thread: the same generation, in this process, from one calling
    thread, then from a second one (each thread that calls torch brings its own OpenMP team)."""
    import torch

    from scripts.playground import generation
    model = generation.load_generator(ROOT / MODEL, "stage5_gpt", torch.device("cpu"))
    ids, _ = model.encode(PROMPT)
    settings = generation.Settings(max_new_tokens=tokens, seed=1, **SAMPLING)

    def speed() -> float:
        return list(generation.run(model, ids, settings, threading.Event()))[-1]["tokens_per_second"]

    speed()                                                   # warm-up
    one = [speed() for _ in range(3)]
    other: list[float] = []
    for _ in range(3):
        thread = threading.Thread(target=lambda: other.append(speed()))
        thread.start()
        thread.join()
    return {"one_thread_tokens_per_s": summary(one), "second_thread_tokens_per_s": summary(other)}


def summary(values: Sequence[float], digits: int = 1) -> dict[str, float]:
    return {"median": round(statistics.median(values), digits), "min": round(min(values), digits),
            "max": round(max(values), digits)}


def measure(args: argparse.Namespace) -> dict[str, Any]:
    if not (ROOT / MODEL).is_file():
        raise UserError(f"{MODEL} is missing; train stage 5's default char model first: python stage5_gpt/train.py")
    url = f"http://127.0.0.1:{args.port}"
    server = start_server(args.port)
    try:
        cold = stream(url, 20, seed=0)                     # the first request loads the model
        stream(url, args.tokens, seed=0)                   # and one warm-up run, not counted
        pairs = []
        for i in range(args.pairs):
            reference = generate_py(args.tokens, seed=i + 1)
            page = stream(url, args.tokens, seed=i + 1)
            pairs.append({"generate_py": reference, "page": round(page["tokens_per_s"], 1),
                          "page_server_side": page["server_tokens_per_s"], "ratio": round(page["tokens_per_s"]
                                                                                        / reference, 3)})
        first = [stream(url, 5, seed=i)["first_token_ms"] for i in range(args.first_tokens)]
        together = concurrent(url, 300)
        load = page_load(url)
    finally:
        server.terminate()
        server.wait(timeout=20)
    threads = calling_threads(args.tokens)
    return {"command": COMMAND + (f" --pairs {args.pairs}" if args.pairs != 5 else ""), "model": MODEL,
            "settings": {"prompt": PROMPT, "max_new_tokens": args.tokens, "kv_cache": True, **SAMPLING},
            "hardware": hardware(), "load_average_1min": round(os.getloadavg()[0], 2),
            "speed_pairs": pairs, "ratio": summary([p["ratio"] for p in pairs], digits=3),
            "generate_py_tokens_per_s": summary([p["generate_py"] for p in pairs]),
            "page_tokens_per_s": summary([p["page"] for p in pairs]),
            "first_token_ms": summary(first), "cold_first_token_ms": round(cold["first_token_ms"], 1),
            "concurrent": together, "page_load": load, "calling_threads": threads}


def table(result: dict[str, Any]) -> str:
    load = result["page_load"]
    together = result["concurrent"]
    if not load.get("measured"):
        page_load = f"未测:{load['why']}"
    else:
        page_load = (f"load 事件 {load['load_event_ms']['median']:.0f} ms,模型列表到达 "
                     f"{load['models_listed_ms']['median']:.0f} ms(最慢 {load['models_listed_ms']['max']:.0f} ms)")
    rows = [
        ("流式生成速度(页面 / generate.py)",
         f"{result['page_tokens_per_s']['median']:.0f} / {result['generate_py_tokens_per_s']['median']:.0f} tokens/s,"
         f"比值 {result['ratio']['median']:.2f}({result['ratio']['min']:.2f}–{result['ratio']['max']:.2f},"
         f"{len(result['speed_pairs'])} 对)"),
        ("首个 token(模型已加载)", f"中位数 {result['first_token_ms']['median']:.0f} ms,最慢 "
                                  f"{result['first_token_ms']['max']:.0f} ms;第一次请求(含加载模型)"
                                  f"{result['cold_first_token_ms']:.0f} ms"),
        ("四路同时生成", f"{together['completed']}/{together['streams']} 完成,错误 {len(together['errors'])},"
                       f"合计 {together['total_tokens_per_s']:.0f} tokens/s"),
        ("页面首次加载", page_load),
        ("同一进程里换一个线程调用模型", f"{result['calling_threads']['one_thread_tokens_per_s']['median']:.0f} → "
                                  f"{result['calling_threads']['second_thread_tokens_per_s']['median']:.0f} tokens/s"),
    ]
    settings = result["settings"]
    lines = ["| 测量 | 结果 |", "|---|---|"] + [f"| {a} | {b} |" for a, b in rows]
    lines.append("")
    lines.append(f"Made by `{result['command']}` from `scripts/playground/bench.json`: {result['model']}, "
                 f"prompt {settings['prompt']!r}, {settings['max_new_tokens']} new tokens, temperature "
                 f"{settings['temperature']}, top-p {settings['top_p']}, KV cache; {result['hardware']}. "
                 "The page's speed is the client's: from sending the request to the last token received.")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.tables_only:
        from scripts.report import load_results
        if not RESULTS.is_file():
            raise UserError(f"{RESULTS.relative_to(ROOT)} is missing: run {COMMAND} first")
        result = load_results([RESULTS])[0]
        gone = [k for k in ("speed_pairs", "ratio", "page_tokens_per_s", "generate_py_tokens_per_s", "first_token_ms",
                            "cold_first_token_ms", "concurrent", "page_load", "calling_threads", "settings",
                            "command", "model", "hardware") if k not in result]
        if gone:
            raise UserError(f"{RESULTS.relative_to(ROOT)} lacks {', '.join(gone)}: run {COMMAND} again")
    else:
        result = measure(args)
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        write_text(RESULTS, json.dumps(result, indent=2, ensure_ascii=False) + "\n")
        print(json.dumps({k: result[k] for k in ("ratio", "first_token_ms", "concurrent", "page_load")},
                         ensure_ascii=False, indent=1))
    from scripts.report import update_file
    for path in (README, DOC):
        update_file(path, {"playground": table(result)})
    wrote = "the tables" if args.tables_only else f"{RESULTS.relative_to(ROOT)} and the tables"
    print(f"wrote {wrote} in README.md and docs/serving.md", file=sys.stderr)
    return 0


if __name__ == "__main__":
    run_main(main)
