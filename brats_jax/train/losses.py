"""Segmentation losses built on optax, for four kinds of task, with deep supervision.

Tasks (loss.kind) and what the model outputs:
  region   3 sigmoids: WT, TC, ET (nested regions; nnU-Net's BraTS formulation)
  softmax  4 classes: background, necrosis/non-enhancing, edema, enhancing
  labels   3 independent sigmoids: necrosis/non-enhancing, edema, enhancing
  binary   1 sigmoid: whole tumour against background

The loss is a weighted sum of terms (loss.terms, e.g. (("dice", 1.0), ("bce", 1.0))):
  dice   soft Dice (optax.losses.dice_loss), per sample and output
  iou    soft Jaccard: optax's Tversky loss with alpha = beta = 1
  bce    sigmoid cross-entropy (sigmoid tasks); ce: softmax cross-entropy (softmax task)
  focal  sigmoid focal loss (optax) or its softmax form
each averaged over outputs with loss.class_weights (equal when empty; softmax Dice and IoU
leave the background out). Dice is per sample, so the loss of a global batch is the mean of
its per-device losses: data parallelism does not change the objective.
"""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from brats_jax import layouts

KINDS = ("region", "softmax", "labels", "binary")
TERMS = {"region": ("dice", "iou", "bce", "focal"), "labels": ("dice", "iou", "bce", "focal"),
         "binary": ("dice", "iou", "bce", "focal"), "softmax": ("dice", "iou", "ce", "focal")}
NUM_CLASSES = 4  # softmax: background, NCR (with NET), ED, ET
# Internal label -> softmax class: OTHER is background, NET necrosis, TUMOUR (binary data,
# which takes loss.kind=binary) edema.
_CLASS_OF_LABEL = np.array([0, 1, 2, 3, 0, 1, 2], np.int32)


def num_outputs(loss_config: ml_collections.ConfigDict) -> int:
  return {"region": 3, "softmax": NUM_CLASSES, "labels": 3, "binary": 1}[loss_config.kind]


def scored_regions(kind: str) -> tuple:
  """The regions a task's predictions can be scored on."""
  return ("WT",) if kind == "binary" else layouts.REGIONS


def region_targets(labels: jax.Array, regions=layouts.REGIONS) -> jax.Array:
  """Internal labels [B, *S] -> float32 region masks [B, *S, R]."""
  return jnp.stack([jnp.isin(labels, jnp.array(layouts.REGION_LABELS[r])) for r in regions],
                   axis=-1).astype(jnp.float32)


def sigmoid_targets(labels: jax.Array, kind: str) -> jax.Array:
  """The targets of a sigmoid task's outputs, [B, *S, K] float32."""
  if kind == "region":
    return region_targets(labels)
  if kind == "binary":
    return region_targets(labels, ("WT",))
  return jnp.stack([jnp.isin(labels, jnp.array(v)) for v in layouts.LABEL_GROUPS.values()],
                   axis=-1).astype(jnp.float32)


def softmax_classes(labels: jax.Array) -> jax.Array:
  return jnp.asarray(_CLASS_OF_LABEL)[labels.astype(jnp.int32)]


def _spatial_axes(x):
  return tuple(range(1, x.ndim - 1))


def _weighted_mean(per_output: jax.Array, weights: jax.Array) -> jax.Array:
  """[B, K] -> scalar: outputs weighted, then the batch mean."""
  return jnp.mean(jnp.sum(per_output * weights, -1) / jnp.sum(weights))


def _sigmoid_term(name, logits, targets, weights, config):
  axes = _spatial_axes(logits)
  if name in ("dice", "iou"):
    # Each output is its own one-channel (sigmoid) problem: outputs next to the batch axis.
    def as_binary(x):
      return jnp.moveaxis(x, -1, 1)[..., None]

    tversky = {"alpha": 1.0, "beta": 1.0} if name == "iou" else {}
    per_output = optax.losses.dice_loss(as_binary(logits), as_binary(targets),
                                        smooth=config.dice_smooth,
                                        axis=tuple(range(2, logits.ndim)), **tversky)
  elif name == "bce":
    per_output = optax.losses.sigmoid_binary_cross_entropy(logits, targets).mean(axes)
  else:  # focal
    per_output = optax.losses.sigmoid_focal_loss(
        logits, targets, alpha=config.focal_alpha, gamma=config.focal_gamma).mean(axes)
  return _weighted_mean(per_output, weights)


