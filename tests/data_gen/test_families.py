"""Each QA family on the synthetic world (clean labels, images) and on the 100 real Derm1M rows."""
from collections import Counter, defaultdict

import pytest

from data_gen.families.yes_no import asked_name
from data_gen.ontology import Ontology
from data_gen.records import read_records
from data_gen.synth import synthesize
from tests.conftest import ONTOLOGY
from tests.data_gen.conftest import make_row, synth_kwargs, write_csv


@pytest.fixture(scope="module")
def world_records(world, tmp_path_factory):
    csv_path, images = world
    out = tmp_path_factory.mktemp("world_qa")
    synthesize(csv_path, ONTOLOGY, out, images_dir=images, **synth_kwargs(test_fraction=0.3))
    return read_records(out / "qa")


def by_family(records, family):
    return [r for r in records if r["family"] == family]


def test_diagnosis_answer_is_the_label(world_records):
    recs = by_family(world_records, "diagnosis")
    assert len(recs) == 96 and len({r["question"] for r in recs}) >= 4  # paraphrases are used
    assert all(r["answer"] == r["label"] and r["answer_type"] == "open" for r in recs)
    assert {r["answer"] for r in recs} >= {"Malignant melanoma, melanoma", "Vitiligo"}
    assert all(r["fitzpatrick"] in range(1, 7) for r in recs)


def test_yes_no_format_and_balance_per_asked_diagnosis(world_records):
    recs = by_family(world_records, "yes_no")
    tally = defaultdict(Counter)
    for r in recs:
        assert r["options"] == ["yes", "no"] and r["label"] == r["options"][r["answer_index"]]
        assert r["answer"].endswith(f"Answer: {r['label']}.") and r["answer"].startswith("The lesion looks like ")
        asked = asked_name(r["answer"], r["answer_index"])
        assert asked in r["question"]
        if r["label"] == "no":
            assert f", not {asked}. Answer: no." in r["answer"]
        tally[(r["split"], asked)][r["label"]] += 1
    assert tally and all(c["yes"] == c["no"] for c in tally.values()), tally


def test_yes_no_negatives_are_unrelated_corpus_diagnoses(world_records):
    onto = Ontology.load(ONTOLOGY)
    names = {r["answer"] for r in by_family(world_records, "diagnosis")}
    negatives = Counter()
    for r in by_family(world_records, "yes_no"):
        if r["label"] == "no":
            neg = asked_name(r["answer"], 1)
            assert neg in names
            a, b = onto.candidates(neg), [tuple(r["ontology_path"])]
            assert not any(onto.related(x, b[0]) for x in a)
            negatives[(r["ontology_path"][-1], neg)] += 1
    per_dx = Counter(dx for dx, _ in negatives)
    assert max(per_dx.values()) > 0 and len(negatives) > len(per_dx)  # negatives vary within a diagnosis


def test_multiple_choice_options_letters_and_vocabulary(world_records):
    recs = by_family(world_records, "multiple_choice")
    names = {r["answer"] for r in by_family(world_records, "diagnosis")}
    letters = defaultdict(Counter)
    for r in recs:
        assert len(r["options"]) == 4 and r["options"][r["answer_index"]] == r["answer"]
        assert set(r["options"]) <= names and len(set(r["options"])) == 4
        assert all(f"{'ABCD'[i]}. {o}" in r["question"] for i, o in enumerate(r["options"]))
        letters[(r["split"], r["answer"])][r["answer_index"]] += 1
    for key, c in letters.items():  # within a split the correct letter cycles over A-D per diagnosis
        assert max(c.values()) - min(c.get(i, 0) for i in range(4)) <= 1, (key, c)


