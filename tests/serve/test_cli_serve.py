"""`dermvqa serve api` and `dermvqa serve web` as real processes: they bind 127.0.0.1 and answer."""
import os
import signal
import subprocess
import sys
import time

import httpx
import openai

from tests.conftest import PAD_PHOTO
from tests.serve.test_api import PAD_URI, ask
from tests.serve.test_web import free_port


def start(args: list[str], port: int, env: dict | None = None) -> subprocess.Popen:
    cmd = [sys.executable, "-c", "from dermvqa.cli import app; app()", *args, "--port", str(port), "--device", "cpu"]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})


def wait_until_up(proc: subprocess.Popen, url: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"server exited early:\n{proc.stdout.read()}"
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return
        except httpx.TransportError:
            time.sleep(0.3)
    raise AssertionError(f"{url} did not come up in {timeout}s")


def stop(proc: subprocess.Popen) -> str:
    proc.send_signal(signal.SIGINT)
    try:
        out, _ = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    return out


def test_serve_api_command(chatty_model_dir):
    port = free_port()
    proc = start(["serve", "api", "--model", str(chatty_model_dir), "--allow-dir", str(PAD_PHOTO.parent)], port,
                 {"DERMVQA_API_KEY": "from-env"})
    try:
        wait_until_up(proc, f"http://127.0.0.1:{port}/health")
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="from-env", max_retries=0)
        model_id = client.models.list().data[0].id
        assert model_id == chatty_model_dir.name
        by_uri = client.chat.completions.create(model=model_id, messages=ask(PAD_URI), max_tokens=6)
        by_path = client.chat.completions.create(model=model_id, messages=ask(str(PAD_PHOTO)), max_tokens=6)
        assert by_uri.choices[0].message.content and by_uri.choices[0].message.content == \
            by_path.choices[0].message.content
        assert httpx.get(f"http://127.0.0.1:{port}/v1/models", headers={"Authorization": "Bearer nope"}
                         ).status_code == 401
    finally:
        out = stop(proc)
    assert f"http://127.0.0.1:{port}" in out


def test_serve_web_command(chatty_model_dir):
    port = free_port()
    proc = start(["serve", "web", "--model", str(chatty_model_dir)], port)
    try:
        wait_until_up(proc, f"http://127.0.0.1:{port}/")
        page = httpx.get(f"http://127.0.0.1:{port}/config", timeout=10).json()
        assert "Research software, not a medical device" in str(page)
    finally:
        stop(proc)


def test_serve_api_no_ood_answers_every_photo_and_lists_the_blind_colour(trusted_model_dir):
    from transformers import AutoProcessor

    from dermvqa.trust.ood import NOTICE

    model_dir, _ = trusted_model_dir
    answers = {}
    for flag in ("--ood", "--no-ood"):
        port = free_port()
        proc = start(["serve", "api", "--model", str(model_dir), flag], port)
        try:
            wait_until_up(proc, f"http://127.0.0.1:{port}/health")
            client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=0)
            listed = client.models.list().data[0]
            reply = client.chat.completions.create(model=listed.id, messages=ask(PAD_URI), max_tokens=6)
            answers[flag] = reply.choices[0].message.content
        finally:
            stop(proc)
        mean = AutoProcessor.from_pretrained(model_dir).image_processor.image_mean
        assert listed.model_extra["dermvqa"]["blank_rgb"] == [round(255 * m) for m in mean]
    assert answers["--ood"].startswith(NOTICE)  # the PAD-UFES-20 photo is unlike the synthetic world
    assert answers["--no-ood"] and not answers["--no-ood"].startswith(NOTICE)
