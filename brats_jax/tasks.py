"""What each task (loss.kind) makes the network output, and how outputs become labels.

  region   3 sigmoids: WT, TC, ET (nested regions; nnU-Net's BraTS formulation)
  softmax  4 classes: background, necrosis/non-enhancing, edema, enhancing
  labels   3 independent sigmoids: necrosis/non-enhancing, edema, enhancing
  labels2015  4 independent sigmoids: necrosis, edema, non-enhancing, enhancing (BraTS
           2015's classes, non-enhancing tumour kept apart from necrosis)
  binary   1 sigmoid: whole tumour against background

This module is the one place that knows it: the losses' targets, the labels that training
logs, validation and prediction decode (one function for jitted and NumPy arrays), which
regions a task can be scored on, and the BraTS rule for Dice and IoU from voxel counts (both
masks empty scores 1). nnU-Net's LabelManager plays the same part there.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from brats_jax import labels as label_values
from brats_jax.labels import LABEL_GROUPS, REGION_LABELS, REGIONS


@dataclasses.dataclass(frozen=True)
class Task:
  outputs: tuple  # the names of the network's output channels, in order
  activation: str  # sigmoid (each output on its own) | softmax (over the outputs)
  # Sigmoid outputs painted in this order where p > 0.5 (later wins), as internal labels.
  paint: tuple = ()


TASKS = {
    "region": Task(("WT", "TC", "ET"), "sigmoid",
                   ((0, label_values.ED), (1, label_values.NCR), (2, label_values.ET))),
    "softmax": Task(("background", "NCR", "ED", "ET"), "softmax"),
    "labels": Task(("NCR", "ED", "ET"), "sigmoid",
                   ((1, label_values.ED), (0, label_values.NCR), (2, label_values.ET))),
    "binary": Task(("WT",), "sigmoid", ((0, label_values.TUMOUR),)),
    "labels2015": Task(("NCR", "ED", "NET", "ET"), "sigmoid",
                       ((1, label_values.ED), (0, label_values.NCR), (2, label_values.NET),
                        (3, label_values.ET))),
}
# The internal labels each output of the per-label tasks stands for.
_OUTPUT_LABELS = {"labels": tuple(LABEL_GROUPS.values()),
                  "labels2015": ((label_values.NCR,), (label_values.ED,), (label_values.NET,),
                                 (label_values.ET,))}
KINDS = tuple(TASKS)
NUM_CLASSES = len(TASKS["softmax"].outputs)
# Internal label -> softmax class (= the internal label of that class): OTHER is background,
# NET necrosis, TUMOUR (binary data, which takes loss.kind=binary) edema.
_CLASS_OF_LABEL = np.array([0, 1, 2, 3, 0, 1, 2], np.int32)


def num_outputs(kind: str) -> int:
  return len(TASKS[kind].outputs)


def scored_regions(kind: str) -> tuple:
  """The regions a task's predictions can be scored on."""
  return ("WT",) if kind == "binary" else REGIONS


def region_targets(labels: jax.Array, regions=REGIONS) -> jax.Array:
  """Internal labels [B, *S] -> float32 region masks [B, *S, R]."""
  return jnp.stack([jnp.isin(labels, jnp.array(REGION_LABELS[r])) for r in regions],
                   axis=-1).astype(jnp.float32)


def sigmoid_targets(labels: jax.Array, kind: str) -> jax.Array:
  """The targets of a sigmoid task's outputs, [B, *S, K] float32."""
  if kind == "region":
    return region_targets(labels)
  if kind == "binary":
    return region_targets(labels, ("WT",))
  return jnp.stack([jnp.isin(labels, jnp.array(v)) for v in _OUTPUT_LABELS[kind]],
                   axis=-1).astype(jnp.float32)


def softmax_classes(labels: jax.Array) -> jax.Array:
  return jnp.asarray(_CLASS_OF_LABEL)[labels.astype(jnp.int32)]


def decode(outputs, kind: str, *, logits: bool = False):
  """Network outputs [..., K] -> internal uint8 labels [...], for jax arrays (traced or not)
  and NumPy arrays alike. outputs are probabilities, or with `logits` the raw outputs.

  softmax: the most probable class (ET wins at p = 0.4 when no class is more probable).
  Sigmoid tasks, where p > 0.5: region ET, the rest of TC necrosis, the rest of WT edema;
  labels enhancing over necrosis over edema; binary tumour.
  """
  xp = jnp if isinstance(outputs, jax.Array) else np
  if TASKS[kind].activation == "softmax":  # class index = internal label
    return xp.argmax(outputs, axis=-1).astype(xp.uint8)
  positive = outputs > (0.0 if logits else 0.5)
  decoded = xp.zeros(outputs.shape[:-1], xp.uint8)
  for output, value in TASKS[kind].paint:
    decoded = xp.where(positive[..., output], xp.uint8(value), decoded)
  return decoded


def relabel_small_enhancing(decoded: np.ndarray, min_voxels: int) -> np.ndarray:
  """An ET prediction of fewer than min_voxels voxels becomes necrosis (the usual BraTS
  post-processing; the threshold is chosen on validation cases; 0 changes nothing)."""
  enhancing = decoded == label_values.ET
  if 0 < int(enhancing.sum()) < min_voxels:
    decoded = np.where(enhancing, np.uint8(label_values.NCR), decoded)
  return decoded


def dice_from_counts(both, predicted, reference) -> float:
  """Dice from voxel counts; both masks empty scores 1 (the BraTS convention)."""
  total = predicted + reference
  return float(2 * both / total) if total else 1.0


def share_from_counts(part, whole, both_empty: bool) -> float:
  """Precision (part = both, whole = predicted) or recall (whole = reference) from voxel
  counts; an empty `whole` scores 1 where both masks are empty, else 0 (the same rule)."""
  return float(part / whole) if whole else (1.0 if both_empty else 0.0)


def iou_from_counts(both, predicted, reference) -> float:
  """Jaccard from voxel counts; both masks empty scores 1 (the BraTS convention)."""
  union = predicted + reference - both
  return float(both / union) if union else 1.0


def overlap_counts(outputs: jax.Array, labels: jax.Array, kind: str) -> dict:
  """Per scored region, summed over the batch (jitted, for training logs): intersection,
  predicted and reference voxel counts, and the voxel count (for accuracy). outputs are
  logits [B, *S, K]."""
  regions = scored_regions(kind)
  predicted = region_targets(decode(outputs, kind, logits=True), regions)
  reference = region_targets(labels, regions)
  axes = tuple(range(predicted.ndim - 1))
  return {"intersection": jnp.sum(predicted * reference, axes),
          "predicted": jnp.sum(predicted, axes), "reference": jnp.sum(reference, axes),
          "voxels": jnp.full((len(regions),), predicted[..., 0].size, jnp.float32)}
