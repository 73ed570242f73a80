"""Is this photo like the images the model was trained on? A class-conditional Gaussian on pooled vision features.

At the end of training (`fit_from_records`, called by dermvqa/train/trainer.py's save_final) the training
images go through the model's own vision tower; each image is summarised by its pooled features
(`POOLINGS`) and labelled by its trained diagnosis. One Gaussian per diagnosis with a shared, shrunk
covariance is fitted on most of the images (Mahalanobis scoring, as in Lee et al. 2018); the score of a
photo is its smallest squared Mahalanobis distance to a class mean, divided by the feature size. The
rest of the training images are held out of the fit, and the abstention threshold is the `quantile` of
their scores, so about 1 - quantile of in-distribution photos would be flagged. The summary is
`dermvqa_ood.safetensors` + `dermvqa_ood.json` in the model folder: plain transformers ignores both.
`dermvqa ood-fit` adds them to an existing model; scripts/bench_trust.py compares poolings and methods.
"""
from __future__ import annotations

import json
import random
import zlib
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

TENSORS_FILE = "dermvqa_ood.safetensors"
META_FILE = "dermvqa_ood.json"
NOTICE = "This photo is unlike the images this model was trained on"
POOLINGS = ("tower_mean", "tower_meanstd", "projected_mean")
DEFAULT_POOLING = "tower_meanstd"


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
                                           vision_feature_select_strategy=cfg.vision_feature_select_strategy)
            layer = cfg.vision_feature_layer if isinstance(cfg.vision_feature_layer, int) else -1
            tower = res.hidden_states[layer][:, 1:].float()  # patch tokens, CLS left out
            for pooling in poolings:
                feats = torch.stack([f.reshape(-1, f.shape[-1]) for f in res.pooler_output]).float() \
                    if pooling == "projected_mean" else tower
                pooled = [feats.mean(1)] + ([feats.std(1)] if pooling == "tower_meanstd" else [])
                out[pooling].append(torch.cat(pooled, -1).double().cpu())
    finally:
        llava.train(was_training)
    return {pooling: torch.cat(chunks) for pooling, chunks in out.items()}


@dataclass
class OodSummary:
    means: torch.Tensor       # classes x features
    precision: torch.Tensor   # features x features, inverse of the shared shrunk covariance
    classes: list[str]
    threshold: float
    meta: dict

    def scores(self, features: torch.Tensor) -> torch.Tensor:
        """Smallest squared Mahalanobis distance to a class mean, per feature size (about 1 in distribution)."""
        diff = features.double()[:, None, :] - self.means[None]
        d2 = torch.einsum("ncf,fg,ncg->nc", diff, self.precision, diff)
        return d2.min(1).values / features.shape[1]

    def judge(self, score: float) -> dict:
        """The JSON the report, chat, web page and API carry."""
        unlike = score > self.threshold
        return {"score": round(float(score), 4), "threshold": round(self.threshold, 4), "unlike_training": unlike,
                "method": f"class-conditional Gaussian (Mahalanobis) on {self.meta.get('pooling', 'pooled')} vision features",
                "message": f"{NOTICE} (score {score:.2f} above the threshold {self.threshold:.2f} chosen on held-out "
                           "training images), so it gives no diagnosis: have the lesion examined in person."
                           if unlike else ""}

    def check(self, model, processor, image: Image.Image) -> dict:
        return self.judge(float(self.scores(pooled_features(model, processor, [image], self.meta["pooling"]))[0]))

    def save(self, model_dir: str | Path) -> None:
        from safetensors.torch import save_file

        from atomic_files import write_text_atomic

        model_dir = Path(model_dir)
        save_file({"means": self.means.contiguous(), "precision": self.precision.contiguous()},
                  str(model_dir / TENSORS_FILE))
        write_text_atomic(model_dir / META_FILE, json.dumps(
            {**self.meta, "classes": self.classes, "threshold": self.threshold}, indent=1))


