"""The endpoint teacher against a fake OpenAI-compatible server in this process: faults, gates, cache, kill -9."""
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from dataclasses import fields
from pathlib import Path

import pytest

from chat_endpoint.endpoint import Endpoint, EndpointError
from chat_endpoint.protocol import RequestOptions
from data_gen.records import QARecord, read_records, write_parquet
from data_gen.teacher_endpoint import teach_endpoint
from dermvqa.bench.fake_openai import FakeEndpoint, completion, good, good_conversation
from tests.conftest import ONTOLOGY, SAMPLE_CSV
from tests.data_gen.conftest import real_rows


@pytest.fixture(scope="module")
def qa_dir(real_run, tmp_path_factory):
    """The real rows' QA records as one part file, and the images they cover (in file order)."""
    _, records = real_run
    names = {f.name for f in fields(QARecord)}
    out = tmp_path_factory.mktemp("teach_qa") / "qa"
    write_parquet([QARecord(**{k: v for k, v in r.items() if k in names}) for r in records],
                  out / "train" / "part-00000.parquet")
    return out, list(dict.fromkeys(r["image"] for r in records))


def teach(qa, out, url, model="teacher-x", timeout_s=5, **kw):
    """teach_endpoint with `data teach`'s decoding, 4 in flight, 2 retries after backoff of 10 to 50 ms."""
    ep = Endpoint(url, model, timeout_s=timeout_s, retries=2, backoff_s=0.01, max_backoff_s=0.05)
    return teach_endpoint(qa, SAMPLE_CSV, ONTOLOGY, out, ep, RequestOptions(temperature=0.2), max_tokens=768,
                          concurrency=4, progress=False, **kw)


def test_faults_are_retried_gated_counted_and_resumed(qa_dir, real_run, tmp_path):
    qa, images = qa_dir
    split_of = {r["image"]: r["split"] for r in real_run[1]}
    captions = {r["filename"]: r["caption"] for r in real_rows()}
    leaky = {"leak word": next(i for i in images if "Fenghuang" in captions[i]),
             "leak number": next(i for i in images if "10 days" in captions[i])}
    plain = [i for i in images if i not in leaky.values()]
    rows = {**leaky, **{name: plain[i] for i, name in enumerate(["429", "500", "timeout", "garbage body",
                                                                 "not json", "treatment", "dead", "two turns"])}}

    def script(row, n, request):
        if row == rows["429"] and n == 0:
            return 429, {"error": {"message": "slow down"}}, 0.0
        if row == rows["500"] and n == 0 or row == rows["dead"]:
            return 500, {"error": {"message": "boom"}}, 0.0
        if row == rows["timeout"] and n == 0:
            return 200, completion(good_conversation(request)), 4.0  # past the client's 2 s
        if row == rows["garbage body"] and n == 0:
            return 200, b"{not json at all", 0.0
        if row == rows["not json"]:
            return 200, completion("Sure! Here is a nice conversation about the lesion."), 0.0
        turns = json.loads(good_conversation(request))["conversation"]
        if row == rows["leak word"]:  # facts only the hidden caption knows
            turns[1]["answer"] = "The spots came up after a trip to Fenghuang."
        if row == rows["leak number"]:
            turns[0]["answer"] = "It looks like hives of 10 days."
        if row == rows["treatment"]:
            turns[2]["answer"] = "Topical steroid cream usually clears it."
        if row == rows["two turns"]:
            turns = turns[:2]
        return 200, completion(json.dumps({"conversation": turns})), 0.0

    with FakeEndpoint(script) as fake:
        report = teach(qa, tmp_path / "t", fake.url, timeout_s=2)
        assert fake.requests == report["requests"] == len(images) + 1 + 1 + 1 + 1 + 2  # retries; dead: 3 tries
    assert report["retries"] == {"HTTP 429": 1, "HTTP 500": 3, "timeout": 1, "malformed response": 1}
    assert report["failures"]["error_http (HTTP 500)"]["examples"] == [f"{rows['dead']}: HTTP 500: boom (3 tries)"]
    reasons = {k: v["count"] for k, v in report["rejections"].items()}
    assert reasons.pop("teacher_conversation: malformed JSON (no object in the reply)") == 1
    assert reasons.pop("teacher_conversation: caption-only number in answer") == 1
    assert reasons.pop("teacher_conversation: caption-only fact in answer") >= 1
    assert reasons.pop("teacher_conversation: answer states treatment or procedure") == 1
    assert reasons.pop("teacher_conversation: not 3-5 turns") == 1
    leaked = report["rejections"]["teacher_conversation: caption-only fact in answer"]["count"]
    assert sum(reasons.values()) == report["rejected"] - 4 - leaked  # whatever else the gates caught is counted
    kept = read_records(tmp_path / "t" / "qa")
    assert len(kept) == report["kept"] == len(images) - 1 - report["rejected"]
    assert {r["image"] for r in kept}.isdisjoint({rows[k] for k in ("dead", "not json", "leak word", "leak number",
                                                                   "treatment", "two turns")})
    for r in kept:
        assert r["family"] == "teacher_conversation" and 2 <= len(r["follow_ups"]) <= 4
        assert r["fields"][-1] == "caption (hidden context)" and r["split"] == split_of[r["image"]]
    assert report["tokens"] == {"prompt": 100 * (len(images) - 1), "completion": 40 * (len(images) - 1)}

    with FakeEndpoint(good) as fake:  # the rerun asks only the row that got no answer
        again = teach(qa, tmp_path / "t", fake.url)
        assert dict(fake.calls) == {rows["dead"]: 1}
    assert again["cached"] == len(images) - 1 and again["failed"] == 0 and again["kept"] == report["kept"] + 1
    with FakeEndpoint(good) as fake:  # another model is another key: asked anew
        teach(qa, tmp_path / "t", fake.url, model="teacher-y", limit=5)
        assert fake.requests == 5


