"""dermvqa.bench.baseline_cnn end to end on a few dozen real HAM10000 / Fitzpatrick17k images, a few seconds each:
the figures it prints and saves equal a direct computation from the predictions it saved, the budget comes from
--seconds or from ours' recorded training seconds, and ours' figures are printed beside the baseline's."""
import csv
import json

import numpy as np
import pytest

from dermvqa.bench import baseline_cnn as bench
from dermvqa.bench import ours_run
from tests.conftest import ONTOLOGY, REPO, SHARED_DATA

HAM, F17K = SHARED_DATA / "ham10000", SHARED_DATA / "fitzpatrick17k"
TOKENIZERS = SHARED_DATA / "tokenizers"
FIGURES = ("accuracy", "auc", "balanced_accuracy", "macro_f1", "melanoma_recall")


def _rows(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _write(path, rows):
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


@pytest.fixture(scope="module")
def ham_subset(tmp_path_factory):
    """A HAM10000 folder of 4 train + 3 test images per class (the real files, linked)."""
    root = tmp_path_factory.mktemp("ham")
    split = _rows(HAM / "dermamnist_split.csv")
    keep = {r["image_id"] for c in "0123456" for s, n in (("train", 4), ("test", 3))
            for r in [r for r in split if r["label"] == c and r["split"] == s][:n]}
    _write(root / "HAM10000_metadata.csv", [r for r in _rows(HAM / "HAM10000_metadata.csv") if r["image_id"] in keep])
    (root / "images").symlink_to(HAM / "images")
    (root / "dermamnist_split.csv").symlink_to(HAM / "dermamnist_split.csv")
    return root


def direct_figures(pred_rows, classes):
    """The five figures computed straight from saved predictions, independently of the script's code."""
    gold = np.array([r["gold"] for r in pred_rows])
    probs = np.array([r["probs"] for r in pred_rows])
    pred = probs.argmax(1)
    present = sorted(set(gold))
    f1 = [2 * np.sum((pred == c) & (gold == c)) / (np.sum(pred == c) + np.sum(gold == c))
          for c in sorted(set(gold) | set(pred))]
    aucs = []
    for c in range(len(classes)):
        pos, neg = probs[gold == c, c], probs[gold != c, c]
        if len(pos) and len(neg):
            aucs.append(np.mean([(p > q) + 0.5 * (p == q) for p in pos for q in neg]))
    mel = [i for i, c in enumerate(classes) if "melanoma" in c.lower()]
    is_mel = np.isin(gold, mel)
    return {"accuracy": np.mean(pred == gold), "auc": np.mean(aucs), "n_melanoma": int(is_mel.sum()),
            "balanced_accuracy": np.mean([np.mean(pred[gold == c] == c) for c in present]),
            "macro_f1": np.mean(f1), "melanoma_recall": np.mean(np.isin(pred[is_mel], mel)) if is_mel.any() else None}


def printed_table(text):
    """{figure: [printed cells]} from the markdown table the script prints."""
    return {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
            for line in text.splitlines() if line.startswith("| ") and line.split("|")[1].strip() in FIGURES}


def check_against_predictions(result, printed, n_test):
    expected = direct_figures(result["predictions"], result["classes"])
    assert len(result["predictions"]) == n_test
    for f in FIGURES:
        got = result["baseline"][f]
        assert got["value"] == pytest.approx(expected[f], abs=1e-9), f
        assert got["ci"][0] <= got["ci"][1]
        assert got["n"] == (expected["n_melanoma"] if f == "melanoma_recall" else n_test)
        assert printed[f][0].startswith(f"{expected[f]:.3f} ["), (f, printed[f])


def test_ham_subset_end_to_end(ham_subset, tmp_path, capsys):
    out = tmp_path / "baseline.json"
    assert bench.main(["--data", str(ham_subset), "--seconds", "3", "--threads", "1", "--n-boot", "50", "--out", str(out)]) == 0
    result, text = json.loads(out.read_text()), capsys.readouterr().out
    assert result["classes"] == bench.HAM_CLASSES
    assert result["train"]["train_images"] == 28 and result["train"]["steps"] > 0
    assert result["train"]["seconds"] >= 3 and result["train"]["images_seen"] == 64 * result["train"]["steps"]
    assert result["settings"]["image_size"] == 32 and result["settings"]["balance"] == 1.0
    check_against_predictions(result, printed_table(text), 21)
    assert result["baseline"]["melanoma_recall"]["n"] == 3
    assert "baseline_skin_type" not in result  # HAM10000 carries no skin types


def test_budget_and_rows_from_ours(ham_subset, tmp_path, capsys):
    """--ours: rows from its import, seconds from its seconds.train, resolution from its model's processor,
    sampling from the recipe it trained with, and its recorded figures printed beside the baseline's."""
    from data_gen.importers.ham10000 import import_ham10000
    from transformers import AutoTokenizer

    from dermvqa.model.processor import IMAGE_TOKEN, build_processor, clip_image_processor

    run = tmp_path / "run"
    import_ham10000(ham_subset / "HAM10000_metadata.csv", ham_subset / "images", run / "data",
                    split_file=ham_subset / "dermamnist_split.csv")
    tokenizer = AutoTokenizer.from_pretrained(TOKENIZERS / "qwen2.5")
    tokenizer.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN]})
    build_processor(clip_image_processor(24), tokenizer, 8, tokenizer.chat_template).save_pretrained(
        run / "train" / "model")  # as training saves a model folder (processor_config.json)
    recipe = (REPO / "configs" / "ham10000_cpu.yaml").read_text().replace("balance: 1.0", "balance: 0.5")
    (run / "train" / "recipe.yaml").write_text(recipe.replace("label_smoothing: 0.1}", "label_smoothing: 0.1, "
                                                              "skin_type_balance: 1.0}"))
    ours = {f: 0.1 * (i + 1) for i, f in enumerate(FIGURES)}
    (run / "ham10000_metrics.json").write_text(json.dumps({
        "seconds": {"train": 2}, "model": str(run / "train" / "model"),
        "official_test": {"option_likelihood": ours, "open_answer": {**ours, "auc": None}}}))
    out = tmp_path / "baseline.json"
    assert bench.main(["--data", str(ham_subset), "--ours", str(run), "--threads", "1", "--n-boot", "50", "--out", str(out)]) == 0
    result, text = json.loads(out.read_text()), capsys.readouterr().out
    assert result["settings"]["seconds"] == 2 and result["settings"]["seconds_from"] == "--ours"
    assert result["settings"]["image_size"] == 24 and result["settings"]["rows"] == str(run / "data" / "derm1m.csv")
    assert result["settings"]["recipe"] == str(run / "train" / "recipe.yaml")
    assert (result["settings"]["balance"], result["settings"]["skin_type_balance"]) == (0.5, 1.0)
    printed = printed_table(text)
    for f in FIGURES:
        assert printed[f][1:] == [f"{ours[f]:.3f}", "—" if f == "auc" else f"{ours[f]:.3f}"]
    check_against_predictions(result, printed, 21)


