"""DeepSpeed ZeRO-2 in one process (RANK/WORLD_SIZE/... set, gloo on the CPU) matches the plain path's loss."""
import json

from tests.conftest import REPO
from tests.train.tiny_run import LORA, cli, losses, make_world, overrides

EXTRA = ("tune.mode=lora", LORA, "tune.lr_multipliers={multi_modal_projector: 0.1}", "train.save_steps=6")


def test_zero2_loss_curve_matches_plain(tmp_path):
    world = make_world(tmp_path / "w")
    curves = {}
    for name, ds in (("plain", "null"), ("zero2", str(REPO / "configs" / "deepspeed" / "zero2.json"))):
        run = cli(["train", str(REPO / "configs" / "tiny_cpu.yaml"),
                   *overrides(world, tmp_path / name, 2, EXTRA + (f"train.deepspeed={ds}",))])
        out = run.communicate(timeout=600)[0]
        assert run.returncode == 0, out[-3000:]
        curves[name] = losses(json.loads((tmp_path / name / "train_log.json").read_text()))
    assert sorted(curves["plain"]) == sorted(curves["zero2"]) == list(range(1, 13))
    first, last = curves["plain"][1], curves["plain"][12]
    assert last < first  # it learns, so matching curves compare real updates
    for step, loss in curves["plain"].items():
        assert abs(curves["zero2"][step] - loss) < 1e-4, (step, curves["zero2"][step], loss)
    # the DeepSpeed run really went through the engine: its checkpoint holds DeepSpeed's global_step*/ state
    ds_ckpt, plain_ckpt = (tmp_path / n / "checkpoints" / "checkpoint-6" for n in ("zero2", "plain"))
    assert (ds_ckpt / "global_step6").is_dir() and not (ds_ckpt / "optimizer.pt").exists()
    assert (plain_ckpt / "optimizer.pt").is_file() and not list(plain_ckpt.glob("global_step*"))
    assert (ds_ckpt / "COMPLETE").is_file() and (plain_ckpt / "COMPLETE").is_file()
    assert (tmp_path / "zero2" / "model" / "adapter_model.safetensors").is_file()
