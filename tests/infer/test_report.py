import json

import pytest
from PIL import Image
from typer.testing import CliRunner

from dermvqa.infer.generate import load_model
from dermvqa.infer.likelihood import option_probs
from dermvqa.infer.report import DISCLAIMER, UNSURE_NEXT_STEP, build_report, next_step, render_markdown, validate_report
from dermvqa.model.labels import DIAGNOSIS_QUESTION, LABELS_FILE, load_labels, write_labels
from tests.conftest import PAD_PHOTO


@pytest.fixture(scope="module")
def setup(chatty_model_dir):
    model, processor = load_model(chatty_model_dir, device="cpu")
    return model, processor, load_labels(chatty_model_dir), Image.open(PAD_PHOTO).convert("RGB")


def test_differential_is_the_option_likelihood_ranking(setup):
    model, processor, labels, photo = setup
    report = build_report(model, processor, photo, labels, top_k=3, min_confidence=0.0, image_name="pad.png")
    probs = option_probs(model, processor, [photo], [DIAGNOSIS_QUESTION], [labels["diagnoses"]])[0]
    ranked = sorted(zip(labels["diagnoses"], probs), key=lambda x: -x[1])[:3]
    assert [d["label"] for d in report["differential"]] == [name for name, _ in ranked]
    assert [d["score"] for d in report["differential"]] == pytest.approx([p for _, p in ranked], abs=1e-4)
    top = report["differential"][0]
    assert report["diagnosis"]["label"] == top["label"]
    assert report["diagnosis"]["ontology_path"] == labels["ontology_paths"][top["label"]]
    assert report["confidence"] == pytest.approx(max(probs), abs=1e-4)
    assert report["next_step"] == next_step(top["ontology_path"], False)
    colours, shapes = report["colour"], report["morphology"]
    assert colours and shapes and {t["term"] for t in colours}.isdisjoint(t["term"] for t in shapes)
    assert {t["term"] for t in colours + shapes} <= set(labels["concepts"])
    validate_report(report)
    md = render_markdown(report)
    assert DISCLAIMER in md and top["label"] in md and "pad.png" in md


def test_below_threshold_the_report_is_unsure(setup):
    model, processor, _, photo = setup
    labels = {"diagnoses": ["type a", "type b", "type c"], "ontology_paths": {}, "concepts": []}
    sure = build_report(model, processor, photo, labels, min_confidence=0.0)
    assert 0 < sure["confidence"] < 1 and sure["diagnosis"]["label"] == sure["differential"][0]["label"]
    assert sure["morphology"] == [] and sure["colour"] == []
    unsure = build_report(model, processor, photo, labels, min_confidence=(sure["confidence"] + 1) / 2)
    assert unsure["unsure"] and unsure["diagnosis"] is None
    assert unsure["summary"].startswith("Unsure") and unsure["next_step"] == UNSURE_NEXT_STEP
    assert unsure["differential"] == sure["differential"]
    assert "none given" in render_markdown(unsure)
    with pytest.raises(ValueError, match="min_confidence"):
        build_report(model, processor, photo, labels, min_confidence=1.5)


def test_schema_rejects_broken_reports(setup):
    model, processor, labels, photo = setup
    report = build_report(model, processor, photo, labels, min_confidence=0.0)
    for broken, problem in [({k: v for k, v in report.items() if k != "disclaimer"}, "disclaimer"),
                            ({**report, "unsure": True}, "diagnosis"),
                            ({**report, "confidence": 1.5}, "confidence"),
                            ({**report, "differential": []}, "differential")]:
        with pytest.raises(ValueError, match=problem):
            validate_report(broken)


def test_next_step_follows_the_ontology():
    assert "biopsy" in next_step(["proliferations", "malignant", "melanocytic", "Melanoma"], False)
    assert "microscopy" in next_step(["inflammatory", "infectious", "fungal", "Tinea corporis"], False)
    assert "monitor" in next_step(["proliferations", "benign", "melanocytic", "Melanocytic nevus"], False)
    assert "treatment" in next_step(["inflammatory", "non-infectious", "Eczema"], False)
    assert next_step(["proliferations", "malignant"], True) == UNSURE_NEXT_STEP


def test_labels_file_problems_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=LABELS_FILE):
        load_labels(tmp_path)
    (tmp_path / LABELS_FILE).write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_labels(tmp_path)
    write_labels(tmp_path, ["a", "a"], {}, [])
    with pytest.raises(ValueError, match="duplicates"):
        load_labels(tmp_path)
    write_labels(tmp_path, ["eczema"], {"eczema": "inflammatory"}, [])
    with pytest.raises(ValueError, match="ontology_paths"):
        load_labels(tmp_path)
    write_labels(tmp_path, ["eczema"], {"eczema": ["inflammatory", "eczema"]}, ["scale", "red", "scale"])
    assert load_labels(tmp_path) == {"diagnoses": ["eczema"], "ontology_paths": {"eczema": ["inflammatory", "eczema"]},
                                     "concepts": ["red", "scale"]}


def test_cli_json_report_validates(setup, chatty_model_dir, tmp_path):
    from dermvqa.cli import app

    model, processor, labels, photo = setup
    out = tmp_path / "report.json"
    result = CliRunner().invoke(app, ["report", "--model", str(chatty_model_dir), "--image", str(PAD_PHOTO),
                                      "--format", "json", "--min-confidence", "0", "--out", str(out),
                                      "--device", "cpu"])
    assert result.exit_code == 0, result.output
    written = json.loads(out.read_text())
    validate_report(written)
    assert written["image"] == PAD_PHOTO.name
    assert written == build_report(model, processor, photo, labels, min_confidence=0.0,
                                   model_name=chatty_model_dir.name, image_name=PAD_PHOTO.name)
    md = CliRunner().invoke(app, ["report", "--model", str(chatty_model_dir), "--image", str(PAD_PHOTO),
                                  "--device", "cpu"])
    assert md.exit_code == 0 and "## Lesion report" in md.stdout and DISCLAIMER in md.stdout


