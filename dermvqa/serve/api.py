"""OpenAI-compatible HTTP API: POST /v1/chat/completions (plain or SSE streaming), GET /v1/models, GET /health.

Each conversation carries exactly one image, as an `image_url` part holding a `data:image/...;base64,` URI or,
when the server was started with an allowed directory, a path (or file:// URL) inside it; remote URLs are never
fetched. Decoding is greedy (temperature and top_p are accepted and ignored). Every refusal is a 4xx with an
OpenAI-style error body, and the server keeps serving after it.
Extra field (plain OpenAI clients neither send nor read it): a request may carry `"dermvqa": {"explain": true}`
(non-streaming only); the reply then carries `"dermvqa": {"explanation": {grid, peak, overlay_png, ...}}`
(dermvqa/infer/grounding.py). With the model's out-of-distribution summary every reply carries
`"dermvqa": {"ood": {score, threshold, unlike_training, ...}}`, and a photo unlike the training images is
answered with that notice instead of a diagnosis (no generation); `serve api --no-ood` serves without it (an
eval run that must see every answer). GET /v1/models names, per model, `"dermvqa": {"blank_rgb": [r, g, b]}`:
the processor's mean colour, which `dermvqa eval --model openai:...` sends as the blind control's image.
"""
from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import threading
import time
import uuid
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import iterate_in_threadpool, run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from dermvqa.infer.chat import PromptTooLong, ReplyStream, check_fits, count_prompt_tokens
from dermvqa.infer.generate import mean_rgb
from dermvqa.infer.grounding import explanation_payload
from dermvqa.serve.api_request import ApiError, ImageSource, parse_request, to_conversation
from dermvqa.serve.batcher import Batcher
from dermvqa.serve.limits import Limits, api_key_matches

MAX_QUEUE = 256


def _error(status: int, message: str, code: str, kind: str = "invalid_request_error") -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": kind, "param": None, "code": code}}, status)


