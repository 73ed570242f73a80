"""`dermvqa eval --model openai:...` against a fake server that fails as real ones do: an outage's failures are
asked again by a rerun (and only they), refused parameters are named with the flag that changes them, content
parts, think blocks and reasoning fields are read, cut answers are counted, and a run whose answers mostly
failed says so on stdout and exits 1. Request counts are the server's own."""
import json
import sqlite3

import pytest
from PIL import Image
from typer.testing import CliRunner

from chat_endpoint.endpoint import EndpointError
from dermvqa.cli import app
from dermvqa.eval.backends.openai_chat import OpenAIChatAdapter
from dermvqa.eval.runner import run_eval
from tests.eval.fake_vlm_server import THOUGHT, FakeVLMServer, echo

FIRST_FOUR = ("yn0", "mc0", "dx0", "yn1")  # the first 4 questions of the qa_world benchmark, all distinct requests


def eval_cli(server, world, out, *flags, limit=4):
    """`dermvqa eval` on the first `limit` questions, no blind control, no retries unless `flags` say so."""
    args = ["eval", "--model", f"openai:test-model@{server.url}", "--bench", f"qa:{world}", "--out", str(out),
            "--limit", str(limit), "--no-blind", "--retries", "0", *flags]
    return CliRunner().invoke(app, args)


def rows(out) -> list[dict]:
    return [json.loads(line) for line in (out / "answers.jsonl").read_text().splitlines()]


def metrics(out) -> dict:
    return json.loads((out / "metrics.json").read_text())


def test_an_outage_is_asked_again_by_a_rerun_and_only_once_answered(qa_world, tmp_path):
    out = tmp_path / "run"
    with FakeVLMServer(fail_first=(4, "500")) as server:
        down = eval_cli(server, qa_world, out)
        assert down.exit_code == 1 and server.count() == 4
        assert "answer failures (scored wrong): image 4 of 4 (error_http 4)" in down.stdout
        assert "error_http: first at yn0 (image): HTTP 500: scripted 500" in down.stdout
        assert "error: 4 of 4 image answers failed (more than --max-failure-share 0.5)" in down.stderr
        up = eval_cli(server, qa_world, out)                      # the server recovered
        assert up.exit_code == 0, up.output
        assert server.count() == 8 and server.count(action="ok") == 4
        assert "answer failures" not in up.stdout
        info = json.loads((out / "run_info.json").read_text())
        assert (info["answered_now"], info["retried_failures"], info["resumed"]) == (4, 4, 0)
        again = eval_cli(server, qa_world, out)
        assert again.exit_code == 0 and server.count() == 8        # answered rows are never asked again
    assert metrics(out)["answer_failures"] == {"image": {}}
    logged = rows(out)
    assert [r["id"] for r in logged] == [*FIRST_FOUR, *FIRST_FOUR]    # the failed rows stay above their answers
    assert all(r["failure"] == "error_http" for r in logged[:4]) and not any("failure" in r for r in logged[4:])
    db = sqlite3.connect(out / "cache.sqlite")
    history = db.execute("SELECT reason, status, message, tries FROM answers_failures").fetchall()
    assert history == [("error_http", 500, "HTTP 500: scripted 500", 1)] * 4
    assert db.execute("SELECT COUNT(*) FROM answers").fetchone() == (4,)


def test_retries_within_a_run_then_after_recovery(qa_world, tmp_path):
    out = tmp_path / "run"
    with FakeVLMServer(fail_first=(9, "429")) as server:
        for n_requests, failed in ((9, 3), (12, 0), (12, 0)):
            model = OpenAIChatAdapter(f"openai:test-model@{server.url}", cache_dir=out, max_retries=2, backoff_s=0.01)
            m = run_eval(model, f"qa:{qa_world}", out, limit=3, blind=False, n_boot=20, plots=False)
            model.close()
            assert server.count() == n_requests                     # 3 questions x 3 tries, then 3 once
            assert sum(m["answer_failures"]["image"].values()) == failed
    assert [r.get("failure") for r in rows(out)] == ["error_http"] * 3 + [None] * 3


