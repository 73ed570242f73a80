#!/usr/bin/env bash
# The prepared GPU check (one H100/H200, about 5 minutes, hard limit 8): training-step throughput
# of plain transformers+peft, DeepSpeed ZeRO-2 (each with/without activation checkpointing) and
# our step (in the ZeRO-2 engine, and without DeepSpeed; with the flex_attention and Liger kernel
# candidates) on a random Qwen2.5-7B-shaped LLaVA, plus the 7B QLoRA peak memory; one table, and a
# kernel profile of one step of zero2 and of each "ours"; then the kernel candidates' loss and
# gradients against sdpa / no Liger (tests/train/test_kernels.py). Needs the wheel bundle of
# scripts/gpu_wheels.sh in .whl/ (deepspeed, bitsandbytes, liger-kernel, ...); the GPU machine has
# no network. Table and test log go to $OUT/gpu_bench.txt and $OUT/gpu_kernels.txt when OUT is set.
# The checkout is used from PYTHONPATH, not installed, so dermvqa.configs (configs/, mapped there by pyproject.toml
# at install) is linked into the package for the run.
# Usage: bash scripts/gpu_check.sh [extra dermvqa.bench.gpu_bench_train arguments]
set -uo pipefail
cd "$(dirname "$0")/.."
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
[ -e dermvqa/configs ] || { ln -s ../configs dermvqa/configs && trap 'rm -f dermvqa/configs' EXIT; }
export PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True TOKENIZERS_PARALLELISM=false
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, transformers, peft, deepspeed, bitsandbytes as b; print('torch', torch.__version__, \
'transformers', transformers.__version__, 'peft', peft.__version__, 'deepspeed', deepspeed.__version__, \
'bitsandbytes', b.__version__)" 2>&1 | grep -v WARNING
python3 -c "import triton, liger_kernel, importlib.metadata as m; print('triton', triton.__version__, \
'liger-kernel', m.version('liger-kernel'))" 2>&1 | tail -1
log=${OUT:-/tmp}/gpu_bench.txt
timeout 345 python3 -m dermvqa.bench.gpu_bench_train --budget-s 290 "$@" 2>&1 \
  | grep --line-buffered -v "Loading weights\|Writing model\|real_accelerator" | tee "$log"
echo "gpu_check: exit ${PIPESTATUS[0]}"
klog=${OUT:-/tmp}/gpu_kernels.txt
timeout 150 python3 -m pytest -q -s -p no:cacheprovider tests/train/test_kernels.py >"$klog" 2>&1
echo "kernel tests: exit $?"
grep -E " vs |passed|failed|Error" "$klog" | tail -20
