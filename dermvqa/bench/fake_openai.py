"""A fake OpenAI-compatible chat endpoint on 127.0.0.1, inside the calling process: scripted replies and faults
(the teacher tests and dermvqa.bench.teacher).

`FakeEndpoint(script)` answers POST /v1/chat/completions. `script(row, n, request)` gets the row (the
X-Row header the teacher sends), how many times that row was asked before, and the request JSON,
and returns (status, payload, delay_s): a dict payload is sent as JSON, bytes as they are. Every
request is counted per row; `hold` (an Event) lets a test keep requests waiting.
"""
from __future__ import annotations

import json
import re
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote

_FACTS = re.compile(r"VISIBLE FACTS: (.*)")


def completion(content: str, model: str = "fake") -> dict:
    return {"id": "chatcmpl-fake", "object": "chat.completion", "created": 0, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 100, "completion_tokens": 40, "total_tokens": 140}}


def prompt_text(request: dict) -> str:
    content = request["messages"][-1]["content"]
    return content if isinstance(content, str) else " ".join(p.get("text") or "" for p in content)


def good_conversation(request: dict) -> str:
    """Three turns built only from the request's VISIBLE FACTS: what the gates should keep."""
    facts = dict(part.split(": ", 1) for part in _FACTS.search(prompt_text(request))[1].split("; ") if ": " in part)
    dx = facts.get("diagnosis path", "").split(" > ")[-1].split(",")[0] or "a skin condition"
    seen = facts.get("visible features")
    turns = [{"question": "What is the most likely diagnosis?", "answer": f"It looks like {dx}."},
             {"question": "What visible features does the lesion show?",
              "answer": f"The lesion shows {seen}." if seen else "The lesion is on the skin."},
             {"question": "Is the skin around it visible?", "answer": "Yes, the skin around it is visible."}]
    return json.dumps({"conversation": turns})


def good(row, n, request):
    return 200, completion(good_conversation(request), request["model"]), 0.0


class FakeEndpoint:
    def __init__(self, script=good):
        self.script = script
        self.calls: Counter = Counter()
        self.answered: list[str] = []
        self.keys: set[str] = set()  # the Authorization headers seen
        self.lock = threading.Lock()
        self.hold = threading.Event()
        self.hold.set()
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                row = unquote(self.headers.get("X-Row", ""))
                with endpoint.lock:
                    endpoint.keys.add(self.headers.get("Authorization", ""))
                    n = endpoint.calls[row]
                    endpoint.calls[row] += 1
                endpoint.hold.wait()
                status, payload, delay = endpoint.script(row, n, request)
                time.sleep(delay)
                body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    if status == 429:
                        self.send_header("Retry-After", "0")
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    return  # the client gave up (timeout) or was killed
                if status == 200:
                    with endpoint.lock:
                        endpoint.answered.append(row)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "FakeEndpoint":
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.hold.set()
        self.server.shutdown()
        self.server.server_close()

    @property
    def requests(self) -> int:
        return sum(self.calls.values())
