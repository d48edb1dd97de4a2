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
from flax import nnx

from brats_jax import sharding


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
  """Per-voxel window weight: ones, or a Gaussian with sigma = sigma_scale * roi (MONAI)."""
  if mode == "constant":
    return np.ones(roi_size, np.float32)
  if mode != "gaussian":
    raise ValueError(f"unknown mode {mode!r}; expected constant or gaussian")
  scales = np.broadcast_to(np.asarray(sigma_scale, np.float64), (len(roi_size),))
  weights = np.ones((), np.float64)
  for roi, scale in zip(roi_size, scales):
    x = np.arange(roi, dtype=np.float64) - (roi - 1) / 2
    weights = np.multiply.outer(weights, np.exp(-x**2 / (2 * (roi * scale)**2)))
  weights = weights / weights.max()
  return np.maximum(weights, max(weights.min(), 1e-3)).astype(np.float32)


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
  padded_size = padded.shape[1:-1]
  windows = [(b,) + s for b in range(inputs.shape[0])
             for s in itertools.product(*scan_starts(padded_size, roi, overlap))]
  num_chunks = math.ceil(len(windows) / sw_batch_size)
  valid = np.zeros(num_chunks * sw_batch_size, np.float32)
  valid[:len(windows)] = 1
  windows += [windows[-1]] * (len(valid) - len(windows))  # padding windows get weight 0
  starts = jnp.asarray(np.array(windows, np.int32).reshape(num_chunks, sw_batch_size, -1))
  valid = jnp.asarray(valid.reshape(num_chunks, sw_batch_size))
  weights = jnp.asarray(importance_map(roi, mode, sigma_scale))[..., None]
  channels = inputs.shape[-1]
  out_channels = jax.eval_shape(
      predictor, jax.ShapeDtypeStruct((sw_batch_size,) + roi + (channels,), inputs.dtype)
  ).shape[-1]

  def crop(start):
    return jax.lax.dynamic_slice(padded, tuple(start) + (0,), (1,) + roi + (channels,))[0]

  def add_chunk(carry, chunk):
    total, norm = carry
    chunk_starts, chunk_valid = chunk
    predictions = predictor(jax.vmap(crop)(chunk_starts)).astype(jnp.float32)
    for i in range(sw_batch_size):
      w = weights * chunk_valid[i]
      index = tuple(chunk_starts[i]) + (0,)
      total = jax.lax.dynamic_update_slice(
          total, jax.lax.dynamic_slice(total, index, (1,) + roi + (out_channels,))
          + (predictions[i] * w)[None], index)
      norm = jax.lax.dynamic_update_slice(
          norm, jax.lax.dynamic_slice(norm, index, (1,) + roi + (1,)) + w[None], index)
    return (total, norm), None

  total = jnp.zeros(padded.shape[:-1] + (out_channels,), jnp.float32)
  norm = jnp.zeros(padded.shape[:-1] + (1,), jnp.float32)
  (total, norm), _ = jax.lax.scan(add_chunk, (total, norm), (starts, valid))
  out = total / norm
  unpad = (slice(None),) + tuple(slice(lo, lo + s) for (lo, _), s in
                                 zip(pad_width[1:-1], spatial)) + (slice(None),)
  return out[unpad]


def make_region_predictor(graphdef, mesh, config):
  """A jitted fn (params, model_state, volume [1, *S, C]) -> region probabilities [1, *S, 3].

  Windows are batched (config.eval.sw_batch_per_device per device) and spread over every
  device of the mesh with shard_map.
  """
  kind = config.loss.kind
  devices = mesh.devices.size
  sw_batch = config.eval.sw_batch_per_device * devices

  def forward(params, model_state, windows):
    model = nnx.merge(graphdef, params, model_state)
    logits = model(windows, train=False)[0]
    if kind == "region":
      return jax.nn.sigmoid(logits)
    # Classes (background, NCR, ED, ET) -> regions WT = NCR+ED+ET, TC = NCR+ET, ET.
    p = jax.nn.softmax(logits)
    return jnp.stack([p[..., 1] + p[..., 2] + p[..., 3], p[..., 1] + p[..., 3], p[..., 3]], -1)

  sharded_forward = jax.shard_map(
      forward, mesh=mesh, in_specs=(jax.P(), jax.P(), jax.P(sharding.DATA)),
      out_specs=jax.P(sharding.DATA))

  @jax.jit
  def predict(params, model_state, volume):
    return sliding_window_inference(
        volume, lambda w: sharded_forward(params, model_state, w), config.data.patch_size,
        sw_batch, overlap=config.eval.overlap, mode="gaussian",
        sigma_scale=config.eval.sigma_scale)

  return predict
