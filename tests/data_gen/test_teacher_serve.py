"""The endpoint teacher against the project's own `dermvqa serve api` on 127.0.0.1: a real OpenAI-compatible server."""
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pyarrow.parquet as pq
from PIL import Image

from chat_endpoint.endpoint import Endpoint
from chat_endpoint.protocol import RequestOptions
from data_gen.synth import synthesize
from data_gen.teacher_endpoint import teach_endpoint
from tests.conftest import ONTOLOGY, SAMPLE_CSV
from tests.data_gen.conftest import synth_kwargs

KEY = "teach-key-1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_teacher_through_dermvqa_serve_api(chatty_model_dir, tmp_path, monkeypatch):
    out = tmp_path / "synth"
    synthesize(SAMPLE_CSV, ONTOLOGY, out, families=["diagnosis"], **synth_kwargs())
    images = tmp_path / "images"
    for part in sorted((out / "qa").rglob("*.parquet")):
        for name in set(pq.read_table(part, columns=["image"]).column("image").to_pylist()):
            (images / name).parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (40, 40), (190, 90, 80)).save(images / name, format="PNG")  # Derm1M's pixels stay home
    model = tmp_path / "chatty"  # the teacher prompt is longer than the tiny model's 512 positions: give it room
    shutil.copytree(chatty_model_dir, model)
    config = json.loads((model / "config.json").read_text())
    config["text_config"]["max_position_embeddings"] = 4096  # rotary positions: no table to grow
    (model / "config.json").write_text(json.dumps(config))
    port = free_port()
    server = subprocess.Popen([str(Path(sys.executable).parent / "dermvqa"), "serve", "api", "--model",
                               str(model), "--port", str(port), "--device", "cpu"],
                              env={**os.environ, "DERMVQA_API_KEY": KEY}, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert server.poll() is None and time.monotonic() < deadline, server.stderr.read().decode()[-2000:]
            time.sleep(0.2)
        monkeypatch.setenv("TEACH_SERVE_KEY", KEY)
        ep = Endpoint(f"http://127.0.0.1:{port}/v1", "chatty", "TEACH_SERVE_KEY", timeout_s=60, retries=1)
        options = {"images_dir": images, "limit": 6, "max_tokens": 12, "concurrency": 4, "progress": False}
        request = RequestOptions(temperature=0.2)
        report = teach_endpoint(out / "qa", SAMPLE_CSV, ONTOLOGY, tmp_path / "t", ep, request, **options)
        again = teach_endpoint(out / "qa", SAMPLE_CSV, ONTOLOGY, tmp_path / "t", ep, request, **options)
    finally:
        server.terminate()
        server.wait(timeout=30)
    # The tiny random model writes no JSON: every reply is answered, paid for once and rejected with its reason.
    assert report["rows"] == report["answered"] == report["requests"] == 6 and report["failed"] == 0, report["failures"]
    assert report["tokens"]["prompt"] > 0 and 0 < report["tokens"]["completion"] <= 6 * 12
    assert report["kept"] + report["rejected"] == 6
    assert set(report["rejections"]) <= {"teacher_conversation: malformed JSON (no object in the reply)",
                                         "teacher_conversation: malformed JSON"}
    assert again["cached"] == 6 and again["requests"] == 0 and again["rejections"] == report["rejections"]
    assert json.loads((tmp_path / "t" / "report.json").read_text())["cached"] == 6
