#!/usr/bin/env bash
# Train on a Cloud TPU VM pod slice: the same command runs on every worker, and
# jax.distributed.initialize() (--distributed) discovers the slice. STORE and WORKDIR may be
# gs:// URLs (pip install -e ".[cloud]" on the workers) or paths every worker shares (e.g. a
# Filestore or gcsfuse mount). Worker logs: logs/worker_<n>.log on each worker.
#
#   TPU_NAME=my-v5p-64 ZONE=us-east5-a STORE=gs://bucket/brats2021_store \
#     WORKDIR=gs://bucket/runs/brats2021 launch/tpu_pod.sh
set -euo pipefail
: "${TPU_NAME:?set TPU_NAME}" "${ZONE:?set ZONE}" "${STORE:?set STORE}" "${WORKDIR:?set WORKDIR}"
gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone="$ZONE" --worker=all --command="
  cd ~/brats_jax && mkdir -p logs &&
  python -m brats_jax.cli.train --distributed --config=configs/default.py \
    --workdir=$WORKDIR --config.data.store=$STORE --config.model.dtype=bfloat16 \
    > logs/worker_\$(hostname).log 2>&1"
