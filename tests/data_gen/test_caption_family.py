"""The caption family: sentence reasons on written examples, the 100 real rows, and a synthetic world untouched."""
import pytest

from data_gen.families.caption import judge, ontology_names
from data_gen.ontology import Ontology
from data_gen.records import read_records
from data_gen.synth import synthesize
from dermvqa.bench.caption_stats import AUDIT  # its audit pattern, written apart from data_gen/sentences.py on purpose
from tests.conftest import ONTOLOGY, SAMPLE_CSV
from tests.data_gen.conftest import make_row, synth_kwargs, write_csv


@pytest.fixture(scope="module")
def names():
    return ontology_names(Ontology.load(ONTOLOGY))


@pytest.mark.parametrize("sentence, reason", [
    ("A 65-year-old male has widespread red papules.", "age or sex"),
    ("The rash has been present for three weeks.", "history or duration"),
    ("Treatment options include topical steroids.", "treatment or procedure"),
    ("It is caused by an overactive immune response.", "cause or mechanism"),
    ("The poster asked the forum about the red spots.", "forum talk"),
    ("In this video the dermatologist shows a plaque.", "video or lecture talk"),
    ("This image discusses eczema and its red patches.", "video or lecture talk"),
    ("Red plaques covering 95% of the body.", "number"),
    ("The red plaque is very itchy.", "sensation or symptom the image cannot show"),
    ("Red plaques as mentioned in the text.", "refers to the text or another figure"),
    ("Laboratory results showed raised IgE with red patches.", "laboratory or other test"),
    ("Red plaques commonly appear on the elbows.", "general knowledge, not this image"),
    ("Front view.", "names nothing the image shows"),
    ("Erythematous and ulcerated nodules on the legs.", ""),
    ("A fixed drug eruption with a violaceous patch.", ""),   # a disease name, not a treatment
    ("Infantile atopic dermatitis on the cheek.", ""),        # a disease name, not an age
])
def test_sentence_reasons(names, sentence, reason):
    assert judge(sentence, names) == [(sentence, reason)]


def test_splitting_figure_marks_and_cut_off_tail(names):
    text = "Dotted vessels (arrow) and scale (circle), e.g. on the rim. Red plaques on the arm. And potentially addi"
    assert judge(text, names) == [("Dotted vessels and scale, e.g. on the rim.", ""), ("Red plaques on the arm.", ""),
                                  ("And potentially addi", "cut-off sentence (no end mark)")]
    assert judge("Atrophic type of oral lichen planus", names) == [("Atrophic type of oral lichen planus", "")]


@pytest.fixture(scope="module")
def real_caption_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("caption")
    return synthesize(SAMPLE_CSV, ONTOLOGY, out, families=["caption"], **synth_kwargs()), read_records(out / "qa")


def test_real_rows_keep_only_supportable_sentences(real_caption_run, names):
    report, records = real_caption_run
    kept, dropped = report["tallies"]["caption sentences: kept"], report["tallies"]["caption sentences: dropped"]
    reasons = {k: v["count"] for k, v in report["rejections"].items() if k.startswith("caption: sentence dropped: ")}
    assert sum(reasons.values()) == dropped > kept >= 15  # every dropped sentence is counted under a reason
    assert len(records) == report["families"]["caption"] >= 13
    for r in records:
        assert r["family"] == "caption" and r["answer"].endswith((".", "!", "?"))
        assert not AUDIT.search(r["answer"]), r["answer"]
        assert all(why == "" for _, why in judge(r["answer"], names))
    answers = " ".join(r["answer"] for r in records)
    for phrase in ("Treatment options", "year-old", "forum", "duration"):
        assert phrase not in answers


def test_caption_family_is_exempt_only_from_the_caption_word_gate(tmp_path):
    rows = [make_row("a.png", caption="Close-up photo of red scaly plaques on the elbow. Treated with creams.",
                     source="pubmed_english"),
            make_row("b.png", caption="The description says red scaly plaques.", source="pubmed_english"),
            make_row("c.png", caption="This is a clinical skin image, diagnosed as psoriasis pictures.")]
    path = write_csv(tmp_path / "x.csv", rows)
    report = synthesize(path, ONTOLOGY, tmp_path / "out", families=["caption"], **synth_kwargs())
    records = read_records(tmp_path / "out" / "qa")
    assert [r["answer"] for r in records] == ["Close-up photo of red scaly plaques on the elbow."]
    assert report["rejections"]["caption: sentence dropped: treatment or procedure"]["count"] == 1
    assert report["rejections"]["caption: no sentence the image can support"]["count"] == 1
    assert report["not_applicable"] == {"caption: caption composed from labels (source public)": 1}


def test_synthetic_world_is_unchanged(world, tmp_path):
    """Generated captions give no caption records, and every other family makes exactly the same records."""
    csv_path, images = world
    others = ["diagnosis", "yes_no", "multiple_choice", "morphology", "category", "body_location", "symptoms",
              "age_sex", "caption_report"]
    all_fams = synthesize(csv_path, csv_path.parent / "ontology.json", tmp_path / "all", images_dir=images,
                          **synth_kwargs())
    without = synthesize(csv_path, csv_path.parent / "ontology.json", tmp_path / "without", images_dir=images,
                         families=others, **synth_kwargs())
    assert "caption" not in all_fams["families"] and all_fams["families"] == without["families"]
    assert all_fams["not_applicable"]["caption: caption composed from labels (source_type synthetic)"] == 96
    assert read_records(tmp_path / "all" / "qa") == read_records(tmp_path / "without" / "qa")
