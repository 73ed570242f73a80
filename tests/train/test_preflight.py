"""Bad input fails before the first training step, with an error that names the file and the problem."""
import json
import shutil

import pytest

from dermvqa.model.builder import BuildError
from dermvqa.train.trainer import run_training
from tests.conftest import REPO
from tests.train.tiny_run import LORA, make_world, recipe


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return make_world(tmp_path_factory.mktemp("world"), n=4)


@pytest.fixture()
def model_copy(tiny_model_dir, tmp_path):
    return shutil.copytree(tiny_model_dir, tmp_path / "model")


def _run(world, tmp_path, model, *extra):
    r = recipe(world, tmp_path / "run", extra=("model.kind=pretrained", f"model.path={model}",
                                               "data.max_length=160", *extra))
    return run_training(r)


def _not_started(tmp_path):
    assert not (tmp_path / "run" / "checkpoints").exists() and not (tmp_path / "run" / "train_log.json").exists()


def test_model_folder_missing_files(world, tmp_path, model_copy):
    (model_copy / "processor_config.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"model folder .*model is incomplete, missing: processor_config"):
        _run(world, tmp_path, model_copy)
    _not_started(tmp_path)


def test_sharded_checkpoint_missing_a_shard(world, tmp_path, model_copy):
    (model_copy / "model.safetensors").rename(model_copy / "model-00001-of-00002.safetensors")
    (model_copy / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {
        "a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}))
    with pytest.raises(FileNotFoundError, match="missing: model-00002-of-00002.safetensors"):
        _run(world, tmp_path, model_copy)
    _not_started(tmp_path)


def test_mismatched_vision_config_and_processor(world, tmp_path, model_copy):
    config = json.loads((model_copy / "config.json").read_text())
    config["image_seq_length"] = 49
    (model_copy / "config.json").write_text(json.dumps(config))
    proc = json.loads((model_copy / "processor_config.json").read_text())
    proc["patch_size"] = 16
    (model_copy / "processor_config.json").write_text(json.dumps(proc))
    with pytest.raises(BuildError, match=r"image_seq_length 49 but the tower gives 64.*patch_size 16 vs tower"):
        _run(world, tmp_path, model_copy)
    _not_started(tmp_path)


def test_max_length_that_would_cut_image_tokens(world, tmp_path, model_copy):
    with pytest.raises(ValueError, match="max_length=50 cannot hold even an empty prompt: 64 image tokens"):
        _run(world, tmp_path, model_copy, "data.max_length=50")
    with pytest.raises(ValueError, match=r"max_length=85 would cut into the prompt of \d+ of the"):
        _run(world, tmp_path, model_copy, "data.max_length=85")
    _not_started(tmp_path)


def test_qlora_with_zero3_and_missing_sections(world, tmp_path, model_copy):
    zero3 = REPO / "configs" / "deepspeed" / "zero3.json"
    with pytest.raises(ValueError, match="ZeRO-3, which rejects the device_map"):
        _run(world, tmp_path, model_copy, "tune.mode=qlora", LORA, f"train.deepspeed={zero3}",
             "tune.quant={type: nf4, skip_modules: [model.vision_tower, model.multi_modal_projector, lm_head]}")
    with pytest.raises(ValueError, match="needs a tune.lora section"):
        _run(world, tmp_path, model_copy, "tune.mode=lora")
    with pytest.raises(ValueError, match="skip_modules must contain 'model.vision_tower' .full name"):
        _run(world, tmp_path, model_copy, "tune.mode=qlora", LORA,
             "tune.quant={type: nf4, skip_modules: [vision_tower, multi_modal_projector, lm_head]}")
    _not_started(tmp_path)


def test_image_check_is_shared_between_ranks(tmp_path):
    """Each rank stats its share of the distinct images; together they find every missing one."""
    from dermvqa.train.preflight import check_images

    from data_gen.records import QARecord, open_records, write_parquet

    (tmp_path / "a.png").write_bytes(b"x")
    write_parquet([QARecord(id=f"r{i}", image=name, question="q", answer="a", family="diagnosis", answer_type="open")
                   for i, name in enumerate(["a.png", "a.png", "gone1.png", "gone2.png"])], tmp_path / "qa.parquet")
    recs = open_records(tmp_path / "qa.parquet")
    failures = []
    for rank in range(3):
        try:
            check_images(recs, tmp_path, rank, 3)
        except FileNotFoundError as e:
            failures.append((rank, str(e)))
    assert [r for r, _ in failures] == [1, 2]  # distinct images a, gone1, gone2 -> ranks 0, 1, 2
    assert "record r2" in failures[0][1] and "record r3" in failures[1][1]


def test_conversations_too_long_for_the_skip_budget_stop_before_training(tmp_path, model_copy):
    from data_gen.records import QARecord, read_records, write_parquet

    world = make_world(tmp_path / "w", n=4)
    recs = read_records(world / "qa")
    recs[2]["follow_ups"] = [{"question": "And the border?", "answer": "irregular and notched " * 12}]
    (world / "qa" / "part.parquet").unlink()
    write_parquet([QARecord(**r) for r in recs], world / "qa" / "part.parquet")
    with pytest.raises(ValueError, match=r"1 of the 8 longest conversations do not fit data.max_length=160 "
                                         r"\(e.g. 1-dx\) and would be skipped, more than data.max_skipped_fraction=0.0"):
        _run(world, tmp_path, model_copy, "data.max_skipped_fraction=0")
    _not_started(tmp_path)