def fit(features: torch.Tensor, labels: list[str], held_out: torch.Tensor, quantile: float = 0.99,
        shrinkage: float = 0.01, meta: dict | None = None) -> OodSummary:
    """Class means + shared covariance (shrunk towards its mean variance) from `features`; the threshold is the
    `quantile` of the held-out images' scores."""
    if len(features) != len(labels):
        raise ValueError(f"{len(features)} feature rows but {len(labels)} labels")
    if len(features) < 2 or len(held_out) < 1:
        raise ValueError(f"too few images to fit ({len(features)}) and hold out ({len(held_out)})")
    features = features.double()
    classes = sorted(set(labels))
    index = torch.tensor([classes.index(lab) for lab in labels])
    means = torch.stack([features[index == i].mean(0) for i in range(len(classes))])
    centred = features - means[index]
    cov = centred.T @ centred / len(features)
    dim = cov.shape[0]
    cov = (1 - shrinkage) * cov + shrinkage * (cov.trace() / dim) * torch.eye(dim, dtype=cov.dtype)
    summary = OodSummary(means, torch.linalg.inv(cov), classes, 0.0, dict(meta or {}))
    held = summary.scores(held_out)
    summary.threshold = float(torch.quantile(held, quantile))
    summary.meta.update({"n_fit": len(features), "n_held_out": len(held_out), "quantile": quantile,
                         "shrinkage": shrinkage, "held_out_median": float(held.median())})
    return summary


def load_summary(model_dir: str | Path) -> OodSummary | None:
    """The model folder's summary, or None when it has none (an older model: no OOD check)."""
    model_dir = Path(model_dir)
    if not (model_dir / TENSORS_FILE).is_file() or not (model_dir / META_FILE).is_file():
        return None
    from safetensors.torch import load_file

    tensors = load_file(str(model_dir / TENSORS_FILE))
    meta = json.loads((model_dir / META_FILE).read_text(encoding="utf-8"))
    classes, threshold = meta.pop("classes"), float(meta.pop("threshold"))
    if tensors["means"].shape[0] != len(classes) or meta.get("pooling") not in POOLINGS:
        raise ValueError(f"{model_dir / META_FILE} does not match {TENSORS_FILE} (classes or pooling)")
    return OodSummary(tensors["means"], tensors["precision"], classes, threshold, meta)


def training_images(records: list[dict]) -> dict[str, str]:
    """Distinct training images -> their diagnosis (from the diagnosis family; "(no diagnosis)" otherwise)."""
    out = {}
    for r in records:
        label = r.get("label") if r.get("family") == "diagnosis" else None
        if label or r["image"] not in out:
            out[r["image"]] = label or out.get(r["image"], "(no diagnosis)")
    return out


def fit_split(images, max_images: int = 5000, held_out_share: float = 0.15, seed: int = 0):
    """(names to fit on, names held out for the threshold): up to `max_images` sampled, the held-out ones
    chosen by a hash of the name (the same image is held out however the list is ordered)."""
    names = sorted(images)
    if len(names) > max_images:
        names = sorted(random.Random(seed).sample(names, max_images))
    held = [n for n in names if zlib.crc32(n.encode()) % 1000 < held_out_share * 1000] or names[-1:]
    kept = set(held)
    return [n for n in names if n not in kept], held


def fit_from_records(model, processor, records: list[dict], image_root: str | Path, out_dir: str | Path | None,
                     pooling: str = DEFAULT_POOLING, max_images: int = 5000, held_out_share: float = 0.15,
                     quantile: float = 0.99, seed: int = 0, min_images: int = 20) -> OodSummary | None:
    """Fit on (up to `max_images` of) the records' training images, write the summary into `out_dir` (None:
    do not write, e.g. on ranks that do not save) and return it; None, with a note, for under `min_images`
    images. Every rank must call it under ZeRO-3."""
    images = training_images(records)
    if len(images) < min_images:
        print(f"note: {len(images)} training images are too few for an out-of-distribution summary; none written")
        return None
    fit_names, held = fit_split(images, max_images, held_out_share, seed)
    root = Path(image_root)

    def feats(group, chunk=256):  # a chunk of decoded photos in memory at a time
        return torch.cat([pooled_features(model, processor, [Image.open(root / n).convert("RGB")
                                                             for n in group[i:i + chunk]], pooling)
                          for i in range(0, len(group), chunk)])

    summary = fit(feats(fit_names), [images[n] for n in fit_names], feats(held), quantile,
                  meta={"pooling": pooling, "images": len(images)})
    if out_dir is not None:
        summary.save(out_dir)
    return summary
