#!/usr/bin/env bash
# Train on one node with 8 GPUs (or NUM_GPUS): `scripts/train_8gpu.sh CONFIG [--key=value ...]`.
# The deepspeed launcher starts one process per GPU; the recipe's train.deepspeed file (ZeRO-2 or
# ZeRO-3) shards optimizer state / parameters. Global batch = batch_size x grad_accum x NUM_GPUS.
set -euo pipefail
cd "$(dirname "$0")/.."
DERMVQA=$(command -v dermvqa || echo .venv/bin/dermvqa)
exec deepspeed --num_gpus "${NUM_GPUS:-8}" --master_port "${MASTER_PORT:-29500}" --no_local_rank \
  "$DERMVQA" train "$@"
