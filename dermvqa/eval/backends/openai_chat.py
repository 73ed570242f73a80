"""`openai:MODEL@URL`: any OpenAI-compatible chat endpoint (vLLM, SGLang, TGI, llama.cpp, `dermvqa serve api`,
a hosted API) as an eval backend.

Each question is one user message: the image as a base64 PNG data URL (`image_url` part), then the question
(`text` part); the decoding parameters and the reading of replies are chat_endpoint/protocol.py's (temperature
0 and max_tokens = max_new_tokens unless told otherwise). At most `concurrency` requests are in flight, each
sent by chat_endpoint/client.py: retries with backoff, a failure after the last try is a counted row
(error_http, error_timeout or error_malformed, with the server's message and a hint where one helps),
401/403/404 and an endpoint that cannot be reached or refuses the key when the backend starts stop the run.
Every answer is committed to the SQLite cache OUT/cache.sqlite (chat_endpoint/cache.py) before it is used, so a
rerun, or a run after kill -9, sends no answered request again; a failed request goes to the cache's failure
history and is asked again by a rerun. The API key is read from the named environment variable and only sent
in the Authorization header, never written anywhere.
The blind control's image is uniform in `blank_rgb` when given (the served model's normalisation mean), else
in the colour the endpoint names for the model in GET /models (`dermvqa serve api` does: "dermvqa":
{"blank_rgb": [...]}), else grey 128; the manifest says which.
"""
from __future__ import annotations

import base64
import hashlib
import io
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from PIL import Image

from chat_endpoint.cache import CACHE_FILE, cache_key
from chat_endpoint.client import ChatClient
from chat_endpoint.endpoint import Endpoint
from chat_endpoint.protocol import RequestOptions
from dermvqa.eval.backends.base import ModelAdapter

PREFIX = "openai:"
PROMPT_FORMAT = "one user message: image_url part (base64 PNG data URL), then the question as a text part"


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


class ChatEndpoint:
    """One endpoint and model of an eval run (the backend's answers or the judge's verdicts, cached in `table`)."""

    def __init__(self, spec: str, api_key_env: str | None, timeout: float, max_retries: int,
                 cache_dir, table: str, backoff_s: float = 1.0, request: RequestOptions | None = None):
        self.model, self.url = parse_spec(spec)
        self.request = request or RequestOptions()
        self.client = ChatClient(Endpoint(self.url, self.model, api_key_env, timeout, max_retries, backoff_s),
                                 self.request, Path(cache_dir) / CACHE_FILE if cache_dir is not None else None, table)

    def listed_blank_rgb(self) -> tuple[int, int, int] | None:
        """The blind-image colour the endpoint lists for this model (dermvqa serve api's extra field), if any."""
        for m in self.client.listed:
            extra = getattr(m, "dermvqa", None) if m.id == self.model else None
            rgb = extra.get("blank_rgb") if isinstance(extra, dict) else None
            if isinstance(rgb, list) and len(rgb) == 3 and all(isinstance(v, int) and 0 <= v <= 255 for v in rgb):
                return tuple(rgb)
        return None

    def ask(self, content: list[dict] | str, prompt: str, image_sha256: str, max_tokens: int) -> dict:
        """One answer row for a user message (from the cache when it holds this request's answer)."""
        key = cache_key(self.url, self.model, prompt, image_sha256,
                        {**self.request.key_settings(max_tokens), "format": PROMPT_FORMAT})
        row = self.client.cached(key)
        if row is None:
            body = self.client.body([{"role": "user", "content": content}], max_tokens)
            row = self.client.send(key, body, prompt, image_sha256).row
        return row

    def served_model(self) -> str:
        """The model name the server reported in its replies (or, when none came this run, in GET /models)."""
        names = sorted(n for n in self.client.served if n)
        if names:
            return ", ".join(names)
        try:
            ids = [m.id for m in self.client.openai.models.list()]
        except Exception as e:  # noqa: BLE001 - /models is optional in the OpenAI API; the manifest says so
            return f"unknown (GET /models failed: {type(e).__name__})"
        return self.model if self.model in ids else ", ".join(ids)

    def transport(self) -> dict:
        return self.client.endpoint.transport()

    def settings(self) -> dict:
        return {**self.request.settings(), **self.transport()}

    def close(self) -> None:
        self.client.close()


class OpenAIChatAdapter(ModelAdapter):
    kind = "openai"

    def __init__(self, spec: str, api_key_env: str | None = None, concurrency: int = 4, cache_dir=None,
                 timeout: float = Endpoint.timeout_s, max_retries: int = Endpoint.retries, backoff_s: float = 1.0,
                 blank_rgb: tuple[int, int, int] | None = None, max_tokens_param: str = "max_tokens",
                 send_temperature: bool = True, extra_body: dict | None = None):
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {concurrency}")
        if blank_rgb is not None and (len(blank_rgb) != 3 or not all(0 <= int(v) <= 255 for v in blank_rgb)):
            raise ValueError(f"blank_rgb must be three values 0-255, got {blank_rgb!r}")
        self.spec, self.concurrency = spec, concurrency
        request = RequestOptions(max_tokens_param, 0 if send_temperature else None, dict(extra_body or {}))
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
                "decoding": self.endpoint.request.decoding("the run's max_new_tokens"),
                "settings": self.endpoint.request.settings()}

    def run_options(self) -> dict:
        return {**self.endpoint.transport(), "concurrency": self.concurrency}

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
        self.endpoint.close()