def test_fitzpatrick17k_skin_types(tmp_path, capsys):
    """Per skin type figures equal a direct computation on each type's saved predictions."""
    subset = tmp_path / "f17k"
    subset.mkdir()
    rows = _rows(F17K / "ajl_subset.csv")
    labels = ["squamous cell carcinoma", "basal cell carcinoma", "melanoma", "folliculitis"]
    usable = [r for r in rows if r["label"] in labels and not r["identical_content_as"]]

    def pick(split, skin_type, n):
        return [r for lab in labels for r in [r for r in usable if r["label"] == lab and r["ajl_split"] == split
                                              and r["fitzpatrick_scale"] == skin_type][:n]]
    # test: types 2 and 3 with 12 items each (a gap is computed), type 5 with 4 (shown, marked few)
    keep = pick("train", "2", 3) + pick("train", "4", 3) + pick("test", "2", 3) + pick("test", "3", 3) + \
        pick("test", "5", 1)
    _write(subset / "ajl_subset.csv", keep)
    (subset / "images").symlink_to(F17K / "images")
    out = tmp_path / "baseline.json"
    assert bench.main(["--dataset", "fitzpatrick17k", "--data", str(subset), "--ontology", str(ONTOLOGY),
                       "--seconds", "2", "--threads", "1", "--n-boot", "50", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["settings"]["image_size"] == 64  # configs/fitzpatrick17k_cpu.yaml's
    text = capsys.readouterr().out
    check_against_predictions(result, printed_table(text), 28)
    assert "| 5 (few) | 4 |" in text
    by_type = {}
    for p in result["predictions"]:
        by_type.setdefault(p["fitzpatrick"] or "unknown", []).append(p)
    assert set(result["baseline_skin_type"]["types"]) == set(by_type) == {"2", "3", "5"}
    direct = {t: direct_figures(preds, result["classes"]) for t, preds in by_type.items()}
    for t, preds in by_type.items():
        got = result["baseline_skin_type"]["types"][t]
        assert got["n"] == len(preds) and got["few_items"] == (len(preds) < 10)
        for f in ("accuracy", "balanced_accuracy", "macro_f1"):
            assert got[f]["value"] == pytest.approx(direct[t][f]), (t, f)
    for f in ("accuracy", "balanced_accuracy", "macro_f1"):  # type 5 has too few items to take part
        assert result["baseline_skin_type"]["gap"][f]["gap"] == pytest.approx(abs(direct["2"][f] - direct["3"][f]))


def test_ours_fitzpatrick17k_figures(tmp_path):
    """Ours' 21-way figures come per skin type; the overall accuracy is their n-weighted mean, and the per-type
    table shows ours' cells beside the baseline's."""
    def fig(v):
        return {"value": v, "ci": [v - 0.1, v + 0.1], "n": 1}
    types = {"1": {"n": 30, "few_items": False, "accuracy": fig(0.5), "balanced_accuracy": fig(0.4), "macro_f1": fig(0.3)},
             "6": {"n": 5, "few_items": True, "accuracy": fig(0.2), "balanced_accuracy": fig(0.2), "macro_f1": fig(0.1)},
             "unknown": {"n": 15, "few_items": False, "accuracy": fig(0.8), "balanced_accuracy": fig(0.6),
                         "macro_f1": fig(0.6)}}
    section = {"types": types, "gap": {"accuracy": {"not_computed": "fewer than two skin types with >= 10 items"}}}
    (tmp_path / "fitzpatrick17k_metrics.json").write_text(json.dumps(
        {"seconds": {"train": 600}, "skin_type": {"image": {"diagnosis": section}}}))
    ours = ours_run.read_ours(tmp_path, "fitzpatrick17k")
    assert ours["seconds_train"] == 600 and ours["model"] == str(tmp_path / "train" / "model")
    assert ours["columns"]["ours, open diagnosis"]["accuracy"] == pytest.approx((30 * 0.5 + 5 * 0.2 + 15 * 0.8) / 50)
    baseline = {"types": {t: {**v, "accuracy": fig(0.9)} for t, v in types.items()},
                "gap": {"accuracy": {"best": "1", "worst": "6", "gap": 0.25, "ci": [0.1, 0.4]}}}
    text = bench.skin_type_table(baseline, ours["skin_type"])
    assert "| 6 (few) | 5 | 0.900 [0.800, 1.000] | 0.200 [0.100, 0.300] | 0.100 [0.000, 0.200] | 0.200 [0.100, 0.300]" \
        in text
    assert "ResNet-18 gap in accuracy: 0.250 [0.100, 0.400] (type 1 best, 6 worst)" in text
    assert "ours gap in accuracy: fewer than two skin types with >= 10 items" in text
    (tmp_path / "fitzpatrick17k_metrics.json").write_text(json.dumps({"seconds": {"train": 600}}))
    with pytest.raises(ValueError, match="fitzpatrick17k_metrics.json: lacks the figures"):
        ours_run.read_ours(tmp_path, "fitzpatrick17k")


def test_bad_input_is_one_error_line(tmp_path, capsys):
    args = ["--data", str(HAM), "--ours", str(tmp_path), "--out", str(tmp_path / "o.json")]
    assert bench.main(args) == 2
    assert capsys.readouterr().err == f"error: {tmp_path / 'ham10000_metrics.json'}: not found; --ours needs a " \
                                      "finished `dermvqa quickstart --dataset ham10000` output folder\n"
    figures = {f: 0.5 for f in FIGURES}
    (tmp_path / "ham10000_metrics.json").write_text(json.dumps(
        {"seconds": {"train": 5}, "official_test": {"option_likelihood": figures, "open_answer": figures}}))
    assert bench.main(args) == 2
    assert capsys.readouterr().err == f"error: {tmp_path / 'train' / 'model'}: ours' model folder has no " \
                                      "processor_config.json\n"
    assert bench.main(["--data", str(tmp_path), "--seconds", "1", "--out", str(tmp_path / "o.json")]) == 2
    assert capsys.readouterr().err == f"error: --data {tmp_path}: no images/ folder\n"
    assert not (tmp_path / "o.json").exists()


def test_paired_against_ours_counts_by_hand(tmp_path):
    """Ours' open answers and the CNN's argmax on the same images: differences and McNemar counts by hand."""
    from data_gen.records import QARecord, write_parquet
    from dermvqa.quickstarts.ham10000 import CLASSES, MELANOMA

    mel, nev = CLASSES.index(MELANOMA), CLASSES.index("Melanocytic nevus")
    gold = [mel, mel, mel, nev, nev]
    ours_reply = [MELANOMA, MELANOMA, "Melanocytic nevus", "Melanocytic nevus", "a rash"]  # right: 0, 1, 3
    cnn_pred = [mel, nev, nev, nev, nev]                                                 # right: 0, 3, 4
    (tmp_path / "data" / "qa").mkdir(parents=True)
    write_parquet([QARecord(id=f"r{i}", image=f"{i}.jpg", question="What is the diagnosis?", answer=CLASSES[g],
                            family="diagnosis", answer_type="open", label=CLASSES[g], split="test")
                   for i, g in enumerate(gold)], tmp_path / "data" / "qa" / "qa.parquet")
    (tmp_path / "eval").mkdir()
    (tmp_path / "eval" / "answers.jsonl").write_text("".join(
        json.dumps({"id": f"r{i}", "blind": b, "reply": "Angioma" if b else r}) + "\n"
        for i, r in enumerate(ours_reply) for b in (False, True)))
    predictions = [{"image": f"{i}.jpg", "gold": g, "probs": [float(c == p) for c in range(len(CLASSES))]}
                   for i, (g, p) in enumerate(zip(gold, cnn_pred))]
    paired = ours_run.paired_vs_ours(predictions, tmp_path, n_boot=50, seed=0)
    acc, mel_recall = paired["accuracy"], paired["melanoma_recall"]
    assert (acc["n"], acc["baseline"], acc["other"]) == (5, 3 / 5, 3 / 5)
    assert acc["mcnemar"]["baseline_only_right"] == 1 and acc["mcnemar"]["other_only_right"] == 1  # image 4 / 1
    assert (mel_recall["n"], mel_recall["baseline"], mel_recall["other"]) == (3, 1 / 3, 2 / 3)
    assert mel_recall["mcnemar"] == {"baseline_only_right": 0, "other_only_right": 1, "p": 1.0}
    with pytest.raises(ValueError, match="have no answer of ours"):
        ours_run.paired_vs_ours(predictions + [{"image": "x.jpg", "gold": 0, "probs": [1.0]}], tmp_path, 50, 0)
