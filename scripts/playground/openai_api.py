"""OpenAI-compatible endpoints, so that tools written for the OpenAI API talk to the learner's own models.

    from openai import OpenAI
    client = OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="local")   # any key: nothing is checked
    client.completions.create(model="stage5_gpt/checkpoints/gpt_shakespeare_char.pt", prompt="ROMEO:", max_tokens=50)

- `GET /v1/models`: the language models found (their ids are checkpoint paths, as in the page);
- `POST /v1/completions`: continue a prompt with any of them (stage 2's RNN or stage 5's GPT);
- `POST /v1/chat/completions`: a stage 5 multi-task model answers the last user message; the task is named by a
  system message ("translate", "imdb", "ag_news"), translation by default.
Both stream with `stream=True`: `data: {chunk}` lines, then `data: [DONE]`, as the OpenAI API does.
"""
from __future__ import annotations

import json
import secrets
import threading
import time
import uuid
from typing import Any, Iterator

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import StreamingResponse

from scripts.common import UserError
from scripts.playground import generation

DEFAULT_TASK = "translate"


class OpenAIRequest(BaseModel):
    # the official client sends fields this server does not use (user, logprobs, ...): they are ignored, not refused
    model_config = ConfigDict(extra="ignore")
    model: str = Field(max_length=500)
    max_tokens: int | None = Field(None, ge=1, le=generation.MAX_NEW_TOKENS)
    max_completion_tokens: int | None = Field(None, ge=1, le=generation.MAX_NEW_TOKENS)
    temperature: float = Field(1.0, ge=0, le=5, allow_inf_nan=False)
    top_p: float = Field(1.0, gt=0, le=1, allow_inf_nan=False)
    n: int = Field(1, ge=1, le=1)
    seed: int | None = Field(None, ge=0, le=2**32 - 1)
    stop: str | list[str] | None = None
    stream: bool = False
    # asked for but not offered here: refused, not ignored (a client would read the answer as if they applied)
    echo: bool = False
    logprobs: int | bool | None = None
    best_of: int | None = None


class CompletionRequest(OpenAIRequest):
    prompt: str | list[str] = Field(max_length=generation.MAX_PROMPT_CHARS)


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: str = Field(max_length=20)
    content: str | list[dict[str, Any]] = Field(max_length=generation.MAX_PROMPT_CHARS)


class ChatRequest(OpenAIRequest):
    messages: list[Message] = Field(min_length=1, max_length=50)


class OpenAIError(Exception):
    pass


def error_body(message: str, status: int = 400) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": "invalid_request_error", "param": None,
                                   "code": None}}, status_code=status)


def check_unsupported(request: OpenAIRequest) -> None:
    if getattr(request, "echo", False):
        raise OpenAIError("echo is not supported by this server")
    if getattr(request, "logprobs", None) not in (None, False):
        raise OpenAIError("logprobs are not supported by this server")
    if getattr(request, "best_of", None) not in (None, 1):
        raise OpenAIError("best_of: only 1 is supported by this server")


def stops_of(request: OpenAIRequest) -> list[str]:
    stops = [request.stop] if isinstance(request.stop, str) else list(request.stop or [])
    if len(stops) > 4 or any(not s or len(s) > 100 for s in stops):
        raise OpenAIError("stop: at most 4 strings of 1 to 100 characters")
    return stops


def settings_of(request: OpenAIRequest, default_tokens: int, temperature: float | None = None) -> generation.Settings:
    tokens = request.max_completion_tokens or request.max_tokens or default_tokens
    # no seed: a fresh one each time, as the OpenAI API samples anew for each request
    seed = request.seed if request.seed is not None else secrets.randbelow(2**32)
    return generation.Settings(max_new_tokens=tokens, temperature=request.temperature if temperature is None
                               else temperature, top_p=request.top_p, seed=seed)


def pieces(generator: generation.Generator, ids: list[int], settings: generation.Settings, stops: list[str],
           stop: threading.Event) -> Iterator[dict[str, Any]]:
    """Text pieces as they are sampled, cut at the first stop string; the last event says why it ended."""
    text, sent, count, reason = "", 0, 0, "length"
    for _, piece in generator.tokens(ids, settings, stop):
        count += 1
        text += piece
        hit = min((i for i in (text.find(s) for s in stops) if i >= 0), default=-1)
        if hit >= 0:
            text, reason = text[:hit], "stop"
        hold = max((len(s) - 1 for s in stops), default=0)       # a stop string may still be forming
        ready = len(text) if reason == "stop" else max(sent, len(text) - hold)
        if ready > sent:
            yield {"event": "piece", "text": text[sent:ready]}
            sent = ready
        if reason == "stop":
            break
    else:
        if count < settings.max_new_tokens:
            reason = "stop"                                       # the model ended its text
    if len(text) > sent:
        yield {"event": "piece", "text": text[sent:]}
    yield {"event": "end", "finish_reason": reason, "completion_tokens": count}


