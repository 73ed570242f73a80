"""`dermvqa quickstart --dataset ham10000` end to end on 56 real HAM10000 images, and its 7-class metrics."""
import csv
import json
import shutil

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from dermvqa.cli import app
from dermvqa.eval.classify import auc
from dermvqa.quickstarts.ham10000 import CLASSES, class_metrics, class_probs
from tests.conftest import PAD_PHOTO, REPO, SHARED_DATA

HAM = SHARED_DATA / "ham10000"


def test_auc_and_class_metrics_by_hand():
    assert auc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([False, False, True, True])) == 0.75
    assert auc(np.array([0.5, 0.5]), np.array([True, False])) == 0.5
    nv, mel, bkl = CLASSES.index("Melanocytic nevus"), CLASSES.index("Melanoma"), CLASSES.index("Benign keratosis")
    m = class_metrics([nv, nv, nv, mel, mel, bkl], [nv, mel, -1, mel, nv, bkl])
    assert m["accuracy"] == 0.5 and m["unmapped_answers"] == 1
    assert m["recall"] == {"Benign keratosis": 1.0, "Melanoma": 0.5, "Melanocytic nevus": 1 / 3}
    assert m["balanced_accuracy"] == pytest.approx((1 + 0.5 + 1 / 3) / 3)
    assert m["melanoma_recall"] == 0.5 and m["benign_called_malignant"] == 0.25  # 1 of 4 benign said melanoma


def test_shared_prefix_scores_equal_option_likelihood(tiny_model_dir):
    from PIL import Image

    from dermvqa.infer.generate import load_model
    from dermvqa.infer.likelihood import option_probs

    model, processor = load_model(tiny_model_dir, device="cpu")
    images = [Image.open(PAD_PHOTO), Image.open(HAM / "images" / "ISIC_0024306.jpg"), Image.new("RGB", (40, 30))]
    questions = ["What is the diagnosis?", "Name the condition seen in this photo.", "Which skin disease is it?"]
    ours = class_probs(model, processor, images, questions, CLASSES)
    reference = option_probs(model, processor, images, questions, [CLASSES] * 3)
    assert np.allclose(ours, np.asarray(reference), atol=1e-5)
    assert np.abs(np.log(ours[0]) - np.log(ours[1])).max() > 1e-3  # the image and question matter


def test_stage0_augmentation_moves_pixels_not_content():
    import torch

    from dermvqa.train.tower_pretrain import augment_batch

    x = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).view(2, 3, 4, 4)
    y = augment_batch(x.clone(), torch.Generator().manual_seed(0))
    assert y.shape == x.shape and not torch.equal(x, y)
    def dihedral(z):  # the 8 flips / quarter turns of a (C, H, W) image
        return [v for u in (z, z.transpose(1, 2)) for v in (u, u.flip(1), u.flip(2), u.flip(1).flip(2))]

    for a, b in zip(x, y):  # one of the 8 flips/turns of the image, then one brightness scale and a colour shift
        scale = (b[0].max() - b[0].min()) / (a[0].max() - a[0].min())
        assert 0.9 <= float(scale) <= 1.1
        undone = (b - b.flatten(1).min(1).values[:, None, None]) / scale + a.flatten(1).min(1).values[:, None, None]
        assert any(torch.allclose(undone, d, atol=1e-4) for d in dihedral(a))
    assert torch.equal(augment_batch(x.clone(), torch.Generator().manual_seed(0)), y)


