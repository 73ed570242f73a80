"""A linear probe of a model's own vision tower: what the tower knows about the diagnosis, before the language model.

The features are the ones stage 0 trains its head on and the projector reads (the mean of the patch tokens of
`vision_feature_layer`); the probe is a class-balanced multinomial logistic regression fitted on the train
split's images only (L-BFGS, full batch). If it beats the model's answer on test, the language stages lose
what the tower knows (Zhang et al., NeurIPS 2024).
"""
from __future__ import annotations

import torch
from PIL import Image
from tqdm import tqdm


@torch.inference_mode()
def tower_features(model, processor, paths: list, batch_size: int = 256) -> torch.Tensor:
    """(n, width) mean patch-token features of the feature layer, one row per image path."""
    tower, layer = model.model.vision_tower, model.config.vision_feature_layer
    out = []
    for start in tqdm(range(0, len(paths), batch_size), desc="probe: tower features", unit="batch"):
        images = [Image.open(p).convert("RGB") for p in paths[start:start + batch_size]]
        pixels = processor.image_processor(images=images, return_tensors="pt")["pixel_values"].to(tower.dtype)
        hidden = tower(pixel_values=pixels, output_hidden_states=True).hidden_states[layer]
        out.append(hidden[:, 1:].mean(1).float())
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
