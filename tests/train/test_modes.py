"""Full, projector, LoRA and QLoRA (bitsandbytes CPU backend) training all run through `run_training`."""
import json

import pytest
import torch
from safetensors.torch import load_file

from data_gen.records import QARecord, open_records, write_parquet
from dermvqa.train.curriculum import curriculum_order
from dermvqa.train.trainer import load_model, prepare_trainable, run_training
from tests.train.tiny_run import LORA, TINY_MODEL, losses, make_world, recipe

QUANT = ("tune.quant={type: nf4, double_quant: true, compute_dtype: float32, "
         "skip_modules: [model.vision_tower, model.multi_modal_projector, lm_head]}")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return make_world(tmp_path_factory.mktemp("world"))


def _curve(out):
    return losses(json.loads((out / "train_log.json").read_text()))


def test_full_tuning_runs_and_saves_a_model(world, tmp_path):
    final = run_training(recipe(world, tmp_path / "run", epochs=3))
    curve = _curve(tmp_path / "run")
    assert len(curve) == 18 and all(v == v for v in curve.values())
    assert (final / "model.safetensors").is_file() and not (final / "adapter_config.json").exists()
    assert (final / "recipe.yaml").is_file() and json.loads((final / "data_summary.json").read_text())["records"] == 24


def test_lora_trains_adapters_and_projector_only(world, tmp_path):
    final = run_training(recipe(world, tmp_path / "run", extra=("tune.mode=lora", LORA,
                                                                 "tune.lr_multipliers={multi_modal_projector: 0.1}")))
    config = json.loads((final / "adapter_config.json").read_text())
    assert config["r"] == 8 and config["modules_to_save"] == ["multi_modal_projector"]
    assert config["base_model_name_or_path"] == str((tmp_path / "run" / "init").resolve())
    weights = load_file(final / "adapter_model.safetensors")
    assert any("lora_B" in k for k in weights) and any("multi_modal_projector" in k for k in weights)
    assert not any("vision_tower" in k or "embed_tokens" in k for k in weights)
    assert any(v.abs().sum() > 0 for k, v in weights.items() if "lora_B" in k)  # B starts at zero: it trained


def test_projector_mode_changes_only_the_projector(world, tmp_path):
    final = run_training(recipe(world, tmp_path / "run", extra=("tune.mode=projector",)))
    before = load_file(tmp_path / "run" / "init" / "model.safetensors")
    after = load_file(final / "model.safetensors")
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all("multi_modal_projector" in k for k in changed)


def test_qlora_on_cpu_quantizes_llm_only_and_trains(world, tmp_path):
    import bitsandbytes as bnb

    r = recipe(world, tmp_path / "run", extra=("tune.mode=qlora", LORA, QUANT))
    final = run_training(r)
    assert len(_curve(tmp_path / "run")) == 12 and (final / "adapter_model.safetensors").is_file()
    model, _ = load_model(tmp_path / "run" / "init", r | {"train": {**r["train"], "deepspeed": None}})
    kinds = {n: type(m) for n, m in model.named_modules()}
    assert any(k is bnb.nn.Linear4bit for n, k in kinds.items() if n.startswith("model.language_model."))
    assert not any(k is bnb.nn.Linear4bit for n, k in kinds.items() if not n.startswith("model.language_model."))
    model = prepare_trainable(model, r)
    assert all(p.dtype == torch.float32 for p in model.parameters() if p.requires_grad)


def test_length_grouping_keeps_phases_and_groups_lengths(tmp_path):
    recs = [QARecord(id=str(i), image=f"{i}.png", question="q" * (i % 5), answer="a" * i, answer_type="open",
                     family="diagnosis" if i < 8 else "yes_no") for i in range(16)]
    write_parquet(recs, tmp_path / "qa.parquet")
    records = open_records(tmp_path / "qa.parquet")
    order = curriculum_order(records, [{"families": ["diagnosis"], "epochs": 1}, {"families": "all", "epochs": 1}],
                             0, group=2)
    rows = [records[int(i)] for i in order]
    assert [r["family"] for r in rows[:8]] == ["diagnosis"] * 8 and len(order) == 24
    lengths = [len(r["question"]) + len(r["answer"]) for r in rows[:8]]
    assert lengths == sorted(lengths, reverse=True)  # one mega-batch of 100 holds the whole phase


