"""Out-of-distribution summary: the standardised Mahalanobis score, the image statistics and layer features
against direct computations, the held-out threshold, the files in the model folder (plain transformers still
loads it; a version-1 folder still loads and scores as before; a newer one is refused in one line), the recipe's
ood section, and `dermvqa ood-fit` on a tiny model and a small synthetic world."""
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner
from transformers import LlavaForConditionalGeneration

from dermvqa.trust.features import STATS_SIDE, image_statistics, ood_features, pooled_features
from dermvqa.trust.ood import (FORMAT_VERSION, META_FILE, NOTICE, TENSORS_FILE, fit, fit_split, load_summary,
                               ood_settings, training_images)
from tests.conftest import PAD_PHOTO


def _gaussians(n, rng, shift=0.0):
    a = rng.normal(0, 1, (n, 6)) + np.array([3, 0, 0, 0, 0, 0]) + shift
    b = rng.normal(0, 1, (n, 6)) - np.array([3, 0, 0, 0, 0, 0]) + shift
    return torch.tensor(np.vstack([a, b])), ["a"] * n + ["b"] * n


def test_score_is_the_smallest_class_mahalanobis_distance_and_the_threshold_holds():
    rng = np.random.default_rng(0)
    train, labels = _gaussians(2000, rng)
    train[:, 5] *= 1000  # a feature on another scale: standardisation must take it out
    held, _ = _gaussians(500, rng)
    held[:, 5] *= 1000
    s = fit(train, labels, held, quantile=0.99, shrinkage=0.0)
    x = torch.tensor(rng.normal(0, 2, (5, 6)))
    z = (train.numpy() - train.numpy().mean(0)) / train.numpy().std(0)
    zx = (x.numpy() - train.numpy().mean(0)) / train.numpy().std(0)
    is_a = np.array(labels) == "a"
    class_means = [z[is_a].mean(0), z[~is_a].mean(0)]
    cov = np.cov(np.where(is_a[:, None], z - class_means[0], z - class_means[1]).T, bias=True)
    prec = np.linalg.inv(cov)
    direct = [min((v - m) @ prec @ (v - m) for m in class_means) / 6 for v in zx]
    assert s.scores(x).numpy() == pytest.approx(direct, rel=1e-6)
    fresh, _ = _gaussians(5000, rng)
    assert 0.002 < (s.scores(fresh) > s.threshold).float().mean() < 0.03  # about 1 - quantile
    far, _ = _gaussians(500, rng, shift=6.0)
    assert (s.scores(far) > s.threshold).float().mean() > 0.99
    verdict = s.judge(s.threshold * 2)
    assert verdict["unlike_training"] and verdict["message"].startswith(NOTICE)
    assert not s.judge(s.threshold / 2)["unlike_training"] and s.judge(0.0)["message"] == ""


