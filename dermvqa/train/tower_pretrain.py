"""Stage 0 for a vision tower trained from scratch: supervised pretraining on the train split's diagnoses.

A real recipe starts from DermLIP, whose contrastive pretraining on Derm1M already made its features
separate skin conditions. The tiny random-init tower has no such start, and learning vision only
through the language model's loss is slow; this stage gives it the same kind of start, from the
training images alone, through a throw-away linear head on the mean of the features LLaVA reads.
"""
from __future__ import annotations


import torch
from PIL import Image
from tqdm import tqdm


def pretrain_tower(model, processor, records: list[dict], image_root, steps: int, lr: float,
                   batch_size: int = 32, seed: int = 0) -> list[float]:
    """Train model.model.vision_tower in place on (image, diagnosis) pairs; return the loss per step."""
    by_image = {r["image"]: r["label"] for r in records if r["family"] == "diagnosis"}
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
    gen = torch.Generator().manual_seed(seed)
    tower.train()
    losses = []
    for _ in tqdm(range(steps), desc="stage 0: tower pretraining"):
        idx = torch.randint(0, len(images), (batch_size,), generator=gen)
        feats = tower(pixel_values=pixels[idx], output_hidden_states=True).hidden_states[layer][:, 1:].mean(1)
        loss = torch.nn.functional.cross_entropy(head(feats), targets[idx])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    return losses
