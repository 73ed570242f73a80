"""`dermvqa data teach --endpoint` on the shared client, against the fault-injecting fake server: the endpoint
behaviours eval has now serve the teacher (failed rows asked again by a rerun and only they, --max-tokens-param
with the hint that names it, --no-temperature, --extra-body, think blocks cut, reasoning-only replies failed)."""
import json
import sqlite3

import pytest
from typer.testing import CliRunner

from data_gen.synth import synthesize
from dermvqa.bench.fake_openai import good_conversation
from dermvqa.cli import app
from tests.conftest import ONTOLOGY, SAMPLE_CSV
from tests.data_gen.conftest import synth_kwargs
from tests.eval.fake_vlm_server import FakeVLMServer

ROWS = 6


@pytest.fixture(scope="module")
def qa(tmp_path_factory):
    out = tmp_path_factory.mktemp("teach_synth")
    synthesize(SAMPLE_CSV, ONTOLOGY, out, families=["diagnosis"], **synth_kwargs())
    return out / "qa"


def conversation(prompt: str) -> str:
    """The fake server's reply: three turns from the prompt's VISIBLE FACTS, which the gates keep."""
    return good_conversation({"messages": [{"content": prompt}]})


def teach(server, qa, out, *flags):
    args = ["data", "teach", "--qa", str(qa), "--csv", str(SAMPLE_CSV), "--ontology", str(ONTOLOGY), "--model",
            "teacher-x", "--out", str(out), "--endpoint", server.url, "--limit", str(ROWS), "--concurrency", "1",
            *flags]
    return CliRunner().invoke(app, args)


def report(out) -> dict:
    return json.loads((out / "report.json").read_text())


def test_an_outage_is_asked_again_by_a_rerun_and_only_once_answered(qa, tmp_path):
    out = tmp_path / "t"
    with FakeVLMServer(reply=conversation, fail_first=(3, "500")) as server:
        down = teach(server, qa, out, "--retries", "0")
        assert down.exit_code == 1 and server.count() == ROWS
        assert "error_http (HTTP 500): 3 rows, first " in down.stderr and ": HTTP 500: scripted 500" in down.stderr
        assert "error: 3 rows got no answer" in down.stderr and "rerun the same command" in down.stderr
        failed = {r["prompt"] for r in server.requests[:3]}
        up = teach(server, qa, out, "--retries", "0")
        assert up.exit_code == 0, up.output
        assert server.count() == ROWS + 3 and {r["prompt"] for r in server.requests[ROWS:]} == failed
        again = teach(server, qa, out)
        assert again.exit_code == 0 and server.count() == ROWS + 3  # answered rows are never asked again
        body = server.requests[0]["body"]
    assert (report(out)["cached"], report(out)["answered"], report(out)["failed"]) == (ROWS, 0, 0)
    assert report(out)["kept"] == ROWS  # the fake's conversations pass the gates
    db = sqlite3.connect(out / "cache.sqlite")
    assert db.execute("SELECT reason, status, message, tries FROM answers_failures").fetchall() == [
        ("error_http", 500, "HTTP 500: scripted 500", 1)] * 3
    assert db.execute("SELECT COUNT(*) FROM answers").fetchone() == (ROWS,)
    # the body the teacher sent before it shared the client, so the answers it cached then are found by key
    assert set(body) == {"model", "messages", "max_tokens", "temperature"}
    assert (body["max_tokens"], body["temperature"]) == (768, 0.2)


def test_max_tokens_param_is_named_by_the_hint_and_honoured(qa, tmp_path):
    out = tmp_path / "t"
    with FakeVLMServer(reply=conversation, refuse_params=("max_tokens",)) as server:
        refused = teach(server, qa, out, "--retries", "2")
        assert refused.exit_code == 1 and server.count() == ROWS  # a 400 is not retried
        assert ("(hint: the endpoint refuses max_tokens: use --max-tokens-param max_completion_tokens)"
                in refused.stderr)
        fixed = teach(server, qa, out, "--max-tokens-param", "max_completion_tokens", "--max-tokens", "300")
        assert fixed.exit_code == 0, fixed.output
        assert server.count() == 2 * ROWS and server.count(action="ok") == ROWS
        bodies = [r["body"] for r in server.requests[ROWS:]]
    assert all(b["max_completion_tokens"] == 300 and "max_tokens" not in b for b in bodies)
    assert report(out)["kept"] == ROWS and "max_completion_tokens = --max-tokens 300" in report(out)["decoding"]


def test_think_blocks_are_cut_and_reasoning_only_replies_asked_again(qa, tmp_path):
    flags = ["--no-temperature", "--extra-body", '{"reasoning_effort": "low"}']
    with FakeVLMServer(reply=conversation, default="think") as server:
        thought = teach(server, qa, tmp_path / "think", *flags)
        assert thought.exit_code == 0, thought.output
        body = server.requests[-1]["body"]
    assert report(tmp_path / "think")["kept"] == ROWS  # the JSON after the <think> block is what the gates read
    assert "temperature" not in body and body["reasoning_effort"] == "low"
    assert "the endpoint's default temperature (sampled)" in report(tmp_path / "think")["decoding"]
    with FakeVLMServer(reply=conversation, default="reasoning_only") as server:
        cut = teach(server, qa, tmp_path / "cut")
        assert cut.exit_code == 1 and "reasoning_only: 6 rows" in cut.stderr
        assert "(hint: reasoning counts against the token limit: raise --max-tokens)" in cut.stderr
        server.default = "ok"
        assert teach(server, qa, tmp_path / "cut").exit_code == 0 and server.count() == 2 * ROWS


@pytest.mark.parametrize("flags, message", [
    (["--no-temperature", "--timeout", "5"], "--timeout, --no-temperature: only for --endpoint runs"),
    (["--endpoint", "http://127.0.0.1:9/v1", "--temperature", "0.5", "--no-temperature"], "contradict each other"),
    (["--endpoint", "http://127.0.0.1:9/v1", "--extra-body", "[1]"], "--extra-body '[1]': expected a JSON object"),
])
def test_bad_endpoint_flags_are_one_clear_error(qa, tmp_path, flags, message, capsys):
    args = ["data", "teach", "--qa", str(qa), "--csv", str(SAMPLE_CSV), "--model", "m", "--out", str(tmp_path), *flags]
    assert app.run(args) == 2  # as the `dermvqa` command exits
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and not (tmp_path / "cache.sqlite").exists()
