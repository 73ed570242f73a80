"""Is this photo like the images the model was trained on? A class-conditional Gaussian on the features of
dermvqa/trust/features.py (pooled vision features, then image colour/texture statistics).

At the end of training (`fit_from_records`, called by dermvqa/train/trainer.py's save_final with the recipe's
`ood` section, `ood_settings`) the training images go through the model's own vision tower; each image is
summarised by `ood_features` and labelled by its trained diagnosis. Each feature is standardised on the fitted
images, then one Gaussian per diagnosis with a shared, shrunk covariance is fitted on most of the images
(Mahalanobis scoring, as in Lee et al. 2018); the score of a photo is its smallest squared Mahalanobis distance
to a class mean, divided by the feature size. The rest of the training images are held out of the fit, and the
abstention threshold is the `quantile` of their scores, so about 1 - quantile of in-distribution photos would
be flagged. Nothing but the training images goes into this fit; `dermvqa ood-choose` (dermvqa/trust/choose.py)
picks pooling, statistics, the outlier head (dermvqa/trust/outlier.py) and quantile on reference photos of
another kind. The summary is `dermvqa_ood.safetensors` + `dermvqa_ood.json` (format `FORMAT_VERSION`; version-1
folders, without image statistics, and version-2 ones, without the outlier head, still load) in the model
folder: plain transformers ignores both. `dermvqa ood-fit` adds them to an existing model;
dermvqa/bench/trust.py compares poolings and methods.
"""
from __future__ import annotations

import json
import os
import random
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from dermvqa.trust.features import DEFAULT_POOLING, POOLINGS, ood_features
from dermvqa.trust.outlier import DEFAULT_L2, fit_head, head_scores

TENSORS_FILE = "dermvqa_ood.safetensors"
META_FILE = "dermvqa_ood.json"
FORMAT_VERSION = 3  # 1: no "version" key, raw features, no image statistics; 2: no outlier head
NOTICE = "This photo is unlike the images this model was trained on"
DEFAULT_QUANTILE = 0.99
SCALE_FLOOR = 0.01  # a feature (a colour bin) nearly constant on the fitted images counts as varying this much


@dataclass
class OodSummary:
    means: torch.Tensor       # classes x features, of the standardised features
    precision: torch.Tensor   # features x features, inverse of the shared shrunk covariance
    classes: list[str]
    threshold: float
    meta: dict
    centre: torch.Tensor      # per-feature mean and spread of the fitted images: features are standardised first
    scale: torch.Tensor
    outlier: torch.Tensor | None = None       # dermvqa/trust/outlier.py: weights + bias, when fitted
    outlier_threshold: float | None = None

    def standardised(self, features: torch.Tensor) -> torch.Tensor:
        return (features.double() - self.centre) / self.scale

    def outlier_scores(self, features: torch.Tensor) -> torch.Tensor | None:
        """The outlier head's logit per photo (None without a head)."""
        return None if self.outlier is None else head_scores(self.outlier, self.standardised(features))

    def flags(self, features: torch.Tensor) -> torch.Tensor:
        """Per photo: unlike the training images."""
        return self.unlike(self.scores(features), self.outlier_scores(features))

    def unlike(self, scores: torch.Tensor, outlier: torch.Tensor | None) -> torch.Tensor:
        """Either score above its threshold, from `scores` and `outlier_scores` already computed."""
        out = scores > self.threshold
        return out | (outlier > self.outlier_threshold) if self.outlier is not None else out

    def scores(self, features: torch.Tensor) -> torch.Tensor:
        """Smallest squared Mahalanobis distance of the standardised features to a class mean, per feature size
        (about 1 in distribution)."""
        diff = self.standardised(features)[:, None, :] - self.means[None]
        d2 = torch.einsum("ncf,fg,ncg->nc", diff, self.precision, diff)
        return d2.min(1).values / features.shape[1]

    def features(self, model, processor, images: list[Image.Image]) -> torch.Tensor:
        return ood_features(model, processor, images, self.meta["pooling"], self.meta.get("image_stats", False))

    def judge(self, score: float, outlier: float | None = None) -> dict:
        """The JSON the report, chat, web page and API carry (`outlier`: the outlier head's score, if any)."""
        by_head = self.outlier is not None and outlier is not None and outlier > self.outlier_threshold
        unlike = score > self.threshold or by_head
        stats = " and image colour/texture statistics" if self.meta.get("image_stats") else ""
        head = (f", and a linear outlier head against {self.meta.get('outside', 'reference photos')}"
                if self.outlier is not None else "")
        why = (f"outlier score {outlier:.2f} above the threshold {self.outlier_threshold:.2f}" if by_head and
               score <= self.threshold else f"score {score:.2f} above the threshold {self.threshold:.2f}")
        out = {"score": round(float(score), 4), "threshold": round(self.threshold, 4), "unlike_training": unlike,
               "method": f"class-conditional Gaussian (Mahalanobis) on {self.meta.get('pooling', 'pooled')} vision "
                         f"features{stats}{head}",
               "message": f"{NOTICE} ({why}, chosen on held-out training images), so it gives no diagnosis: have "
                          "the lesion examined in person." if unlike else ""}
        if self.outlier is not None and outlier is not None:
            out.update(outlier_score=round(float(outlier), 4), outlier_threshold=round(self.outlier_threshold, 4))
        return out

    def check(self, model, processor, image: Image.Image) -> dict:
        feats = self.features(model, processor, [image])
        outlier = self.outlier_scores(feats)
        return self.judge(float(self.scores(feats)[0]), None if outlier is None else float(outlier[0]))

    def save(self, model_dir: str | Path) -> None:
        """Write both files through temp files beside them, then rename them one after the other: a reader never
        sees half a file, and a save that fails leaves the folder's earlier summary whole."""
        from safetensors.torch import save_file

        from atomic_files import honour_umask

        model_dir = Path(model_dir)
        names = ("means", "precision", "centre", "scale") + (("outlier",) if self.outlier is not None else ())
        head = {"outlier_threshold": self.outlier_threshold} if self.outlier is not None else {}
        meta = json.dumps({**self.meta, **head, "version": FORMAT_VERSION if self.outlier is not None else 2,
                           "classes": self.classes, "threshold": self.threshold}, indent=1)  # 2: older readers load it
        written = []
        try:
            for name in (TENSORS_FILE, META_FILE):
                fd, tmp = tempfile.mkstemp(dir=model_dir, prefix=f".{name}.", suffix=".tmp")
                os.close(fd)
                written.append((Path(tmp), model_dir / name))
            save_file({name: getattr(self, name).contiguous() for name in names}, str(written[0][0]))
            written[1][0].write_text(meta, encoding="utf-8")
            for tmp, final in written:
                honour_umask(tmp)
                os.replace(tmp, final)
        finally:
            for tmp, _ in written:
                tmp.unlink(missing_ok=True)


