"""A synthetic lesion world: images whose look is fully set by (condition, skin tone), written as a Derm1M release.

Each of eight real ontology leaves gets a distinct visual signature (colour, shape, border, size, count,
texture); the background is one of the six Fitzpatrick skin tones. The output folder looks like the
real release: `images/synthetic/*.png` plus `derm1m.csv` with Derm1M's columns and an extra
`fitzpatrick` column, so the same loader and QA synthesis run on it as on Derm1M. Beside it,
`masks/synthetic/*.png` (same names) hold each image's lesion mask, so grounding maps can be scored.
"""
from __future__ import annotations

import csv
import json
import math
import os
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from data_gen.ontology import sub_ontology

DERM1M_COLUMNS = ["filename", "caption", "truncated_caption", "source", "source_type", "disease_label",
                  "hierarchical_disease_label", "skin_concept", "body_location", "symptoms", "age", "gender"]

# Approximate skin RGB per Fitzpatrick type I..VI.
SKIN_TONES = {1: (244, 214, 190), 2: (230, 188, 152), 3: (205, 160, 120),
              4: (170, 122, 84), 5: (120, 82, 55), 6: (80, 54, 38)}
TONE_WORDS = {1: "very fair", 2: "fair", 3: "light brown", 4: "moderate brown", 5: "dark brown", 6: "deeply pigmented"}


@dataclass(frozen=True)
class Condition:
    label: str                 # ontology leaf, spelled as in ontology.json
    path: tuple[str, ...]      # root-to-leaf path in the Derm1M ontology
    concepts: tuple[str, ...]  # Derm1M skin_concept terms that the renderer really draws
    look: str                  # caption phrase for the visual signature


CONDITIONS = [
    Condition("Psoriasis (plaque)", ("inflammatory", "non-infectious", "Psoriasis", "Psoriasis (plaque)"),
              ("plaque", "erythema", "scale"), "well-demarcated red plaques covered by silvery-white scale"),
    Condition("Nummular eczema", ("inflammatory", "non-infectious", "Eczema", "Nummular eczema"),
              ("patch", "pink", "crust"), "ill-defined coin-shaped pink patches with scattered yellow crusts"),
    Condition("Acne vulgaris", ("inflammatory", "non-infectious", "Acne vulgaris"),
              ("papule", "pustule", "erythema"), "many small red papules, some topped by pustules"),
    Condition("Tinea corporis", ("inflammatory", "infectious", "fungal", "Tinea corporis"),
              ("erythema", "scale", "plaque"), "annular red plaques with a scaly advancing edge and central clearing"),
    Condition("Basal cell carcinoma", ("proliferations", "malignant", "non-melanocytic", "Basal cell carcinoma"),
              ("nodule", "translucent", "telangiectasia"), "a pearly translucent nodule crossed by fine telangiectatic vessels"),
    Condition("Malignant melanoma, melanoma", ("proliferations", "malignant", "melanocytic", "Malignant melanoma, melanoma"),
              ("black", "brown(hyperpigmentation)", "blue"), "an asymmetric lesion with an irregular border and black, brown and blue-grey colour"),
    Condition("Melanocytic nevus", ("proliferations", "benign", "melanocytic", "Melanocytic nevus"),
              ("macule", "brown(hyperpigmentation)"), "a small round evenly brown macule with a regular border"),
    Condition("Vitiligo", ("reaction patterns and descriptive terms", "Vitiligo"),
              ("white(hypopigmentation)", "patch"), "sharply bordered depigmented white patches"),
]

CAPTION_TEMPLATES = [
    "This close-up clinical photograph shows {look} on {tone} skin, consistent with {dx}.",
    "{Look} are seen on {tone} skin; the appearance is typical of {dx}.",
    "Clinical image of {dx}: {look} on {tone} skin.",
    "The picture displays {look} on {tone} skin, which suggests {dx}.",
]


def _jitter(rgb, rng, amount=12):
    return tuple(int(np.clip(c + rng.randint(-amount, amount), 0, 255)) for c in rgb)


def _blob(cx, cy, r, rng, irregular=0.0, points=24):
    """Polygon around (cx, cy): a circle when irregular=0, ragged as irregular grows."""
    phase = [rng.uniform(0, 2 * math.pi) for _ in range(3)]
    out = []
    for i in range(points):
        a = 2 * math.pi * i / points
        wobble = 1 + irregular * sum(math.sin(k * a + p) / k for k, p in zip((2, 3, 5), phase))
        out.append((cx + r * wobble * math.cos(a), cy + r * wobble * math.sin(a)))
    return out


