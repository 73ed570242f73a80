"""dermvqa.bench.dpo on hand-made QA records and answers.jsonl (no model, no training): its own figures
(dermvqa.bench.dpo_figures: melanoma recall, the sibling share of wrong diagnoses, balanced accuracy, ECE and
Brier) equal a computation by hand; the verdict rule; a missing run folder is a one-line error."""
import json

import pytest

from dermvqa.bench import dpo as bench
from dermvqa.bench import dpo_figures
from dermvqa.eval.compare import StoredAnswers

MEL, NEV, BCC = "Malignant melanoma, melanoma", "Melanocytic nevus", "Basal cell carcinoma"
PSO, ECZ, TINEA = "Psoriasis", "Eczema", "Tinea corporis"
PATHS = {MEL: ("proliferations", "malignant", "melanocytic", MEL),   # nevus and melanoma: siblings under the one
         NEV: ("proliferations", "benign", "melanocytic", NEV),      # `melanocytic` of the flat ontology.json
         BCC: ("proliferations", "malignant", "non-melanocytic", BCC),
         PSO: ("inflammatory", "non-infectious", PSO), ECZ: ("inflammatory", "non-infectious", ECZ),
         TINEA: ("inflammatory", "infectious", "fungal", TINEA)}
# id: (gold, stage-2 reply, DPO reply) for the open diagnosis question
DIAGNOSIS = {"d1": (MEL, NEV, "Malignant melanoma"),   # stage 2: sibling; DPO: a synonym of the label, melanoma
             "d2": (MEL, MEL, "melanoma."),
             "d3": (MEL, BCC, NEV),                     # stage 2: cousin, not a sibling; DPO: sibling
             "d4": (NEV, NEV, MEL),                     # DPO: sibling
             "d5": (PSO, ECZ, PSO),                     # stage 2: sibling
             "d6": (ECZ, "a red rash", ECZ),            # stage 2: names no diagnosis (not among the wrong named)
             "d7": (BCC, TINEA, BCC),                   # stage 2: another group (Tinea is a train-split label only)
             "d8": (PSO, PSO, TINEA)}                   # DPO: cousin
# id: (options, gold index, stage-2 probabilities, DPO probabilities) for closed questions in likelihood mode
CLOSED = {"y1": (["yes", "no"], 0, [0.8, 0.2], [0.9, 0.1]),
          "y2": (["yes", "no"], 1, [0.6, 0.4], [0.3, 0.7]),
          "m1": ([MEL, NEV, PSO, ECZ], 2, [0.1, 0.2, 0.6, 0.1], [0.0, 0.1, 0.9, 0.0])}


def record(rid, family, label, path, split="test", options=(), answer_index=-1):
    return {"id": rid, "family": family, "label": label, "ontology_path": list(path), "split": split,
            "options": list(options), "answer_index": answer_index}


def records():
    out = [record(i, "diagnosis", gold, PATHS[gold]) for i, (gold, _, _) in DIAGNOSIS.items()]
    out.append(record("t1", "diagnosis", TINEA, PATHS[TINEA], split="train"))
    out += [record(i, "yes_no" if i[0] == "y" else "multiple_choice", opts[gold], PATHS[PSO], options=opts,
                   answer_index=gold) for i, (opts, gold, _, _) in CLOSED.items()]
    return out


