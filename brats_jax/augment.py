"""Data augmentation on the accelerator, one sample at a time (vmap over the batch).

Running augmentation inside the jitted train step keeps the host free to read patches: the
CPU-bound augmentation that limits nnU-Net never happens on the host here. Every random
choice comes from the sample's own key, which depends on (seed, step, global sample index)
only, so a batch is the same on any number of devices or processes.
"""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np


def _rotation(angles: jax.Array, dims: int) -> jax.Array:
  """Rotation matrix: one angle in 2D; rotations about x, y and z (in that order) in 3D."""
  if dims == 2:
    c, s = jnp.cos(angles[0]), jnp.sin(angles[0])
    return jnp.array([[c, -s], [s, c]])
  matrix = jnp.eye(3)
  for axis in range(3):
    c, s = jnp.cos(angles[axis]), jnp.sin(angles[axis])
    i, j = [a for a in range(3) if a != axis]
    r = jnp.eye(3).at[i, i].set(c).at[j, j].set(c).at[i, j].set(-s).at[j, i].set(s)
    matrix = r @ matrix
  return matrix


def _resample(volume: jax.Array, coords: jax.Array, order: int) -> jax.Array:
  return jax.scipy.ndimage.map_coordinates(volume, list(coords), order=order, mode="constant",
                                           cval=0)


def spatial(image, labels, key, config):
  """Random rotation and scaling about the patch centre, then random mirroring."""
  dims = labels.ndim
  shape = labels.shape
  k_rot, k_rot_on, k_scale, k_scale_on, k_flip = jax.random.split(key, 5)
  max_angle = np.deg2rad(config.max_rotation_deg)
  angles = jax.random.uniform(k_rot, (3,), minval=-max_angle, maxval=max_angle)
  angles = jnp.where(jax.random.uniform(k_rot_on) < config.p_rotation, angles, 0.0)
  scale = jax.random.uniform(k_scale, minval=config.scale_range[0], maxval=config.scale_range[1])
  scale = jnp.where(jax.random.uniform(k_scale_on) < config.p_scale, scale, 1.0)
  # Output voxel x samples input at R (x - c) / scale + c: scale > 1 zooms in.
  centre = jnp.array([(s - 1) / 2 for s in shape], jnp.float32)
  grid = jnp.stack(jnp.meshgrid(*[jnp.arange(s, dtype=jnp.float32) for s in shape],
                                indexing="ij"))
  offsets = grid.reshape(dims, -1) - centre[:, None]
  coords = (_rotation(angles, dims) @ offsets) / scale + centre[:, None]
  coords = coords.reshape((dims,) + shape)
  image = jax.vmap(lambda ch: _resample(ch, coords, 1), in_axes=-1, out_axes=-1)(image)
  labels = _resample(labels, coords, 0)
  flips = jax.random.uniform(k_flip, (dims,)) < config.p_mirror
  for axis in range(dims):
    image = jnp.where(flips[axis], jnp.flip(image, axis), image)
    labels = jnp.where(flips[axis], jnp.flip(labels, axis), labels)
  return image, labels


def intensity(image, key, config):
  """Per-channel brightness, contrast, gamma and Gaussian noise (nnU-Net's ranges)."""
  channels = image.shape[-1]
  axes = tuple(range(image.ndim - 1))
  keys = jax.random.split(key, 9)

  def maybe(k, p, value, neutral):
    return jnp.where(jax.random.uniform(k, (channels,)) < p, value, neutral)

  lo, hi = image.min(axes), image.max(axes)
  brightness = maybe(keys[0], config.p_brightness, jax.random.uniform(
      keys[1], (channels,), minval=config.brightness_range[0],
      maxval=config.brightness_range[1]), 1.0)
  image = image * brightness
  contrast = maybe(keys[2], config.p_contrast, jax.random.uniform(
      keys[3], (channels,), minval=config.contrast_range[0], maxval=config.contrast_range[1]), 1.0)
  mean = image.mean(axes)
  lo, hi = image.min(axes), image.max(axes)
  image = jnp.clip((image - mean) * contrast + mean, lo, hi)
  gamma = maybe(keys[4], config.p_gamma, jax.random.uniform(
      keys[5], (channels,), minval=config.gamma_range[0], maxval=config.gamma_range[1]), 1.0)
  span = jnp.maximum(hi - lo, 1e-6)
  image = ((image - lo) / span) ** gamma * span + lo
  noise_std = maybe(keys[6], config.p_noise,
                    jax.random.uniform(keys[7], (channels,), maxval=config.noise_std_max), 0.0)
  return image + noise_std * jax.random.normal(keys[8], image.shape)


def augment_batch(images, labels, keys, config: ml_collections.ConfigDict):
  """Augments [B, *S, C] images and [B, *S] labels with one key per sample."""
  if not config.enabled:
    return images, labels

  def one(image, label, key):
    k_spatial, k_intensity = jax.random.split(key)
    image, label = spatial(image, label, k_spatial, config)
    return intensity(image, k_intensity, config), label

  return jax.vmap(one)(images.astype(jnp.float32), labels, keys)
