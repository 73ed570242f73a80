"""Golden check for REAL DermLIP-PanDerm weights: PAD-UFES-20 zero-shot through our converted BEiT tower.

Encodes the one PAD photo in ../shared/data with our converted PanDermTower + CLIPImageProcessor, scores it
against the checkpoint's own text tower (PubMedBERT, built by stock open_clip's HFTextEncoder from the config's
text_cfg and loaded strictly from the checkpoint's text.* weights; its config and tokenizer come from the hub or
the HF cache) with the 8 skin templates and PAD class names, and compares the softmax with the published
DermLIP-PanDerm reference (../shared/data/pad-ufes-20/SOURCE.md). Stock open_clip cannot build the image tower,
so unlike scripts/check_dermlip_golden.py there is no second image column. A manual check:
python scripts/check_panderm_golden.py [hf-hub:redlessone/DermLIP_PanDerm-base-w-PubMed-256 | FOLDER]
Exit status 1 when our probabilities differ from the reference by more than --tol.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DATA = REPO / ".." / "shared" / "data"
PAD_IMAGE = DATA / "pad-ufes-20" / "examples" / "PAT_8_15_820.png"
LABELS = DATA / "derm1m" / "derived" / "zero_shot_label_lists.json"
# DermLIP-PanDerm row of SOURCE.md, classes in PAD_CLASSNAMES order
REFERENCE = [2.3118888e-25, 1.0, 2.1265816e-09, 2.5314803e-19, 2.9989609e-09, 8.886332e-20]


def text_tower(model_cfg: dict, weights: dict):
    """(open_clip text encoder with the checkpoint's text.* weights, its tokenizer)."""
    from open_clip.model import CLIPTextCfg, _build_text_tower
    from open_clip.tokenizer import HFTokenizer

    known = {f.name for f in dataclasses.fields(CLIPTextCfg)}
    cfg = {k: v for k, v in model_cfg["text_cfg"].items() if k in known}
    cfg["hf_model_pretrained"] = False  # the weights come from the checkpoint
    tower = _build_text_tower(model_cfg["embed_dim"], cfg).eval()
    tower.load_state_dict({k[len("text."):]: v.float() for k, v in weights.items() if k.startswith("text.")})
    name = cfg.get("hf_tokenizer_name") or cfg["hf_model_name"]
    return tower, HFTokenizer(name, context_length=cfg.get("context_length", 77))


def main(argv=None) -> int:
    from PIL import Image

    from dermvqa.model.dermlip import convert_dermlip, load_weights, read_config, resolve_source

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("source", nargs="?", default="hf-hub:redlessone/DermLIP_PanDerm-base-w-PubMed-256")
    ap.add_argument("--tol", type=float, default=0.02, help="max abs difference per class probability")
    ap.add_argument("--allow-pickle", action="store_true", help="accept a pickle .bin checkpoint you trust")
    args = ap.parse_args(argv)
    folder = resolve_source(args.source)
    tower, processor = convert_dermlip(str(folder), allow_pickle=args.allow_pickle)
    text, tokenizer = text_tower(read_config(folder)[0], load_weights(folder, args.allow_pickle))
    lists = json.loads(LABELS.read_text())
    classes, templates = lists["PAD_CLASSNAMES"], lists["OPENAI_SKIN_TEMPLATES"]
    image = Image.open(PAD_IMAGE).convert("RGB")
    with torch.no_grad():
        rows = []
        for c in classes:
            emb = text(tokenizer([t.format(c=c) for t in templates]))
            emb = emb / emb.norm(dim=-1, keepdim=True)
            rows.append(emb.mean(0) / emb.mean(0).norm())
        emb = tower(processor(images=image, return_tensors="pt")["pixel_values"]).image_embeds
    emb = emb / emb.norm(dim=-1, keepdim=True)
    ours = (100 * emb @ torch.stack(rows).T).softmax(-1)[0].tolist()
    print(f"{'class':<26}{'reference':>11}{'ours':>11}")
    for i, c in enumerate(classes):
        print(f"{c:<26}{REFERENCE[i]:>11.4f}{ours[i]:>11.4f}")
    worst = max(abs(a - b) for a, b in zip(ours, REFERENCE))
    print(f"max |ours - reference| = {worst:.4f} (tolerance {args.tol})")
    return 0 if worst <= args.tol else 1


if __name__ == "__main__":
    sys.exit(main())
