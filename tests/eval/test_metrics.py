import math

import pytest

from dermvqa.eval.items import Bench, EvalItem
from dermvqa.eval.metrics import TextScorer, calibration, llava_med_open_recall, token_recall_f1
from dermvqa.eval.summary import build_metrics


@pytest.fixture(scope="module")
def scorer():
    return TextScorer()


def test_token_recall_and_f1_by_hand():
    # pred tokens {red, scaly, plaque}; ref {red, plaque, on, elbow} after dropping "the": 2 shared
    recall, f1 = token_recall_f1("the red scaly plaque", "red plaque on the elbow")
    assert recall == pytest.approx(2 / 4)
    assert f1 == pytest.approx(2 * (2 / 3) * (1 / 2) / (2 / 3 + 1 / 2))
    assert token_recall_f1("", "red plaque") == (0.0, 0.0)


def test_llava_med_open_recall_counts_distinct_words():
    assert llava_med_open_recall("red plaque", "red red plaque") == pytest.approx(1.0)
    assert token_recall_f1("red plaque", "red red plaque")[0] == pytest.approx(2 / 3)


def test_bleu_rouge_exact_match_by_hand(scorer):
    s = scorer.open_scores("the cat sat", ["the cat sat on the mat"], gold="")
    # every hypothesis n-gram matches; brevity penalty exp(1 - 6/3)
    for n in (1, 2, 3):
        assert s[f"bleu{n}"] == pytest.approx(math.exp(-1), abs=1e-6)
    assert s["rougeL"] == pytest.approx(2 * 1 * 0.5 / 1.5)          # LCS 3 of 3 (P=1) and of 6 (R=.5)
    assert s["exact_match"] == 0.0
    same = scorer.open_scores("the cat sat on the mat", ["the cat sat on the mat"], gold="")
    assert same["bleu4"] == pytest.approx(1.0) and same["rougeL"] == pytest.approx(1.0)
    assert scorer.open_scores("The Psoriasis.", ["psoriasis"], gold="psoriasis")["exact_match"] == 1.0


def test_several_references_take_the_best(scorer):
    s = scorer.open_scores("red plaque", ["blue nodule", "red plaque"], gold="")
    assert s["rougeL"] == pytest.approx(1.0) and s["token_f1"] == pytest.approx(1.0)


def test_closed_scoring_and_llava_med_rule(scorer):
    yn = EvalItem("q", [], "Is this psoriasis?", ["..."], "closed", options=["yes", "no"], answer_index=0)
    assert scorer.score(yn, "Yes, it is") == ({"accuracy": 1.0, "llava_med_closed": 1.0, "unparsed": 0.0}, 0)
    assert scorer.score(yn, "The lesion looks like eczema, not psoriasis. Answer: no.")[0]["accuracy"] == 0.0
    no = EvalItem("q", [], "Is this psoriasis?", ["..."], "closed", options=["yes", "no"], answer_index=1)
    # LLaVA-Med's substring rule counts "no" inside "Not sure" as a hit; our parser does not
    assert scorer.score(no, "Not sure") == ({"accuracy": 0.0, "llava_med_closed": 1.0, "unparsed": 1.0}, None)
    free = EvalItem("q", [], "Which organ is abnormal?", ["liver"], "closed", label="liver")
    # closed without options: normalised exact match of the reply's answer, not a substring anywhere (no option
    # set, so nothing to be unparsed against)
    assert scorer.score(free, "The liver.")[0]["accuracy"] == 1.0
    assert scorer.score(free, "Answer: liver")[0]["accuracy"] == 1.0
    assert scorer.score(free, "The liver is.")[0]["accuracy"] == 0.0
    assert scorer.score(free, "lung, liver, heart")[0] == {"accuracy": 0.0, "llava_med_closed": 1.0}


def test_chinese_open_answers_are_scored_per_character(scorer):
    s = scorer.open_scores("肝脏", ["肝脏"], gold="肝脏")
    assert [s[k] for k in ("exact_match", "token_f1", "rougeL", "bleu1")] == pytest.approx([1.0] * 4)
    half = scorer.open_scores("肝", ["肝脏"], gold="肝脏")
    assert half["token_recall"] == pytest.approx(0.5) and half["rougeL"] == pytest.approx(2 / 3)
    assert half["exact_match"] == 0.0 and 0 < half["bleu1"] < 1


