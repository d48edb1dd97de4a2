"""Segmentation losses built on optax, for every task (tasks.py), with deep supervision.

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
import optax

from brats_jax import tasks


def _spatial_axes(x):
  return tuple(range(1, x.ndim - 1))


def _weighted_mean(per_output: jax.Array, weights: jax.Array) -> jax.Array:
  """[B, K] -> scalar: outputs weighted, then the batch mean."""
  return jnp.mean(jnp.sum(per_output * weights, -1) / jnp.sum(weights))


def _sigmoid_overlap(name, logits, targets, weights, config):
  # Each output is its own one-channel (sigmoid) problem: outputs next to the batch axis.
  def as_binary(x):
    return jnp.moveaxis(x, -1, 1)[..., None]

  tversky = {"alpha": 1.0, "beta": 1.0} if name == "iou" else {}
  per_output = optax.losses.dice_loss(as_binary(logits), as_binary(targets),
                                      smooth=config.dice_smooth,
                                      axis=tuple(range(2, logits.ndim)), **tversky)
  return _weighted_mean(per_output, weights)


def _sigmoid_bce(name, logits, targets, weights, config):
  per_output = optax.losses.sigmoid_binary_cross_entropy(logits, targets).mean(
      _spatial_axes(logits))
  return _weighted_mean(per_output, weights)


def _sigmoid_focal(name, logits, targets, weights, config):
  per_output = optax.losses.sigmoid_focal_loss(
      logits, targets, alpha=None if config.focal_alpha < 0 else config.focal_alpha,
      gamma=config.focal_gamma).mean(
          _spatial_axes(logits))
  return _weighted_mean(per_output, weights)


def _softmax_overlap(name, logits, classes, weights, config):
  tversky = {"alpha": 1.0, "beta": 1.0} if name == "iou" else {}
  per_sample = optax.losses.dice_loss(
      logits, jax.nn.one_hot(classes, tasks.NUM_CLASSES), apply_softmax=True,
      ignore_background=True, smooth=config.dice_smooth, axis=_spatial_axes(logits),
      class_weights=weights * tasks.NUM_CLASSES / jnp.sum(weights), **tversky)
  return jnp.mean(per_sample)


def _softmax_voxelwise(name, logits, classes, weights, config):
  voxel_weights = weights[classes]
  if name == "ce":
    per_voxel = optax.losses.softmax_cross_entropy_with_integer_labels(logits, classes)
  else:  # focal: -(1 - p_t)^gamma log p_t of the true class
    log_p = jnp.take_along_axis(jax.nn.log_softmax(logits), classes[..., None], -1)[..., 0]
    per_voxel = -((1 - jnp.exp(log_p))**config.focal_gamma) * log_p
  return jnp.sum(per_voxel * voxel_weights) / jnp.sum(jnp.broadcast_to(voxel_weights,
                                                                       per_voxel.shape))


# The loss terms each activation (tasks.Task.activation) has: name -> fn(name, logits,
# targets, output weights, loss config).
TERMS = {
    "sigmoid": {"dice": _sigmoid_overlap, "iou": _sigmoid_overlap, "bce": _sigmoid_bce,
                "focal": _sigmoid_focal},
    "softmax": {"dice": _softmax_overlap, "iou": _softmax_overlap, "ce": _softmax_voxelwise,
                "focal": _softmax_voxelwise},
}
TERM_NAMES = tuple(dict.fromkeys(n for terms in TERMS.values() for n in terms))


def terms_for(kind: str) -> tuple:
  """The loss terms a task takes."""
  return tuple(TERMS[tasks.TASKS[kind].activation])


def segmentation_loss(logits: jax.Array, labels: jax.Array,
                      config: ml_collections.ConfigDict) -> jax.Array:
  """Mean loss over the batch for one output resolution. logits [B, *S, K], labels [B, *S]."""
  logits = logits.astype(jnp.float32)
  k = logits.shape[-1]
  weights = jnp.asarray(config.class_weights, jnp.float32) if config.class_weights \
      else jnp.ones((k,), jnp.float32)
  activation = tasks.TASKS[config.kind].activation
  targets = tasks.softmax_classes(labels) if activation == "softmax" \
      else tasks.sigmoid_targets(labels, config.kind)
  total = 0.0
  for name, weight in config.terms:
    total = total + weight * TERMS[activation][name](name, logits, targets, weights, config)
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