def _spots(n, size, rng, margin=0.2):
    lo, hi = size * margin, size * (1 - margin)
    return [(rng.uniform(lo, hi), rng.uniform(lo, hi)) for _ in range(n)]


def _draw(cond: Condition, tone: int, size: int, rng: random.Random) -> tuple[Image.Image, Image.Image]:
    """The photo and its lesion mask ("L", 255 = lesion). The mask takes no random draws of its own, so the
    photo is the same whether or not anyone keeps the mask."""
    skin = _jitter(SKIN_TONES[tone], rng, 8)
    arr = np.full((size, size, 3), skin, dtype=np.float32)
    arr += np.random.default_rng(rng.randrange(2**32)).normal(0, 4, arr.shape)  # skin texture
    img = Image.fromarray(arr.clip(0, 255).astype(np.uint8))
    mask = Image.new("L", img.size, 0)
    d, m = ImageDraw.Draw(img), ImageDraw.Draw(mask)
    s = size / 112
    name = cond.label
    if name.startswith("Psoriasis"):
        for cx, cy in _spots(rng.randint(2, 3), size, rng):
            r = rng.uniform(14, 22) * s
            plaque = _blob(cx, cy, r, rng, 0.08)
            d.polygon(plaque, fill=_jitter((200, 60, 60), rng))
            m.polygon(plaque, fill=255)
            for _ in range(int(r * 1.5)):
                x, y = cx + rng.uniform(-0.7, 0.7) * r, cy + rng.uniform(-0.7, 0.7) * r
                d.ellipse([x - 1.5 * s, y - 1.5 * s, x + 1.5 * s, y + 1.5 * s], fill=(235, 235, 240))
                m.ellipse([x - 1.5 * s, y - 1.5 * s, x + 1.5 * s, y + 1.5 * s], fill=255)
    elif name == "Nummular eczema":
        layer = Image.new("RGBA", img.size, (0, 0, 0, 0))
        ld = ImageDraw.Draw(layer)
        for cx, cy in _spots(rng.randint(2, 4), size, rng):
            r = rng.uniform(10, 16) * s
            ld.ellipse([cx - r, cy - r, cx + r, cy + r], fill=(*_jitter((235, 120, 140), rng), 200))
        soft = layer.filter(ImageFilter.GaussianBlur(3 * s))
        img.paste(soft, (0, 0), soft)
        mask.paste(255, (0, 0), soft.getchannel("A").point(lambda a: 255 if a > 25 else 0))  # any visible tint
        d = ImageDraw.Draw(img)
        for x, y in _spots(rng.randint(6, 10), size, rng, 0.25):
            d.ellipse([x - 1.5 * s, y - 1.5 * s, x + 1.5 * s, y + 1.5 * s], fill=(225, 190, 60))
            m.ellipse([x - 1.5 * s, y - 1.5 * s, x + 1.5 * s, y + 1.5 * s], fill=255)
    elif name == "Acne vulgaris":
        for x, y in _spots(rng.randint(12, 20), size, rng, 0.1):
            r = rng.uniform(2.5, 4) * s
            d.ellipse([x - r, y - r, x + r, y + r], fill=_jitter((190, 45, 45), rng))
            m.ellipse([x - r, y - r, x + r, y + r], fill=255)
            if rng.random() < 0.4:
                d.ellipse([x - r / 2, y - r / 2, x + r / 2, y + r / 2], fill=(245, 235, 170))
    elif name == "Tinea corporis":
        for cx, cy in _spots(rng.randint(1, 2), size, rng, 0.3):
            r = rng.uniform(16, 26) * s
            d.ellipse([cx - r, cy - r, cx + r, cy + r], outline=_jitter((185, 50, 50), rng), width=max(2, int(4 * s)))
            d.ellipse([cx - r + 5 * s, cy - r + 5 * s, cx + r - 5 * s, cy + r - 5 * s], outline=(230, 225, 215), width=1)
            m.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)  # the annular plaque with its central clearing
    elif name == "Basal cell carcinoma":
        cx, cy = _spots(1, size, rng, 0.35)[0]
        r = rng.uniform(13, 19) * s
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=_jitter((238, 200, 200), rng), outline=(250, 235, 235), width=2)
        m.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
        for _ in range(3):
            a = rng.uniform(0, 2 * math.pi)
            d.line([cx - r * 0.7 * math.cos(a), cy - r * 0.7 * math.sin(a),
                    cx + r * 0.7 * math.cos(a + 0.5), cy + r * 0.7 * math.sin(a + 0.5)], fill=(200, 30, 40), width=1)
    elif name.startswith("Malignant melanoma"):
        cx, cy = _spots(1, size, rng, 0.35)[0]
        r = rng.uniform(18, 26) * s
        parts = [(_blob(cx, cy, r, rng, 0.35), _jitter((95, 60, 40), rng))]
        parts.append((_blob(cx + rng.uniform(-4, 4) * s, cy, r * 0.55, rng, 0.4), (25, 20, 25)))
        parts.append((_blob(cx, cy + rng.uniform(-4, 4) * s, r * 0.3, rng, 0.3), (90, 100, 140)))
        for poly, colour in parts:
            d.polygon(poly, fill=colour)
            m.polygon(poly, fill=255)
    elif name == "Melanocytic nevus":
        cx, cy = _spots(1, size, rng, 0.35)[0]
        r = rng.uniform(6, 9) * s
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=_jitter((120, 75, 45), rng, 8))
        m.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
    elif name == "Vitiligo":
        for cx, cy in _spots(rng.randint(1, 3), size, rng, 0.25):
            patch = _blob(cx, cy, rng.uniform(12, 22) * s, rng, 0.25)
            d.polygon(patch, fill=_jitter((250, 238, 228), rng, 5))
            m.polygon(patch, fill=255)
    else:
        raise ValueError(f"no renderer for condition {name!r}")
    return img, mask


