"""Shared fixtures: paths to the real samples in ../shared/data and a tiny random LLaVA."""
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
DERM1M = SHARED_DATA / "derm1m" / "third_party" / "HappyDoubleJ__DermAgent-wonjun" / "dataset" / "Derm1M"
ONTOLOGY = DERM1M / "ontology.json"
SAMPLE_CSV = DERM1M / "Derm1M_v2_pretrain_ontology_sampled_100.csv"
PAD_PHOTO = SHARED_DATA / "pad-ufes-20" / "examples" / "PAT_8_15_820.png"

TINY_TEXTS = [
    "Is this psoriasis? The lesion looks like eczema, not psoriasis. Answer: no.",
    "What is the most likely diagnosis? basal cell carcinoma melanoma seborrheic keratosis",
    "Which of these features is visible? A. scaly B. red C. papule D. nodule",
] * 20


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A random-init tiny LLaVA saved as a standard transformers folder (built once per session)."""
    from dermvqa.model.tiny import build_tiny_llava

    out = tmp_path_factory.mktemp("tiny_llava")
    build_tiny_llava(out, TINY_TEXTS, seed=0, vision_width=64, vision_layers=2, text_width=64, text_layers=2,
                     vocab_size=400)
    return out


@pytest.fixture(scope="session")
def chatty_model_dir(tiny_model_dir, tmp_path_factory):
    """The tiny LLaVA with larger random text weights and only printable tokens (or end of turn) allowed, so
    greedy answers are visible text that differs between images and questions; carries dermvqa_labels.json."""
    import torch

    from data_gen.synthetic_world import CONDITIONS
    from dermvqa.infer.generate import load_model
    from dermvqa.model.labels import write_labels

    model, processor = load_model(tiny_model_dir, device="cpu")
    torch.manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 2 and ("language_model" in name or "projector" in name):
                p.normal_(0, 0.3)
    tok = processor.tokenizer
    shown = [tok.decode([i]) for i in range(len(tok))]
    visible = [i == tok.eos_token_id or (i not in tok.all_special_ids and s.strip() and s.isascii()
                                         and s.isprintable()) for i, s in enumerate(shown)]
    model.generation_config.suppress_tokens = [i for i, ok in enumerate(visible) if not ok]
    out = tmp_path_factory.mktemp("chatty_llava")
    model.save_pretrained(out)
    processor.save_pretrained(out)
    write_labels(out, [c.label for c in CONDITIONS], {c.label: list(c.path) for c in CONDITIONS},
                 sorted({t for c in CONDITIONS for t in c.concepts}))
    return out


@pytest.fixture(scope="session")
def trusted_model_dir(chatty_model_dir, tmp_path_factory):
    """The chatty LLaVA with an out-of-distribution summary of 80 synthetic-world images and a data_summary.json
    recording that it trained only the diagnosis and yes/no families; returns (model folder, world folder)."""
    import csv
    import json
    import shutil

    from data_gen.synthetic_world import build_world
    from dermvqa.infer.generate import load_model
    from dermvqa.trust.ood import fit_from_records

    root = tmp_path_factory.mktemp("trusted")
    out, world = root / "model", root / "world"
    shutil.copytree(chatty_model_dir, out)
    rows = list(csv.DictReader(open(build_world(world, n_images=80, progress=False), encoding="utf-8")))
    records = [{"image": r["filename"], "family": "diagnosis", "label": r["disease_label"]} for r in rows]
    model, processor = load_model(out, device="cpu")
    fit_from_records(model, processor, records, world / "images", out)
    (out / "data_summary.json").write_text(json.dumps({"families": {"diagnosis": 80, "yes_no": 80}}))
    return out, world
