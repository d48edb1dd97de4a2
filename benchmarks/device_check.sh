#!/usr/bin/env bash
# The accelerator check (benchmarks/device_check.py): brats_jax against PyTorch/MONAI on the
# one device of this machine, into $OUT/device_check.json (default benchmarks/results/).
#
#   benchmarks/device_check.sh            # a GPU box: about 6-8 minutes on one H200
#   benchmarks/device_check.sh --smoke    # tiny shapes, any machine (the slow test tier)
#
# On a machine whose Python already has jax (with its CUDA plugin), flax, optax, orbax,
# tensorstore and torch, but not this project's other dependencies, put their wheels in
# device_wheels/ first (pip download --no-deps -d device_wheels nibabel ml-collections
# monai tensorboardX); they are installed without an index, and the project without its
# dependencies. Elsewhere: pip install -e ".[peer]" and run it.
set -euo pipefail
cd "$(dirname "$0")/.."
export OUT="${OUT:-benchmarks/results}"
if [ "${1:-}" != "--smoke" ]; then
  if compgen -G "device_wheels/*.whl" > /dev/null; then
    python -m pip install -q --no-deps --no-index device_wheels/*.whl
  fi
  python -m pip install -q --no-deps --no-build-isolation -e . 2>/dev/null \
      || export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
exec python benchmarks/device_check.py "$@"
