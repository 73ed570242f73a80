"""What the out-of-distribution check looks at: the model's own pooled vision features and colour/texture
statistics of the whole photo.

`pooled_feature_sets` runs the model's vision tower once and pools the patch features of the layer the
projector reads (`POOLINGS`); `image_statistics` describes colour, layout and texture of the whole photo,
which a 32-64 px tower does not see (a dermoscopy model's tower alone let most smartphone and atlas photos
through). `ood_features` is what dermvqa/trust/ood.py fits and scores: the pooled features, then the statistics.
"""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image

POOLINGS = ("tower_mean", "tower_meanstd", "projected_mean", "layers_meanstd")
DEFAULT_POOLING = "tower_meanstd"
STATS_SIDE = 128  # image statistics are computed on the whole photo squeezed to this square


def _llava(model):
    """The LlavaForConditionalGeneration inside a PEFT wrapper, or the model itself."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def pooled_features(model, processor, images: list[Image.Image], pooling: str = DEFAULT_POOLING,
                    batch_size: int = 32) -> torch.Tensor:
    """One float64 feature vector per image: patch features of the layer the projector reads, pooled."""
    return pooled_feature_sets(model, processor, images, (pooling,), batch_size)[pooling]


@torch.no_grad()
def pooled_feature_sets(model, processor, images: list[Image.Image], poolings=POOLINGS,
                        batch_size: int = 32) -> dict[str, torch.Tensor]:
    """`pooled_features` for several poolings from one pass of the vision tower."""
    for pooling in poolings:
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {', '.join(POOLINGS)}, got {pooling!r}")
    llava = _llava(model)
    cfg, was_training = llava.config, llava.training
    llava.eval()
    out = {pooling: [] for pooling in poolings}
    try:
        for start in range(0, len(images), batch_size):
            chunk = [im.convert("RGB") for im in images[start:start + batch_size]]
            pix = processor.image_processor(chunk, return_tensors="pt")["pixel_values"]
            res = llava.get_image_features(pixel_values=pix.to(llava.device, llava.dtype),
                                           vision_feature_layer=cfg.vision_feature_layer,
                                           vision_feature_select_strategy=cfg.vision_feature_select_strategy,
                                           output_hidden_states=True)  # every layer: only the read one otherwise
            layer = cfg.vision_feature_layer if isinstance(cfg.vision_feature_layer, int) else -1
            tower = res.hidden_states[layer][:, 1:].float()  # patch tokens, CLS left out
            for pooling in poolings:
                if pooling == "layers_meanstd":  # every hidden state, embeddings included (Lee et al. 2018)
                    pooled = [t for h in res.hidden_states for t in (h[:, 1:].float().mean(1), h[:, 1:].float().std(1))]
                else:
                    feats = torch.stack([f.reshape(-1, f.shape[-1]) for f in res.pooler_output]).float() \
                        if pooling == "projected_mean" else tower
                    pooled = [feats.mean(1)] + ([feats.std(1)] if pooling == "tower_meanstd" else [])
                out[pooling].append(torch.cat(pooled, -1).double().cpu())
    finally:
        llava.train(was_training)
    return {pooling: torch.cat(chunks) for pooling, chunks in out.items()}


def image_statistics(images: list[Image.Image]) -> torch.Tensor:
    """Colour and texture descriptors of each whole photo (squeezed to STATS_SIDE px, corners kept), float64:
    RGB mean and spread, a 4x4 colour layout, brightness mean and spread in 8 rings from the centre (a
    dermatoscope's round field), a 4x4x4 colour histogram (square-rooted), saturation percentiles, and edge
    strength and Laplacian percentiles (log) at 5 scales. These see what a 32-64 px tower cannot: how a photo
    was taken (dermoscopy, smartphone, atlas scan, a painted world), independent of what the tower learned."""
    n, side = len(images), STATS_SIDE
    x = np.stack([np.asarray(im.convert("RGB").resize((side, side), Image.BILINEAR)) for im in images]) / 255
    grey = x.mean(-1)
    flat = x.reshape(n, -1, 3)
    layout = x.reshape(n, 4, side // 4, 4, side // 4, 3).mean((2, 4)).reshape(n, -1)
    yy, xx = np.mgrid[:side, :side]
    ring = np.minimum((np.hypot(yy - (side - 1) / 2, xx - (side - 1) / 2) / (side * 0.72) * 8).astype(int), 7)
    rings = [f(grey[:, ring == r], 1) for f in (np.mean, np.std) for r in range(8)]
    code = np.minimum((x * 4).astype(int), 3)
    code = (code[..., 0] * 16 + code[..., 1] * 4 + code[..., 2]).reshape(n, -1)
    hist = np.sqrt(np.stack([np.bincount(c, minlength=64) for c in code]) / (side * side))
    bright = x.max(-1)
    sat = ((bright - x.min(-1)) / np.maximum(bright, 1e-6)).reshape(n, -1)
    texture = []
    for k in (1, 2, 4, 8, 16):
        g = grey.reshape(n, side // k, k, side // k, k).mean((2, 4))
        edges = np.abs(np.diff(g, axis=1)).mean((1, 2)) + np.abs(np.diff(g, axis=2)).mean((1, 2))
        lap = np.abs(4 * g[:, 1:-1, 1:-1] - g[:, :-2, 1:-1] - g[:, 2:, 1:-1] - g[:, 1:-1, :-2] - g[:, 1:-1, 2:])
        texture += [np.log(edges + 1e-4)[:, None], np.log(np.percentile(lap.reshape(n, -1), [50, 90, 99], 1).T + 1e-4)]
    return torch.from_numpy(np.concatenate([flat.mean(1), flat.std(1), layout, np.stack(rings, 1), hist,
                                            np.percentile(sat, [10, 50, 90], 1).T, *texture], 1))


def ood_features(model, processor, images: list[Image.Image], pooling: str = DEFAULT_POOLING,
                 with_image_stats: bool = True) -> torch.Tensor:
    """What the summary scores: the pooled vision features, followed by `image_statistics` when asked."""
    pooled = pooled_features(model, processor, images, pooling)
    return torch.cat([pooled, image_statistics(images)], 1) if with_image_stats else pooled
