#!/usr/bin/env bash
# One training run over the GPUs of one node or of several (torchrun, PyTorch DDP): armlib's counterpart of
# mmsegmentation's tools/dist_train.sh. Run it once per node; every node gets the same arguments.
#
#   scripts/dist_train.sh CONFIG OUT [--resume] [key=value ...]
#
#   one node, 8 GPUs:   GPUS=8 scripts/dist_train.sh configs/paper_cityscapes_coarse.yaml runs/paper/base
#   two nodes:          on both nodes: NNODES=2 GPUS=8 MASTER_ADDR=<first node> PORT=29500 \
#                           scripts/dist_train.sh configs/paper_cityscapes_coarse.yaml runs/paper/base
#   on SLURM:           sbatch scripts/slurm/train.sbatch CONFIG OUT [key=value ...]
#
# batch_size is the global batch (divided over NNODES × GPUS processes), so the run's arithmetic depends on
# the world size only, not on how it is spread over nodes. OUT must be on a file system every node sees:
# rank 0 writes the checkpoint and the record there, and a restarted run reads them back (--resume).
#
# Environment: GPUS (processes per node, default 1), NNODES (default 1), MASTER_ADDR (host of the rendezvous,
# default 127.0.0.1), PORT (default 29500), RDZV_ID (a job id shared by the nodes; default armlib-<OUT name>),
# MAX_RESTARTS (torchrun restarts the workers this often after a failure, default 0; add --resume so a
# restart continues from the checkpoint), PYTHON (default python).
set -euo pipefail
if [ $# -lt 2 ]; then
    echo "usage: $0 CONFIG OUT [--resume] [key=value ...]" >&2
    exit 2
fi
CONFIG=$1
OUT=$2
shift 2
exec "${PYTHON:-python}" -m torch.distributed.run \
    --nnodes "${NNODES:-1}" --nproc-per-node "${GPUS:-1}" \
    --rdzv-backend c10d --rdzv-endpoint "${MASTER_ADDR:-127.0.0.1}:${PORT:-29500}" \
    --rdzv-id "${RDZV_ID:-armlib-$(basename "$OUT")}" --max-restarts "${MAX_RESTARTS:-0}" \
    -m armlib train --config "$CONFIG" --out "$OUT" "$@"
