"""Segmentation losses built on optax, with deep-supervision weighting.

Two formulations:
- "region": three sigmoid outputs (WT, TC, ET), soft Dice + BCE or soft Dice + focal.
- "softmax": four classes (background, NCR, ED, ET), soft Dice (foreground) + cross-entropy.
Dice is computed per sample and averaged over the batch, so the loss of a global batch is
the mean of its per-device losses: data parallelism does not change the objective.
"""

import jax
import jax.numpy as jnp
import ml_collections
import optax

from brats_jax import layouts

NUM_CLASSES = 4  # background, NCR, ED, ET (internal label OTHER counts as background)


def region_targets(labels: jax.Array) -> jax.Array:
  """Internal labels [B, *S] -> float32 region masks [B, *S, 3] (WT, TC, ET)."""
  return jnp.stack([jnp.isin(labels, jnp.array(layouts.REGION_LABELS[r]))
                    for r in layouts.REGIONS], axis=-1).astype(jnp.float32)


def num_outputs(loss_config: ml_collections.ConfigDict) -> int:
  return len(layouts.REGIONS) if loss_config.kind == "region" else NUM_CLASSES


def _spatial_axes(x):
  return tuple(range(1, x.ndim - 1))


def segmentation_loss(logits: jax.Array, labels: jax.Array,
                      config: ml_collections.ConfigDict) -> jax.Array:
  """Mean loss over the batch for one output resolution. logits [B, *S, K], labels [B, *S]."""
  logits = logits.astype(jnp.float32)
  axes = _spatial_axes(logits)
  if config.kind == "region":
    targets = region_targets(labels)
    # Regions overlap (WT > TC > ET), so each is its own sigmoid Dice: moving regions next to
    # the batch axis gives optax one single-channel (sigmoid) problem per (sample, region).
    def as_binary(x):
      return jnp.moveaxis(x, -1, 1)[..., None]

    dice = optax.losses.dice_loss(as_binary(logits), as_binary(targets),
                                  smooth=config.dice_smooth,
                                  axis=tuple(range(2, logits.ndim)))
    if config.pixel_loss == "focal":
      pixel = optax.losses.sigmoid_focal_loss(logits, targets, alpha=config.focal_alpha,
                                              gamma=config.focal_gamma)
    else:
      pixel = optax.losses.sigmoid_binary_cross_entropy(logits, targets)
  elif config.kind == "softmax":
    classes = jnp.where(labels == layouts.OTHER, 0, labels).astype(jnp.int32)
    onehot = jax.nn.one_hot(classes, NUM_CLASSES)
    dice = optax.losses.dice_loss(logits, onehot, apply_softmax=True, ignore_background=True,
                                  smooth=config.dice_smooth, axis=axes)
    pixel = optax.losses.softmax_cross_entropy_with_integer_labels(logits, classes)
  else:
    raise ValueError(f"unknown loss kind {config.kind!r}; expected region or softmax")
  return jnp.mean(dice) + jnp.mean(pixel)


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


def predicted_regions(logits: jax.Array, kind: str) -> jax.Array:
  """Logits [..., K] -> boolean region masks [..., 3] (WT, TC, ET)."""
  if kind == "region":
    return logits > 0
  classes = jnp.argmax(logits, axis=-1)
  return region_targets(classes) > 0.5


def dice_counts(logits: jax.Array, labels: jax.Array, kind: str) -> dict:
  """Per-region sums for a hard Dice: intersection, predicted and reference voxel counts."""
  predicted = predicted_regions(logits, kind).astype(jnp.float32)
  reference = region_targets(labels)
  axes = tuple(range(predicted.ndim - 1))
  return {"intersection": jnp.sum(predicted * reference, axes),
          "predicted": jnp.sum(predicted, axes), "reference": jnp.sum(reference, axes)}
