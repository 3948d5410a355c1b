"""The playground's web server: FastAPI routes over the course's own models.

How a model is served here (docs/serving.md tells the story):
- loaded once: the first request for a model loads it (the stage's own checked loader); later ones reuse it
  (`ModelCache`, a few models at a time);
- streamed: generation runs in a worker thread that hands each token to the event loop, which sends it to the
  browser as a server-sent event the moment it exists;
- cancelled: closing the tab or pressing stop drops the connection; the stream's `finally` sets a flag the worker
  checks between tokens, so the model stops within one token;
- safe: the page names models by the ids of the catalog, never by a path; every text and length is bounded; a bad
  request is answered with {"error": "..."} and the server keeps serving.
"""
from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.sse import EventSourceResponse, format_sse_event
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from scripts.common import UserError
from scripts.playground import generation
from scripts.playground.catalog import Catalog, Entry, missing
from scripts.playground.worker import ModelWorker

STATIC = Path(__file__).resolve().parent / "static"
MAX_TEXT_CHARS = 5_000        # a review, a sentence or a prompt: longer text is refused, not cut
MAX_BODY_BYTES = 1 << 20      # a request body: the longest text allowed is 5,000 characters, far below this
MAX_LOADED = 32               # models kept in memory at once (the least recently used one is dropped first)...
MAX_LOADED_BYTES = 4 << 30    # ...and at most this much checkpoint on disk among them: stage 1's n-gram MLPs are
#                               ~260 MB each, and "every model" in the classify tab asks for all of them
log = logging.getLogger("playground")


class BodyLimit:
    """Refuse a request body over MAX_BODY_BYTES before it is read into memory (a 300 MB upload would otherwise be
    held whole before the size of its text is checked)."""

    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers") or []).get(b"content-length", b"0")
        if not length.isdigit() or int(length) > MAX_BODY_BYTES:
            return await too_large(send)
        seen = 0

        async def counted() -> dict:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > MAX_BODY_BYTES:          # a body sent without its length, in chunks
                raise ApiError(f"请求太大：最多 {MAX_BODY_BYTES // 1024} KB", 413)
            return message
        return await self.app(scope, counted, send)


async def too_large(send: Callable) -> None:
    body = json.dumps({"error": f"请求太大：最多 {MAX_BODY_BYTES // 1024} KB"}, ensure_ascii=False).encode()
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


class ApiError(Exception):
    """A request the server cannot answer: the page shows `message`; `status` is the HTTP status."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


# ----------------------------------------------------------------------------- requests
class Strict(BaseModel):
    # strict: "0.5" is not a number and true is not a count; unknown settings are refused, not ignored
    model_config = ConfigDict(extra="forbid", strict=True)


Text = Field(max_length=MAX_TEXT_CHARS)
ModelId = Field(max_length=500)


class ClassifyRequest(Strict):
    text: str = Text
    models: list[str] | None = Field(None, max_length=50)


class TranslateRequest(Strict):
    text: str = Text
    model: str = ModelId
    beam: int = Field(1, ge=1, le=10)
    alpha: float = Field(1.0, gt=0, le=10, allow_inf_nan=False)


class Sampling(Strict):
    # the defaults are stage 5's generate.py's for free text
    temperature: float = Field(0.8, ge=0, le=5, allow_inf_nan=False)
    top_k: int = Field(0, ge=0, le=1 << 20)
    top_p: float = Field(0.95, gt=0, le=1, allow_inf_nan=False)


class GenerateRequest(Sampling):
    model: str = ModelId
    prompt: str = Text
    max_new_tokens: int = Field(200, ge=1, le=generation.MAX_NEW_TOKENS)
    seed: int = Field(0, ge=0, le=2**32 - 1)
    kv_cache: bool = True


class NextTokenRequest(Sampling):
    model: str = ModelId
    ids: list[int] = Field(max_length=MAX_TEXT_CHARS + generation.MAX_NEW_TOKENS)


# ----------------------------------------------------------------------------- models in memory
class ModelCache:
    """Each model loaded once, on first use, by its stage's own loader; at most MAX_LOADED kept. Used only from
    the model worker's thread, so two tabs asking for one model load it once."""

    def __init__(self, device: torch.device):
        self.device = device
        self.loaded: OrderedDict[tuple, Any] = OrderedDict()
        self.sizes: dict[tuple, int] = {}

    def get(self, entry: Entry, task: str) -> Any:
        key = (entry.id, task, entry.path.stat().st_mtime_ns)    # a retrained model is loaded again
        if key in self.loaded:
            self.loaded.move_to_end(key)
            return self.loaded[key]
        model = LOADERS[task](entry, self.device)
        self.loaded[key] = model
        self.sizes[key] = entry.path.stat().st_size
        while len(self.loaded) > 1 and (len(self.loaded) > MAX_LOADED or sum(self.sizes.values()) > MAX_LOADED_BYTES):
            oldest, _ = self.loaded.popitem(last=False)
            self.sizes.pop(oldest, None)
        return model


