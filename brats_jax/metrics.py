"""Per-region Dice on whole cases (host side), with the BraTS legacy empty-mask convention.

Convention: if both the prediction and the reference are empty, Dice is 1; if exactly one is
empty, Dice is 0. Scores are computed on the WT/TC/ET regions of internal labels.
"""

import numpy as np

from brats_jax import layouts


def dice(predicted: np.ndarray, reference: np.ndarray) -> float:
  predicted, reference = predicted.astype(bool), reference.astype(bool)
  total = predicted.sum() + reference.sum()
  if total == 0:
    return 1.0
  return float(2.0 * np.logical_and(predicted, reference).sum() / total)


def region_dice(predicted_regions: np.ndarray, labels: np.ndarray) -> dict:
  """predicted_regions [*S, 3] (WT, TC, ET) bool, labels [*S] internal -> {region: Dice}."""
  reference = layouts.regions_from_labels(labels)
  return {r: dice(predicted_regions[..., i], reference[..., i])
          for i, r in enumerate(layouts.REGIONS)}


def summarise(per_case: list) -> dict:
  """Mean per region over cases, plus the mean over regions ("mean_dice")."""
  summary = {r: float(np.mean([c[r] for c in per_case])) for r in layouts.REGIONS}
  summary["mean_dice"] = float(np.mean([summary[r] for r in layouts.REGIONS]))
  return summary
