"""Which cases train and which validate.

In this order of precedence:
  data.val_store     a second prepared store (prepared the same way) whose labelled cases
                     validate; every labelled case of data.store trains
  data.val_fraction  that share of data.store's labelled cases, chosen by data.split_seed,
                     validates; the rest train
  data.val_fold      the cross-validation fold prepare recorded for each case validates
                     (-1: nothing validates)
The choice is a pure function of the store's case ids and the config, so a relaunch, another
process or predict's view of the run all see the same split.
"""

import dataclasses

import numpy as np

from brats_jax.data import preprocessing
from brats_jax.data.store import PreparedStore
from brats_jax.errors import ConfigError, DataError


@dataclasses.dataclass
class Split:
  train_ids: list
  val_ids: list
  val_store: PreparedStore  # the store the validation cases are read from
  description: str  # one line for the log: where the validation cases come from


def held_out(case_ids, fraction: float, seed: int) -> list:
  """The sorted ids of a seeded random `fraction` of the cases (at least one, and at least
  one case left to train on)."""
  case_ids = sorted(case_ids)
  count = min(max(1, round(fraction * len(case_ids))), len(case_ids) - 1)
  order = np.random.default_rng(seed).permutation(len(case_ids))
  return sorted(case_ids[i] for i in order[:count])


def _check_same_preparation(train_store: PreparedStore, val_store: PreparedStore):
  ours, trained = (preprocessing.preparation(val_store.preprocessing),
                   preprocessing.preparation(train_store.preprocessing))
  if ours != trained:
    raise DataError(f"{val_store.path}: prepared with {ours}, but data.store "
                    f"{train_store.path} with {trained}; prepare both the same way")


def split(config, store: PreparedStore) -> Split:
  """The training and validation cases of a run (module docstring)."""
  data = config.data
  if data.val_store:
    val_store = PreparedStore(data.val_store, data.modalities)
    _check_same_preparation(store, val_store)
    train_ids, val_ids = store.case_ids(), val_store.case_ids()
    if not val_ids:
      raise DataError(f"{val_store.path}: data.val_store has no labelled case to validate on")
    overlap = sorted(set(train_ids) & set(val_ids))
    if overlap:
      raise DataError(f"{val_store.path}: case {overlap[0]} (and {len(overlap) - 1} more) is "
                      f"also a training case of {store.path}")
    description = f"validation store {val_store.path}"
  elif data.val_fraction > 0:
    labelled = store.case_ids()
    if len(labelled) < 2:
      raise ConfigError(f"config field data.val_fraction={data.val_fraction}: the store "
                        f"{store.path} has {len(labelled)} labelled case; nothing to hold out")
    val_ids = held_out(labelled, data.val_fraction, data.split_seed)
    train_ids = sorted(set(labelled) - set(val_ids))
    val_store = store
    description = (f"{len(val_ids)} cases held out (data.val_fraction={data.val_fraction}, "
                   f"data.split_seed={data.split_seed})")
  else:
    fold = data.val_fold
    train_ids = store.case_ids(exclude_folds=[fold] if fold >= 0 else None)
    val_ids = store.case_ids(folds=[fold]) if fold >= 0 else []
    val_store = store
    description = f"fold {fold}" if fold >= 0 else "no validation (data.val_fold=-1)"
    if not train_ids:
      raise ConfigError(f"config field data.val_fold={fold}: the store {store.path} has no "
                        "labelled case outside that fold to train on")
  if config.eval.max_cases:
    val_ids = val_ids[:config.eval.max_cases]
  return Split(train_ids, val_ids, val_store, description)