def load_classifier(entry: Entry, device: torch.device) -> Any:
    from scripts.playground.classify import load_classifier as load
    return load(entry.path, entry.stage, entry.model, device)


def load_translator(entry: Entry, device: torch.device) -> Any:
    from scripts.playground.translate import load_translator as load
    return load(entry.path, entry.stage, entry.model, device)


def load_generator(entry: Entry, device: torch.device) -> generation.Generator:
    return generation.load_generator(entry.path, entry.stage, device)


LOADERS: dict[str, Callable[[Entry, torch.device], Any]] = {
    "classify": load_classifier, "translate": load_translator, "generate": load_generator}


class Playground:
    """What the routes share: the catalog of models under the course root, the loaded models, and the worker
    thread every model call runs in (scripts/playground/worker.py says why)."""

    def __init__(self, root: Path, device: torch.device):
        self.root = Path(root).resolve()
        self.catalog = Catalog(self.root)
        self.catalog.refresh()
        self.cache = ModelCache(device)
        self.worker = ModelWorker()

    def entry(self, model_id: Any, task: str) -> Entry:
        try:
            return self.catalog.get(model_id, task)
        except KeyError as err:
            raise ApiError(err.args[0], 404) from None

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """fn(*args) in the model worker's thread, awaited without blocking the server."""
        return await asyncio.wrap_future(self.worker.call(fn, *args))

    async def model(self, model_id: Any, task: str) -> tuple[Entry, Any]:
        entry = await run_in_threadpool(self.entry, model_id, task)
        try:
            return entry, await self.run(self.cache.get, entry, task)
        except FileNotFoundError:       # deleted since the page listed it
            raise ApiError(f"模型文件 {entry.id} 已经不在了：点「刷新」重新列出模型", 404) from None


