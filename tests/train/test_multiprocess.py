"""Two processes under torchrun (gloo on the CPU) train exactly what one process trains on the same global batch.

This is the 8-GPU path in miniature (LoRA under ZeRO-3, QLoRA under ZeRO-2): the dataloader
shards each global batch, the label-token count is summed over ranks, ZeRO-3 partitions the
weights, rank 0 alone writes, and `--resume` continues a multi-process run from its last
complete checkpoint.
"""
import json
import shutil
import subprocess
import sys

import torch
from safetensors.torch import load_file

from dermvqa.trust.ood import load_summary
from dermvqa.train.ds_env import free_port
from tests.conftest import REPO
from tests.train.test_modes import QUANT
from tests.train.tiny_run import child_env, cli, losses, make_world, overrides

ZERO = REPO / "configs" / "deepspeed"
NO_DROPOUT_LORA = "tune.lora={r: 8, alpha: 16, dropout: 0.0, targets: all-linear}"  # same random streams needed


def torchrun(args: list[str]) -> str:
    """`python -m torch.distributed.run --nproc_per_node 2 -m dermvqa.cli ...`, one CPU thread each."""
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                          "--master_port", str(free_port()), "-m", "dermvqa.cli", *args],
                         cwd=REPO, env=child_env(), text=True, capture_output=True, timeout=600)
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-4000:]
    return out


def train_args(world, out, batch_size, ds, epochs=2):
    extra = ("tune.mode=lora", NO_DROPOUT_LORA, f"train.deepspeed={ds}", f"train.batch_size={batch_size}",
             "train.save_steps=6")
    return ["train", str(REPO / "configs" / "tiny_cpu.yaml"), *overrides(world, out, epochs, extra)]


def adapter(run_dir):
    return load_file(run_dir / "model" / "adapter_model.safetensors")


def test_two_processes_zero3_match_one_process_and_resume(tmp_path):
    world = make_world(tmp_path / "w")
    one = cli(train_args(world, tmp_path / "one", 4, ZERO / "zero2.json"))
    out = one.communicate(timeout=600)[0]
    assert one.returncode == 0, out[-3000:]

    two_out = torchrun(train_args(world, tmp_path / "two", 2, ZERO / "zero3.json"))  # 2 ranks x 2 = 4 per step
    assert two_out.count("model saved to") == 1 and two_out.count("training lora from") == 1
    ref, two = (losses(json.loads((tmp_path / n / "train_log.json").read_text())) for n in ("one", "two"))
    assert sorted(ref) == sorted(two) == list(range(1, 13)) and ref[12] < ref[1]
    assert all(abs(ref[s] - two[s]) < 1e-4 for s in ref), (ref, two)
    a, b = adapter(tmp_path / "one"), adapter(tmp_path / "two")
    assert a.keys() == b.keys() and all(a[k].shape == b[k].shape for k in a)  # gathered, not ZeRO-3 shards
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-5
    ckpt = tmp_path / "two" / "checkpoints" / "checkpoint-6"
    assert (ckpt / "COMPLETE").is_file() and sorted(p.name for p in ckpt.glob("rng_state_*.pth")) == \
        ["rng_state_0.pth", "rng_state_1.pth"]

    # the run as it stood after step 6 (checkpoint-12 and the final model not yet written), resumed by 2 ranks
    cut = tmp_path / "cut"
    shutil.copytree(tmp_path / "two", cut, ignore=shutil.ignore_patterns("checkpoint-12", "model", "train_log.json"))
    resumed_out = torchrun(train_args(world, cut, 2, ZERO / "zero3.json") + ["--resume"])
    assert "resuming from" in resumed_out and str(ckpt.name) in resumed_out
    resumed = losses(json.loads((cut / "train_log.json").read_text()))
    assert all(abs(resumed[s] - two[s]) < 1e-5 for s in range(7, 13)), (resumed, two)
    c = adapter(cut)
    assert all(torch.allclose(c[k], b[k], atol=1e-6) for k in b)


def test_two_processes_qlora_zero2_match_one_process(tmp_path):
    """The multi-GPU QLoRA recipe (4-bit LLM, ZeRO-2) in miniature, on bitsandbytes' CPU backend; both ranks
    fit the out-of-distribution summary at the end, rank 0 writes it, and it equals the one-process fit."""
    world = make_world(tmp_path / "w", n=24)  # 24 images: enough for an out-of-distribution summary
    qlora = ("tune.mode=qlora", QUANT)
    one = cli(train_args(world, tmp_path / "one", 4, "null", epochs=1) + list(qlora))
    out = one.communicate(timeout=600)[0]
    assert one.returncode == 0, out[-3000:]
    torchrun(train_args(world, tmp_path / "two", 2, ZERO / "zero2.json", epochs=1) + list(qlora))
    ref, two = (losses(json.loads((tmp_path / n / "train_log.json").read_text())) for n in ("one", "two"))
    assert sorted(ref) == sorted(two) == list(range(1, 13))
    assert all(abs(ref[s] - two[s]) < 1e-4 for s in ref), (ref, two)
    a, b = adapter(tmp_path / "one"), adapter(tmp_path / "two")
    assert a.keys() == b.keys() and max((a[k] - b[k]).abs().max().item() for k in a) < 1e-5
    ood_one, ood_two = (load_summary(tmp_path / n / "model") for n in ("one", "two"))
    assert ood_one is not None and ood_two is not None and ood_one.classes == ood_two.classes
    assert torch.allclose(ood_one.means, ood_two.means, atol=1e-4)
    assert abs(ood_one.threshold - ood_two.threshold) < 1e-3 * max(1.0, ood_one.threshold)
