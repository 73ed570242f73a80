"""Preference pairs: each rule on hand-written records, train split only, determinism, the CLI on a synthesized world."""
import json
import random

from typer.testing import CliRunner

from data_gen.cli import data_app
from data_gen.preference import preference_pairs, relation
from data_gen.records import QARecord, read_records

NEVUS = ["proliferations", "benign", "melanocytic", "Melanocytic nevus"]
MELANOMA = ["proliferations", "malignant", "melanocytic", "Malignant melanoma, melanoma"]
BCC = ["proliferations", "malignant", "non-melanocytic", "Basal cell carcinoma"]
VITILIGO = ["reaction patterns and descriptive terms", "Vitiligo"]
TINEA = ["inflammatory", "infectious", "fungal", "Tinea corporis"]
ECZEMA = ["inflammatory", "non-infectious", "Eczema", "Nummular eczema"]


def rec(rid, image, family, question, answer, path, options=(), index=-1, label="", split="train"):
    return QARecord(id=rid, image=image, question=question, answer=answer, family=family,
                    answer_type="closed" if options else "open", options=list(options), answer_index=index,
                    label=label or answer, ontology_path=list(path), split=split).__dict__


def world(split_of_b="train"):
    """Image a: a nevus (all families); b: a melanoma; c: tinea; f: a BCC asked nothing else; d: vitiligo (its
    only neighbour, BCC, is in another top-level group); e: an eczema of the test split."""
    mc = ["Basal cell carcinoma", "Malignant melanoma, melanoma", "Melanocytic nevus", "Vitiligo"]
    return [
        rec("a1", "a.png", "diagnosis", "What is the diagnosis?", "Melanocytic nevus", NEVUS),
        rec("a2", "a.png", "multiple_choice", "Which fits? A. BCC B. MM C. MN D. V", "Melanocytic nevus", NEVUS,
            mc, 2),
        rec("a3", "a.png", "yes_no", "Is this Melanocytic nevus?", "The lesion looks like Melanocytic nevus. Answer: yes.",
            NEVUS, ["yes", "no"], 0, "yes"),
        rec("a4", "a.png", "yes_no", "Is this Basal cell carcinoma?",
            "The lesion looks like Melanocytic nevus, not Basal cell carcinoma. Answer: no.", NEVUS, ["yes", "no"], 1,
            "no"),
        rec("a5", "a.png", "morphology", "What features?", "macule, brown(hyperpigmentation)", NEVUS),
        rec("a6", "a.png", "morphology", "Which is visible? A. scale B. macule C. nodule", "macule", NEVUS,
            ["scale", "macule", "nodule"], 1, "macule"),
        rec("a8", "a.png", "morphology", "Which is present? A. papule B. nodule C. brown(hyperpigmentation)",
            "brown(hyperpigmentation)", NEVUS, ["papule", "nodule", "brown(hyperpigmentation)"], 2,
            "brown(hyperpigmentation)"),
        rec("a7", "a.png", "category", "Benign or malignant? A. malignant B. benign", "benign", NEVUS[:2],
            ["malignant", "benign"], 1),
        rec("b1", "b.png", "diagnosis", "What is the diagnosis?", "Malignant melanoma, melanoma", MELANOMA,
            split=split_of_b),
        rec("b2", "b.png", "multiple_choice", "Which fits? A. BCC B. MM C. MN D. V", "Malignant melanoma, melanoma",
            MELANOMA, mc, 1, split=split_of_b),
        rec("c1", "c.png", "diagnosis", "What is the diagnosis?", "Tinea corporis", TINEA),
        rec("c2", "c.png", "yes_no", "Is this Nummular eczema?",
            "The lesion looks like Tinea corporis, not Nummular eczema. Answer: no.", TINEA, ["yes", "no"], 1, "no"),
        rec("e1", "e.png", "diagnosis", "What is the diagnosis?", "Nummular eczema", ECZEMA, split="test"),
        rec("f1", "f.png", "diagnosis", "What is the diagnosis?", "Basal cell carcinoma", BCC),
        rec("d1", "d.png", "diagnosis", "What is the diagnosis?", "Vitiligo", VITILIGO),
        rec("d2", "d.png", "multiple_choice", "Which fits? A. V B. BCC", "Vitiligo", VITILIGO,
            ["Vitiligo", "Basal cell carcinoma"], 0),
    ]


def by_record(pairs):
    return {p["record_id"]: (p["rule"], p["rejected"][0]["content"]) for p in pairs}


def test_relation_sibling_cousin_and_farther():
    assert relation(tuple(NEVUS), tuple(MELANOMA)) == "ontology_sibling"  # one `melanocytic` in ontology.json
    assert relation(tuple(MELANOMA), tuple(BCC)) == "ontology_cousin"  # parents are siblings under malignant
    assert relation(tuple(NEVUS), tuple(BCC)) == "ontology_cousin"  # only the top group is shared
    assert relation(tuple(TINEA), tuple(ECZEMA)) == "ontology_cousin"
    assert relation(tuple(BCC), tuple(VITILIGO)) is None
    assert relation(tuple(NEVUS), tuple(NEVUS[:3])) is None  # an ancestor is never a negative