def ledoit_wolf_shrinkage(centred: torch.Tensor) -> float:
    """The Ledoit-Wolf (2004) share by which the covariance of `centred` rows is best shrunk towards its mean
    variance: near 0 with many images per feature, near 1 with fewer images than features."""
    n, dim = centred.shape
    cov = centred.T @ centred / n
    target = cov - (cov.trace() / dim) * torch.eye(dim, dtype=cov.dtype)
    spread = ((centred ** 2).sum(1) ** 2).sum() / n - (cov ** 2).sum()  # sum_k |x_k x_k^T - cov|^2 / n
    return float((spread / n).clamp(max=(target ** 2).sum()) / (target ** 2).sum().clamp(min=1e-12))


def fit(features: torch.Tensor, labels: list[str], held_out: torch.Tensor, quantile: float = DEFAULT_QUANTILE,
        shrinkage: float | None = None, meta: dict | None = None, outside: torch.Tensor | None = None,
        l2: float = DEFAULT_L2) -> OodSummary:
    """Standardise each feature on `features`, then class means + shared covariance shrunk towards its mean
    variance (by `shrinkage`, or the Ledoit-Wolf share when None); the threshold is the `quantile` of the
    held-out images' scores. With `outside` (features of reference photos unlike the training images) also the
    outlier head (dermvqa/trust/outlier.py), its threshold the same quantile of its held-out scores."""
    if len(features) != len(labels):
        raise ValueError(f"{len(features)} feature rows but {len(labels)} labels")
    if len(features) < 2 or len(held_out) < 1:
        raise ValueError(f"too few images to fit ({len(features)}) and hold out ({len(held_out)})")
    features = features.double()
    centre, scale = features.mean(0), features.std(0, correction=0).clamp(min=SCALE_FLOOR)
    z = (features - centre) / scale
    classes = sorted(set(labels))
    index = torch.tensor([classes.index(lab) for lab in labels])
    means = torch.stack([z[index == i].mean(0) for i in range(len(classes))])
    centred = z - means[index]
    cov = centred.T @ centred / len(z)
    dim = cov.shape[0]
    shrinkage = ledoit_wolf_shrinkage(centred) if shrinkage is None else shrinkage
    cov = (1 - shrinkage) * cov + shrinkage * (cov.trace() / dim) * torch.eye(dim, dtype=cov.dtype)
    summary = OodSummary(means, torch.linalg.inv(cov), classes, 0.0, dict(meta or {}), centre, scale)
    held = summary.scores(held_out)
    summary.threshold = float(torch.quantile(held, quantile))
    summary.meta.update({"n_fit": len(features), "n_held_out": len(held_out), "quantile": quantile,
                         "shrinkage": shrinkage, "held_out_median": float(held.median())})
    if outside is not None:
        summary.outlier = fit_head(z, summary.standardised(outside), l2)
        summary.outlier_threshold = float(torch.quantile(summary.outlier_scores(held_out), quantile))
        summary.meta.update({"n_outside": len(outside), "outlier_l2": l2})
    return summary


