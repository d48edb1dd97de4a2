#!/usr/bin/env bash
# The accelerator check (benchmarks/device_check.py): brats_jax, its speed levers and the
# PyTorch peers on the one device of this machine, into $OUT/device_check.json (default
# benchmarks/results/), the table printed last.
#
#   benchmarks/device_check.sh             # a GPU box: at most ~8.5 minutes (--budget_s=500)
#   benchmarks/device_check.sh --runs=...  # only the named runs (a rerun of what was skipped)
#   benchmarks/device_check.sh --smoke     # tiny shapes, any machine (the slow test tier)
#
# $PYTHON names the interpreter (default python3; images often have no `python`). Where it
# already has jax (with its CUDA plugin), flax, optax, orbax, tensorstore and torch but not
# this project's other dependencies, put their wheels in device_wheels/ first (the list is in
# docs/benchmarks.md); they are installed without an index, and the project without its
# dependencies. Elsewhere: pip install -e ".[peer]" and run it.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
export OUT="${OUT:-benchmarks/results}"
if compgen -G "device_wheels/*.whl" > /dev/null; then
  "$PYTHON" -m pip install -q --no-deps --no-index device_wheels/*.whl
fi
if ! "$PYTHON" -c "import brats_jax" 2> /dev/null; then
  "$PYTHON" -m pip install -q --no-deps --no-build-isolation -e . 2> /dev/null \
      || export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
exec "$PYTHON" benchmarks/device_check.py "$@"
