#!/usr/bin/env bash
# Train on one GPU: `scripts/train_1gpu.sh CONFIG [--key=value ...]`, CONFIG a recipe file or a shipped name.
# Runs our step inside DeepSpeed's ZeRO-2 engine in one process (no launcher needed): on one GPU
# that shards nothing but computes the whole model, adapters included, in bf16 with an fp32 master
# copy in the optimizer. On an H200 the engine ran a plain peft step ~1.5x faster than a plain loop;
# scripts/gpu_check.sh times our step inside it ("ours") against "ours (no DeepSpeed)".
# Remember the global batch: set --train.grad_accum so batch_size x grad_accum matches the recipe.
#   DS_CONFIG=none                               no DeepSpeed (fp32 adapters under bf16 autocast)
#   DS_CONFIG=configs/deepspeed/zero3_offload.json   a model that does not fit one GPU
# QLoRA recipes keep their own train.deepspeed unless DS_CONFIG is set (ZeRO-2 works with 4 bits).
set -euo pipefail
cd "$(dirname "$0")/.."
DERMVQA=$(command -v dermvqa || echo .venv/bin/dermvqa)
config=$1; shift
recipe=$config; [ -f "$recipe" ] || recipe=configs/${config#configs/}; [ -f "$recipe" ] || recipe=$recipe.yaml  # its file
if [ -z "${DS_CONFIG:-}" ] && { grep -qs "^ *mode: qlora" "$recipe" || [[ " $* " == *"tune.mode=qlora"* ]]; }; then
  exec "$DERMVQA" train "$config" "$@"   # QLoRA: the recipe's own setting unless DS_CONFIG says otherwise
fi
ds=${DS_CONFIG:-configs/deepspeed/zero2.json}
[ "$ds" = none ] && ds=null
exec "$DERMVQA" train "$config" --train.deepspeed="$ds" "$@"
