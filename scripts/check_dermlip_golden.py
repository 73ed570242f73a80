"""Golden check for REAL DermLIP weights: PAD-UFES-20 zero-shot through our converted vision tower.

Encodes the one PAD photo in ../shared/data with (a) open_clip's own image tower and (b) our
converted CLIPVisionModelWithProjection + CLIPImageProcessor, scores both against open_clip's text
tower (8 skin templates, PAD class names) and compares the softmax with the published DermLIP
reference (../shared/data/pad-ufes-20/SOURCE.md). Needs the weights and open_clip, so it is a
manual check: python scripts/check_dermlip_golden.py [hf-hub:redlessone/DermLIP_ViT-B-16 | FOLDER]
Exit status 1 when our probabilities differ from the reference by more than --tol.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DATA = REPO / ".." / "shared" / "data"
PAD_IMAGE = DATA / "pad-ufes-20" / "examples" / "PAT_8_15_820.png"
LABELS = DATA / "derm1m" / "derived" / "zero_shot_label_lists.json"
# DermLIP-ViT-B-16 row of SOURCE.md, classes in PAD_CLASSNAMES order
REFERENCE = [0.0019439305, 0.71405643, 0.06437414, 0.033922788, 0.14282027, 0.042882424]


def main(argv=None) -> int:
    import open_clip
    from PIL import Image

    from dermvqa.model.dermlip import convert_dermlip

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("source", nargs="?", default="hf-hub:redlessone/DermLIP_ViT-B-16")
    ap.add_argument("--tol", type=float, default=0.02, help="max abs difference per class probability")
    args = ap.parse_args(argv)
    name = args.source if args.source.startswith("hf-hub:") else f"local-dir:{args.source}"
    model, _, preprocess = open_clip.create_model_and_transforms(name)
    tokenizer = open_clip.get_tokenizer(name)
    tower, processor = convert_dermlip(args.source)
    lists = json.loads(LABELS.read_text())
    classes, templates = lists["PAD_CLASSNAMES"], lists["OPENAI_SKIN_TEMPLATES"]
    image = Image.open(PAD_IMAGE).convert("RGB")
    with torch.no_grad():
        text = []
        for c in classes:
            emb = model.encode_text(tokenizer([t.format(c=c) for t in templates]))
            emb = emb / emb.norm(dim=-1, keepdim=True)
            text.append(emb.mean(0) / emb.mean(0).norm())
        text = torch.stack(text)
        theirs = model.encode_image(preprocess(image).unsqueeze(0))
        ours = tower(**processor(images=image, return_tensors="pt")).image_embeds
    probs = {}
    for label, emb in (("open_clip", theirs), ("ours", ours)):
        emb = emb / emb.norm(dim=-1, keepdim=True)
        probs[label] = (100 * emb @ text.T).softmax(-1)[0].tolist()
    print(f"{'class':<26}{'reference':>11}{'open_clip':>11}{'ours':>11}")
    for i, c in enumerate(classes):
        print(f"{c:<26}{REFERENCE[i]:>11.4f}{probs['open_clip'][i]:>11.4f}{probs['ours'][i]:>11.4f}")
    worst = max(abs(a - b) for a, b in zip(probs["ours"], REFERENCE))
    print(f"max |ours - reference| = {worst:.4f} (tolerance {args.tol})")
    return 0 if worst <= args.tol else 1


if __name__ == "__main__":
    sys.exit(main())
