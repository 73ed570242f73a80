"""A fault-injecting fake OpenAI-compatible chat server for the endpoint adapter and judge tests.

stdlib http.server in a thread on 127.0.0.1 (a free port). Each request is answered by the next scripted
action for its prompt (the last text part of the user message); when a prompt's script is spent it answers
`default` ("ok"). Actions: ok, 429, 500, timeout (sleeps `timeout_sleep_s`, past the client's timeout, then
answers), empty, malformed (a body that is not JSON), refusal (the `refusal` field), filter (finish_reason
content_filter), 400; and replies as servers of reasoning models give them: parts (content as a list of two
text parts), think (a `<think>` block before the answer), reasoning (the answer with a `reasoning_content`
field), reasoning_only (content null, only `reasoning_content`, finish_reason length), length (the answer
with finish_reason length). `fail_first=(N, action)` answers the first N chat requests with that action
whatever their prompt (an outage); `refuse_params` names body fields answered with OpenAI's 400 for its
reasoning models (max_tokens; temperature other than 1). Every request is recorded (prompt, image data URL,
action, body) for the tests to count, and the most requests in flight at once is kept. `delay_s` slows every
answer (for kill -9 mid-run).
"""
from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ACTIONS = ("ok", "429", "500", "timeout", "empty", "malformed", "refusal", "filter", "400", "parts", "think",
           "reasoning", "reasoning_only", "length")
THOUGHT = "The user asks about the lesion. Let me look at its border and colour first."
REFUSED_PARAMS = {
    "max_tokens": "Unsupported parameter: 'max_tokens' is not supported with this model. Use "
                  "'max_completion_tokens' instead.",
    "temperature": "Unsupported value: 'temperature' does not support 0 with this model. Only the default (1) "
                   "value is supported."}


def echo(prompt: str) -> str:
    return f"reply to: {prompt}"


def reply_message(action: str, reply: str) -> tuple[dict, str]:
    """The assistant message and finish_reason of an action that answers 200 with a completion."""
    half = len(reply) // 2
    return {"ok": ({"content": reply}, "stop"),
            "empty": ({"content": ""}, "stop"),
            "refusal": ({"content": None, "refusal": "I cannot help with that."}, "stop"),
            "filter": ({"content": ""}, "content_filter"),
            "parts": ({"content": [{"type": "text", "text": reply[:half]}, {"type": "text", "text": reply[half:]}]},
                      "stop"),
            "think": ({"content": f"<think>\n{THOUGHT}\n</think>\n\n{reply}"}, "stop"),
            "reasoning": ({"content": reply, "reasoning_content": THOUGHT}, "stop"),
            "reasoning_only": ({"content": None, "reasoning_content": THOUGHT}, "length"),
            "length": ({"content": reply}, "length")}[action]


class FakeVLMServer:
    def __init__(self, script: dict[str, list[str]] | None = None, reply: Callable[[str], str] = echo,
                 served_model: str = "fake-vlm-1", api_key: str | None = None, delay_s: float = 0.0,
                 timeout_sleep_s: float = 1.0, default: str = "ok", fail_first: tuple[int, str] = (0, "500"),
                 refuse_params: tuple[str, ...] = ()):
        for actions in [*(script or {}).values(), [default, fail_first[1]]]:
            unknown = set(actions) - set(ACTIONS)
            if unknown:
                raise ValueError(f"unknown fake-server actions {sorted(unknown)}; known: {ACTIONS}")
        if set(refuse_params) - set(REFUSED_PARAMS):
            raise ValueError(f"refuse_params: known are {sorted(REFUSED_PARAMS)}")
        self.script = {k: list(v) for k, v in (script or {}).items()}
        self.default, self.refuse_params = default, refuse_params
        self.outage_left, self.outage_action = fail_first
        self.reply, self.served_model, self.api_key = reply, served_model, api_key
        self.delay_s, self.timeout_sleep_s = delay_s, timeout_sleep_s
        self.requests: list[dict] = []
        self.in_flight = self.max_in_flight = 0
        self.lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.httpd.daemon_threads = True
        self.httpd.block_on_close = False
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def __enter__(self) -> "FakeVLMServer":
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def count(self, prompt: str | None = None, action: str | None = None) -> int:
        """Chat requests received (for one prompt, answered with one action)."""
        with self.lock:
            return sum(1 for r in self.requests if prompt in (None, r["prompt"]) and action in (None, r["action"]))

    def _refused_param(self, body: dict) -> str | None:
        if "max_tokens" in self.refuse_params and "max_tokens" in body:
            return "max_tokens"
        if "temperature" in self.refuse_params and body.get("temperature", 1) != 1:
            return "temperature"
        return None

    def _next_action(self, body: dict, prompt: str, image_url: str) -> str:
        with self.lock:
            queue = self.script.get(prompt)
            refused = self._refused_param(body)
            if refused:
                action = f"refuse {refused}"
            elif self.outage_left > 0:
                self.outage_left -= 1
                action = self.outage_action
            else:
                action = queue.pop(0) if queue else self.default
            self.requests.append({"prompt": prompt, "image_url": image_url, "action": action, "body": body})
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        return action

    def _done(self) -> None:
        with self.lock:
            self.in_flight -= 1

    def _completion(self, message: dict, finish: str = "stop") -> bytes:
        return json.dumps({"id": "chatcmpl-fake", "object": "chat.completion", "created": 0,
                           "model": self.served_model,
                           "choices": [{"index": 0, "message": {"role": "assistant", **message},
                                        "finish_reason": finish}]}).encode()

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def _send(self, status: int, body: bytes):
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                try:
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout test)
                    pass

            def _error(self, status: int, message: str):
                self._send(status, json.dumps({"error": {"message": message, "type": "fake", "code": status}})
                           .encode())

            def _authorized(self) -> bool:
                if server.api_key and self.headers.get("Authorization") != f"Bearer {server.api_key}":
                    self._error(401, "wrong API key")
                    return False
                return True

            def do_GET(self):
                if not self._authorized():
                    return
                if self.path.rstrip("/").endswith("/models"):
                    self._send(200, json.dumps({"object": "list", "data": [{"id": server.served_model,
                                                                            "object": "model"}]}).encode())
                else:
                    self._error(404, "not found")

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if not self._authorized():
                    return
                content = body["messages"][-1]["content"]
                prompt, image_url = (content, "") if isinstance(content, str) else ("", "")
                for part in [] if isinstance(content, str) else content:
                    if part["type"] == "text":
                        prompt = part["text"]
                    elif part["type"] == "image_url":
                        image_url = part["image_url"]["url"]
                action = server._next_action(body, prompt, image_url)
                try:
                    self._answer(action, prompt)
                finally:
                    server._done()

            def _answer(self, action: str, prompt: str):
                time.sleep(server.delay_s)
                if action == "timeout":
                    time.sleep(server.timeout_sleep_s)
                    action = "ok"
                reply = server.reply(prompt)
                if action.startswith("refuse "):
                    self._error(400, REFUSED_PARAMS[action.split()[1]])
                elif action in ("429", "500", "400"):
                    self._error(int(action), f"scripted {action}")
                elif action == "malformed":
                    self._send(200, b'{"choices": [{"message": ')
                else:
                    self._send(200, server._completion(*reply_message(action, reply)))

        return Handler
