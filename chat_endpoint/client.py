"""One OpenAI-compatible chat endpoint and model: requests under one retry policy, failures as values
(chat_endpoint/endpoint.py), replies cached (chat_endpoint/cache.py). ChatClient serves threaded callers (eval's
openai: backend and its judge), AsyncChatClient asyncio ones (the data teacher); the policy, the cache handling
and the counts are theirs alike.

Policy: 429, 408, 409, 5xx, timeouts, dropped connections and bodies that are no chat completion are tried
again up to `retries` times, after exponential backoff with seeded jitter (a Retry-After header, in seconds,
milliseconds or as a date, wins; either is capped at max_backoff_s); after the last try the request is a
Failure (error_http, error_timeout or error_malformed, with the server's message). Other 4xx fail at once
(error_http, with a hint when a 400 names a parameter we sent). 401/403/404 raise EndpointError, since every
request would fail alike, and so does an endpoint that cannot be reached or refuses the key at the start
(GET /models; one that answers it slowly is left to the chat calls). A reply that came back is read by
chat_endpoint/protocol.py; an empty, refused or reasoning-only one is a failure too. Answers are committed to
the cache before they are returned, failures go to its history, so a rerun asks them again. The API key is read
from the named environment variable and only sent in the Authorization header.

Why a loop of ours rather than the openai client's own (openai 3.63's _base_client: max_retries with backoff
0.5 s doubling to 8 s, 25% jitter, Retry-After honoured up to 120 s): that loop ends at the HTTP status, so a
200 whose body is not a chat completion (cut by a proxy, a worker's partial JSON) is never tried again; it
tells nothing of the tries it made, while the failure history records each request's tries and the teacher's
report counts requests and retries by cause (the tests hold both to the server's counts); and its backoff is
fixed, ours the caller's. So the openai client runs with max_retries=0 and gives its timeout, connection pool,
auth header and error classes.
"""
from __future__ import annotations

import asyncio
import random
import threading
import time
from collections import Counter
from pathlib import Path

from chat_endpoint.cache import ReplyCache
from chat_endpoint.endpoint import Endpoint, EndpointError, Failure, Sent, retry_after_s, server_message
from chat_endpoint.protocol import Reply, RequestOptions, answer_row, read_reply

RETRY_STATUS = {408, 409, 429}
FATAL_STATUS = {401, 403, 404}


class _Caller:
    """What the sync and the async client share: the retry policy, the cache, the counts."""

    def __init__(self, endpoint: Endpoint, request: RequestOptions | None, cache_path: Path | None, table: str,
                 token_flag: str):
        self.endpoint, self.request, self.token_flag = endpoint, request or RequestOptions(), token_flag
        self.cache_path, self.table, self.cache = cache_path, table, None
        self.rng, self.lock = random.Random(0), threading.Lock()  # seeded jitter
        self.requests, self.retries, self.served = 0, Counter(), set()
        self.listed: list = []  # GET /models at the start (none when the endpoint has no such route)

    def body(self, messages: list[dict], max_tokens: int) -> dict:
        return self.request.body(self.endpoint.model, messages, max_tokens)

    def cached(self, key: str) -> dict | None:
        """The answer row the cache holds for this request, or None (never answered: send it)."""
        reply = self.cache.get(key) if self.cache is not None else None
        row = answer_row(reply, self.token_flag) if reply is not None else None
        if row is None or "failure" in row:  # an old cache's empty or reasoning-only reply is asked again
            return None
        self._saw(reply.served_model)
        return row

    def _started(self, error: Exception | None) -> None:
        """After GET /models: stop when the endpoint cannot be reached or refuses the key, else open the cache."""
        import openai

        url = self.endpoint.url
        if isinstance(error, openai.APIConnectionError) and not isinstance(error, openai.APITimeoutError):
            raise EndpointError(f"{url}: cannot reach the endpoint ({type(error).__name__}); is the server up?") \
                from error
        if isinstance(error, openai.APIStatusError) and error.status_code in (401, 403):
            raise EndpointError(f"{url}: the endpoint answered {error.status_code} ({error.message}); check "
                                f"{self.endpoint.check_key()}") from error
        # a slow GET /models or another answer (no such route): the chat calls decide, with their retries
        if self.cache_path is not None:
            self.cache = ReplyCache(self.cache_path, self.table)

    def _after(self, key: str, prompt: str, image_sha256: str, attempt: int, outcome) -> Sent | float:
        """What a try brought (the raw response, or the exception it raised): the Sent when the request is done,
        else the seconds to wait before the next try."""
        with self.lock:
            self.requests += 1
        try:
            result = outcome if isinstance(outcome, Exception) else read_reply(outcome.text)
        except ValueError as e:  # not a chat completion
            result = e
        if isinstance(result, Reply):
            return self._sent(key, prompt, image_sha256, result, attempt + 1)
        failure, wait = self._failure(result, attempt)
        return self._sent(key, prompt, image_sha256, failure, attempt + 1) if wait is None else wait

    def _failure(self, e: Exception, attempt: int) -> tuple[Failure, float | None]:
        """The failure a try ended in, and the wait before the next try (None: no next try)."""
        import openai

        retry_after = None
        if isinstance(e, openai.APITimeoutError):
            failure = Failure("error_timeout", f"no reply within --timeout {self.endpoint.timeout_s:g} s",
                              hint="a slow endpoint: raise --timeout")
        elif isinstance(e, openai.APIConnectionError):
            failure = Failure("error_http", f"connection failed ({type(e.__cause__ or e).__name__})")
        elif isinstance(e, openai.APIStatusError):
            if e.status_code in FATAL_STATUS:
                raise EndpointError(f"{self.endpoint.url}: the endpoint answered {e.status_code} ({e.message}); "
                                    f"check the model name, the URL and {self.endpoint.check_key()}") from e
            message = server_message(e)
            failure = Failure("error_http", f"HTTP {e.status_code}: {message}", e.status_code)
            if e.status_code < 500 and e.status_code not in RETRY_STATUS:
                return failure._replace(hint=self.request.hint(message)), None
            retry_after = retry_after_s(e.response.headers)
        elif isinstance(e, ValueError):  # read_reply: not a chat completion
            failure = Failure("error_malformed", str(e))
        else:
            raise e
        if attempt == self.endpoint.retries:
            return failure, None
        with self.lock:
            self.retries[failure.cause] += 1
            jitter = 0.5 + self.rng.random() / 2
        wait = self.endpoint.backoff_s * 2 ** attempt * jitter if retry_after is None else retry_after
        return failure, min(self.endpoint.max_backoff_s, wait)

    def _sent(self, key: str, prompt: str, image_sha256: str, result: Reply | Failure, tries: int) -> Sent:
        """The answer row of what the request ended with, committed to the cache (an answer) or its history."""
        if isinstance(result, Failure):
            row, status = result.row(), result.status
        else:
            self._saw(result.served_model)
            row, status = answer_row(result, self.token_flag), 200
        if self.cache is not None and "failure" in row:
            self.cache.put_failure(key, self.endpoint.model, prompt, image_sha256, row["failure"], status,
                                   row["error"], tries)
        elif self.cache is not None:
            self.cache.put(key, self.endpoint.model, prompt, image_sha256, result)
        return Sent(row, result, tries)

    def _saw(self, served: str) -> None:
        with self.lock:
            self.served.add(served)

    def _close_cache(self) -> None:
        if self.cache is not None:
            self.cache.close()


