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

from brats_jax import platforms


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


def _inside(index, shape):
  return jnp.all((index >= 0) & (index < jnp.array(shape)[:, None]), axis=0)


def _resample(image: jax.Array, labels: jax.Array, coords: jax.Array):
  """image [*S, C] (any float dtype) sampled linearly, as float32, and labels [*S] at the
  nearest voxel, at coords [d, *S]; outside the volume both are 0. Two lowerings of the
  same values: TPUs use jax.scipy.ndimage.map_coordinates per channel (of the forms tried,
  the one XLA's TPU compiler handles best); other devices gather each voxel's channels
  together (several times faster than per-channel gathers on a CPU)."""
  return platforms.choose(tpu=_resample_per_channel, default=_resample_channels_together)(
      image, labels, coords)


def _resample_per_channel(image, labels, coords):
  def sample(volume, order):
    return jax.scipy.ndimage.map_coordinates(volume, list(coords), order=order,
                                             mode="constant", cval=0)

  image = image.astype(jnp.float32)
  return (jax.vmap(lambda channel: sample(channel, 1), in_axes=-1, out_axes=-1)(image),
          sample(labels, 0))


def _resample_channels_together(image, labels, coords):
  image = image.astype(jnp.float32)
  shape, channels = labels.shape, image.shape[-1]
  points = coords.reshape(len(shape), -1)
  flat_image = image.reshape(-1, channels)
  strides = jnp.array([int(np.prod(shape[a + 1:])) for a in range(len(shape))])

  def gather(flat, index):
    valid = _inside(index, shape)
    values = flat[jnp.where(valid, jnp.sum(index * strides[:, None], 0), 0)]
    return jnp.where(valid.reshape(valid.shape + (1,) * (values.ndim - 1)), values, 0)

  lower = jnp.floor(points)
  upper_weight = points - lower
  lower = lower.astype(jnp.int32)
  out = 0.0
  for corner in np.ndindex(*(2,) * len(shape)):
    offset = jnp.array(corner)[:, None]
    weight = jnp.prod(jnp.where(offset == 1, upper_weight, 1 - upper_weight), axis=0)
    out = out + weight[:, None] * gather(flat_image, lower + offset)
  nearest = gather(labels.reshape(-1), jax.lax.round(points).astype(jnp.int32))
  return out.reshape(image.shape), nearest.reshape(shape)


# Every scalar random choice of a sample comes from one uniform draw (fewer PRNG calls
# compile much faster): u[0:3] rotation angles, u[3] rotate?, u[4] scale, u[5] scale?,
# u[6:9] mirror per axis; per channel c: u[9+c*8 : 17+c*8] for the intensity transforms.
_NUM_UNIFORMS = 9 + 8 * 8


def _between(u, low_high):
  return low_high[0] + u * (low_high[1] - low_high[0])


def _needs_resampling(u, config):
  return (u[3] < config.p_rotation) | (u[5] < config.p_scale)


def resample(image, labels, u, config):
  """Random rotation and scaling about the patch centre (the identity when neither is drawn:
  linear and nearest sampling at integer coordinates return the voxels themselves)."""
  dims = labels.ndim
  shape = labels.shape
  max_angle = np.deg2rad(config.max_rotation_deg)
  # Only the axes named in rotate_about turn (3D; a 2D slice turns in its plane).
  about = np.array([a in tuple(config.rotate_about) for a in range(3)]) if dims == 3 \
      else np.ones(3, bool)
  angles = jnp.where((u[3] < config.p_rotation) & about, (2 * u[0:3] - 1) * max_angle, 0.0)
  scale = jnp.where(u[5] < config.p_scale, _between(u[4], config.scale_range), 1.0)
  # Output voxel x samples input at R (x - c) / scale + c: scale > 1 zooms in.
  centre = jnp.array([(s - 1) / 2 for s in shape], jnp.float32)
  grid = jnp.stack(jnp.meshgrid(*[jnp.arange(s, dtype=jnp.float32) for s in shape],
                                indexing="ij"))
  offsets = grid.reshape(dims, -1) - centre[:, None]
  coords = (_rotation(angles, dims) @ offsets) / scale + centre[:, None]
  coords = coords.reshape((dims,) + shape)
  return _resample(image, labels, coords)


