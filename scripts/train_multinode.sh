#!/usr/bin/env bash
# Train across nodes: `HOSTFILE=scripts/hostfile.example MASTER_ADDR=node1 scripts/train_multinode.sh CONFIG ...`
# Run it on the first node. The deepspeed launcher reaches the others over passwordless ssh
# (pdsh); every node needs this repository at the same path, the same venv and the data, and
# train.output_dir must be on a filesystem all nodes share (process 0 writes the run folder).
# Without ssh, start one launcher per node instead, each with its NODE_RANK:
#   torchrun --nnodes N --node_rank $NODE_RANK --nproc_per_node 8 --master_addr $MASTER_ADDR \
#            --master_port 29500 $(command -v dermvqa) train CONFIG ...
set -euo pipefail
cd "$(dirname "$0")/.."
DERMVQA=$(command -v dermvqa || echo "$PWD/.venv/bin/dermvqa")
: "${HOSTFILE:?set HOSTFILE (lines like 'node1 slots=8')}"
: "${MASTER_ADDR:?set MASTER_ADDR to the first node's address}"
exec deepspeed --hostfile "$HOSTFILE" --master_addr "$MASTER_ADDR" --master_port "${MASTER_PORT:-29500}" \
  --no_local_rank "$DERMVQA" train "$@"
