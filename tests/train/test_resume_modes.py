"""`--resume` restores the weights in every training mode: the resumed curve equals the uninterrupted one.

A run is cut as a kill -9 right after checkpoint-6 would leave it (later checkpoints, the final
model and the log gone), resumed, and compared step by step. Full and projector checkpoints are
saved in LLaVA's older key layout, so this is where a silent reload from the initial weights showed.
"""
import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from dermvqa.train.checkpoints import load_checkpoint_weights
from tests.conftest import REPO
from tests.train.test_modes import QUANT
from tests.train.tiny_run import LORA, cli, losses, make_world, overrides

ZERO = REPO / "configs" / "deepspeed"
MODES = {
    "full": ("tune.mode=full",),
    "projector": ("tune.mode=projector",),
    "qlora": ("tune.mode=qlora", LORA, QUANT),
    "projector-zero2": ("tune.mode=projector", f"train.deepspeed={ZERO / 'zero2.json'}"),
    "lora-zero2": ("tune.mode=lora", LORA, f"train.deepspeed={ZERO / 'zero2.json'}"),
    "full-zero3": ("tune.mode=full", f"train.deepspeed={ZERO / 'zero3.json'}"),
}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return make_world(tmp_path_factory.mktemp("world"))


def _train(world, out, extra, resume=False):
    args = ["train", str(REPO / "configs" / "tiny_cpu.yaml"),
            *overrides(world, out, 2, (*extra, "train.save_steps=6", "train.save_total_limit=3"))]
    run = cli(args + (["--resume"] if resume else []))
    text = run.communicate(timeout=600)[0]
    assert run.returncode == 0, text[-3000:]
    return text


@pytest.mark.parametrize("mode", list(MODES))
def test_cut_then_resume_matches_uninterrupted(world, tmp_path, mode):
    _train(world, tmp_path / "ref", MODES[mode])
    cut = tmp_path / "cut"
    shutil.copytree(tmp_path / "ref", cut, ignore=shutil.ignore_patterns("checkpoint-12", "model", "train_log.json"))
    out = _train(world, cut, MODES[mode], resume=True)
    assert "resuming from" in out and "checkpoint-6" in out
    ref, got = (losses(json.loads((d / "train_log.json").read_text())) for d in (tmp_path / "ref", cut))
    assert sorted(ref) == sorted(got) == list(range(1, 13))
    for step in range(7, 13):
        assert abs(got[step] - ref[step]) < 1e-5, (mode, step, got[step], ref[step])


def test_checkpoint_whose_keys_do_not_load_is_an_error(tmp_path):
    from transformers import LlavaForConditionalGeneration

    from dermvqa.model.tiny import build_tiny_llava

    build_tiny_llava(tmp_path / "m", ["a b c d"] * 8, seed=0, image_size=32, patch_size=8, vision_width=32,
                     vision_layers=1, text_width=32, text_layers=2, vocab_size=300, feature_layer=-1)
    model = LlavaForConditionalGeneration.from_pretrained(tmp_path / "m")
    weights = load_file(tmp_path / "m" / "model.safetensors")
    torch.nn.init.zeros_(model.model.multi_modal_projector.linear_1.weight)
    load_checkpoint_weights(model, tmp_path / "m")  # the saved (older) layout loads back, values restored
    assert torch.equal(model.model.multi_modal_projector.linear_1.weight,
                       weights["multi_modal_projector.linear_1.weight"])
    bad = tmp_path / "bad"
    bad.mkdir()
    save_file({k.replace("language_model.model.", "llm."): v for k, v in weights.items()}, bad / "model.safetensors")
    with pytest.raises(RuntimeError, match="does not fit the model"):
        load_checkpoint_weights(model, bad)