def _subset(tmp_path, per_class=8):
    """A HAM10000-shaped folder with `per_class` images of each dx in the DermaMNIST train and test splits (2 of
    them test) and one more in val."""
    split = {r["image_id"]: r["split"] for r in csv.DictReader(open(HAM / "dermamnist_split.csv"))}
    rows = list(csv.DictReader(open(HAM / "HAM10000_metadata.csv")))
    keep = []
    for dx in ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"):
        for s, n in (("train", per_class - 2), ("test", 2), ("val", 1)):
            keep += [r for r in rows if r["dx"] == dx and split[r["image_id"]] == s][:n]
    data = tmp_path / "ham"
    (data / "images").mkdir(parents=True)
    for r in keep:
        shutil.copy(HAM / "images" / f"{r['image_id']}.jpg", data / "images")
    with open(data / "HAM10000_metadata.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(keep)
    shutil.copy(HAM / "dermamnist_split.csv", data)
    return data, keep


def _atlas_beside(tmp_path, n_train=30):
    """A Fitzpatrick17k-shaped folder beside the HAM10000 subset: the reference photos of the OOD choice."""
    rows = [r for r in csv.DictReader(open(SHARED_DATA / "fitzpatrick17k" / "ajl_subset.csv", newline=""))
            if r["ajl_split"] == "train"][:n_train]
    folder = tmp_path / "fitzpatrick17k"
    (folder / "images").mkdir(parents=True)
    for r in rows:
        (folder / "images" / f"{r['md5hash']}.jpg").symlink_to(SHARED_DATA / "fitzpatrick17k" / "images"
                                                               / f"{r['md5hash']}.jpg")
    with open(folder / "ajl_subset.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def test_ood_reference_photos_are_fitzpatrick17k_train_beside_the_data(tmp_path):
    """The README's choice for this model, on photos dermvqa/bench/ood_real.py never measures on."""
    from dermvqa.quickstarts.ham10000 import ood_choice

    choice = ood_choice(HAM)
    split = [r["ajl_split"] for r in csv.DictReader(open(SHARED_DATA / "fitzpatrick17k" / "ajl_subset.csv"))]
    (name, photos), = choice.references.items()
    assert name == "fitzpatrick17k-train" and len(photos) == split.count("train") and all(p.is_file() for p in photos)
    test = {f"{r['md5hash']}.jpg" for r in csv.DictReader(open(SHARED_DATA / "fitzpatrick17k" / "ajl_subset.csv"))
            if r["ajl_split"] == "test"}
    assert not test & {p.name for p in photos}
    assert (choice.inside, choice.max_abstain) == ("val", 0.03) and choice.limit <= 600
    assert "ajl_subset.csv not found" in ood_choice(tmp_path / "ham")


def test_quickstart_ham10000_small(tmp_path, monkeypatch):
    import dataclasses

    from dermvqa.quickstarts import ham10000

    data, keep = _subset(tmp_path)
    _atlas_beside(tmp_path)
    real_choice = ham10000.PLUGIN.ood_choice  # caps for 30 photos, and room on 7 val images of a 3-step model
    monkeypatch.setattr(ham10000.PLUGIN, "ood_choice", lambda d: dataclasses.replace(
        real_choice(d), limit=10, outside_limit=20, max_abstain=0.5))
    recipe = yaml.safe_load((REPO / "configs" / "ham10000_cpu.yaml").read_text())
    recipe["model"]["tiny"].update(image_size=16, vision_width=32, vision_layers=1, text_width=32, text_layers=1,
                                   vocab_size=300)
    recipe["tune"]["tower_pretrain"]["steps"] = 3
    recipe["train"].update(batch_size=8, max_steps=3)
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    out = tmp_path / "run"
    res = CliRunner().invoke(app, ["quickstart", "--dataset", "ham10000", "--data", str(data), "--out", str(out),
                                   "--recipe", str(tmp_path / "recipe.yaml")])
    assert res.exit_code == 0, res.output
    assert "DermaMNIST official test split" in res.output and "melanoma recall" in res.output
    r = json.loads((out / "ham10000_metrics.json").read_text())
    assert r["official_test"]["option_likelihood"]["n"] == 14  # 2 per class
    # the test images of this subset whose lesion has no train image in it (per class: 6 train, 2 test, 1 val)
    train_lesions = {k["lesion_id"] for i, k in enumerate(keep) if i % 9 < 6}
    disjoint = [k for i, k in enumerate(keep) if 6 <= i % 9 < 8 and k["lesion_id"] not in train_lesions]
    assert r["lesion_disjoint_test"]["option_likelihood"]["n"] == len(disjoint)
    for key in ("official_test", "official_test_blind"):
        lik = r[key]["option_likelihood"]
        assert 0 <= lik["accuracy"] <= 1 and 0 <= lik["auc"] <= 1 and set(lik["recall"]) == set(CLASSES)
    assert set(r["families"]) >= {"multiple_choice"} and r["seconds"]["total"] >= 0
    alert = r["malignancy_alert"]  # set on the 7 val images (bcc and mel malignant), measured on the 14 test ones
    assert alert["val"]["n_images"] == 7 and alert["val"]["n_malignant"] == 2 and alert["val"]["sensitivity"] >= 0.9
    assert alert["test"]["n_images"] == 14 and alert["test"]["n_melanoma"] == 2
    assert 0 <= alert["test"]["melanoma_sensitivity"] <= 1
    assert json.loads((out / "train" / "model" / "dermvqa_alert.json").read_text()) == alert["val"]
    assert "malignancy referral (level" in res.output
    table = r["diagnosis_table"]  # probe, likelihood as scored and adjusted, open answer, blind: per class
    assert set(table) == {"probe", "option_likelihood", "likelihood_adjusted", "open_answer", "blind_likelihood"}
    assert all(set(m["recall"]) == set(CLASSES) and m["n"] == 14 for m in table.values())
    assert "| class | probe | option_likelihood | likelihood_adjusted" in res.output
    ood = r["ood_choice"]  # chosen after training on the photos beside --data, carried by the model folder
    assert ood["outside"] == ["fitzpatrick17k-train"] and ood["inside"] == "val" and r["seconds"]["ood_choice"] >= 0
    assert ood["photos"]["fitzpatrick17k-train"]["count"] == 10 and ood["photos"]["val"]["count"] == 7
    assert json.loads((out / "train" / "model" / "dermvqa_ood.json").read_text())["selection"] == ood
    assert "out-of-distribution detector (dermvqa ood-choose)" in res.output
    prior = json.loads((out / "train" / "model" / "dermvqa_prior.json").read_text())
    assert prior["counts"] == {c: 6 for c in CLASSES} and prior["records"] == 42  # the 6 train images per class


def test_quickstart_ham10000_needs_data(tmp_path):
    res = CliRunner().invoke(app, ["quickstart", "--dataset", "ham10000", "--data", str(tmp_path)])
    assert res.exit_code != 0 and "HAM10000_metadata.csv" in res.output
    res = CliRunner().invoke(app, ["quickstart", "--dataset", "isic"])
    assert res.exit_code != 0 and "synthetic, ham10000" in res.output
