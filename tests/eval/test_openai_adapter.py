"""openai:MODEL@URL against a fault-injecting fake server: every item answered or counted under its reason,
cached answers never asked again (also after kill -9 of `dermvqa eval`), the API key in no file; and against
`dermvqa serve api`, the same answers and metrics as the llava: run."""
import base64
import hashlib
import io
import json
import os
import secrets
import signal
import sqlite3
import subprocess
import sys
import time

import pytest
from PIL import Image

from chat_endpoint.endpoint import EndpointError
from chat_endpoint.protocol import split_thinking
from dermvqa.eval.backends.base import FAILURES
from dermvqa.eval.backends.openai_chat import OpenAIChatAdapter, parse_spec
from tests.conftest import REPO
from tests.eval.fake_vlm_server import FakeVLMServer, echo
from tests.train.tiny_run import CLI, child_env

RETRIED = {"429", "500", "timeout", "malformed"}
FINAL_REASON = {"429": "error_http", "500": "error_http", "timeout": "error_timeout", "malformed": "error_malformed",
                "400": "error_http", "empty": "empty", "refusal": "refused", "filter": "refused"}
SCRIPTS = {
    "q-429-then-ok": ["429", "429"], "q-500-then-ok": ["500"], "q-timeout-then-ok": ["timeout"],
    "q-malformed-then-ok": ["malformed"], "q-500-always": ["500"] * 9, "q-timeout-always": ["timeout"] * 9,
    "q-malformed-always": ["malformed"] * 9, "q-empty": ["empty"], "q-refusal": ["refusal"],
    "q-filter": ["filter"], "q-400": ["400"], "q-mixed-then-ok": ["429", "timeout", "500"], "q-ok": [],
}
MAX_RETRIES = 3


def expected(prompt: str, max_retries: int) -> tuple[dict, int]:
    """What the adapter's retry contract says a prompt's script must end as: (answer row, requests sent)."""
    actions = SCRIPTS[prompt]
    for attempt in range(max_retries + 1):
        action = actions[attempt] if attempt < len(actions) else "ok"
        if action == "ok":
            return {"reply": echo(prompt)}, attempt + 1
        if action not in RETRIED or attempt == max_retries:
            return {"reply": "", "failure": FINAL_REASON[action]}, attempt + 1
    raise AssertionError("unreachable")



def core(row: dict) -> dict:
    """The row's answer and failure reason, without its details (finish_reason, error message)."""
    return {k: row[k] for k in ("reply", "failure") if k in row}


def images(n: int) -> list[Image.Image]:
    return [Image.new("RGB", (16, 12), (40 + 13 * i, 200 - 7 * i, 90)) for i in range(n)]


def adapter(server, cache_dir=None, **kw) -> OpenAIChatAdapter:
    kw = {"timeout": 0.3, "max_retries": MAX_RETRIES, "backoff_s": 0.01} | kw
    return OpenAIChatAdapter(f"openai:test-model@{server.url}", cache_dir=cache_dir, **kw)


def test_every_item_answered_or_counted_under_its_reason(tmp_path):
    prompts = list(SCRIPTS)
    with FakeVLMServer(SCRIPTS, timeout_sleep_s=0.6) as server:
        model = adapter(server, tmp_path, concurrency=4)
        rows = model.generate(images(len(prompts)), prompts, max_new_tokens=12)
        model.close()
        for prompt, row in zip(prompts, rows):
            want, sent = expected(prompt, MAX_RETRIES)
            assert core(row) == want, prompt
            assert server.count(prompt) == sent, prompt
            assert row.get("failure", FAILURES[0]) in FAILURES
    assert {r.get("failure") for r in rows} == {None, "error_http", "error_timeout", "error_malformed", "empty",
                                                "refused"}


def test_request_format_and_bounded_concurrency(tmp_path):
    pics = images(6)
    with FakeVLMServer(delay_s=0.15) as server:
        model = adapter(server, tmp_path, concurrency=2)
        rows = model.generate(pics, [f"question {i}" for i in range(6)], max_new_tokens=7)
        manifest, options = model.manifest(), model.run_options()
        model.close()
    assert [r["reply"] for r in rows] == [f"reply to: question {i}" for i in range(6)]
    assert server.max_in_flight == 2
    for req in server.requests:
        body = req["body"]
        assert body["temperature"] == 0 and body["max_tokens"] == 7 and body["model"] == "test-model"
        assert [p["type"] for p in body["messages"][0]["content"]] == ["image_url", "text"]
        head, data = req["image_url"].split(",", 1)
        assert head == "data:image/png;base64"
        sent = Image.open(io.BytesIO(base64.b64decode(data)))
        k = int(req["prompt"].split()[-1])
        assert sent.format == "PNG" and sent.convert("RGB").tobytes() == pics[k].tobytes()
    assert manifest["served_model"] == "fake-vlm-1" and manifest["requested_model"] == "test-model"
    assert manifest["endpoint"] == server.url and options["concurrency"] == 2 and "concurrency" not in manifest
    assert manifest["settings"] == {"temperature": 0, "max_tokens_param": "max_tokens", "extra_body": {}}