def render(cond: Condition, tone: int, size: int = 112, seed: int = 0) -> Image.Image:
    """Deterministic image of one condition on one skin tone."""
    return _draw(cond, tone, size, random.Random(seed))[0]


def render_with_mask(cond: Condition, tone: int, size: int = 112, seed: int = 0) -> tuple[Image.Image, Image.Image]:
    """The same image as `render`, and its lesion mask (mode "L": 255 inside the lesion, 0 on plain skin)."""
    return _draw(cond, tone, size, random.Random(seed))


def _caption(cond: Condition, tone: int, rng: random.Random) -> str:
    t = rng.choice(CAPTION_TEMPLATES)
    return t.format(look=cond.look, Look=cond.look[0].upper() + cond.look[1:], tone=TONE_WORDS[tone],
                    dx=cond.label.split(",")[0].lower())


def write_sub_ontology(path: Path) -> Path:
    """The part of Derm1M's flat ontology that the world uses (see data_gen.ontology.sub_ontology)."""
    path.write_text(json.dumps(sub_ontology(c.path for c in CONDITIONS), indent=1))
    return path


def build_world(out_dir: str | Path, n_images: int = 1600, size: int = 112, seed: int = 0,
                progress: bool = True) -> Path:
    """Write `n_images` images (conditions and tones balanced), derm1m.csv and ontology.json; return the CSV path."""
    from tqdm import tqdm

    out_dir = Path(out_dir)
    for folder in ("images", "masks"):
        (out_dir / folder / "synthetic").mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    rows = []
    for i in tqdm(range(n_images), desc="rendering lesion world", disable=not progress):
        cond = CONDITIONS[i % len(CONDITIONS)]
        tone = (i // len(CONDITIONS)) % 6 + 1
        fname = f"synthetic/lesion_{i:05d}.png"
        image, mask = render_with_mask(cond, tone, size, seed=rng.randrange(2**31))
        image.save(out_dir / "images" / fname)
        mask.save(out_dir / "masks" / fname)
        caption = _caption(cond, tone, rng)
        rows.append({"filename": fname, "caption": caption, "truncated_caption": caption,
                     "source": "synthetic", "source_type": "synthetic", "disease_label": cond.label,
                     "hierarchical_disease_label": ", ".join(cond.path), "skin_concept": ", ".join(cond.concepts),
                     "body_location": "No body location information", "symptoms": "No symptom information",
                     "age": "No age information", "gender": "No gender information", "fitzpatrick": tone})
    csv_path = out_dir / "derm1m.csv"
    tmp = csv_path.with_suffix(".csv.tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=DERM1M_COLUMNS + ["fitzpatrick"])
        w.writeheader()
        w.writerows(rows)
    os.replace(tmp, csv_path)
    write_sub_ontology(out_dir / "ontology.json")
    return csv_path
