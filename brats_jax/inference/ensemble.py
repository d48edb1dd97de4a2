"""Several trained runs predicting together: their probabilities averaged (after test-time
augmentation, where asked) before decoding, as nnU-Net ensembles its cross-validation folds.

The members are the workdirs given, or the folds of a cross-validation parent
(workdir/folds.py). They must agree on what goes in and what comes out: the modalities and
their order, the preprocessing, and the output kind (loss.kind); a disagreement is one line
naming the member and the field. Architectures, patch sizes and steps may differ.
"""

from brats_jax import files
from brats_jax.errors import ConfigError
from brats_jax.workdir import contract, folds

# Contract fields every member must share: the inputs and their preparation, the outputs.
AGREEING = ("data.modalities", "loss.kind")


def members(workdirs: list) -> tuple:
  """(member workdirs, the folder holding the ensemble's post-processing decision or None):
  one workdir is itself, or the folds of a cross-validation parent; several are
  themselves, with no decision of their own."""
  if len(workdirs) == 1:
    parent = workdirs[0]
    fold_runs = folds.fold_workdirs(parent)
    if fold_runs and not files.isdir(files.join(parent, "checkpoints")):
      return fold_runs, parent
    return [parent], parent
  return list(workdirs), None


def check_agreement(contracts: dict) -> None:
  """contracts: {workdir: inference contract}; raises ConfigError on the first member that
  differs from the first on a field of AGREEING or the preprocessing."""
  (first, reference), *others = contracts.items()
  expected = contract.flatten(contract.config_of(reference))
  for workdir, other in others:
    theirs = contract.flatten(contract.config_of(other))
    for field in AGREEING:
      if theirs[field] != expected[field]:
        raise ConfigError(f"{workdir}: {field} is {theirs[field]!r}, but {first} has "
                          f"{expected[field]!r}; an ensemble's members must agree on it")
    if other["preprocessing"] != reference["preprocessing"]:
      raise ConfigError(f"{workdir}: prepared differently from {first} "
                        f"({other['preprocessing']} vs {reference['preprocessing']}); an "
                        "ensemble's members must share their preprocessing")
