"""Where the diagnosis is lost, per class: the tower's linear probe, the option likelihood (as scored and
logit-adjusted by the training prior), the generated answer and the blind control, side by side."""
from __future__ import annotations

import numpy as np
import torch

from dermvqa.eval.probe import fit_probe, tower_features
from dermvqa.model.prior import adjusted

COLUMNS = ("probe", "option_likelihood", "likelihood_adjusted", "open_answer", "blind_likelihood")


def probe_probs(model, processor, train: list[tuple[str, int]], test_paths: list[str], classes: int) -> np.ndarray:
    """Class probabilities on the test images of a probe fitted on (train path, class) pairs."""
    x = tower_features(model, processor, [p for p, _ in train])
    head = fit_probe(x, torch.tensor([c for _, c in train]), classes)
    with torch.no_grad():
        return torch.softmax(head(tower_features(model, processor, test_paths)), -1).numpy()


def adjusted_probs(probs: np.ndarray, names: list[str], prior: dict[str, float], tau: float = 1.0) -> np.ndarray:
    """Renormalised probabilities after subtracting tau * log prior from each class's log-probability."""
    offsets = np.array(adjusted([0.0] * len(names), names, prior, tau))  # -tau * log prior, names checked once
    logits = np.log(np.clip(probs, 1e-30, None)) + offsets
    e = np.exp(logits - logits.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def per_class_lines(metrics: dict[str, dict], classes: list[str]) -> list[str]:
    """A markdown table: one row per class (recall) and the summary rows, one column per way of answering."""
    cols = [c for c in COLUMNS if c in metrics]
    lines = ["| class | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for name in classes:
        lines.append(f"| {name} | " + " | ".join(f"{metrics[c]['recall'].get(name, float('nan')):.3f}" for c in cols)
                     + " |")
    for key in ("accuracy", "balanced_accuracy", "macro_f1", "auc"):
        lines.append(f"| **{key}** | " + " | ".join(f"{metrics[c][key]:.3f}" if key in metrics[c] else "—"
                                                  for c in cols) + " |")
    return lines