def test_untrained_sections_are_not_assessed_and_unlike_photos_get_no_findings(trusted_model_dir, tmp_path):
    from dermvqa.cli import app
    from dermvqa.trust.ood import NOTICE, load_summary
    from dermvqa.infer.report import NOT_ASSESSED, OOD_NEXT_STEP, trained_families

    model_dir, world = trusted_model_dir
    assert trained_families(model_dir) == ["diagnosis", "yes_no"]
    out = tmp_path / "pad.json"
    result = CliRunner().invoke(app, ["report", "--model", str(model_dir), "--image", str(PAD_PHOTO), "--format",
                                      "json", "--min-confidence", "0", "--out", str(out), "--explain",
                                      "--device", "cpu"])
    assert result.exit_code == 0, result.output
    pad = json.loads(out.read_text())
    validate_report(pad)
    assert pad["ood"]["unlike_training"] and pad["ood"]["score"] > pad["ood"]["threshold"]
    for section in ("morphology", "colour", "distribution", "body_site", "diagnosis", "confidence", "malignancy"):
        assert pad[section] is None, section
    assert pad["differential"] == [] and pad["summary"].startswith(NOTICE) and pad["next_step"] == OOD_NEXT_STEP
    assert pad["not_assessed"] == ["morphology", "colour", "distribution", "body_site"]
    assert "explanation" not in pad and not (tmp_path / "pad_explain.png").exists()  # nothing to ground
    with pytest.raises(ValueError, match="differential"):  # an abstaining report cannot rank diagnoses
        validate_report({**pad, "differential": [{"label": "x", "score": 0.9, "ontology_path": []}]})

    model, processor = load_model(model_dir, device="cpu")
    image = Image.open(world / "images" / "synthetic" / "lesion_00003.png")
    familiar = build_report(model, processor, image, load_labels(model_dir), min_confidence=0.0,
                            families=trained_families(model_dir), ood=load_summary(model_dir))
    assert not familiar["ood"]["unlike_training"] and familiar["diagnosis"]["label"] == familiar["differential"][0]["label"]
    assert familiar["morphology"] == NOT_ASSESSED
    validate_report(familiar)


def test_a_flagged_report_lists_no_findings_and_an_unflagged_one_does(trusted_model_dir, setup):
    """The same photo and model, once with the threshold just above its score and once just below."""
    from dermvqa.trust.ood import load_summary

    model_dir, _ = trusted_model_dir
    model, processor = load_model(model_dir, device="cpu")
    labels, photo = setup[2], setup[3]
    summary = load_summary(model_dir)
    score = summary.check(model, processor, photo)["score"]
    summary.threshold = score * 1.01
    kept = build_report(model, processor, photo, labels, min_confidence=0.0, ood=summary)
    summary.threshold = score * 0.99
    flagged = build_report(model, processor, photo, labels, min_confidence=0.0, ood=summary)
    assert not kept["ood"]["unlike_training"] and flagged["ood"]["unlike_training"]
    assert kept["ood"]["score"] == flagged["ood"]["score"] == pytest.approx(score, abs=1e-4)
    assert kept["morphology"] and kept["colour"] and kept["distribution"]["pattern"] and kept["differential"]
    assert kept["diagnosis"]["label"] == kept["differential"][0]["label"] and kept["confidence"] > 0
    findings = ("morphology", "colour", "distribution", "body_site", "diagnosis", "confidence", "malignancy")
    assert all(flagged[k] is None for k in findings) and flagged["differential"] == []
    for broken in ({**flagged, "morphology": kept["morphology"]}, {**flagged, "confidence": kept["confidence"]},
                   {**flagged, "distribution": kept["distribution"]}):
        with pytest.raises(ValueError):  # the schema itself refuses findings beside an abstention
            validate_report(broken)

    kept_md, flagged_md = render_markdown(kept), render_markdown(flagged)
    terms = [t["term"] for t in kept["morphology"] + kept["colour"]] + [d["label"] for d in kept["differential"]]
    assert all(term in kept_md for term in terms) and "**Confidence:**" in kept_md
    assert not any(term in flagged_md for term in terms)
    for absent in ("Morphology", "Colour", "Distribution", "Body site", "Confidence", "Differential", "Most likely"):
        assert absent not in flagged_md, absent
    assert f"{flagged['ood']['score']:.2f} (abstains above {flagged['ood']['threshold']:.2f})" in flagged_md
    assert flagged["next_step"] in flagged_md and DISCLAIMER in flagged_md


def test_markdown_report_links_its_overlay_from_where_the_file_lies(trusted_model_dir, tmp_path, monkeypatch):
    import re

    from dermvqa.cli import app

    model_dir, world = trusted_model_dir
    monkeypatch.chdir(tmp_path)
    lesion = world / "images" / "synthetic" / "lesion_00003.png"  # in distribution: abstentions have no overlay
    result = CliRunner().invoke(app, ["report", "--model", str(model_dir), "--image", str(lesion), "--out",
                                      "reports/pad.md", "--explain", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    md = (tmp_path / "reports" / "pad.md").read_text()
    png = re.search(r"!\[relevance overlay\]\(([^)]+)\)", md).group(1)
    grid = re.search(r"— grid: (\S+)", md).group(1)
    assert png == "pad_explain.png" and (tmp_path / "reports" / png).stat().st_size > 5000
    assert json.loads((tmp_path / "reports" / grid).read_text())["schema"] == "dermvqa.explanation/1"
