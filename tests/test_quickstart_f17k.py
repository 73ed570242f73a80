"""`dermvqa quickstart --dataset fitzpatrick17k` end to end on a few dozen real Fitzpatrick17k photos."""
import csv
import json
import os

import yaml
from typer.testing import CliRunner

from dermvqa.cli import app
from tests.conftest import ONTOLOGY, REPO, SHARED_DATA

F17K = SHARED_DATA / "fitzpatrick17k"


def _subset(tmp_path, labels=("psoriasis", "basal cell carcinoma", "melanoma", "acne"), per_split=(8, 3)):
    """An AJL-subset-shaped folder: per label `per_split` train/test photos (the subset's own split)."""
    rows = list(csv.DictReader(open(F17K / "ajl_subset.csv", newline="")))
    keep = []
    for label in labels:
        for split, n in zip(("train", "test"), per_split):
            keep += [r for r in rows if r["label"] == label and r["ajl_split"] == split
                     and not r["identical_content_as"]][:n]
    data = tmp_path / "f17k"
    (data / "images").mkdir(parents=True)
    for r in keep:
        os.symlink(F17K / "images" / f"{r['md5hash']}.jpg", data / "images" / f"{r['md5hash']}.jpg")
    with open(data / "ajl_subset.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(keep)
    return data, keep


def test_quickstart_fitzpatrick17k_small(tmp_path):
    data, keep = _subset(tmp_path)
    recipe = yaml.safe_load((REPO / "configs" / "fitzpatrick17k_cpu.yaml").read_text())
    recipe["model"]["tiny"].update(image_size=16, patch_size=4, vision_width=32, vision_layers=1, text_width=32,
                                   text_layers=1, vocab_size=300)
    recipe["data"]["max_length"] = 512
    recipe["tune"]["tower_pretrain"]["steps"] = 3
    recipe["train"].update(batch_size=8, max_steps=3)
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    out = tmp_path / "run"
    res = CliRunner().invoke(app, ["quickstart", "--dataset", "fitzpatrick17k", "--data", str(data), "--out",
                                   str(out), "--ontology", str(ONTOLOGY), "--recipe", str(tmp_path / "recipe.yaml"),
                                   "--set", "tune.tower_pretrain.skin_type_balance=1"])
    assert res.exit_code == 0, res.output
    r = json.loads((out / "fitzpatrick17k_metrics.json").read_text())
    trained = yaml.safe_load((out / "train" / "recipe.yaml").read_text())
    assert trained["tune"]["tower_pretrain"]["skin_type_balance"] == 1  # --set reached the recipe
    assert r["import"]["rows_read"] == len(keep)
    metrics = json.loads((out / "eval" / "metrics.json").read_text())
    test_images = {r["md5hash"] for r in keep if r["ajl_split"] == "test"}
    n_test = sum(1 for _ in test_images)
    assert metrics["strata"]["family"]["neoplasm"]["image"]["accuracy"]["n"] == n_test
    types = {str(int(r["fitzpatrick_scale"])) if int(r["fitzpatrick_scale"]) > 0 else "unknown"
             for r in keep if r["ajl_split"] == "test"}
    assert set(metrics["skin_type"]["image"]["neoplasm"]["types"]) == types  # every type shown, few or not
    assert "neoplasm per Fitzpatrick type" in res.output and "gap in balanced_accuracy" in res.output
    assert "malignancy referral" in res.output
    assert "dermamnist_split.csv not found" in r["ood_choice"]["skipped"]  # no HAM10000 folder beside --data
    assert "out-of-distribution detector: the recipe's ood section" in res.output


def test_ood_reference_photos_are_ham10000_train_beside_the_data():
    """Dermoscopy photos for a clinical-photo model, none of the HAM10000 test split bench_ood_real measures on."""
    from dermvqa.quickstarts.fitzpatrick17k import ood_choice

    choice = ood_choice(F17K)
    split_csv = SHARED_DATA / "ham10000" / "dermamnist_split.csv"
    splits = {r["image_id"]: r["split"] for r in csv.DictReader(open(split_csv))}
    (name, photos), = choice.references.items()
    assert name == "ham10000-train" and len(photos) == list(splits.values()).count("train")
    assert {splits[p.stem] for p in photos} == {"train"} and all(p.is_file() for p in photos[:50])
    assert choice.inside == "val"


def test_quickstart_fitzpatrick17k_needs_its_folder_and_the_ontology(tmp_path):
    res = CliRunner().invoke(app, ["quickstart", "--dataset", "fitzpatrick17k", "--data", str(tmp_path)])
    assert res.exit_code != 0 and "ajl_subset.csv" in res.output
    data, _ = _subset(tmp_path, labels=("psoriasis",), per_split=(2, 1))
    res = CliRunner().invoke(app, ["quickstart", "--dataset", "fitzpatrick17k", "--data", str(data),
                                   "--out", str(tmp_path / "run")])
    assert res.exit_code != 0 and "--ontology" in res.output
