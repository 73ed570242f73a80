"""The teacher's HTTP side: one OpenAI-compatible chat completion with retries, backoff and typed failures.

429, 5xx, timeouts, dropped connections and unreadable responses are retried with exponential backoff and
jitter (a Retry-After header wins); 401/403/404 raise TeachError (every row would fail alike); other 4xx
and spent retries raise RowFailed (this row only; a rerun asks again).
"""
from __future__ import annotations

import asyncio
import json
import random
from dataclasses import dataclass

FATAL_STATUS = {401, 403, 404}
RETRY_STATUS = {408, 409, 429}


class TeachError(RuntimeError):
    """The endpoint refuses every request (wrong key, model or URL): stop instead of failing each row."""


class RowFailed(Exception):
    """No answer for this row in this run (retries spent, or the request refused); a rerun asks again."""


@dataclass
class Endpoint:
    url: str
    model: str
    api_key: str = "EMPTY"
    concurrency: int = 8
    timeout_s: float = 120.0
    retries: int = 6
    backoff_s: float = 1.0
    max_backoff_s: float = 60.0
    max_tokens: int = 768
    temperature: float = 0.2


async def ask(client, ep: Endpoint, body: dict, tally) -> tuple[str, int, int]:
    """One chat completion with retries: (text, prompt tokens, completion tokens); requests and retries are
    counted on `tally` (its `requests` int and `retries` Counter)."""
    import openai

    for attempt in range(ep.retries + 1):
        tally.requests += 1
        wait = None
        try:
            resp = await client.chat.completions.create(**body)
            text = resp.choices[0].message.content or ""
            usage = resp.usage
            return text, (usage.prompt_tokens or 0) if usage else 0, (usage.completion_tokens or 0) if usage else 0
        except openai.APITimeoutError:
            cause = "timeout"
        except openai.APIConnectionError:
            cause = "connection error"
        except openai.APIStatusError as e:
            if e.status_code in FATAL_STATUS:
                raise TeachError(f"{ep.url}: the endpoint answered {e.status_code} ({e.message}); check --endpoint, "
                                 f"--model and --api-key-env") from e
            if e.status_code < 500 and e.status_code not in RETRY_STATUS:
                raise RowFailed(f"request refused ({e.status_code})", str(e.message)[:120]) from e
            cause = f"HTTP {e.status_code}"
            after = e.response.headers.get("retry-after", "")
            wait = min(float(after), ep.max_backoff_s) if after.replace(".", "", 1).isdigit() else None
        except (openai.APIResponseValidationError, json.JSONDecodeError, AttributeError, IndexError, TypeError):
            cause = "malformed response"
        if attempt == ep.retries:
            raise RowFailed(f"gave up after {ep.retries + 1} attempts (last: {cause})", "")
        tally.retries[cause] += 1
        await asyncio.sleep(wait if wait is not None else
                            min(ep.max_backoff_s, ep.backoff_s * 2 ** attempt) * (0.5 + random.random() / 2))
    raise AssertionError("unreachable")