def test_rerun_sends_no_request_for_cached_answers(tmp_path):
    prompts = ["q-ok", "q-500-then-ok", "q-500-twice", "q-empty", "another"]
    script = {"q-500-then-ok": ["500"], "q-500-twice": ["500"] * 2, "q-empty": ["empty"]}
    pics = images(len(prompts))
    with FakeVLMServer(script) as server:
        first = adapter(server, tmp_path, max_retries=1)
        rows = first.generate(pics, prompts, 12)
        first.close()
        assert [r.get("failure") for r in rows] == [None, None, "error_http", "empty", None]
        before = {p: server.count(p) for p in prompts}
        again = adapter(server, tmp_path, max_retries=1)
        rerun = again.generate(pics, prompts, 12)
        served = again.manifest()["served_model"]
        again.close()
        after = {p: server.count(p) - before[p] for p in prompts}
        assert [r.get("failure") for r in rerun] == [None, None, None, None, None]  # failures were asked again
        assert after == {"q-ok": 0, "q-500-then-ok": 0, "another": 0, "q-500-twice": 1, "q-empty": 1}
        assert [r["reply"] for r in rerun if r["reply"]][:2] == [r["reply"] for r in rows[:2]]
        assert served == "fake-vlm-1"  # from the cached rows
        other = adapter(server, tmp_path)
        other.generate(pics[:1], prompts[:1], 13)  # another setting is another request
        other.close()
        assert server.count("q-ok") == before["q-ok"] + 1


def test_api_key_is_sent_but_never_written(tmp_path, monkeypatch):
    key = "sk-test-" + secrets.token_hex(12)
    monkeypatch.setenv("DERMVQA_TEST_KEY", key)
    with FakeVLMServer(api_key=key) as server:
        model = adapter(server, tmp_path, api_key_env="DERMVQA_TEST_KEY")
        assert [core(r) for r in model.generate(images(2), ["a", "b"], 8)] == [{"reply": echo("a")},
                                                                                {"reply": echo("b")}]
        (tmp_path / "manifest.txt").write_text(repr(model.manifest()))
        model.close()
        monkeypatch.setenv("DERMVQA_TEST_KEY", "wrong")
        with pytest.raises(EndpointError, match="401"):
            adapter(server, tmp_path, api_key_env="DERMVQA_TEST_KEY")
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.name == "cache.sqlite" for p in files)
    for p in files:
        assert key.encode() not in p.read_bytes(), p
    with pytest.raises(ValueError, match="NO_SUCH_KEY_VAR"):
        OpenAIChatAdapter(f"openai:m@{server.url}", api_key_env="NO_SUCH_KEY_VAR")
    assert "NO_SUCH_KEY_VAR" not in os.environ


def test_unreachable_endpoint_fails_at_start_not_after_retries(tmp_path):
    with FakeVLMServer() as server:
        url = server.url
    start = time.monotonic()
    with pytest.raises(EndpointError, match="cannot reach"):
        OpenAIChatAdapter(f"openai:m@{url}", cache_dir=tmp_path, max_retries=5)
    assert time.monotonic() - start < 10
    assert not (tmp_path / "cache.sqlite").exists()


@pytest.mark.parametrize("spec", ["openai:model", "openai:@http://x/v1", "openai:m@ftp://x", "hf:m@http://x"])
def test_bad_spec_is_one_clear_error(spec):
    with pytest.raises(ValueError, match="openai:MODEL@URL"):
        parse_spec(spec)


def test_spec_parts():
    assert parse_spec("openai:Qwen/Qwen2.5-VL-7B-Instruct@http://127.0.0.1:8000/v1/") == (
        "Qwen/Qwen2.5-VL-7B-Instruct", "http://127.0.0.1:8000/v1")


def pixel_sha256(data_url: str) -> str:
    """The cache's image key, computed here from the PNG the server received."""
    im = Image.open(io.BytesIO(base64.b64decode(data_url.split(",", 1)[1]))).convert("RGB")
    return hashlib.sha256(f"{im.width}x{im.height}:".encode() + im.tobytes()).hexdigest()


def cached_requests(out) -> set[tuple[str, str]]:
    if not (out / "cache.sqlite").exists():
        return set()
    db = sqlite3.connect(f"file:{out / 'cache.sqlite'}?mode=ro", uri=True)
    try:
        return set(db.execute("SELECT prompt, image_sha256 FROM answers").fetchall())
    except sqlite3.OperationalError:  # the table is not there yet
        return set()
    finally:
        db.close()