def test_refused_parameters_are_named_with_the_flag_that_changes_them(qa_world, tmp_path):
    with FakeVLMServer(refuse_params=("max_tokens", "temperature")) as server:
        allowed = eval_cli(server, qa_world, tmp_path / "a", "--allow-failures")
        assert allowed.exit_code == 0 and server.count() == 4          # a 400 is not retried
        assert ("HTTP 400: Unsupported parameter: 'max_tokens' is not supported with this model. Use "
                "'max_completion_tokens' instead. (hint: the endpoint refuses max_tokens: use --max-tokens-param "
                "max_completion_tokens)") in allowed.stdout
        refused = eval_cli(server, qa_world, tmp_path / "a")            # the same run, failures not accepted
        assert refused.exit_code == 1 and server.count() == 8
        param = eval_cli(server, qa_world, tmp_path / "b", "--max-tokens-param", "max_completion_tokens")
        assert param.exit_code == 1 and server.count() == 12
        assert "does not support 0 with this model" in param.stdout
        assert "hint: the endpoint refuses temperature 0: use --no-temperature" in param.stdout
        fixed = eval_cli(server, qa_world, tmp_path / "c", "--max-tokens-param", "max_completion_tokens",
                         "--no-temperature", "--extra-body", '{"reasoning_effort": "low"}', "--max-new-tokens", "9")
        assert fixed.exit_code == 0, fixed.output
        assert server.count() == 16 and server.count(action="ok") == 4
        bodies = [r["body"] for r in server.requests[-4:]]
    for body in bodies:
        assert body["max_completion_tokens"] == 9 and body["reasoning_effort"] == "low"
        assert "max_tokens" not in body and "temperature" not in body
    m = metrics(tmp_path / "c")
    assert m["answer_failures"] == {"image": {}}
    assert m["settings"]["decoding"] == "sampled (the endpoint's default temperature)"
    assert m["manifest"]["adapter"]["settings"] == {"temperature": "endpoint default",
                                                    "max_tokens_param": "max_completion_tokens",
                                                    "extra_body": {"reasoning_effort": "low"}}


@pytest.mark.parametrize("flags, message", [
    (["--extra-body", "[1]"], "--extra-body '[1]': expected a JSON object"),
    (["--extra-body", '{"temperature": 1}'], "--extra-body sets temperature, which dermvqa sets itself"),
    (["--max-tokens-param", "max_new_tokens"], "--max-tokens-param must be one of max_tokens, max_completion_tokens"),
])
def test_bad_request_options_are_one_clear_error(qa_world, tmp_path, flags, message):
    with FakeVLMServer() as server:
        result = eval_cli(server, qa_world, tmp_path / "run", *flags)
        assert result.exit_code == 2 and f"error: {message}" in result.stderr
        assert server.count() == 0 and not (tmp_path / "run" / "run.json").exists()


def test_content_parts_think_blocks_and_reasoning_fields_are_read(tmp_path):
    script = {"q-parts": ["parts"], "q-think": ["think"], "q-reasoning": ["reasoning"],
              "q-reasoning-only": ["reasoning_only"], "q-length": ["length"]}
    prompts = list(script)
    pics = [Image.new("RGB", (8, 8), (10 * i, 0, 0)) for i in range(len(prompts))]
    with FakeVLMServer(script) as server:
        model = OpenAIChatAdapter(f"openai:m@{server.url}", cache_dir=tmp_path, max_retries=5, backoff_s=0.01)
        first = dict(zip(prompts, model.generate(pics, prompts, 16)))
        model.close()
        assert {p: server.count(p) for p in prompts} == dict.fromkeys(prompts, 1)   # none sent again
        again = OpenAIChatAdapter(f"openai:m@{server.url}", cache_dir=tmp_path, max_retries=5, backoff_s=0.01)
        second = dict(zip(prompts, again.generate(pics, prompts, 16)))
        again.close()
        assert {p: server.count(p) for p in prompts} == {**dict.fromkeys(prompts, 1), "q-reasoning-only": 2}
    assert first["q-parts"] == {"reply": echo("q-parts"), "finish_reason": "stop"}
    for p in ("q-think", "q-reasoning"):
        assert first[p] == {"reply": echo(p), "finish_reason": "stop", "thinking": THOUGHT}
    assert first["q-length"] == {"reply": echo("q-length"), "finish_reason": "length"}
    only = first["q-reasoning-only"]
    assert only["failure"] == "reasoning_only" and only["reply"] == "" and only["thinking"] == THOUGHT
    assert "token limit ran out" in only["error"] and "--max-new-tokens" in only["hint"]
    assert second.pop("q-reasoning-only") == {"reply": echo("q-reasoning-only"), "finish_reason": "stop"}
    del first["q-reasoning-only"]
    assert second == first                                      # cached answers keep their thinking and finish


