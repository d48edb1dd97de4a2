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


# Every scalar random choice of a sample comes from one uniform draw (fewer PRNG calls
# compile much faster): u[0:3] rotation angles, u[3] rotate?, u[4] scale, u[5] scale?,
# u[6:9] mirror per axis; per channel c: u[9+c*8 : 17+c*8] for the intensity transforms.
_NUM_UNIFORMS = 9 + 8 * 8


def _between(u, low_high):
  return low_high[0] + u * (low_high[1] - low_high[0])


def spatial(image, labels, u, config):
  """Random rotation and scaling about the patch centre, then random mirroring."""
  dims = labels.ndim
  shape = labels.shape
  max_angle = np.deg2rad(config.max_rotation_deg)
  angles = jnp.where(u[3] < config.p_rotation, (2 * u[0:3] - 1) * max_angle, 0.0)
  scale = jnp.where(u[5] < config.p_scale, _between(u[4], config.scale_range), 1.0)
  # Output voxel x samples input at R (x - c) / scale + c: scale > 1 zooms in.
  centre = jnp.array([(s - 1) / 2 for s in shape], jnp.float32)
  grid = jnp.stack(jnp.meshgrid(*[jnp.arange(s, dtype=jnp.float32) for s in shape],
                                indexing="ij"))
  offsets = grid.reshape(dims, -1) - centre[:, None]
  coords = (_rotation(angles, dims) @ offsets) / scale + centre[:, None]
  coords = coords.reshape((dims,) + shape)
  image = jax.vmap(lambda ch: _resample(ch, coords, 1), in_axes=-1, out_axes=-1)(image)
  labels = _resample(labels, coords, 0)
  for axis in range(dims):
    flip = u[6 + axis] < config.p_mirror
    image = jnp.where(flip, jnp.flip(image, axis), image)
    labels = jnp.where(flip, jnp.flip(labels, axis), labels)
  return image, labels


def intensity(image, u, noise, config):
  """Per-channel brightness, contrast, gamma and Gaussian noise (nnU-Net's ranges)."""
  channels = image.shape[-1]
  axes = tuple(range(image.ndim - 1))
  u = u[9:9 + 8 * channels].reshape(8, channels)

  def maybe(p_u, p, value, neutral):
    return jnp.where(p_u < p, value, neutral)

  brightness = maybe(u[0], config.p_brightness, _between(u[1], config.brightness_range), 1.0)
  image = image * brightness
  contrast = maybe(u[2], config.p_contrast, _between(u[3], config.contrast_range), 1.0)
  mean = image.mean(axes)
  lo, hi = image.min(axes), image.max(axes)
  image = jnp.clip((image - mean) * contrast + mean, lo, hi)
  gamma = maybe(u[4], config.p_gamma, _between(u[5], config.gamma_range), 1.0)
  span = jnp.maximum(hi - lo, 1e-6)
  image = ((image - lo) / span) ** gamma * span + lo
  noise_std = maybe(u[6], config.p_noise, u[7] * config.noise_std_max, 0.0)
  return image + noise_std * noise


def augment_batch(images, labels, keys, config: ml_collections.ConfigDict):
  """Augments [B, *S, C] images and [B, *S] labels with one key per sample."""
  if not config.enabled:
    return images, labels

  if images.shape[-1] > 8:
    raise ValueError("augmentation draws for at most 8 channels")

  def one(image, label, key):
    k_uniform, k_noise = jax.random.split(key)
    u = jax.random.uniform(k_uniform, (_NUM_UNIFORMS,))
    image, label = spatial(image, label, u, config)
    return intensity(image, u, jax.random.normal(k_noise, image.shape), config), label

  return jax.vmap(one)(images.astype(jnp.float32), labels, keys)