def test_length_groups_keep_the_family_mix(tmp_path):
    """Families differ in length; grouped steps still mix them as the corpus does, lengths alike within one."""
    fams = ["diagnosis", "yes_no", "morphology", "multiple_choice"]
    recs = [QARecord(id=str(i), image=f"{i}.png", question="q", answer="a" * (10 * (i % 4) + i % 13),
                     answer_type="open", family=fams[i % 4]) for i in range(800)]
    write_parquet(recs, tmp_path / "qa.parquet")
    order = curriculum_order(open_records(tmp_path / "qa.parquet"), [{"families": "all", "epochs": 1}], 0, group=16)
    steps = [[recs[int(i)] for i in order[s:s + 16]] for s in range(0, 800, 16)]
    assert sorted(int(i) for i in order) == list(range(800))
    assert all(sum(r.family == f for r in step) == 4 for step in steps for f in fams)  # 1/4 each, like the corpus
    for f in fams:  # within a family, steps go from long to short answers
        per_step = [max(len(r.answer) for r in step if r.family == f) for step in steps[:50]]
        assert per_step == sorted(per_step, reverse=True)


def test_curriculum_order_is_the_permutation_a_record_list_had(tmp_path):
    """Same seed, same order as shuffling the list of records itself: loss curves do not move."""
    import random

    recs = [QARecord(id=str(i), image=f"{i}.png", question="q", answer="a" * (i % 7), answer_type="open",
                     family=["diagnosis", "yes_no", "morphology"][i % 3]) for i in range(50)]
    write_parquet(recs, tmp_path / "qa.parquet")
    phases = [{"families": ["diagnosis"], "epochs": 1}, {"families": "all", "epochs": 2}]
    got = [r.id for r in (recs[int(i)] for i in curriculum_order(open_records(tmp_path / "qa.parquet"), phases, 3))]
    rng, expected = random.Random(3), []
    for phase in phases:
        subset = [r for r in recs if phase["families"] == "all" or r.family in phase["families"]]
        for _ in range(phase["epochs"]):
            rng.shuffle(subset)
            expected += [r.id for r in subset]
    assert got == expected


def test_build_kind_joins_tower_and_llm_then_trains_projector(world, tmp_path):
    from tests.model.test_builder import make_clip, make_llm

    vision, llm = make_clip(tmp_path / "clip"), make_llm(tmp_path / "llm")
    final = run_training(recipe(world, tmp_path / "run", epochs=1, extra=(
        "model.kind=build", f"model.build={{vision: {vision}, llm: {llm}, projector: mlp2x_gelu, feature_layer: -2}}",
        "tune.mode=projector", "data.max_length=260", "train.report_to=[tensorboard]")))
    info = json.loads((tmp_path / "run" / "init" / "BUILD_INFO.json").read_text())
    assert info["image_seq_length"] == 196 and (final / "model.safetensors").is_file()
    assert len(_curve(tmp_path / "run")) == 6
    assert list((tmp_path / "run" / "tensorboard").rglob("events.out.tfevents.*"))


def test_qlora_adapter_is_evaluated_on_its_4bit_base_and_export_measures_the_merge(world, tmp_path, capsys):
    """Inference loads a QLoRA adapter on the NF4 base it trained with; export reports the merge error."""
    import bitsandbytes as bnb
    from PIL import Image

    from dermvqa.infer.generate import answer_batch, load_model
    from dermvqa.model.adapter import QUANT_FILE, load_adapter_model
    from dermvqa.train.export import export

    wide = TINY_MODEL.replace("text_width: 32", "text_width: 64")  # bnb's CPU 4-bit inference needs in >= 64
    final = run_training(recipe(world, tmp_path / "run", extra=("tune.mode=qlora", LORA, QUANT, wide)))
    assert (final / QUANT_FILE).is_file()
    model, processor = load_model(final, device="cpu")
    assert any(isinstance(m, bnb.nn.Linear4bit) for m in model.modules()) and hasattr(model, "peft_config")
    image = Image.new("RGB", (40, 40), (180, 90, 80))
    trained = answer_batch(model, processor, [image], ["What is the most likely diagnosis?"], max_new_tokens=6)
    merged = load_adapter_model(final, merge=True)
    assert not any(isinstance(m, bnb.nn.Linear4bit) for m in merged.modules())
    out = export(final, tmp_path / "export")
    card = (out / "README.md").read_text()
    assert "trained on a 4-bit base" in card and "merging changes the logits by up to" in card
    error = float(card.split("merging changes the logits by up to ")[1].split(" ")[0])
    assert 0 < error < 10  # NF4 rounding of the base is what merging gives up: measured, not zero
    assert trained and "merging changes the logits" in capsys.readouterr().out
