"""Validation during training: whole held-out cases predicted, scored per region and given
the training loss, the ET threshold chosen on them, and early stopping decided from the
validation history."""

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from brats_jax import tasks
from brats_jax.data.store import PreparedStore
from brats_jax.evaluation import metrics
from brats_jax.labels import REGIONS
from brats_jax.train import losses


def case_loss(probabilities: np.ndarray, labels: np.ndarray, loss_config) -> float:
  """The training loss (loss.terms) of a whole case's full-resolution prediction: the
  probabilities turned back into logits (sigmoid: log-odds; softmax: log), clipped away
  from 0 and 1 so that a confident mistake costs a large but finite amount. On the host's
  CPU, as one compiled program (op by op, it compiled each of its operations per case shape,
  which made the demo's first validation many seconds longer)."""
  with jax.default_device(jax.local_devices(backend="cpu")[0]):
    return float(_case_loss(np.asarray(probabilities, np.float32), np.asarray(labels),
                            ml_collections.FrozenConfigDict(loss_config)))


@functools.partial(jax.jit, static_argnames="loss_config")
def _case_loss(probabilities, labels, loss_config):
  p = jnp.clip(probabilities, 1e-6, 1 - 1e-6)
  logits = jnp.log(p) if tasks.TASKS[loss_config.kind].activation == "softmax" \
      else jnp.log(p) - jnp.log1p(-p)
  return losses.segmentation_loss(logits[None], labels[None], loss_config)


def score_cases(predict, variables, store: PreparedStore, case_ids, loss_config,
                min_enhancing_voxels: int, keep=None) -> dict:
  """Whole-case sliding-window prediction, decoded as predict decodes it: per-region Dice
  (and IoU, accuracy, precision, recall) and the loss over the given cases.
  min_enhancing_voxels < 0 chooses the ET threshold on them. keep(case_id, probabilities,
  labels, spacing), where given, is called with each case's prediction."""
  kind = loss_config.kind
  per_case = []
  for case_id in case_ids:
    image, labels = store.read_case(case_id)
    probabilities = predict(variables, image)
    if keep is not None:
      keep(case_id, probabilities, labels, store.stored_spacing(case_id))
    predicted = tasks.decode(probabilities, kind)
    scores = metrics.region_dice(predicted, labels, tasks.scored_regions(kind))
    scores["loss"] = case_loss(probabilities, labels, loss_config)
    per_case.append(scores)
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
      f"  mean {summary['mean_dice']:.4f}" + \
      (f"  (loss {summary['loss']:.4f})" if "loss" in summary else "")
  if summary["min_enhancing_voxels"]:
    text += (f"  (ET predictions under {summary['min_enhancing_voxels']} voxels relabelled as "
             f"necrosis; ET before: {summary['ET_before_threshold']:.4f})")
  return text
