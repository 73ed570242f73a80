"""A tiny QA world for eval tests: coloured images, QA parquet with closed, open and free-text families."""
import random
from pathlib import Path

import pytest
from PIL import Image

from data_gen.records import QARecord, write_parquet

DX = ["psoriasis", "eczema", "melanoma", "nevus"]


def make_world(root: Path, n_images: int = 12, missing: bool = True) -> Path:
    """images/synthetic/*.png + qa/part-0.parquet (split test, plus one train record that must be ignored)."""
    rng = random.Random(0)
    (root / "images" / "synthetic").mkdir(parents=True, exist_ok=True)
    recs = []
    for i in range(n_images):
        img = f"synthetic/img{i}.png"
        Image.new("RGB", (48, 40), (rng.randrange(256), rng.randrange(256), 60)).save(root / "images" / img)
        dx, fz = DX[i % 4], i % 3 + 1
        common = dict(image=img, source="synthetic" if i % 2 else "textbook", split="test", fitzpatrick=fz,
                      ontology_path=["proliferations" if dx in ("melanoma", "nevus") else "inflammatory", dx])
        recs += [
            QARecord(id=f"yn{i}", question=f"Is this {dx}?", answer=f"The lesion looks like {dx}. Answer: yes.",
                     family="yes_no", answer_type="closed", options=["yes", "no"], answer_index=0, label="yes",
                     **common),
            QARecord(id=f"mc{i}", question="Which diagnosis fits best? A. psoriasis B. eczema C. melanoma D. nevus",
                     answer=dx, family="multiple_choice", answer_type="closed", options=DX, answer_index=i % 4,
                     label=dx, **common),
            QARecord(id=f"dx{i}", question="What is the most likely diagnosis?", answer=dx, family="diagnosis",
                     answer_type="open", label=dx, **common),
        ]
    if missing:
        recs.append(QARecord(id="gone", image="synthetic/missing.png", question="Is this nevus?", answer="no",
                             family="yes_no", answer_type="closed", options=["yes", "no"], answer_index=1,
                             label="no", split="test"))
    recs.append(QARecord(id="train0", image="synthetic/img0.png", question="Is this nevus?", answer="no",
                         family="yes_no", answer_type="closed", options=["yes", "no"], answer_index=1, label="no",
                         split="train"))
    write_parquet(recs, root / "qa" / "part-0.parquet")
    return root


@pytest.fixture(scope="session")
def qa_world(tmp_path_factory):
    return make_world(tmp_path_factory.mktemp("world"))


@pytest.fixture(scope="session")
def varied_model_dir(tiny_model_dir, tmp_path_factory):
    """The tiny LLaVA with large random weights, so its greedy replies differ per image and question
    (the default init answers every question with the same blank line, which would make comparisons trivial)."""
    import shutil

    out = tmp_path_factory.mktemp("varied_llava")
    for f in Path(tiny_model_dir).iterdir():
        shutil.copy(f, out / f.name)
    _randomize_text_weights(out, tiny_model_dir)
    return out


def _randomize_text_weights(out, source) -> None:
    """Save `source`'s LLaVA into `out` with every matrix redrawn at std 0.3 (visible, varied greedy replies)."""
    import torch
    from transformers import LlavaForConditionalGeneration

    model = LlavaForConditionalGeneration.from_pretrained(source)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    model.save_pretrained(out)


@pytest.fixture(scope="session")
def quickstart_sized_model_dir(tmp_path_factory):
    """A LLaVA of the quickstart's size (build_tiny_llava defaults, as configs/tiny_cpu.yaml) with large random
    text weights, so its greedy answers are visible text that differs between images."""
    from dermvqa.eval.benchmarks.ham10000 import CHOICE_QUESTION, NAMES, OPEN_QUESTION
    from dermvqa.model.tiny import build_tiny_llava

    out = tmp_path_factory.mktemp("quickstart_sized")
    build_tiny_llava(out, [CHOICE_QUESTION, OPEN_QUESTION, *NAMES, "Answer: yes.", "Answer: no."] * 10, seed=0)
    _randomize_text_weights(out, out)
    return out