def test_image_statistics_of_plain_and_split_photos():
    red = Image.new("RGB", (300, 200), (255, 0, 0))
    halves = Image.new("RGB", (STATS_SIDE, STATS_SIDE), (0, 0, 0))
    halves.paste((255, 255, 255), (0, 0, STATS_SIDE // 2, STATS_SIDE))  # left half white
    plain, split = image_statistics([red, halves]).numpy()
    assert plain[:6] == pytest.approx([1, 0, 0, 0, 0, 0]) and split[:6] == pytest.approx([0.5] * 6)
    assert plain[6:54].reshape(16, 3) == pytest.approx(np.tile([1, 0, 0], (16, 1)))  # 4x4 colour layout
    assert split[6:54].reshape(4, 4, 3)[:, :, 0] == pytest.approx(np.tile([1, 1, 0, 0], (4, 1)))
    assert split[54:62] == pytest.approx([0.5] * 8) and split[62:70] == pytest.approx([0.5] * 8)  # rings, both halves
    hist = plain[70:134] ** 2  # square-rooted 4x4x4 histogram: pure red is bin (3, 0, 0)
    assert hist[3 * 16] == pytest.approx(1) and hist.sum() == pytest.approx(1)
    assert split[70:134] ** 2 == pytest.approx(np.eye(64)[0] * 0.5 + np.eye(64)[63] * 0.5)
    assert plain[134:137] == pytest.approx([1, 1, 1])  # saturation percentiles
    edges = split[137::4]  # log edge strength at 5 scales: one black-white step across 127 columns of gaps
    assert edges[0] == pytest.approx(np.log(1 / (STATS_SIDE - 1) + 1e-4))
    assert plain[137::4] == pytest.approx([np.log(1e-4)] * 5)


def test_features_are_pooled_vision_features_then_image_statistics(tiny_model_dir):
    from dermvqa.infer.generate import load_model

    model, processor = load_model(tiny_model_dir, device="cpu")
    photos = [Image.open(PAD_PHOTO).convert("RGB"), Image.new("RGB", (90, 60), (200, 120, 90))]
    both = ood_features(model, processor, photos, "layers_meanstd")
    pix = processor.image_processor(photos, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        hidden = model.model.vision_tower(pix, output_hidden_states=True).hidden_states
    direct = torch.cat([t for h in hidden for t in (h[:, 1:].mean(1), h[:, 1:].std(1))], 1).double()
    assert both[:, :direct.shape[1]] == pytest.approx(direct, abs=1e-5)
    assert torch.equal(both[:, direct.shape[1]:], image_statistics(photos))
    assert torch.equal(ood_features(model, processor, photos, "tower_meanstd", with_image_stats=False),
                       pooled_features(model, processor, photos, "tower_meanstd"))


def test_outlier_head_is_the_logistic_optimum_flags_its_kind_and_round_trips(tmp_path):
    """Reference photos of another kind: the head's weights satisfy the optimum's gradient condition (so it is the
    regularised logistic regression), photos like the references are flagged though the Gaussian alone passes them,
    the threshold keeps held-out abstention near 1 - quantile, and the folder (version 3) loads to the same flags."""
    import json

    rng = np.random.default_rng(4)
    train, labels = _gaussians(1500, rng)
    held, _ = _gaussians(400, rng)
    near = torch.tensor(rng.normal(0, 1, (600, 6)) + np.array([3, 1, 1, 1, 1, 1]))  # a "clinical photo" shift
    outside, check = near[:300], near[300:]
    meta = {"pooling": "tower_meanstd", "image_stats": False}
    plain = fit(train, labels, held, quantile=0.98, meta=meta)
    s = fit(train, labels, held, quantile=0.98, meta=meta, outside=outside, l2=0.01)
    alone = float((plain.scores(check) > plain.threshold).float().mean())
    assert alone < 0.35 and s.flags(check).float().mean() > max(0.5, 1.5 * alone)  # the Gaussian lets most through
    assert 0.01 < s.flags(held).float().mean() < 0.06
    z_in, z_out = s.standardised(train), s.standardised(outside)
    x = torch.cat([z_in, z_out])
    y = torch.cat([torch.zeros(len(z_in)), torch.ones(len(z_out))]).double()
    wt = torch.where(y == 1, len(y) / (2 * len(z_out)), len(y) / (2 * len(z_in)))
    p = torch.sigmoid(x @ s.outlier[:-1] + s.outlier[-1])
    grad_w = x.T @ (wt * (p - y)) / len(y) + 2 * 0.01 * s.outlier[:-1]
    grad_b = (wt * (p - y)).mean()
    assert grad_w.abs().max() < 1e-5 and abs(float(grad_b)) < 1e-5
    assert s.outlier_threshold == pytest.approx(float(torch.quantile(s.outlier_scores(held), 0.98)))
    verdict = s.judge(0.0, s.outlier_threshold + 1)
    assert verdict["unlike_training"] and "outlier score" in verdict["message"] and "outlier_score" in verdict
    assert not s.judge(0.0, s.outlier_threshold - 1)["unlike_training"]
    s.save(tmp_path)
    assert json.loads((tmp_path / META_FILE).read_text())["version"] == FORMAT_VERSION == 3
    again = load_summary(tmp_path)
    assert torch.equal(again.flags(check), s.flags(check)) and again.outlier_threshold == s.outlier_threshold
    (tmp_path / "plain").mkdir()
    plain.save(tmp_path / "plain")
    assert json.loads((tmp_path / "plain" / META_FILE).read_text())["version"] == 2  # no head: older readers load it


def test_a_version_1_folder_still_loads_and_a_newer_one_is_refused(tmp_path):
    import json

    from safetensors.torch import save_file

    rng = np.random.default_rng(1)
    means, x = torch.tensor(rng.normal(0, 1, (2, 4))), torch.tensor(rng.normal(0, 1, (3, 4)))
    a = torch.tensor(rng.normal(0, 1, (4, 4)))
    precision = a @ a.T + torch.eye(4, dtype=torch.float64)
    save_file({"means": means, "precision": precision}, str(tmp_path / TENSORS_FILE))
    (tmp_path / META_FILE).write_text(json.dumps({"pooling": "tower_meanstd", "classes": ["a", "b"],
                                                  "threshold": 1.5, "quantile": 0.99}))
    old = load_summary(tmp_path)
    direct = [min(float((v - m) @ precision @ (v - m)) for m in means) / 4 for v in x]
    assert old.scores(x).numpy() == pytest.approx(direct, rel=1e-9) and old.threshold == 1.5
    assert old.meta["image_stats"] is False and "statistics" not in old.judge(1.0)["method"]
    (tmp_path / "resaved").mkdir()
    old.save(tmp_path / "resaved")
    again = load_summary(tmp_path / "resaved")
    assert again.scores(x).numpy() == pytest.approx(direct, rel=1e-9)
    assert json.loads((tmp_path / "resaved" / META_FILE).read_text())["version"] == 2
    (tmp_path / META_FILE).write_text(json.dumps({"version": 4, "pooling": "tower_meanstd", "classes": ["a", "b"],
                                                  "threshold": 1.5}))
    with pytest.raises(ValueError, match=f"{META_FILE}: out-of-distribution format version 4") as err:
        load_summary(tmp_path)
    assert "\n" not in str(err.value)
    (tmp_path / META_FILE).write_text(json.dumps({"version": 2, "pooling": "tower_meanstd", "classes": ["a", "b"],
                                                  "threshold": 1.5}))
    with pytest.raises(ValueError, match=f"{TENSORS_FILE} lacks centre, scale"):
        load_summary(tmp_path)


def test_recipe_ood_sections_are_checked_before_training():
    assert ood_settings(None) == {"pooling": "tower_meanstd", "with_image_stats": True, "quantile": 0.99}
    assert ood_settings({"pooling": "projected_mean", "quantile": 0.995}) == {
        "pooling": "projected_mean", "with_image_stats": True, "quantile": 0.995}
    for section, message in (({"pooling": "cls"}, "ood.pooling must be one of"), ({"quantile": 1.5}, "ood.quantile"),
                             ({"image_stats": "yes"}, "ood.image_stats"), ({"pool": "x"}, "unknown key pool")):
        with pytest.raises(ValueError, match=message):
            ood_settings(section)


def test_training_images_take_the_diagnosis_and_the_split_is_stable():
    records = [{"image": "x.png", "family": "yes_no"}, {"image": "x.png", "family": "diagnosis", "label": "nevus"},
               {"image": "y.png", "family": "morphology"}]
    assert training_images(records) == {"x.png": "nevus", "y.png": "(no diagnosis)"}
    names = {f"img_{i}.png": "a" for i in range(400)}
    kept, held = fit_split(names)
    assert set(kept).isdisjoint(held) and len(kept) + len(held) == 400 and 30 < len(held) < 90
    assert fit_split(dict(reversed(list(names.items()))))[1] == held


def test_ood_fit_writes_a_summary_plain_transformers_ignores(chatty_model_dir, tmp_path):
    from data_gen.records import QARecord, write_parquet
    from data_gen.synthetic_world import CONDITIONS, build_world
    from dermvqa.cli import app
    from dermvqa.infer.generate import load_model

    model_dir = tmp_path / "model"
    shutil.copytree(chatty_model_dir, model_dir)
    world = tmp_path / "world"
    build_world(world, n_images=80, progress=False)
    records = [{"id": f"r{i}", "image": f"synthetic/lesion_{i:05d}.png", "family": "diagnosis",
                "label": CONDITIONS[i % 8].label, "question": "What is the diagnosis?",
                "answer": CONDITIONS[i % 8].label, "answer_type": "open"} for i in range(80)]
    write_parquet([QARecord(**r) for r in records], tmp_path / "qa" / "train.parquet")
    result = CliRunner().invoke(app, ["ood-fit", "--model", str(model_dir), "--qa", str(tmp_path / "qa"),
                                      "--images", str(world / "images"), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert (model_dir / TENSORS_FILE).is_file() and (model_dir / META_FILE).is_file()
    s = load_summary(model_dir)
    assert s.classes == sorted(c.label for c in CONDITIONS) and s.meta["n_fit"] + s.meta["n_held_out"] == 80
    LlavaForConditionalGeneration.from_pretrained(model_dir)  # the extra files do not disturb transformers
    model, processor = load_model(model_dir, device="cpu")
    inside = [s.check(model, processor, Image.open(world / "images" / r["image"]))["score"] for r in records[:40]]
    outside = s.check(model, processor, Image.open(PAD_PHOTO))
    assert outside["unlike_training"] and outside["score"] > max(inside)
    assert load_summary(chatty_model_dir) is None


def test_training_ends_with_a_summary_in_the_model_folder(tmp_path):
    """Fitted with the recipe's ood section: configs/tiny_cpu.yaml's quantile, a --set pooling."""
    import stat

    from dermvqa.train.trainer import run_training
    from tests.train.tiny_run import make_world, recipe

    world = make_world(tmp_path / "w", n=24)
    final = run_training(recipe(world, tmp_path / "run", epochs=1, extra=("ood.pooling=tower_mean",)))
    s = load_summary(final)
    assert s is not None and s.meta["n_fit"] + s.meta["n_held_out"] == 24 and len(s.classes) == 2
    assert (s.meta["pooling"], s.meta["image_stats"], s.meta["quantile"]) == ("tower_mean", True, 0.995)
    assert not list(final.glob(".dermvqa_ood*"))  # no temp file of the atomic save left behind
    for name in (TENSORS_FILE, META_FILE):
        assert stat.S_IMODE((final / name).stat().st_mode) & 0o044 == 0o044  # readable like the rest
    LlavaForConditionalGeneration.from_pretrained(final)
