"""The chat-completions request: its schema, its parsing, and its turn into one image plus chat-template messages.

Every problem is an `ApiError` carrying the HTTP status and the OpenAI-style error code that dermvqa/serve/api.py
sends back.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from dermvqa.infer.generate import user_turn
from dermvqa.serve.limits import ImageRejected, Limits, decode_data_uri, load_image_file


class ApiError(Exception):
    def __init__(self, status: int, message: str, code: str = "invalid_request", kind: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.code, self.kind = status, message, code, kind


class _ImageURL(BaseModel):
    url: str


class _Part(BaseModel):
    type: Literal["text", "image_url"]
    text: str | None = None
    image_url: _ImageURL | str | None = None


class _Message(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: str | list[_Part] | None = None


class _Extras(BaseModel):
    model_config = ConfigDict(extra="forbid")
    explain: bool = False


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")  # temperature, top_p, user, ...: accepted, not used
    model: str | None = None
    messages: list[_Message] = Field(min_length=1)
    stream: bool = False
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    n: int = 1
    dermvqa: _Extras | None = None


def parse_request(body: bytes) -> ChatRequest:
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
        raise ApiError(400, f"request body is not valid JSON: {e}", "invalid_json") from e
    try:
        return ChatRequest.model_validate(data)
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(map(str, err['loc'])) or 'body'}: {err['msg']}" for err in e.errors()[:5])
        raise ApiError(400, f"request does not match the chat completions format: {problems}", "invalid_request") from e


class ImageSource:
    """Turns an image_url into an RGB image under the server's limits."""

    def __init__(self, limits: Limits, allow_dir: str | Path | None):
        self.limits = limits
        self.allow_dir = Path(allow_dir).resolve() if allow_dir is not None else None

    def load(self, url: str):
        try:
            if url.startswith("data:"):
                return decode_data_uri(url, self.limits)
            if url.startswith(("http://", "https://")):
                raise ApiError(400, "remote image URLs are not fetched; send the image as a data: URI", "invalid_image")
            if self.allow_dir is None:
                raise ApiError(400, "local image paths are disabled on this server (start it with --allow-dir DIR); "
                               "send the image as a data: URI", "invalid_image")
            path = Path(url.removeprefix("file://"))
            return load_image_file(path if path.is_absolute() else self.allow_dir / path, self.limits, self.allow_dir)
        except ImageRejected as e:
            raise ApiError(e.status, str(e), "invalid_image") from e


def to_conversation(req: ChatRequest, images: ImageSource, limits: Limits):
    """OpenAI messages -> (image, chat-template messages). Exactly one image; the last message is the user's."""
    chars = sum(len(m.content) if isinstance(m.content, str) else sum(len(p.text or "") for p in m.content or [])
                for m in req.messages)
    if chars > limits.max_prompt_chars:
        raise ApiError(400, f"messages hold {chars} characters; the limit is {limits.max_prompt_chars}",
                       "context_length_exceeded")
    image, out = None, []
    for i, m in enumerate(req.messages):
        parts = [_Part(type="text", text=m.content)] if isinstance(m.content, str) else (m.content or [])
        words, has_image = [], False
        for part in parts:
            if part.type == "text":
                if part.text is None:
                    raise ApiError(400, f"messages[{i}]: a text part needs 'text'")
                words.append(part.text)
                continue
            if m.role != "user":
                raise ApiError(400, f"messages[{i}]: images are accepted only in user messages")
            if image is not None:
                raise ApiError(400, f"messages[{i}]: only one image per conversation is supported", "too_many_images")
            if part.image_url is None:
                raise ApiError(400, f"messages[{i}]: an image_url part needs 'image_url'")
            url = part.image_url if isinstance(part.image_url, str) else part.image_url.url
            image, has_image = images.load(url), True
        text = "\n".join(words)
        out.append(user_turn(text, with_image=has_image) if m.role == "user" else {"role": m.role, "content": text})
    if image is None:
        raise ApiError(400, "no image: add the lesion photo as an image_url part of a user message "
                       "(a data:image/...;base64, URI)", "missing_image")
    if req.messages[-1].role != "user":
        raise ApiError(400, "the last message must be the user's question")
    return image, out
