"""Grounding maps: gradient x input is the first-order effect of each image token on the answer's log-probability,
both methods score the same answer as option likelihood does, and the overlay/JSON describe the same map."""
import copy
import json

import numpy as np
import pytest
import torch
from PIL import Image

from dermvqa.infer.generate import load_model
from dermvqa.infer.grounding import (METHODS, _answer_logprob, _image_features, _inputs, explain,
                                     explanation_payload, processor_view, write_explanation)
from dermvqa.infer.likelihood import option_logprobs
from tests.conftest import PAD_PHOTO

QUESTION = "What is the most likely diagnosis for this lesion?"


@pytest.fixture(scope="module")
def setup(chatty_model_dir):
    model, processor = load_model(chatty_model_dir, device="cpu")
    return model, processor, Image.open(PAD_PHOTO).convert("RGB")


@pytest.mark.parametrize("method", METHODS)
def test_map_covers_the_patch_grid_and_scores_the_answer_as_likelihood_does(setup, method):
    model, processor, photo = setup
    e = explain(model, processor, photo, QUESTION, "melanoma", method)
    side = processor.image_processor.crop_size["height"] // processor.patch_size
    assert e.grid.shape == (side, side) and np.isfinite(e.grid).all() and e.grid.std() > 0
    expected = option_logprobs(model, processor, [photo], [QUESTION], [["melanoma"]])[0][0]
    assert e.extra["answer_logprob"] == pytest.approx(expected, abs=1e-3)
    if method == "rollout":  # shares of attention flow: non-negative, at most all of it
        assert e.grid.min() >= 0 and e.grid.sum() <= 1 + 1e-6


def test_gradient_times_input_predicts_the_effect_of_scaling_a_patch(setup):
    model, processor, photo = setup
    answer = "basal cell carcinoma"
    e = explain(model, processor, photo, QUESTION, answer, "gradxinput")
    ids, n_answer, pixels = _inputs(model, processor, photo, QUESTION, answer)
    exact = copy.deepcopy(model).double()  # the finite difference in float64: in float32 a 1e-3 step of a patch
    with torch.no_grad():                  # moves logp by ~1e-5, near its rounding step, and can read as 0
        feats = _image_features(exact, pixels.double())
        is_image = ids[0] == model.config.image_token_id

        def logp(scale_patch, eps):
            f = feats.clone()
            f[scale_patch] *= 1 + eps
            embeds = exact.get_input_embeddings()(ids).clone()
            embeds[0, is_image] = f
            logits = exact(inputs_embeds=embeds).logits[0, -n_answer - 1:-1]  # _answer_logprob, kept in float64
            return float(torch.log_softmax(logits, -1).gather(-1, ids[0, -n_answer:, None]).sum())

        eps = 1e-3
        side = e.grid.shape[0]
        for flat in (int(np.argmax(e.grid)), int(np.argmin(e.grid)), 17):
            change = (logp(flat, eps) - logp(flat, -eps)) / (2 * eps)  # d logp / d scale = grad . feats there
            assert change == pytest.approx(e.grid[flat // side, flat % side], rel=0.05, abs=1e-3)


def test_overlay_and_grid_agree(setup, tmp_path):
    model, processor, photo = setup
    e = explain(model, processor, photo, QUESTION, "vitiligo")
    info = write_explanation(photo, e, processor, tmp_path / "x")
    grid = json.loads((tmp_path / "x.json").read_text())
    assert grid["answer"] == "vitiligo" and grid["method"] == e.method
    assert np.argmax(np.array(grid["grid"])) == np.argmax(e.grid) and grid["peak"] == list(e.peak()) == info["peak"]
    assert max(map(max, grid["grid"])) == 1 and min(map(min, grid["grid"])) == 0
    png = Image.open(tmp_path / "x.png")
    assert png.size[0] > 400 and png.size[1] > 400
    payload = explanation_payload(model, processor, photo, QUESTION, "vitiligo")
    assert payload["grid"] == grid["grid"] and payload["overlay_png"].startswith("data:image/png;base64,")


def test_view_is_the_centre_square_the_processor_sees(setup):
    _, processor, _ = setup
    wide = Image.new("RGB", (300, 100), (0, 0, 255))
    wide.paste((255, 0, 0), (100, 0, 200, 100))  # the centre square is red
    view = np.asarray(processor_view(wide, processor, 64), dtype=int)
    assert view.shape == (64, 64, 3) and (view[..., 0] > 200).mean() > 0.95


def test_bad_requests_are_refused(setup):
    model, processor, photo = setup
    with pytest.raises(ValueError, match="method"):
        explain(model, processor, photo, QUESTION, "melanoma", "saliency")
    with pytest.raises(ValueError, match="no answer"):
        explain(model, processor, photo, QUESTION, "  ")


def test_pixel_map_bounds_the_effect_of_scaling_a_patch(setup):
    model, processor, photo = setup
    answer = "melanoma"
    e = explain(model, processor, photo, QUESTION, answer, "pixels")
    ids, n_answer, pixels = _inputs(model, processor, photo, QUESTION, answer)
    patch, side = model.config.vision_config.patch_size, e.grid.shape[0]

    def logp(flat, eps):
        scaled = pixels.clone()
        r, c = divmod(flat, side)
        scaled[..., r * patch:(r + 1) * patch, c * patch:(c + 1) * patch] *= 1 + eps
        with torch.no_grad():
            return float(_answer_logprob(model(input_ids=ids, pixel_values=scaled).logits, ids, n_answer))

    base, eps = logp(0, 0.0), 1e-3
    assert e.grid.min() >= 0
    for flat in (int(np.argmax(e.grid)), 5, 40):
        change = abs(logp(flat, eps) - base) / eps  # |sum of gradient x pixel| <= sum of |gradient x pixel|
        assert change <= e.grid[flat // side, flat % side] * 1.05 + 1e-3


def test_peak_point_is_the_hottest_pixel_or_the_centre_of_the_hottest_patch(setup, tmp_path):
    model, processor, photo = setup
    answer = "melanoma"
    e = explain(model, processor, photo, QUESTION, answer, "pixels")
    ids, n_answer, pixels = _inputs(model, processor, photo, QUESTION, answer)
    pixels.requires_grad_(True)
    (grad,) = torch.autograd.grad(_answer_logprob(model(input_ids=ids, pixel_values=pixels).logits, ids, n_answer),
                                  pixels)
    saliency = (grad * pixels).detach().abs().sum(1)[0].numpy()
    side = saliency.shape[0]
    padded = np.pad(saliency, 1)
    window = sum(padded[i:i + side, j:j + side] for i in range(3) for j in range(3))  # 3 x 3 sums
    y, x = e.peak_point()
    r, c = int(y * side), int(x * side)
    assert window[r, c] == pytest.approx(window.max(), rel=1e-4)
    assert 0 < window.max() and window[r, c] > np.median(window) * 2
    for method in ("gradxinput", "rollout"):
        patchy = explain(model, processor, photo, QUESTION, answer, method)
        pr, pc = patchy.peak()
        rows = patchy.grid.shape[0]
        assert patchy.peak_point() == pytest.approx(((pr + 0.5) / rows, (pc + 0.5) / rows))
    info = write_explanation(photo, e, processor, tmp_path / "p")
    assert info["peak_point"] == json.loads((tmp_path / "p.json").read_text())["peak_point"] == [round(v, 4) for v in (y, x)]
