"""The tiny recipe end to end on a handful of records: loss falls, a standard folder comes out."""
import json

import pytest
from transformers import AutoProcessor, LlavaForConditionalGeneration

from data_gen.synthetic_world import CONDITIONS
from dermvqa.train.recipe import load_recipe
from dermvqa.train.curriculum import curriculum_order
from dermvqa.train.trainer import run_training
from tests.conftest import REPO
from tests.train.tiny_run import make_world


def _recipe(world, out, steps_epochs=10):
    return load_recipe(REPO / "configs" / "tiny_cpu.yaml", [
        f"data.qa_dir={world / 'qa'}", f"data.image_root={world / 'images'}", f"train.output_dir={out}",
        "model.tiny={image_size: 32, patch_size: 8, vision_width: 32, vision_layers: 1, text_width: 32, "
        "text_layers: 1, vocab_size: 300, feature_layer: -1}",
        f"train.curriculum=[{{families: [diagnosis], epochs: 1}}, {{families: all, epochs: {steps_epochs}}}]",
        "tune.tower_pretrain={steps: 20, lr: 2.0e-3, batch_size: 8}", "train.lr=3e-3",
        "train.batch_size=8", "train.logging_steps=1", "train.report_to=[]", "train.save_steps=1000"])


def test_tiny_training_lowers_loss_and_saves_a_standard_folder(tmp_path):
    world = make_world(tmp_path / "w", n=16)
    final = run_training(_recipe(world, tmp_path / "run"))
    log = [e["loss"] for e in json.loads((tmp_path / "run" / "train_log.json").read_text()) if "loss" in e]
    assert log[-1] < 0.6 * log[0]
    LlavaForConditionalGeneration.from_pretrained(final)
    AutoProcessor.from_pretrained(final)
    labels = json.loads((final / "dermvqa_labels.json").read_text())
    assert set(labels["diagnoses"]) == {CONDITIONS[0].label, CONDITIONS[1].label}
    assert labels["ontology_paths"][CONDITIONS[0].label] == list(CONDITIONS[0].path)


def test_curriculum_puts_open_questions_first_and_repeats_epochs(tmp_path):
    from data_gen.records import QARecord, open_records, write_parquet

    write_parquet([QARecord(id=str(i), image=f"{i}.png", question="q", answer="a", family=f, answer_type="open")
                   for i, f in enumerate(["diagnosis", "yes_no"] * 3)], tmp_path / "qa.parquet")
    recs = open_records(tmp_path / "qa.parquet")
    order = curriculum_order(recs, [{"families": ["diagnosis"], "epochs": 2}, {"families": "all", "epochs": 1}], 0)
    assert [recs[int(i)]["family"] for i in order[:6]] == ["diagnosis"] * 6 and len(order) == 12
    with pytest.raises(ValueError, match="selects no records"):
        curriculum_order(recs, [{"families": ["morphology"], "epochs": 1}], 0)


def test_missing_image_names_the_record(tmp_path):
    world = make_world(tmp_path / "w", n=4)
    (world / "images" / "2.png").unlink()
    with pytest.raises(FileNotFoundError, match="record 2-dx: image file not found"):
        run_training(_recipe(world, tmp_path / "run", 1))
