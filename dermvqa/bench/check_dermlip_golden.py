"""Golden check for REAL DermLIP weights: PAD-UFES-20 zero-shot through our converted vision tower.

Encodes the one PAD photo in ../shared/data with (a) open_clip's own image tower and (b) our
converted CLIPVisionModelWithProjection + CLIPImageProcessor, scores both against open_clip's text
tower (8 skin templates, PAD class names) and compares the softmax with the published DermLIP
reference (../shared/data/pad-ufes-20/SOURCE.md). Needs the weights and open_clip, so it is a
manual check: python -m dermvqa.bench.check_dermlip_golden [hf-hub:redlessone/DermLIP_ViT-B-16 | FOLDER]
Exit status 1 when our probabilities differ from the reference by more than --tol.
"""
from __future__ import annotations

import sys

import torch

from dermvqa.bench.golden import class_embeddings, pad_prompts, parser, report, zero_shot

# DermLIP-ViT-B-16 row of SOURCE.md, classes in PAD_CLASSNAMES order
REFERENCE = [0.0019439305, 0.71405643, 0.06437414, 0.033922788, 0.14282027, 0.042882424]


def main(argv=None) -> int:
    import open_clip

    from dermvqa.model.dermlip import convert_dermlip

    args = parser(__doc__, "hf-hub:redlessone/DermLIP_ViT-B-16").parse_args(argv)
    name = args.source if args.source.startswith("hf-hub:") else f"local-dir:{args.source}"
    model, _, preprocess = open_clip.create_model_and_transforms(name)
    tower, processor = convert_dermlip(args.source)
    classes, templates, image = pad_prompts()
    text = class_embeddings(model.encode_text, open_clip.get_tokenizer(name), classes, templates)
    with torch.no_grad():
        theirs = model.encode_image(preprocess(image).unsqueeze(0))
        ours = tower(**processor(images=image, return_tensors="pt")).image_embeds
    return report(classes, REFERENCE, {"open_clip": zero_shot(theirs, text), "ours": zero_shot(ours, text)}, args.tol)


if __name__ == "__main__":
    sys.exit(main())