def test_each_rule_gives_the_hand_written_rejected_answer():
    pairs, report = preference_pairs(world())
    got = by_record(pairs)
    assert got["a1"] == ("ontology_sibling", "Malignant melanoma, melanoma")  # sibling beats the BCC cousin
    assert got["a2"] == ("ontology_sibling", "Malignant melanoma, melanoma")
    assert got["b2"] == ("ontology_sibling", "Melanocytic nevus")
    assert got["b1"] == ("ontology_sibling", "Melanocytic nevus")
    assert got["a3"] == ("yes_no_flip", "The lesion looks like Malignant melanoma, melanoma, not Melanocytic nevus. "
                                        "Answer: no.")
    assert got["a4"] == ("yes_no_flip", "The lesion looks like Basal cell carcinoma. Answer: yes.")
    assert got["c1"] == ("ontology_cousin", "Nummular eczema")  # from the image's yes/no negative
    assert got["a5"] == ("absent_finding", "scale, brown(hyperpigmentation)")
    assert got["a6"] == ("absent_finding", "scale")
    assert got["a8"] == ("absent_finding", "papule")  # the second closed item rejects its own distractor
    assert set(got) == {"a1", "a2", "a3", "a4", "a5", "a6", "a8", "b1", "b2", "c1", "c2"}
    assert report["skipped"] == {"category: no preference rule for family category": 1,
                                 "diagnosis: no sibling or cousin among the image's neighbours": 1,
                                 "multiple_choice: no sibling or cousin among the image's neighbours": 1,
                                 ("diagnosis: synthesis chose no neighbour for this image (no multiple-choice or "
                                  "yes/no negative)"): 1}
    assert report["pairs"] + sum(report["skipped"].values()) == report["train_records"] == 15
    assert report["by_rule"] == {"ontology_sibling": 4, "ontology_cousin": 1, "yes_no_flip": 3, "absent_finding": 3}
    pair = next(p for p in pairs if p["record_id"] == "a2")
    assert pair["prompt"] == [{"role": "user", "content": [{"type": "image"},
                                                           {"type": "text", "text": "Which fits? A. BCC B. MM C. MN D. V"}]}]
    assert pair["chosen"] == [{"role": "assistant", "content": "Melanocytic nevus"}] and pair["image"] == "a.png"


def test_only_the_train_split_makes_pairs():
    pairs, report = preference_pairs(world(split_of_b="test"))
    assert not {p["record_id"] for p in pairs} & {"b1", "b2", "e1"}
    assert report["not_train_records"] == {"test": 3} and report["train_records"] == 13
    # the test melanoma's name still resolves the nevus's sibling (names and paths only, no test pair)
    assert by_record(pairs)["a1"] == ("ontology_sibling", "Malignant melanoma, melanoma")


def test_pairs_do_not_depend_on_record_order():
    records = world()
    first, _ = preference_pairs(records)
    random.Random(3).shuffle(records)
    again, _ = preference_pairs(records)
    assert first == again


def test_cli_on_a_synthesized_world(tmp_path):
    from data_gen.synth import synthesize
    from data_gen.synthetic_world import build_world

    csv = build_world(tmp_path / "w", n_images=40, size=32, progress=False)
    synthesize(csv, tmp_path / "w" / "ontology.json", tmp_path / "w", progress=False, workers=1)
    records = read_records(tmp_path / "w" / "qa")
    outs = []
    for name in ("p1.jsonl", "p2.jsonl"):
        res = CliRunner().invoke(data_app, ["export-preference", "--qa", str(tmp_path / "w" / "qa"),
                                            "--out", str(tmp_path / name)])
        assert res.exit_code == 0, res.output
        outs.append((tmp_path / name).read_bytes())
    assert outs[0] == outs[1]
    pairs = [json.loads(line) for line in outs[0].decode().splitlines()]
    report = json.loads((tmp_path / "p1.report.json").read_text())
    train = [r for r in records if r["split"] == "train"]
    assert report["pairs"] == len(pairs) and report["pairs"] + sum(report["skipped"].values()) == len(train)
    assert {p["image"] for p in pairs} <= {r["image"] for r in train}
    assert all(report["by_rule"][k] > 0 for k in report["by_rule"])
    for p in pairs:
        chosen, rejected = p["chosen"][0]["content"], p["rejected"][0]["content"]
        assert chosen != rejected
        if p["rule"] == "yes_no_flip":  # verdict flipped, and the finding with it
            assert chosen.endswith("yes.") == rejected.endswith("no.")
            assert chosen.split(" Answer:")[0] != rejected.split(" Answer:")[0]
        if p["rule"] == "absent_finding" and "Answer:" in chosen:
            assert rejected.endswith(f"Answer: {p['rejected_name']}.") and p["rejected_name"] in rejected.split(".")[0]
