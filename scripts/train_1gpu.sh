#!/usr/bin/env bash
# Train on one GPU: `scripts/train_1gpu.sh CONFIG [--key=value ...]`.
# Runs without DeepSpeed (one GPU gains nothing from sharding; our step is fast without it).
# Remember the global batch: set --train.grad_accum so batch_size x grad_accum matches the recipe.
# To fit a model that does not fit one GPU, offload with ZeRO-3 instead:
#   DS_CONFIG=configs/deepspeed/zero3_offload.json scripts/train_1gpu.sh CONFIG ...
set -euo pipefail
cd "$(dirname "$0")/.."
DERMVQA=$(command -v dermvqa || echo .venv/bin/dermvqa)
config=$1; shift
if [ -n "${DS_CONFIG:-}" ]; then
  exec deepspeed --num_gpus 1 --no_local_rank "$DERMVQA" train "$config" --train.deepspeed="$DS_CONFIG" "$@"
fi
exec "$DERMVQA" train "$config" --train.deepspeed=null "$@"
