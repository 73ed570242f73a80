"""dermvqa.bench.ham_on_pad: the PAD-UFES-20 rows it uses and skips, counted on the real metadata, and its
figures (accuracy, balanced accuracy, macro-F1, melanoma recall) against a direct count."""
import csv

import numpy as np
import pytest

from dermvqa.bench import ham_on_pad as bench
from tests.conftest import SHARED_DATA

PAD, HAM = SHARED_DATA / "pad-ufes-20", SHARED_DATA / "ham10000"


def test_pad_rows_used_and_skipped_on_the_real_files():
    items, skipped = bench.pad_items(PAD)
    rows = list(csv.DictReader(open(PAD / "metadata.csv", encoding="utf-8")))
    stems = {p.stem for p in (PAD / "images").iterdir()}
    present = [r for r in rows if r["img_id"].rsplit(".", 1)[0] in stems]
    assert len(rows) == 2298 and len(present) == 733  # the .png names of the metadata match the .jpg copies
    assert skipped == {"no image of that stem": 2298 - 733, "SCC: no HAM10000 class": 24}
    assert len(items) == 733 - 24 and all(p.is_file() for p, _, _ in items)
    assert {c for _, c, _ in items} == set(bench.SHARED)
    melanoma = [r for r in present if r["diagnostic"] == "MEL"]
    assert sum(c == "Melanoma" for _, c, _ in items) == len(melanoma) == 42
    typed = {t for _, _, t in items}
    assert typed <= {"1", "2", "3", "4", "5", "6", "unknown"} and "unknown" in typed and "2" in typed


def test_ham_test_items_are_the_five_shared_classes_of_the_test_split():
    items = bench.ham_test_items(HAM)
    split = {r["image_id"]: r["split"] for r in csv.DictReader(open(HAM / "dermamnist_split.csv", encoding="utf-8"))}
    dx = {r["image_id"]: r["dx"] for r in csv.DictReader(open(HAM / "HAM10000_metadata.csv", encoding="utf-8"))}
    expected = sum(s == "test" and dx[i] in ("akiec", "bcc", "bkl", "mel", "nv") for i, s in split.items())
    assert len(items) == expected and 1800 < expected < 2005


def test_figures_equal_a_direct_count():
    classes = bench.CLASSES
    rng = np.random.default_rng(3)
    gold = rng.choice([classes.index(c) for c in bench.SHARED], size=200)
    pred = np.where(rng.random(200) < 0.6, gold, rng.integers(0, len(classes), 200))
    figs, _ = bench.set_figures(gold, pred, np.random.default_rng(0), 200)
    present = sorted(set(gold.tolist()))
    recall = [np.mean(pred[gold == c] == c) for c in present]
    f1 = []
    for c in sorted(set(gold.tolist()) | set(pred.tolist())):
        tp, fp = np.sum((pred == c) & (gold == c)), np.sum((pred == c) & (gold != c))
        fn = np.sum((pred != c) & (gold == c))
        f1.append(2 * tp / (2 * tp + fp + fn))
    mel = classes.index("Melanoma")
    assert figs["accuracy"]["value"] == pytest.approx(np.mean(pred == gold), abs=1e-4)
    assert figs["balanced_accuracy"]["value"] == pytest.approx(np.mean(recall), abs=1e-4)
    assert figs["macro_f1"]["value"] == pytest.approx(np.mean(f1), abs=1e-4)
    assert figs["melanoma_recall"]["value"] == pytest.approx(np.mean(pred[gold == mel] == mel), abs=1e-4)
    for k in bench.FIGURES:
        lo, hi = figs[k]["ci"]
        assert lo <= figs[k]["value"] <= hi and hi - lo > 0.01
