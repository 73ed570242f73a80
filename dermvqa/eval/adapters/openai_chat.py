"""`openai:MODEL@URL`: any OpenAI-compatible chat endpoint (vLLM, SGLang, TGI, llama.cpp, `dermvqa serve api`,
a hosted API) as an eval backend.

Each question is one user message: the image as a base64 PNG data URL (`image_url` part), then the question
(`text` part); temperature 0, max_tokens = max_new_tokens. At most `concurrency` requests are in flight.
429, 408, 409, 5xx, timeouts, dropped connections and unreadable bodies are retried with exponential backoff
and seeded jitter (a Retry-After header wins); after the last try the row is a counted failure: error_http,
error_timeout or error_malformed. Other 4xx fail the row at once (error_http); 401/403/404 stop the run, since
every row would fail alike, and so does an endpoint that cannot be reached or refuses the key when the
backend starts (GET /models). Empty content is "empty"; a `refusal` or finish_reason "content_filter" is
"refused". Every reply is committed to the SQLite cache (dermvqa/eval/adapters/cache.py) before it is used,
so a rerun, or a run after kill -9, sends no answered request again. The API key is read from the named
environment variable and only sent in the Authorization header, never written anywhere.
The blind control's image is uniform in `blank_rgb` when given (the served model's normalisation mean), else
in the colour the endpoint names for the model in GET /models (`dermvqa serve api` does: "dermvqa":
{"blank_rgb": [...]}), else grey 128; the manifest says which.
"""
from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from PIL import Image

from dermvqa.eval.adapters.base import ModelAdapter
from dermvqa.eval.adapters.cache import ReplyCache, cache_key

PREFIX = "openai:"
RETRY_STATUS = {408, 409, 429}
FATAL_STATUS = {401, 403, 404}
PROMPT_FORMAT = "one user message: image_url part (base64 PNG data URL), then the question as a text part"
NO_KEY = "EMPTY"  # sent when no --api-key-env is given (local servers ignore it)


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


def read_reply(text: str) -> tuple[dict, str]:
    """A chat completion body -> (answer row, served model name); raises ValueError when it is malformed."""
    try:
        data = json.loads(text)
        choice = data["choices"][0]
        message = choice["message"]
        content = message.get("content")
        if content is not None and not isinstance(content, str):
            raise TypeError("content is not a string")
    except (json.JSONDecodeError, KeyError, IndexError, TypeError, AttributeError) as e:
        raise ValueError(f"malformed chat completion ({type(e).__name__})") from e
    served = data.get("model") if isinstance(data.get("model"), str) else ""
    if message.get("refusal") or choice.get("finish_reason") == "content_filter":
        return {"reply": "", "failure": "refused"}, served
    if not (content or "").strip():
        return {"reply": "", "failure": "empty"}, served
    return {"reply": content}, served


class ChatEndpoint:
    """One endpoint and model: requests with retries and classified failures, replies cached in `table`."""

    def __init__(self, spec: str, api_key_env: str | None, timeout: float, max_retries: int,
                 cache_dir, table: str, backoff_s: float = 1.0, max_backoff_s: float = 30.0, seed: int = 0):
        import openai

        self.model, self.url = parse_spec(spec)
        if api_key_env and api_key_env not in os.environ:
            raise ValueError(f"api key env var {api_key_env!r} is not set")
        if timeout <= 0 or max_retries < 0 or backoff_s < 0:
            raise ValueError("timeout must be positive, max_retries and backoff_s not negative")
        self.api_key_env, self.timeout, self.max_retries = api_key_env, timeout, max_retries
        self.backoff_s, self.max_backoff_s = backoff_s, max_backoff_s
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
        """One answer row for a user message (from the cache when it holds this request)."""
        settings = {"temperature": 0, "max_tokens": max_tokens, "format": PROMPT_FORMAT}
        key = cache_key(self.url, self.model, prompt, image_sha256, settings)
        hit = self.cache.get(key) if self.cache is not None else None
        if hit is not None:
            self._saw(hit[1])
            return {"reply": hit[0]}
        body = {"model": self.model, "messages": [{"role": "user", "content": content}], "temperature": 0,
                "max_tokens": max_tokens}
        row, served = self._send(body)
        if "failure" not in row and self.cache is not None:
            self.cache.put(key, self.model, prompt, image_sha256, row["reply"], served)
        self._saw(served)
        return row

    def _saw(self, served: str) -> None:
        with self.lock:
            self.served.add(served)

    def _send(self, body: dict) -> tuple[dict, str]:
        import openai

        for attempt in range(self.max_retries + 1):
            wait = None
            try:
                raw = self.client.chat.completions.with_raw_response.create(**body)
                return read_reply(raw.text)
            except openai.APITimeoutError:
                failure = "error_timeout"
            except openai.APIConnectionError:
                failure = "error_http"
            except openai.APIStatusError as e:
                if e.status_code in FATAL_STATUS:
                    raise EndpointError(f"{self.url}: the endpoint answered {e.status_code} ({e.message}); check the "
                                        "model name, the URL and the API key env var") from e
                if e.status_code < 500 and e.status_code not in RETRY_STATUS:
                    return {"reply": "", "failure": "error_http"}, ""
                failure = "error_http"
                after = e.response.headers.get("retry-after", "")
                wait = min(float(after), self.max_backoff_s) if after.replace(".", "", 1).isdigit() else None
            except ValueError:
                failure = "error_malformed"
            if attempt == self.max_retries:
                return {"reply": "", "failure": failure}, ""
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

    def settings(self) -> dict:
        return {"temperature": 0, "timeout_s": self.timeout, "max_retries": self.max_retries,
                "backoff_s": self.backoff_s, "api_key_env": self.api_key_env}

    def close(self) -> None:
        self.client.close()
        if self.cache is not None:
            self.cache.close()


class OpenAIChatAdapter(ModelAdapter):
    kind = "openai"

    def __init__(self, spec: str, api_key_env: str | None = None, concurrency: int = 4, cache_dir=None,
                 timeout: float = 60.0, max_retries: int = 5, backoff_s: float = 1.0,
                 blank_rgb: tuple[int, int, int] | None = None):
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {concurrency}")
        if blank_rgb is not None and (len(blank_rgb) != 3 or not all(0 <= int(v) <= 255 for v in blank_rgb)):
            raise ValueError(f"blank_rgb must be three values 0-255, got {blank_rgb!r}")
        self.spec, self.concurrency = spec, concurrency
        self.endpoint = ChatEndpoint(spec, api_key_env, timeout, max_retries, cache_dir, "answers", backoff_s)
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
                "decoding": "temperature 0, max_tokens = the run's max_new_tokens",
                "settings": {**self.endpoint.settings(), "concurrency": self.concurrency}}

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
        self.endpoint.close()
