import json
import random

import numpy as np
import pytest

from dermvqa.eval.strata import bootstrap_means, skin_type_gap, stratify, summarize


def rows(n=120, seed=1):
    rng = random.Random(seed)
    out = []
    for i in range(n):
        fz = i % 3 + 1
        out.append({"id": str(i), "family": ["yes_no", "diagnosis"][i % 2], "source": "", "group": "",
                    "fitzpatrick": fz if i % 10 else 0,
                    "scores": {"accuracy": float(rng.random() < {1: 0.9, 2: 0.6, 3: 0.3}[fz])}})
    return out


def test_summary_mean_and_interval():
    r = rows()
    s = summarize(r, "all")["accuracy"]
    vals = [x["scores"]["accuracy"] for x in r]
    assert s["value"] == pytest.approx(np.mean(vals)) and s["n"] == 120
    assert s["ci"][0] < s["value"] < s["ci"][1]
    # the percentile interval of a binary mean with n=120 is roughly +-1.96 * standard error
    se = np.std(vals) / np.sqrt(len(vals))
    assert s["ci"][1] - s["ci"][0] == pytest.approx(2 * 1.96 * se, rel=0.2)


def test_bootstrap_is_seeded_and_keyed():
    v = np.array([0.0, 1.0, 1.0, 0.0, 1.0])
    assert np.array_equal(bootstrap_means(v, "k", 200, 0), bootstrap_means(v, "k", 200, 0))
    assert not np.array_equal(bootstrap_means(v, "k", 200, 0), bootstrap_means(v, "k", 200, 1))
    assert not np.array_equal(bootstrap_means(v, "k", 200, 0), bootstrap_means(v, "other", 200, 0))
    big = (np.arange(50_000) % 4 == 0).astype(float)      # large enough to be drawn in several chunks
    boots = bootstrap_means(big, "k", 100, 0)
    assert boots.shape == (100,) and np.all(np.abs(boots - 0.25) < 0.01) and boots.std() > 0


def test_strata_are_reproducible_to_the_byte():
    a = json.dumps(stratify(rows()), sort_keys=True)
    b = json.dumps(stratify(rows()), sort_keys=True)
    assert a == b
    s = json.loads(a)
    assert set(s) == {"family", "fitzpatrick"}            # source and group are all unknown: left out
    assert set(s["fitzpatrick"]) == {"1", "2", "3", "unknown"}
    assert s["family"]["yes_no"]["accuracy"]["n"] == 60


def test_skin_type_gap():
    r = rows()
    gap = skin_type_gap(r, ["accuracy"], min_n=10)["accuracy"]
    means = {k: np.mean([x["scores"]["accuracy"] for x in r if str(x["fitzpatrick"]) == k]) for k in "123"}
    assert gap["best"] == max(means, key=means.get) and gap["worst"] == min(means, key=means.get)
    assert gap["gap"] == pytest.approx(max(means.values()) - min(means.values()))
    assert gap["ci"][0] <= gap["gap"] <= gap["ci"][1]
    assert skin_type_gap(r, ["accuracy"], min_n=10) == skin_type_gap(r, ["accuracy"], min_n=10)
    assert "not_computed" in skin_type_gap(r, ["accuracy"], min_n=1000)["accuracy"]