def test_morphology_present_and_absent(world_records, world):
    import csv
    with open(world[0], newline="") as f:
        concepts = {r["filename"]: set(r["skin_concept"].split(", ")) for r in csv.DictReader(f)}
    corpus_terms = set().union(*concepts.values())
    closed = [r for r in by_family(world_records, "morphology") if r["answer_type"] == "closed"]
    per_image = defaultdict(list)
    for r in closed:
        per_image[r["image"]].append(r)
    assert len(per_image) == 96
    for image, items in per_image.items():  # a train row with 2+ features asks twice, about two of them
        two = items[0]["split"] == "train" and len(concepts[image]) > 1
        assert len(items) == (2 if two else 1) and len({r["label"] for r in items}) == len(items), (items, concepts[image])
    for r in closed:
        present = concepts[r["image"]]
        assert r["label"] in present and r["options"][r["answer_index"]] == r["label"]
        assert r["answer"] == r["label"]
        wrong = set(r["options"]) - {r["label"]}
        assert wrong and wrong <= corpus_terms and not wrong & present
        assert not ({"erythema", "pink"} & wrong and "erythema" in present)


def test_category_levels(real_run):
    _, records = real_run
    recs = by_family(records, "category")
    assert recs
    for r in recs:
        assert r["options"][r["answer_index"]] == r["answer"] and r["answer"] in r["question"]
    bm = [r for r in recs if "benign or malignant" in r["question"]]
    assert bm and all(set(r["options"]) == {"benign", "malignant"} for r in bm)
    assert {r["answer"] for r in bm} == {"benign", "malignant"}


def test_body_location_only_where_the_photo_shows_it(tmp_path):
    rows = [make_row("a.png", location="leg", caption="Erythematous plaques on the legs."),
            make_row("b.png", location="oral", caption="Red patches; treated with oral medications."),
            make_row("c.png", location="neck", caption="A dermoscopic image captured on the neck."),
            make_row("d.png", location="hand", caption="Scaly plaques on the hand.", label="eczema",
                     hier="inflammatory, non-infectious, eczema"),
            make_row("e.png", location="neck, hand", caption="Lesions on neck and hand.")]
    out = tmp_path / "out"
    report = synthesize(write_csv(tmp_path / "x.csv", rows), ONTOLOGY, out, **synth_kwargs())
    recs = by_family(read_records(out / "qa"), "body_location")
    assert {r["image"]: r["answer"] for r in recs} == {"a.png": "leg", "d.png": "hand"}
    rej = report["rejections"]
    assert rej["body_location: location not stated as where the lesion is"]["count"] == 1
    assert rej["body_location: dermoscopic close-up cannot show the body site"]["count"] == 1
    assert rej["body_location: several body locations (not one photo site)"]["count"] == 1


def test_symptoms_and_age_sex_rules(tmp_path):
    rows = [make_row("a.png", symptoms="tender, bleeding"), make_row("b.png", symptoms="tender"),
            make_row("c.png", symptoms="crusting"),
            make_row("d.png", age="11", gender="male", caption="This image shows scaly plaques in an 11-year-old boy."),
            make_row("e.png", age="65", gender="female", caption="Scaly plaques; she is 65 and had surgery before.")]
    out = tmp_path / "out"
    report = synthesize(write_csv(tmp_path / "x.csv", rows), ONTOLOGY, out, **synth_kwargs())
    recs = read_records(out / "qa")
    sym = {r["image"]: r for r in by_family(recs, "symptoms")}
    assert set(sym) == {"a.png", "c.png"} and sym["a.png"]["answer"] == "bleeding"
    assert "tender" not in " ".join(r["answer"] + " ".join(r["options"]) for r in sym.values())
    assert report["rejections"]["symptoms: symptoms not visible in a photo"]["count"] == 1
    ages = by_family(recs, "age_sex")
    assert {(r["image"], r["answer"]) for r in ages} == {("d.png", "a child"), ("d.png", "male")}


def test_caption_report_has_no_caption_only_facts(real_run):
    _, records = real_run
    reports = by_family(records, "caption_report")
    assert len(reports) > 50
    for r in reports:
        for banned in ("treat", "cream", "year", "history", "caused", "antihistamine", "steroid", "caption"):
            assert banned not in r["answer"].lower(), r


def test_every_family_appears_on_real_rows(real_run):
    report, records = real_run
    assert set(report["families"]) == {"diagnosis", "yes_no", "multiple_choice", "morphology", "category",
                                       "body_location", "symptoms", "age_sex", "caption_report", "caption"}
    assert report["records"] == len(records) and report["rows"] == {"read": 100, "accepted": 87}
    assert report["yes_no"]["max_yes_minus_no"] == 0
