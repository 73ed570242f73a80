"""The values the chat clients (chat_endpoint/client.py) trade in: the Endpoint with its key and patience, the
EndpointError that stops a run, a request's Failure or Sent outcome, and what an HTTP error says (its message,
the Retry-After wait).
"""
from __future__ import annotations

import email.utils
import math
import os
import time
from dataclasses import dataclass
from typing import NamedTuple

from chat_endpoint.protocol import Reply

NO_KEY = "EMPTY"  # sent when no API key variable is named (local servers ignore it)
MAX_MESSAGE = 300  # characters of a server's error message kept
CAUSES = {"error_timeout": "timeout", "error_malformed": "malformed response", "error_http": "connection error"}


class EndpointError(ValueError):
    """The endpoint refuses every request (wrong key, model or URL): stop instead of failing each one."""


@dataclass(frozen=True)
class Endpoint:
    """Where requests go, with which key, and how patiently."""

    url: str
    model: str
    api_key_env: str | None = None
    timeout_s: float = 60.0
    retries: int = 5
    backoff_s: float = 1.0
    max_backoff_s: float = 30.0

    def __post_init__(self):
        if self.timeout_s <= 0 or self.retries < 0 or self.backoff_s < 0:
            raise ValueError("timeout must be positive, retries and backoff not negative")

    def client_options(self) -> dict:
        """The openai client's arguments, the key read from its variable (one not set is an error)."""
        if self.api_key_env and not os.environ.get(self.api_key_env):
            raise ValueError(f"API key environment variable {self.api_key_env!r} is not set or empty")
        return {"base_url": self.url, "api_key": os.environ[self.api_key_env] if self.api_key_env else NO_KEY,
                "timeout": self.timeout_s, "max_retries": 0}

    def check_key(self) -> str:
        """What to check when the endpoint refuses the key."""
        return (f"the API key in ${self.api_key_env}" if self.api_key_env else
                "the API key (none was sent: --api-key-env names the variable that holds it)")

    def transport(self) -> dict:
        """How requests are sent; they change no answer."""
        return {"timeout_s": self.timeout_s, "max_retries": self.retries, "backoff_s": self.backoff_s,
                "api_key_env": self.api_key_env}


class Failure(NamedTuple):
    """Why a request brought no reply to read (after its last try)."""

    reason: str
    message: str
    status: int | None = None
    hint: str | None = None

    def row(self) -> dict:
        return {"reply": "", "failure": self.reason, "error": self.message} | ({"hint": self.hint} if self.hint else {})

    @property
    def cause(self) -> str:
        """The retry tally's name for it: `HTTP 503`, `timeout`, `connection error`, `malformed response`."""
        return f"HTTP {self.status}" if self.status else CAUSES[self.reason]


class Sent(NamedTuple):
    """A request that went out: its answer row, the reply or the Failure it ended with, and its tries."""

    row: dict
    result: Reply | Failure
    tries: int


def server_message(e) -> str:
    """The server's own error message (the JSON body's `message`, else the body as it came)."""
    body = e.body
    text = body.get("message") if isinstance(body, dict) else None
    return " ".join(str(text or body or e.message).split())[:MAX_MESSAGE]


def retry_after_s(headers) -> float | None:
    """The wait a 429 or 503 asks for: retry-after-ms, or retry-after in seconds or as an HTTP date."""
    for name, scale in (("retry-after-ms", 1000), ("retry-after", 1)):
        try:
            seconds = float(headers[name]) / scale
        except (KeyError, ValueError):
            continue
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        return max(0.0, email.utils.parsedate_to_datetime(headers["retry-after"]).timestamp() - time.time())
    except (KeyError, TypeError, ValueError):
        return None
