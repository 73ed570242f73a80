"""kill -9 in the middle of a run, `--resume`, and the loss curve equals an uninterrupted run's."""
import json
import shutil
import signal
import time

import pytest

from dermvqa.train.checkpoints import MARKER, latest_complete, missing_checkpoint_files
from tests.train.tiny_run import LORA, cli, losses, make_world, overrides
from tests.conftest import REPO

EXTRA = ("tune.mode=lora", LORA, "train.save_steps=5", "train.save_total_limit=3")
EPOCHS = 16  # 24 records / batch 4 = 6 steps an epoch -> 96 steps


def _train(world, out, resume=False):
    args = ["train", str(REPO / "configs" / "tiny_cpu.yaml"), *overrides(world, out, EPOCHS, EXTRA)]
    return cli(args + (["--resume"] if resume else []))


def test_kill9_then_resume_matches_uninterrupted(tmp_path):
    world = make_world(tmp_path / "w")
    victim = _train(world, tmp_path / "victim")
    ckpts = tmp_path / "victim" / "checkpoints"
    deadline = time.time() + 300
    while not (ckpts / "checkpoint-20" / MARKER).exists():
        assert victim.poll() is None, "run ended before it could be killed:\n" + victim.communicate()[0][-3000:]
        assert time.time() < deadline, "no complete checkpoint-20 within 300 s"
        time.sleep(0.01)
    victim.send_signal(signal.SIGKILL)
    victim.communicate(timeout=60)
    ref = _train(world, tmp_path / "ref")
    ref_out = ref.communicate(timeout=600)[0]
    assert ref.returncode == 0, ref_out[-3000:]
    assert victim.returncode == -signal.SIGKILL and not (tmp_path / "victim" / "model").exists()
    # whatever the kill left, add a half-written newest checkpoint: no marker, no optimizer state
    newest = max(ckpts.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    fake = ckpts / "checkpoint-9995"
    shutil.copytree(newest, fake)
    (fake / MARKER).unlink(missing_ok=True)
    (fake / "optimizer.pt").unlink()
    resumed = _train(world, tmp_path / "victim", resume=True)
    out = resumed.communicate(timeout=600)[0]
    assert resumed.returncode == 0, out[-3000:]
    assert "checkpoint-9995 has no COMPLETE marker" in out and "resuming from" in out
    assert not fake.exists() and list(ckpts.glob("incomplete-checkpoint-9995-*"))
    ref_curve = losses(json.loads((tmp_path / "ref" / "train_log.json").read_text()))
    got = losses(json.loads((tmp_path / "victim" / "train_log.json").read_text()))
    assert sorted(got) == sorted(ref_curve) == list(range(1, 97))
    for step, loss in ref_curve.items():
        assert abs(got[step] - loss) < 1e-5, (step, got[step], loss)


def _fake_checkpoint(folder, marker=True, optimizer=True):
    folder.mkdir(parents=True)
    (folder / "trainer_state.json").write_text("{}")
    (folder / "adapter_model.safetensors").write_bytes(b"x")
    if optimizer:
        (folder / "optimizer.pt").write_bytes(b"x")
    if marker:
        (folder / MARKER).write_text("{}")


def test_latest_complete_skips_half_written(tmp_path):
    _fake_checkpoint(tmp_path / "checkpoint-2")
    _fake_checkpoint(tmp_path / "checkpoint-10")
    _fake_checkpoint(tmp_path / "checkpoint-12", marker=False, optimizer=False)
    assert missing_checkpoint_files(tmp_path / "checkpoint-12") == ["optimizer.pt"]
    assert latest_complete(tmp_path) == tmp_path / "checkpoint-10"  # numeric, not string, order
    assert not (tmp_path / "checkpoint-12").exists() and list(tmp_path.glob("incomplete-checkpoint-12-*"))
    (tmp_path / "checkpoint-10" / "optimizer.pt").unlink()
    with pytest.raises(FileNotFoundError, match="marked complete but missing"):
        latest_complete(tmp_path)
    assert latest_complete(tmp_path / "nothing") is None