def mirror(image, labels, u, config):
  """Random flips of each spatial axis (p_mirror_axes[axis], or p_mirror for every axis)."""
  for axis in range(labels.ndim):
    flip = u[6 + axis] < mirror_probability(config, axis)
    image = jnp.where(flip, jnp.flip(image, axis), image)
    labels = jnp.where(flip, jnp.flip(labels, axis), labels)
  return image, labels


def mirror_probability(config, axis: int) -> float:
  return config.p_mirror_axes[axis] if config.p_mirror_axes else config.p_mirror


def _channel_draws(u, channels):
  """Per channel c: the 8 uniforms of its intensity transforms, [8, C]."""
  return u[9:9 + 8 * channels].reshape(8, channels)


def _maybe(p_u, p, value, neutral):
  return jnp.where(p_u < p, value, neutral)


def intensity(image, u, config):
  """Per-channel brightness, contrast and gamma (nnU-Net's ranges)."""
  axes = tuple(range(image.ndim - 1))
  u = _channel_draws(u, image.shape[-1])
  brightness = _maybe(u[0], config.p_brightness, _between(u[1], config.brightness_range), 1.0)
  image = image * brightness
  contrast = _maybe(u[2], config.p_contrast, _between(u[3], config.contrast_range), 1.0)
  mean = image.mean(axes)
  lo, hi = image.min(axes), image.max(axes)
  image = jnp.clip((image - mean) * contrast + mean, lo, hi)
  gamma = _maybe(u[4], config.p_gamma, _between(u[5], config.gamma_range), 1.0)
  span = jnp.maximum(hi - lo, 1e-6)
  return ((image - lo) / span) ** gamma * span + lo


def noise_std(u, channels, config):
  """Per-channel standard deviation of the Gaussian noise added last (0: none), [C]."""
  u = _channel_draws(u, channels)
  return _maybe(u[6], config.p_noise, u[7] * config.noise_std_max, 0.0)


def augment_batch(images, labels, keys, config: ml_collections.ConfigDict):
  """Augments [B, *S, C] images and [B, *S] labels with one key per sample."""
  if not config.enabled:
    return images, labels

  if images.shape[-1] > 8:
    raise ValueError("augmentation draws for at most 8 channels")

  def draws(key):
    k_uniform, k_noise = jax.random.split(key)
    return jax.random.uniform(k_uniform, (_NUM_UNIFORMS,)), k_noise

  u, noise_keys = jax.vmap(draws)(keys)
  # Resampling and noise are most of augmentation's cost, and most samples draw neither:
  # each is skipped when no sample of this device's batch draws it (or the config never
  # does), which leaves every value as it would be.
  if config.p_rotation > 0 or config.p_scale > 0:
    images, labels = jax.lax.cond(
        jnp.any(jax.vmap(lambda v: _needs_resampling(v, config))(u)),
        lambda: jax.vmap(lambda i, y, v: resample(i, y, v, config))(images, labels, u),
        lambda: (images.astype(jnp.float32), labels))
  images = images.astype(jnp.float32)

  def rest(image, label, v):
    image, label = mirror(image, label, v, config)
    return intensity(image, v, config), label

  images, labels = jax.vmap(rest)(images, labels, u)
  if config.p_noise > 0:
    stds = jax.vmap(lambda v: noise_std(v, images.shape[-1], config))(u)  # [B, C]

    def add_noise():
      noise = jax.vmap(lambda k: jax.random.normal(k, images.shape[1:]))(noise_keys)
      return images + stds.reshape(stds.shape[:1] + (1,) * (images.ndim - 2) + stds.shape[1:]) \
          * noise

    images = jax.lax.cond(jnp.any(stds > 0), add_noise, lambda: images)
  return images, labels
