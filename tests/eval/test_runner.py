import json

import pytest

from dermvqa.eval import run_eval
from dermvqa.eval.backends.base import ModelAdapter
from dermvqa.eval.loaders import load_bench

FAST = dict(max_new_tokens=6, n_boot=50, plots=False)


def answers(out):
    rows = [json.loads(line) for line in (out / "answers.jsonl").read_text().splitlines()]
    return {(r["id"], r["blind"]): r for r in rows}


def run_info(out):
    return json.loads((out / "run_info.json").read_text())


def test_batched_answers_equal_batch_one(varied_model_dir, qa_world, tmp_path):
    spec = f"qa:{qa_world}"
    run_eval(varied_model_dir, spec, tmp_path / "b1", batch_size=1, limit=9, **FAST)
    run_eval(varied_model_dir, spec, tmp_path / "b4", batch_size=4, limit=9, **FAST)
    one, four = answers(tmp_path / "b1"), answers(tmp_path / "b4")
    assert len(one) == 18                                     # 9 questions with image + 9 blind
    assert {k: r["reply"] for k, r in one.items()} == {k: r["reply"] for k, r in four.items()}
    replies = [r["reply"] for r in one.values()]
    assert len(set(replies)) > 5 and all(replies)             # varied, non-empty: the comparison can fail
    assert one[("mc0", False)]["reply"] != one[("mc0", True)]["reply"]   # the blank image changes the answer


def test_resume_skips_finished_ids(varied_model_dir, qa_world, tmp_path):
    spec, out = f"qa:{qa_world}", tmp_path / "run"
    run_eval(varied_model_dir, spec, out, batch_size=4, limit=4, blind=False, **FAST)
    first = answers(out)
    assert len(first) == 4 and run_info(out)["answered_now"] == 4
    with open(out / "answers.jsonl", "a") as f:
        f.write('{"id": "mc1", "bli')                         # a write cut short by a kill
    m = run_eval(varied_model_dir, spec, out, batch_size=4, limit=6, blind=False, **FAST)
    info = run_info(out)
    assert info == {**info, "answered_now": 2, "resumed": 4, "dropped_partial_line": True}
    assert len((out / "answers.jsonl").read_text().splitlines()) == 6
    assert all(answers(out)[k] == v for k, v in first.items())
    assert m["benchmark"]["items_scored"] == 6
    run_eval(varied_model_dir, spec, out, batch_size=4, limit=6, blind=False, **FAST)
    assert run_info(out)["answered_now"] == 0 and run_info(out)["device"] is None   # model not even loaded


def test_other_settings_into_same_folder_are_refused(varied_model_dir, qa_world, tmp_path):
    run_eval(varied_model_dir, f"qa:{qa_world}", tmp_path, limit=2, blind=False, **FAST)
    with pytest.raises(ValueError, match="other settings .*mode"):
        run_eval(varied_model_dir, f"qa:{qa_world}", tmp_path, limit=2, blind=False, mode="likelihood", **FAST)


def test_corrupt_middle_line_is_an_error(varied_model_dir, qa_world, tmp_path):
    run_eval(varied_model_dir, f"qa:{qa_world}", tmp_path, limit=2, blind=False, **FAST)
    lines = (tmp_path / "answers.jsonl").read_text().splitlines()
    (tmp_path / "answers.jsonl").write_text("\n".join(["{oops", *lines]) + "\n")
    with pytest.raises(ValueError, match="answers.jsonl: line 1 is not valid JSON"):
        run_eval(varied_model_dir, f"qa:{qa_world}", tmp_path, limit=2, blind=False, **FAST)


def test_likelihood_mode_picks_the_argmax_and_calibrates(varied_model_dir, qa_world, tmp_path):
    m = run_eval(varied_model_dir, f"qa:{qa_world}", tmp_path, batch_size=4, mode="likelihood", gap_min_n=3,
                 **FAST)
    rows = answers(tmp_path)
    closed = [r for r in rows.values() if "probs" in r]
    assert len(closed) == 2 * 24                              # yes/no + multiple choice, image and blind
    for r in closed:
        opts = ["yes", "no"] if r["id"].startswith("yn") else ["psoriasis", "eczema", "melanoma", "nevus"]
        assert sum(r["probs"]) == pytest.approx(1.0) and r["reply"] == opts[r["probs"].index(max(r["probs"]))]
    assert all("probs" not in r and r["reply"] for k, r in rows.items() if k[0].startswith("dx"))
    cal = m["calibration"]["image"]
    assert cal["n"] == 24 and 0 <= cal["ece"] <= 1
    gap = m["fitzpatrick_gap"]["image"]["accuracy"]
    assert set(gap["n"]) == {"1", "2", "3"} and gap["gap"] >= 0


class FailingAdapter(ModelAdapter):
    """A backend that answers each item's gold answer (items come in the runner's order, `ids`), except the
    items FAILURE_RULE fails."""
    kind = "fake"

    def __init__(self, spec, **_):
        self.spec, self.gold = spec, {it.id: it.gold for it in load_bench(spec.removeprefix("fake:")).items}

    def generate(self, images, questions, max_new_tokens):
        rows = []
        for _ in questions:
            item_id = FailingAdapter.ids.pop(0)
            reason = FAILURE_RULE(item_id)
            rows.append({"reply": "", "failure": reason} if reason else {"reply": self.gold[item_id]})
        return rows

    def manifest(self):
        return {"kind": self.kind, "spec": self.spec}


def FAILURE_RULE(item_id):                                       # noqa: N802 - a stand-in rule
    n = int(item_id[2:])
    return {0: "refused", 1: "error_timeout"}.get(n % 4) if item_id.startswith("mc") else None


def test_failed_answers_are_logged_counted_and_scored_wrong(qa_world, tmp_path, monkeypatch):
    from dermvqa.eval import backends

    monkeypatch.setitem(backends.ADAPTERS, "fake", (__name__, "FailingAdapter"))
    monkeypatch.setitem(backends.ADAPTER_OPTIONS, "fake", ())
    spec = f"qa:{qa_world}"
    items = [it for it in load_bench(spec).items if it.id != "gone"]
    FailingAdapter.ids = [it.id for it in items] * 2              # answer order: image pass, then blind pass
    m = run_eval(f"fake:{spec}", spec, tmp_path, batch_size=5, n_boot=20, plots=False)
    rows = answers(tmp_path)
    failed = {k: r for k, r in rows.items() if "failure" in r}
    expected = [it.id for it in items if FAILURE_RULE(it.id)]
    assert sorted(k[0] for k in failed if not k[1]) == sorted(expected) and all(r["reply"] == "" for r in failed.values())
    counts = {"refused": sum(FAILURE_RULE(i) == "refused" for i in expected),
              "error_timeout": sum(FAILURE_RULE(i) == "error_timeout" for i in expected)}
    assert m["answer_failures"] == {"image": counts, "blind": counts} and sum(counts.values()) == 6
    closed = [it for it in items if it.answer_type == "closed"]
    right = sum(not FAILURE_RULE(it.id) for it in closed)        # every other answer is the gold option
    assert m["overall"]["image"]["accuracy"]["value"] == pytest.approx(right / len(closed))
    assert "image error_timeout 3, refused 3; blind error_timeout 3, refused 3" in (tmp_path / "report.md").read_text()
