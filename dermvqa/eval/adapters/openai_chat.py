"""`openai:MODEL@URL`: any OpenAI-compatible chat endpoint (vLLM, SGLang, TGI, llama.cpp, `dermvqa serve api`,
a hosted API) as an eval backend.

Each question is one user message: the image as a base64 PNG data URL (`image_url` part), then the question
(`text` part); the decoding parameters and the reading of replies are dermvqa/eval/adapters/chat_protocol.py's
(temperature 0 and max_tokens = max_new_tokens unless told otherwise). At most `concurrency` requests are in
flight. 429, 408, 409, 5xx, timeouts, dropped connections and unreadable bodies are retried with exponential
backoff and seeded jitter (a Retry-After header wins); after the last try the row is a counted failure:
error_http, error_timeout or error_malformed, with the server's message. Other 4xx fail the row at once
(error_http, with a hint when a 400 names a parameter we sent); 401/403/404 stop the run, since every row would
fail alike, and so does an endpoint that cannot be reached or refuses the key when the backend starts
(GET /models). Every answer is committed to the SQLite cache (dermvqa/eval/adapters/cache.py) before it is
used, so a rerun, or a run after kill -9, sends no answered request again; a failed request goes to the
cache's failure history and is asked again by a rerun. The API key is read from the named environment
variable and only sent in the Authorization header, never written anywhere.
The blind control's image is uniform in `blank_rgb` when given (the served model's normalisation mean), else
in the colour the endpoint names for the model in GET /models (`dermvqa serve api` does: "dermvqa":
{"blank_rgb": [...]}), else grey 128; the manifest says which.
"""
from __future__ import annotations

import base64
import hashlib
import io
import os
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

from PIL import Image

from dermvqa.eval.adapters.base import ModelAdapter
from dermvqa.eval.adapters.cache import ReplyCache, cache_key
from dermvqa.eval.adapters.chat_protocol import Reply, RequestOptions, answer_row, read_reply

PREFIX = "openai:"
RETRY_STATUS = {408, 409, 429}
FATAL_STATUS = {401, 403, 404}
PROMPT_FORMAT = "one user message: image_url part (base64 PNG data URL), then the question as a text part"
NO_KEY = "EMPTY"  # sent when no --api-key-env is given (local servers ignore it)
MAX_MESSAGE = 300  # characters of a server's error message kept


class EndpointError(ValueError):
    """The endpoint refuses every request (wrong key, model or URL): stop instead of failing each row."""


def parse_spec(spec: str) -> tuple[str, str]:
    """`openai:MODEL@URL` -> (MODEL, URL without a trailing slash)."""
    body = spec[len(PREFIX):] if spec.startswith(PREFIX) else ""
    model, sep, url = body.partition("@")
    if not model or not sep or not url.startswith(("http://", "https://")):
        raise ValueError(f"bad model spec {spec!r}: expected openai:MODEL@URL, e.g. "
                         "openai:Qwen/Qwen2.5-VL-7B-Instruct@http://127.0.0.1:8000/v1")
    return model, url.rstrip("/")


def image_payload(image: Image.Image) -> tuple[str, str]:
    """(PNG data URL, sha256 of the RGB pixels and size): the pixels key the cache, not the PNG encoder's bytes."""
    rgb = image.convert("RGB")
    buf = io.BytesIO()
    rgb.save(buf, format="PNG")
    digest = hashlib.sha256(f"{rgb.width}x{rgb.height}:".encode() + rgb.tobytes()).hexdigest()
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode(), digest


class Failure(NamedTuple):
    """Why a request brought no reply to read (after its last try)."""

    reason: str
    message: str
    status: int | None = None
    hint: str | None = None

    def row(self) -> dict:
        return {"reply": "", "failure": self.reason, "error": self.message} | ({"hint": self.hint} if self.hint else {})


def server_message(e) -> str:
    """The server's own error message (the JSON body's `message`, else the body as it came)."""
    body = e.body
    text = body.get("message") if isinstance(body, dict) else None
    return " ".join(str(text or body or e.message).split())[:MAX_MESSAGE]