def test_chat_formatted_commitments_parse_and_non_commitments_stay_unparsed(scorer):
    """Hosted and hf chat models wrap the letter they commit to in Markdown or LaTeX; that is still a choice.
    Replies naming no option or two stay unparsed (wrong), never a guessed option."""
    mc = EvalItem("q", [], "Which? A. psoriasis B. eczema C. melanoma", ["eczema"], "closed",
                  options=["psoriasis", "eczema", "melanoma"], answer_index=1)
    for reply in ("**B**", "**Answer:** B", "Answer: **B**", "The answer is: B", "\\boxed{B}", "`B. eczema`",
                  "The most likely diagnosis is *eczema*."):
        scores, pick = scorer.score(mc, reply)
        assert (pick, scores["accuracy"], scores["unparsed"]) == (1, 1.0, 0.0), reply
    assert scorer.score(mc, "**C**")[0]["accuracy"] == 0.0 and scorer.score(mc, "**C**")[1] == 2
    for reply in ("**A** or **B**", "psoriasis, eczema", "I cannot tell.", ""):
        scores, pick = scorer.score(mc, reply)
        assert pick is None and scores["accuracy"] == 0.0 and scores["unparsed"] == 1.0, reply
    yn = EvalItem("q", [], "Is this eczema?", ["yes"], "closed", options=["yes", "no"], answer_index=0)
    assert scorer.score(yn, "**Answer:** Yes.")[1] == 0 and scorer.score(yn, "**No**")[1] == 1


class _Log:
    def __init__(self, rows):
        self.rows = rows

    def get(self, item_id, blind):
        return self.rows[item_id] if not blind else None


def test_unparsed_share_overall_and_per_family_never_a_guess():
    mc = ["psoriasis", "eczema", "melanoma"]
    cases = [  # (id, family, options, gold index, answer row, names exactly one option)
        ("yn0", "yes_no", ["yes", "no"], 0, {"reply": "Yes."}, True),
        ("yn1", "yes_no", ["yes", "no"], 0, {"reply": "It is hard to say."}, False),
        ("yn2", "yes_no", ["yes", "no"], 1, {"reply": "", "failure": "error_http"}, False),
        ("yn3", "yes_no", ["yes", "no"], 1, {"reply": "No"}, True),
        ("mc0", "multiple_choice", mc, 1, {"reply": "B"}, True),
        ("mc1", "multiple_choice", mc, 0, {"reply": "psoriasis or eczema"}, False),
        ("mc2", "multiple_choice", mc, 2, {"reply": "I cannot tell from this photo."}, False),
        ("mc3", "multiple_choice", mc, 1, {"reply": "The skin shows eczema and scale. Answer: scale."}, False),
    ]
    items = [EvalItem(i, [], "q?", [o[g]], "closed", options=o, answer_index=g, family=f, source="s")
             for i, f, o, g, _, _ in cases]
    items.append(EvalItem("op0", [], "What is it?", ["psoriasis"], "open", label="psoriasis", family="diagnosis"))
    log = _Log({i: row for i, _, _, _, row, _ in cases} | {"op0": {"reply": "psoriasis"}})
    m = build_metrics(Bench("qa", "qa:x", items), items, {}, log, {"model": "m"}, blind=False, n_boot=20)
    unparsed = [c for c in cases if not c[5]]
    assert m["unparsed_closed_replies"] == {"image": len(unparsed)}
    assert m["unparsed_reasons"] == {"image": {"answer_failed": 1, "no_verdict": 1, "not_an_option": 2,
                                               "several_options": 1}}
    overall = m["overall"]["image"]
    assert overall["unparsed"]["value"] == pytest.approx(len(unparsed) / len(cases)) and overall["unparsed"]["n"] == 8
    for fam in ("yes_no", "multiple_choice"):
        in_family = [c for c in cases if c[1] == fam]
        share = sum(not c[5] for c in in_family) / len(in_family)
        assert m["strata"]["family"][fam]["image"]["unparsed"]["value"] == pytest.approx(share)
    # every unparsed reply scores wrong: accuracy counts only the parsed, correct ones (yn0, yn3, mc0)
    assert overall["accuracy"]["value"] == pytest.approx(3 / 8)
    assert "unparsed" not in m["strata"]["family"]["diagnosis"]["image"]


def test_meteor_left_out_when_unavailable(scorer, monkeypatch):
    monkeypatch.setattr(scorer, "meteor_missing", "no WordNet")
    assert "meteor" not in scorer.open_scores("red plaque", ["red plaque"], gold="")


def test_expected_calibration_error_by_hand():
    c = calibration([0.95, 0.85, 0.62, 0.55], [1, 0, 1, 1])
    assert c["ece"] == pytest.approx((0.05 + 0.85 + 0.38 + 0.45) / 4)
    assert [b["n"] for b in c["bins"]] == [1, 1, 1, 1]
    one_bin = calibration([0.71, 0.79], [1, 0])
    assert one_bin["ece"] == pytest.approx(0.25) and one_bin["bins"][0]["confidence"] == pytest.approx(0.75)
    assert calibration([1.0], [1])["ece"] == pytest.approx(0.0)
