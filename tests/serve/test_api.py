"""The API against a live server on 127.0.0.1, driven by the official openai client where it can be."""
import base64
import concurrent.futures as cf
import io

import httpx
import openai
import pytest
from PIL import Image

from dermvqa.infer.chat import conversation, generate_replies
from dermvqa.infer.generate import load_model, user_turn
from dermvqa.serve.api import ServerThread, create_app
from dermvqa.serve.limits import Limits, MiB
from tests.conftest import PAD_PHOTO
from tests.serve.test_limits import bomb_png

KEY = "test-key-123"
Q = "What is the most likely diagnosis for this lesion?"


def data_uri(data: bytes, kind: str = "png") -> str:
    return f"data:image/{kind};base64," + base64.b64encode(data).decode()


PAD_URI = data_uri(PAD_PHOTO.read_bytes())


def ask(image_url: str, text: str = Q) -> list[dict]:
    return [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": image_url}},
                                         {"type": "text", "text": text}]}]


@pytest.fixture(scope="module")
def served(chatty_model_dir):
    model, processor = load_model(chatty_model_dir, device="cpu")
    app = create_app(model, processor, "chatty", api_key=KEY, allow_dir=PAD_PHOTO.parent,
                     limits=Limits(max_request_bytes=2 * MiB, max_prompt_chars=4000, max_new_tokens=64),
                     max_batch=8, max_wait_s=0.3, default_max_tokens=8)
    with ServerThread(app) as server:
        client = openai.OpenAI(base_url=server.url + "/v1", api_key=KEY, max_retries=0, timeout=60)
        yield server, client, model, processor, app.state.batcher


def expected(model, processor, text=Q, image=None, n=8, turns=()):
    image = image or Image.open(PAD_PHOTO).convert("RGB")
    return generate_replies(model, processor, [image], [conversation(list(turns), text)], n)[0]


def test_models_and_health(served):
    server, client, *_ = served
    assert server.url.startswith("http://127.0.0.1:")
    assert [m.id for m in client.models.list()] == ["chatty"]
    assert httpx.get(server.url + "/health").json()["status"] == "ok"


def test_completion_equals_direct_generation(served):
    _, client, model, processor, _ = served
    r = client.chat.completions.create(model="chatty", messages=ask(PAD_URI), max_tokens=8)
    want = expected(model, processor)
    assert want.text and r.choices[0].message.content == want.text
    assert r.choices[0].finish_reason == want.finish_reason
    assert r.usage.prompt_tokens == want.prompt_tokens and r.usage.completion_tokens == want.completion_tokens


def test_streaming_deltas_add_up_to_the_answer(served):
    _, client, model, processor, _ = served
    chunks = list(client.chat.completions.create(model="chatty", messages=ask(PAD_URI), max_tokens=10, stream=True))
    pieces = [c.choices[0].delta.content for c in chunks if c.choices[0].delta.content]
    assert len(pieces) > 1
    assert "".join(pieces) == expected(model, processor, n=10).text
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")


def test_multi_turn_and_local_path(served):
    _, client, model, processor, _ = served
    messages = ask(str(PAD_PHOTO)) + [{"role": "assistant", "content": "Basal cell carcinoma"},
                                      {"role": "user", "content": "Is this psoriasis?"}]
    r = client.chat.completions.create(model="chatty", messages=messages, max_tokens=8)
    want = expected(model, processor, "Is this psoriasis?", turns=[(Q, "Basal cell carcinoma")])
    assert r.choices[0].message.content == want.text


def test_requests_arriving_together_are_batched(served):
    server, client, model, processor, batcher = served
    colours = [(200, 40, 40), (90, 60, 40), (240, 220, 200), (60, 120, 200), (30, 30, 30), (250, 250, 120)]
    images = [Image.new("RGB", (72, 72), c) for c in colours]
    questions = [Q, "Is this psoriasis?", "Which of these features is visible? A. scaly B. red", Q, "Hi", Q]
    limits = [8, 4, 6, 8, 5, 7]

    def one(i):
        buf = io.BytesIO()
        images[i].save(buf, format="PNG")
        return client.chat.completions.create(model="chatty", messages=ask(data_uri(buf.getvalue()), questions[i]),
                                              max_tokens=limits[i]).choices[0].message.content

    before = len(batcher.batch_sizes)
    with cf.ThreadPoolExecutor(len(images)) as pool:
        got = list(pool.map(one, range(len(images))))
    sizes = batcher.batch_sizes[before:]
    assert max(sizes) > 1 and sum(sizes) == len(images)
    want = [generate_replies(model, processor, [im], [[user_turn(q)]], n)[0].text
            for im, q, n in zip(images, questions, limits)]
    assert got == want and len(set(got)) > 1


