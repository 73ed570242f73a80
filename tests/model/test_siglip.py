"""A SigLIP tower (no CLS token, no centre crop: its processor has no crop_size) builds, trains, chats and evaluates."""
import json

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from transformers import CLIPImageProcessor, SiglipImageProcessor, SiglipVisionConfig, SiglipVisionModel

from data_gen.records import read_records
from dermvqa.data.dataset import QADataset
from dermvqa.eval.runner import run_eval
from dermvqa.infer.chat import ChatSession
from dermvqa.infer.generate import answer_batch, load_model
from dermvqa.model.builder import build_llava
from dermvqa.model.processor import image_side
from dermvqa.train.trainer import run_training
from tests.model.test_builder import make_llm
from tests.train.tiny_run import losses, make_world, recipe


def make_siglip(folder, image_size=32, patch=8):
    torch.manual_seed(2)
    config = SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                                image_size=image_size, patch_size=patch)
    SiglipVisionModel(config).save_pretrained(folder)
    SiglipImageProcessor(size={"height": image_size, "width": image_size}).save_pretrained(folder)
    return folder


def test_image_side_reads_the_crop_for_clip_and_the_resize_for_siglip():
    siglip = SiglipImageProcessor(size={"height": 48, "width": 48})
    assert siglip.crop_size is None and image_side(siglip) == 48
    clip = CLIPImageProcessor(size={"shortest_edge": 40}, crop_size={"height": 32, "width": 32})
    assert image_side(clip) == 32
    with pytest.raises(ValueError, match="no fixed square images"):  # short side resized, never cropped
        image_side(CLIPImageProcessor(size={"shortest_edge": 40}, do_center_crop=False))
    with pytest.raises(ValueError, match="no fixed square images"):
        image_side(SiglipImageProcessor(size={"height": 48, "width": 32}))


def test_siglip_tower_builds_trains_chats_and_evaluates(tmp_path):
    world = make_world(tmp_path / "world", n=4)
    vision, llm = make_siglip(tmp_path / "siglip"), make_llm(tmp_path / "llm")

    model, processor, info = build_llava(str(vision), str(llm), dtype=torch.float32)
    assert info["strategy"] == "full" and info["image_seq_length"] == 16 == model.config.image_seq_length  # 4x4
    example = QADataset(read_records(world / "qa"), world / "images", processor, max_length=128)[0]
    assert example["input_ids"].count(model.config.image_token_id) == 16
    assert tuple(example["pixel_values"].shape) == (3, 32, 32)

    out = tmp_path / "run"
    final = run_training(recipe(world, out, epochs=1, extra=(
        "model.kind=build", f"model.build={{vision: {vision}, llm: {llm}, projector: mlp2x_gelu, feature_layer: -2}}",
        "tune.mode=full", "data.max_length=128")))
    curve = losses(json.loads((out / "train_log.json").read_text()))
    assert len(curve) == 2 and all(v == v for v in curve.values())  # 8 records, batch 4
    before, after = load_file(out / "init" / "model.safetensors"), load_file(final / "model.safetensors")
    parts = ("vision_tower", "multi_modal_projector", "language_model")
    changed = {p for k in before if not torch.equal(before[k], after[k]) for p in parts if p in k}
    assert changed == set(parts)  # full tuning: the SigLIP tower got gradients too

    model, processor = load_model(final, device="cpu")
    image = Image.open(world / "images" / "0.png")
    stream = ChatSession(model, processor, image, max_new_tokens=8).ask("What is the most likely diagnosis?")
    assert "".join(stream) == stream.reply.text and stream.reply.completion_tokens >= 1
    answers = answer_batch(model, processor, [image, image], ["What is this?", "Is this psoriasis?"], 8)
    assert len(answers) == 2 and all(isinstance(a, str) for a in answers)

    bench = f"qa:{world / 'qa'}:train:root={world / 'images'}"
    metrics = run_eval(final, bench, tmp_path / "eval", limit=2, n_boot=10, plots=False)
    rows = (tmp_path / "eval" / "answers.jsonl").read_text().splitlines()
    assert sum('"id"' in r for r in rows) == 4  # 2 questions, with and without the image
    assert metrics["settings"]["bench"].startswith("qa:")
