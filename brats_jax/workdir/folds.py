"""A cross-validation's parent folder: one workdir per fold, PARENT/fold_<K>, each an
ordinary run validated on fold K of the store (data.val_fold), and beside them the
post-processing chosen on all folds' validation predictions together (PARENT/
postprocessing.json). Training: train/cross_validation.py; prediction with the folds as an
ensemble: inference/ensemble.py."""

import os
import re

from brats_jax import files

_FOLD = re.compile(r"^fold_(\d+)$")


def fold_workdir(parent: str, fold: int) -> str:
  return files.join(parent, f"fold_{fold}")


def fold_workdirs(parent: str) -> list:
  """The fold workdirs under a parent that hold checkpoints, by fold number (local
  folders; a parent in a bucket lists nothing here)."""
  if files.is_url(parent) or not os.path.isdir(parent):
    return []
  folds = sorted(int(m.group(1)) for m in map(_FOLD.match, os.listdir(parent)) if m)
  return [fold_workdir(parent, k) for k in folds
          if files.isdir(files.join(fold_workdir(parent, k), "checkpoints"))]
