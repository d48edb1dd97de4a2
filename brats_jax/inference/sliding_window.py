"""Whole-volume inference: sliding windows with importance weighting, on device.

`sliding_window_inference` follows MONAI's function of the same name (modes "constant" and
"gaussian", same window positions, same Gaussian importance map), except that arrays are
channels-last: [batch, *spatial, channels]. Window positions are static, so the whole
function traces into one XLA program: no host round-trip per window.
"""

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np


def scan_starts(image_size, roi_size, overlap: float) -> list:
  """Start index of every window along each spatial axis (MONAI's dense_patch_slices)."""
  starts = []
  for size, roi in zip(image_size, roi_size):
    interval = roi if roi == size else max(int(roi * (1 - overlap)), 1)
    count = 1
    while (count - 1) * interval + roi < size:
      count += 1
    starts.append([min(i * interval, size - roi) for i in range(count)])
  return starts


def importance_map(roi_size, mode: str = "constant", sigma_scale=0.125) -> np.ndarray:
  """Per-voxel window weight: ones, or MONAI's Gaussian (compute_importance_map, MONAI 1.6):
  the product of 1D exp(-x^2 / 2 sigma^2) with sigma = sigma_scale * roi, centred on the
  window, in float32 and not normalised, floored at max(its minimum, 1e-3)."""
  if mode == "constant":
    return np.ones(roi_size, np.float32)
  if mode != "gaussian":
    raise ValueError(f"unknown mode {mode!r}; expected constant or gaussian")
  scales = np.broadcast_to(np.asarray(sigma_scale, np.float64), (len(roi_size),))
  weights = None
  for roi, scale in zip(roi_size, scales):
    x = np.arange(-(roi - 1) / 2, (roi - 1) / 2 + 1, dtype=np.float32)
    g = np.exp(x**2 / np.float32(-2 * float(roi * scale)**2))
    weights = g if weights is None else np.multiply.outer(weights, g)
  return np.maximum(weights, max(float(weights.min()), 1e-3)).astype(np.float32)


def window_plan(image_size, batch: int, roi, overlap: float, sw_batch_size: int,
                min_windows: int = 0):
  """Window starts [chunks, sw_batch_size, 1 + d] (batch index first) and validity weights.

  Covers every item of the batch with windows inside image_size; the list is padded (with
  zero-weight copies of the last window) to a whole number of chunks of at least min_windows.
  """
  windows = [(b,) + s for b in range(batch)
             for s in itertools.product(*scan_starts(image_size, roi, overlap))]
  num_chunks = math.ceil(max(len(windows), min_windows) / sw_batch_size)
  valid = np.zeros(num_chunks * sw_batch_size, np.float32)
  valid[:len(windows)] = 1
  windows += [windows[-1]] * (len(valid) - len(windows))
  return (np.array(windows, np.int32).reshape(num_chunks, sw_batch_size, -1),
          valid.reshape(num_chunks, sw_batch_size))


def window_sums(inputs, starts, valid, predictor, roi, mode="constant", sigma_scale=0.125,
                vary_over=()):
  """(sum of importance-weighted predictor outputs, sum of weights) over the given windows
  of inputs, each the size of inputs with K and 1 channels. Sums from several sets of
  windows add up; weighted_average turns them into the blend.

  starts/valid come from window_plan and may be traced, so one compiled program serves
  every window layout of the same size. vary_over: inside shard_map, the manual mesh axes
  over which the windows (so the sums) differ.
  """
  sw_batch_size, channels = starts.shape[1], inputs.shape[-1]
  weights = jnp.asarray(importance_map(roi, mode, sigma_scale))[..., None]
  out_channels = jax.eval_shape(
      predictor, jax.ShapeDtypeStruct((sw_batch_size,) + roi + (channels,), inputs.dtype)
  ).shape[-1]

  def crop(start):
    return jax.lax.dynamic_slice(inputs, tuple(start) + (0,), (1,) + roi + (channels,))[0]

  def add_chunk(carry, chunk):
    chunk_starts, chunk_valid = chunk

    def add(carry):
      total, norm = carry
      predictions = predictor(jax.vmap(crop)(chunk_starts)).astype(jnp.float32)
      for i in range(sw_batch_size):
        w = weights * chunk_valid[i]
        index = tuple(chunk_starts[i]) + (0,)
        total = jax.lax.dynamic_update_slice(
            total, jax.lax.dynamic_slice(total, index, (1,) + roi + (out_channels,))
            + (predictions[i] * w)[None], index)
        norm = jax.lax.dynamic_update_slice(
            norm, jax.lax.dynamic_slice(norm, index, (1,) + roi + (1,)) + w[None], index)
      return total, norm

    # Chunks that only pad the window list up to the bucket's count are skipped, not run.
    return jax.lax.cond(chunk_valid.any(), add, lambda carry: carry, carry), None

  total = jnp.zeros(inputs.shape[:-1] + (out_channels,), jnp.float32)
  norm = jnp.zeros(inputs.shape[:-1] + (1,), jnp.float32)
  if vary_over:  # inside shard_map: each group's sums are its own from the start
    total, norm = jax.lax.pcast((total, norm), tuple(vary_over), to="varying")
  (total, norm), _ = jax.lax.scan(add_chunk, (total, norm), (jnp.asarray(starts),
                                                             jnp.asarray(valid)))
  return total, norm


def weighted_average(total, norm):
  """The blend from window_sums; voxels no window covers are 0."""
  return jnp.where(norm > 0, total / jnp.maximum(norm, 1e-12), 0.0)


def blend_windows(inputs, starts, valid, predictor, roi, mode="constant", sigma_scale=0.125):
  """Importance-weighted average of predictor outputs over the given windows of inputs."""
  return weighted_average(*window_sums(inputs, starts, valid, predictor, roi, mode,
                                       sigma_scale))


def sliding_window_inference(inputs, predictor, roi_size, sw_batch_size: int,
                             overlap: float = 0.25, mode: str = "constant",
                             sigma_scale=0.125, cval: float = 0.0):
  """Blends predictor outputs over overlapping windows of `inputs` [B, *S, C].

  predictor maps [sw_batch_size, *roi_size, C] to [sw_batch_size, *roi_size, K]. A roi_size
  entry that is None or <= 0 means the whole axis. Volumes smaller than the window are padded
  symmetrically with cval and the padding is cropped from the result.
  """
  spatial = inputs.shape[1:-1]
  roi = tuple(s if (r is None or r <= 0) else int(r) for r, s in zip(roi_size, spatial))
  pads = [max(r - s, 0) for r, s in zip(roi, spatial)]
  pad_width = [(0, 0)] + [(p // 2, p - p // 2) for p in pads] + [(0, 0)]
  padded = jnp.pad(inputs, pad_width, constant_values=cval)
  starts, valid = window_plan(padded.shape[1:-1], inputs.shape[0], roi, overlap, sw_batch_size)
  out = blend_windows(padded, starts, valid, predictor, roi, mode, sigma_scale)
  unpad = (slice(None),) + tuple(slice(lo, lo + s) for (lo, _), s in
                                 zip(pad_width[1:-1], spatial)) + (slice(None),)
  return out[unpad]
