"""Malignancy alert: refer a lesion whose malignant diagnoses together score above a level set for sensitivity.

The report's top-1 diagnosis misses most malignant lesions of a weak model (the HAM10000 quickstart model
named a benign class for 0.69 of test melanomas), and "likely benign: monitor" is then the wrong advice.
The malignancy score is the summed probability of the diagnoses under a "malignant" ontology node, as the
report ranks them (option likelihood of the diagnosis question). `fit_alert` picks, on held-out labelled
images (a validation split, never the test split), the highest level that still flags `sensitivity` of
the malignant ones, and writes it with what it cost there to `dermvqa_alert.json` in the model folder
(plain transformers ignores it). The report then advises referral above that level whatever ranks first.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
from PIL import Image

ALERT_FILE = "dermvqa_alert.json"
MALIGNANT_NODE = "malignant"
MELANOMA_NODE = "malignant melanoma, melanoma"  # the Derm1M ontology leaf


def under_node(path: list[str], node: str) -> bool:
    """An ontology path through `node` or a "`node` ..." node (case-insensitive), e.g. "malignant neoplasms"."""
    return any(n.lower() == node or n.lower().startswith(node + " ") for n in path)


def under_malignant(path: list[str]) -> bool:
    return under_node(path, MALIGNANT_NODE)


def diagnosis_path(record: dict, labels: dict) -> list[str]:
    """A labelled record's ontology path: its own, else the one the model's label vocabulary gives its label."""
    return record.get("ontology_path") or labels["ontology_paths"].get(record["label"], [])


def is_malignant(record: dict, labels: dict) -> bool:
    return under_malignant(diagnosis_path(record, labels))


def is_melanoma(record: dict, labels: dict) -> bool:
    return any(n.lower() == MELANOMA_NODE for n in diagnosis_path(record, labels))


def malignant_mask(labels: dict) -> np.ndarray:
    """Which of labels["diagnoses"] lie under a malignant ontology node."""
    return np.array([under_malignant(labels["ontology_paths"].get(d, [])) for d in labels["diagnoses"]], dtype=bool)


def malignancy(probs, labels: dict) -> float:
    """Summed probability of the malignant diagnoses (probs in the order of labels["diagnoses"])."""
    return float(np.asarray(probs, dtype=float)[malignant_mask(labels)].sum())


def level_for(scores: np.ndarray, sensitivity: float) -> float:
    """The highest level at which at least `sensitivity` of these malignant cases score at or above it."""
    if not len(scores):
        raise ValueError("no malignant images to set the alert level on")
    if not 0 < sensitivity <= 1:
        raise ValueError(f"sensitivity must be in (0, 1], got {sensitivity}")
    return float(np.sort(scores)[::-1][math.ceil(sensitivity * len(scores)) - 1])


def wilson_interval(hits: int, n: int, z: float = 1.96) -> list[float]:
    """95 % Wilson score interval of a proportion: how far a level set on n malignant lesions can be trusted."""
    p, z2 = hits / n, z * z
    centre, half = (p + z2 / (2 * n)) / (1 + z2 / n), z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return [round(max(0.0, centre - half), 4), round(min(1.0, centre + half), 4)]


def alert_figures(scores: np.ndarray, is_malignant: np.ndarray, level: float) -> dict:
    flagged = scores >= level
    caught = int(flagged[is_malignant].sum())
    return {"n_images": int(len(scores)), "n_malignant": int(is_malignant.sum()),
            "sensitivity": round(caught / is_malignant.sum(), 4) if is_malignant.any() else None,
            "sensitivity_ci95": wilson_interval(caught, int(is_malignant.sum())) if is_malignant.any() else None,
            "benign_referred": round(float(flagged[~is_malignant].mean()), 4) if (~is_malignant).any() else None}


def score_records(model, processor, records: list[dict], image_root: Path, labels: dict,
                  batch_size: int = 32) -> tuple[list[dict], np.ndarray, np.ndarray]:
    """(diagnosis record, malignancy score, truly malignant), one per image, from the diagnosis records."""
    from tqdm import tqdm

    from dermvqa.infer.likelihood import option_probs
    from dermvqa.model.labels import DIAGNOSIS_QUESTION

    by_image = {r["image"]: r for r in records if r["family"] == "diagnosis"}
    truth = np.array([is_malignant(r, labels) for r in by_image.values()], dtype=bool)
    names, scores = list(by_image), []
    for i in tqdm(range(0, len(names), batch_size), desc="malignancy scores", unit="batch"):
        images = [Image.open(Path(image_root) / n).convert("RGB") for n in names[i:i + batch_size]]
        probs = option_probs(model, processor, images, [DIAGNOSIS_QUESTION] * len(images),
                             [labels["diagnoses"]] * len(images))
        scores += [malignancy(p, labels) for p in probs]
    return list(by_image.values()), np.array(scores), truth


def fit_alert(model, processor, records: list[dict], image_root: Path, labels: dict, model_dir: Path,
              sensitivity: float = 0.9, split: str = "val") -> dict:
    """Set the level on these held-out records and write it, with its figures, into the model folder."""
    from atomic_files import write_text_atomic

    if not malignant_mask(labels).any():
        raise ValueError("the model's diagnoses include no malignant ontology node: nothing to alert on")
    _, scores, truth = score_records(model, processor, records, image_root, labels)
    level = level_for(scores[truth], sensitivity)
    info = {"threshold": level, "target_sensitivity": sensitivity, "fitted_on": split,
            **alert_figures(scores, truth, level)}
    write_text_atomic(Path(model_dir) / ALERT_FILE, json.dumps(info, indent=1) + "\n")
    return info


def fit_on_val_measure_on_test(model_dir: Path, qa_dir: Path, images: Path, sensitivity: float = 0.9,
                               loaded: tuple | None = None) -> dict:
    """The quickstarts' protocol: set the level on the validation split (written into the model), then measure it
    on the test split, melanomas apart; {"skipped": why} when no validation image is malignant. `loaded` is the
    (model, processor) of model_dir when the caller has it already."""
    from data_gen.records import read_records
    from dermvqa.infer.generate import load_model
    from dermvqa.model.labels import load_labels

    records, labels = read_records(qa_dir), load_labels(model_dir)
    held_out = [r for r in records if r["split"] == "val" and r["family"] == "diagnosis"]
    if not any(is_malignant(r, labels) for r in held_out):
        return {"skipped": f"no malignant image among the {len(held_out)} validation images"}
    model, processor = loaded or load_model(model_dir, device="cpu")
    val = fit_alert(model, processor, held_out, images, labels, model_dir, sensitivity, "val")
    test, scores, truth = score_records(model, processor, [r for r in records if r["split"] == "test"], images, labels)
    melanoma = np.array([is_melanoma(r, labels) for r in test], dtype=bool)
    flagged = scores >= val["threshold"]
    return {"val": val, "test": {**alert_figures(scores, truth, val["threshold"]),
                                 "n_melanoma": int(melanoma.sum()),
                                 "melanoma_sensitivity": round(float(flagged[melanoma].mean()), 4)
                                 if melanoma.any() else None}}


def load_alert(model_dir: str | Path) -> dict | None:
    path = Path(model_dir) / ALERT_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