def create_app(model, processor, model_name: str, api_key: str | None = None, allow_dir: str | Path | None = None,
               limits: Limits = Limits(), max_batch: int = 8, max_wait_s: float = 0.005,
               default_max_tokens: int = 256, ood=None) -> FastAPI:
    batcher = Batcher(model, processor, max_batch, max_wait_s)
    explain_lock = threading.Lock()

    def explained(image, question, answer):
        with explain_lock:  # one explanation at a time beside the batcher's generation
            return explanation_payload(model, processor, image, question, answer)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        await run_in_threadpool(batcher.close)

    app = FastAPI(title="dermvqa API", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.state.batcher = batcher
    images = ImageSource(limits, allow_dir)
    counter = copy.deepcopy(processor)  # request threads count tokens on their own copy; the worker owns `processor`
    counter_lock = threading.Lock()

    def prompt_tokens(messages):
        with counter_lock:
            return count_prompt_tokens(counter, messages)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError):
        return _error(exc.status, exc.message, exc.code, exc.kind)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        return _error(exc.status_code, str(exc.detail), "not_found" if exc.status_code == 404 else "http_error")

    @app.exception_handler(Exception)
    async def _server_error(request: Request, exc: Exception):
        return _error(500, f"the server failed to answer: {type(exc).__name__}", "server_error", "server_error")

    @app.middleware("http")
    async def _guard(request: Request, call_next):
        if request.method == "POST":
            length = request.headers.get("content-length")
            if length is None or not length.isdigit():
                return _error(411, "send the request with a Content-Length header", "length_required")
            if int(length) > limits.max_request_bytes:
                return _error(413, f"request body is {length} bytes; the limit is {limits.max_request_bytes}",
                              "request_too_large")
        if api_key and request.url.path.startswith("/v1/") and not api_key_matches(
                request.headers.get("authorization"), api_key):
            return _error(401, "missing or wrong API key (send 'Authorization: Bearer KEY')", "invalid_api_key",
                          "authentication_error")
        return await call_next(request)

    @app.get("/health")
    async def health():
        return {"status": "ok", "model": model_name, "queued": batcher.pending()}

    blind = {"blank_rgb": list(mean_rgb(processor))}  # the image a blind control sends: zero after normalisation

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": model_name, "object": "model", "created": 0, "owned_by": "dermvqa",
                                            "dermvqa": blind}]}

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        req = parse_request(await request.body())
        if req.model and req.model != model_name:
            raise ApiError(404, f"model '{req.model}' is not served here; this server serves '{model_name}'",
                           "model_not_found")
        if req.n != 1:
            raise ApiError(400, "n must be 1")
        explain = req.dermvqa is not None and req.dermvqa.explain
        if explain and req.stream:
            raise ApiError(400, "dermvqa.explain is available for non-streaming requests only")
        max_new = req.max_completion_tokens or req.max_tokens or default_max_tokens
        if max_new > limits.max_new_tokens:
            raise ApiError(400, f"max_tokens {max_new} is above this server's limit of {limits.max_new_tokens}")
        if batcher.pending() >= MAX_QUEUE:
            raise ApiError(503, "server busy: too many queued requests, retry later", "busy", "server_error")
        image, messages = await run_in_threadpool(to_conversation, req, images, limits)
        try:
            check_fits(model, await run_in_threadpool(prompt_tokens, messages), max_new)
        except PromptTooLong as e:
            raise ApiError(400, str(e), "context_length_exceeded") from e
        meta = {"id": f"chatcmpl-{uuid.uuid4().hex}", "created": int(time.time()), "model": model_name}
        verdict = await run_in_threadpool(ood.check, model, processor, image) if ood is not None else None
        extra = {"ood": verdict} if verdict is not None else {}
        if verdict and verdict["unlike_training"]:
            if req.stream:
                return StreamingResponse(_sse_notice(verdict["message"], meta, extra), media_type="text/event-stream")
            return {**meta, "object": "chat.completion", "dermvqa": extra,
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": verdict["message"]},
                                 "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}}
        if req.stream:
            stream = ReplyStream(model, processor, image, messages, max_new)
            batcher.submit_stream(stream)
            return StreamingResponse(_sse(stream, meta), media_type="text/event-stream")
        reply = await asyncio.wrap_future(batcher.submit(image, messages, max_new))
        if explain and reply.text.strip():
            question = messages[-1]["content"][-1]["text"]  # user_turn: [image part,] text part
            extra["explanation"] = await run_in_threadpool(explained, image, question, reply.text)
        return {**meta, "object": "chat.completion", **({"dermvqa": extra} if extra else {}),
                "choices": [{"index": 0, "message": {"role": "assistant", "content": reply.text},
                             "finish_reason": reply.finish_reason}],
                "usage": {"prompt_tokens": reply.prompt_tokens, "completion_tokens": reply.completion_tokens,
                          "total_tokens": reply.prompt_tokens + reply.completion_tokens}}

    return app


async def _sse(stream: ReplyStream, meta: dict):
    def event(delta: dict, finish: str | None = None) -> str:
        chunk = {**meta, "object": "chat.completion.chunk",
                 "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
        return f"data: {json.dumps(chunk)}\n\n"

    yield event({"role": "assistant", "content": ""})
    try:
        async for text in iterate_in_threadpool(iter(stream)):
            yield event({"content": text})
    except Exception as e:  # noqa: BLE001 - headers are sent; report the failure inside the stream
        yield f"data: {json.dumps({'error': {'message': str(e), 'type': 'server_error'}})}\n\n"
        return
    yield event({}, stream.reply.finish_reason)
    yield "data: [DONE]\n\n"


async def _sse_notice(text: str, meta: dict, extra: dict):
    """A streamed reply that is only the out-of-distribution notice."""
    for delta, finish in (({"role": "assistant", "content": text}, None), ({}, "stop")):
        chunk = {**meta, "object": "chat.completion.chunk", "dermvqa": extra,
                 "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
        yield f"data: {json.dumps(chunk)}\n\n"
    yield "data: [DONE]\n\n"


class ServerThread:
    """Run an app with uvicorn in a background thread on 127.0.0.1 (port 0: a free one). For tests and benchmarks."""

    def __init__(self, app, host: str = "127.0.0.1", port: int = 0):
        import uvicorn

        self.server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning",
                                                    limit_concurrency=128))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> "ServerThread":
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the API server did not start")
            time.sleep(0.02)
        host, self.port = self.server.servers[0].sockets[0].getsockname()[:2]
        self.url = f"http://{host}:{self.port}"
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


def run_api(model_dir: str | Path, host: str = "127.0.0.1", port: int = 8000, api_key: str | None = None,
            allow_dir: str | Path | None = None, max_batch: int = 8, max_wait_s: float = 0.005,
            limits: Limits = Limits(), device: str | None = None, ood: bool = True) -> None:
    import uvicorn

    from dermvqa.infer.generate import load_model
    from dermvqa.trust.ood import load_summary

    model, processor = load_model(model_dir, device=device)
    app = create_app(model, processor, Path(model_dir).resolve().name, api_key, allow_dir, limits, max_batch,
                     max_wait_s, ood=load_summary(model_dir) if ood else None)
    uvicorn.run(app, host=host, port=port, log_level="info", limit_concurrency=128)