def load_summary(model_dir: str | Path) -> OodSummary | None:
    """The model folder's summary, or None when it has none (an older model: no OOD check). A version-1 folder
    (raw pooled features, no image statistics) loads and scores as it did; a newer version is refused."""
    model_dir = Path(model_dir)
    if not (model_dir / TENSORS_FILE).is_file() or not (model_dir / META_FILE).is_file():
        return None
    from safetensors.torch import load_file

    tensors = load_file(str(model_dir / TENSORS_FILE))
    meta = json.loads((model_dir / META_FILE).read_text(encoding="utf-8"))
    version = meta.pop("version", 1)
    if version not in (1, 2, FORMAT_VERSION):
        raise ValueError(f"{model_dir / META_FILE}: out-of-distribution format version {version}, this dermvqa "
                         f"reads 1 to {FORMAT_VERSION}; update dermvqa or refit with `dermvqa ood-fit`")
    if version == 1:
        dim = tensors["means"].shape[1]
        tensors.update(centre=torch.zeros(dim, dtype=torch.float64), scale=torch.ones(dim, dtype=torch.float64))
        meta["image_stats"] = False
    missing = sorted({"means", "precision", "centre", "scale"} - set(tensors)
                     | ({"outlier", "outlier_threshold"} - {*tensors, *meta} if version == FORMAT_VERSION else set()))
    if missing:
        raise ValueError(f"{model_dir / TENSORS_FILE} lacks {', '.join(missing)} (version {version} needs them)")
    classes, threshold = meta.pop("classes"), float(meta.pop("threshold"))
    if tensors["means"].shape[0] != len(classes) or meta.get("pooling") not in POOLINGS:
        raise ValueError(f"{model_dir / META_FILE} does not match {TENSORS_FILE} (classes or pooling)")
    outlier_threshold = meta.pop("outlier_threshold", None)
    return OodSummary(tensors["means"], tensors["precision"], classes, threshold, meta, tensors["centre"],
                      tensors["scale"], tensors.get("outlier"), outlier_threshold)


def ood_settings(section: dict | None) -> dict:
    """`fit_from_records`' pooling, with_image_stats and quantile from a recipe's `ood` section (keys pooling,
    image_stats, quantile, each optional), checked before training starts."""
    section = dict(section or {})
    unknown = sorted(set(section) - {"pooling", "image_stats", "quantile"})
    if unknown:
        raise ValueError(f"recipe ood section: unknown key {', '.join(unknown)} (known: image_stats, pooling, "
                         "quantile)")
    pooling, image_stats = section.get("pooling", DEFAULT_POOLING), section.get("image_stats", True)
    quantile = section.get("quantile", DEFAULT_QUANTILE)
    if pooling not in POOLINGS:
        raise ValueError(f"recipe ood.pooling must be one of {', '.join(POOLINGS)}, got {pooling!r}")
    if not isinstance(image_stats, bool):
        raise ValueError(f"recipe ood.image_stats must be true or false, got {image_stats!r}")
    if not isinstance(quantile, (int, float)) or not 0 < quantile < 1:
        raise ValueError(f"recipe ood.quantile must be a number between 0 and 1, got {quantile!r}")
    return {"pooling": pooling, "with_image_stats": image_stats, "quantile": float(quantile)}


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
                     quantile: float = DEFAULT_QUANTILE, seed: int = 0, min_images: int = 20,
                     with_image_stats: bool = True) -> OodSummary | None:
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
        return torch.cat([ood_features(model, processor, [Image.open(root / n).convert("RGB")
                                                          for n in group[i:i + chunk]], pooling, with_image_stats)
                          for i in range(0, len(group), chunk)])

    summary = fit(feats(fit_names), [images[n] for n in fit_names], feats(held), quantile,
                  meta={"pooling": pooling, "image_stats": with_image_stats, "images": len(images)})
    if out_dir is not None:
        summary.save(out_dir)
    return summary
