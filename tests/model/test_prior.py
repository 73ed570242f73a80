"""The training prior: counted from train diagnosis records only; logit adjustment equals a hand computation."""
import json
import math

import numpy as np
import pytest

from dermvqa.eval.diagnosis_table import adjusted_probs
from dermvqa.model.prior import adjusted, load_prior, write_prior


def test_prior_counts_and_adjustment_by_hand(tmp_path):
    write_prior(tmp_path, ["nevus"] * 3 + ["melanoma"])
    prior = load_prior(tmp_path)
    assert prior == {"melanoma": 0.25, "nevus": 0.75}
    # log p(nevus)=-0.1, log p(melanoma)=-2.4: minus log prior -> -0.1+0.2877 vs -2.4+1.3863
    got = adjusted([-0.1, -2.4], ["nevus", "melanoma"], prior, 1.0)
    assert got == pytest.approx([-0.1 - math.log(0.75), -2.4 - math.log(0.25)])
    probs = adjusted_probs(np.array([[0.6, 0.4]]), ["nevus", "melanoma"], prior)
    assert probs[0] == pytest.approx([0.6 / 0.75 / (0.6 / 0.75 + 0.4 / 0.25), 0.4 / 0.25 / (0.6 / 0.75 + 0.4 / 0.25)])
    assert probs[0].argmax() == 1  # the minority class wins once the prior is taken out
    assert adjusted([-1.0], ["nevus"], prior, 0.0) == [-1.0]


def test_prior_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="dermvqa_prior.json not found"):
        load_prior(tmp_path)
    (tmp_path / "dermvqa_prior.json").write_text(json.dumps({"prior": {"nevus": 0}}))
    with pytest.raises(ValueError, match="dermvqa_prior.json: 'prior' must map"):
        load_prior(tmp_path)
    write_prior(tmp_path, ["nevus"])
    with pytest.raises(ValueError, match=r"no training prior for \['tinea'\]"):
        adjusted([0.0], ["tinea"], load_prior(tmp_path), 1.0)