def test_wrong_key_stops_the_run(qa_dir, tmp_path):
    with FakeEndpoint(lambda row, n, request: (401, {"error": {"message": "bad key"}}, 0.0)) as fake:
        with pytest.raises(EndpointError, match=r"answered 401 .*--api-key-env"):
            teach(qa_dir[0], tmp_path / "t", fake.url)
        assert fake.requests <= 4  # the workers in flight, not one request per row


def test_unreachable_endpoint_fails_at_once(qa_dir, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    start = time.monotonic()
    with pytest.raises(EndpointError, match="cannot reach the endpoint"):
        teach(qa_dir[0], tmp_path / "t", f"http://127.0.0.1:{port}/v1")
    assert time.monotonic() - start < 10


def cached(out: Path) -> int:
    """Answers the teacher process has committed so far (0 before its cache exists)."""
    if not (out / "cache.sqlite").exists():
        return 0
    db = sqlite3.connect(out / "cache.sqlite")
    try:
        return db.execute("SELECT COUNT(*) FROM answers").fetchone()[0]
    except sqlite3.OperationalError:  # no table yet
        return 0
    finally:
        db.close()


def test_kill_9_resumes_without_asking_an_answered_row_again(qa_dir, tmp_path):
    qa, images = qa_dir
    answered_before_kill = 20
    cli = [str(Path(sys.executable).parent / "dermvqa"), "data", "teach", "--qa", str(qa), "--csv", str(SAMPLE_CSV),
           "--ontology", str(ONTOLOGY), "--model", "teacher-x", "--out", str(tmp_path / "t"), "--concurrency", "4",
           "--api-key-env", "TEACH_TEST_KEY"]
    env = {**os.environ, "TEACH_TEST_KEY": "sk-test-1"}
    served = []
    with FakeEndpoint(good) as fake:
        def script(row, n, request):
            with fake.lock:
                served.append(row)
                hold = len(served) > answered_before_kill
            if hold:  # the requests after the first 20 wait until the client is dead
                fake.hold.clear()
                fake.hold.wait()
            return good(row, n, request)
        fake.script = script
        proc = subprocess.Popen(cli + ["--endpoint", fake.url], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                env=env)
        deadline = time.monotonic() + 120
        while (cached(tmp_path / "t") < answered_before_kill or fake.requests < answered_before_kill + 4) \
                and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)  # the client has committed 20 answers and has 4 requests in flight
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        first = dict(fake.calls)
        answered = set(fake.answered)
        fake.script = good
        fake.hold.set()
        rerun = subprocess.run(cli + ["--endpoint", fake.url], capture_output=True, text=True, timeout=300, env=env)
        assert rerun.returncode == 0, rerun.stderr
        second = {row: n - first.get(row, 0) for row, n in fake.calls.items() if n - first.get(row, 0)}
    assert fake.keys == {"Bearer sk-test-1"}  # --api-key-env names the variable; the key goes in the header
    assert len(answered) == answered_before_kill and len(first) == answered_before_kill + 4
    assert answered.isdisjoint(second)                  # no answered row is paid for twice
    assert set(first) - answered == set(first) & set(second)  # only the 4 in flight at the kill are asked again
    assert set(first) | set(second) == set(images) and all(n == 1 for n in second.values())
    report = json.loads((tmp_path / "t" / "report.json").read_text())
    assert report["cached"] == answered_before_kill and report["kept"] + report["rejected"] == len(images)