BAD = {
    "wrong JSON": (dict(content=b'{"model": "chatty", "messages": [}'), 400, "not valid JSON"),
    "schema": (dict(json={"model": "chatty", "messages": "hello"}), 400, "chat completions format"),
    "deep nesting": (dict(content=b"[" * 100_000 + b"]" * 100_000), 400, "not valid JSON"),
    "missing image": (dict(json={"model": "chatty", "messages": [{"role": "user", "content": "hi"}]}), 400, "no image"),
    "text file as png": (dict(json={"model": "chatty", "messages": ask(data_uri(b"just text\n"))}), 400,
                         "not a readable image"),
    "bomb": (dict(json={"model": "chatty", "messages": ask(data_uri(bomb_png()))}), 413, "too large"),
    "two images": (dict(json={"model": "chatty", "messages": ask(PAD_URI) + ask(PAD_URI)}), 400, "one image"),
    "long prompt (chars)": (dict(json={"model": "chatty", "messages": ask(PAD_URI, "why? " * 1000)}), 400,
                            "the limit is 4000"),
    "long prompt (tokens)": (dict(json={"model": "chatty", "messages": ask(PAD_URI, "psoriasis? " * 300)}), 400,
                             "context holds 512 tokens"),
    "max_tokens": (dict(json={"model": "chatty", "messages": ask(PAD_URI), "max_tokens": 65}), 400, "limit of 64"),
    "wrong model": (dict(json={"model": "gpt-4o", "messages": ask(PAD_URI)}), 404, "not served here"),
    "remote url": (dict(json={"model": "chatty", "messages": ask("https://example.com/a.png")}), 400,
                   "not fetched"),
    "outside allow-dir": (dict(json={"model": "chatty", "messages": ask("/etc/hostname")}), 403, "outside"),
    "body too large": (dict(content=b"x" * (3 * MiB)), 413, "the limit is 2097152"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_request_gets_a_clear_4xx_and_the_server_keeps_serving(served, case):
    server, client, model, processor, _ = served
    kwargs, status, message = BAD[case]
    r = httpx.post(server.url + "/v1/chat/completions", headers={"Authorization": f"Bearer {KEY}"}, timeout=60,
                   **kwargs)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert message in error["message"] and error["type"]
    ok = client.chat.completions.create(model="chatty", messages=ask(PAD_URI), max_tokens=3)
    assert ok.choices[0].message.content == expected(model, processor, n=3).text


def test_api_key_is_required(served):
    server, _, model, processor, _ = served
    for key in ("wrong-key", ""):
        bad = openai.OpenAI(base_url=server.url + "/v1", api_key=key or "x", max_retries=0)
        with pytest.raises(openai.AuthenticationError, match="API key"):
            bad.chat.completions.create(model="chatty", messages=ask(PAD_URI), max_tokens=3)
    assert httpx.get(server.url + "/v1/models").status_code == 401
    assert httpx.get(server.url + "/health").status_code == 200


def test_openai_client_sees_errors_as_exceptions(served):
    _, client, *_ = served
    with pytest.raises(openai.BadRequestError, match="no image"):
        client.chat.completions.create(model="chatty", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.BadRequestError, match="not a readable image"):
        client.chat.completions.create(model="chatty", messages=ask(data_uri(b"GIF89a nope")), stream=True)


def test_extra_field_explains_and_unlike_photos_get_the_notice(trusted_model_dir):
    from dermvqa.trust.ood import NOTICE, load_summary

    model_dir, world = trusted_model_dir
    model, processor = load_model(model_dir, device="cpu")
    app = create_app(model, processor, "trusted", default_max_tokens=8, ood=load_summary(model_dir))
    familiar = data_uri((world / "images" / "synthetic" / "lesion_00003.png").read_bytes())
    with ServerThread(app) as server:
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="none", max_retries=0, timeout=60)
        plain = client.chat.completions.create(model="trusted", messages=ask(familiar), max_tokens=8)
        body = {"model": "trusted", "messages": ask(familiar), "max_tokens": 8, "dermvqa": {"explain": True}}
        r = httpx.post(server.url + "/v1/chat/completions", json=body, timeout=60).json()
        pad = client.chat.completions.create(model="trusted", messages=ask(PAD_URI), max_tokens=8)
        streamed = client.chat.completions.create(model="trusted", messages=ask(PAD_URI), max_tokens=8, stream=True)
        pieces = "".join(c.choices[0].delta.content or "" for c in streamed)
        refused = httpx.post(server.url + "/v1/chat/completions", json={**body, "stream": True}, timeout=60)
    answer = r["choices"][0]["message"]["content"]
    assert answer == plain.choices[0].message.content and answer
    assert not r["dermvqa"]["ood"]["unlike_training"]
    grid = r["dermvqa"]["explanation"]
    assert grid["answer"] == answer and grid["rows"] == len(grid["grid"]) == 8
    assert grid["overlay_png"].startswith("data:image/png;base64,")
    Image.open(io.BytesIO(base64.b64decode(grid["overlay_png"].split(",", 1)[1]))).verify()
    assert pad.choices[0].message.content.startswith(NOTICE) and pad.model_extra["dermvqa"]["ood"]["unlike_training"]
    assert pieces == pad.choices[0].message.content
    assert refused.status_code == 400 and "non-streaming" in refused.json()["error"]["message"]