def write_answers(folder, rows):
    folder.mkdir(parents=True)
    (folder / "answers.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return folder


def test_own_figures_equal_hand_computation(tmp_path):
    answers = {}
    for k, model in enumerate(dpo_figures.MODELS):
        generate = [{"id": i, "blind": False, "reply": replies[k]} for i, (_, *replies) in DIAGNOSIS.items()]
        likelihood = [{"id": i, "blind": False, "reply": opts[max(range(len(opts)), key=p[k].__getitem__)],
                       "probs": p[k]} for i, (opts, _, *p) in CLOSED.items()]
        answers[model] = {"generate": StoredAnswers(write_answers(tmp_path / f"{model}_g", generate)).rows,
                          "likelihood": StoredAnswers(write_answers(tmp_path / f"{model}_l", likelihood)).rows}
    figs = dpo_figures.own_figures(records(), answers, n_boot=200, seed=0)

    # melanoma recall: d1-d3 are melanoma; stage 2 names melanoma on d2 only, DPO on d1 and d2
    # sibling share: stage 2 wrong named d1 (sib), d3, d5 (sib), d7 -> 2/4; DPO d3 (sib), d4 (sib), d8 -> 2/3
    # balanced accuracy over the five gold classes: stage 2 mel 1/3, nev 1, pso 1/2, ecz 0, bcc 0; DPO 2/3, 0, 1/2, 1, 1
    # Brier, sum over options of (p - 1[gold])^2: stage 2 y1 .08, y2 .72, m1 .22; DPO .02, .18, .02
    # ECE, 10 bins: stage 2 confidences .8 (right), .6 (wrong), .6 (right): 1/3 |1 - .8| + 2/3 |.5 - .6|;
    #   DPO .9 (right), .7 (right), .9 (right): 2/3 |1 - .9| + 1/3 |1 - .7|
    expected = {"melanoma_recall": (1 / 3, 2 / 3), "sibling_share": (2 / 4, 2 / 3),
                "balanced_accuracy": ((1 / 3 + 1 + 1 / 2) / 5, (2 / 3 + 1 / 2 + 1 + 1) / 5),
                "brier": ((0.08 + 0.72 + 0.22) / 3, (0.02 + 0.18 + 0.02) / 3),
                "ece": (0.2 / 3 + 0.1 * 2 / 3, 0.1 * 2 / 3 + 0.3 / 3)}
    for key, (s2, dpo) in expected.items():
        f = figs[key]
        assert f["stage2"]["value"] == pytest.approx(s2) and f["dpo"]["value"] == pytest.approx(dpo), key
        assert f["paired"]["diff"] == pytest.approx(dpo - s2), key
        for m in ("stage2", "dpo"):
            assert f[m]["ci"][0] <= f[m]["value"] + 1e-9 and f[m]["value"] <= f[m]["ci"][1] + 1e-9, (key, m)
    assert [figs["sibling_share"][m]["n"] for m in ("stage2", "dpo")] == [4, 3]  # wrong answers naming a diagnosis
    assert figs["melanoma_recall"]["paired"]["mcnemar"] == {"baseline_only_right": 0, "other_only_right": 1, "p": 1.0}
    assert figs["items"] == {"diagnosis": 8, "melanoma": 3, "closed_with_probs": 3}

    figs |= {k: {"stage2": None, "dpo": None, "paired": None} for k in ("closed_accuracy", "open_exact_match",
                                                                        "blind_closed_accuracy")}
    text = bench.table(figs)
    assert "| melanoma recall | ↑ | 3/3 | 0.333 [" in text
    assert "| sibling share of wrong diagnoses | ↓ | 4/3 | 0.500 [" in text


def test_verdict_rule():
    def figs(mel, sib, acc):
        return {"melanoma_recall": {"paired": {"ci": mel}}, "sibling_share": {"paired": {"ci": sib}},
                "closed_accuracy": {"paired": {"ci": acc}}}
    assert bench.verdict(figs([0.01, 0.2], [-0.1, 0.1], [-0.05, 0.02]))[0]       # recall up, accuracy holds
    assert bench.verdict(figs([-0.1, 0.2], [-0.3, -0.01], [-0.05, 0.0]))[0]      # sibling share down
    assert not bench.verdict(figs([0.01, 0.2], [-0.3, -0.01], [-0.05, -0.01]))[0]  # accuracy drops
    assert not bench.verdict(figs([-0.1, 0.2], [-0.1, 0.1], [0.01, 0.05]))[0]     # nothing improves


def test_missing_run_folder_is_an_error(tmp_path, capsys):
    assert bench.main(["--run", str(tmp_path / "nope"), "--dataset", "synthetic", "--out", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [f"error: --run {tmp_path / 'nope'}: no such folder (give a "
                                                            "finished `dermvqa quickstart --dataset synthetic` output "
                                                            "folder)"]
