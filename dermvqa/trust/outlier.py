"""The outlier head of an out-of-distribution summary: a linear classifier between the model's training images and
reference photos of another kind (outlier exposure, Hendrycks et al. 2019).

The Gaussian of dermvqa/trust/ood.py only knows the training images, so a photo near their spread passes: a
dermoscopy model let most smartphone photos through. Given reference photos unlike the training images (for a
dermoscopy model, clinical atlas photos: the Fitzpatrick17k train split), the summary also fits an L2-regularised,
class-balanced logistic regression on the same standardised features, training images (0) against reference
photos (1); its logit is the outlier score, thresholded like the Gaussian's at a quantile of held-out training
images. A photo is unlike the training images when either score is above its threshold.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

DEFAULT_L2 = 0.01


def fit_head(inside: torch.Tensor, outside: torch.Tensor, l2: float = DEFAULT_L2) -> torch.Tensor:
    """Weights then bias (float64) of the logistic regression `inside` (label 0) vs `outside` (label 1), both of
    standardised features; each class weighs half of the loss, L-BFGS to convergence."""
    if len(inside) < 2 or len(outside) < 2:
        raise ValueError(f"the outlier head needs at least 2 training and 2 reference photos, got {len(inside)} and "
                         f"{len(outside)}")
    x = torch.cat([inside, outside]).double()
    y = torch.cat([torch.zeros(len(inside)), torch.ones(len(outside))]).double()
    weight = torch.where(y == 1, len(y) / (2 * len(outside)), len(y) / (2 * len(inside)))
    w = torch.zeros(x.shape[1] + 1, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w], max_iter=500, tolerance_grad=1e-9, line_search_fn="strong_wolfe")

    def loss():
        opt.zero_grad()
        value = F.binary_cross_entropy_with_logits(x @ w[:-1] + w[-1], y, weight=weight) + l2 * (w[:-1] ** 2).sum()
        value.backward()
        return value

    opt.step(loss)
    return w.detach()


def head_scores(head: torch.Tensor, standardised: torch.Tensor) -> torch.Tensor:
    """The outlier logit of each row of standardised features."""
    return standardised.double() @ head[:-1] + head[-1]
