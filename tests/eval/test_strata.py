import json
import random

import numpy as np
import pytest

from dermvqa.eval.classify import balanced_accuracy, macro_f1
from dermvqa.eval.skin_types import figures, per_type
from dermvqa.eval.strata import bootstrap_means, keyed_rng, skin_type_gap, stratify, summarize


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


def _direct(gold, pred):
    """Accuracy, balanced accuracy and macro-F1 by counting, item by item (None = no class predicted)."""
    classes = sorted(set(gold))
    acc = sum(g == p for g, p in zip(gold, pred)) / len(gold)
    recall = [sum(g == p == c for g, p in zip(gold, pred)) / gold.count(c) for c in classes]
    f1 = []
    for c in sorted(set(gold) | {p for p in pred if p is not None}):
        tp = sum(g == p == c for g, p in zip(gold, pred))
        f1.append(2 * tp / (gold.count(c) + pred.count(c)))
    return {"accuracy": acc, "balanced_accuracy": sum(recall) / len(recall), "macro_f1": sum(f1) / len(f1)}


def _classified(n=300, seed=3):
    """Four classes; type 1 answered well, type 4 badly, type 6 has 4 items, some items without a type."""
    rng = random.Random(seed)
    skill = {"1": 0.9, "2": 0.7, "4": 0.4, "6": 0.5, "unknown": 0.6}
    gold, pred, types = [], [], []
    for i in range(n):
        t = "6" if i < 4 else ["1", "2", "4", "unknown"][i % 4]
        g = rng.randrange(4)
        p = g if rng.random() < skill[t] else rng.choice([None, (g + 1) % 4, (g + 2) % 4])
        gold.append(g), pred.append(p), types.append(t)
    return gold, pred, types


def test_per_type_figures_equal_a_direct_count_and_few_types_are_marked():
    gold, pred, types = _classified()
    out = per_type(["a", "b", "c", "d"], gold, pred, types, "k", n_boot=200, min_n=10)
    assert list(out["types"]) == ["1", "2", "4", "6", "unknown"]     # every type shown, unknown last
    for t, v in out["types"].items():
        idx = [i for i, x in enumerate(types) if x == t]
        direct = _direct([gold[i] for i in idx], [pred[i] for i in idx])
        assert v["n"] == len(idx) and v["few_items"] == (len(idx) < 10)
        for m, value in direct.items():
            assert v[m]["value"] == pytest.approx(value) and v[m]["n"] == len(idx)
            assert v[m]["ci"][0] <= value <= v[m]["ci"][1]
    assert out["types"]["6"]["few_items"] and not out["types"]["4"]["few_items"]
    # the vectorised resample figures agree with the plain definitions of classify.py on random resamples
    rng = np.random.default_rng(0)
    g, p = np.array(gold), np.array([-1 if x is None else x for x in pred])
    idx = rng.integers(0, len(gold), size=(20, len(gold)))
    many = figures(g[idx], p[idx], 4)
    assert np.allclose(many["balanced_accuracy"], [balanced_accuracy(g[i], p[i]) for i in idx])
    assert np.allclose(many["macro_f1"], [macro_f1(g[i], p[i]) for i in idx])


def test_gap_uses_known_types_with_enough_items_and_its_interval_is_as_documented():
    gold, pred, types = _classified()
    out = per_type(["a", "b", "c", "d"], gold, pred, types, "run/fam", n_boot=400, seed=5, min_n=10)
    for m in ("accuracy", "balanced_accuracy", "macro_f1"):
        gap, values = out["gap"][m], {t: v[m]["value"] for t, v in out["types"].items() if t in ("1", "2", "4")}
        assert (gap["best"], gap["worst"]) == (max(values, key=values.get), min(values, key=values.get))
        assert gap["gap"] == pytest.approx(max(values.values()) - min(values.values()))
        # documented: percentile interval of best-type minus worst-type bootstrap figures, each type resampled
        # on its own from the generator keyed by (seed, key/type)
        boots = {}
        for t in (gap["best"], gap["worst"]):
            ix = [i for i, x in enumerate(types) if x == t]
            g, p = np.array([gold[i] for i in ix]), np.array([-1 if pred[i] is None else pred[i] for i in ix])
            draw = keyed_rng(5, f"run/fam/{t}").integers(0, len(ix), size=(400, len(ix)))
            boots[t] = np.array([_direct(list(g[d]), [None if x < 0 else x for x in p[d]])[m] for d in draw])
        assert gap["ci"] == pytest.approx(list(np.percentile(boots[gap["best"]] - boots[gap["worst"]], [2.5, 97.5])))
    acc = out["gap"]["accuracy"]   # and the width is that of a difference of two independent proportions
    n1, n2 = out["types"][acc["best"]]["n"], out["types"][acc["worst"]]["n"]
    p1, p2 = out["types"][acc["best"]]["accuracy"]["value"], out["types"][acc["worst"]]["accuracy"]["value"]
    se = np.sqrt(p1 * (1 - p1) / n1 + p2 * (1 - p2) / n2)
    assert acc["ci"][1] - acc["ci"][0] == pytest.approx(2 * 1.96 * se, rel=0.2)
    assert per_type(["a", "b", "c", "d"], gold, pred, types, "run/fam", n_boot=400, seed=5) == out
    few = per_type(["a", "b", "c", "d"], gold, pred, types, "k", n_boot=50, min_n=1000)
    assert few["gap"]["accuracy"] == {"not_computed": "fewer than two skin types with >= 1000 items"}
    assert all(v["few_items"] for v in few["types"].values())


