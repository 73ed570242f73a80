"""The GPU benchmark's logic, run on the CPU with tiny shapes (`--tiny`): every case must produce a row; the
GPU-only kernel candidates (flex attention, Liger) a skipped row that says why."""
import os
import re
import subprocess
import sys

CASES = ["plain+ckpt", "zero2", "ours", "zero2+ckpt", "plain", "ours (no DeepSpeed)", "plain+ckpt+autocast",
         "ours (ckpt all)",
         "qlora naive", "qlora naive+train", "qlora ours", "qlora ours (ZeRO-2)"]
GPU_ONLY = ["ours (liger)", "ours (flex)", "ours (flex+liger)"]


def test_bench_runs_every_case_on_cpu():
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    env.pop("MASTER_PORT", None)
    run = subprocess.run([sys.executable, "-m", "dermvqa.bench.gpu_bench_train", "--tiny", "--steps", "2",
                          "--warmup", "2"], capture_output=True, text=True, env=env, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    table = {m.group(1): m.group(2) for m in re.finditer(r"^\| ([^|]+?) \| ([\d,]+|-) \|", run.stdout, re.M)}
    assert set(CASES) <= set(table), run.stdout[-3000:]
    assert all(table[c] != "-" for c in CASES), run.stdout[-3000:]  # a number, not an error
    assert "error:" not in run.stdout
    for case in GPU_ONLY:
        row = rf"^\| {re.escape(case)} \| - \| - \| - \| skipped: no CUDA GPU \(.+\) \|$"
        assert re.search(row, run.stdout, re.M), case
    # naive QLoRA keeps from_pretrained's eval mode, so transformers checkpoints nothing
    assert re.search(r"qlora naive \|.* 0 of 2 LLM layers checkpointed", run.stdout)
    assert re.search(r"qlora ours \|.* 2 of 2 LLM layers checkpointed", run.stdout)
    assert re.search(r"qlora ours \(ZeRO-2\) \|.* 2 of 2 LLM layers checkpointed.*ZeRO-2 \|", run.stdout)
    assert re.search(r"\| ours \|.* 0 of 2 LLM layers checkpointed", run.stdout)
    assert re.search(r"\| ours \|.* ZeRO-2 \|", run.stdout) and re.search(r"\| ours \(no DeepSpeed\) \|(?!.*ZeRO-2)",
                                                                       run.stdout)
    assert "| 1.00 |" in run.stdout  # the best baseline's own ratio
    # one profiled step each, with its top kernels
    for case in ("zero2", "ours", "ours (no DeepSpeed)", "qlora ours", "qlora ours (ZeRO-2)"):
        found = re.search(rf"profile of one '{re.escape(case)}' step: [\d.]+ ms .*\n(\s+[\d.]+% .*\n){{5,}}", run.stdout)
        assert found and "aten::mm" in found.group(0), case
