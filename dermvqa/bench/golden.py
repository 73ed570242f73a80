"""What the DermLIP golden checks share (check_dermlip_golden, check_panderm_golden): the one PAD-UFES-20 photo in
../shared/data, the PAD class names and 8 skin templates, the zero-shot softmax, and the table against the
published reference (../shared/data/pad-ufes-20/SOURCE.md) with its pass/fail exit status."""
from __future__ import annotations

import argparse
import json

import torch

from dermvqa.bench import SHARED_DATA

PAD_IMAGE = SHARED_DATA / "pad-ufes-20" / "examples" / "PAT_8_15_820.png"
LABELS = SHARED_DATA / "derm1m" / "derived" / "zero_shot_label_lists.json"


def parser(doc: str, source: str) -> argparse.ArgumentParser:
    """The checks' shared arguments: the weights (hub name or folder) and the tolerance."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("source", nargs="?", default=source)
    ap.add_argument("--tol", type=float, default=0.02, help="max abs difference per class probability")
    return ap


def pad_prompts():
    """(PAD class names, the skin templates, the PAD photo in RGB)."""
    from PIL import Image

    lists = json.loads(LABELS.read_text())
    return lists["PAD_CLASSNAMES"], lists["OPENAI_SKIN_TEMPLATES"], Image.open(PAD_IMAGE).convert("RGB")


@torch.no_grad()
def class_embeddings(encode_text, tokenizer, classes: list[str], templates: list[str]) -> torch.Tensor:
    """One row per class: the mean of its normalised template embeddings, normalised."""
    rows = []
    for c in classes:
        emb = encode_text(tokenizer([t.format(c=c) for t in templates]))
        emb = emb / emb.norm(dim=-1, keepdim=True)
        rows.append(emb.mean(0) / emb.mean(0).norm())
    return torch.stack(rows)


def zero_shot(image_embeds: torch.Tensor, text: torch.Tensor) -> list[float]:
    """Class probabilities of one image: softmax of 100 x cosine similarity."""
    emb = image_embeds / image_embeds.norm(dim=-1, keepdim=True)
    return (100 * emb @ text.T).softmax(-1)[0].tolist()


def report(classes: list[str], reference: list[float], columns: dict[str, list[float]], tol: float) -> int:
    """Print the reference beside each column of probabilities; 0 when `ours` is within `tol` of it, else 1."""
    print(f"{'class':<26}{'reference':>11}" + "".join(f"{name:>11}" for name in columns))
    for i, c in enumerate(classes):
        print(f"{c:<26}{reference[i]:>11.4f}" + "".join(f"{probs[i]:>11.4f}" for probs in columns.values()))
    worst = max(abs(a - b) for a, b in zip(columns["ours"], reference))
    print(f"max |ours - reference| = {worst:.4f} (tolerance {tol})")
    return 0 if worst <= tol else 1