def _softmax_term(name, logits, classes, weights, config):
  if name in ("dice", "iou"):
    tversky = {"alpha": 1.0, "beta": 1.0} if name == "iou" else {}
    per_sample = optax.losses.dice_loss(
        logits, jax.nn.one_hot(classes, NUM_CLASSES), apply_softmax=True,
        ignore_background=True, smooth=config.dice_smooth, axis=_spatial_axes(logits),
        class_weights=weights * NUM_CLASSES / jnp.sum(weights), **tversky)
    return jnp.mean(per_sample)
  voxel_weights = weights[classes]
  if name == "ce":
    per_voxel = optax.losses.softmax_cross_entropy_with_integer_labels(logits, classes)
  else:  # focal: -(1 - p_t)^gamma log p_t of the true class
    log_p = jnp.take_along_axis(jax.nn.log_softmax(logits), classes[..., None], -1)[..., 0]
    per_voxel = -((1 - jnp.exp(log_p))**config.focal_gamma) * log_p
  return jnp.sum(per_voxel * voxel_weights) / jnp.sum(jnp.broadcast_to(voxel_weights,
                                                                       per_voxel.shape))


def segmentation_loss(logits: jax.Array, labels: jax.Array,
                      config: ml_collections.ConfigDict) -> jax.Array:
  """Mean loss over the batch for one output resolution. logits [B, *S, K], labels [B, *S]."""
  logits = logits.astype(jnp.float32)
  k = logits.shape[-1]
  weights = jnp.asarray(config.class_weights, jnp.float32) if config.class_weights \
      else jnp.ones((k,), jnp.float32)
  total = 0.0
  if config.kind == "softmax":
    classes = softmax_classes(labels)
    for name, weight in config.terms:
      total = total + weight * _softmax_term(name, logits, classes, weights, config)
  else:
    targets = sigmoid_targets(labels, config.kind)
    for name, weight in config.terms:
      total = total + weight * _sigmoid_term(name, logits, targets, weights, config)
  return total


def downsample_labels(labels: jax.Array, factor: int) -> jax.Array:
  """Nearest-neighbour down-sampling of [B, *S] labels by an integer factor."""
  index = (slice(None),) + (slice(None, None, factor),) * (labels.ndim - 1)
  return labels[index]


def deep_supervision_weights(num_outputs_: int) -> list:
  """Weights halving per resolution level, normalised to sum to one (nnU-Net)."""
  weights = [0.5**i for i in range(num_outputs_)]
  return [w / sum(weights) for w in weights]


def total_loss(outputs: list, labels: jax.Array, config: ml_collections.ConfigDict):
  """Weighted loss over the full-resolution output and each deep-supervision output."""
  weights = deep_supervision_weights(len(outputs))
  return sum(w * segmentation_loss(out, downsample_labels(labels, 2**i), config)
             for i, (w, out) in enumerate(zip(weights, outputs)))


def predicted_labels(logits: jax.Array, kind: str) -> jax.Array:
  """Logits [..., K] -> internal labels, as inference.decode does (without post-processing):
  region thresholds (ET, the rest of TC necrosis, the rest of WT edema); softmax argmax;
  labels thresholds with enhancing over necrosis over edema; binary tumour."""
  if kind == "softmax":
    return jnp.argmax(logits, axis=-1).astype(jnp.uint8)
  positive = logits > 0
  if kind == "binary":
    return jnp.where(positive[..., 0], layouts.TUMOUR, layouts.BACKGROUND).astype(jnp.uint8)
  if kind == "region":  # WT, TC, ET
    outer, core, enhancing = positive[..., 0], positive[..., 1], positive[..., 2]
    ordered = ((enhancing, layouts.ET), (core, layouts.NCR), (outer, layouts.ED))
  else:  # labels: NCR, ED, ET
    ordered = ((positive[..., 2], layouts.ET), (positive[..., 0], layouts.NCR),
               (positive[..., 1], layouts.ED))
  labels = jnp.zeros(logits.shape[:-1], jnp.uint8)
  for mask, value in reversed(ordered):  # later writes win: ET last
    labels = jnp.where(mask, jnp.uint8(value), labels)
  return labels


def dice_counts(logits: jax.Array, labels: jax.Array, kind: str) -> dict:
  """Per scored region: intersection, predicted and reference voxel counts, and the voxel
  count (for accuracy), summed over the batch."""
  regions = scored_regions(kind)
  predicted = region_targets(predicted_labels(logits, kind), regions)
  reference = region_targets(labels, regions)
  axes = tuple(range(predicted.ndim - 1))
  return {"intersection": jnp.sum(predicted * reference, axes),
          "predicted": jnp.sum(predicted, axes), "reference": jnp.sum(reference, axes),
          "voxels": jnp.full((len(regions),), predicted[..., 0].size, jnp.float32)}
