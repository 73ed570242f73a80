"""DeepSpeed ZeRO-2 and ZeRO-3 in one process (RANK/WORLD_SIZE/... set, gloo on the CPU) match the plain loss."""
import json

import torch
from safetensors.torch import load_file

from tests.conftest import REPO
from tests.train.tiny_run import LORA, cli, losses, make_world, overrides

EXTRA = ("tune.mode=lora", LORA, "tune.lr_multipliers={multi_modal_projector: 0.1}", "train.save_steps=6")


def test_zero2_loss_curve_matches_plain(tmp_path):
    world = make_world(tmp_path / "w")
    curves = {}
    for name, ds in (("plain", "null"), ("zero2", str(REPO / "configs" / "deepspeed" / "zero2.json")),
                     ("zero3", str(REPO / "configs" / "deepspeed" / "zero3.json"))):
        run = cli(["train", str(REPO / "configs" / "tiny_cpu.yaml"),
                   *overrides(world, tmp_path / name, 2, EXTRA + (f"train.deepspeed={ds}",))])
        out = run.communicate(timeout=600)[0]
        assert run.returncode == 0, out[-3000:]
        curves[name] = losses(json.loads((tmp_path / name / "train_log.json").read_text()))
    assert sorted(curves["plain"]) == sorted(curves["zero2"]) == sorted(curves["zero3"]) == list(range(1, 13))
    first, last = curves["plain"][1], curves["plain"][12]
    assert last < first  # it learns, so matching curves compare real updates
    for step, loss in curves["plain"].items():
        for name in ("zero2", "zero3"):
            assert abs(curves[name][step] - loss) < 1e-4, (name, step, curves[name][step], loss)
    # the DeepSpeed run really went through the engine: its checkpoint holds DeepSpeed's global_step*/ state
    ds_ckpt, plain_ckpt = (tmp_path / n / "checkpoints" / "checkpoint-6" for n in ("zero2", "plain"))
    assert (ds_ckpt / "global_step6").is_dir() and not (ds_ckpt / "optimizer.pt").exists()
    assert (plain_ckpt / "optimizer.pt").is_file() and not list(plain_ckpt.glob("global_step*"))
    assert (ds_ckpt / "COMPLETE").is_file() and (plain_ckpt / "COMPLETE").is_file()
    # ZeRO-3 partitions parameters; the saved adapter must hold the gathered, full-size tensors
    plain_w = load_file(tmp_path / "plain" / "model" / "adapter_model.safetensors")
    z3_w = load_file(tmp_path / "zero3" / "model" / "adapter_model.safetensors")
    assert {k: v.shape for k, v in z3_w.items()} == {k: v.shape for k, v in plain_w.items()}
    assert all(torch.allclose(z3_w[k], plain_w[k], atol=1e-3) for k in plain_w)
