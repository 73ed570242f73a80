"""Golden check for REAL DermLIP-PanDerm weights: PAD-UFES-20 zero-shot through our converted BEiT tower.

Encodes the one PAD photo in ../shared/data with our converted PanDermTower + CLIPImageProcessor, scores it
against the checkpoint's own text tower (PubMedBERT, built by stock open_clip's HFTextEncoder from the config's
text_cfg and loaded strictly from the checkpoint's text.* weights; its config and tokenizer come from the hub or
the HF cache) with the 8 skin templates and PAD class names, and compares the softmax with the published
DermLIP-PanDerm reference (../shared/data/pad-ufes-20/SOURCE.md). Stock open_clip cannot build the image tower,
so unlike dermvqa.bench.check_dermlip_golden there is no second image column. A manual check:
python -m dermvqa.bench.check_panderm_golden [hf-hub:redlessone/DermLIP_PanDerm-base-w-PubMed-256 | FOLDER]
Exit status 1 when our probabilities differ from the reference by more than --tol.
"""
from __future__ import annotations

import dataclasses
import sys

import torch

from dermvqa.bench.golden import class_embeddings, pad_prompts, parser, report, zero_shot

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
    from dermvqa.model.dermlip import convert_dermlip, load_weights, read_config, resolve_source

    ap = parser(__doc__, "hf-hub:redlessone/DermLIP_PanDerm-base-w-PubMed-256")
    ap.add_argument("--allow-pickle", action="store_true", help="accept a pickle .bin checkpoint you trust")
    args = ap.parse_args(argv)
    folder = resolve_source(args.source)
    tower, processor = convert_dermlip(str(folder), allow_pickle=args.allow_pickle)
    text, tokenizer = text_tower(read_config(folder)[0], load_weights(folder, args.allow_pickle))
    classes, templates, image = pad_prompts()
    rows = class_embeddings(text, tokenizer, classes, templates)
    with torch.no_grad():
        emb = tower(processor(images=image, return_tensors="pt")["pixel_values"]).image_embeds
    return report(classes, REFERENCE, {"ours": zero_shot(emb, rows)}, args.tol)


if __name__ == "__main__":
    sys.exit(main())
