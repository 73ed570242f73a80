"""Out-of-distribution summary: the Mahalanobis score, the held-out threshold, the files in the model folder
(plain transformers still loads it), and `dermvqa ood-fit` on a tiny model and a small synthetic world."""
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner
from transformers import LlavaForConditionalGeneration

from dermvqa.model.ood import META_FILE, NOTICE, TENSORS_FILE, fit, fit_split, load_summary, training_images
from tests.conftest import PAD_PHOTO


def _gaussians(n, rng, shift=0.0):
    a = rng.normal(0, 1, (n, 6)) + np.array([3, 0, 0, 0, 0, 0]) + shift
    b = rng.normal(0, 1, (n, 6)) - np.array([3, 0, 0, 0, 0, 0]) + shift
    return torch.tensor(np.vstack([a, b])), ["a"] * n + ["b"] * n


def test_score_is_the_smallest_class_mahalanobis_distance_and_the_threshold_holds():
    rng = np.random.default_rng(0)
    train, labels = _gaussians(2000, rng)
    held, _ = _gaussians(500, rng)
    s = fit(train, labels, held, quantile=0.99, shrinkage=0.0)
    x = torch.tensor(rng.normal(0, 2, (5, 6)))
    cov = np.cov((train.numpy() - s.means.numpy()[[0 if lab == "a" else 1 for lab in labels]]).T, bias=True)
    prec = np.linalg.inv(cov)
    direct = [min((v - m) @ prec @ (v - m) for m in s.means.numpy()) / 6 for v in x.numpy()]
    assert s.scores(x).numpy() == pytest.approx(direct, rel=1e-6)
    fresh, _ = _gaussians(5000, rng)
    assert 0.002 < (s.scores(fresh) > s.threshold).float().mean() < 0.03  # about 1 - quantile
    far, _ = _gaussians(500, rng, shift=6.0)
    assert (s.scores(far) > s.threshold).float().mean() > 0.99
    verdict = s.judge(s.threshold * 2)
    assert verdict["unlike_training"] and verdict["message"].startswith(NOTICE)
    assert not s.judge(s.threshold / 2)["unlike_training"] and s.judge(0.0)["message"] == ""


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
    import stat

    from dermvqa.train.trainer import run_training
    from tests.train.tiny_run import make_world, recipe

    world = make_world(tmp_path / "w", n=24)
    final = run_training(recipe(world, tmp_path / "run", epochs=1))
    s = load_summary(final)
    assert s is not None and s.meta["n_fit"] + s.meta["n_held_out"] == 24 and len(s.classes) == 2
    for name in (TENSORS_FILE, META_FILE):
        assert stat.S_IMODE((final / name).stat().st_mode) & 0o044 == 0o044  # readable like the rest
    LlavaForConditionalGeneration.from_pretrained(final)