def test_kill_9_mid_run_then_rerun_sends_no_cached_request_again(qa_world, tmp_path, monkeypatch):
    from dermvqa.eval.runner import run_eval

    key = "sk-kill-" + secrets.token_hex(12)
    out = tmp_path / "run"
    monkeypatch.setenv("DERMVQA_KILL_KEY", key)
    env = {**child_env(), "DERMVQA_KILL_KEY": key}
    with FakeVLMServer(api_key=key, delay_s=0.15) as server:
        args = ["eval", "--model", f"openai:slow-model@{server.url}", "--bench", f"qa:{qa_world}", "--out", str(out),
                "--batch-size", "64", "--concurrency", "2", "--api-key-env", "DERMVQA_KILL_KEY"]
        proc = subprocess.Popen([sys.executable, "-c", CLI, *args], cwd=REPO, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + 120
        while len(cached_requests(out)) < 4:
            assert proc.poll() is None, proc.stdout.read()
            assert time.monotonic() < deadline, "no answers cached within 120 s"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        cached = cached_requests(out)
        assert not (out / "answers.jsonl").exists() or not (out / "answers.jsonl").read_text().strip()
        sent_before = server.count()
        run_eval(f"openai:slow-model@{server.url}", f"qa:{qa_world}", out, batch_size=64, n_boot=50, plots=False,
                 adapter_options={"concurrency": 2, "api_key_env": "DERMVQA_KILL_KEY"})  # the rerun, in this process
        again = [(r["prompt"], pixel_sha256(r["image_url"])) for r in server.requests[sent_before:]]
    assert len(cached) >= 4 and again
    assert not cached & set(again)  # 0 cached requests sent again
    assert len(again) == len(set(again))  # identical requests (blind twins) are sent once
    answered = [json.loads(line) for line in (out / "answers.jsonl").read_text().splitlines()]
    assert len(answered) == 2 * 36 and all("failure" not in r for r in answered)
    assert {(r["id"], r["blind"]) for r in answered} == {(f"{f}{i}", b) for f in ("yn", "mc", "dx") for i in range(12)
                                                         for b in (False, True)}
    for p in out.rglob("*"):
        if p.is_file():
            assert key.encode() not in p.read_bytes(), p


def test_served_api_gives_the_llava_runs_answers_and_metrics(chatty_model_dir, qa_world, tmp_path):
    from dermvqa.eval.runner import run_eval
    from dermvqa.infer.generate import load_model
    from dermvqa.serve.api import ServerThread, create_app

    direct = run_eval(f"llava:{chatty_model_dir}", f"qa:{qa_world}", tmp_path / "llava", max_new_tokens=8,
                      n_boot=200, plots=False)
    model, processor = load_model(chatty_model_dir, device="cpu")
    mean = tuple(round(255 * m) for m in processor.image_processor.image_mean)
    assert mean != (128, 128, 128)  # so the grey fallback would be a different blind input
    with ServerThread(create_app(model, processor, "chatty")) as server:
        served = run_eval(f"openai:chatty@{server.url}/v1", f"qa:{qa_world}", tmp_path / "openai", max_new_tokens=8,
                          n_boot=200, plots=False, adapter_options={"concurrency": 4})
        chosen = OpenAIChatAdapter(f"openai:chatty@{server.url}/v1", blank_rgb=(1, 2, 3))
        assert chosen.blank_image().getpixel((0, 0)) == (1, 2, 3)  # --blank-rgb wins over the listed colour
        chosen.close()
    assert served["manifest"]["adapter"]["blank_image_rgb"] == list(mean)  # listed by serve api's GET /models
    assert served["manifest"]["adapter"]["blank_image_from"] == "the endpoint's GET /models"
    replies = {}
    for run in ("llava", "openai"):
        rows = [json.loads(line) for line in (tmp_path / run / "answers.jsonl").read_text().splitlines()]
        replies[run] = {(r["id"], r["blind"]): r["reply"] for r in rows}
    assert len(replies["llava"]) == 72 and replies["openai"] == replies["llava"]
    assert len(set(replies["llava"].values())) > 10  # varied replies, so equality means something
    assert served["manifest"]["adapter"]["served_model"] == "chatty"
    finished = served.pop("finish_reasons")  # the endpoint reports why each answer ended; llava: does not
    assert set(finished) == {"image", "blind"} and all(sum(c.values()) == 36 for c in finished.values())
    for m in (direct, served):
        for k in ("settings", "manifest"):
            m.pop(k)
    assert served == direct


@pytest.mark.parametrize("text, answer, thinking", [
    ("<think>a, b</think>\n\nyes", "yes", "a, b"),
    ("looked at the border</think> no", "no", "looked at the border"),     # the template opened the block
    ("<think>one</think>B<think>two</think>", "B", "one\n\ntwo"),
    ("<think>still thinking when cut", "", "still thinking when cut"),
    ("  plain reply, kept as it is ", "  plain reply, kept as it is ", ""),
])
def test_think_blocks_are_cut_from_the_answer_and_kept(text, answer, thinking):
    assert split_thinking(text) == (answer, thinking)
