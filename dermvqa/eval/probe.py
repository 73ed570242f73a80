"""A linear probe of a model's own vision tower: what the tower knows about the diagnosis, before the language model.

The features are the ones stage 0 trains its head on: the mean of the patch tokens of the layer the projector
reads (the out-of-distribution check's `tower_mean` pooling). The probe is a class-balanced multinomial
logistic regression fitted on the train split's images only (L-BFGS, full batch). If it beats the model's
answer on test, the language stages lose what the tower knows (Zhang et al., NeurIPS 2024).
"""
from __future__ import annotations

import torch
from PIL import Image
from tqdm import tqdm

from dermvqa.trust.features import pooled_features


def tower_features(model, processor, paths: list, batch_size: int = 256) -> torch.Tensor:
    """(n, width) float32 `tower_mean` features (dermvqa/trust/features.py), photos decoded a batch at a time."""
    out = []
    for start in tqdm(range(0, len(paths), batch_size), desc="probe: tower features", unit="batch"):
        images = [Image.open(p) for p in paths[start:start + batch_size]]
        out.append(pooled_features(model, processor, images, "tower_mean", batch_size).float())
    return torch.cat(out)


def fit_probe(features: torch.Tensor, targets: torch.Tensor, classes: int, l2: float = 1e-3,
              steps: int = 100) -> torch.nn.Linear:
    """Class-balanced logistic regression on standardised features (the standardisation folded into the layer)."""
    mean, std = features.mean(0), features.std(0).clamp(min=1e-6)
    x = (features - mean) / std
    counts = torch.bincount(targets, minlength=classes).float()
    weight = torch.where(counts > 0, counts.sum() / (classes * counts.clamp(min=1)), torch.zeros_like(counts))
    head = torch.nn.Linear(x.shape[1], classes)
    opt = torch.optim.LBFGS(head.parameters(), max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(head(x), targets, weight=weight) + l2 * head.weight.square().sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    folded = torch.nn.Linear(x.shape[1], classes)
    with torch.no_grad():
        folded.weight.copy_(head.weight / std)
        folded.bias.copy_(head.bias - (head.weight * mean / std).sum(1))
    return folded