class ChatEndpoint:
    """One endpoint and model: requests with retries and classified failures, replies cached in `table`."""

    def __init__(self, spec: str, api_key_env: str | None, timeout: float, max_retries: int,
                 cache_dir, table: str, backoff_s: float = 1.0, max_backoff_s: float = 30.0, seed: int = 0,
                 request: RequestOptions | None = None):
        import openai

        self.model, self.url = parse_spec(spec)
        if api_key_env and api_key_env not in os.environ:
            raise ValueError(f"api key env var {api_key_env!r} is not set")
        if timeout <= 0 or max_retries < 0 or backoff_s < 0:
            raise ValueError("timeout must be positive, max_retries and backoff_s not negative")
        self.api_key_env, self.timeout, self.max_retries = api_key_env, timeout, max_retries
        self.backoff_s, self.max_backoff_s, self.request = backoff_s, max_backoff_s, request or RequestOptions()
        self.client = openai.OpenAI(base_url=self.url, api_key=os.environ[api_key_env] if api_key_env else NO_KEY,
                                    timeout=timeout, max_retries=0)
        self.listed = self._preflight()
        self.cache = ReplyCache(cache_dir, table) if cache_dir is not None else None
        self.rng = random.Random(seed)
        self.served: set[str] = set()
        self.lock = threading.Lock()

    def _preflight(self) -> list:
        """GET /models: fail at once when the endpoint cannot be reached or refuses the key (not after every row's
        retries); returns the listed models (none when the endpoint has no such route)."""
        import openai

        try:
            return list(self.client.models.list())
        except openai.APIConnectionError as e:
            raise EndpointError(f"{self.url}: cannot reach the endpoint ({type(e).__name__}); is the server up?") from e
        except openai.APIStatusError as e:
            if e.status_code in (401, 403):
                raise EndpointError(f"{self.url}: the endpoint answered {e.status_code} ({e.message}); check the API "
                                    "key env var") from e  # other answers (no /models route): the chat calls decide
            return []

    def listed_blank_rgb(self) -> tuple[int, int, int] | None:
        """The blind-image colour the endpoint lists for this model (dermvqa serve api's extra field), if any."""
        for m in self.listed:
            extra = getattr(m, "dermvqa", None) if m.id == self.model else None
            rgb = extra.get("blank_rgb") if isinstance(extra, dict) else None
            if isinstance(rgb, list) and len(rgb) == 3 and all(isinstance(v, int) and 0 <= v <= 255 for v in rgb):
                return tuple(rgb)
        return None

    def ask(self, content: list[dict] | str, prompt: str, image_sha256: str, max_tokens: int) -> dict:
        """One answer row for a user message (from the cache when it holds this request's answer)."""
        key = cache_key(self.url, self.model, prompt, image_sha256,
                        {**self.request.key_settings(max_tokens), "format": PROMPT_FORMAT})
        hit = self.cache.get(key) if self.cache is not None else None
        if hit is not None:
            text, served, detail = hit
            self._saw(served)
            return answer_row(Reply(text, detail.get("reasoning", ""), detail.get("finish_reason"), "", served))
        sent, tries = self._send(self.request.body(self.model, content, max_tokens))
        if isinstance(sent, Failure):
            row, status = sent.row(), sent.status
        else:
            self._saw(sent.served_model)
            row, status = answer_row(sent), 200
            if "failure" not in row and self.cache is not None:
                self.cache.put(key, self.model, prompt, image_sha256, sent.content, sent.served_model,
                               {"reasoning": sent.reasoning, "finish_reason": sent.finish_reason})
        if "failure" in row and self.cache is not None:
            self.cache.put_failure(key, self.model, prompt, image_sha256, row["failure"], status, row["error"], tries)
        return row

    def _saw(self, served: str) -> None:
        with self.lock:
            self.served.add(served)

    def _send(self, body: dict) -> tuple[Reply | Failure, int]:
        """The reply, or the failure after the last try; and the number of requests sent."""
        import openai

        for attempt in range(self.max_retries + 1):
            wait = None
            try:
                raw = self.client.chat.completions.with_raw_response.create(**body)
                return read_reply(raw.text), attempt + 1
            except openai.APITimeoutError:
                failure = Failure("error_timeout", f"no reply within --timeout {self.timeout:g} s",
                                  hint="a slow endpoint: raise --timeout")
            except openai.APIConnectionError as e:
                failure = Failure("error_http", f"connection failed ({type(e.__cause__ or e).__name__})")
            except openai.APIStatusError as e:
                if e.status_code in FATAL_STATUS:
                    raise EndpointError(f"{self.url}: the endpoint answered {e.status_code} ({e.message}); check the "
                                        "model name, the URL and the API key env var") from e
                message = server_message(e)
                failure = Failure("error_http", f"HTTP {e.status_code}: {message}", e.status_code)
                if e.status_code < 500 and e.status_code not in RETRY_STATUS:
                    return failure._replace(hint=self.request.hint(message)), attempt + 1
                after = e.response.headers.get("retry-after", "")
                wait = min(float(after), self.max_backoff_s) if after.replace(".", "", 1).isdigit() else None
            except ValueError as e:
                failure = Failure("error_malformed", str(e))
            if attempt == self.max_retries:
                return failure, attempt + 1
            if wait is None:
                with self.lock:
                    jitter = 0.5 + self.rng.random() / 2
                wait = min(self.max_backoff_s, self.backoff_s * 2 ** attempt) * jitter
            time.sleep(wait)
        raise AssertionError("unreachable")

    def served_model(self) -> str:
        """The model name the server reported in its replies (or, when none came this run, in GET /models)."""
        names = sorted(n for n in self.served if n)
        if names:
            return ", ".join(names)
        try:
            ids = [m.id for m in self.client.models.list()]
        except Exception as e:  # noqa: BLE001 - /models is optional in the OpenAI API; the manifest says so
            return f"unknown (GET /models failed: {type(e).__name__})"
        return self.model if self.model in ids else ", ".join(ids)

    def transport(self) -> dict:
        """How requests are sent; they change no answer."""
        return {"timeout_s": self.timeout, "max_retries": self.max_retries, "backoff_s": self.backoff_s,
                "api_key_env": self.api_key_env}

    def settings(self) -> dict:
        return {**self.request.settings(), **self.transport()}

    def close(self) -> None:
        self.client.close()
        if self.cache is not None:
            self.cache.close()


