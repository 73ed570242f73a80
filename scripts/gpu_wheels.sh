#!/usr/bin/env bash
# The wheel bundle scripts/gpu_check.sh installs on the GPU machine, which has no network: x86-64,
# Python 3.12 wheels of what it lacks (../shared/GPU.md; trl is no longer used) plus liger-kernel
# for the train.liger candidate (its Triton ships with the machine's CUDA torch). Writes .whl/
# (git-ignored, about 53 MB); pass it along with the run: carry [".whl"].
# Usage: bash scripts/gpu_wheels.sh
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-.venv/bin/python}
"$py" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 -d .whl bitsandbytes==0.50.2 open-clip-torch==3.3.0 liger-kernel==0.8.5 \
  hjson pydantic pydantic-core annotated-types typing-inspection typing-extensions datasets dill \
  multiprocess ftfy wcwidth
src=$(mktemp -d)
trap 'rm -rf "$src"' EXIT
"$py" -m pip download -q --no-deps --no-binary=:all: -d "$src" deepspeed==0.19.8  # source only
DS_BUILD_OPS=0 "$py" -m pip wheel -q --no-deps --no-build-isolation "$src"/deepspeed-0.19.8.tar.gz -w .whl
du -sh .whl && ls .whl
