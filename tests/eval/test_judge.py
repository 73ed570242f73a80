"""The swappable judge: strict verdict parsing, failures counted by reason, verdicts cached (a rerun sends no
judge request again), the rubric's hash in the manifest."""
import hashlib
import re

import pytest

from dermvqa.eval.judge import RUBRIC, Judge, judge_summary, parse_verdict, render
from tests.eval.conftest import DX
from tests.eval.fake_vlm_server import FakeVLMServer


@pytest.mark.parametrize("text, verdict", [
    ("The reply names the reference diagnosis.\nVERDICT: CORRECT", 1),
    ("Different diagnosis.\n\nVERDICT: INCORRECT\n", 0),
    ("VERDICT: CORRECT", 1),
    ("  VERDICT: INCORRECT  ", 0),
    ("Looks right.\nverdict: correct", None),            # the fixed format is upper case
    ("VERDICT: CORRECT.", None),
    ("**VERDICT: CORRECT**", None),
    ("VERDICT: CORRECT\nbecause it matches", None),       # not the last line
    ("Verdict: maybe\nVERDICT: CORRECT", None),           # two verdict lines
    ("VERDICT: INCORRECT\nVERDICT: CORRECT", None),
    ("VERDICT: PARTIALLY CORRECT", None),
    ("The answer is correct.", None),
    ("", None),
])
def test_verdict_is_parsed_strictly(text, verdict):
    assert parse_verdict(text) == verdict


def test_rubric_fields_are_filled_once():
    out = render("Q={{question}} R={{reference}} A={{reply}}", "what?", "melanoma", "not {{reference}}")
    assert out == "Q=what? R=melanoma A=not {{reference}}"


def fields(prompt: str) -> tuple[str, str]:
    """(reference, reply) read back from a rendered judge_v1 prompt, the way a judge model sees it."""
    m = re.search(r"Reference answer:\n(.*)\n\nModel answer:\n(.*)\n\nReply with", prompt, re.S)
    return m.group(1), m.group(2)


def fake_judge(prompt: str) -> str:
    """Exact match after lower-casing; a reply containing 'ramble' gets an answer outside the format."""
    reference, reply = fields(prompt)
    if "ramble" in reply:
        return "I would say it is mostly right."
    same = reply.strip().lower() == reference.strip().lower()
    return f"Compared the two.\nVERDICT: {'CORRECT' if same else 'INCORRECT'}"


PAIRS = [("What is the diagnosis?", "Melanoma", "melanoma"),
         ("What is the diagnosis?", "Psoriasis", "eczema"),
         ("Which site?", "the left forearm", "The left forearm"),
         ("Which colour?", "brown", "ramble on"),
         ("What is the diagnosis?", "Tinea corporis", "tinea corporis"),   # the server fails this one
         ("What is the diagnosis?", "Vitiligo", "")]                       # empty reply: incorrect, not sent


def test_verdicts_failures_and_cached_rerun(tmp_path):
    rubric = RUBRIC.read_text(encoding="utf-8")
    failing = render(rubric, *PAIRS[4])
    with FakeVLMServer({failing: ["500"] * 2}, reply=fake_judge, served_model="judge-7b") as server:
        judge = Judge(f"openai:judge@{server.url}", cache_dir=tmp_path, concurrency=3, max_retries=1, backoff_s=0.01)
        got = judge.verdicts(PAIRS)
        manifest = judge.manifest()
        judge.close()
        sent = server.count()
        assert got == [{"verdict": 1}, {"verdict": 0}, {"verdict": 1}, {"verdict": None, "failure": "unparsed"},
                       {"verdict": None, "failure": "error_http"}, {"verdict": 0}]
        assert sent == 4 + 2 and server.count(failing) == 2  # the empty reply was never sent
        assert all(r["body"]["temperature"] == 0 and isinstance(r["body"]["messages"][0]["content"], str)
                   for r in server.requests)
        summary = judge_summary(got)
        assert summary == {"items": 6, "judged": 4, "correct": 2, "failures": {"error_http": 1, "unparsed": 1},
                           "failure_share": round(2 / 6, 6)}

        again = Judge(f"openai:judge@{server.url}", cache_dir=tmp_path, max_retries=1, backoff_s=0.01)
        rerun = again.verdicts(PAIRS)
        again.close()
        assert server.count() - sent == 1 == server.count(failing) - 2  # only the failed verdict is asked again
        assert rerun[:4] == got[:4] and rerun[4] == {"verdict": 1}
    assert manifest["rubric_sha256"] == hashlib.sha256(RUBRIC.read_bytes()).hexdigest()
    assert manifest["rubric_version"] == "judge_v1" and manifest["served_model"] == "judge-7b"
    assert manifest["endpoint"] == server.url


def test_rubric_carries_the_format_the_parser_reads():
    rubric = RUBRIC.read_text(encoding="utf-8")
    assert parse_verdict(rubric.splitlines()[-2]) == 1 and parse_verdict(rubric.splitlines()[-1]) == 0
    assert all(f in rubric for f in ("{{question}}", "{{reference}}", "{{reply}}"))


def strict_judge(prompt: str) -> str:
    """Exact match, except that it rambles (outside the format) whenever the reference is 'nevus'."""
    reference, reply = fields(prompt)
    if reference == "nevus":
        return "Hard to say."
    return f"Checked.\nVERDICT: {'CORRECT' if reply.strip() == reference else 'INCORRECT'}"


def test_eval_with_judge_scores_open_items_and_reruns_free(qa_world, tmp_path):
    from dermvqa.eval.runner import run_eval

    model_says = {"What is the most likely diagnosis?": "melanoma"}
    with FakeVLMServer(reply=lambda p: model_says.get(p, "yes")) as model, \
            FakeVLMServer(reply=strict_judge, served_model="judge-served") as judge:
        run = lambda: run_eval(f"openai:vlm@{model.url}", f"qa:{qa_world}", tmp_path / "run", n_boot=50, plots=False,
                               judge=f"openai:judge@{judge.url}")
        m = run()
        sent = judge.count()
        again = run()
        assert judge.count() == sent > 0  # the rerun is judged from the cache
    references = [DX[i % 4] for i in range(12)]  # the world's open items: dx0..dx11, answer = their diagnosis
    judged = [r for r in references if r != "nevus"]
    want = judged.count("melanoma") / len(judged)
    items = references
    assert 0 < want < 1 and len(judged) < len(items)
    for run_name in ("image", "blind"):
        assert m["overall"][run_name]["judge_accuracy"]["value"] == pytest.approx(want)
        assert m["overall"][run_name]["judge_accuracy"]["n"] == len(judged)
        assert m["judge_failures"][run_name] == {"unparsed": len(items) - len(judged)}
        assert m["judge"][run_name]["failure_share"] == pytest.approx((len(items) - len(judged)) / len(items))
    assert "judge_accuracy" not in m["strata"].get("family", {}).get("yes_no", {}).get("image", {})
    assert m["judge"]["manifest"]["served_model"] == "judge-served"
    assert again["judge"] == m["judge"] and again["overall"] == m["overall"]
    report = (tmp_path / "run" / "report.md").read_text()
    assert "rubric judge_v1" in report and f"unparsed {len(items) - len(judged)}" in report
