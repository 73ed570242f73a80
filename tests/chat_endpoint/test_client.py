"""The shared endpoint client against the fault-injecting fake server: one retry policy for the threaded and the
asyncio caller (same rows, same tries, counted by cause), answers cached and failures kept as a history, fatal
answers raised, Retry-After read in its three forms."""
import asyncio
import email.utils
import json
import sqlite3
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from chat_endpoint.cache import cache_key
from chat_endpoint.client import AsyncChatClient, ChatClient
from chat_endpoint.endpoint import Endpoint, EndpointError, Failure, retry_after_s
from chat_endpoint.protocol import RequestOptions
from tests.eval.fake_vlm_server import THOUGHT, FakeVLMServer, echo

SCRIPTS = {"q-ok": [], "q-500-then-ok": ["500"], "q-429-twice-then-ok": ["429", "429"], "q-malformed-always":
           ["malformed"] * 9, "q-400": ["400"], "q-think": ["think"], "q-reasoning-only": ["reasoning_only"]}


def endpoint(server, **kw) -> Endpoint:
    return Endpoint(server.url, "m", **{"timeout_s": 5, "retries": 2, "backoff_s": 0.01} | kw)


def ask_all(client: ChatClient, prompts) -> list:
    """Each prompt sent once, in order: their Sents."""
    return [client.send(cache_key(p), client.body([{"role": "user", "content": p}], 8), p) for p in prompts]


def ask_all_async(server, cache_path, prompts) -> tuple[list, AsyncChatClient]:
    async def run():
        async with AsyncChatClient(endpoint(server), cache_path=cache_path) as client:
            return [await client.send(cache_key(p), client.body([{"role": "user", "content": p}], 8), p)
                    for p in prompts], client

    return asyncio.run(run())


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_one_policy_for_threads_and_asyncio(tmp_path, kind):
    prompts = list(SCRIPTS)
    with FakeVLMServer(SCRIPTS) as server:
        if kind == "sync":
            client = ChatClient(endpoint(server), cache_path=tmp_path / "c.sqlite")
            sent = ask_all(client, prompts)
            client.close()
        else:
            sent, client = ask_all_async(server, tmp_path / "c.sqlite", prompts)
        counts = {p: server.count(p) for p in prompts}
    rows = dict(zip(prompts, (s.row for s in sent)))
    assert counts == {"q-ok": 1, "q-500-then-ok": 2, "q-429-twice-then-ok": 3, "q-malformed-always": 3, "q-400": 1,
                      "q-think": 1, "q-reasoning-only": 1}
    assert [s.tries for s in sent] == list(counts.values()) and client.requests == sum(counts.values())
    assert dict(client.retries) == {"HTTP 500": 1, "HTTP 429": 2, "malformed response": 2}
    assert rows["q-ok"] == {"reply": echo("q-ok"), "finish_reason": "stop"}
    assert rows["q-think"] == {"reply": echo("q-think"), "finish_reason": "stop", "thinking": THOUGHT}
    assert rows["q-malformed-always"]["failure"] == "error_malformed"
    assert isinstance(sent[prompts.index("q-400")].result, Failure) and rows["q-400"]["failure"] == "error_http"
    assert rows["q-reasoning-only"]["failure"] == "reasoning_only" and client.served == {"fake-vlm-1"}
    db = sqlite3.connect(tmp_path / "c.sqlite")
    answered = {p for (p,) in db.execute("SELECT prompt FROM answers")}
    history = db.execute("SELECT prompt, reason, status, tries FROM answers_failures ORDER BY prompt").fetchall()
    assert answered == {"q-ok", "q-500-then-ok", "q-429-twice-then-ok", "q-think"}  # only answers are answers
    assert history == [("q-400", "error_http", 400, 1), ("q-malformed-always", "error_malformed", None, 3),
                       ("q-reasoning-only", "reasoning_only", 200, 1)]


def test_cached_answers_are_found_and_failures_asked_again(tmp_path):
    with FakeVLMServer({"q-empty": ["empty"]}) as server:
        first = ChatClient(endpoint(server), cache_path=tmp_path / "c.sqlite")
        ask_all(first, ["q-ok", "q-empty"])
        first.close()
        again = ChatClient(endpoint(server), cache_path=tmp_path / "c.sqlite")
        assert again.cached(cache_key("q-ok")) == {"reply": echo("q-ok"), "finish_reason": "stop"}
        assert again.cached(cache_key("q-empty")) is None   # an empty reply was no answer: send it again
        assert ask_all(again, ["q-empty"])[0].row["reply"] == echo("q-empty")
        again.close()
        assert server.count("q-ok") == 1 and server.count("q-empty") == 2


def test_requests_carry_the_options_and_fatal_answers_stop(tmp_path):
    request = RequestOptions("max_completion_tokens", None, {"reasoning_effort": "low"})
    with FakeVLMServer(refuse_params=("max_tokens",)) as server:
        client = ChatClient(endpoint(server), request)
        assert ask_all(client, ["q"])[0].row["reply"] == echo("q")
        client.close()
        body = server.requests[-1]["body"]
        refused = ChatClient(endpoint(server))
        row = ask_all(refused, ["q"])[0].row
        refused.close()
    assert body["max_completion_tokens"] == 8 and body["reasoning_effort"] == "low"
    assert "max_tokens" not in body and "temperature" not in body
    assert row["hint"] == "the endpoint refuses max_tokens: use --max-tokens-param max_completion_tokens"
    with FakeVLMServer(api_key="right") as server:
        with pytest.raises(EndpointError, match=r"answered 401 .*none was sent: --api-key-env"):
            ChatClient(endpoint(server))


def test_a_slow_models_route_is_no_unreachable_endpoint():
    class SlowModels(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            time.sleep(1.0)  # past the client's timeout

        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            body = json.dumps({"model": "m", "choices": [{"message": {"content": "yes"}, "finish_reason": "stop"}]})
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body.encode())

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), SlowModels)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        client = ChatClient(Endpoint(f"http://127.0.0.1:{httpd.server_address[1]}/v1", "m", timeout_s=0.3))
        assert client.listed == [] and ask_all(client, ["q"])[0].row == {"reply": "yes", "finish_reason": "stop"}
        client.close()
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.mark.parametrize("headers, seconds", [
    ({"retry-after": "2.5"}, 2.5), ({"retry-after-ms": "300", "retry-after": "9"}, 0.3), ({"retry-after": "0"}, 0.0),
    ({"retry-after": "soon"}, None), ({}, None), ({"retry-after": "nan"}, None),
])
def test_retry_after_in_seconds_and_milliseconds(headers, seconds):
    assert retry_after_s(headers) == seconds


def test_retry_after_as_a_date():
    later = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 28 <= retry_after_s({"retry-after": later}) <= 30
    assert retry_after_s({"retry-after": email.utils.formatdate(time.time() - 30, usegmt=True)}) == 0.0


def test_bad_endpoint_settings_are_one_clear_error(monkeypatch):
    with pytest.raises(ValueError, match="timeout must be positive"):
        Endpoint("http://127.0.0.1:9/v1", "m", timeout_s=0)
    monkeypatch.delenv("NO_SUCH_KEY_VAR", raising=False)
    with pytest.raises(ValueError, match="'NO_SUCH_KEY_VAR' is not set or empty"):
        Endpoint("http://127.0.0.1:9/v1", "m", "NO_SUCH_KEY_VAR").client_options()
