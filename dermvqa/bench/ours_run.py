"""What dermvqa.bench.baseline_cnn reads of ours' finished quickstart run: its training seconds and figures
(`read_ours`), and, on HAM10000, ours against the ResNet-18 on the same test images: per image, whether ours' top
diagnosis (the open answer mapped to the 7 classes, as the quickstart maps it) and the CNN's argmax are right,
paired (dermvqa.eval.paired: the difference with its bootstrap interval and McNemar's exact test), for all
images and for the melanomas alone (melanoma recall)."""
from __future__ import annotations

import json
from pathlib import Path

from data_gen.records import read_records
from dermvqa.eval.compare import StoredAnswers
from dermvqa.eval.paired import paired_difference
from dermvqa.quickstarts.ham10000 import CLASSES, MELANOMA, class_of

FIGURES = ("accuracy", "auc", "balanced_accuracy", "macro_f1", "melanoma_recall")


def read_ours(run_dir: Path, dataset: str) -> dict:
    """Our training seconds, model folder, test figures by column and (fitzpatrick17k) the open diagnosis per
    skin type, from a quickstart run's <dataset>_metrics.json. Fitzpatrick17k records the 21-way figures per
    type only: its overall accuracy is their n-weighted mean (every item has one type, unknown included)."""
    path = run_dir / f"{dataset}_metrics.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found; --ours needs a finished `dermvqa quickstart --dataset {dataset}` "
                                "output folder")
    m = json.loads(path.read_text(encoding="utf-8"))
    try:
        out = {"seconds_train": float(m["seconds"]["train"]), "model": m.get("model", str(run_dir / "train" / "model"))}
        if dataset == "ham10000":
            return {**out, "skin_type": None, "columns": {
                f"ours, {how.replace('_', ' ')}": {f: m["official_test"][how].get(f) for f in FIGURES}
                for how in ("option_likelihood", "open_answer")}}
        section = m["skin_type"]["image"]["diagnosis"]
        types = section["types"].values()
        accuracy = sum(t["n"] * t["accuracy"]["value"] for t in types) / sum(t["n"] for t in types)
        return {**out, "skin_type": section, "columns": {"ours, open diagnosis": {"accuracy": accuracy}}}
    except (KeyError, TypeError, ZeroDivisionError) as e:
        raise ValueError(f"{path}: lacks the figures --ours reads ({e!r})") from None


def ours_predictions(run_dir: Path) -> dict[str, int]:
    """Image -> ours' class index (-1: the answer names no class) on the diagnosis items of the test split."""
    answers = StoredAnswers(run_dir / "eval")
    test = [r for r in read_records(run_dir / "data" / "qa", split="test") if r["family"] == "diagnosis"]
    missing = [r["id"] for r in test if answers.get(r["id"], False) is None]
    if missing:
        raise ValueError(f"{run_dir / 'eval' / 'answers.jsonl'}: no answer for {len(missing)} diagnosis items "
                         f"(first {missing[0]}); rerun `dermvqa eval` into that folder to finish it")
    return {r["image"]: class_of(answers.get(r["id"], False)["reply"]) for r in test}


def paired_vs_ours(predictions: list[dict], run_dir: Path, n_boot: int, seed: int) -> dict:
    """{"accuracy", "melanoma_recall"}: ours − ResNet-18 on the shared images (`predictions`: the bench's rows)."""
    ours = ours_predictions(run_dir)
    rows = [p for p in predictions if p["image"] in ours]
    if len(rows) != len(predictions):
        raise ValueError(f"{len(predictions) - len(rows)} of the baseline's test images have no answer of ours in "
                         f"{run_dir}: the two did not use the same split")
    melanoma = CLASSES.index(MELANOMA)
    out = {}
    for name, keep in (("accuracy", lambda p: True), ("melanoma_recall", lambda p: p["gold"] == melanoma)):
        part = [p for p in rows if keep(p)]
        cnn = [float(max(range(len(p["probs"])), key=p["probs"].__getitem__) == p["gold"]) for p in part]
        mine = [float(ours[p["image"]] == p["gold"]) for p in part]
        out[name] = paired_difference(cnn, mine, f"paired/{name}", n_boot, seed, mcnemar=True)
    return out
