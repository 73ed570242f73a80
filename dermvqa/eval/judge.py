"""`--judge openai:MODEL@URL`: an LLM judge scores open answers against the reference with a fixed rubric.

The rubric is a versioned file in the repo (dermvqa/eval/rubrics/judge_v1.md; its sha256 goes into the
manifest), filled with the question, the reference and the model's reply, and sent as one text-only user
message at temperature 0 through the same endpoint client as the `openai:` backend (retries, counted
failures). The verdict is read strictly: the reply's last non-empty line must be exactly `VERDICT: CORRECT` or
`VERDICT: INCORRECT`, and no other line may start like a verdict (`Verdict:`, `**VERDICT**:`); anything else
is the failure "unparsed". A failure is counted by reason and left out of the judge's accuracy, never guessed. Judge replies are cached
like answers (table `verdicts` of the same SQLite file), so a rerun sends no judge request again; an
unparsed reply is cached too (it was paid for, and temperature 0 would repeat it).
An empty model reply is incorrect without asking the judge.
"""
from __future__ import annotations

import hashlib
import re
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from dermvqa.eval.backends.openai_chat import ChatEndpoint

RUBRIC = Path(__file__).with_name("rubrics") / "judge_v1.md"
RUBRIC_VERSION = "judge_v1"
JUDGE_MAX_TOKENS = 256
VERDICT_LINE = re.compile(r"VERDICT: (CORRECT|INCORRECT)")
VERDICT_START = re.compile(r"\W*verdict\W*:", re.IGNORECASE)  # any line that tries to give a verdict
FIELDS = ("{{question}}", "{{reference}}", "{{reply}}")


def parse_verdict(text: str) -> int | None:
    """1 (correct), 0 (incorrect) or None when the reply breaks the fixed format."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    verdicts = [line for line in lines if VERDICT_START.match(line)]
    if not lines or len(verdicts) != 1 or verdicts[0] != lines[-1]:
        return None
    match = VERDICT_LINE.fullmatch(lines[-1])
    return None if match is None else int(match.group(1) == "CORRECT")


def render(rubric: str, question: str, reference: str, reply: str) -> str:
    """The rubric with its three fields filled in one pass (a reply quoting `{{reference}}` stays as written)."""
    values = dict(zip(FIELDS, (question, reference, reply)))
    return re.sub("|".join(re.escape(f) for f in FIELDS), lambda m: values[m.group(0)], rubric)


def judge_summary(verdicts: list[dict]) -> dict:
    """Counts for the report: judged, correct, failures by reason and their share of the judged items."""
    failures = Counter(v["failure"] for v in verdicts if v["verdict"] is None)
    judged = [v["verdict"] for v in verdicts if v["verdict"] is not None]
    return {"items": len(verdicts), "judged": len(judged), "correct": sum(judged),
            "failures": dict(sorted(failures.items())),
            "failure_share": round(sum(failures.values()) / len(verdicts), 6) if verdicts else 0.0}


class Judge:
    def __init__(self, spec: str, api_key_env: str | None = None, concurrency: int = 4, cache_dir=None,
                 timeout: float = 60.0, max_retries: int = 5, backoff_s: float = 1.0):
        if concurrency < 1:
            raise ValueError(f"judge concurrency must be at least 1, got {concurrency}")
        self.spec, self.concurrency = spec, concurrency
        self.rubric_text = RUBRIC.read_text(encoding="utf-8")
        missing = [f for f in FIELDS if f not in self.rubric_text]
        if missing:
            raise ValueError(f"{RUBRIC}: the rubric lacks {', '.join(missing)}")
        self.endpoint = ChatEndpoint(spec, api_key_env, timeout, max_retries, cache_dir, "verdicts", backoff_s)
        self.pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="judge")

    def _verdict(self, question: str, reference: str, reply: str) -> dict:
        if not reply.strip():
            return {"verdict": 0}
        prompt = render(self.rubric_text, question, reference, reply)
        row = self.endpoint.ask(prompt, prompt, "", JUDGE_MAX_TOKENS)
        if "failure" in row:
            return {"verdict": None, "failure": row["failure"]}
        verdict = parse_verdict(row["reply"])
        return {"verdict": verdict} if verdict is not None else {"verdict": None, "failure": "unparsed"}

    def verdicts(self, pairs: list[tuple[str, str, str]]) -> list[dict]:
        """One {"verdict": 1|0} or {"verdict": None, "failure": reason} per (question, reference, reply)."""
        jobs = [self.pool.submit(self._verdict, q, ref, reply) for q, ref, reply in pairs]
        return [job.result() for job in jobs]

    def manifest(self) -> dict:
        return {"spec": self.spec, "endpoint": self.endpoint.url, "requested_model": self.endpoint.model,
                "served_model": self.endpoint.served_model(), "rubric": f"dermvqa/eval/rubrics/{RUBRIC.name}",
                "rubric_version": RUBRIC_VERSION, "rubric_sha256": hashlib.sha256(RUBRIC.read_bytes()).hexdigest(),
                "max_tokens": JUDGE_MAX_TOKENS, "settings": {**self.endpoint.settings(),
                                                              "concurrency": self.concurrency}}

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
        self.endpoint.close()


def judge_run(spec: str, items, log, blind: bool, cache_dir, api_key_env: str | None = None,
              concurrency: int = 4) -> tuple[dict, dict]:
    """Judge the open items' logged replies (with image, and blind): ({(id, blind): 1|0} for the judged ones,
    metrics.json's "judge" entry: manifest and counts per run)."""
    from dermvqa.eval.items import CLOSED

    open_items = [it for it in items if it.answer_type != CLOSED]
    judge = Judge(spec, api_key_env, concurrency, cache_dir)
    try:
        verdicts, counts = {}, {}
        for run, is_blind in [("image", False)] + ([("blind", True)] if blind else []):
            pairs = [(it.question, "\n".join(it.references) or it.gold, log.get(it.id, is_blind)["reply"])
                     for it in open_items]
            got = judge.verdicts(pairs)
            verdicts |= {(it.id, is_blind): v["verdict"] for it, v in zip(open_items, got) if v["verdict"] is not None}
            counts[run] = judge_summary(got)
        return verdicts, {"manifest": judge.manifest(), **counts}
    finally:
        judge.close()


def judge_line(entry: dict) -> str:
    """report.md's account of the judge: who judged with which rubric, and what it could not judge."""
    man = entry["manifest"]
    runs = "; ".join(f"{run}: judged {c['judged']} of {c['items']} open answers, failures "
                     + (", ".join(f"{k} {n}" for k, n in c["failures"].items()) or "none")
                     + f" (share {c['failure_share']:.3f})" for run, c in entry.items() if run != "manifest")
    return (f"Judge {man['requested_model']} (served as {man['served_model']}) at {man['endpoint']}, rubric "
            f"{man['rubric_version']} (sha256 {man['rubric_sha256'][:12]}): {runs}. judge_accuracy is the share "
            "judged correct among the judged answers; failures are left out of it, never guessed.")