class OpenAIChatAdapter(ModelAdapter):
    kind = "openai"

    def __init__(self, spec: str, api_key_env: str | None = None, concurrency: int = 4, cache_dir=None,
                 timeout: float = 60.0, max_retries: int = 5, backoff_s: float = 1.0,
                 blank_rgb: tuple[int, int, int] | None = None, max_tokens_param: str = "max_tokens",
                 send_temperature: bool = True, extra_body: dict | None = None):
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {concurrency}")
        if blank_rgb is not None and (len(blank_rgb) != 3 or not all(0 <= int(v) <= 255 for v in blank_rgb)):
            raise ValueError(f"blank_rgb must be three values 0-255, got {blank_rgb!r}")
        self.spec, self.concurrency = spec, concurrency
        request = RequestOptions(max_tokens_param, send_temperature, dict(extra_body or {}))
        self.endpoint = ChatEndpoint(spec, api_key_env, timeout, max_retries, cache_dir, "answers", backoff_s,
                                     request=request)
        listed = self.endpoint.listed_blank_rgb()
        self.blank = ((tuple(int(v) for v in blank_rgb), "--blank-rgb") if blank_rgb is not None
                      else (listed, "the endpoint's GET /models") if listed is not None
                      else ((128, 128, 128), "default grey"))
        self.pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="openai-eval")

    def generate(self, images: list[Image.Image], questions: list[str], max_new_tokens: int) -> list[dict]:
        if len(images) != len(questions):
            raise ValueError(f"{len(images)} images but {len(questions)} questions")
        jobs, order = {}, []
        for image, question in zip(images, questions):
            url, digest = image_payload(image)
            if (question, digest) not in jobs:  # identical requests (blind twins) are sent once
                content = [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": question}]
                jobs[question, digest] = self.pool.submit(self.endpoint.ask, content, question, digest, max_new_tokens)
            order.append((question, digest))
        return [dict(jobs[k].result()) for k in order]

    def blank_image(self) -> Image.Image:
        return Image.new("RGB", (224, 224), self.blank[0])

    def manifest(self) -> dict:
        return {"kind": self.kind, "spec": self.spec, "endpoint": self.endpoint.url,
                "requested_model": self.endpoint.model, "served_model": self.endpoint.served_model(),
                "prompt_template": PROMPT_FORMAT,
                "blank_image_rgb": list(self.blank[0]), "blank_image_from": self.blank[1],
                "decoding": self.endpoint.request.decoding(), "settings": self.endpoint.request.settings()}

    def run_options(self) -> dict:
        return {**self.endpoint.transport(), "concurrency": self.concurrency}

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
        self.endpoint.close()
