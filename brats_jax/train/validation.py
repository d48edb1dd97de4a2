"""Validation during training: whole held-out cases predicted and scored per region, the ET
threshold chosen on them, and early stopping decided from the validation history."""

import numpy as np

from brats_jax import tasks
from brats_jax.data.store import PreparedStore
from brats_jax.evaluation import metrics
from brats_jax.labels import REGIONS


def score_cases(predict, variables, store: PreparedStore, case_ids, kind: str,
                min_enhancing_voxels: int) -> dict:
  """Whole-case sliding-window prediction, decoded as predict decodes it, and per-region
  Dice over the given cases. min_enhancing_voxels < 0 chooses the ET threshold on them."""
  per_case = []
  for case_id in case_ids:
    image, labels = store.read_case(case_id)
    predicted = tasks.decode(predict(variables, image), kind)
    per_case.append(metrics.region_dice(predicted, labels, tasks.scored_regions(kind)))
  if kind == "binary":  # no enhancing tumour to threshold
    threshold = 0
  else:
    threshold = metrics.choose_et_threshold(per_case) if min_enhancing_voxels < 0 \
        else min_enhancing_voxels
  return metrics.validation_summary(per_case, threshold)


def early_stop_reason(validations: list, patience: int) -> str | None:
  """Why to stop now, or None: the last `patience` validations ({"step", "mean_dice"}, in
  order) did not beat the best one before them (a tie is not an improvement)."""
  if not patience or not validations:
    return None
  scores = [v["mean_dice"] for v in validations]
  best = int(np.argmax(scores))  # the first of equal bests
  since = len(scores) - 1 - best
  if since < patience:
    return None
  return (f"early stopping: {since} validations without beating mean Dice "
          f"{scores[best]:.4f} of step {validations[best]['step']} "
          f"(train.early_stopping_patience={patience}); the best checkpoint is kept")


def format_dice(summary: dict) -> str:
  """One line: Dice per region, the mean, and what the ET threshold changed."""
  text = "  ".join(f"{r} {summary[r]:.4f}" for r in REGIONS if r in summary) + \
      f"  mean {summary['mean_dice']:.4f}"
  if summary["min_enhancing_voxels"]:
    text += (f"  (ET predictions under {summary['min_enhancing_voxels']} voxels relabelled as "
             f"necrosis; ET before: {summary['ET_before_threshold']:.4f})")
  return text