def timed(call: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    result = call()
    return result, round((time.perf_counter() - start) * 1000, 2)


def sse(event: dict[str, Any]) -> bytes:
    """One server-sent event: `event: <name>` and a JSON `data:` line."""
    name = event.pop("event")
    return format_sse_event(data_str=json.dumps(event, ensure_ascii=False), event=name)


def one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__


# ----------------------------------------------------------------------------- the app
def create_app(root: Path, device: str | torch.device = "cpu") -> FastAPI:
    # no /docs page: FastAPI's Swagger UI is fetched from a CDN, and the page must work offline; /openapi.json stays
    app = FastAPI(title="my_llm playground", docs_url=None, redoc_url=None)
    pg = Playground(root, torch.device(device))
    app.state.playground = pg
    app.add_middleware(BodyLimit)

    @app.exception_handler(ApiError)
    async def api_error(request: Request, err: ApiError) -> JSONResponse:
        return error_response(request, str(err), err.status)

    @app.exception_handler(UserError)
    async def user_error(request: Request, err: UserError) -> JSONResponse:
        return error_response(request, one_line(err), 400)

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, err: RequestValidationError) -> JSONResponse:
        return error_response(request, validation_message(err.errors()), 400)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, err: StarletteHTTPException) -> JSONResponse:
        said = {404: "没有这个地址", 405: "这个地址不接受这种请求方法"}.get(err.status_code, str(err.detail))
        return error_response(request, f"{said}（{request.method} {request.url.path[:80]}）", err.status_code)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, err: Exception) -> JSONResponse:
        log.exception("internal error")
        return error_response(request, f"internal error ({type(err).__name__}: {one_line(err)[:200]})", 500)

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/api/models")
    def models() -> dict[str, Any]:
        entries = pg.catalog.refresh()
        return {"models": [e.public() for e in entries], "missing": missing(pg.root, entries),
                "unreadable": pg.catalog.unreadable}

    @app.post("/api/classify")
    async def classify(req: ClassifyRequest) -> dict[str, Any]:
        check_text(req.text)
        ids = req.models
        if ids is None:              # one classifier per stage: its newest best checkpoint (scan's order)
            found = [e for e in await run_in_threadpool(pg.catalog.refresh) if "classify" in e.tasks]
            ids = list({e.stage: e.id for e in reversed(found)}.values())[::-1]
            if not ids:
                raise ApiError("还没有训练好的分类模型：见「模型」页的训练命令", 404)
        if not ids:
            raise ApiError("没有选择模型")
        return {"results": [await classify_one(pg, model_id, req.text) for model_id in ids]}

    @app.post("/api/translate")
    async def translate(req: TranslateRequest) -> dict[str, Any]:
        check_text(req.text)
        entry, translator = await pg.model(req.model, "translate")
        beam, note = req.beam, None
        if entry.stage == "stage5_gpt" and beam > 1:     # the page sends one setting to every translator
            beam, note = 1, "第 5 阶段的 GPT 只做贪心解码（没有束搜索），这里按束宽 1 翻译"
        result, ms = await pg.run(timed, lambda: translator.translate(req.text, beam, req.alpha))
        return {"model": entry.id, **result, "ms": ms, "note": note}

    @app.post("/api/next_token")
    async def next_token(req: NextTokenRequest) -> dict[str, Any]:
        _, generator = await pg.model(req.model, "generate")
        settings = generation.Settings(temperature=req.temperature, top_k=req.top_k, top_p=req.top_p)
        return await pg.run(generator.next_token, req.ids, settings)

    @app.post("/api/generate")
    async def generate(req: GenerateRequest) -> EventSourceResponse:
        entry, generator = await pg.model(req.model, "generate")
        ids, note = await pg.run(generator.encode, req.prompt)
        settings = generation.Settings(req.max_new_tokens, req.temperature, req.top_k, req.top_p, req.seed,
                                       req.kv_cache)
        start = {"event": "start", "model": entry.id, "prompt_ids": ids, "note": note,
                 "kv_cache": req.kv_cache if generator.has_cache else None}
        events = stream(pg, lambda stop: generation.run(generator, ids, settings, stop), first=start)
        return EventSourceResponse(events, headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    @app.get("/api/runs")
    def runs() -> dict[str, Any]:
        from scripts.diagnose import list_runs
        return {"runs": list_runs(pg.root)}

    @app.get("/api/runs/{run_id:path}")
    def run(run_id: str) -> dict[str, Any]:
        from scripts.diagnose import diagnose, list_runs
        known = {r["id"] for r in list_runs(pg.root)}
        if run_id not in known:
            raise ApiError(f"没有这个训练记录：{run_id[:80]!r}", 404)
        return {"id": run_id, **diagnose(pg.root / run_id)}

    @app.get("/api/results")
    def results() -> dict[str, Any]:
        from scripts.playground.results import results as read_results
        return read_results(pg.root)

    @app.get("/api/sweeps")
    def sweeps() -> dict[str, Any]:
        from scripts.playground.results import sweeps as read_sweeps
        return {"sweeps": read_sweeps(pg.root)}

    @app.get("/api/image/{image_id:path}", include_in_schema=False)
    def image(image_id: str) -> FileResponse:
        from scripts.playground.results import plot_file
        try:
            path = plot_file(pg.root, image_id)       # only a plot the results list: never any other file
        except UserError:
            raise ApiError(f"没有这张图：{image_id[:80]!r}", 404) from None
        return FileResponse(path, media_type="image/png")

    from scripts.playground.openai_api import add_routes
    add_routes(app, pg)
    return app


# pydantic's error types, said in the page's language (the field's name stays as the API spells it)
SAID = {"less_than_equal": "不能大于 {le}", "less_than": "要小于 {lt}", "greater_than_equal": "不能小于 {ge}",
        "greater_than": "要大于 {gt}", "string_too_long": "最多 {max_length} 个字符",
        "too_long": "最多 {max_length} 项", "too_short": "至少 {min_length} 项", "missing": "缺少这一项",
        "extra_forbidden": "没有这个设置", "int_parsing": "要一个整数", "int_type": "要一个整数",
        "int_from_float": "要一个整数", "float_parsing": "要一个数", "float_type": "要一个数",
        "finite_number": "要一个有限的数（不是 NaN 或无穷大）", "string_type": "要一段文字",
        "bool_parsing": "要 true 或 false", "bool_type": "要 true 或 false", "list_type": "要一个列表",
        "json_invalid": "不是合法的 JSON", "model_attributes_type": "要一个 JSON 对象"}


def validation_message(errors: list[dict[str, Any]]) -> str:
    """The first problem of a request, in one line: `field: what is wrong` (pydantic's own words for a rare one)."""
    first = errors[0] if errors else {}
    if first.get("type") == "json_invalid":
        return "请求不是合法的 JSON"
    where = ".".join(str(part) for part in first.get("loc", ()) if part != "body") or "请求"
    said = SAID.get(first.get("type", ""))
    try:
        what = said.format(**first.get("ctx", {})) if said else first.get("msg", "不合法")
    except (KeyError, IndexError):
        what = first.get("msg", "不合法")
    return f"{where}: {what}"


def error_response(request: Request, message: str, status: int) -> JSONResponse:
    """{"error": "..."} for the page; the OpenAI API's error shape under /v1, which its clients read."""
    if request.url.path.startswith("/v1/"):
        from scripts.playground.openai_api import error_body
        return error_body(message, status)
    return JSONResponse({"error": message}, status_code=status)


def check_text(text: str) -> None:
    if not text.strip():
        raise ApiError("请输入文字（现在是空的）")


async def classify_one(pg: Playground, model_id: str, text: str) -> dict[str, Any]:
    """One classifier's answer, or its error: one broken model does not hide the others' answers."""
    try:
        start = time.perf_counter()
        entry, classifier = await pg.model(model_id, "classify")
        load_ms = round((time.perf_counter() - start) * 1000, 1)
        result, ms = await pg.run(timed, lambda: classifier.classify(text))
        return {"model": entry.id, **result, "ms": ms, "load_ms": load_ms}
    except (ApiError, UserError) as err:
        return {"model": model_id, "error": one_line(err)}


async def stream(pg: Playground, events: Callable[[threading.Event], Iterator[dict[str, Any]]],
                 first: dict[str, Any] | None = None, encode: Callable[[dict[str, Any]], bytes] = sse,
                 last: bytes = b""):
    """Server-sent events from the iterator `events(stop)`, stepped by the model worker; `encode` writes one event
    (the page's named events, or OpenAI's `data:` chunks), `last` ends the stream.

    The worker hands over what it has produced through the event loop; this coroutine sends each batch in one
    write. When the client goes away (a closed tab, the stop button), the server cancels this coroutine: `finally`
    sets `stop`, and the worker drops the stream at its next turn."""
    loop = asyncio.get_running_loop()
    arrived: asyncio.Queue = asyncio.Queue()
    stop = threading.Event()

    def deliver(batch: list[dict[str, Any]], finished: bool) -> None:
        try:
            loop.call_soon_threadsafe(arrived.put_nowait, (batch, finished))
        except RuntimeError:       # the server is shutting down: nobody is listening any more
            stop.set()

    try:
        if first is not None:
            yield encode(dict(first))
        pg.worker.open_stream(events(stop), deliver, stop)
        while True:
            batch, finished = await arrived.get()
            chunk = b"".join(encode(dict(event)) for event in batch) + (last if finished else b"")
            if chunk:
                yield chunk
            if finished:
                return
    finally:
        stop.set()


async def collect(pg: Playground, events: Callable[[threading.Event], Iterator[dict[str, Any]]]) -> list[dict]:
    """All the events of `events(stop)`, stepped by the model worker in turn with the streams."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future = loop.create_future()
    got: list[dict[str, Any]] = []
    stop = threading.Event()

    def deliver(batch: list[dict[str, Any]], finished: bool) -> None:
        got.extend(batch)
        if finished:
            loop.call_soon_threadsafe(lambda: done.done() or done.set_result(None))

    pg.worker.open_stream(events(stop), deliver, stop)
    try:
        await done
    finally:
        stop.set()
    return got
