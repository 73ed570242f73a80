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