class _Log:
    def __init__(self, replies):
        self.replies = replies

    def get(self, item_id, blind):
        return {"reply": "" if blind else self.replies[item_id]}


def test_metrics_json_and_report_show_skin_types(tmp_path, monkeypatch):
    from dermvqa.eval import metrics
    from dermvqa.eval.items import Bench, EvalItem
    from dermvqa.eval.report import render
    from dermvqa.eval.summary import build_metrics

    monkeypatch.setattr(metrics, "meteor_status", lambda: "not needed here")  # loading WordNet takes 10 s

    names = ["melanoma", "superficial spreading melanoma", "eczema"]
    items, replies, rng = [], {}, random.Random(0)
    for i in range(90):
        fz = 6 if i < 3 else [1, 3, 5][i % 3]
        gold = names[i % 3]
        said = gold if rng.random() < {1: 0.9, 3: 0.6, 5: 0.3, 6: 0.5}[fz] else names[(i + 1) % 3]
        items.append(EvalItem(id=f"d{i}", images=[tmp_path / "x.png"], question="What is the diagnosis?",
                              references=[gold], answer_type="open", label=gold, family="diagnosis", fitzpatrick=fz))
        replies[f"d{i}"] = f"This looks like {said}."
        opts = ["malignant", "benign", "non-neoplastic"]
        items.append(EvalItem(id=f"n{i}", images=[tmp_path / "x.png"], question="?", references=[opts[i % 3]],
                              answer_type="closed", options=opts, answer_index=i % 3, family="neoplasm",
                              fitzpatrick=fz if i % 5 else 0))
        replies[f"n{i}"] = opts[i % 3] if rng.random() < 0.7 else opts[(i + 1) % 3]
    bench = Bench(kind="qa", spec="qa:x", items=items)
    m = build_metrics(bench, items, {}, _Log(replies), {"model": "m", "mode": "generate", "decoding": "greedy",
                                                        "max_new_tokens": 8}, blind=True, n_boot=100)
    dx = m["skin_type"]["image"]["diagnosis"]
    assert dx["prediction"] == "reply names one gold diagnosis" and dx["classes"] == 3
    for t, v in dx["types"].items():
        its = [it for it in items if it.family == "diagnosis" and str(it.fitzpatrick) == t]
        # 'melanoma' inside 'superficial spreading melanoma' is not a second class named
        direct = _direct([it.gold for it in its], [next(n for n in sorted(names, key=len, reverse=True)
                                                        if n in replies[it.id]) for it in its])
        assert v["balanced_accuracy"]["value"] == pytest.approx(direct["balanced_accuracy"])
        assert v["macro_f1"]["value"] == pytest.approx(direct["macro_f1"])
    assert dx["types"]["6"]["few_items"] and "6" not in (dx["gap"]["accuracy"]["best"], dx["gap"]["accuracy"]["worst"])
    assert "unknown" in m["skin_type"]["image"]["neoplasm"]["types"]
    assert m["skin_type"]["blind"]["neoplasm"]["types"]["1"]["accuracy"]["value"] == 0.0
    md = render(m, {"answered_now": 0, "resumed": 0, "device": "", "dtype": "", "batch_size": 1,
                    "answer_seconds": 0, "questions_per_second": None, "total_seconds": 0}, [])
    section = md.split("## Classification by skin type")[1]
    assert "### diagnosis (3 classes" in section and "| 6 (few) | 3 |" in section
    assert "| unknown | " in section and "Gap best − worst type: accuracy " in section
    none = build_metrics(Bench(kind="qa", spec="qa:x", items=items[:2]), [
        EvalItem(**{**it.__dict__, "fitzpatrick": 0}) for it in items[:2]], {}, _Log(replies), {}, blind=False,
        n_boot=10)
    assert none["skin_type"]["image"] == {"not_computed": "no scored item carries a skin type"}
