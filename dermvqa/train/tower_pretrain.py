"""Stage 0 for a vision tower trained from scratch: supervised pretraining on the train split's diagnoses.

A real recipe starts from DermLIP, whose contrastive pretraining on Derm1M already made its features
separate skin conditions. The tiny random-init tower has no such start, and learning vision only
through the language model's loss is slow; this stage gives it the same kind of start, from the
training images alone, through a throw-away linear head on the mean of the features LLaVA reads.
Options for real photographs (HAM10000): `augment` (random flips, quarter turns and brightness/colour
shifts: a lesion photo has no up or left), `balance` (sample class c with weight n_c^-balance: 0 as
found, 1 class-balanced), `skin_type_balance` (the same for the Fitzpatrick type of each image, unknown
types one group: a mitigation for the skin-type gap, multiplied with the class weight), `schedule` cosine
(warm-up, then cosine decay to zero) and label smoothing.
"""
from __future__ import annotations

import math

import torch
from PIL import Image
from tqdm import tqdm


def augment_batch(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random flips, quarter turns (square images) and per-image brightness / colour offsets."""
    n = x.shape[0]
    x = torch.where((torch.rand(n, 1, 1, 1, generator=gen) < 0.5), x.flip(3), x)
    x = torch.where((torch.rand(n, 1, 1, 1, generator=gen) < 0.5), x.flip(2), x)
    x = torch.where((torch.rand(n, 1, 1, 1, generator=gen) < 0.5), x.transpose(2, 3), x)
    scale, shift = torch.rand(n, 1, 1, 1, generator=gen), torch.rand(n, 3, 1, 1, generator=gen)
    return x * (1 + 0.2 * (scale - 0.5)) + 0.2 * (shift - 0.5)


def sampling_weights(classes: torch.Tensor, skin_types: torch.Tensor, balance: float,
                     skin_type_balance: float) -> torch.Tensor:
    """Per-image weight n_class^-balance * n_type^-skin_type_balance (n: images sharing the class / the type)."""
    return (torch.bincount(classes).float()[classes] ** -float(balance)
            * torch.bincount(skin_types).float()[skin_types] ** -float(skin_type_balance))


def pretrain_tower(model, processor, records: list[dict], image_root, steps: int, lr: float,
                   batch_size: int = 32, seed: int = 0, augment: bool = False, balance: float = 0.0,
                   skin_type_balance: float = 0.0, schedule: str = "constant",
                   label_smoothing: float = 0.0) -> list[float]:
    """Train model.model.vision_tower in place on (image, diagnosis) pairs; return the loss per step."""
    if schedule not in ("constant", "cosine"):
        raise ValueError(f"tower_pretrain.schedule must be constant or cosine, got {schedule!r}")
    by_image = {r["image"]: r["label"] for r in records if r["family"] == "diagnosis"}
    skin_type = {r["image"]: int(r.get("fitzpatrick") or 0) for r in records if r["family"] == "diagnosis"}
    if len(set(by_image.values())) < 2:
        raise ValueError("tower pretraining needs diagnosis records with at least two labels")
    images = sorted(by_image)
    classes = {c: i for i, c in enumerate(sorted(set(by_image.values())))}
    pixels = torch.cat([processor.image_processor(images=[Image.open(f"{image_root}/{p}").convert("RGB")
                                                          for p in images[i:i + 256]], return_tensors="pt")["pixel_values"]
                        for i in range(0, len(images), 256)])
    targets = torch.tensor([classes[by_image[p]] for p in images])
    tower, layer = model.model.vision_tower, model.config.vision_feature_layer
    head = torch.nn.Linear(tower.config.hidden_size, len(classes))
    params = list(tower.parameters()) + list(head.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    warm = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 if schedule == "constant" else
                                              min((s + 1) / warm, 0.5 * (1 + math.cos(math.pi * s / steps))))
    gen = torch.Generator().manual_seed(seed)
    weights = sampling_weights(targets, torch.tensor([skin_type[p] for p in images]), balance, skin_type_balance)
    tower.train()
    losses = []
    for _ in tqdm(range(steps), desc="stage 0: tower pretraining"):
        idx = (torch.multinomial(weights, batch_size, replacement=True, generator=gen) if balance or skin_type_balance
               else torch.randint(0, len(images), (batch_size,), generator=gen))
        x = augment_batch(pixels[idx], gen) if augment else pixels[idx]
        feats = tower(pixel_values=x, output_hidden_states=True).hidden_states[layer][:, 1:].mean(1)
        loss = torch.nn.functional.cross_entropy(head(feats), targets[idx], label_smoothing=label_smoothing)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad()
        sched.step()
        losses.append(loss.item())
    return losses
