import csv
import hashlib
import json

import numpy as np

from data_gen.synthetic_world import CONDITIONS, DERM1M_COLUMNS, build_world, render
from tests.conftest import ONTOLOGY


def _digest(folder):
    return hashlib.sha256(b"".join(p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file())).hexdigest()


def test_world_is_a_derm1m_release_and_deterministic(tmp_path):
    a = build_world(tmp_path / "a", n_images=48, size=64, seed=3, progress=False)
    build_world(tmp_path / "b", n_images=48, size=64, seed=3, progress=False)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    rows = list(csv.DictReader(open(a, encoding="utf-8")))
    assert list(rows[0]) == DERM1M_COLUMNS + ["fitzpatrick"]
    assert len(rows) == 48 and all((tmp_path / "a" / "images" / r["filename"]).exists() for r in rows)
    assert {r["disease_label"] for r in rows} == {c.label for c in CONDITIONS}
    assert {int(r["fitzpatrick"]) for r in rows} == set(range(1, 7))


def test_conditions_are_real_ontology_leaves_with_their_real_paths():
    flat = json.loads(ONTOLOGY.read_text())
    for c in CONDITIONS:
        assert flat[c.label] == [], f"{c.label} is not a leaf"
        assert c.path[0] in flat["root"]
        for parent, child in zip(c.path, c.path[1:]):
            assert child in flat[parent]


def test_sub_ontology_reproduces_the_shared_melanocytic_key(tmp_path):
    build_world(tmp_path, n_images=8, size=32, progress=False)
    flat = json.loads((tmp_path / "ontology.json").read_text())
    assert set(flat["melanocytic"]) == {"Malignant melanoma, melanoma", "Melanocytic nevus"}
    assert flat["benign"] == ["melanocytic"] and "melanocytic" in flat["malignant"]


def test_condition_signatures_differ_and_skin_tone_changes_background():
    imgs = {c.label: np.asarray(render(c, 3, 64, seed=1), dtype=float) for c in CONDITIONS}
    labels = list(imgs)
    for i, a in enumerate(labels):
        for b in labels[i + 1:]:
            assert np.abs(imgs[a] - imgs[b]).mean() > 1.0, (a, b)
    light = np.asarray(render(CONDITIONS[6], 1, 64, seed=1), dtype=float)[0, 0]
    dark = np.asarray(render(CONDITIONS[6], 6, 64, seed=1), dtype=float)[0, 0]
    assert light.mean() - dark.mean() > 100


def test_pixels_are_unchanged_by_the_masks():
    """The first 48 images of the seed-0 world hash as before masks were added (the quickstart's figures stand)."""
    import random

    digest, rng = hashlib.sha256(), random.Random(0)
    for i in range(48):
        digest.update(np.asarray(render(CONDITIONS[i % 8], (i // 8) % 6 + 1, 112, seed=rng.randrange(2**31))).tobytes())
    assert digest.hexdigest() == "8ca697b83a096ac1d5bc394aad0ef3e991cbf30707676a3348529f91739303db"


def test_masks_cover_the_drawn_lesion(tmp_path):
    from data_gen.synthetic_world import render_with_mask

    for tone in (1, 6):
        for c in CONDITIONS:
            img, mask = render_with_mask(c, tone, 112, seed=5)
            assert np.array_equal(np.asarray(img), np.asarray(render(c, tone, 112, seed=5)))
            pix, inside = np.asarray(img, dtype=float), np.asarray(mask) > 0
            skin = np.median(pix[~inside], axis=0)
            away = np.abs(pix - skin).max(-1)  # texture noise is sigma 4 per channel
            assert 0.005 < inside.mean() < 0.6, c.label
            assert (away[~inside] > 25).mean() < 0.01, (c.label, tone)  # no drawn lesion outside the mask
            assert away[inside].mean() > 3 * away[~inside].mean(), (c.label, tone)  # the mask is not plain skin
    build_world(tmp_path, n_images=8, size=64, progress=False)
    assert sorted(p.name for p in (tmp_path / "masks" / "synthetic").iterdir()) == \
        sorted(p.name for p in (tmp_path / "images" / "synthetic").iterdir())
