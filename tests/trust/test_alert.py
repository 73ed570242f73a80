"""Malignancy alert: the level catches the asked share of held-out malignant lesions, the report scores a photo
exactly as the level was set, and above the level it advises referral whatever ranks first."""
import csv
import json
import shutil

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from dermvqa.trust.alert import (ALERT_FILE, alert_figures, level_for, load_alert, malignant_mask, score_records,
                                  wilson_interval)
from dermvqa.infer.generate import load_model
from dermvqa.infer.report import ALERT_NEXT_STEP, build_report, render_markdown, validate_report
from dermvqa.model.labels import load_labels


def test_level_is_the_highest_that_catches_the_share():
    scores = np.array([0.9, 0.1, 0.5, 0.3])
    assert level_for(scores, 0.75) == 0.3 and level_for(scores, 1.0) == 0.1 and level_for(scores, 0.2) == 0.9
    assert level_for(np.array([0.4, 0.4, 0.2]), 0.5) == 0.4  # ties count as caught
    figures = alert_figures(np.array([0.9, 0.1, 0.5, 0.05]), np.array([True, True, False, False]), 0.3)
    assert figures == {"n_images": 4, "n_malignant": 2, "sensitivity": 0.5, "sensitivity_ci95": [0.0945, 0.9055],
                       "benign_referred": 0.5}
    assert wilson_interval(44, 48) == [0.8045, 0.9671] and wilson_interval(0, 5)[0] == 0.0
    with pytest.raises(ValueError, match="no malignant images"):
        level_for(np.array([]), 0.9)
    with pytest.raises(ValueError, match="sensitivity"):
        level_for(scores, 0.0)


@pytest.fixture(scope="module")
def alerted(trusted_model_dir, tmp_path_factory):
    source, world = trusted_model_dir
    model_dir = shutil.copytree(source, tmp_path_factory.mktemp("alert") / "model")
    rows = list(csv.DictReader(open(world / "derm1m.csv", encoding="utf-8")))
    qa = tmp_path_factory.mktemp("alert_qa")
    from data_gen.records import QARecord, write_parquet

    write_parquet([QARecord(id=f"{i}", image=r["filename"], question="What is the most likely diagnosis?",
                            answer=r["disease_label"], family="diagnosis", answer_type="open",
                            label=r["disease_label"], split="val" if i % 2 else "test") for i, r in enumerate(rows)],
                  qa / "part.parquet")
    return model_dir, world, qa


def test_alert_fit_sets_the_level_on_held_out_images_and_refuses_the_test_split(alerted):
    from dermvqa.cli import app

    model_dir, world, qa = alerted
    refused = CliRunner().invoke(app, ["alert-fit", "--model", str(model_dir), "--qa", str(qa), "--images",
                                       str(world / "images"), "--split", "test", "--device", "cpu"])
    assert refused.exit_code == 2 and "test split must stay unseen" in refused.output
    refused = CliRunner().invoke(app, ["alert-fit", "--model", str(model_dir), "--qa", str(qa), "--images",
                                       str(world / "images"), "--split", "train", "--device", "cpu"])
    assert refused.exit_code == 2 and "images it trained on" in refused.output
    assert not (model_dir / ALERT_FILE).exists()
    done = CliRunner().invoke(app, ["alert-fit", "--model", str(model_dir), "--qa", str(qa), "--images",
                                    str(world / "images"), "--sensitivity", "0.9", "--device", "cpu"])
    assert done.exit_code == 0, done.output
    info = load_alert(model_dir)
    assert info["fitted_on"] == "val" and info["n_images"] == 40 and info["n_malignant"] > 0
    assert info["sensitivity"] >= 0.9 and 0 <= info["threshold"] <= 1
    assert json.loads((model_dir / ALERT_FILE).read_text()) == info
    from data_gen.records import read_records

    model, processor = load_model(model_dir, device="cpu")  # the stored level reproduces its stored figures
    _, scores, truth = score_records(model, processor, read_records(qa, split="val"), world / "images",
                                     load_labels(model_dir))
    assert {k: info[k] for k in ("n_images", "n_malignant", "sensitivity", "sensitivity_ci95", "benign_referred")} == \
        alert_figures(scores, truth, info["threshold"])


def test_report_scores_as_the_level_was_set_and_refers_above_it(alerted):
    model_dir, world, qa = alerted
    from data_gen.records import read_records

    model, processor = load_model(model_dir, device="cpu")
    labels = load_labels(model_dir)
    assert malignant_mask(labels).sum() >= 1
    records = read_records(qa, split="val")[:4]
    _, scores, _ = score_records(model, processor, records, world / "images", labels)
    for record, score in zip(records, scores):
        photo = Image.open(world / "images" / record["image"])
        low = build_report(model, processor, photo, labels, min_confidence=0.0,
                           alert={"threshold": 0.0, "target_sensitivity": 0.9})
        validate_report(low)
        assert low["malignancy"]["score"] == pytest.approx(score, abs=1e-4) and low["malignancy"]["alert"]
        high = build_report(model, processor, photo, labels, min_confidence=0.0,
                            alert={"threshold": 1.0, "target_sensitivity": 0.9})
        assert not high["malignancy"]["alert"] and "malignant diagnoses together" not in high["next_step"]
        assert "**Malignancy score:**" in render_markdown(low)
    # the top diagnosis made benign, a lower one malignant: the alert overrides the top's "likely benign"
    top = low["differential"][0]["label"]
    other = next(d for d in labels["diagnoses"] if d != top)
    relabelled = {**labels, "ontology_paths": {**labels["ontology_paths"], top: ["proliferations", "benign", top],
                                                other: ["proliferations", "malignant", other]}}
    alerted_report = build_report(model, processor, photo, relabelled, min_confidence=0.0,
                                  alert={"threshold": 0.0, "target_sensitivity": 0.9})
    m = alerted_report["malignancy"]
    assert alerted_report["next_step"] == ALERT_NEXT_STEP.format(top=top, score=m["score"], level=0.0, target=0.9)
    quiet = build_report(model, processor, photo, relabelled, min_confidence=0.0,
                         alert={"threshold": 1.0, "target_sensitivity": 0.9})
    assert quiet["next_step"].startswith("Likely benign")
    plain = build_report(model, processor, Image.open(world / "images" / records[0]["image"]), labels)
    assert plain["malignancy"] is None
