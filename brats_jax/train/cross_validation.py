"""Cross-validation: the folds of a store trained one after another into PARENT/fold_<K>
(workdir/folds.py), each an ordinary run validated on its fold (data.val_fold = K) that
resumes like any other; then, once every fold has kept its validation predictions (this
launch's folds or other launches'), post-processing chosen on all of them together
(PARENT/postprocessing.json). brats-jax-predict --workdir=PARENT predicts with the folds as
an ensemble.

  brats-jax-train --config=configs/default.py --workdir=/runs/brats2021_cv --folds=all
  brats-jax-train ... --folds=0          # or one fold per launch (machine), any order
"""

import ml_collections

from brats_jax import sharding
from brats_jax.data.store import PreparedStore
from brats_jax.errors import ConfigError
from brats_jax.evaluation import choose_rules
from brats_jax.train import loop
from brats_jax.workdir import checkpoints, folds, validation_predictions


def parse_folds(text: str, num_folds: int) -> list:
  """--folds: "all" or a comma-separated list of fold numbers of the store."""
  if text == "all":
    return list(range(num_folds))
  try:
    chosen = sorted({int(part) for part in text.split(",")})
  except ValueError:
    raise ConfigError(f"--folds={text}: expected all or fold numbers such as 0,2") from None
  if not chosen or chosen[0] < 0 or chosen[-1] >= num_folds:
    raise ConfigError(f"--folds={text}: the store has folds 0-{num_folds - 1}")
  return chosen


def train_folds(config: ml_collections.ConfigDict, parent: str, fold_list: str = "all",
                devices=None) -> dict:
  """Trains (or resumes) the chosen folds; returns {fold: its last validation summary}."""
  data = config.data
  if data.val_store or data.val_fraction:
    field = "data.val_store" if data.val_store else "data.val_fraction"
    raise ConfigError(f"config field {field} is set, but --folds validates each run on its "
                      "own fold of data.store; leave it unset")
  num_folds = PreparedStore(data.store).num_folds
  summaries = {}
  for fold in parse_folds(fold_list, num_folds):
    workdir = folds.fold_workdir(parent, fold)
    fold_config = config.copy_and_resolve_references()
    fold_config.data.val_fold = fold
    fold_config.seed = fold_seed(config.seed, workdir, fold)
    if sharding.is_main_process():
      print(f"fold {fold} of {num_folds} (seed {fold_config.seed}): {workdir}", flush=True)
    summaries[fold] = loop.train_and_validate(fold_config, workdir, devices)
  choose_for_all_folds(parent, num_folds)
  return summaries


def fold_seed(seed: int, workdir: str, fold: int) -> int:
  """seed + fold: each fold starts from its own weights and draws its own patches, so that
  the folds' errors are less alike and their ensemble averages more of them away (nnU-Net's
  folds are independent runs too). A fold that began with `seed` itself, as every fold did
  before this rule, keeps it on a relaunch; any other saved seed is the relaunch check's to
  refuse."""
  saved = checkpoints.latest_saved_contract(workdir)
  if saved is not None and saved[1]["config"]["seed"] == seed:
    return seed
  return seed + fold


def choose_for_all_folds(parent: str, num_folds: int) -> None:
  """Once every fold kept its validation predictions: post-processing chosen on all of
  them (process 0), written to PARENT/postprocessing.json, the table printed."""
  runs = [folds.fold_workdir(parent, k) for k in range(num_folds)]
  if not sharding.is_main_process() or any(validation_predictions.record(run) is None
                                           for run in runs):
    return
  rules, report = choose_rules.decide(runs, parent)
  print(f"post-processing chosen on the {report['num_cases']} validation cases of all "
        f"{num_folds} folds: {rules.describe()}\n{choose_rules.format_report(report)}",
        flush=True)
