#!/usr/bin/env bash
# Start N training processes on this machine, as a multi-host run would (jax.distributed over
# localhost). On a CPU each process gets DEVICES_PER_PROCESS fake devices and collectives go
# over gloo. Logs: $LOG_DIR/process_<i>.log. Ctrl-C / SIGTERM reach every process, which
# each finish their step and take part in the final checkpoint.
#
#   launch/local.sh 2 --config=configs/demo.py --workdir=/tmp/run --config.data.store=STORE
set -euo pipefail
num_processes=${1:?usage: launch/local.sh NUM_PROCESSES --config=... --workdir=... [flags]}
shift
port=${PORT:-$((20000 + RANDOM % 20000))}
log_dir=${LOG_DIR:-logs}
mkdir -p "$log_dir"
if [ -n "${DEVICES_PER_PROCESS:-}" ]; then
  export JAX_NUM_CPU_DEVICES="$DEVICES_PER_PROCESS"
fi
pids=()
for ((i = 0; i < num_processes; i++)); do
  python -m brats_jax.cli.train --coordinator="localhost:$port" --num_processes="$num_processes" \
    --process_id="$i" "$@" >"$log_dir/process_$i.log" 2>&1 &
  pids+=($!)
done
trap 'kill -TERM "${pids[@]}" 2>/dev/null || true' INT TERM
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=$?; done
echo "all processes done (exit $status); logs in $log_dir/"
exit "$status"