class ChatClient(_Caller):
    """For threads: checks the endpoint (GET /models) and opens the cache when made; `send` blocks."""

    def __init__(self, endpoint: Endpoint, request: RequestOptions | None = None, cache_path: Path | None = None,
                 table: str = "answers", token_flag: str = "--max-new-tokens"):
        import openai

        super().__init__(endpoint, request, cache_path, table, token_flag)
        self.openai = openai.OpenAI(**endpoint.client_options())
        error = None
        try:
            self.listed = list(self.openai.models.list())
        except openai.APIError as e:
            error = e
        try:
            self._started(error)
        except EndpointError:
            self.openai.close()
            raise

    def send(self, key: str, body: dict, prompt: str, image_sha256: str = "") -> Sent:
        """Send `body` (retried under the policy) and record the outcome under `key`."""
        for attempt in range(self.endpoint.retries + 1):
            try:
                outcome = self.openai.chat.completions.with_raw_response.create(**body)
            except Exception as e:  # noqa: BLE001 - judged by _after
                outcome = e
            done = self._after(key, prompt, image_sha256, attempt, outcome)
            if isinstance(done, Sent):
                return done
            time.sleep(done)
        raise AssertionError("unreachable")

    def close(self) -> None:
        self.openai.close()
        self._close_cache()


class AsyncChatClient(_Caller):
    """For asyncio: `async with AsyncChatClient(...) as client` checks the endpoint and opens the cache."""

    def __init__(self, endpoint: Endpoint, request: RequestOptions | None = None, cache_path: Path | None = None,
                 table: str = "answers", token_flag: str = "--max-new-tokens"):
        import openai

        super().__init__(endpoint, request, cache_path, table, token_flag)
        self.openai = openai.AsyncOpenAI(**endpoint.client_options())

    async def __aenter__(self) -> "AsyncChatClient":
        import openai

        error = None
        try:
            self.listed = [m async for m in self.openai.models.list()]
        except openai.APIError as e:
            error = e
        try:
            self._started(error)
        except EndpointError:
            await self.openai.close()
            raise
        return self

    async def __aexit__(self, *exc) -> None:
        await self.openai.close()
        self._close_cache()

    async def send(self, key: str, body: dict, prompt: str, image_sha256: str = "") -> Sent:
        """Send `body` (retried under the policy) and record the outcome under `key`."""
        for attempt in range(self.endpoint.retries + 1):
            try:
                outcome = await self.openai.chat.completions.with_raw_response.create(**body)
            except Exception as e:  # noqa: BLE001 - judged by _after
                outcome = e
            done = self._after(key, prompt, image_sha256, attempt, outcome)
            if isinstance(done, Sent):
                return done
            await asyncio.sleep(done)
        raise AssertionError("unreachable")