def add_routes(app: FastAPI, pg: Any) -> None:
    from scripts.playground.server import collect, stream

    def generator_of(model_id: str) -> tuple[Any, generation.Generator]:
        try:
            entry = pg.catalog.get(model_id, "generate")
        except KeyError:
            raise OpenAIError(f"model {model_id[:100]!r} not found; GET /v1/models lists the models") from None
        return entry, pg.cache.get(entry, "generate")     # called in the model worker's thread (pg.run)

    def prompt_of(request: CompletionRequest) -> str:
        if isinstance(request.prompt, list):
            if len(request.prompt) != 1:
                raise OpenAIError("prompt: one prompt per request (n=1)")
            return request.prompt[0]
        return request.prompt

    async def answer(request: OpenAIRequest, kind: str, prepare) -> Any:
        """Run `prepare` (which names the model and the prompt ids), then answer at once or as a stream."""
        try:
            check_unsupported(request)
            stops = stops_of(request)
            entry, generator, ids, settings = await pg.run(prepare)
        except (OpenAIError, UserError) as err:
            return error_body(" ".join(str(err).split()), 404 if "not found" in str(err) else 400)
        ident, created = f"{'chatcmpl' if kind == 'chat' else 'cmpl'}-{uuid.uuid4().hex[:24]}", int(time.time())
        head = {"id": ident, "created": created, "model": entry.id}
        def events(stop: threading.Event) -> Iterator[dict[str, Any]]:
            return pieces(generator, ids, settings, stops, stop)
        if request.stream:
            return StreamingResponse(stream(pg, events, encode=chunk_encoder(head, kind), last=b"data: [DONE]\n\n"),
                                     media_type="text/event-stream")
        got = await collect(pg, events)
        if got and got[-1]["event"] == "error":
            return error_body(got[-1]["error"], 500)
        text = "".join(e["text"] for e in got if e["event"] == "piece")
        end = got[-1]
        usage = {"prompt_tokens": len(ids), "completion_tokens": end["completion_tokens"],
                 "total_tokens": len(ids) + end["completion_tokens"]}
        if kind == "chat":
            choice = {"index": 0, "message": {"role": "assistant", "content": text},
                      "finish_reason": end["finish_reason"], "logprobs": None}
            return {**head, "object": "chat.completion", "choices": [choice], "usage": usage}
        choice = {"index": 0, "text": text, "finish_reason": end["finish_reason"], "logprobs": None}
        return {**head, "object": "text_completion", "choices": [choice], "usage": usage}

    @app.get("/v1/models")
    def list_models() -> dict[str, Any]:
        entries = [e for e in pg.catalog.refresh() if "generate" in e.tasks]
        return {"object": "list", "data": [{"id": e.id, "object": "model", "created": int(e.path.stat().st_mtime),
                                            "owned_by": "my_llm"} for e in entries]}

    @app.get("/v1/models/{model_id:path}")
    def one_model(model_id: str) -> Any:
        entry = next((e for e in pg.catalog.refresh() if e.id == model_id and "generate" in e.tasks), None)
        if entry is None:
            return error_body(f"model {model_id[:100]!r} not found; GET /v1/models lists the models", 404)
        return {"id": entry.id, "object": "model", "created": int(entry.path.stat().st_mtime), "owned_by": "my_llm"}

    @app.post("/v1/completions")
    async def completions(request: CompletionRequest) -> Any:
        def prepare() -> tuple:
            entry, generator = generator_of(request.model)
            ids, _ = generator.encode(prompt_of(request))
            return entry, generator, ids, settings_of(request, 16)
        return await answer(request, "text", prepare)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: ChatRequest) -> Any:
        def prepare() -> tuple:
            entry, generator = generator_of(request.model)
            if not isinstance(generator, generation.GPTGenerator):
                raise OpenAIError(f"{entry.id} is not a stage 5 multi-task model; chat needs one "
                                  "(python stage5_gpt/finetune.py --task multi)")
            task, text = chat_task(request.messages)
            # a task's answer is greedy unless a temperature is asked for, as in stage 5's generate.py
            temperature = request.temperature if "temperature" in request.model_fields_set else 0.0
            return entry, generator, generator.task_ids(task, text), settings_of(request, 100, temperature)
        return await answer(request, "chat", prepare)


def content_text(content: str | list[dict[str, Any]]) -> str:
    if isinstance(content, str):
        return content
    return "".join(str(part.get("text", "")) for part in content if part.get("type") == "text")


def chat_task(messages: list[Message]) -> tuple[str, str]:
    """(task, text): the task a system message names (translation by default) and the last user message."""
    users = [content_text(m.content) for m in messages if m.role == "user"]
    if not users:
        raise OpenAIError("messages: a user message is needed (the text to translate or classify)")
    systems = [content_text(m.content).strip().lower() for m in messages if m.role in ("system", "developer")]
    task = systems[-1] if systems and systems[-1] else DEFAULT_TASK
    return task, users[-1]


def chunk_encoder(head: dict[str, Any], kind: str):
    """Our pieces as OpenAI stream chunks (`data: {...}` lines)."""
    first = [True]

    def encode(event: dict[str, Any]) -> bytes:
        if event["event"] == "error":
            body = {"error": {"message": event["error"], "type": "server_error"}}
        elif kind == "chat":
            delta = {"content": event["text"]} if event["event"] == "piece" else {}
            if first[0]:
                delta, first[0] = {"role": "assistant", **delta}, False
            body = {**head, "object": "chat.completion.chunk", "choices": [
                {"index": 0, "delta": delta, "finish_reason": event.get("finish_reason"), "logprobs": None}]}
        else:
            body = {**head, "object": "text_completion", "choices": [
                {"index": 0, "text": event.get("text", ""), "finish_reason": event.get("finish_reason"),
                 "logprobs": None}]}
        return f"data: {json.dumps(body, ensure_ascii=False)}\n\n".encode()

    return encode