def test_cut_and_reasoning_only_answers_are_counted_on_stdout_and_in_the_report(qa_world, tmp_path):
    with FakeVLMServer(default="length") as server:
        cut = eval_cli(server, qa_world, tmp_path / "cut", "--max-new-tokens", "5")
        assert cut.exit_code == 0 and server.count() == 4
    line = "Answers cut at the token limit (finish_reason length, max 5 new tokens): image 4 of 4."
    assert line in cut.stdout and f"- {line}" in (tmp_path / "cut" / "report.md").read_text()
    assert metrics(tmp_path / "cut")["finish_reasons"] == {"image": {"length": 4}}
    assert [r["finish_reason"] for r in rows(tmp_path / "cut")] == ["length"] * 4
    with FakeVLMServer(default="reasoning_only") as server:
        thought = eval_cli(server, qa_world, tmp_path / "thought", limit=2)
        assert thought.exit_code == 1 and server.count() == 2
    assert "image 2 of 2 (reasoning_only 2)" in thought.stdout
    assert "(hint: reasoning counts against the token limit: raise --max-new-tokens)" in thought.stdout


def test_timeout_and_retries_come_from_the_command_line(qa_world, tmp_path):
    out = tmp_path / "run"
    with FakeVLMServer(fail_first=(2, "timeout"), timeout_sleep_s=0.6) as server:
        slow = eval_cli(server, qa_world, out, "--timeout", "0.2", limit=2)
        assert slow.exit_code == 1 and server.count() == 2
        assert "error_timeout: first at yn0 (image): no reply within --timeout 0.2 s" in slow.stdout
        options = json.loads((out / "run_info.json").read_text())["backend_options"]
        assert (options["timeout_s"], options["max_retries"]) == (0.2, 0)
        patient = eval_cli(server, qa_world, out, "--timeout", "5", "--retries", "1", limit=2)  # same --out
        assert patient.exit_code == 0, patient.output
        assert server.count() == 4 and server.count(action="ok") == 2


def test_a_few_failures_are_shown_and_the_threshold_decides_the_exit_code(qa_world, tmp_path):
    for share, code in (("0.5", 0), ("0.2", 1)):
        with FakeVLMServer(fail_first=(1, "500")) as server:
            result = eval_cli(server, qa_world, tmp_path / share, "--concurrency", "1", "--max-failure-share", share,
                              limit=3)
            assert result.exit_code == code and server.count() == 3
        assert "answer failures (scored wrong): image 1 of 3 (error_http 1)" in result.stdout
        assert ("1 of 3 image answers failed (more than --max-failure-share 0.2)" in result.stderr) == bool(code)


def test_a_refused_run_leaves_no_run_json(qa_world, tmp_path):
    out = tmp_path / "run"
    with FakeVLMServer() as server:
        spec = f"openai:m@{server.url}"
        with pytest.raises(ValueError, match="--mode likelihood: the openai: backend gives no option likelihood"):
            run_eval(spec, f"qa:{qa_world}", out, limit=2, mode="likelihood", plots=False)
        assert not (out / "run.json").exists() and not (out / "adapter_manifest.json").exists()
        m = run_eval(spec, f"qa:{qa_world}", out, limit=2, blind=False, n_boot=20, plots=False)  # not refused
        assert m["benchmark"]["items_scored"] == 2 and server.count() == 2
        url = server.url
    with pytest.raises(EndpointError, match="cannot reach"):
        run_eval(f"openai:m@{url}", f"qa:{qa_world}", tmp_path / "down", limit=2, plots=False)
    assert not (tmp_path / "down" / "run.json").exists()
